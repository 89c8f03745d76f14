"""Checks for the exercises of 04_cifar_teacher."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from scipy.special import softmax
from torch import nn

from labkit.evaluate import expected_calibration_error, predict_logits

from labkit.checks._base import CheckFailed, _passed, _given, _tensor, _number, _compare


def check_tta_passes(passes_per_image: int) -> None:
    """Exercise 1 of 04_cifar_teacher: forward passes per image of ``predict_logits(..., tta="flip_translate")``."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    predict_logits(model, torch.rand(4, 3, 8, 8), tta="flip_translate")  # one batch: one call is one pass per image
    n = _number(passes_per_image, "passes_per_image")
    expected = len(calls)
    if n == 2:
        raise CheckFailed("`passes_per_image`: 2 is the cost of tta='flip' (the image and its mirror); "
                          "flip_translate also uses shifted copies")
    if n == expected // 2:
        raise CheckFailed(f"`passes_per_image`: {n:g} positions, but every one is also mirrored")
    if n > expected and n % expected == 0:
        raise CheckFailed("`passes_per_image` counts several images or batches: give the passes for one image")
    _compare(n, expected, "passes_per_image")
    _passed(f"flip_translate costs {expected} forward passes per image, 6 times plain inference")


def check_temperature_scaling(ece_by_T: dict, logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Exercise 2 of 04_cifar_teacher: the ECE of ``logits / T`` for several temperatures T between 0.5 and 1.5."""
    if not isinstance(_given(ece_by_T, "ece_by_T"), dict) or len(ece_by_T) < 3:
        raise CheckFailed("`ece_by_T` should be a dict {T: ECE of logits / T} with at least 3 temperatures")
    for T, value in ece_by_T.items():
        T = _number(T, "a temperature (key of ece_by_T)")
        if not (math.isfinite(T) and T > 0):  # logits / 0 is inf or NaN: no ECE to compare with
            raise CheckFailed(f"`ece_by_T` has the temperature {T:g}: a temperature must be a finite number > 0, as "
                              "it divides the logits (logits / T); try temperatures between 0.5 and 1.5")
        ece = expected_calibration_error(logits / T, labels)
        _compare(value, ece, f"ece_by_T[{T:g}]", {
            "you multiplied the logits by T: temperature scaling divides them, logits / T":
                expected_calibration_error(logits * T, labels),
            "that is the ECE of the unscaled logits: divide them by T first":
                expected_calibration_error(logits, labels),
            "in percent: give the ECE as a fraction between 0 and 1": 100 * ece,
        }, rtol=1e-3)
    best = min(ece_by_T, key=ece_by_T.get)
    _passed(f"the lowest ECE among your temperatures is {ece_by_T[best]:.4f}, at T = {best:g}")


def check_confident_mistakes(worst8: Sequence[int], logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Exercise 3 of 04_cifar_teacher: the 8 test images the teacher gets wrong with the highest confidence."""
    idx = _tensor(worst8, "worst8", shape=(8,)).long()
    if idx.min() < 0 or idx.max() >= len(labels):
        raise CheckFailed(f"`worst8` should hold image indices between 0 and {len(labels) - 1}")
    confidence, pred = torch.softmax(logits.double(), 1).max(1)
    wrong = (pred != labels).nonzero().flatten()
    right = [i for i in idx.tolist() if pred[i] == labels[i]]
    if right:
        raise CheckFailed(f"`worst8`: the teacher classifies image(s) {right} correctly; keep only `pred != labels`")
    top = confidence[wrong].sort(descending=True).values[:8]
    if torch.allclose(confidence[idx].sort(descending=True).values, top):
        return _passed(f"the teacher's 8 most confident mistakes, from {top[0]:.1%} down to {top[-1]:.1%}")
    if set(idx.tolist()) == set(wrong[confidence[wrong].argsort()[:8]].tolist()):
        raise CheckFailed("`worst8` are the *least* confident mistakes: sort by confidence in descending order")
    if set(idx.tolist()) == set(wrong[logits[wrong].max(1).values.argsort(descending=True)[:8]].tolist()):
        raise CheckFailed("`worst8` is ranked by the largest logit: confidence is the largest *probability* (softmax)")
    raise CheckFailed(f"`worst8` are mistakes, but not the 8 most confident: those have at least {top[-1]:.1%}, "
                      f"one of yours has {confidence[idx].min():.1%}")


def check_smoothing_calibration(calibration_demo: Any, labels: torch.Tensor) -> None:
    """Exercise 4 of 04_cifar_teacher: accuracy and mean confidence of two small models, trained with label
    smoothing 0.2 and without it.

    ``calibration_demo[eps]`` for ``eps`` in (0.2, 0.0) holds ``"logits"`` (on the images of ``labels``), ``"acc"``
    and ``"confidence"`` (mean top probability); both numbers are recomputed from the logits.
    """
    _given(calibration_demo, "calibration_demo")
    if not isinstance(calibration_demo, dict) or sorted(calibration_demo) != [0.0, 0.2]:
        raise CheckFailed("`calibration_demo` should be a dict with keys 0.2 and 0.0 (the label smoothing of each "
                          "model), each holding 'logits', 'acc' and 'confidence'")
    logits = {}
    for eps, entry in calibration_demo.items():
        if not isinstance(entry, dict) or not {"logits", "acc", "confidence"} <= set(entry):
            raise CheckFailed(f"`calibration_demo[{eps:g}]` should be a dict with 'logits', 'acc' and 'confidence'")
        z = _tensor(entry["logits"], f"calibration_demo[{eps:g}]['logits']", shape=(len(labels), 10))
        probs = torch.from_numpy(softmax(z.numpy(), axis=1))
        _compare(entry["acc"], (probs.argmax(1) == labels).double().mean(), f"calibration_demo[{eps:g}]['acc']")
        _compare(entry["confidence"], probs.max(1).values.mean(), f"calibration_demo[{eps:g}]['confidence']", {
            "that is the mean probability of the true class; confidence is the *top* probability":
                probs[torch.arange(len(labels)), labels].mean(),
        })
        logits[eps] = z
    if torch.allclose(logits[0.0], logits[0.2]):
        raise CheckFailed("both entries hold the same logits: train a second model with `label_smoothing=0.0`")
    c = {eps: calibration_demo[eps]["confidence"] for eps in logits}
    _passed(f"mean confidence {c[0.2]:.1%} with label smoothing 0.2, {c[0.0]:.1%} without")
