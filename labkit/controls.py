"""Stand-in teachers that separate what distillation adds (introduced in 05_distill_student).

A student distilled from a real teacher gets two things at once: *softer* targets than one-hot labels, and targets
that differ from image to image (the dark knowledge of 01_dark_knowledge). Two controls take them apart:

* :func:`uniform_targets` puts the uniform distribution in place of every image's teacher prediction.
  Distilling with it at ``T = 1`` with weight ``alpha`` is label smoothing with ``epsilon = alpha`` (the loss differs by the constant
  ``alpha * log C``, so the gradients are the same): the labels-only recipe, run through the same loop.
* :class:`ClassAverageTargets` gives every image of class c the teacher's *average* soft prediction for class c:
  the teacher's knowledge of which classes resemble which, without anything specific to the image.
"""

from __future__ import annotations

import hashlib

import torch

from labkit.transfer import UNLABELLED, TransferSetError


def uniform_targets(teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Logits of 0 for every class in place of the teacher's: the uniform distribution, whatever the image and
    ``T``. Pass it as ``targets=`` to :func:`labkit.train.distill`; the teacher is still the one that
    validation agreement and KL are measured against."""
    return torch.zeros_like(teacher_logits)


uniform_targets.reads_teacher = False  # so distill() skips the teacher's passes over the training images


class ClassAverageTargets:
    """Replaces each image's teacher logits by logits whose softmax at ``T`` is its class's mean soft prediction.

    Pass it as ``targets=`` to :func:`labkit.train.distill`. Build it with :meth:`from_logits`.
    """

    def __init__(self, table: torch.Tensor, T: float):
        self.table, self.T = table, T
        digest = hashlib.sha256(table.double().numpy().tobytes()).hexdigest()[:12]
        self.__name__ = f"class_average_T{T:g}_{digest}"  # what run records and kept-run names show

    @classmethod
    def from_logits(cls, teacher_logits: torch.Tensor, labels: torch.Tensor, T: float) -> "ClassAverageTargets":
        """From the teacher's logits on labelled training images (N x C) and their labels."""
        num_classes = teacher_logits.shape[1]
        if (labels == UNLABELLED).any():
            raise TransferSetError("the class average needs every image's class: pass labelled images only")
        probs = torch.softmax(teacher_logits.double() / T, 1)
        counts = torch.bincount(labels, minlength=num_classes)
        if (counts == 0).any():
            raise ValueError(f"every class needs at least one image; missing: {(counts == 0).nonzero().flatten().tolist()}")
        mean = torch.zeros(num_classes, num_classes, dtype=torch.float64).index_add_(0, labels, probs) / counts[:, None]
        return cls((T * mean.log()).float(), T)

    reads_teacher = False  # each image's targets come from its class's row of the table, never from its own logits

    def __call__(self, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if (labels == UNLABELLED).any():
            raise TransferSetError("the class-average teacher needs a label for every image it sees")
        return self.table.to(teacher_logits.device)[labels]
