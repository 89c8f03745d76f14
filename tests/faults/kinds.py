"""The fault suite's kinds, counted from its test files: ``python tests/faults/kinds.py`` prints the table of
docs/development.md ("The fault suite"), which tests/faults/test_kinds_table.py keeps in step with the tests.

A kind is one test case marked ``@pytest.mark.fault(area, outcome)``: a parametrized test counts once per case, and a
case may carry its own mark (``pytest.param(..., marks=pytest.mark.fault(...))``).
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

FOLDER = Path(__file__).parent
OUTCOMES = ("error", "warning", "handled")


def _marks(obj: object, name: str) -> list:
    return [m for m in getattr(obj, "pytestmark", []) if m.name == name]


def _cases(fn: object) -> list:
    """The marks of each case of a test function: one entry per parametrized case (the product of its parametrize
    marks), each the list of marks that case carries itself."""
    cases = [[]]
    for parametrize in _marks(fn, "parametrize"):
        values = parametrize.args[1] if len(parametrize.args) > 1 else parametrize.kwargs["argvalues"]
        cases = [marks + list(getattr(value, "marks", ())) for marks in cases for value in values]
    return cases


def kinds() -> list[tuple[str, str, str]]:
    """(area, outcome, test) for every kind of every tests/faults/test_faults_*.py file."""
    found = []
    for path in sorted(FOLDER.glob("test_faults_*.py")):
        spec = importlib.util.spec_from_file_location(f"_faults_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        for name, fn in vars(module).items():
            if not name.startswith("test_") or not callable(fn):
                continue
            for case in _cases(fn):
                fault = [m for m in case if m.name == "fault"] or _marks(fn, "fault")
                if fault:
                    area, outcome = fault[0].args
                    found.append((area, outcome, f"{path.name}::{name}"))
    return found


def table(found: list[tuple[str, str, str]]) -> str:
    """The Markdown table: kinds per area and what each gets."""
    by_area = Counter((area, outcome) for area, outcome, _ in found)
    areas = sorted({area for area, _, _ in found})
    lines = ["| area | kinds | " + " | ".join(OUTCOMES) + " |", "|---|---|" + "---|" * len(OUTCOMES)]
    for area in areas:
        counts = [by_area[(area, o)] for o in OUTCOMES]
        lines.append(f"| `{area}` | {sum(counts)} | " + " | ".join(map(str, counts)) + " |")
    totals = [sum(by_area[(a, o)] for a in areas) for o in OUTCOMES]
    lines.append(f"| all | {sum(totals)} | " + " | ".join(map(str, totals)) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table(kinds()), end="")
