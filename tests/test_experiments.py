"""The scratch-vs-distilled experiment: validation-only choices, final epochs, equal budgets, summaries, targets."""

from __future__ import annotations

import json

import pytest
import torch

from labkit import models, protocol
from labkit.data import CifarData
from labkit.experiments import check_targets, compare_scratch_vs_distilled, headline, history_of, markdown_table
from labkit.stats import summarize
from labkit.train import TrainConfig


def test_summarize_uses_the_sample_standard_deviation():
    s = summarize([0.80, 0.82, 0.84])
    assert s["mean"] == pytest.approx(0.82) and s["std"] == pytest.approx(0.02)
    assert (s["min"], s["max"], s["n"]) == (0.80, 0.84, 3)
    assert summarize([0.5])["std"] == 0.0
    with pytest.raises(ValueError):
        summarize([])


def _fake_results(distilled, scratch, control=(0.80, 0.81, 0.79)):
    runs = [{"arm": arm, "seed": seed, "test_acc": acc}
            for arm, values in (("distilled", distilled), ("scratch", scratch), ("control", control))
            for seed, acc in enumerate(values)]
    results = {"settings": {"student": "student_small"}, "runs": runs,
               "arms": {arm: {"test_acc": summarize([r["test_acc"] for r in runs if r["arm"] == arm])}
                        for arm in ("scratch", "distilled", "control")}}
    results["headline"] = headline(results)
    return results


def test_headline_gains_and_overlap():
    h = _fake_results([0.91, 0.92, 0.915], [0.89, 0.90, 0.895])["headline"]
    assert h["gain_over_scratch"] == pytest.approx(0.02)
    assert h["paired_gains"] == pytest.approx([0.02, 0.02, 0.02])
    assert not h["ranges_overlap"] and not h["std_intervals_overlap"]
    assert h["gain_over_control"] == pytest.approx(0.915 - 0.80)
    overlapping = _fake_results([0.91, 0.92, 0.895], [0.89, 0.90, 0.90])["headline"]
    assert overlapping["ranges_overlap"]


def test_targets_read_off_the_results():
    results = _fake_results([0.91, 0.92, 0.915], [0.89, 0.90, 0.895])
    speed = {"teacher": {"params": 2_000_000, "images_per_s": 700.0},
             "student_small": {"params": 100_000, "images_per_s": 7000.0}}
    targets = check_targets(results, speed)
    assert all(t["met"] for t in targets.values()), targets
    assert targets["params_ratio"]["value"] == pytest.approx(0.05)
    assert targets["throughput_speedup"]["value"] == pytest.approx(10.0)
    missed = check_targets(_fake_results([0.85, 0.86, 0.855], [0.85, 0.86, 0.85]))
    assert not missed["distilled_test_acc"]["met"] and not missed["gain_over_scratch"]["met"]
    assert not missed["seed_ranges_disjoint"]["met"] and "params_ratio" not in missed


def test_validation_split_is_held_out_from_training():
    n = 60
    images = torch.arange(n, dtype=torch.int64).repeat_interleave(3 * 32 * 32).reshape(n, 3, 32, 32).to(torch.uint8)
    labels = torch.arange(n) % 10
    data = CifarData(images, labels, images[:20], labels[:20])
    tune = data.with_validation(val_per_class=2)
    train_ids, val_ids = set(tune.train_images[:, 0, 0, 0].tolist()), set(tune.val_images[:, 0, 0, 0].tolist())
    assert len(val_ids) == 20 and len(train_ids) == 40 and not train_ids & val_ids
    assert torch.bincount(tune.val_labels, minlength=10).tolist() == [2] * 10
    assert torch.equal(tune.test_images, data.test_images)  # the test split stays whole and apart


@pytest.fixture(scope="module")
def tiny_real(local_cifar):
    return local_cifar.subset(train_per_class=30, test_per_class=10, seed=0)


def test_compare_on_a_tiny_subset(tiny_real, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    calls = []
    real_distill = protocol.distill

    def spy(student, teacher, data, **kwargs):
        calls.append((data, kwargs))
        return real_distill(student, teacher, data, **kwargs)

    monkeypatch.setattr(protocol, "distill", spy)
    torch.manual_seed(123)
    teacher = models.create("student_small")  # an untrained stand-in: cheap, and the logic is what is tested
    results = compare_scratch_vs_distilled(teacher, tiny_real, epochs=1, seeds=(0, 1), batch_size=50,
                                           val_per_class=5, teacher_views=2, progress=False, log=None)
    json.dumps(results)  # JSON-ready

    runs = results["runs"]
    assert [r["arm"] for r in runs].count("candidate") == 2 and len(runs) == 3 + 1 + 2 + 2
    s = results["settings"]
    assert (s["train_images"], s["val_images"], s["test_images"]) == (250, 50, 100)

    # Every run watched the validation split, under that name; the test split is apart from training.
    for data, kwargs in calls:
        assert len(data.val_labels) == 50 and len(data.train_labels) == 250 and len(data.test_labels) == 100
        assert kwargs["seed"] == 0 and kwargs["epochs"] == 1 and kwargs["batch_size"] == 50
        assert kwargs["teacher_views"] == 2

    # The choice was made on validation accuracy, by the first seed's runs.
    chosen = results["chosen"]
    best = max(results["candidates"], key=lambda c: c["val_acc"])
    assert (chosen["T"], chosen["alpha"]) == (best["T"], best["alpha"])
    control = [r for r in runs if r["arm"] == "control"]
    assert all(r["lr_scale"] == pytest.approx(1 - chosen["alpha"]) for r in control)
    assert {round(kw["lr"], 6) for _, kw in calls} == {round(TrainConfig().lr, 6),
                                                        round(TrainConfig().lr * (1 - chosen["alpha"]), 6)}

    # Same initial weights for every arm of a seed; different across seeds.
    for seed in (0, 1):
        assert len({r["init_fingerprint"] for r in runs if r["seed"] == seed}) == 1
    assert runs[0]["init_fingerprint"] != [r for r in runs if r["seed"] == 1][0]["init_fingerprint"]

    # Final epoch, never the best: reported numbers are the last history row; only reported arms touch the test set.
    for r in runs:
        assert r["val_acc"] == r["history"]["val_acc"][-1]
        assert ("test_acc" in r) == (r["arm"] != "candidate")
    for arm in ("scratch", "distilled", "control"):
        summary = results["arms"][arm]["test_acc"]
        assert summary["values"] == [r["test_acc"] for r in runs if r["arm"] == arm] and summary["n"] == 2
        assert 0.0 <= summary["mean"] <= 1.0
    history = history_of(results, "distilled", 1)
    assert {"val_acc", "val_agreement", "val_kl", "train_ce", "train_kl"} <= set(history.columns)
    assert "train_kl" not in history_of(results, "scratch", 0).columns  # alpha = 0: no soft term to undo
    assert all(torch.isfinite(torch.tensor(history["loss"])))
    table = markdown_table(results, check_targets(results))
    assert "| scratch:" in table and "| distilled:" in table and "gain_over_scratch" in table


def test_candidates_must_mix_teacher_and_labels():
    data = CifarData(torch.zeros(20, 3, 32, 32, dtype=torch.uint8), torch.arange(20) % 10,
                     torch.zeros(10, 3, 32, 32, dtype=torch.uint8), torch.arange(10))
    for bad in ((2.0, 0.0), (2.0, 1.0)):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            compare_scratch_vs_distilled(models.create("student_small"), data, candidates=(bad,), log=None)


def test_limited_data_comparison_on_a_tiny_subset(local_cifar, tmp_path, monkeypatch):
    from labkit.experiments import limited_data_comparison
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(7)
    teacher = models.create("student_small")
    data = local_cifar.subset(train_per_class=60, test_per_class=5, seed=0)
    result = limited_data_comparison(teacher, data, T=2.0, alpha=0.5, fractions=(0.1,), images_seen=120, seeds=(0,),
                                     val_per_class=5, log=None)
    json.dumps(result)
    row = result["fractions"]["0.1"]
    assert row["labelled_images"] == 60 and row["epochs"] == pytest.approx(2.0)
    runs = [r for arm in row["arms"].values() for r in arm["runs"]]
    assert {r["alpha"] for r in runs} == {0.0, 0.5} and len({r["init_fingerprint"] for r in runs}) == 1
    assert len(row["paired_gains"]) == 1
    with pytest.raises(ValueError, match="fractions"):
        limited_data_comparison(teacher, data, T=2.0, alpha=0.5, fractions=(0.0,), log=None)
