"""benchmarks/precision.py's pieces on tiny sizes: the interleaved step timing, the notebook table, the report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import precision  # noqa: E402  (benchmarks/precision.py)

from labkit.settings import PRECISION_ENV  # noqa: E402


def test_steps_are_timed_in_both_precisions_and_compared(monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    row = precision.steps_per_second("student_small", batch_size=8, rounds=2, steps=1)
    assert row["model"] == "student_small" and row["rounds"] == 2
    for p in precision.PRECISIONS:
        assert row[f"{p}_steps_per_s"] > 0 and row[f"{p}_images_per_s"] == pytest.approx(8 * row[f"{p}_steps_per_s"],
                                                                                           rel=0.01)
    assert row["speed_up"] == pytest.approx(row["bf16_steps_per_s"] / row["fp32_steps_per_s"], rel=0.01)


def test_the_notebook_runs_of_both_precisions_are_put_side_by_side(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "RESULTS", tmp_path)
    with pytest.raises(FileNotFoundError, match="precision_notebooks_fp32.json is missing: run LABKIT_PRECISION=fp32"):
        precision.notebooks_part(quick=False)
    for p, minutes in (("fp32", 20.0), ("bf16", 8.0)):
        runs = [{"notebook": "05_distill_student.ipynb", "minutes": minutes, "peak_rss_mb": 1400},
                {"notebook": f"only_in_{p}.ipynb", "minutes": 1.0, "peak_rss_mb": 900}]
        (tmp_path / f"precision_notebooks_{p}.json").write_text(json.dumps({"runs": runs}))
    rows = precision.notebooks_part(quick=False)["rows"]
    assert [r["notebook"] for r in rows] == ["05_distill_student.ipynb"]  # only notebooks run in both
    assert rows[0]["speed_up"] == 2.5
    table = precision.markdown({"notebooks": {"rows": rows}})
    assert "| 05_distill_student.ipynb | 20.0 | 8.0 | 2.50x | 1,400 / 1,400 |" in table
    killed = {"runs": [{"notebook": "05_distill_student.ipynb", "minutes": 13.5, "peak_rss_mb": 1537,
                        "completed": False}]}
    (tmp_path / "precision_notebooks_fp32.json").write_text(json.dumps(killed))
    rows = precision.notebooks_part(quick=False)["rows"]
    assert rows[0]["speed_up"] is None  # a run killed at the memory limit has no time to compare
    table = precision.markdown({"notebooks": {"rows": rows}})
    assert "| 05_distill_student.ipynb | 13.5 (killed at the limit) | 8.0 | - | 1,537 / 1,400 |" in table

