"""The limited-data rule: classes 5-9 renumbered, a pretrained body under a new head, arms that share what the design
says, and an experiment that runs end to end and is read back from its store."""

from __future__ import annotations

import json
import math

import pytest
import torch

from labkit import limited_data, models, protocol
from labkit.data import CifarData
from labkit.limited_data import (LIMITED_ARMS, TARGET_CLASSES, LimitedDataBudget, LimitedDataError, class_subset,
                                 limited_data_budget, limited_data_rule, limited_data_task, reuse_body)
from labkit.settings import QUICK_ENV
from labkit.teacher import fingerprint
from labkit.transfer import UNLABELLED, count_unlabelled


def numbered_data(per_class: int = 6) -> CifarData:
    """Images whose every pixel is the image's own index: what each kept image was can be read off it."""
    n = 10 * per_class
    images = torch.arange(n).repeat_interleave(3 * 32 * 32).reshape(n, 3, 32, 32).to(torch.uint8)
    labels = torch.arange(n) % 10
    return CifarData(images, labels, images[:20].clone(), labels[:20].clone(), source="numbered")


def test_class_subset_keeps_the_classes_asked_for_renumbered_in_order():
    data = numbered_data()
    task = class_subset(data, TARGET_CLASSES)
    assert task.classes == ("dog", "frog", "horse", "ship", "truck")
    assert sorted(task.train_labels.unique().tolist()) == [0, 1, 2, 3, 4] and len(task.train_labels) == 30
    original = task.train_images[:][:, 0, 0, 0].long()  # the index of each kept image in the original data
    assert torch.equal(data.train_labels[original], task.train_labels + 5), "class 5 becomes 0, ..., 9 becomes 4"
    assert torch.equal(data.test_labels[task.test_images[:, 0, 0, 0].long()], task.test_labels + 5)
    swapped = class_subset(data, (9, 5))
    assert swapped.classes == ("truck", "dog")
    assert torch.equal(data.train_labels[swapped.train_images[:][:, 0, 0, 0].long()],
                       torch.tensor([9, 5])[swapped.train_labels])
    held = class_subset(data.with_validation(2), (0, 1))
    assert len(held.val_labels) == 4 and set(held.val_labels.tolist()) == {0, 1}
    with pytest.raises(LimitedDataError, match="distinct"):
        class_subset(data, (5, 5))
    with pytest.raises(LimitedDataError, match="before removing labels"):
        class_subset(CifarData(data.train_images, torch.full((60,), UNLABELLED), data.test_images, data.test_labels),
                     (1,))


def test_the_task_holds_out_validation_before_drawing_the_few_labels():
    budget = LimitedDataBudget(fraction=0.25, val_per_class=2, repeat=3, batch_size=5)
    task = limited_data_task(numbered_data(10), budget)
    labelled, transfer = task["labelled"], task["transfer"]
    assert task["labelled_per_class"] == 2 and task["labelled_images"] == 10  # a quarter of 8 per class
    assert len(labelled.train_labels) == 30 and count_unlabelled(labelled) == 0
    assert len(transfer.train_labels) == 40 and count_unlabelled(transfer) == task["unlabelled_images"] == 30
    val = set(labelled.val_images[:, 0, 0, 0].tolist())
    assert not val & set(transfer.train_images[:][:, 0, 0, 0].tolist()), "validation images never train"
    assert len(task["source"].train_labels) == 40 and task["source"].classes[0] == "airplane"


def test_reuse_body_keeps_the_pretrained_body_under_the_fresh_head():
    torch.manual_seed(0)
    pretrained = models.create("student_small", num_classes=5)
    pretrained.layers[0].norm1.running_mean.fill_(0.5)  # statistics travel with the body
    torch.manual_seed(1)
    fresh = models.create("student_small", num_classes=5)
    start = reuse_body(pretrained, fresh)
    for name, value in start.state_dict().items():
        source = fresh if name.startswith("head.") else pretrained
        assert torch.equal(value, source.state_dict()[name]), name
    assert start.head is not fresh.head and start.head.out_features == 5
    ten = reuse_body(models.create("student_small"), fresh)  # a 10-class body, a 5-class head
    assert ten.head.out_features == 5
    with pytest.raises(LimitedDataError, match="same architecture"):
        reuse_body(models.create("student_medium"), fresh)


def test_budgets_state_their_cost_and_refuse_what_cannot_be_paired(monkeypatch):
    monkeypatch.delenv(QUICK_ENV, raising=False)  # the full budget, also under the test command's quick mode
    estimate = limited_data_budget().estimate()
    assert estimate["labelled_images"] == 490 and estimate["images_seen_per_run"] == 19 * 256 * 5
    assert set(estimate["seconds"]) == {"pretrain", "teacher", "teacher logits", "students"}
    assert 5 < estimate["minutes"] <= 20
    with pytest.raises(LimitedDataError, match="at least 2 seeds"):
        LimitedDataBudget(seeds=(0,))
    with pytest.raises(LimitedDataError, match="fraction"):
        LimitedDataBudget(fraction=0.0)


TINY = LimitedDataBudget(teacher="student_small", seeds=(0, 1), fraction=0.2, val_per_class=2, repeat=2, epochs=2,
                         teacher_epochs=1, pretrain_epochs=1, batch_size=10, train_per_class=20, test_per_class=4)


def test_the_arms_run_end_to_end_and_share_what_the_design_says(local_cifar, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    calls = []
    real = protocol.train_student
    monkeypatch.setattr(protocol, "train_student",
                        lambda *a, **k: calls.append({**k, "images": len(a[1].train_labels)}) or real(*a, **k))
    result = limited_data_rule(local_cifar, T=2.0, alpha=0.5, budget=TINY, store=tmp_path / "runs", log=None)
    json.dumps(result)
    s = result["settings"]
    assert s["labelled_images"] == 20 and s["target_classes"] == ["dog", "frog", "horse", "ship", "truck"]
    assert s["test_images"] == 20 and s["steps_per_run"] == 8 and s["images_seen_per_run"] == 80
    assert list(result["arms"]) == list(LIMITED_ARMS) and len(calls) == len(LIMITED_ARMS) * 2
    assert {k["images"] for k in calls} == {40, 90}  # the labelled images twice, or the whole transfer set
    assert {math.ceil(k["images"] // k["batch_size"] * k["epochs"]) for k in calls} == {8}, "the same steps"
    runs = result["runs"]
    for i, seed in enumerate(TINY.seeds):
        init = {name: runs[name][i]["init_fingerprint"] for name in LIMITED_ARMS}
        assert init["scratch"] == init["distilled, labelled only"] == init["distilled, transfer set"]
        assert init["transfer learning"] == init["both, labelled only"] == init["both, transfer set"]
        assert init["transfer learning"] != init["scratch"]
        assert all(runs[name][i]["seed"] == seed for name in LIMITED_ARMS)
    assert runs["scratch"][0]["init_fingerprint"] != runs["scratch"][1]["init_fingerprint"]
    assert result["pretrained"][0]["fingerprint"] != result["pretrained"][1]["fingerprint"], "one pretraining per seed"
    assert {r["alpha"] for name in ("scratch", "transfer learning") for r in runs[name]} == {0.0}
    assert {r["alpha"] for name in LIMITED_ARMS[2:] for r in runs[name]} == {0.5}
    assert all(0 <= r["test_acc"] <= 1 for rs in runs.values() for r in rs)
    gain = result["gains"]["transfer learning - scratch"]
    assert gain["n"] == 2 and gain["differences"][0] == pytest.approx(
        runs["transfer learning"][0]["test_acc"] - runs["scratch"][0]["test_acc"])
    assert result["verdict"].startswith("With 20 labels, transfer learning - distilled")
    for rs in runs.values():
        for r in rs:
            m = r["teacher_mistakes"]
            assert m["teacher_wrong"] > 0, "a 20-label teacher gets some of 20 test images wrong"
            assert m["same_mistake"] + m["student_right"] + m["other_mistake"] == pytest.approx(1)
    mistake = result["mistake_gains"]["distilled, transfer set - scratch"]
    assert mistake["differences"][1] == pytest.approx(runs["distilled, transfer set"][1]["teacher_mistakes"]
                                                      ["same_mistake"] - runs["scratch"][1]["teacher_mistakes"]
                                                      ["same_mistake"])

    calls.clear()
    again = limited_data_rule(local_cifar, T=2.0, alpha=0.5, budget=TINY, store=tmp_path / "runs", log=None)
    assert not calls, "finished runs are read back from the store"
    assert again["runs"]["both, transfer set"][1]["test_acc"] == runs["both, transfer set"][1]["test_acc"]
    assert again["pretrained"] == result["pretrained"]


def test_the_transfer_arm_starts_from_the_seeds_pretrained_body(local_cifar, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    made, starts = [], []
    real_reuse, real_train = limited_data.reuse_body, protocol.train_student
    monkeypatch.setattr(limited_data, "reuse_body", lambda p, f: made.append((p, f, real_reuse(p, f))) or made[-1][2])
    monkeypatch.setattr(protocol, "train_student",
                        lambda *a, **k: starts.append((k["seed"], k.get("start"))) or real_train(*a, **k))
    result = limited_data_rule(local_cifar, T=2.0, alpha=0.5, budget=TINY, arms=("scratch", "transfer learning"),
                               log=None)
    assert [seed for seed, start in starts if start is not None] == [0, 1]
    for (seed, start), (pretrained, fresh, reused) in zip([s for s in starts if s[1] is not None], made):
        assert start is reused
        assert fingerprint(pretrained)[:16] == result["pretrained"][seed]["fingerprint"]
        torch.manual_seed(seed)
        scratch = models.create("student_small", num_classes=5)
        assert fingerprint(fresh) == fingerprint(scratch), "the new head is the scratch arm's initial head"
        assert torch.equal(start.head.weight, scratch.head.weight)
        body = {k: v for k, v in start.state_dict().items() if not k.startswith("head.")}
        assert all(torch.equal(v, pretrained.state_dict()[k]) for k, v in body.items()), "the pretrained body"
    assert "transfer learning - scratch" in result["gains"] and len(result["gains"]) == 1
    with pytest.raises(LimitedDataError, match="no arm named"):
        limited_data_rule(local_cifar, T=2.0, alpha=0.5, budget=TINY, arms=("finetuned",), log=None)
