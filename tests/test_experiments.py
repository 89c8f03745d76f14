"""The course's comparisons: validation-only choices, final epochs, equal budgets, stand-in teachers, transfer sets."""

from __future__ import annotations

import json

import pytest
import torch

from labkit import models, protocol
from labkit.data import CifarData
from labkit.experiments import (HEADLINE_ARMS, HEADLINE_GAINS, headline_arms, headline_comparison, history_of,
                                patient_budget, short_budget, transfer_budget, transfer_protocols)
from labkit.history import History
from labkit.stats import summarize
from labkit.transfer import count_unlabelled


def test_summarize_uses_the_sample_standard_deviation():
    s = summarize([0.80, 0.82, 0.84])
    assert s["mean"] == pytest.approx(0.82) and s["std"] == pytest.approx(0.02)
    assert (s["min"], s["max"], s["n"]) == (0.80, 0.84, 3)
    assert summarize([0.5])["std"] == 0.0
    with pytest.raises(ValueError):
        summarize([])


def test_budgets_vary_what_they_say():
    patient, short, transfer = patient_budget(), short_budget(), transfer_budget()
    assert patient.batch_order_per_seed and patient.views_per_seed and len(patient.seeds) >= 5
    assert transfer.batch_order_per_seed and not transfer.views_per_seed and len(transfer.seeds) >= 5
    assert patient.student == short.student == transfer.student
    assert patient.val_per_class == short.val_per_class == transfer.val_per_class


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


def test_headline_comparison_on_a_tiny_subset(tiny_real, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    calls = []
    real_distill = protocol.distill

    def spy(student, teacher, data, **kwargs):
        calls.append((data, kwargs))
        return real_distill(student, teacher, data, **kwargs)

    monkeypatch.setattr(protocol, "distill", spy)
    torch.manual_seed(123)
    teacher = models.create("student_small")  # an untrained stand-in: cheap, and the logic is what is tested
    budget = protocol.Budget(epochs=1, seeds=(0, 1), batch_size=50, val_per_class=5, teacher_views=2,
                             batch_order_per_seed=True, views_per_seed=True)
    p = protocol.prepare(teacher, tiny_real, budget, log=None)
    results = headline_comparison(p, smoothing=((1.0, 0.0), (1.0, 0.2)), candidates=((2.0, 0.5), (4.0, 0.9)))
    json.dumps(results)  # JSON-ready
    assert list(results["arms"]) == list(HEADLINE_ARMS)
    assert list(results["gains"]) == [f"{a} - {b}" for a, b in HEADLINE_GAINS]
    assert len(calls) == 2 + 1 + 2 + 1 + 2 + 2  # each arm's candidates, their other seed; two stand-ins x two seeds

    # Every run watched the validation split; the test split is apart from training; each seed its own views.
    for data, kwargs in calls:
        assert len(data.val_labels) == 50 and len(data.train_labels) == 250 and len(data.test_labels) == 100
        assert kwargs["epochs"] == 1 and kwargs["batch_size"] == 50 and kwargs["teacher_views"] == 2
        assert kwargs["views_seed"] == kwargs["seed"]
    # The choices were made on validation accuracy, by the first seed's runs; the stand-ins run at (T, alpha).
    for arm, key in (("labels only", "smoothing"), ("distilled", "alpha")):
        best = max(results["candidates"][arm], key=lambda c: c["val_acc"])
        assert best["alpha"] == results["chosen"][key]
    chosen = results["chosen"]
    for arm in ("uniform teacher", "class-average teacher"):
        assert all((r["T"], r["alpha"]) == (chosen["T"], chosen["alpha"]) for r in results["runs"][arm])
    targets = [kw.get("targets") for _, kw in calls]
    assert sum(getattr(t, "__name__", "").startswith("class_average") for t in targets) == 2

    # Same initial weights for every arm of a seed; different across seeds. Final epoch, never the best.
    runs = [r for arm_runs in results["runs"].values() for r in arm_runs]
    for seed in (0, 1):
        assert len({r["init_fingerprint"] for r in runs if r["seed"] == seed}) == 1
    assert len({r["init_fingerprint"] for r in runs}) == 2
    for r in runs:
        assert r["val_acc"] == r["history"]["val_acc"][-1] and 0.0 <= r["test_acc"] <= 1.0
    gain = results["gains"]["distilled - labels only"]
    assert gain["differences"] == pytest.approx([d["test_acc"] - l["test_acc"] for d, l in
                                                 zip(results["runs"]["distilled"], results["runs"]["labels only"])])
    with pytest.raises(ValueError, match="no headline arm"):
        headline_arms(p, smoothing=0.1, T=2.0, alpha=0.5, names=("scratch",))


def test_transfer_protocols_share_the_splits_and_the_images_seen(tiny_real, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(5)
    teacher = models.create("student_small")
    budget = protocol.Budget(epochs=1, seeds=(0,), batch_size=50, val_per_class=5, teacher_views=2)
    base = protocol.prepare(teacher, tiny_real, budget, log=None)
    sets = transfer_protocols(base, 0.2)
    assert sets["labelled_per_class"] == 5 and sets["repeat"] == 5
    labelled, transfer, pseudo = (sets[k].data for k in ("labelled", "transfer set", "pseudo-labels"))
    assert len(labelled.train_labels) == len(transfer.train_labels) == len(pseudo.train_labels) == 250
    assert count_unlabelled(transfer) == sets["unlabelled_images"] == 200
    assert count_unlabelled(pseudo) == count_unlabelled(labelled) == 0
    for d in (labelled, transfer, pseudo):
        assert torch.equal(d.val_labels, base.data.val_labels) and torch.equal(d.test_labels, base.data.test_labels)
    assert 0.0 <= sets["pseudo_label_accuracy"] <= 1.0


def test_history_of_reads_a_run_back_from_results():
    rows = [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.6}]
    results = {"runs": [{"arm": "distilled", "seed": 1, "history": History(rows).to_dict()}]}
    assert history_of(results, "distilled", 1).rows == rows
    with pytest.raises(KeyError, match="no run of arm 'scratch'"):
        history_of(results, "scratch", 1)
