"""The protocol every experiment uses: one budget, one split, one frozen teacher for every arm."""

from __future__ import annotations

import functools
import json
from dataclasses import replace

import pytest
import torch

from labkit import models, protocol
from labkit.data import CifarData
from labkit.protocol import Budget, prepare, run_arms
from labkit.teacher import FrozenTeacher


def fake_data(n_train: int = 200, n_test: int = 50) -> CifarData:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_train + n_test, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.arange(n_train + n_test) % 10
    return CifarData(images[:n_train], labels[:n_train], images[n_train:], labels[n_train:])


def test_a_budget_refuses_what_cannot_train():
    for bad in (dict(seeds=()), dict(epochs=0), dict(batch_size=0), dict(val_per_class=0), dict(teacher_views=-1)):
        with pytest.raises(ValueError):
            Budget(**bad)
    assert Budget(seeds=[2, 3]).seeds == (2, 3)


def test_prepare_holds_out_validation_and_keeps_the_test_split_apart():
    data = fake_data()
    p = prepare(models.create("student_small"), data, Budget(val_per_class=3, train_per_class=15), log=None)
    assert isinstance(p.teacher, FrozenTeacher)
    assert (len(p.data.train_labels), len(p.data.val_labels), len(p.data.test_labels)) == (120, 30, 50)
    assert torch.equal(p.data.test_images, data.test_images)
    s = p.settings(T=2.0)
    assert (s["train_images"], s["val_images"], s["test_images"], s["T"], s["seeds"]) == (120, 30, 50, 2.0, [0, 1, 2])
    fewer = p.with_training(p.data.subset(5, None), epochs=8)
    assert len(fewer.data.train_labels) == 50 and fewer.budget.epochs == 8 and fewer.budget.seeds == p.budget.seeds
    assert torch.equal(fewer.data.val_images, p.data.val_images)


def test_every_arm_of_a_seed_gets_the_same_budget_and_runs_made_already_are_not_repeated(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    calls = []
    real = protocol.train_student
    monkeypatch.setattr(protocol, "train_student", lambda *a, **k: calls.append(k) or real(*a, **k))
    p = prepare(models.create("student_small"), fake_data(), Budget(epochs=1, seeds=(0, 1), batch_size=50,
                                                                    val_per_class=2, teacher_views=1), log=None)
    early = p.train(0, T=2.0, alpha=0.5)
    calls.clear()
    out = run_arms(p, {"distilled": dict(T=2.0, alpha=0.5), "scratch": dict(T=2.0, alpha=0.0)},
                   trained={("distilled", 0): early})
    assert [(k["seed"], k["alpha"]) for k in calls] == [(1, 0.5), (0, 0.0), (1, 0.0)]
    assert {(k["epochs"], k["batch_size"], k["teacher_views"], k["student"], k["data_seed"]) for k in calls} == \
        {(1, 50, 1, "student_small", 0)}
    assert out["distilled"]["runs"][0] is early[1] and out["distilled"]["test_acc"]["n"] == 2
    assert all(r["arm"] == name and "test_acc" in r for name, a in out.items() for r in a["runs"])


def test_a_stored_run_is_read_back_not_retrained_and_seeds_can_draw_their_own_batches(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    calls = []
    real = protocol.train_student
    monkeypatch.setattr(protocol, "train_student", lambda *a, **k: calls.append(k) or real(*a, **k))
    teacher = models.create("student_small")
    budget = Budget(epochs=1, seeds=(0, 1), batch_size=50, val_per_class=2, teacher_views=1, batch_order_per_seed=True)
    first = prepare(teacher, fake_data(), budget, log=None, store=tmp_path / "runs")
    model, record = first.train(1, T=2.0, alpha=0.5)
    again = prepare(teacher, fake_data(), budget, log=None, store=tmp_path / "runs")
    model2, record2 = again.train(1, T=2.0, alpha=0.5)
    assert len(calls) == 1 and calls[0]["batch_seed"] == 1 and record2 == json.loads(json.dumps(record))
    assert all(torch.equal(x, y) for x, y in zip(model.state_dict().values(), model2.state_dict().values()))
    again.train(1, T=4.0, alpha=0.5)  # other settings: a run of its own
    assert len(calls) == 2
    relabelled = again.data.train_labels.roll(1)  # a training set of the same size, other labels
    again.with_training(replace(again.data, train_labels=relabelled)).train(1, T=2.0, alpha=0.5)
    assert len(calls) == 3
    fewer = again.data.keep_train(torch.arange(len(relabelled)) % 2 == 0)
    again.with_training(fewer).train(1, T=2.0, alpha=0.5)
    again.with_training(again.data.keep_train(torch.arange(len(relabelled)) % 2 == 1)).train(1, T=2.0, alpha=0.5)
    assert len(calls) == 5  # the same number of images, other images


def test_a_stored_run_reads_back_and_refuses_damage_with_the_file_named(tmp_path):
    made = []

    def make():
        made.append(1)
        torch.manual_seed(0)
        return torch.nn.Linear(3, 2), {"test_acc": 0.5}

    what, skeleton = {"arm": "x", "seed": 0}, lambda: torch.nn.Linear(3, 2)
    first, record = protocol.kept_model(tmp_path, what, make, skeleton)
    again, record_again = protocol.kept_model(tmp_path, what, make, skeleton)
    assert made == [1] and record_again == record == {"test_acc": 0.5}
    assert torch.equal(again.weight, first.weight)
    weights = next(tmp_path.glob("*.safetensors"))
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF  # one flipped bit of a tensor: a file that still loads, with a wrong number
    weights.write_bytes(bytes(blob))
    with pytest.raises(protocol.StoredRunError, match=weights.name + ".*delete it"):
        protocol.kept_model(tmp_path, what, make, skeleton)
    record_file = next(tmp_path.glob("*.json"))
    record_file.write_text('{"labkit_stored_run": 1, "weights_sha')
    with pytest.raises(protocol.StoredRunError, match=record_file.name + ".*delete it"):
        protocol.kept_model(tmp_path, what, make, skeleton)


def test_stored_runs_kept_before_the_checksum_still_read_back(tmp_path):
    from labkit.pretrained import save_weights

    what = {"arm": "old"}
    stored, _ = protocol.kept_model(tmp_path / "new", what, lambda: (torch.nn.Linear(2, 2), {"acc": 1}),
                                    lambda: torch.nn.Linear(2, 2))
    name = next((tmp_path / "new").glob("*.json")).stem
    save_weights(stored, tmp_path / f"{name}.safetensors", half=False)
    (tmp_path / f"{name}.json").write_text(json.dumps({"acc": 0.25}))  # the old format: the record alone
    model, record = protocol.kept_model(tmp_path, what, lambda: pytest.fail("must not train again"),
                                        lambda: torch.nn.Linear(2, 2))
    assert record == {"acc": 0.25} and torch.equal(model.weight, stored.weight)


def test_run_options_are_named_by_what_they_compute():
    from labkit.controls import uniform_targets

    def make(scale):
        return lambda s, t: scale * (s - t).pow(2).mean()

    first, second = (lambda s, t: (s - t).abs().mean()), (lambda s, t: (s - t).pow(2).mean())
    assert protocol.describe_option(first) != protocol.describe_option(second), "two lambdas are two runs"
    assert protocol.describe_option(make(1.0)) != protocol.describe_option(make(2.0)), "captured values count"
    again = lambda s, t: (s - t).abs().mean()  # noqa: E731  (the same code, written again)
    assert protocol.describe_option(again) == protocol.describe_option(first)
    assert protocol.describe_option(uniform_targets) == "uniform_targets", "labkit's own keep their kept names"
    half = functools.partial(torch.mul, other=0.5)
    assert protocol.describe_option(half) != protocol.describe_option(functools.partial(torch.mul, other=0.25))
