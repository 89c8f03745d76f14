"""Checks for the exercises of 08_beyond_logits."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from labkit.loader import mixup

from labkit.checks._base import _passed, _compare, _call, _kl, _soft


def check_inconsistent_fm_loss(inconsistent_fm_loss: Callable) -> None:
    """Exercise 3 of 08_beyond_logits: function matching with an inconsistent teacher.

    ``inconsistent_fm_loss(student, teacher, clean, blended, T)`` must be T**2 * KL(teacher on the clean images
    || student on the blends) at temperature T, averaged over the batch; it is tried on two small linear models.
    """
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # the two stand-in models' weights
    student, teacher = (nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10)) for _ in range(2))
    clean = torch.rand(8, 3, 4, 4, generator=g)
    blended = mixup(clean, g)

    def loss(teacher_sees: torch.Tensor, student_sees: torch.Tensor, T: float, reverse: bool = False) -> torch.Tensor:
        p, q = _soft(teacher(teacher_sees).detach(), T), _soft(student(student_sees).detach(), T)
        return T**2 * (_kl(q, p) if reverse else _kl(p, q))

    for T in (2.0, 1.0):
        out = _call(inconsistent_fm_loss, "inconsistent_fm_loss", student, teacher, clean, blended, T)
        _compare(out, loss(clean, blended, T), f"inconsistent_fm_loss at T={T:g}", {
            "the teacher sees the blend: that is the consistent loss; here the teacher sees `clean`":
                loss(blended, blended, T),
            "the student must see the blend and the teacher the clean images, not the other way round":
                loss(blended, clean, T),
            "forgot to multiply the KL by T**2": loss(clean, blended, T) / T**2,
            "the KL is reversed: use KL(teacher || student)": loss(clean, blended, T, reverse=True),
            "used reduction='mean': use 'batchmean'": loss(clean, blended, T) / 10,
        })
    _passed("inconsistent_fm_loss: T² · KL(teacher on clean images ‖ student on their blends)")
