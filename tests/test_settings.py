"""Quick mode: what it switches, and the sentence a training cell prints under quick-mode numbers."""

from __future__ import annotations

import pytest

from labkit.settings import QUICK_ENV, pick, quick_mode, quick_note


@pytest.mark.parametrize("value, quick", [("1", True), ("yes", True), ("0", False), ("", False)])
def test_quick_mode_sizes_runs_and_says_so_under_their_numbers(monkeypatch, capsys, value, quick):
    monkeypatch.setenv(QUICK_ENV, value)
    assert quick_mode() is quick and pick("full", "quick") == ("quick" if quick else "full")
    quick_note()
    said = capsys.readouterr().out
    assert ("not what it learns" in said) is quick and (said == "") is not quick
