"""Checks for the exercises of 11_decision_boundaries."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from labkit.checks._base import CheckFailed, _passed, _given, _tensor, _compare


def check_pseudo_labels(pseudo: torch.Tensor, y: torch.Tensor, labelled: torch.Tensor,
                        teacher_logits: torch.Tensor) -> None:
    """Exercise 1 of 11_decision_boundaries: the hard pseudo-labels of a transfer set (own label where there is one,
    the teacher's top class elsewhere)."""
    guess = teacher_logits.argmax(1)
    _compare(pseudo, torch.where(labelled, y, guess), "pseudo", {
        "that is the teacher's top class everywhere: keep your own label where `labelled` is True": guess,
        "those are the given labels everywhere: the unlabelled points have none, use the teacher's top class there": y,
        "labelled and unlabelled are swapped: `torch.where(labelled, y, ...)` keeps the label where it exists":
            torch.where(labelled, guess, y),
    })
    _passed(f"{int(labelled.sum())} own labels, {int((~labelled).sum())} from the teacher, which disagrees with the "
            f"given label on {int((guess != y)[labelled].sum())} of the labelled points")


def _accuracies(arms: Any, arm: str, n: int, name: str) -> np.ndarray:
    """``arms[arm]`` as ``n`` accuracies (one per seed), or a CheckFailed saying what is missing."""
    if not isinstance(arms, dict) or arm not in arms:
        raise CheckFailed(f"`{name}` should be a dict with an entry {arm!r}: the test accuracy of each seed")
    values = _tensor(arms[arm], f"{name}[{arm!r}]")
    if values.shape != (n,):
        raise CheckFailed(f"`{name}[{arm!r}]` should hold one accuracy per seed ({n}), got shape {tuple(values.shape)}")
    return values.numpy()


def check_noisy_rerun(noisy: dict, scores: dict[str, Sequence[float]]) -> None:
    """Exercise 2 of 11_decision_boundaries: section 2 rerun at 10% and 30% label noise.

    ``noisy[noise]["accs"]`` holds the test accuracy of each seed for ``"labels only"`` and ``"distilled"``
    (``T = 2, alpha = 0.9``), ``noisy[noise]["gain"]`` their paired difference. At 10% the rerun is section 2 itself
    (same points, the teacher's steps chosen the same way, same seeds and steps), so it must reproduce ``scores``.
    """
    if not isinstance(_given(noisy, "noisy"), dict) or set(noisy) != {0.1, 0.3}:
        raise CheckFailed("`noisy` should be a dict with one entry per label noise, keys 0.1 and 0.3")
    n, accs = len(scores["labels only"]), {}
    for noise, run in noisy.items():
        name = f"noisy[{noise}]"
        if not isinstance(run, dict) or not isinstance(run.get("gain"), dict) or "mean" not in run["gain"]:
            raise CheckFailed(f"`{name}` should hold 'accs' (per arm and seed) and 'gain' (from paired_gains)")
        accs[noise] = {arm: _accuracies(run.get("accs"), arm, n, f"{name}['accs']")
                       for arm in ("labels only", "distilled")}
        gain = accs[noise]["distilled"].mean() - accs[noise]["labels only"].mean()
        _compare(run["gain"]["mean"], gain, f"{name}['gain']['mean']", {
            "that is labels only - distilled: the gain is distilled - labels only": -gain})
    for arm, section_2 in (("labels only", "labels only"), ("distilled", "distilled, T = 2")):
        if not np.allclose(accs[0.1][arm], scores[section_2]):
            raise CheckFailed(f"at 10% noise `noisy[0.1]['accs'][{arm!r}]` should reproduce section 2's "
                              f"{section_2!r} exactly: same points (seed 0), same student seeds and steps")
    _passed(f"at 10% noise the rerun reproduces section 2 over {n} seeds; the gain moved from "
            f"{100 * noisy[0.1]['gain']['mean']:+.2f} to {100 * noisy[0.3]['gain']['mean']:+.2f} points at 30%")


def check_bigger_student(big: dict, big_gain: dict, few: dict[str, Sequence[float]]) -> None:
    """Exercise 3 of 11_decision_boundaries: section 3's four arms with a (64, 64) student, and its paired gain.

    ``big`` maps each arm of section 3 to one test accuracy per seed, ``big_gain`` is transfer set - labels only
    (:func:`labkit.stats.paired_gains`).
    """
    n = len(few["labels only"])
    values = {arm: _accuracies(_given(big, "big"), arm, n, "big") for arm in few}
    if all(np.allclose(values[arm], few[arm]) for arm in few):
        raise CheckFailed("`big` holds the 16-unit student's accuracies of section 3: pass hidden=(64, 64)")
    if not isinstance(_given(big_gain, "big_gain"), dict) or "mean" not in big_gain:
        raise CheckFailed("`big_gain` should be the dict of paired_gains for transfer set - labels only")
    gain = values["distilled, transfer set"].mean() - values["labels only"].mean()
    _compare(big_gain["mean"], gain, "big_gain['mean']", {
        "that is labels only - transfer set: the gain is transfer set - labels only": -gain})
    _passed(f"the (64, 64) student over {n} seeds: transfer set - labels only {100 * gain:+.2f} points")
