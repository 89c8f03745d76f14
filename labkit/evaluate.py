"""Predictions, accuracy, test-time augmentation and calibration (introduced in 04_cifar_teacher)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from labkit import settings
from labkit.loader import to_float

TTA_MODES = ("none", "flip", "flip_translate")
# Images per forward pass when predicting. On a 2-core CPU the teacher is as fast at 200 as at 500, and holds
# about 90 MiB of activations at once instead of 290 (measured): room that a Binder-sized machine lacks.
EVAL_BATCH = 200


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for a ``with`` block, then restore its train/eval mode, even after an error.

    Introduced in 04_cifar_teacher: BatchNorm and dropout behave differently in training, so every prediction
    runs in eval mode; restoring the mode lets a training loop call evaluation in the middle of an epoch.
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _as_float(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return to_float(images, channels_last) if images.dtype == torch.uint8 else images


def _mirror(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (model(x) + model(x.flip(-1)))


class FlipAveraged(nn.Module):
    """A model whose logits are the average over each image and its mirror image: test-time augmentation as a
    module, so a teacher's flip-averaged soft targets drop in wherever a teacher goes (04_cifar_teacher).

    The teacher-logit cache then stores them per view, at twice the teacher's cost.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        # Part of the state, so labkit.teacher.fingerprint (and the logit cache) tells it from the plain model.
        self.register_buffer("averages_flips", torch.tensor(True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _mirror(self.model, x)


def _mirror_translate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # airbench's level-2 TTA: the mirrored pair, plus the mirrored pair shifted one pixel up-left and down-right.
    padded = F.pad(x, (1,) * 4, mode="reflect")
    h, w = x.shape[-2:]
    shifted = (_mirror(model, padded[..., :h, :w]) + _mirror(model, padded[..., 2:, 2:])) / 2
    return 0.5 * _mirror(model, x) + 0.5 * shifted


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = EVAL_BATCH, tta: str = "none",
                   channels_last: bool = True, precision: str | None = "fp32") -> torch.Tensor:
    """Logits (float32) for ``images`` (uint8 or float in [0, 1]) in eval mode, optionally with test-time
    augmentation.

    ``tta="flip"`` averages the logits of each image and its mirror image; ``"flip_translate"`` also averages
    one-pixel shifts (airbench's level 2). The model's train/eval mode is restored afterwards. The forward passes
    run in float32 by default, so a model's accuracy is the same on every machine (the shipped teacher's 90.14%
    everywhere); ``precision=None`` follows :func:`labkit.settings.precision`, as the per-epoch evaluation of a
    training run does (its :class:`labkit.history.History` says in which).
    """
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    infer = {"none": lambda m, x: m(x), "flip": _mirror, "flip_translate": _mirror_translate}[tta]
    # A model without parameters (an ONNX Runtime session, labkit.compress.OnnxModel) runs on the CPU.
    device = next(model.parameters(), torch.empty(0)).device
    with eval_mode(model), settings.autocast(device, model, precision):
        out = [infer(model, _as_float(chunk, channels_last).to(device)).float().cpu()
               for chunk in images.split(batch_size)]
    return torch.cat(out)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose largest logit is the label."""
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} predictions for {len(labels)} labels")
    return (logits.argmax(1) == labels).float().mean().item()


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, tta: str = "none") -> float:
    """Top-1 accuracy of ``model`` on ``images``."""
    return accuracy(predict_logits(model, images, tta=tta), labels)


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Accuracy on each true class (a vector of ``num_classes`` values)."""
    hits = (logits.argmax(1) == labels).float()
    return torch.zeros(num_classes).index_add_(0, labels, hits) / torch.bincount(labels, minlength=num_classes)


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Counts: row = true class, column = predicted class."""
    pairs = labels * num_classes + logits.argmax(1)
    return torch.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE: confidence-vs-accuracy gap averaged over equal-width confidence bins, weighted by bin size."""
    confidence, predicted = torch.softmax(logits.float(), 1).max(1)
    correct = (predicted == labels).float()
    which = torch.clamp((confidence * bins).long(), max=bins - 1)
    gap = torch.zeros(bins).index_add_(0, which, confidence - correct).abs()
    return (gap.sum() / len(labels)).item()


def agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Fraction of images on which student and teacher predict the same class."""
    return (student_logits.argmax(1) == teacher_logits.argmax(1)).float().mean().item()


def mistake_agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      labels: torch.Tensor) -> dict[str, float | int]:
    """How the student does on the images the teacher gets wrong (introduced in 09_compress_and_deploy, where it
    tests whether distillation copies the teacher's errors): ``teacher_wrong`` (how many images),
    ``same_mistake`` (share where the student predicts the teacher's wrong class), ``student_right`` (share it gets
    right) and ``other_mistake`` (share it gets wrong another way); the three shares add up to 1."""
    if not len(student_logits) == len(teacher_logits) == len(labels):
        raise ValueError(f"one row per image: got {len(student_logits)} student, {len(teacher_logits)} teacher "
                         f"rows and {len(labels)} labels")
    student, teacher = student_logits.argmax(1), teacher_logits.argmax(1)
    wrong = teacher != labels
    count = int(wrong.sum())
    if count == 0:
        return {"teacher_wrong": 0, "same_mistake": float("nan"), "student_right": float("nan"),
                "other_mistake": float("nan")}
    same = float((student[wrong] == teacher[wrong]).float().mean())
    right = float((student[wrong] == labels[wrong]).float().mean())
    return {"teacher_wrong": count, "same_mistake": same, "student_right": right, "other_mistake": 1 - same - right}
