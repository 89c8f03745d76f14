"""Checks for the exercises of 06_tuning_temperature_and_alpha."""

from __future__ import annotations

import torch
from scipy.special import softmax

from labkit.checks._base import _passed, _compare


def check_dark_mass(dark_mass: float, logits: torch.Tensor, T: float) -> None:
    """Exercise 2 of 06_tuning_temperature_and_alpha: the mean probability off the top class at temperature T."""
    def mass(scaled: torch.Tensor) -> float:
        return (1 - torch.from_numpy(softmax(scaled.double().numpy(), axis=1)).max(1).values).mean().item()

    _compare(dark_mass, mass(logits / T), "dark_mass", {
        "that is the top class's probability: the dark mass is 1 - top": 1 - mass(logits / T),
        "the logits are multiplied by T: divide them": mass(logits * T),
        "the temperature is missing: that is the dark mass at T = 1": mass(logits),
        "summed over images: take the mean": mass(logits / T) * len(logits),
    })
    _passed(f"dark mass at T = {T:g}: {dark_mass:.3f}")
