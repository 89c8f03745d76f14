"""Input checks shared by labkit's public functions, so every bad input fails with a clear ValueError."""

from __future__ import annotations

import math

import torch


def check_temperature(T: float) -> float:
    """Return ``T`` as a float, or raise if it is not a finite positive number (introduced in 02_temperature)."""
    T = float(T)
    if not math.isfinite(T) or T <= 0:
        raise ValueError(f"temperature T must be a finite number > 0, got {T}")
    return T


def check_alpha(alpha: float) -> float:
    """Return ``alpha`` as a float, or raise if it is NaN or outside [0, 1] (introduced in 03_kl_divergence)."""
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:  # also rejects NaN, which fails every comparison
        raise ValueError(f"alpha (weight of the teacher's soft term) must lie in [0, 1], got {alpha}")
    return alpha


def check_logits(logits: torch.Tensor, name: str = "logits") -> None:
    """Raise unless ``logits`` is a non-empty 2-D (batch, classes) floating tensor."""
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 2:
        raise ValueError(f"{name} must be 2-D (batch, classes), got shape {tuple(logits.shape)}")
    if logits.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    if logits.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 classes, got {logits.shape[1]}")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got {logits.dtype}")


def check_same_shape(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    """Raise unless ``a`` and ``b`` have the same shape (e.g. student and teacher logits)."""
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_labels(labels: torch.Tensor, batch_size: int, num_classes: int) -> None:
    """Raise unless ``labels`` holds ``batch_size`` integer class indices in [0, num_classes)."""
    if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError("labels must be an integer torch.Tensor of class indices")
    if labels.shape != (batch_size,):
        raise ValueError(f"labels must have shape ({batch_size},), got {tuple(labels.shape)}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got values in [{low}, {high}]")
