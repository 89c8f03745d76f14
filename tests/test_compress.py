"""Pruning and int8 quantization: sparsity, smaller networks that compute the same, quantized predictions."""

from __future__ import annotations

import pytest
import torch

from labkit import models
from labkit.compress import (Int8Model, deployment_row, prune_channels, prune_unstructured, quantize_int8, sparsity,
                             stored_bytes)
from labkit.evaluate import predict_logits
from labkit.pretrained import load_pretrained


@pytest.fixture(scope="module")
def student():
    return load_pretrained("student_small_scratch")  # trained weights: dense, with real BatchNorm statistics


def test_unstructured_pruning_zeroes_the_smallest_weights(student):
    assert sparsity(student) < 0.01
    pruned = prune_unstructured(student, 0.6)
    assert sparsity(pruned) == pytest.approx(0.6, abs=0.01)
    assert sparsity(student) < 0.01, "the original is left alone"
    kept = torch.cat([m.weight.flatten().abs() for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)
                      and m.weight.requires_grad])
    original = torch.cat([m.weight.flatten().abs() for m in student.modules() if isinstance(m, torch.nn.Conv2d)
                          and m.weight.requires_grad])
    assert original[kept == 0].max() <= original[kept != 0].min() + 1e-6
    assert not any(name.endswith("_orig") for name, _ in pruned.named_parameters()), "pruning must be made permanent"
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune_unstructured(student, 1.0)


def test_channel_pruning_with_nothing_removed_computes_the_same(student):
    same = prune_channels(student, 0.0).eval()
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(same(x), student(x))


def test_channel_pruning_makes_a_smaller_network(student):
    small = prune_channels(student, 0.5).eval()
    assert [g.conv1.out_channels for g in small.layers] == [12, 24, 32]
    assert models.count_parameters(small) < models.count_parameters(student)
    assert models.forward_flops(small) < 0.8 * models.forward_flops(student)
    assert small(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="CifarNet"):
        prune_channels(torch.nn.Linear(3, 3), 0.5)


def test_int8_model_predicts_like_the_float_one(local_cifar):
    model = load_pretrained("student_small_distilled")
    quantized = quantize_int8(model, local_cifar.train_images[:1000])
    assert isinstance(quantized, Int8Model)
    images = local_cifar.test_images[:600]
    reference, int8 = predict_logits(model, images), predict_logits(quantized, images)
    assert int8.shape == reference.shape and torch.isfinite(int8).all()
    assert (int8.argmax(1) == reference.argmax(1)).float().mean() > 0.95
    assert quantized(torch.rand(1, 3, 32, 32)).shape == (1, 10)  # any batch size


def test_stored_bytes_and_a_deployment_row(student, local_cifar):
    state_bytes = sum(t.numel() * t.element_size() for t in student.state_dict().values())
    assert stored_bytes(student) == state_bytes
    quantized = quantize_int8(student, local_cifar.train_images[:500])
    assert stored_bytes(quantized) < state_bytes / 2.5  # int8 weights: a quarter of float32, plus scales
    row = deployment_row(quantized, local_cifar.test_images[:200], local_cifar.test_labels[:200], float_model=student,
                         latency_repeats=3, throughput_repeats=1)
    assert row["params"] == models.count_parameters(student) and row["stored_kb"] < state_bytes / 1024
    assert 0.5 < row["test_acc"] <= 1 and row["latency_ms"] > 0 and row["images_per_s"] > 0
