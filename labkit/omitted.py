"""Hinton et al.'s omitted-class experiment, redone on CIFAR-10 (introduced in 10_omitted_class).

A student is distilled on a transfer set from which every image of one class was removed. It never sees that
class, yet the teacher's soft targets on the *other* images mention it (a truck's image gives a little
probability to "automobile"...). Raising the student's bias for the missing class by one number, chosen on
validation images, shows how much it learned about a class it was never shown.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn

from labkit.data import CifarData
from labkit.evaluate import accuracy, confusion_matrix, predict_logits
from labkit.protocol import Budget, prepare
from labkit.stats import summarize

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
                             progress: bool = False, log: Callable[[str], None] | None = print, **budget) -> dict:
    """Distilled vs labels-only students trained without class ``omitted``; bias chosen on validation.

    ``budget`` holds :class:`labkit.protocol.Budget` fields. The validation images (the omitted class included)
    are held out first; the transfer set is the rest minus the omitted class. Both arms train through
    :func:`labkit.train.distill` (labels only = ``alpha`` 0) from the same weights on the same batches. For each
    final student the bias of the omitted class is chosen on validation, then the test set is measured once,
    before and after it.
    """
    started = time.perf_counter()
    protocol = prepare(teacher, data, Budget(**budget), progress=progress, log=log)
    protocol = protocol.with_training(without_class(protocol.data, omitted))
    split = protocol.data
    is_omitted = split.test_labels == omitted
    arms = {"distilled": alpha, "labels only": 0.0}
    results = {name: [] for name in arms}
    for name, arm_alpha in arms.items():
        for seed in protocol.budget.seeds:
            protocol.say(f"{name}: seed {seed}")
            model, record = protocol.train(seed, T=T, alpha=arm_alpha)
            bias = choose_bias(predict_logits(model, split.val_images), split.val_labels, omitted)
            test_logits = predict_logits(model, split.test_images)
            fixed = with_bias(test_logits, omitted, bias)
            record.update(bias=bias, test_acc=accuracy(test_logits, split.test_labels),
                          test_acc_biased=accuracy(fixed, split.test_labels),
                          omitted_acc=accuracy(test_logits[is_omitted], split.test_labels[is_omitted]),
                          omitted_acc_biased=accuracy(fixed[is_omitted], split.test_labels[is_omitted]),
                          omitted_row=confusion_matrix(test_logits, split.test_labels)[omitted].tolist(),
                          omitted_row_biased=confusion_matrix(fixed, split.test_labels)[omitted].tolist())
            protocol.say(f"    omitted class: {record['omitted_acc']:.1%} -> {record['omitted_acc_biased']:.1%} "
                         f"with bias {bias:.1f}; overall {record['test_acc']:.1%} -> {record['test_acc_biased']:.1%}")
            results[name].append(record)
    summary = {name: {k: summarize([r[k] for r in runs]) for k in
                      ("test_acc", "test_acc_biased", "omitted_acc", "omitted_acc_biased", "bias")}
               for name, runs in results.items()}
    settings = protocol.settings(omitted=omitted, omitted_name=data.classes[omitted], T=T, alpha=alpha,
                                 transfer_images=len(split.train_labels))
    return {"settings": settings, "summary": summary, "runs": results,
            "seconds": round(time.perf_counter() - started, 1)}
