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


def test_few_labels_keeps_per_class_labels_of_each_class():
    _, y, _ = toy.spirals(n_per_class=50, seed=0)
    mask = toy.few_labels(y, 4, seed=2)
    assert torch.bincount(y[mask], minlength=3).tolist() == [4, 4, 4]
    assert torch.equal(mask, toy.few_labels(y, 4, seed=2)) and not torch.equal(mask, toy.few_labels(y, 4, seed=3))
    with pytest.raises(ValueError, match="per_class"):
        toy.few_labels(y, 1000)


def test_a_transfer_set_ignores_the_labels_of_unlabelled_points():
    x, y, _ = toy.spirals(n_per_class=30, seed=0)
    teacher_logits = torch.randn(len(x), 3)
    mask = toy.few_labels(y, 3)
    scrambled = torch.where(mask, y, (y + 1) % 3)
    a = toy.fit(toy.mlp((8,), seed=1), x, y, teacher_logits=teacher_logits, T=2.0, alpha=0.5, steps=10, labelled=mask)
    b = toy.fit(toy.mlp((8,), seed=1), x, scrambled, teacher_logits=teacher_logits, T=2.0, alpha=0.5, steps=10,
                labelled=mask)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)
    with pytest.raises(ValueError, match="teacher_logits"):
        toy.fit(toy.mlp((8,)), x, y, labelled=mask)


def test_transfer_students_share_their_start_and_use_the_teacher_where_labels_are_missing():
    x, y, _ = toy.spirals(n_per_class=30, seed=0)
    teacher_logits = 5 * torch.nn.functional.one_hot((y + 1) % 3, 3).float()  # disagrees with every label
    mask = toy.few_labels(y, 3)
    students = toy.transfer_students(x, y, mask, teacher_logits, hidden=(8,), seed=4, steps=0)
    assert tuple(students) == toy.TRANSFER_ARMS
    first = [p.detach() for p in toy.mlp((8,), seed=4).parameters()]
    for model in students.values():
        for p, q in zip(model.parameters(), first):
            torch.testing.assert_close(p, q)
    pseudo = toy.transfer_students(x, y, mask, teacher_logits, hidden=(8,), seed=4, steps=200)["pseudo-labels"]
    predicted = pseudo(x).argmax(1)
    assert (predicted[~mask] == (y[~mask] + 1) % 3).float().mean() > 0.75  # chance: 1/3
