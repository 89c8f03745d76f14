"""benchmarks/reference_students.py: the shipped reference students are the headline's kept seed-0 runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import reference_students  # noqa: E402  (benchmarks/reference_students.py)

from labkit import models  # noqa: E402
from labkit.pretrained import SHIPPED, WEIGHTS_DIR, load_weights  # noqa: E402


def _record(seed=0, T=1.0, alpha=0.1, val_acc=0.84):
    return {"seed": seed, "T": T, "alpha": alpha, "val_acc": val_acc}


def test_kept_run_finds_the_one_matching_record_and_refuses_none_or_two(tmp_path, monkeypatch):
    monkeypatch.setattr(reference_students, "KEPT", tmp_path)
    for name, record in {"a": _record(), "b": _record(T=4.0, alpha=0.9), "c": _record(seed=1)}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    assert reference_students.kept_run(_record(T=4.0, alpha=0.9)) == tmp_path / "b.safetensors"
    with pytest.raises(LookupError, match="0 kept runs"):
        reference_students.kept_run(_record(val_acc=0.5))
    (tmp_path / "d.json").write_text(json.dumps(_record()))
    with pytest.raises(LookupError, match="2 kept runs.*kd_headline"):
        reference_students.kept_run(_record())


@pytest.mark.parametrize("name", sorted(reference_students.ARMS))
def test_shipped_students_are_the_headline_seed_0_runs(name):
    headline = json.loads((ROOT / "benchmarks" / "results" / "kd_headline.json").read_text())
    record = next(r for r in headline["runs"][reference_students.ARMS[name]] if r["seed"] == 0)
    kept = load_weights(models.create("student_small"), reference_students.kept_run(record)).state_dict()
    shipped = load_weights(models.create("student_small"), WEIGHTS_DIR / SHIPPED[name][1], SHIPPED[name][2]).state_dict()
    for key, value in kept.items():
        assert (shipped[key].float() - value.float()).abs().max() <= 1e-3 * (1 + value.abs().max()), key
