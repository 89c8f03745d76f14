"""The notebooks' prose follows their numbers, and speaks to learners.

* Every number a Markdown cell states as a result (a decimal, or a percentage) appears in the same notebook's code
  or outputs, so it was computed by this run, not typed from an older one; the exceptions are the few figures cited
  from the literature, fixed by mathematics or set by the cell (a plotted band), listed in ``CITED`` with their
  source.
* No development words (the vocabulary of issues and acceptance criteria) in a lesson.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
RESULTS = REPO / "benchmarks" / "results"
CITES_RESULTS = re.compile(r"benchmarks/(?:results/)?(\w+)\.(?:json|py)")
NUMBER = re.compile(r"(?<![\w.])\d[\d,]*\.\d+%?|(?<![\w.])\d[\d,]*%")
CITED = {
    "00_start_here": {"90%": "an illustrative soft label (dog)", "8%": "the same illustration (cat)",
                      "0.001%": "the same illustration (truck)", "0.01%": "the same illustration",
                      "2.30": "log 10, the entropy of a uniform prediction over 10 classes"},
    "05_distill_student": {"57.0%": "Hinton et al. 2015, speech model on 3% of its data, soft targets",
                           "44.5%": "the same experiment, hard labels"},
    "02_temperature": {"3.32": "log2(10), the entropy in bits of a uniform prediction",
                       "80%": "the band's setting: the 10th to 90th percentiles of the images"},
    "06_tuning_temperature_and_alpha": {"3.32": "log2(10), the entropy in bits of a uniform prediction"},
    "10_omitted_class": {"98.6%": "Hinton et al. 2015, the omitted-3 experiment after the bias fix",
                         "87%": "the same experiment before the bias fix (133 errors on 1,010 test 3s)",
                         "3.5": "the same experiment, the bias Hinton added to the logit of the 3s"},
}
# Single-digit settings (alpha, label smoothing, fractions) are read as settings, not results; 95% is the confidence
# level of every interval.
SETTINGS = {f"0.{d}" for d in range(1, 10)} | {"95%"}
DEVELOPMENT_WORDS = re.compile(r"\bissues?\b|\bNOT met\b|\btargets? (?:met|reached|missed)\b|\bacceptance\b|"
                               r"\bTODO\b|\bFIXME\b|\bXXX\b|\bwanted\b", re.IGNORECASE)


def computed_text(nb: nbformat.NotebookNode) -> str:
    """The notebook's code and every text output, with thousands separators and typographic minus signs removed."""
    parts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        parts.append(cell.source)
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            for kind in ("text/plain", "text/markdown", "text/html"):
                value = output.get("data", {}).get(kind, "")
                parts.append(value if isinstance(value, str) else "".join(value))
    return "\n".join(parts).replace(",", "").replace("−", "-")


def result_text(name: str) -> str:
    """Every number of ``benchmarks/results/<name>.json`` as written in prose: as it is, times 100 (a percentage
    or points), to 1-4 decimals, with its absolute value (a difference is written with its own sign)."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return ""
    forms = []

    def walk(value):
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            for x in (abs(value), abs(100 * value)):
                forms.extend(f"{x:.{d}f}" for d in range(5))
    walk(json.loads(path.read_text()))
    return "\n".join(forms)


def uncomputed_numbers(nb: nbformat.NotebookNode, cited: dict[str, str]) -> list[tuple[int, str]]:
    """(cell index, number) of every Markdown number found in no code cell or output (a percentage also counts as
    computed when its fraction appears, e.g. 60% for 0.6). A model answer (a solution cell) may instead quote the
    results file of the benchmark it names (``benchmarks/exercise_answers.py`` -> ``exercise_answers.json``)."""
    notebook_text = computed_text(nb)
    missing = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        text = notebook_text
        if "BEGIN SOLUTION" in cell.source:
            text += "\n" + "\n".join(result_text(name) for name in set(CITES_RESULTS.findall(cell.source)))
        for number in NUMBER.findall(cell.source):
            if number in cited or number in SETTINGS:
                continue
            plain = number.replace(",", "").rstrip("%")
            forms = [plain] + ([f"{float(plain) / 100:g}"] if number.endswith("%") else [])
            if not any(re.search(rf"(?<![\d.]){re.escape(form)}(?!\d)", text) for form in forms):
                missing.append((index, number))
    return missing


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_numbers_are_computed_by_the_notebook(path: Path):
    nb = nbformat.read(path, as_version=4)
    missing = uncomputed_numbers(nb, CITED.get(path.stem, {}))
    assert not missing, ("Markdown states numbers this notebook never computes (render them from the results, or "
                         f"cite them in CITED): {missing}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_lessons_have_no_development_words(path: Path):
    nb = nbformat.read(path, as_version=4)
    found = [(i, m.group(0)) for i, cell in enumerate(nb.cells) if cell.cell_type == "markdown"
             for m in DEVELOPMENT_WORDS.finditer(cell.source)]
    assert not found, f"development words in the lesson's text: {found}"


def test_the_number_rule_catches_a_typed_number():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("acc, share = 0.8413, 0.6", outputs=[nbformat.v4.new_output("stream", text="acc 84.13%\n")]),
        nbformat.v4.new_markdown_cell("The student scores 84.13%, 2.5 points above, and at least 60% of ... 0.8413"),
        nbformat.v4.new_markdown_cell("An older run said 85.01%, or 4.13%."),
    ])
    assert uncomputed_numbers(nb, {}) == [(1, "2.5"), (2, "85.01%"), (2, "4.13%")]  # 4.13 is inside 84.13 only
    assert uncomputed_numbers(nb, {"85.01%": "cited", "2.5": "cited", "4.13%": "cited"}) == []


def test_a_model_answer_may_quote_the_results_of_the_benchmark_it_names(tmp_path, monkeypatch):
    monkeypatch.setattr(__import__(__name__), "RESULTS", tmp_path)
    (tmp_path / "answers.json").write_text(json.dumps({"e1": {"val_acc": 0.79523, "gain": -0.0062}}))
    answer = ("<!-- BEGIN SOLUTION -->\n**Model answer.** 79.52% against 78.00%, -0.62 points "
              "(`python benchmarks/answers.py`).\n<!-- END SOLUTION -->")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(answer),
                                         nbformat.v4.new_markdown_cell("Outside an answer: 79.52%.")])
    assert uncomputed_numbers(nb, {}) == [(0, "78.00%"), (1, "79.52%")]
