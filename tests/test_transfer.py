"""Transfer sets: the hard term masked to the labelled images, checked against a hand-written loss; the data helpers;
the errors; distillation and pseudo-labels on a small real-CIFAR transfer set."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from labkit import models
from labkit.distillation import distillation_loss, distillation_loss_parts
from labkit.train import distill, train
from labkit.transfer import (UNLABELLED, TransferSetError, count_unlabelled, labelled_mask, labelled_part,
                             pseudo_labelled, transfer_set, with_unlabelled)

FAST = dict(batch_size=100, progress=False)


def hand_written_loss(student, teacher, labels, labelled, T, alpha):
    """Per image: alpha T^2 KL(p_T || q_T), plus (1 - alpha) CE if it has a label; then the batch mean."""
    p = torch.softmax(teacher / T, 1)
    log_q = torch.log_softmax(student / T, 1)
    kl = (p * (p.log() - log_q)).sum(1)
    ce = -torch.log_softmax(student, 1).gather(1, labels.clamp(min=0)[:, None]).squeeze(1)
    return (alpha * T**2 * kl + (1 - alpha) * labelled.double() * ce).mean()


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(16, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    teacher = 3 * torch.randn(16, 10, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 10, (16,), generator=gen)
    labelled = torch.rand(16, generator=gen) < 0.4
    labels[~labelled] = UNLABELLED
    return student, teacher, labels, labelled


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (4.0, 0.9), (2.0, 0.0)])
def test_masked_loss_and_gradients_match_the_hand_written_loss(batch, T, alpha):
    student, teacher, labels, labelled = batch
    assert 0 < labelled.sum() < len(labelled)
    ours = distillation_loss(student, teacher, labels, T, alpha, labelled=labelled)
    (grad_ours,) = torch.autograd.grad(ours, student)
    reference = hand_written_loss(student, teacher, labels, labelled, T, alpha)
    (grad_reference,) = torch.autograd.grad(reference, student)
    assert torch.allclose(ours, reference, atol=1e-12)
    assert torch.allclose(grad_ours, grad_reference, atol=1e-12)


def test_a_batch_without_labels_contributes_no_cross_entropy(batch):
    student, teacher, labels, _ = batch
    nothing = torch.zeros(len(labels), dtype=torch.bool)
    parts = distillation_loss_parts(student, teacher, torch.full_like(labels, UNLABELLED), 2.0, 0.5, labelled=nothing)
    assert parts.hard.item() == 0.0
    (grad,) = torch.autograd.grad(parts.total, student)
    (grad_soft_only,) = torch.autograd.grad(distillation_loss(student, teacher, labels.clamp(min=0), 2.0, 1.0) / 2,
                                            student)
    assert torch.allclose(grad, grad_soft_only, atol=1e-12)  # alpha 0.5 of the soft term, nothing else


def test_an_all_true_mask_is_the_ordinary_loss(batch):
    student, teacher, labels, _ = batch
    labels = labels.clamp(min=0)
    everyone = torch.ones(len(labels), dtype=torch.bool)
    assert torch.allclose(distillation_loss(student, teacher, labels, 2.0, 0.3, labelled=everyone),
                          distillation_loss(student, teacher, labels, 2.0, 0.3), atol=1e-12)


def test_a_bad_mask_or_a_bad_label_where_the_mask_is_true_is_refused(batch):
    student, teacher, labels, labelled = batch
    with pytest.raises(ValueError, match="boolean"):
        distillation_loss(student, teacher, labels, labelled=labelled.long())
    with pytest.raises(ValueError, match="shape"):
        distillation_loss(student, teacher, labels, labelled=labelled[:-1])
    with pytest.raises(ValueError, match="labels must lie"):
        distillation_loss(student, teacher, labels, labelled=torch.ones_like(labelled))  # UNLABELLED where True


@pytest.fixture(scope="module")
def small(local_cifar):
    return local_cifar.subset(train_per_class=60, test_per_class=20, seed=0).with_validation(10, seed=0)


def test_a_transfer_set_keeps_labels_per_class_and_the_validation_split(small):
    t = transfer_set(small, labelled_per_class=5, seed=1)
    kept = labelled_mask(t.train_labels)
    assert torch.bincount(t.train_labels[kept], minlength=10).tolist() == [5] * 10
    assert torch.equal(t.train_labels[kept], small.train_labels[kept])
    assert count_unlabelled(t) == len(small.train_labels) - 50
    assert torch.equal(t.val_labels, small.val_labels) and t.train_images is small.train_images
    assert len(labelled_part(t).train_labels) == 50
    tiled = labelled_part(t, repeat=3)
    assert torch.equal(tiled.train_labels, t.train_labels[kept].repeat(3))
    assert torch.equal(tiled.train_images[:], small.train_images[:][kept].repeat(3, 1, 1, 1))
    with pytest.raises(TransferSetError, match="already"):
        transfer_set(t, 5)


def test_unlabelled_images_are_appended_only_when_they_look_like_the_labelled_ones(small):
    extra = small.test_images[:7]
    t = with_unlabelled(small, extra)
    assert count_unlabelled(t) == 7 and len(t.train_labels) == len(small.train_labels) + 7
    assert torch.equal(t.train_images[-7:], extra)
    with pytest.raises(TransferSetError, match="uint8 tensor N x 3 x 32 x 32"):
        with_unlabelled(small, extra.float())
    with pytest.raises(TransferSetError, match="N x 3 x 32 x 32"):
        with_unlabelled(small, extra[:, :, :16])


def unlabelled_only(data):
    """The same training images, none of them labelled."""
    return with_unlabelled(data.keep_train(torch.zeros(len(data.train_labels), dtype=torch.bool)), data.train_images[:])


@pytest.fixture(scope="module")
def stand_in_teacher(small):
    torch.manual_seed(0)
    model = models.create("student_small")
    train(model, small, epochs=3, **FAST)
    return model


def test_training_refuses_and_distillation_checks_alpha_on_a_transfer_set(small, stand_in_teacher):
    t = transfer_set(small, 5)
    with pytest.raises(TransferSetError, match="no label.*pseudo_labelled"):
        train(models.create("student_small"), t, epochs=1, **FAST)
    with pytest.raises(TransferSetError, match="alpha=0"):
        distill(models.create("student_small"), stand_in_teacher, t, alpha=0.0, epochs=1, **FAST)
    with pytest.raises(TransferSetError, match="alpha=1"):
        distill(models.create("student_small"), stand_in_teacher, unlabelled_only(small), alpha=0.5, epochs=1, **FAST)


def test_distilling_on_a_transfer_set_learns_and_counts_accuracy_on_labelled_images(small, stand_in_teacher,
                                                                                    tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    t = transfer_set(small, 5)
    torch.manual_seed(0)
    history = distill(models.create("student_small"), stand_in_teacher, t, T=2.0, alpha=0.5, epochs=2, **FAST)
    assert all(math.isfinite(v) for v in history["loss"]) and 0 <= history.last["train_acc"] <= 1
    assert history.last["val_agreement"] > 0.2  # chance is about 0.1
    only_soft = distill(models.create("student_small"), stand_in_teacher, unlabelled_only(small), alpha=1.0, epochs=1,
                        **FAST)
    assert math.isnan(only_soft.last["train_acc"])  # no label to be right about


def test_pseudo_labels_are_the_teachers_top_class_and_keep_the_real_labels(small, stand_in_teacher):
    t = transfer_set(small, 5)
    p = pseudo_labelled(t, stand_in_teacher)
    kept = labelled_mask(t.train_labels)
    assert count_unlabelled(p) == 0 and torch.equal(p.train_labels[kept], t.train_labels[kept])
    stand_in_teacher.eval()
    with torch.no_grad():
        top = stand_in_teacher(small.train_images[:][~kept].float() / 255).argmax(1)
    assert (p.train_labels[~kept] == top).float().mean() > 0.99  # another code path: rounding may flip a near-tie
    history = train(models.create("student_small"), p, epochs=1, **FAST)
    assert math.isfinite(history.last["loss"])
    assert F.one_hot(p.train_labels, 10).sum(0).min() > 0  # every class is represented among the labels
