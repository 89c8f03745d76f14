"""Classroom grading (labkit.grade, ``labkit grade``): a tiny instructor notebook with two checked exercises and a
written answer, and submissions as students hand them in: solved, blank, wrong, broken, edited, looping, unreadable.

Each graded submission starts a kernel (a few seconds). The 13 course notebooks are graded in quick mode by
benchmarks/grading.py (minutes); here their exercises are read statically.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import labkit.checks.temperature
import labkit.grade
from labkit import cli
from labkit.grade import GradingError, Row, _cell_with_call, exercises, grade, submissions
from labkit.settings import GRADE_LOG_ENV, QUICK_ENV, quick_mode
from labkit.students import student_notebook

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NAME = "01_tiny_lab.ipynb"
SETUP = "import math\nimport numpy as np\nimport torch\nz = torch.tensor([2.0, 1.0, 0.0])\nlogits = torch.randn(4, 10)"
HALF = """from labkit.checks import check_half_as_likely

# BEGIN SOLUTION
# STUB: T_half = None  # the temperature at which p_1 = p_0 / 2
T_half = (z[0] - z[1]).item() / math.log(2)
# END SOLUTION
check_half_as_likely(T_half, z, 0, 1)"""
SOFTMAX = """from labkit.checks import check_numpy_softmax

# BEGIN SOLUTION
# STUB: def numpy_softmax(z, T):
# STUB:     ...  # your code
def numpy_softmax(z, T):
    e = np.exp(z / T - (z / T).max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
# END SOLUTION
check_numpy_softmax(numpy_softmax, logits)"""
CALL_1, CALL_2 = "check_half_as_likely(T_half, z, 0, 1)", "check_numpy_softmax(numpy_softmax, logits)"


def lab(half: str = HALF, softmax: str = SOFTMAX, extra: str = "x = 1") -> nbformat.NotebookNode:
    return new_notebook(cells=[
        new_markdown_cell("# A tiny lab"), new_code_cell(SETUP), new_markdown_cell("## Exercises"),
        new_markdown_cell("### Exercise 1 · Half as likely"), new_code_cell(half), new_code_cell(extra),
        new_markdown_cell("### Exercise 2 · Softmax in NumPy"), new_code_cell(softmax),
        new_markdown_cell("Why subtract the maximum?\n\n<!-- BEGIN SOLUTION -->\nNo overflow.\n<!-- END SOLUTION -->"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})


@pytest.fixture
def course(tmp_path: Path) -> Path:
    (tmp_path / "notebooks").mkdir()
    nbformat.write(lab(), tmp_path / "notebooks" / NAME)
    return tmp_path


def hand_in(course: Path, student: str, notebook: nbformat.NotebookNode | str) -> Path:
    path = course / "submissions" / student / NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(notebook if isinstance(notebook, str) else nbformat.writes(notebook), encoding="utf-8")
    return path


def digests(folder: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def by_student(rows: list[Row]) -> dict[str, list[tuple[str, str, str]]]:
    out: dict[str, list] = {}
    for r in rows:
        out.setdefault(r.student, []).append((r.exercise, r.status, r.detail))
    return out


def test_exercises_are_the_check_calls_and_the_written_answers():
    found = exercises(lab())
    assert [(e.label, e.check, e.call) for e in found] == [
        ("Exercise 1", "check_half_as_likely", CALL_1), ("Exercise 2", "check_numpy_softmax", CALL_2),
        ("Exercise 2, written answer", "", "")]


@pytest.mark.parametrize("path", sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_every_check_call_of_the_course_is_a_graded_row(path: Path):
    notebook = nbformat.read(path, as_version=4)
    calls = [line for c in notebook.cells if c.cell_type == "code"
             for line in re.findall(r"^check_\w+\(", c.source, re.MULTILINE)]
    found = exercises(notebook)
    assert [e.check + "(" for e in found if e.check] == calls
    assert all(_cell_with_call(student_notebook(notebook), e.call) is not None for e in found if e.check)


def test_an_edited_call_is_not_the_handed_out_one():
    edited = lab(half=HALF.replace(CALL_1, "check_half_as_likely(1 / math.log(2), z, 0, 1)"))
    assert _cell_with_call(edited, CALL_1) is None
    spaced = lab(half=HALF.replace(CALL_1, "check_half_as_likely( T_half , z , 0 , 1 )"))
    assert _cell_with_call(spaced, CALL_1) == 4


def test_solved_and_blank_copies_through_the_command_line(course: Path, capsys: pytest.CaptureFixture):
    hand_in(course, "solved", lab())
    hand_in(course, "blank", student_notebook(lab()))
    before = digests(course / "submissions")
    out = course / "grades" / "gradebook.csv"
    assert cli.main(["grade", str(course / "submissions"), "--notebooks", str(course / "notebooks"),
                     "--out", str(out), "--time-limit", "300"]) == 0
    assert digests(course / "submissions") == before  # nothing handed in is changed or added
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    solved = [(r["exercise"], r["status"], r["score"]) for r in rows if r["student"] == "solved"]
    assert solved == [("Exercise 1", "passed", "1"), ("Exercise 2", "passed", "1"),
                      ("Exercise 2, written answer", "to read", "")]
    blank = {r["exercise"]: r for r in rows if r["student"] == "blank"}
    assert [(r["status"], r["score"]) for r in blank.values()] == [("not done", "0"), ("not done", "0"),
                                                                    ("to read", "")]
    assert "still empty" in blank["Exercise 1"]["detail"] and "returned None" in blank["Exercise 2"]["detail"]
    summary = (course / "grades" / "gradebook_summary.md").read_text()
    assert "2 submissions; mean score 50%" in summary
    assert "| Exercise 1 | check_half_as_likely | 1 | 1 | 0 | 0 |" in summary
    assert "blank/01_tiny_lab.ipynb: 0/2 checks passed" in capsys.readouterr().out


def test_what_students_hand_in_gives_a_row_never_a_crash(course: Path):
    wrong_sign = HALF.replace("T_half = (z[0]", "T_half = -(z[0]")
    hand_in(course, "wrong", lab(half=wrong_sign, extra="import not_a_module_anywhere\n"
                                 "open('scratch.txt', 'w').write('a student writes a file')"))
    hand_in(course, "broken", lab(half=HALF.replace("# END SOLUTION", "raise RuntimeError('boom')\n# END SOLUTION"),
                                  softmax=SOFTMAX.replace("def numpy_softmax(z, T):", "def numpy_softmax(z, T)")))
    hand_in(course, "edited", lab(half=HALF.replace(CALL_1, ""),
                                  softmax=SOFTMAX.replace("# END SOLUTION", "def check_numpy_softmax(*args):\n    "
                                                          "print('✓ Test passed')\n# END SOLUTION")))
    hand_in(course, "missing", lab(half=HALF.replace("# END SOLUTION", "import not_a_module_anywhere\n# END SOLUTION")))
    hand_in(course, "twice", lab(half=HALF + "\ncheck_half_as_likely(1 / math.log(2), torch.tensor([1.0, 0.0]), 0, 1)"))
    hand_in(course, "unreadable", "{ this is not a notebook")
    (course / "submissions" / "renamed").mkdir()
    nbformat.write(lab(), course / "submissions" / "renamed" / "my_lab.ipynb")
    before = digests(course / "submissions")
    rows = by_student(grade([course / "submissions"], course / "notebooks", time_limit=300, progress=False))
    assert digests(course / "submissions") == before
    assert not list(Path.cwd().glob("scratch.txt"))  # the kernel ran in a temporary folder

    (ex1, status1, hint1), (ex2, status2, _), _ = rows["wrong"]
    assert (status1, status2) == ("failed", "passed")  # the broken cell between them stops nothing
    assert "wrong sign" in hint1
    (_, status1, detail1), (_, status2, detail2), _ = rows["broken"]
    assert status1 == status2 == "error"
    assert "RuntimeError: boom" in detail1 and "SyntaxError" in detail2
    (_, status1, detail1), (_, status2, _), _ = rows["missing"]
    assert (status1, status2) == ("error", "passed")
    assert "ModuleNotFoundError" in detail1 and "not_a_module_anywhere" in detail1
    (_, status1, detail1), (_, status2, detail2), _ = rows["edited"]
    assert status1 == status2 == "not done"
    assert "deleted or edited" in detail1 and "redefined" in detail2
    assert rows["twice"][0][1:] == ("not done", "`check_half_as_likely` ran 2 times in cell 4: keep only the call as "
                                                "handed out")
    assert {status for _, status, _ in rows["unreadable"]} == {"unreadable", "to read"}
    assert "not a notebook" in rows["unreadable"][0][2]
    assert rows["renamed"] == [("-", "unknown notebook", rows["renamed"][0][2])]


def test_a_notebook_that_never_ends_is_stopped_at_its_time_limit(course: Path):
    hand_in(course, "looping", lab(extra="while True:\n    pass"))
    rows = grade([course / "submissions"], course / "notebooks", time_limit=40, progress=False)
    assert [(r.exercise, r.status) for r in rows] == [("Exercise 1", "passed"), ("Exercise 2", "not reached"),
                                                      ("Exercise 2, written answer", "to read")]
    assert "ran past its 40 s limit, at cell 5" in rows[1].detail


def test_bad_arguments_say_what_to_pass(course: Path, tmp_path: Path):
    with pytest.raises(GradingError, match="no such file or folder"):
        submissions([tmp_path / "absent"])
    (course / "empty").mkdir()
    with pytest.raises(GradingError, match="no notebooks"):
        submissions([course / "empty"])
    hand_in(course, "solved", lab())
    with pytest.raises(GradingError, match="pass --notebooks"):
        grade([course / "submissions"], course / "submissions")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["grade", str(course / "submissions"), "--time-limit", "0"])
    assert exit_.value.code == 2


def test_two_submissions_of_one_notebook_by_one_student_are_refused_before_anything_runs(course: Path):
    hand_in(course, "ada", lab())
    nbformat.write(lab(), course / "submissions" / "ada" / "01_tiny_lab-Copy1.ipynb")
    with pytest.raises(GradingError, match="two submissions of notebook 01 by ada"):
        grade([course / "submissions"], course / "notebooks")


def test_a_graded_run_stays_in_quick_mode_whatever_the_notebook_sets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv(QUICK_ENV, "0")
    assert not quick_mode()
    monkeypatch.setenv(GRADE_LOG_ENV, str(tmp_path / "log.jsonl"))
    assert quick_mode()


def test_a_check_imported_from_its_notebooks_module_records_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(GRADE_LOG_ENV, str(log))
    labkit.checks.temperature.check_half_as_likely(1 / math.log(2), torch.tensor([1.0, 0.0]), 0, 1)
    with pytest.raises(labkit.checks.AnswerMissing):
        labkit.checks.temperature.check_half_as_likely(None, torch.tensor([1.0, 0.0]), 0, 1)
    assert [json.loads(line)["status"] for line in log.read_text().splitlines()] == ["passed", "not done"]


def test_python_m_labkit_grade_says_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_:
        labkit.grade.main([str(tmp_path / "absent")])
    assert exit_.value.code == 2 and "no such file or folder" in capsys.readouterr().err
