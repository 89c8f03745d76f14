"""The grader on the whole course: each solved notebook should grade 100%, each fresh student copy 0% ("not done").

    python benchmarks/grading.py

Hands in the 13 committed notebooks (as student "solved") and their student copies (``labkit.students``, as
student "student") and grades them with ``labkit.grade`` (quick mode, a fresh kernel each, the default time
limit). Writes benchmarks/results/grading.json and .md (a row per notebook: checks, what each copy got, seconds)
and the gradebook itself, grading_gradebook.csv and grading_gradebook_summary.md. Exits with 1 if any row differs
from the expected gradebook.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import RESULTS, write_report
from labkit.grade import grade, write_gradebook
from labkit.students import write_student_copies

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = {"solved": "passed", "student": "not done"}


def main() -> int:
    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    rows, seconds = [], {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="grading-") as folder:
        handed_in = Path(folder, "submissions")
        (handed_in / "solved").mkdir(parents=True)
        for path in notebooks:
            shutil.copy(path, handed_in / "solved" / path.name)
        write_student_copies(notebooks, handed_in / "student")
        for path in notebooks:
            for student in EXPECTED:
                t0 = time.perf_counter()
                rows += grade([handed_in / student / path.name], NOTEBOOKS)
                seconds[f"{student}/{path.name}"] = round(time.perf_counter() - t0, 1)
    write_gradebook(rows, RESULTS / "grading_gradebook.csv")
    checked = [r for r in rows if r.score is not None]
    unexpected = [r for r in checked if r.status != EXPECTED[r.student]]
    lines = ["| notebook | checks | solved copy | student copy | seconds (solved, student) |", "|---|---|---|---|---|"]
    for path in notebooks:
        mine = [r for r in checked if r.notebook == path.name]
        got = {s: Counter(r.status for r in mine if r.student == s) for s in EXPECTED}
        lines.append(f"| {path.name} | {len(mine) // 2} | "
                     + " | ".join(", ".join(f"{n} {status}" for status, n in got[s].items()) or "-" for s in EXPECTED)
                     + f" | {seconds['solved/' + path.name]:.0f}, {seconds['student/' + path.name]:.0f} |")
    lines += ["", f"Rows that differ from the expected gradebook (solved: passed, student: not done): {len(unexpected)}"]
    lines += [f"- {r.student}/{r.notebook}, {r.exercise} ({r.check}): {r.status}: {r.detail}" for r in unexpected]
    payload = {"command": "python benchmarks/grading.py", "seconds": seconds,
               "rows": len(rows), "checked_rows": len(checked), "unexpected": [vars(r) for r in unexpected],
               "wall_seconds": round(time.perf_counter() - started, 1)}
    write_report("grading", payload, "The grader on the 13 solved notebooks and their student copies",
                 f"{payload['wall_seconds'] / 60:.1f} min, {len(checked)} check rows", "\n".join(lines) + "\n",
                 quick=False)
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
