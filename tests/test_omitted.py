"""The omitted-class experiment: the transfer set, the bias correction chosen on validation, a tiny real run."""

from __future__ import annotations

import json

import pytest
import torch

from labkit import models
from labkit.data import CifarData
from labkit.omitted import (choose_bias, choose_omitted_setting, omitted_class_experiment, omitted_scores, with_bias,
                            without_class)


def test_without_class_removes_every_training_image_of_it():
    labels = torch.arange(40) % 10
    data = CifarData(torch.zeros(40, 3, 32, 32, dtype=torch.uint8), labels,
                     torch.zeros(10, 3, 32, 32, dtype=torch.uint8), torch.arange(10))
    transfer = without_class(data, 3)
    assert 3 not in transfer.train_labels.tolist() and len(transfer.train_labels) == 36
    assert len(transfer.test_labels) == 10  # the test split keeps the class
    with pytest.raises(ValueError, match="class index"):
        without_class(data, 10)


def test_bias_is_chosen_to_recover_a_suppressed_class():
    labels = torch.arange(200) % 4
    logits = torch.nn.functional.one_hot(labels, 4).float() * 3
    logits[labels == 2, 2] -= 5.0  # class 2 is always out-scored by 2 points... until its bias rises by > 2
    assert (logits.argmax(1) == labels).float().mean() == 0.75
    bias = choose_bias(logits, labels, omitted=2)
    assert 2.0 < bias < 3.0  # the smallest bias that fixes class 2 without hurting the others (they lead by 3)
    assert (with_bias(logits, 2, bias).argmax(1) == labels).all()
    assert torch.equal(with_bias(logits, 2, 0.0), logits)


def test_precision_counts_the_images_called_the_omitted_class_that_are_of_it():
    labels = torch.tensor([0, 0, 1, 1, 2])
    logits = torch.tensor([[0.0, 0, 0.5], [0, 0, 0.4], [0, 2, 0.3], [0, 2, 1.5], [0, 0, 2]])
    scores = omitted_scores(logits, labels, omitted=2, bias=0.2)  # rows 0, 1, 4 become class 2; row 4 is a 2
    assert scores["omitted_precision_biased"] == pytest.approx(1 / 3)
    assert omitted_scores(logits, labels, omitted=2, bias=-5.0)["omitted_precision_biased"] == 0.0


def test_omitted_class_experiment_on_a_tiny_subset(local_cifar, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(11)
    teacher = models.create("student_small")
    result = omitted_class_experiment(teacher, local_cifar, omitted=3, T=2.0, alpha=0.5, epochs=1, seeds=(0,),
                                      teacher_views=1, batch_size=50, val_per_class=5, train_per_class=30,
                                      test_per_class=10, log=None)
    json.dumps(result)
    s = result["settings"]
    assert s["omitted_name"] == "cat" and s["transfer_images"] == 9 * 25 and s["val_images"] == 50
    for arm in ("distilled", "labels only"):
        (run,) = result["runs"][arm]
        assert sum(run["omitted_row"]) == 10 and sum(run["omitted_row_biased"]) == 10
        assert run["omitted_acc_biased"] >= run["omitted_acc"]
    assert result["runs"]["distilled"][0]["init_fingerprint"] == result["runs"]["labels only"][0]["init_fingerprint"]


def test_choose_omitted_setting_uses_validation_only(local_cifar, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(12)
    teachers = {"a": models.create("student_small"), "b": models.create("student_small")}
    result = choose_omitted_setting(teachers, local_cifar, omitted=3, candidates=((1.0, 0.5), (2.0, 0.9)),
                                    epochs=1, seeds=(4, 5), teacher_views=1, batch_size=50, val_per_class=5,
                                    train_per_class=30, test_per_class=10, log=None)
    json.dumps(result)
    tried = result["candidates"]
    assert [(c["teacher"], c["T"], c["alpha"]) for c in tried] == [("a", 1, 0.5), ("a", 2, 0.9), ("b", 1, 0.5),
                                                                   ("b", 2, 0.9)]
    best = max(c["val_omitted_acc_biased"] for c in tried)
    first_best = next(c for c in tried if c["val_omitted_acc_biased"] == best)
    assert result["chosen"] == {k: first_best[k] for k in ("teacher", "T", "alpha")}
    assert all(not k.startswith("test") for c in tried + [result["labels_only"]] for k in c)
    assert result["settings"]["seeds"] == [4, 5] and result["settings"]["omitted_name"] == "cat"
    with pytest.raises(ValueError, match="at least one teacher"):
        choose_omitted_setting({}, local_cifar, omitted=3, candidates=((1.0, 0.5),), log=None)
