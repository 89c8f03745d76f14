"""Checks for the exercises of 12_distill_language_model."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from scipy.special import rel_entr

from labkit.checks._base import CheckFailed, _passed, _given, _number, _compare, _call, _soft


def check_reverse_kl(my_reverse_kl: Callable) -> None:
    """Exercise 1 of 12_distill_language_model: the per-token reverse KL of (batch, time, vocab) logits.

    ``my_reverse_kl(student_logits, teacher_logits)`` must be KL(q || p) = sum_v q_v (log q_v - log p_v) at every
    position, q the student's softmax and p the teacher's, averaged over the batch x time positions; it is compared
    with a float64 SciPy computation on random logits of two shapes, and a mismatch with the usual mistakes.
    """
    g = torch.Generator().manual_seed(0)
    for shape in ((3, 5, 11), (2, 7, 4)):
        s = 2 * torch.randn(*shape, generator=g, dtype=torch.float64)
        t = 3 * torch.randn(*shape, generator=g, dtype=torch.float64)
        q, p = _soft(s, 1.0), _soft(t, 1.0)
        batch, time, vocab = shape

        def per_position(terms: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(terms.sum(-1))  # (batch, time)

        reverse = per_position(rel_entr(q.numpy(), p.numpy()))
        out = _call(my_reverse_kl, "my_reverse_kl", s.clone(), t.clone())
        if isinstance(out, torch.Tensor) and out.dim() > 0:
            hint = (" one per position: average them over the batch and time positions" if tuple(out.shape) ==
                    (batch, time) else "")
            raise CheckFailed(f"`my_reverse_kl` returned shape {tuple(out.shape)}{hint}; return one number")
        name = f"my_reverse_kl on logits of shape {shape}"
        _compare(out, reverse.mean(), name, {
            "that is the forward KL, KL(teacher || student): the reverse one averages under the student, "
            "sum_v q_v (log q_v - log p_v)": per_position(rel_entr(p.numpy(), q.numpy())).mean(),
            "summed over the positions: average over the batch x time positions": reverse.sum(),
            "averaged over the batch only (summed over time): average over every position": reverse.sum(1).mean(),
            "averaged over the vocabulary too (reduction='mean'): sum over the vocabulary, average over positions":
                reverse.mean() / vocab,
            "used probabilities where log-probabilities belong: q (log q - log p) needs log_softmax":
                per_position(q.numpy() * (q.numpy() - p.numpy())).mean(),
            "F.kl_div(input, target) computes target (log target - input): pass the teacher's *log*-probabilities "
            "as input and the student's probabilities as target": per_position(q.numpy() * (np.log(q.numpy()) - p.numpy())).mean(),
            "the logits are not log-probabilities: apply log_softmax to both first":
                per_position(q.numpy() * (s.numpy() - t.numpy())).mean(),
            "the sign is flipped: a KL is never negative": -reverse.mean(),
        })
    _passed("my_reverse_kl matches KL(student || teacher) per position, averaged, for two shapes")


def check_lowest_diversity(lowest_diversity: str, metrics: dict[str, dict]) -> None:
    """Exercise 2 of 12_distill_language_model: the arm whose samples have the lowest distinct-4 rate.

    ``metrics`` maps each arm's name to its measurements (``distinct_4``, ``sample_entropy``).
    """
    _given(lowest_diversity, "lowest_diversity")
    arms = list(metrics)
    if not isinstance(lowest_diversity, str):
        raise CheckFailed(f"`lowest_diversity` should be the name of an arm (a string, one of {arms}), got "
                          f"{type(lowest_diversity).__name__}")
    if lowest_diversity not in metrics:
        reference = " (the teacher and the corpus are references, not arms)" if lowest_diversity.lower() in (
            "teacher", "corpus") else ""
        raise CheckFailed(f"`lowest_diversity` is {lowest_diversity!r}, not an arm's name{reference}: use one of "
                          f"{arms}")
    distinct = {arm: float(m["distinct_4"]) for arm, m in metrics.items()}
    lowest = min(distinct, key=distinct.get)
    if lowest_diversity == lowest:
        _passed(f"{lowest}: distinct-4 {distinct[lowest]:.3f} (the others: "
                + ", ".join(f"{a} {v:.3f}" for a, v in distinct.items() if a != lowest) + ")")
        return
    if lowest_diversity == max(distinct, key=distinct.get):
        raise CheckFailed(f"{lowest_diversity!r} has the *highest* distinct-4 rate: take the minimum")
    entropy = {arm: float(m["sample_entropy"]) for arm, m in metrics.items()}
    if lowest_diversity == min(entropy, key=entropy.get):
        raise CheckFailed(f"{lowest_diversity!r} has the lowest sample entropy, a related but other measure: the "
                          "question is about distinct-4, the share of distinct character 4-grams in the samples")
    raise CheckFailed("`lowest_diversity` is not the arm with the lowest distinct-4 rate: compare "
                      "`metrics[arm]['distinct_4']` over the arms")


def check_beta_sweep(sweep: dict, init: str) -> None:
    """Exercise 3 of 12_distill_language_model: an on-policy JSD sweep over beta, designed as a fair comparison.

    ``sweep`` maps each beta to the measurements of its student: ``init`` (``labkit.teacher.fingerprint`` of the
    student before training), ``steps``, ``forward_kl`` and ``reverse_kl``. ``init`` is the fingerprint of the
    arms' initial weights in section 3.
    """
    _given(sweep, "sweep")
    if not isinstance(sweep, dict) or not sweep:
        raise CheckFailed(f"`sweep` should be a dict {{beta: measurements}}, got {type(sweep).__name__}")
    needed = {"init", "steps", "forward_kl", "reverse_kl"}
    for beta, row in sweep.items():
        if not isinstance(beta, (int, float)) or isinstance(beta, bool):
            raise CheckFailed(f"the keys of `sweep` should be the betas (numbers), got {beta!r}")
        if not 0 < beta < 1:  # also rejects NaN
            raise CheckFailed(f"beta = {beta!r}: the generalized JSD needs 0 < beta < 1 (its ends are forward_kl and "
                              "reverse_kl, asked for by name)")
        if not isinstance(row, dict) or not needed <= set(row):
            raise CheckFailed(f"`sweep[{beta!r}]` should be a dict with the keys {sorted(needed)}")
        for key in ("forward_kl", "reverse_kl"):
            value = _number(row[key], f"sweep[{beta!r}][{key!r}]")
            if not (math.isfinite(value) and value >= 0):
                raise CheckFailed(f"`sweep[{beta!r}][{key!r}]` is {value}: a KL is a finite number >= 0")
    if len(sweep) < 3:
        raise CheckFailed(f"`sweep` has {len(sweep)} betas: try at least 3 (e.g. 0.1, 0.5 and 0.9)")
    if len({str(row["init"]) for row in sweep.values()}) > 1:
        raise CheckFailed("the students of the sweep started from different weights: call torch.manual_seed(SEED) "
                          "before building each one, as the arms of section 3 do")
    if str(next(iter(sweep.values()))["init"]) != str(init):
        raise CheckFailed("the sweep's students did not start from the arms' initial weights: build each one like "
                          "the arms of section 3 (`new_student()`)")
    if len({str(row["steps"]) for row in sweep.values()}) > 1:
        raise CheckFailed("the betas were trained for different numbers of steps: give each the same budget")
    betas = sorted(sweep)
    _passed(f"{len(betas)} betas from {betas[0]:g} to {betas[-1]:g}, same initial weights and "
            f"{next(iter(sweep.values()))['steps']} steps each")
