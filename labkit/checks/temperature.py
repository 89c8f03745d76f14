"""Checks for the exercises of 02_temperature."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.special import softmax
from scipy.stats import entropy

from labkit.checks._base import CheckFailed, _passed, _tensor, _number, _compare, _call, _soft


def check_half_as_likely(T_half: float, z: torch.Tensor, top: int, other: int) -> None:
    """Exercise 1 of 02_temperature: the T at which class ``other`` gets half the probability of class ``top``."""
    T = _number(T_half, "T_half")
    gap = (z[top] - z[other]).item()
    p = torch.softmax(z.double(), -1)
    _compare(T, gap / math.log(2), "T_half", {
        "wrong sign: z_top - z_other is positive here, so T must be too": -gap / math.log(2),
        "you multiplied by ln 2: exp(-gap / T) = 1/2 gives T = gap / ln 2": gap * math.log(2),
        "upside down: exp(-gap / T) = 1/2 gives T = gap / ln 2, not ln 2 / gap": math.log(2) / gap,
        "you used probabilities: the formula needs the logits z": (p[top] - p[other]).item() / math.log(2),
    }, rtol=1e-3)
    q = torch.softmax(z.double() / T, -1)
    _passed(f"at T = {T:.3f}, p_other / p_top = {q[other] / q[top]:.3f}")


def check_entropy_by_correctness(entropy_right: Sequence[float], entropy_wrong: Sequence[float],
                                 logits: torch.Tensor, labels: torch.Tensor, temperatures: Sequence[float]) -> None:
    """Exercise 2 of 02_temperature: mean entropy (bits) against T, for the images the teacher gets right and wrong."""
    right = logits.argmax(1) == labels

    def mean_entropy(keep: torch.Tensor, base: float = 2) -> torch.Tensor:
        return torch.tensor([entropy(_soft(logits[keep], T).numpy(), base=base, axis=1).mean() for T in temperatures])

    every, expected = torch.ones_like(right), {}
    for name, answer, keep in (("entropy_right", entropy_right, right), ("entropy_wrong", entropy_wrong, ~right)):
        expected[name] = mean_entropy(keep)
        if torch.isnan(_tensor(answer, name)).any():
            raise CheckFailed(f"`{name}` contains NaN: at small T some probabilities are exactly 0, and 0 * log(0) "
                              "is NaN in floating point; count 0 log 0 as 0, as `entropy_bits` of section 3 does")
        _compare(answer, expected[name], name, {
            "in nats: measure entropy in bits (log2), as in section 3": mean_entropy(keep, math.e),
            "these are the other group's values: right means `logits.argmax(1) == labels`": mean_entropy(~keep),
            "you averaged over all images: split them by `logits.argmax(1) == labels`": mean_entropy(every),
        }, rtol=1e-3)
    k = int(np.argmin(np.abs(np.log(np.asarray(temperatures, dtype=float)))))  # the temperature closest to 1
    _passed(f"at T = {temperatures[k]:.2g}: {expected['entropy_right'][k]:.2f} bits on the images the teacher gets "
            f"right, {expected['entropy_wrong'][k]:.2f} on its mistakes")


def check_numpy_softmax(numpy_softmax: Callable, logits: torch.Tensor) -> None:
    """Exercise 3 of 02_temperature: a temperature softmax in NumPy, compared with SciPy's on the teacher's logits."""
    z = logits.double().numpy()
    for T in (0.05, 1.0, 50.0):
        out = _call(numpy_softmax, "numpy_softmax", z.copy(), T)
        if isinstance(out, torch.Tensor):
            raise CheckFailed("`numpy_softmax` returned a torch tensor: this exercise is without PyTorch, "
                              "return a NumPy array")
        _compare(out, softmax(z / T, axis=-1), f"numpy_softmax(logits, T={T:g})", {
            "the temperature is ignored: divide the logits by T": softmax(z, axis=-1),
            "the logits are multiplied by T: divide them": softmax(z * T, axis=-1),
            "normalised over the images (axis 0): normalise each row, over the classes (the last axis)":
                softmax(z / T, axis=0),
        }, rtol=1e-5)
    extreme = np.array([[1000.0, 0.0, -1000.0]])
    out = _call(numpy_softmax, "numpy_softmax", extreme.copy(), 1.0)
    if not np.isfinite(np.asarray(out, dtype=float)).all():
        raise CheckFailed("`numpy_softmax` overflows on large logits (NaN or inf for [1000, 0, -1000]): subtract "
                          "each row's maximum of z / T before np.exp")
    _compare(out, softmax(extreme, axis=-1), "numpy_softmax([[1000, 0, -1000]], T=1)")
    _passed("numpy_softmax matches scipy.special.softmax at T = 0.05, 1 and 50, and does not overflow")
