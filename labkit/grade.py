"""Classroom grading: run each student's notebook in a fresh kernel and record what every exercise's check said.

``labkit grade SUBMISSIONS... --out gradebook.csv`` (or ``python -m labkit.grade``), described in docs/instructors.md
("Grading"). The exercises come from the instructor's solved notebooks (``--notebooks``, default ``notebooks/``):
each check call outside the solution markers is one graded row, each written answer (a Markdown model answer or an
all-solution code cell) one row to read by hand. A submission is matched to its notebook by the two-digit number
that starts its file name, and its student is the folder that holds it (``submissions/<student>/05_....ipynb``).

Each submission runs in quick mode, in a fresh kernel whose working folder is a temporary one (beside a copy of the
course's measured results, which notebooks read), under a time limit per notebook; the submission itself is only
read. The checks record every call (``labkit.checks`` writes a line per
call to the file named by ``LABKIT_GRADE_LOG``), and a row counts only the call that the handed-out notebook makes,
in the cell that makes it: a deleted, edited or redefined check call is "not done". An error in one cell leaves the
later cells running, so the exercises that do not depend on it are still graded.
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import json
import os
import re
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Callable

import nbformat

from labkit.atomic import write_text_atomic
from labkit.results import results_dir
from labkit.students import CODE_BEGIN, CODE_END, MARKDOWN_BEGIN
from labkit.settings import GRADE_LOG_ENV, QUICK_ENV

EXERCISE_HEADING = re.compile(r"^(?:### Exercise (\d+) ·|\*\*Exercise (\d+)\.)", re.MULTILINE)
CHECK_NAME = re.compile(r"check_\w+")
NOTEBOOK_NUMBER = re.compile(r"^(\d\d)_")
SCORED = {"passed": 1, "failed": 0, "not done": 0, "error": 0, "not reached": 0, "unreadable": 0}  # "to read": none


class GradingError(ValueError):
    """The grader cannot start: no instructor notebooks, or no submissions. The message says what to pass."""


@dataclass(frozen=True)
class Exercise:
    """One graded row of an instructor's notebook: a check call (``call``, the statement as written) or, with
    ``check`` empty, a written answer to read by hand."""

    label: str
    check: str = ""
    call: str = ""


@dataclass(frozen=True)
class Row:
    """One line of the gradebook: a student's result on one exercise of one notebook."""

    student: str
    notebook: str
    exercise: str
    check: str
    status: str
    score: int | None
    detail: str


def _statements(source: str) -> list[str] | None:
    """The top-level statements of a code cell, normalised by ``ast.unparse``; None if it does not parse."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    try:
        return [ast.unparse(node) for node in ast.parse(code).body]
    except SyntaxError:
        return None


def _is_check_call(statement: str) -> bool:
    return re.match(r"check_\w+\(", statement) is not None


def exercises(notebook: nbformat.NotebookNode) -> list[Exercise]:
    """The graded rows of an instructor's notebook, in order: every top-level check call (labelled by the exercise
    heading above it, or "in the lesson" before the exercises) and every written answer."""
    found, label = [], None
    for index, cell in enumerate(notebook.cells):
        heading = EXERCISE_HEADING.search(cell.source) if cell.cell_type == "markdown" else None
        if heading:
            label = f"Exercise {heading.group(1) or heading.group(2)}"
        where = label or f"in the lesson (cell {index})"
        if cell.cell_type == "markdown" and MARKDOWN_BEGIN in cell.source:
            found.append(Exercise(f"{where}, written answer"))
        elif cell.cell_type == "code":
            source = cell.source.strip()
            if source.startswith(CODE_BEGIN) and source.endswith(CODE_END):
                found.append(Exercise(f"{where}, written answer"))
            for statement in _statements(cell.source) or []:
                if _is_check_call(statement):
                    found.append(Exercise(where, CHECK_NAME.match(statement).group(0), statement))
    return found


def _cell_with_call(notebook: nbformat.NotebookNode, call: str) -> int | None:
    """The index of the submission's code cell that makes ``call`` as handed out (a cell that does not parse is
    searched as text, so that its syntax error is reported rather than a missing call)."""
    squeezed = re.sub(r"\s", "", call)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        statements = _statements(cell.source)
        if call in (statements or []) or (statements is None and squeezed in re.sub(r"\s", "", cell.source)):
            return index
    return None


@dataclass
class _Run:
    """What executing a submission left: the check records and the error of each cell, and where it stopped."""

    records: dict[int, list[dict]]
    errors: dict[int, str]
    stopped_at: int | None = None
    stop_reason: str = ""


def _course_copy(folder: Path, notebooks: Path) -> Path:
    """A folder inside ``folder`` for the kernel to run in, seen by labkit as the course's notebooks folder: a copy
    of the course's measured results (benchmarks/results, which notebooks read) beside it, so that whatever the
    notebook reads is the course's and whatever it writes stays in ``folder``."""
    results = results_dir(Path(notebooks))
    if results.parent.name == "benchmarks" and (results.parent.parent / "labkit").is_dir():  # inside a checkout
        shutil.copytree(results, folder / "benchmarks" / "results")
        (folder / "labkit").mkdir()
    (folder / "notebooks").mkdir()
    return folder / "notebooks"


def _execute(notebook: nbformat.NotebookNode, time_limit: float, notebooks: Path) -> _Run:
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    run = _Run(defaultdict(list), {})
    with tempfile.TemporaryDirectory(prefix="labkit-grade-") as folder:
        log = Path(folder) / ".labkit-grade-log.jsonl"
        env = {**os.environ, QUICK_ENV: "1", GRADE_LOG_ENV: str(log), "MPLBACKEND": "agg"}
        client = NotebookClient(notebook, kernel_name="python3", allow_errors=True, startup_timeout=120,
                                resources={"metadata": {"path": str(_course_copy(Path(folder), notebooks))}})
        deadline, read = time.monotonic() + time_limit, 0
        with client.setup_kernel(env=env):
            for index, cell in enumerate(notebook.cells):
                if cell.cell_type != "code":
                    continue
                client.timeout = max(1, int(deadline - time.monotonic()))
                try:
                    client.execute_cell(cell, index)
                except CellTimeoutError:
                    run.stopped_at, run.stop_reason = index, f"the notebook ran past its {time_limit:.0f} s limit"
                    break
                except DeadKernelError:
                    run.stopped_at, run.stop_reason = index, "the kernel died (out of memory, or os._exit)"
                    break
                error = next((o for o in cell.outputs if o.output_type == "error"), None)
                if error is not None:
                    run.errors[index] = f"{error.ename}: {error.evalue}"
                cell.outputs = []  # only the error was needed: a notebook that prints a lot costs no memory here
                lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
                run.records[index] += [json.loads(line) for line in lines[read:]]
                read = len(lines)
    return run


def _row(exercise: Exercise, cell: int | None, run: _Run) -> tuple[str, str]:
    """(status, detail) of one check's row."""
    if cell is None:
        return "not done", f"the call `{exercise.call}` is not in the notebook as handed out (deleted or edited)"
    if run.stopped_at is not None and cell >= run.stopped_at:
        return "not reached", f"{run.stop_reason}, at cell {run.stopped_at}"
    records = [r for r in run.records[cell] if r["check"] == exercise.check]
    if len(records) > 1:
        return "not done", (f"`{exercise.check}` ran {len(records)} times in cell {cell}: keep only the call as "
                            "handed out")
    if records:
        return records[0]["status"], records[0]["message"]
    if cell in run.errors:
        return "error", f"cell {cell} raised {run.errors[cell]}"
    return "not done", f"`{exercise.check}` did not run in cell {cell} (was it redefined?)"


def grade_submission(path: Path, student: str, notebook_name: str, expected: list[Exercise], time_limit: float,
                     notebooks: Path) -> list[Row]:
    """The rows of one submitted notebook, graded against the exercises ``expected`` of the instructor's
    ``notebook_name`` (in the folder ``notebooks``, whose course's results the notebook reads)."""
    def rows(status_of) -> list[Row]:
        out = []
        for exercise in expected:
            status, detail = (status_of(exercise) if exercise.check else
                              ("to read", f"a written answer: read it in {path}"))
            out.append(Row(student, notebook_name, exercise.label, exercise.check, status, SCORED.get(status),
                           detail))
        return out

    try:
        notebook = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
        cells = {e.call: _cell_with_call(notebook, e.call) for e in expected if e.check}
    except Exception as error:  # noqa: BLE001  (any unreadable file is a row, never a crash)
        why = f"{path} is not a notebook: {type(error).__name__}: {error}"
        return rows(lambda e: ("unreadable", why))
    try:
        run = _execute(notebook, time_limit, notebooks)
    except Exception as error:  # noqa: BLE001  (a kernel that cannot start is a row, never a crash)
        why = f"could not run the notebook: {type(error).__name__}: {error}"
        return rows(lambda e: ("error", why))
    return rows(lambda e: _row(e, cells[e.call], run))


def submissions(paths: list[Path]) -> list[Path]:
    """Every notebook given, folders searched recursively (checkpoint copies skipped), in a stable order."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        elif path.is_file():
            found.append(path)
        else:
            raise GradingError(f"{path}: no such file or folder (give submitted notebooks or folders of them)")
    if not found:
        raise GradingError(f"no notebooks (.ipynb) in {', '.join(map(str, paths))}")
    return found


def instructor_exercises(folder: Path) -> dict[str, tuple[str, list[Exercise]]]:
    """The instructor's notebooks in ``folder`` by number: (file name, exercises)."""
    found = {}
    for path in sorted(Path(folder).glob("[0-9][0-9]_*.ipynb")):
        try:
            notebook = nbformat.read(path, as_version=4)
        except Exception as error:  # noqa: BLE001  (nbformat raises several kinds for a damaged file)
            raise GradingError(f"the instructor notebook {path} cannot be read ({type(error).__name__}: {error}): "
                               "restore it from the course") from None
        found[path.name[:2]] = (path.name, exercises(notebook))
    if not found:
        raise GradingError(f"no instructor notebooks (NN_name.ipynb) in {folder}: pass --notebooks with the folder "
                           "of solved notebooks")
    return found


def _check_kernel() -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        raise GradingError("no Python kernel to run the notebooks in: install ipykernel (pip install "
                           "'labkit[lab]')") from None


def _check_one_per_student(found: list[Path]) -> None:
    seen: dict[tuple[str, str], Path] = {}
    for path in found:
        number = NOTEBOOK_NUMBER.match(path.name)
        key = (path.parent.name, number.group(1) if number else path.name)
        if key in seen:
            raise GradingError(f"two submissions of notebook {key[1]} by {key[0]}: {seen[key]} and {path}; keep one")
        seen[key] = path


def grade(paths: list[Path], notebooks: Path, time_limit: float = 1200, progress: bool = True,
          on_rows: Callable[[list[Row]], None] | None = None) -> list[Row]:
    """Grade every submitted notebook in ``paths``; the rows of the gradebook. ``on_rows`` gets the rows so far
    after each notebook (``labkit grade`` writes the gradebook each time, so an interrupted run keeps them)."""
    _check_kernel()
    expected, rows, found = instructor_exercises(notebooks), [], submissions(paths)
    _check_one_per_student(found)
    for path in found:
        number, student = NOTEBOOK_NUMBER.match(path.name), path.parent.name
        if number is None or number.group(1) not in expected:
            rows.append(Row(student, path.name, "-", "", "unknown notebook", None,
                            "name the file as handed out (NN_name.ipynb, NN one of "
                            f"{', '.join(sorted(expected))})"))
            continue
        started = time.perf_counter()
        name, exercises_ = expected[number.group(1)]
        graded = grade_submission(path, student, name, exercises_, time_limit, notebooks)
        rows += graded
        if on_rows is not None:
            on_rows(rows)
        if progress:
            scored = [r.score for r in graded if r.score is not None]
            print(f"{student}/{path.name}: {sum(scored)}/{len(scored)} checks passed "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    return rows


def summary(rows: list[Row]) -> str:
    """A Markdown summary per notebook: submissions, mean score, and how many passed each check."""
    lines = []
    for notebook in sorted({r.notebook for r in rows}):
        mine = [r for r in rows if r.notebook == notebook and r.score is not None]
        students = sorted({r.student for r in rows if r.notebook == notebook})
        lines += [f"## {notebook}", "", f"{len(students)} submissions; mean score "
                  + (f"{100 * sum(r.score for r in mine) / len(mine):.0f}%." if mine else "none (no checks).")]
        by_check = defaultdict(list)
        for r in mine:
            by_check[(r.exercise, r.check)].append(r.status)
        lines += ["", "| exercise | check | passed | not done | failed | other |", "|---|---|---|---|---|---|"]
        for (exercise, check), statuses in by_check.items():
            counts = [statuses.count(s) for s in ("passed", "not done", "failed")]
            lines.append(f"| {exercise} | {check} | " + " | ".join(map(str, counts))
                         + f" | {len(statuses) - sum(counts)} |")
        lines.append("")
    return "\n".join(lines)


def write_gradebook(rows: list[Row], out: Path) -> tuple[Path, Path]:
    """Write the CSV (one row per student and exercise) and its Markdown summary beside it, atomically."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow([f.name for f in fields(Row)])
    writer.writerows(["" if v is None else v for v in astuple(row)] for row in rows)
    out = Path(out)
    notes = out.with_name(out.stem + "_summary.md")
    write_text_atomic(out, text.getvalue())
    write_text_atomic(notes, "# Gradebook summary\n\n" + summary(rows))
    return out, notes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submissions", nargs="+", type=Path,
                        help="submitted notebooks, or folders of them (submissions/<student>/NN_name.ipynb)")
    parser.add_argument("--out", type=Path, default=Path("gradebook.csv"), help="the CSV (default %(default)s)")
    parser.add_argument("--notebooks", type=Path, default=Path("notebooks"),
                        help="the instructor's solved notebooks (default %(default)s)")
    parser.add_argument("--time-limit", type=float, default=1200,
                        help="seconds each notebook may run (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    """``labkit grade``: grade, write the gradebook, print the summary."""
    if not args.time_limit > 0:
        raise GradingError(f"--time-limit must be > 0 seconds, got {args.time_limit}")
    rows = grade(args.submissions, args.notebooks, args.time_limit,
                 on_rows=lambda so_far: write_gradebook(so_far, args.out))
    csv_path, notes = write_gradebook(rows, args.out)
    print(summary(rows))
    print(f"wrote {csv_path} ({len(rows)} rows) and {notes}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.grade", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except GradingError as error:
        parser.error(str(error))


if __name__ == "__main__":
    raise SystemExit(main())
