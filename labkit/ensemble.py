"""A teacher made of several models (introduced in 07_ensemble_teachers)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

COMBINE_MODES = ("probs", "logits")


class EnsembleTeacher(nn.Module):
    """The members' average prediction, returned as logits so it drops in wherever a teacher goes.

    ``combine="probs"`` averages the members' probabilities and returns their log (softmax of the output is
    exactly the mean probability vector); ``combine="logits"`` averages raw logits, which lets a member with
    larger logits (a more confident one) dominate. 07_ensemble_teachers measures both.
    """

    def __init__(self, members: Sequence[nn.Module], combine: str = "probs"):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {COMBINE_MODES}, got {combine!r}")
        self.members = nn.ModuleList(members)
        self.combine = combine
        # Part of the state so that labkit.teacher.fingerprint (and the logit cache) tells the two modes apart.
        self.register_buffer("averages_probabilities", torch.tensor(combine == "probs"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([m(x).float() for m in self.members])
        if self.combine == "logits":
            return logits.mean(0)
        return torch.logsumexp(F.log_softmax(logits, -1), 0) - math.log(len(self.members))
