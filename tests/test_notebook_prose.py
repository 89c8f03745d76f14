"""The notebooks' prose follows their numbers, and speaks to learners.

* Every number a Markdown cell states as a result (a decimal, or a percentage) appears in the same notebook's code
  or outputs, so it was computed by this run, not typed from an older one; the exceptions are the few figures cited
  from the literature, fixed by mathematics or set by the cell (a plotted band), listed in ``CITED`` with their
  source.
* No development words (the vocabulary of issues and acceptance criteria) in a lesson.
* Every notebook ends with a ``## References`` cell that links the papers and documentation it cites, and no
  solution block holds a citation: what the lesson takes from the literature is in its main text, which the
  student copies keep (``make student`` replaces the solutions).
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
                           "44.5%": "the same experiment, hard labels",
                           "97.5": "the percentile of Student's t that a two-sided 95% interval uses",
                           "0.975": "the same percentile, as scipy's argument"},
    "02_temperature": {"3.32": "log2(10), the entropy in bits of a uniform prediction",
                       "80%": "the band's setting: the 10th to 90th percentiles of the images",
                       "2.5": "Hinton et al. 2015, MNIST with 30 units per layer: T from 2.5 to 4 worked best"},
    "04_cifar_teacher": {"3.3%": "Northcutt et al. 2021: label errors in the ten test sets, on average at least"},
    "06_tuning_temperature_and_alpha": {"3.32": "log2(10), the entropy in bits of a uniform prediction"},
    "10_omitted_class": {"98.6%": "Hinton et al. 2015, the omitted-3 experiment after the bias fix",
                         "87%": "the same experiment before the bias fix (133 errors on 1,010 test 3s)",
                         "3.5": "the same experiment, the bias Hinton added to the logit of the 3s"},
}
# Single-digit settings (alpha, label smoothing, fractions) are read as settings, not results; 95% is the confidence
# level of every interval.
SETTINGS = {f"0.{d}" for d in range(1, 10)} | {"95%"}
REFERENCES_HEADING = "## References"
URL = re.compile(r"https?://[^\s)>\]]+")
# A citation inside a solution block: a link, "et al.", an arXiv id (or the word), or a year in parentheses such as
# "(2015)" or "(Romero et al., 2015)"; a call such as range(2000) is not one (no name or bracket before the "(").
CITATION = {
    "a URL": URL,
    '"et al."': re.compile(r"\bet al\b", re.IGNORECASE),
    "an arXiv id": re.compile(r"\barxiv\b|(?<![\d.])\d{4}\.\d{4,5}(?![\d.])", re.IGNORECASE),
    "a year in parentheses": re.compile(r"(?<![\w\])])\([^()\n]*?\b(?:19|20)\d\d\b[^()\n]*\)"),
}
CODE_SOLUTION = re.compile(r"^[ \t]*# BEGIN SOLUTION[^\n]*\n(.*?)^[ \t]*# END SOLUTION", re.DOTALL | re.MULTILINE)
MARKDOWN_SOLUTION = re.compile(r"<!-- BEGIN SOLUTION -->(.*?)<!-- END SOLUTION -->", re.DOTALL)
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
    results file of the benchmark it names (``benchmarks/exercise_answers.py`` -> ``exercise_answers.json``).
    Addresses (an arXiv id or a DOI in a link) and the References cell (the titles of cited works) state no results."""
    notebook_text = computed_text(nb)
    missing = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown" or cell.source.startswith(REFERENCES_HEADING):
            continue
        text = notebook_text
        if "BEGIN SOLUTION" in cell.source:
            text += "\n" + "\n".join(result_text(name) for name in set(CITES_RESULTS.findall(cell.source)))
        for number in NUMBER.findall(URL.sub("", cell.source)):
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


def references_problem(nb: nbformat.NotebookNode) -> str | None:
    """Why the notebook's last cell is not its References cell, or None when it is."""
    if not nb.cells:
        return "the notebook has no cells"
    last = nb.cells[-1]
    where = f"cell {len(nb.cells) - 1} (the last)"
    if last.cell_type != "markdown" or not last.source.startswith(REFERENCES_HEADING):
        return (f"{where} is a {last.cell_type} cell that does not start with {REFERENCES_HEADING!r}: end the notebook "
                "with a Markdown cell headed '## References' that lists, with links, the papers and docs it cites")
    if "](http" not in last.source:
        return f"{where} lists no link: write each reference as a Markdown link, [title](https://...)"
    return None


def solution_citations(nb: nbformat.NotebookNode) -> list[tuple[int, str, str]]:
    """(cell index, kind, excerpt) of every citation inside a solution block, code or Markdown."""
    found = []
    for index, cell in enumerate(nb.cells):
        pattern = CODE_SOLUTION if cell.cell_type == "code" else MARKDOWN_SOLUTION
        for block in pattern.findall(cell.source):
            for kind, citation in CITATION.items():
                for match in citation.finditer(block):
                    found.append((index, kind, block[max(0, match.start() - 30):match.end() + 10].replace("\n", " ")))
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_ends_with_its_references(path: Path):
    problem = references_problem(nbformat.read(path, as_version=4))
    assert problem is None, f"{path.name}: {problem}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_solution_holds_a_citation(path: Path):
    found = solution_citations(nbformat.read(path, as_version=4))
    assert not found, (f"{path.name}: a solution block cites the literature, and student copies lose it. Move each "
                       "fact with its citation into the Markdown before the exercise, list the work under "
                       "'## References', and leave the solution only its answer (\"section N says ...\"): "
                       + "; ".join(f"cell {i}, {kind}: ...{excerpt}..." for i, kind, excerpt in found))


def test_the_reference_and_citation_rules_catch_what_they_should():
    references = "## References\n\n- Hinton et al. (2015). [Distilling](https://arxiv.org/abs/1503.02531)."
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title"),
                                         nbformat.v4.new_markdown_cell(references)])
    assert references_problem(nb) is None
    assert uncomputed_numbers(nb, {}) == [], "an arXiv id or a cited title states no result"
    nb.cells.append(nbformat.v4.new_code_cell("print(1)"))
    assert "does not start with" in references_problem(nb)
    nb.cells[-1] = nbformat.v4.new_markdown_cell("## References\n\n- Hinton, Vinyals and Dean, 2015.")
    assert "no link" in references_problem(nb)
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("Romero et al. (2015) in the main text is fine: https://arxiv.org/abs/1412.6550"),
        nbformat.v4.new_code_cell("x = range(2000)\n# BEGIN SOLUTION\nidx = torch.randperm(2000)[:10]\n"
                                  "# END SOLUTION\n# FitNets (2015) outside the block is fine"),
        nbformat.v4.new_markdown_cell("<!-- BEGIN SOLUTION -->\nAs Beyer et al. found (2022), see arXiv 2106.05237 "
                                      "or https://arxiv.org/abs/2106.05237.\n<!-- END SOLUTION -->"),
        nbformat.v4.new_code_cell("def f():\n    # BEGIN SOLUTION\n    return 1  # Kim & Rush (2016)\n"
                                  "    # END SOLUTION"),
    ])
    assert {(i, kind) for i, kind, _ in solution_citations(nb)} == {
        (2, "a URL"), (2, '"et al."'), (2, "an arXiv id"), (2, "a year in parentheses"), (3, "a year in parentheses")}
