"""The fault suite as a whole: at least 115 kinds over labkit's public modules, each with a known outcome, and the
table in docs/development.md generated from them (``python tests/faults/kinds.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from kinds import OUTCOMES, kinds, table  # noqa: E402

DOCS = Path(__file__).resolve().parents[2] / "docs" / "development.md"


def test_the_suite_tries_at_least_115_kinds_each_with_an_outcome():
    found = kinds()
    assert len(found) >= 115, len(found)
    assert {outcome for _, outcome, _ in found} <= set(OUTCOMES)
    assert all(area.startswith("labkit") for area, _, _ in found)


def test_the_table_in_the_development_guide_is_the_suites():
    assert table(kinds()) in DOCS.read_text(encoding="utf-8"), "run python tests/faults/kinds.py and paste its table"
