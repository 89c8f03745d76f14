"""Shipped weights: hash verification, safe loading, eval mode, and real accuracy on CIFAR-10 test images."""

from __future__ import annotations

import pytest
import torch

from labkit import models
from labkit.evaluate import accuracy, predict_logits
from labkit.pretrained import SHIPPED, WEIGHTS_DIR, WeightsError, load_pretrained, load_teacher, load_weights, save_weights, sha256_of

# Floors well below the accuracies measured for the model card (benchmarks/teacher_report.py), well above chance.
ACCURACY_FLOOR = {"teacher": 0.88, "teacher_2": 0.88, "student_small_scratch": 0.70, "student_small_distilled": 0.70}


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
