"""Shipped weights: hash verification, safe loading, eval mode, and real accuracy on CIFAR-10 test images."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import save_file

from labkit import models
from labkit.evaluate import accuracy, predict_logits
from labkit.pretrained import SHIPPED, WEIGHTS_DIR, WeightsError, load_pretrained, load_teacher, load_weights, save_weights, sha256_of

# Floors well below the accuracies measured for the model card (benchmarks/teacher_report.py), well above chance.
ACCURACY_FLOOR = {"teacher": 0.88, "teacher_2": 0.88, "teacher_3": 0.86, "student_small_scratch": 0.70, "student_small_distilled": 0.70}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = models.create("student_small")
    path = tmp_path / "w.safetensors"
    return model, path, save_weights(model, path)


def test_round_trip_keeps_predictions(saved):
    model, path, sha = saved
    loaded = load_weights(models.create("student_small"), path, sha).eval()
    x = torch.rand(4, 3, 32, 32)
    assert torch.allclose(model.eval()(x), loaded(x), atol=1e-2)  # stored as float16


def test_one_changed_byte_is_rejected(saved):
    _, path, sha = saved
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="damaged or altered"):
        load_weights(models.create("student_small"), path, sha)


def test_truncated_and_missing_files_are_rejected(saved, tmp_path):
    _, path, sha = saved
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(WeightsError, match="damaged or altered"):
        load_weights(models.create("student_small"), path, sha)
    with pytest.raises(WeightsError, match="missing"):
        load_weights(models.create("student_small"), tmp_path / "nope.safetensors", sha)


def test_unknown_name_is_a_value_error():
    with pytest.raises(ValueError, match="no shipped weights"):
        load_pretrained("resnet9000")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_files_match_their_pinned_hash_and_size(name):
    _, filename, sha = SHIPPED[name]
    path = WEIGHTS_DIR / filename
    assert sha256_of(path) == sha
    assert path.stat().st_size <= 10 * 2**20


def test_teacher_loads_in_eval_mode_without_gradients_needed():
    teacher = load_teacher()
    assert not teacher.training
    assert all(not m.training for m in teacher.modules())


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_models_are_accurate_on_real_test_images(name, local_cifar):
    data = local_cifar.subset(test_per_class=40, seed=1)
    acc = accuracy(predict_logits(load_pretrained(name), data.test_images), data.test_labels)
    assert acc >= ACCURACY_FLOOR[name], f"{name}: {acc:.3f} on 400 test images"


def test_unexpected_and_missing_tensors_are_named(tmp_path):
    model = models.create("student_small")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    dropped = sorted(state)[0]
    path = tmp_path / "odd.safetensors"
    save_file({**{k: v for k, v in state.items() if k != dropped}, "head.extra": torch.zeros(3)}, str(path))
    with pytest.raises(WeightsError, match=rf"missing: {dropped}.*unexpected: head\.extra") as err:
        load_weights(models.create("student_small"), path)
    assert str(path) in str(err.value)


def test_shape_mismatches_are_named(tmp_path):
    state = {k: v.contiguous() for k, v in models.create("student_small").state_dict().items()}
    name = next(k for k, v in state.items() if v.dim() == 4)
    path = tmp_path / "wrong.safetensors"
    save_file({**state, name: torch.zeros(2, 2)}, str(path))
    with pytest.raises(WeightsError, match=re.escape(f"{name} is (2, 2) in the file, {tuple(state[name].shape)} in")):
        load_weights(models.create("student_small"), path)


@pytest.mark.parametrize("keep", [0, 7, 100, -10], ids=["empty", "in-the-length", "in-the-header", "in-the-data"])
def test_empty_and_truncated_files_without_a_hash_name_the_file(saved, keep):
    _, path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: keep % len(data)])
    with pytest.raises(WeightsError, match="not a complete safetensors file") as err:
        load_weights(models.create("student_small"), path)
    assert str(path) in str(err.value)


def test_a_whole_wrong_architecture_gives_a_short_message(saved):
    _, path, _ = saved
    with pytest.raises(WeightsError, match=r"head\.weight is \(10, 64\) in the file, .* and \d+ more\)") as err:
        load_weights(models.create("teacher"), path)  # the same layers, four times as wide
    assert len(str(err.value)) < 1500
