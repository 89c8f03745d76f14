"""The stand-in targets: uniform = label smoothing (against torch's label_smoothing), the class average."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from labkit import models
from labkit.controls import ClassAverageTargets, uniform_targets
from labkit.distillation import distillation_loss
from labkit.train import distill, train
from labkit.transfer import UNLABELLED, TransferSetError

FAST = dict(batch_size=100, progress=False)


@pytest.mark.parametrize("epsilon", [0.1, 0.2, 0.5])
def test_distilling_with_uniform_targets_at_T1_is_label_smoothing(epsilon):
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(32, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 10, (32,), generator=gen)
    uniform = uniform_targets(torch.randn(32, 10, generator=gen, dtype=torch.float64), labels)
    ours = distillation_loss(student, uniform, labels, T=1.0, alpha=epsilon)
    smoothed = F.cross_entropy(student, labels, label_smoothing=epsilon)
    assert torch.allclose(ours, smoothed - epsilon * math.log(10), atol=1e-12)
    (g1,), (g2,) = torch.autograd.grad(ours, student), torch.autograd.grad(smoothed, student)
    assert torch.allclose(g1, g2, atol=1e-12)


def test_class_average_targets_are_each_classes_mean_soft_prediction():
    gen = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(200, 10, generator=gen)
    labels = torch.arange(200) % 10
    T = 2.0
    targets = ClassAverageTargets.from_logits(logits, labels, T)
    batch_labels = torch.tensor([3, 3, 7])
    out = targets(torch.zeros(3, 10), batch_labels)
    for row, c in zip(out, batch_labels):
        expected = torch.softmax(logits[labels == c] / T, 1).mean(0)
        assert torch.allclose(torch.softmax(row / T, 0), expected, atol=1e-6)
    assert torch.equal(out[0], out[1])  # the same class, the same target, whatever the image
    with pytest.raises(TransferSetError):
        targets(torch.zeros(1, 10), torch.tensor([UNLABELLED]))
    with pytest.raises(ValueError, match="missing: \\[9\\]"):
        ClassAverageTargets.from_logits(logits[labels != 9], labels[labels != 9], T)
    assert targets.__name__ != ClassAverageTargets.from_logits(logits, labels, 4.0).__name__


@pytest.fixture(scope="module")
def small(local_cifar):
    return local_cifar.subset(train_per_class=50, test_per_class=20, seed=0).with_validation(10, seed=0)


def test_distilling_with_class_average_targets_runs_and_checks_the_temperature(small, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    teacher = models.create("student_small")
    train(teacher, small, epochs=2, **FAST)
    teacher.eval()
    with torch.no_grad():
        teacher_logits = teacher(small.train_images[:].float() / 255)
    targets = ClassAverageTargets.from_logits(teacher_logits, small.train_labels, T=2.0)
    with pytest.raises(ValueError, match="built for T=2"):
        distill(models.create("student_small"), teacher, small, T=4.0, alpha=0.5, epochs=1, targets=targets, **FAST)
    history = distill(models.create("student_small"), teacher, small, T=2.0, alpha=0.9, epochs=1, targets=targets,
                      **FAST)
    assert math.isfinite(history.last["loss"])


def test_uniform_targets_ignore_the_teacher_but_not_its_evaluation(small, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    teachers = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        teachers.append(models.create("student_small"))
    students, histories = [], []
    for teacher in teachers:
        torch.manual_seed(0)
        students.append(models.create("student_small"))
        histories.append(distill(students[-1], teacher, small, T=2.0, alpha=0.5, epochs=1, targets=uniform_targets,
                                 seed=0, **FAST))
    for a, b in zip(students[0].state_dict().values(), students[1].state_dict().values()):
        assert torch.equal(a, b)  # the same training: the teacher's predictions were replaced
    assert histories[0].last["val_kl"] != histories[1].last["val_kl"]  # measured against each real teacher


@pytest.mark.parametrize("views", [2, 0], ids=["cached-views", "online"])
@pytest.mark.parametrize("alpha, targets", [(0.5, uniform_targets), (0.0, None),
                                            (0.5, ClassAverageTargets(torch.linspace(-1, 1, 100).view(10, 10), 2.0))],
                         ids=["uniform", "alpha-0", "class-average"])
def test_a_run_that_never_reads_the_teacher_does_not_run_it_on_the_training_images(small, tmp_path, monkeypatch,
                                                                                  views, alpha, targets):
    """Arms whose loss never reads the teacher's logits of a training image (uniform or class-average targets,
    alpha = 0) train exactly as before, without the teacher's passes over the
    training views, which their loss never reads; validation agreement still measures the real teacher."""
    from labkit import train as engine
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(1)
    teacher = models.create("student_small")
    runs = []
    for skipping in (False, True):  # before labkit skipped such passes, and now
        if not skipping:
            monkeypatch.setattr(engine, "_reads_teacher", lambda alpha, targets: True)
        else:
            monkeypatch.undo()
            monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache-2"))
        seen = []
        handle = teacher.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
        torch.manual_seed(0)
        student = models.create("student_small")
        history = distill(student, teacher, small, T=2.0, alpha=alpha, epochs=2, teacher_views=views,
                          targets=targets, seed=0, **FAST)
        handle.remove()
        runs.append((student, history, sum(seen)))
    (read, read_history, read_images), (skipped, skipped_history, skipped_images) = runs
    assert read_images >= 2 * len(small.train_labels) + len(small.val_labels)
    assert skipped_images == len(small.val_labels)  # the validation split only, for the agreement columns
    assert skipped_history["loss"] == read_history["loss"] and skipped_history["val_kl"] == read_history["val_kl"]
    for a, b in zip(read.state_dict().values(), skipped.state_dict().values()):
        assert torch.equal(a, b)
