"""Checks for the exercises of 07_ensemble_teachers."""

from __future__ import annotations

from typing import Sequence

import torch

from labkit.checks._base import CheckFailed, _passed, _tensor, _compare, _soft


def check_probability_average(avg_probs: torch.Tensor, member_logits: Sequence[torch.Tensor]) -> None:
    """Exercise 1 of 07_ensemble_teachers: the ensemble's prediction, the mean of the members' probabilities."""
    probs = torch.stack([_soft(z, 1.0) for z in member_logits])
    expected = probs.mean(0)
    _compare(avg_probs, expected, "avg_probs", {
        "you averaged the logits: average the members' probabilities (softmax each member first)":
            _soft(torch.stack(list(member_logits)).double().mean(0), 1.0),
        f"rows sum to {len(member_logits)}: divide the sum by the number of members": probs.sum(0),
        "these are log-probabilities: return the probabilities themselves": expected.log(),
        f"only the first {len(member_logits) - 1} members: include all {len(member_logits)}": probs[:-1].mean(0),
    })
    _passed(f"the mean probability vector of {len(member_logits)} members")


def check_disagreement(disagree: torch.Tensor, conf_disagree: float, conf_agree: float,
                       member_logits: Sequence[torch.Tensor], ensemble_logits: torch.Tensor) -> None:
    """Exercise 3 of 07_ensemble_teachers: where the members do not all agree, and the ensemble's top probability there."""
    predictions = torch.stack([z.argmax(1) for z in member_logits])
    expected = (predictions != predictions[0]).any(0)
    mask = _tensor(disagree, "disagree", shape=tuple(expected.shape))
    if torch.equal(mask.bool(), ~expected):
        raise CheckFailed("`disagree` is True where the members *agree*: invert it")
    if len(member_logits) > 2 and not torch.equal(expected, predictions[0] != predictions[1]) \
            and torch.equal(mask.bool(), predictions[0] != predictions[1]):
        raise CheckFailed(f"that compares the first two members only: look at all {len(member_logits)}")
    _compare(mask, expected, "disagree", {})
    top = _soft(ensemble_logits, 1.0).max(1).values
    max_logit = ensemble_logits.double().max(1).values
    for name, answer, keep in (("conf_disagree", conf_disagree, expected), ("conf_agree", conf_agree, ~expected)):
        _compare(answer, top[keep].mean(), name, {
            "swapped with the other group": top[~keep].mean(),
            "that is the mean of the largest *logit*: the top probability needs the softmax": max_logit[keep].mean(),
            "averaged over all images: keep only this group": top.mean(),
        })
    _passed(f"{int(expected.sum())} disagreements: top probability {conf_disagree:.1%} there, "
            f"{conf_agree:.1%} elsewhere")
