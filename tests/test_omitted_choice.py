"""benchmarks/omitted_choice.py end to end in quick mode: notebook 10's setting chosen on validation, then reported."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _common  # noqa: E402  (benchmarks/_common.py)
import omitted_choice  # noqa: E402  (benchmarks/omitted_choice.py)

from labkit.omitted import CANDIDATES, TEACHERS  # noqa: E402
from labkit.settings import QUICK_ENV  # noqa: E402


def test_quick_mode_chooses_among_every_candidate_and_writes_its_tables(local_cifar, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # its run store, runs/omitted_choice_quick, is relative
    monkeypatch.setattr(_common, "RESULTS", tmp_path / "results")
    monkeypatch.setenv(QUICK_ENV, "1")
    payload = omitted_choice.main(["--quick"])
    assert payload["command"].endswith("--quick")
    assert json.loads((tmp_path / "results" / "omitted_choice_quick.json").read_text())["chosen"] == payload["chosen"]
    tried = {(c["teacher"], c["T"], c["alpha"]) for c in payload["candidates"]}
    assert tried == {(teacher, T, alpha) for teacher in TEACHERS for T, alpha in CANDIDATES}
    best = max(payload["candidates"], key=lambda c: c["val_omitted_acc_biased"])  # the first of equals, as chosen
    assert payload["chosen"] == {k: best[k] for k in ("teacher", "T", "alpha")}
    table = (tmp_path / "results" / "omitted_choice_quick.md").read_text()
    assert "quick mode: not a result" in table and f"**{payload['chosen']['teacher']}" in table
    assert any((tmp_path / "runs" / "omitted_choice_quick").iterdir())
