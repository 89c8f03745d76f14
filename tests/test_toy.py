"""The 2-D toy problem of 11_decision_boundaries: data, training, grids."""

from __future__ import annotations

import pytest
import torch

from labkit import toy


def test_spirals_have_the_requested_label_noise_and_balance():
    x, y, true = toy.spirals(n_per_class=300, classes=3, label_noise=0.2, seed=1)
    assert x.shape == (900, 2) and torch.bincount(true).tolist() == [300] * 3
    assert (y != true).float().mean().item() == pytest.approx(0.2, abs=0.04)
    assert torch.equal(toy.spirals(seed=1)[0], toy.spirals(seed=1)[0])
    with pytest.raises(ValueError):
        toy.spirals(label_noise=1.0)


def test_a_teacher_learns_the_true_spirals_through_noisy_labels():
    x, y, _ = toy.spirals(seed=0)
    x_test, _, y_test = toy.spirals(seed=1, label_noise=0.0)
    teacher = toy.fit(toy.mlp((64, 64), seed=0), x, y, steps=600)
    assert toy.accuracy_on(teacher, x_test, y_test) > 0.85  # chance is 1/3


def test_alpha_zero_ignores_the_teacher_and_the_temperature():
    x, y, _ = toy.spirals(seed=0)
    teacher_logits = torch.randn(len(x), 3)
    a = toy.fit(toy.mlp((8,), seed=3), x, y, steps=20)
    b = toy.fit(toy.mlp((8,), seed=3), x, y, teacher_logits=teacher_logits, T=5.0, alpha=0.0, steps=20)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


def test_grid_probabilities_cover_the_points():
    x, _, _ = toy.spirals()
    xx, yy = toy.grid(x, resolution=30)
    assert xx.shape == yy.shape == (30, 30)
    assert xx.min() < x[:, 0].min() and yy.max() > x[:, 1].max()
    probs = toy.grid_probabilities(toy.mlp((4,)), xx, yy, T=2.0)
    assert probs.shape == (30, 30, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(30, 30))
