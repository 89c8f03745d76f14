"""Hinton et al.'s omitted-class experiment, redone on CIFAR-10 (introduced in 10_omitted_class).

A student is distilled on a transfer set from which every image of one class was removed. It never sees that
class, yet the teacher's soft targets on the *other* images mention it (a truck's image gives a little
probability to "automobile"...). Raising the student's bias for the missing class by one number, chosen on
validation images, shows how much it learned about a class it was never shown.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
from torch import nn

from labkit.data import CifarData
from labkit.evaluate import accuracy, confusion_matrix, predict_logits
from labkit.experiments import summarize, train_student
from labkit.teacher import FrozenTeacher

BIAS_GRID = torch.linspace(0.0, 15.0, 151)


def without_class(data: CifarData, omitted: int) -> CifarData:
    """``data`` with every training image of class ``omitted`` removed (the test split is kept whole)."""
    if not 0 <= omitted < len(data.classes):
        raise ValueError(f"omitted must be a class index in [0, {len(data.classes)}), got {omitted}")
    return data.keep_train(data.train_labels != omitted)


def with_bias(logits: torch.Tensor, omitted: int, bias: float) -> torch.Tensor:
    """``logits`` with ``bias`` added to the omitted class's logit (a change of that class's output bias)."""
    shifted = logits.clone()
    shifted[:, omitted] += bias
    return shifted


def choose_bias(logits: torch.Tensor, labels: torch.Tensor, omitted: int,
                grid: torch.Tensor = BIAS_GRID) -> float:
    """The bias from ``grid`` that maximises overall accuracy on ``(logits, labels)`` (validation data);
    the smallest such bias when several tie."""
    scores = torch.stack([(with_bias(logits, omitted, float(b)).argmax(1) == labels).float().mean() for b in grid])
    return float(grid[int(torch.nonzero(scores == scores.max())[0])])


def omitted_class_experiment(teacher: nn.Module, data: CifarData, *, omitted: int, T: float, alpha: float,
                             student: str = "student_small", epochs: float = 4, seeds: Sequence[int] = (0, 1, 2),
                             teacher_views: int = 4, batch_size: int = 512, val_per_class: int = 500,
                             train_per_class: int | None = None, test_per_class: int | None = None,
                             data_seed: int = 0, progress: bool = False,
                             log: Callable[[str], None] | None = print) -> dict:
    """Distilled vs labels-only students trained without class ``omitted``; bias chosen on validation.

    ``val_per_class`` training images per class (the omitted class included) are held out as validation; the
    transfer set is the rest minus the omitted class. Both arms train through :func:`labkit.train.distill`
    (labels only = ``alpha`` 0) from the same weights on the same batches. For each final student the bias of
    the omitted class is chosen on validation, then the test set is measured once, before and after it.
    """
    say = log or (lambda message: None)
    started = time.perf_counter()
    if train_per_class is not None or test_per_class is not None:
        data = data.subset(train_per_class, test_per_class, seed=data_seed)
    rest, (val_images, val_labels) = data.split_validation(val_per_class, seed=data_seed)
    transfer = without_class(rest, omitted)
    tune = CifarData(transfer.train_images, transfer.train_labels, val_images, val_labels, classes=data.classes,
                     source=data.source)
    frozen = teacher if isinstance(teacher, FrozenTeacher) else FrozenTeacher(teacher)
    is_omitted = data.test_labels == omitted
    arms = {"distilled": alpha, "labels only": 0.0}
    results = {name: [] for name in arms}
    for name, arm_alpha in arms.items():
        for seed in seeds:
            say(f"{name}: seed {seed}")
            model, record = train_student(frozen, tune, student=student, seed=seed, T=T, alpha=arm_alpha,
                                          epochs=epochs, teacher_views=teacher_views, batch_size=batch_size,
                                          data_seed=data_seed, progress=progress)
            bias = choose_bias(predict_logits(model, val_images), val_labels, omitted)
            test_logits = predict_logits(model, data.test_images)
            fixed = with_bias(test_logits, omitted, bias)
            record.update(bias=bias, test_acc=accuracy(test_logits, data.test_labels),
                          test_acc_biased=accuracy(fixed, data.test_labels),
                          omitted_acc=accuracy(test_logits[is_omitted], data.test_labels[is_omitted]),
                          omitted_acc_biased=accuracy(fixed[is_omitted], data.test_labels[is_omitted]),
                          omitted_row=confusion_matrix(test_logits, data.test_labels)[omitted].tolist(),
                          omitted_row_biased=confusion_matrix(fixed, data.test_labels)[omitted].tolist())
            say(f"    omitted class: {record['omitted_acc']:.1%} -> {record['omitted_acc_biased']:.1%} with bias "
                f"{bias:.1f}; overall {record['test_acc']:.1%} -> {record['test_acc_biased']:.1%}")
            results[name].append(record)
    summary = {name: {k: summarize([r[k] for r in runs]) for k in
                      ("test_acc", "test_acc_biased", "omitted_acc", "omitted_acc_biased", "bias")}
               for name, runs in results.items()}
    settings = dict(omitted=omitted, omitted_name=data.classes[omitted], T=T, alpha=alpha, student=student,
                    epochs=epochs, seeds=list(seeds), teacher_views=teacher_views, batch_size=batch_size,
                    val_per_class=val_per_class, transfer_images=len(tune.train_labels),
                    val_images=len(val_labels), test_images=len(data.test_labels), data=data.source)
    return {"settings": settings, "summary": summary, "runs": results,
            "seconds": round(time.perf_counter() - started, 1)}
