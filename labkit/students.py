"""Student copies of the course notebooks: the exercises' solutions replaced by stubs, outputs cleared.

The committed notebooks hold working solutions between markers, so that the tests run them (``make student``
writes the copies into ``student/``):

* in a code cell, the lines from ``# BEGIN SOLUTION`` to ``# END SOLUTION``. Lines inside that start with
  ``# STUB: `` are what the student gets instead, without that prefix (e.g. ``# STUB: torn = None``); every
  other line inside is dropped. A block without stub lines becomes ``# Your answer here``. The check call
  stays outside the markers, so the student's copy runs it on the stub and gets a hint;
* in a markdown cell, the text from ``<!-- BEGIN SOLUTION -->`` to ``<!-- END SOLUTION -->`` (a model answer)
  becomes ``*Your answer here.*``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import nbformat

from labkit.atomic import write_text_atomic

CODE_BEGIN, CODE_END, STUB = "# BEGIN SOLUTION", "# END SOLUTION", "# STUB: "
MARKDOWN_BEGIN, MARKDOWN_END = "<!-- BEGIN SOLUTION -->", "<!-- END SOLUTION -->"
_MARKDOWN_SOLUTION = re.compile(re.escape(MARKDOWN_BEGIN) + ".*?" + re.escape(MARKDOWN_END), re.DOTALL)
# Anything that still looks like a marker once the exact ones are replaced: a misspelt one would leak its solution.
_NEAR_MISS = re.compile(r"(#|<!--)\s*(BEGIN|END)[\s_-]*SOLUTION", re.IGNORECASE)


class StudentCopyError(ValueError):
    """A student copy that would leak a solution or overwrite a notebook; the message names the cell or file."""


def has_solution(cell: dict) -> bool:
    """Whether ``cell`` holds a solution block."""
    return (CODE_BEGIN if cell["cell_type"] == "code" else MARKDOWN_BEGIN) in cell["source"]


def _student_code(source: str) -> str:
    lines, stubs, indent = [], None, ""
    for line in source.splitlines():
        text = line.strip()
        if text == CODE_BEGIN and stubs is None:
            stubs, indent = [], line[: len(line) - len(line.lstrip())]
        elif text == CODE_END and stubs is not None:
            lines += stubs or [indent + "# Your answer here"]
            stubs = None
        elif text in (CODE_BEGIN, CODE_END):
            raise StudentCopyError(f"unbalanced solution markers at {text!r} in:\n{source}")
        elif stubs is None:
            lines.append(line)
        elif text.startswith(STUB.strip()):
            stubs.append(indent + text[len(STUB.strip()):].removeprefix(" "))
    if stubs is not None:
        raise StudentCopyError(f"{CODE_BEGIN!r} without {CODE_END!r} in:\n{source}")
    return "\n".join(lines)


def _student_markdown(source: str) -> str:
    if source.count(MARKDOWN_BEGIN) != source.count(MARKDOWN_END):
        raise StudentCopyError(f"unbalanced solution markers in:\n{source}")
    return _MARKDOWN_SOLUTION.sub("*Your answer here.*", source)


def student_notebook(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``notebook`` with every solution replaced by its stub and every output cleared; a
    :class:`StudentCopyError` if anything marker-like is left (a misspelt marker, one in a raw cell, END before
    BEGIN), since the solution after it would reach the student."""
    copy = nbformat.from_dict(notebook)
    for index, cell in enumerate(copy.cells):
        if cell.cell_type == "code":
            cell.source = _student_code(cell.source)
            cell.outputs, cell.execution_count = [], None
        elif cell.cell_type == "markdown":
            cell.source = _student_markdown(cell.source)
        leftover = _NEAR_MISS.search(cell.source)
        if leftover:
            raise StudentCopyError(f"cell {index} ({cell.cell_type}) still holds {leftover.group(0)!r} after the "
                                   f"solutions were removed: write the markers exactly as {CODE_BEGIN!r} / "
                                   f"{CODE_END!r} (code) or {MARKDOWN_BEGIN!r} / {MARKDOWN_END!r} (markdown), in "
                                   "code or markdown cells, BEGIN before END")
    return copy


def write_student_copies(notebooks: list[Path], out: Path) -> list[Path]:
    """Write the student copy of each notebook into ``out`` under the same file name; returns the paths. Every
    copy is made before any is written, and none may replace a notebook it was made from."""
    if Path(out).exists() and not Path(out).is_dir():
        raise StudentCopyError(f"{out} is a file: --out must be a folder for the student copies")
    sources = {Path(path).resolve() for path in notebooks}
    copies, made_from = {}, {}
    for path in notebooks:
        target = Path(out) / Path(path).name
        if target.resolve() in sources:
            raise StudentCopyError(f"the student copy of {path} would overwrite the notebook {target} (and its "
                                   "solutions): choose another --out folder")
        if target in made_from:
            raise StudentCopyError(f"{made_from[target]} and {path} have the same file name, so their student copies "
                                   f"would both be {target}: rename one, or copy them into different folders")
        try:
            copies[target] = student_notebook(nbformat.read(path, as_version=4))
        except StudentCopyError as error:
            raise StudentCopyError(f"{path}: {error}") from None
        except Exception as error:  # noqa: BLE001  (nbformat raises several kinds for a damaged file)
            raise StudentCopyError(f"{path} is not a notebook ({type(error).__name__}: {error}); no copy was "
                                   "written") from None
        made_from[target] = path
    for target, copy in copies.items():
        write_text_atomic(target, nbformat.writes(copy) + "\n")
    return list(copies)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write student copies of notebooks: solutions replaced by stubs.")
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("student"))
    args = parser.parse_args(argv)
    for path in write_student_copies(args.notebooks, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
