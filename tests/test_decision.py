"""The decision matrix: rows read from the deployment results as the docstring says, the Pareto front on hand-made
rows, and deploy.py's settings and kept parts (no model is trained or timed here)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from labkit.decision import decision_rows, pareto_front

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import deploy  # noqa: E402  (benchmarks/deploy.py)


def row(strategy: str, acc: float, speed: float) -> dict:
    return {"strategy": strategy, "test_acc": acc, "images_per_s": speed}


def test_the_pareto_front_keeps_only_rows_that_nothing_beats_on_both():
    rows = [row("teacher", 0.93, 1_000), row("teacher int8", 0.93, 3_000), row("student", 0.85, 5_000),
            row("student int8", 0.85, 9_000), row("pruned", 0.80, 8_000), row("tie", 0.85, 9_000)]
    marked = {r["strategy"]: r["pareto"] for r in pareto_front(rows)}
    assert marked == {"teacher": False, "teacher int8": True, "student": False, "student int8": True,
                      "pruned": False, "tie": True}, "equal rows do not beat each other"
    assert "pareto" not in rows[0], "the rows given are not changed"
    assert pareto_front([row("alone", 0.5, 1)])[0]["pareto"]


def spread(median: float) -> dict:
    return {"median": median}


def fake_deploy() -> dict:
    """The shape of deploy.json's parts, with made-up numbers: fast ORT int8, the rest slower."""
    quality, b1, b256 = {}, {}, {}
    speeds = {"fp32 eager": 1.0, "fp32 compiled": 1.2, "int8 compiled": 2.0, "ORT fp32": 1.1, "ORT int8": 2.5}
    for model, (acc, base) in {"teacher": (0.93, 1_000), "student": (0.85, 5_000)}.items():
        quality[model] = {e: {"test_acc": acc - (0.005 if "int8" in e else 0), "stored_kb": 100 if "int8" in e else 400}
                          for e in speeds}
        for e, x in speeds.items():
            b1[f"{model}, {e}"] = {"ms": spread(1 / x)}
            b256[f"{model}, {e}"] = {"images_per_s": spread(base * x)}
    for model, (ms, ips) in {"student": (0.3, 8_000), "teacher": (2.0, 1_800)}.items():
        b1[f"{model} pruned, fp32 eager"] = {"ms": spread(ms)}
        b256[f"{model} pruned, fp32 eager"] = {"images_per_s": spread(ips)}
    return {"quality": quality, "timings": {"batch_1": b1, "batch_256": b256},
            "scratch_student": {"test_acc": 0.83},
            "qat": {"settings": {"weight_bits": 4},
                    "arms": {"post-training": {"test_acc": [0.83, 0.83, 0.83]},
                             "QAT labels": {"test_acc": [0.84, 0.84, 0.85]},
                             "QAT KD": {"test_acc": [0.85, 0.85, 0.86]}}},
            "pruning": {"arms": {"student": {"pruned + KD": {"test_acc": [0.80, 0.82], "stored_kb": 200},
                                             "narrow, scratch KD": {"test_acc": [0.78, 0.78], "stored_kb": 200}},
                                 "teacher": {"pruned + KD": {"test_acc": [0.92], "stored_kb": 2000}}}}}


def test_decision_rows_are_read_from_the_measured_parts():
    transfer = {"fractions": {"0.02": {"arms": {"distilled, transfer set": {"test_acc": {"mean": 0.79, "n": 5}}}}}}
    rows = {r["strategy"]: r for r in decision_rows(fake_deploy(), transfer)}
    assert list(rows) == ["teacher, fp32", "teacher, int8", "student distilled, fp32", "student distilled, int8",
                          "student scratch, fp32", "student distilled, post-training (4-bit weights)",
                          "student distilled, QAT + KD (4-bit weights)",
                          "student distilled, QAT, labels (4-bit weights)",
                          "teacher pruned + KD", "student pruned + KD", "narrow student trained directly, KD",
                          "transfer-set student (2% labels), fp32"]
    teacher = rows["teacher, fp32"]
    assert teacher["engine"] == "fp32 compiled" and teacher["images_per_s"] == 1_200 and teacher["stored_kb"] == 400
    assert rows["teacher, int8"]["engine"] == "ORT int8" and rows["teacher, int8"]["test_acc"] == pytest.approx(0.925)
    qat = rows["student distilled, QAT + KD (4-bit weights)"]
    assert qat["test_acc"] == pytest.approx(0.8533, abs=1e-4) and qat["seeds"] == 3
    assert qat["images_per_s"] == rows["student distilled, int8"]["images_per_s"] == 12_500, "the int8 kernels"
    assert rows["transfer-set student (2% labels), fp32"]["images_per_s"] == 6_000, "timed as student_small fp32"
    assert rows["student scratch, fp32"]["latency_ms"] == rows["student distilled, fp32"]["latency_ms"]
    pruned = rows["student pruned + KD"]
    assert (pruned["test_acc"], pruned["images_per_s"], pruned["stored_kb"], pruned["seeds"]) == \
        (pytest.approx(0.81), 8_000, 200, 2)
    minimal = fake_deploy()
    for part in ("qat", "pruning", "scratch_student"):
        del minimal[part]
    assert len(decision_rows(minimal)) == 4, "only the parts that were run"


def test_the_latency_view_takes_each_kind_at_its_lowest_latency_engine():
    d = fake_deploy()
    d["timings"]["batch_1"]["student, int8 compiled"]["ms"] = spread(0.1)  # quicker alone, slower in batches
    by_throughput = {r["strategy"]: r for r in decision_rows(d)}["student distilled, int8"]
    by_latency = {r["strategy"]: r for r in decision_rows(d, speed="latency_ms")}["student distilled, int8"]
    assert (by_throughput["engine"], by_latency["engine"]) == ("ORT int8", "int8 compiled")
    assert (by_latency["latency_ms"], by_latency["images_per_s"]) == (0.1, 10_000), "that engine's own numbers"
    with pytest.raises(ValueError, match="latency_ms"):
        decision_rows(d, speed="ms")


def test_deploy_reads_the_chosen_distillation_settings_or_says_it_fell_back(tmp_path):
    path = tmp_path / "kd_headline.json"
    fallback = deploy.distillation_settings(path)
    assert (fallback["T"], fallback["alpha"]) == (deploy.FALLBACK_DISTILLATION["T"],
                                                  deploy.FALLBACK_DISTILLATION["alpha"])
    assert "FALLBACK" in fallback["from"]
    path.write_text(json.dumps({"chosen": {"smoothing": 0.1, "T": 4.0, "alpha": 0.9}}))
    assert deploy.distillation_settings(path) == {"T": 4.0, "alpha": 0.9, "from": "kd_headline.json"}


def test_deploy_keeps_finished_work_and_estimates_every_part(tmp_path):
    kept, calls = deploy.Kept(tmp_path, fresh=False), []
    make = lambda: calls.append(1) or {"test_acc": 0.5}  # noqa: E731
    assert kept.get({"part": "qat", "seed": 0}, make) == {"test_acc": 0.5}
    assert kept.get({"seed": 0, "part": "qat"}, make) == {"test_acc": 0.5} and len(calls) == 1
    kept.get({"part": "qat", "seed": 1}, make)
    assert kept.has({"seed": 1, "part": "qat"}) and not kept.has({"part": "qat", "seed": 2})
    assert not deploy.Kept(tmp_path, fresh=True).has({"part": "qat", "seed": 1}), "fresh makes it again"
    deploy.Kept(tmp_path, fresh=True).get({"part": "qat", "seed": 0}, make)
    assert len(calls) == 3 and not list(tmp_path.glob("*.tmp"))
    args = argparse.Namespace(repeats=11, epochs=1.0, scratch_epochs=3.0, qat_epochs=0.5, prune_amount=0.5)
    minutes = deploy.estimates(args, ["engines", "pruning", "qat", "limited_data"], [0, 1, 2])
    assert set(minutes) == {"engines", "pruning", "qat", "limited_data"} and all(m > 0 for m in minutes.values())
    assert sum(minutes.values()) < 60, "--all must fit in an hour on 2 quiet cores"


def test_the_latency_view_counts_lower_as_faster():
    rows = [{"strategy": s, "test_acc": a, "latency_ms": ms} for s, a, ms in
            (("quick and good", 0.9, 1.0), ("slow and good", 0.9, 3.0), ("quick, worse", 0.8, 0.5))]
    marked = {r["strategy"]: r["pareto"] for r in pareto_front(rows, speed="latency_ms")}
    assert marked == {"quick and good": True, "slow and good": False, "quick, worse": True}


def test_low_rank_and_mobile_rows_take_the_compression_speed_timings():
    d = fake_deploy()
    engines = ("fp32 eager", "fp32 compiled", "int8 compiled", "ORT fp32", "ORT int8")
    timed = {"batch_1": {}, "batch_256": {}}
    stored = {}
    for label, base in (("teacher, energy 0.9", 1_500), ("student, energy 0.9", 7_000), ("student, pruned 50%", 9_000)):
        for i, e in enumerate(engines):
            timed["batch_1"][f"{label}, {e}"] = {"ms": spread(1.0 / (i + 1))}
            timed["batch_256"][f"{label}, {e}"] = {"images_per_s": spread(base * (i + 1))}
            stored[f"{label}, {e}"] = 50 * (i + 1)
    d["compression_speed"] = {"timings": {"lowrank": timed}, "stored_kb": stored}
    d["lowrank"] = {"energies": [0.9], "models": {
        "teacher": {"energy 0.9": {"KD": [0.90, 0.92], "labels": [0.89, 0.89]}},
        "student": {"energy 0.9": {"KD": [0.84, 0.84], "KD, int8": [0.83, 0.83], "labels": [0.82, 0.82]}}}}
    d["mobile"] = {"amount": 0.5, "arms": {arm: {"test_acc": [acc, acc]} for arm, acc in (
        ("pruned, int8 QAT with KD", 0.80), ("pruned, KD, then int8", 0.79), ("pruned, int8, no recovery", 0.3))}}
    rows = {r["strategy"]: r for r in decision_rows(d)}
    low = rows["student distilled, low-rank (90% energy) + KD, int8"]
    assert (low["engine"], low["images_per_s"], low["stored_kb"], low["test_acc"]) == \
        ("ORT int8", 35_000, 250, pytest.approx(0.83)), "the fastest int8 engine, its own size, the int8 accuracy"
    assert rows["teacher, low-rank (90% energy) + KD, fp32"]["engine"] == "ORT fp32"
    assert "teacher, low-rank (90% energy) + KD, int8" not in rows, "the teacher's int8 accuracy is not measured"
    qat = rows["student distilled, pruned, int8 QAT with KD"]
    assert (qat["images_per_s"], qat["latency_ms"], qat["seeds"]) == (45_000, pytest.approx(0.2), 2)
