"""EnsembleTeacher: averaging probabilities or logits, checked against the members computed by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from labkit.ensemble import EnsembleTeacher
from labkit.teacher import fingerprint


def _members(scales=(1.0, 3.0, 0.5)):
    torch.manual_seed(0)
    members = []
    for s in scales:
        m = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
        with torch.no_grad():
            m[1].weight.mul_(s)
        members.append(m)
    return members


def test_probability_average_is_exact():
    members, x = _members(), torch.randn(7, 3, 2, 2)
    out = EnsembleTeacher(members, "probs")(x)
    expected = torch.stack([torch.softmax(m(x), -1) for m in members]).mean(0)
    torch.testing.assert_close(torch.softmax(out, -1), expected)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(7))  # the output is the log of the mean


def test_logit_average_is_exact_and_differs_from_the_probability_average():
    members, x = _members(), torch.randn(7, 3, 2, 2)
    out = EnsembleTeacher(members, "logits")(x)
    torch.testing.assert_close(out, torch.stack([m(x) for m in members]).mean(0))
    assert not torch.allclose(torch.softmax(out, -1), torch.softmax(EnsembleTeacher(members, "probs")(x), -1))


def test_one_member_ensemble_predicts_like_the_member():
    (member,), x = _members((2.0,)), torch.randn(5, 3, 2, 2)
    for mode in ("probs", "logits"):
        torch.testing.assert_close(torch.softmax(EnsembleTeacher([member], mode)(x), -1), torch.softmax(member(x), -1))


def test_fingerprint_tells_the_modes_apart():
    members = _members()
    assert fingerprint(EnsembleTeacher(members, "probs")) != fingerprint(EnsembleTeacher(members, "logits"))
    assert fingerprint(EnsembleTeacher(members, "probs")) == fingerprint(EnsembleTeacher(members, "probs"))


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one member"):
        EnsembleTeacher([])
    with pytest.raises(ValueError, match="combine"):
        EnsembleTeacher(_members(), "median")
