"""The exercises of notebooks 01-09 and their student copies (labkit.students, `make student`).

nbval runs the committed notebooks, solutions and checks included, so every committed solution passes its check.
Here: (a) a static test that every notebook's exercises are consistent (2 to 4 numbered exercises, each with a
solution between markers, every code solution followed by its check outside the markers) and that the student
copy changes nothing but the solutions; (b) the student copy, executed in quick mode, runs cleanly up to its first
exercise, whose check then fails with a hint (AnswerMissing, the CheckFailed of a stub, not a NameError or a
TypeError).

(b) runs 7 of the 9 notebooks (about 3 minutes on 2 cores). 05 and 09 take 2 and 4 minutes up to their first
exercise in quick mode, and run only with ``LABKIT_STUDENT_COPIES=all``: their cells before the exercises are the
committed ones, which nbval runs, and (a) checks that the copy leaves them unchanged.
"""

from __future__ import annotations

import ast
import builtins
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from labkit import checks
from labkit.students import (CODE_BEGIN, CODE_END, MARKDOWN_BEGIN, StudentCopyError, has_solution, student_notebook,
                             write_student_copies)

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("0[1-9]_*.ipynb"))
ALL_NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))  # where the checks are used
# Checked statically as well (their student copies are not executed here: 12 trains language models first).
STATIC = NOTEBOOKS + [NOTEBOOK_DIR / "12_distill_language_model.ipynb"]
PROMPT = re.compile(r"^(?:### Exercise (\d+) ·|\*\*Exercise (\d+)\.)", re.MULTILINE)
CHECK_CALL = re.compile(r"^(check_\w+)\(", re.MULTILINE)
SLOW = ("05", "09")  # minutes of training (and quantizing) before their first exercise


def exercises(nb: nbformat.NotebookNode) -> list:
    """The cells after the one holding the '## Exercises' heading."""
    start = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "## Exercises" in c.source)
    return nb.cells[start + 1:]


def defined_names(cells: list) -> set[str]:
    """Every name that the code cells bind (assignments, loops, imports, functions), IPython magics skipped."""
    names = set()
    for cell in cells:
        if cell.cell_type == "code":
            source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    names.add(node.id)
                elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    names.add(node.name)
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def is_model_answer(cell: nbformat.NotebookNode) -> bool:
    """A code cell that is all solution: it computes a model answer from measurements, and the student copy keeps
    nothing of it to check."""
    source = cell.source.strip()
    return source.startswith(CODE_BEGIN) and source.endswith(CODE_END)


def test_notebooks_found():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"0{i}" for i in range(1, 10)]


@pytest.mark.parametrize("path", STATIC, ids=lambda p: p.stem)
def test_exercises_are_consistent(path: Path):
    nb = nbformat.read(path, as_version=4)
    cells = exercises(nb)
    main_flow = nb.cells[: len(nb.cells) - len(cells)]
    for committed, copy in zip(main_flow, student_notebook(nb).cells):
        if has_solution(committed):  # a fill-in cell of "Build it": code, followed by its check outside the markers
            assert committed.cell_type == "code" and not is_model_answer(committed), committed.source
            called = CHECK_CALL.findall(copy.source)
            assert len(called) == 1 and hasattr(checks, called[0]), f"one check per fill-in cell:\n{copy.source}"
    numbers = [int(a or b) for c in cells if c.cell_type == "markdown" for a, b in PROMPT.findall(c.source)]
    assert numbers == list(range(1, len(numbers) + 1)) and 2 <= len(numbers) <= 4, numbers
    prompt_at = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and PROMPT.search(c.source)]
    for begin, end in zip(prompt_at, prompt_at[1:] + [len(cells)]):
        assert any(has_solution(c) for c in cells[begin + 1:end]), f"exercise at cell {begin} has no solution"
    copy_cells = student_notebook(nb).cells
    defined = defined_names(copy_cells)
    assert all(has_solution(c) or c.source == s.source for c, s in zip(nb.cells, copy_cells)), "only solutions change"
    for committed, copy in zip(cells, copy_cells[len(nb.cells) - len(cells):]):
        if committed.cell_type == "code":
            assert has_solution(committed), f"an exercise code cell without a solution:\n{committed.source}"
            if is_model_answer(committed):
                continue
            called = CHECK_CALL.findall(copy.source)
            assert len(called) == 1 and hasattr(checks, called[0]), f"one check per code exercise:\n{copy.source}"
            assert f"from labkit.checks import {called[0]}" in copy.source
            call = next(node for node in ast.walk(ast.parse(copy.source)) if isinstance(node, ast.Call)
                        and getattr(node.func, "id", None) == called[0])
            used = {node.id for node in ast.walk(call) if isinstance(node, ast.Name)} - {called[0], *dir(builtins)}
            assert used <= defined, f"the student copy never defines {used - defined}"
        assert CODE_BEGIN not in copy.source and MARKDOWN_BEGIN not in copy.source


def test_every_check_is_used_by_a_notebook():
    used = {name for path in ALL_NOTEBOOKS for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"
            for name in CHECK_CALL.findall(c.source)}
    assert used == {name for name in dir(checks) if name.startswith("check_")}


def test_student_notebook_replaces_solutions_by_stubs():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import x\n# BEGIN SOLUTION\n# STUB: answer = None\nanswer = 42\n# END SOLUTION\n"
                                  "check(answer)", outputs=[nbformat.v4.new_output("stream", text="hi")],
                                  execution_count=3),
        nbformat.v4.new_code_cell("def f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION"),
        nbformat.v4.new_markdown_cell("Why?\n<!-- BEGIN SOLUTION -->\nBecause.\n<!-- END SOLUTION -->"),
        nbformat.v4.new_markdown_cell("Untouched."),
    ])
    copy = student_notebook(nb)
    assert [c.source for c in copy.cells] == ["import x\nanswer = None\ncheck(answer)",
                                              "def f():\n    # Your answer here", "Why?\n*Your answer here.*",
                                              "Untouched."]
    assert copy.cells[0].outputs == [] and copy.cells[0].execution_count is None
    assert nb.cells[0].source.count("answer = 42") == 1, "the committed notebook is left as it was"


@pytest.mark.parametrize("source,cell", [
    ("# BEGIN SOLUTION\nx = 1", nbformat.v4.new_code_cell),
    ("x = 1\n# END SOLUTION", nbformat.v4.new_code_cell),
    ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION", nbformat.v4.new_code_cell),
    ("<!-- BEGIN SOLUTION -->\nBecause.", nbformat.v4.new_markdown_cell),
])
def test_unbalanced_markers_are_refused(source, cell):
    with pytest.raises(ValueError, match="SOLUTION|unbalanced"):
        student_notebook(nbformat.v4.new_notebook(cells=[cell(source)]))


@pytest.mark.parametrize("source,cell", [
    ("#BEGIN SOLUTION\nanswer = 42\n#END SOLUTION", nbformat.v4.new_code_cell),
    ("# begin solution\nanswer = 42\n# end solution", nbformat.v4.new_code_cell),
    ("<!--BEGIN SOLUTION-->\nBecause 42.\n<!--END SOLUTION-->", nbformat.v4.new_markdown_cell),
    ("<!-- END SOLUTION -->\nBecause 42.\n<!-- BEGIN SOLUTION -->", nbformat.v4.new_markdown_cell),
    ("# BEGIN SOLUTION\nanswer = 42\n# END SOLUTION", nbformat.v4.new_raw_cell),
])
def test_near_miss_markers_are_refused_instead_of_leaking_the_solution(source, cell):
    with pytest.raises(StudentCopyError, match="cell 0 .*still holds"):
        student_notebook(nbformat.v4.new_notebook(cells=[cell(source)]))


def test_a_student_copy_never_overwrites_its_notebook(tmp_path: Path):
    notebook = tmp_path / "01_x.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "# BEGIN SOLUTION\n# STUB: answer = None\nanswer = 42\n# END SOLUTION")]), notebook)
    before = notebook.read_bytes()
    with pytest.raises(StudentCopyError, match="would overwrite"):
        write_student_copies([notebook], tmp_path)
    assert notebook.read_bytes() == before


def test_no_copy_is_written_when_one_notebook_fails(tmp_path: Path):
    good, bad = tmp_path / "01_good.ipynb", tmp_path / "02_bad.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), good)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("#BEGIN SOLUTION\nx = 1")]), bad)
    with pytest.raises(StudentCopyError, match="02_bad"):
        write_student_copies([good, bad], tmp_path / "student")
    assert not (tmp_path / "student" / "01_good.ipynb").exists()


def test_write_student_copies(tmp_path: Path):
    written = write_student_copies(NOTEBOOKS[:1], tmp_path / "student")
    assert [p.name for p in written] == [NOTEBOOKS[0].name]
    copy = nbformat.read(written[0], as_version=4)
    assert not any(has_solution(c) for c in copy.cells)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_copy_fails_with_a_hint_at_its_first_exercise(path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every cell before the first check runs cleanly; the check on the blank answer raises CheckFailed."""
    if path.name[:2] in SLOW and os.environ.get("LABKIT_STUDENT_COPIES") != "all":
        pytest.skip("minutes of training first: set LABKIT_STUDENT_COPIES=all to run it")
    monkeypatch.setenv("LABKIT_QUICK", "1")  # the kernel inherits it
    nb = student_notebook(nbformat.read(path, as_version=4))
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and CHECK_CALL.search(c.source))
    nb.cells = nb.cells[: first + 1]
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells[:first]):
            if cell.cell_type == "code":
                client.execute_cell(cell, index)
        with pytest.raises(CellExecutionError) as failure:
            client.execute_cell(nb.cells[first], first)
    assert failure.value.ename == "AnswerMissing", f"{failure.value.ename}: {failure.value.evalue}"  # the stub's CheckFailed
    assert re.search(r"still empty|returned None", failure.value.evalue), failure.value.evalue
