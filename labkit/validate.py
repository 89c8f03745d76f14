"""Input checks shared by labkit's public functions, so every bad input fails with a clear ValueError."""

from __future__ import annotations

import math
import sys
import warnings

import torch


MIN_TEMPERATURE = 1e-6  # far below any T a lesson uses, far above where logits / T overflow float32


def _one_number(value: object, what: str) -> float:
    """``value`` as a float, or a ValueError naming ``what`` (a tensor must hold one element)."""
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        raise ValueError(f"{what} must be one number, got a tensor of shape {tuple(value.shape)}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None


def check_temperature(T: float) -> float:
    """Return ``T`` as a float, or raise if it is not a finite positive number (introduced in 02_temperature)."""
    T = _one_number(T, "the temperature T")
    if not math.isfinite(T) or T <= 0:
        raise ValueError(f"temperature T must be a finite number > 0, got {T}")
    if T < MIN_TEMPERATURE:
        raise ValueError(f"temperature T = {T:g} is below {MIN_TEMPERATURE:g}: logits / T would overflow float32 and "
                         "give NaN; for the one-hot limit take the argmax (or T = 1e-6)")
    return T


def check_alpha(alpha: float) -> float:
    """Return ``alpha`` as a float, or raise if it is NaN or outside [0, 1] (introduced in 03_kl_divergence)."""
    alpha = _one_number(alpha, "alpha (weight of the teacher's soft term)")
    if not 0.0 <= alpha <= 1.0:  # also rejects NaN, which fails every comparison
        raise ValueError(f"alpha (weight of the teacher's soft term) must lie in [0, 1], got {alpha}")
    return alpha


class NonFiniteLogitsError(ValueError):
    """Logits hold NaN or an infinity where none is allowed, usually from a diverged model (03_kl_divergence)."""


def check_logits(logits: torch.Tensor, name: str = "logits", masked_ok: bool = False) -> None:
    """Raise unless ``logits`` is a non-empty 2-D (batch, classes) floating tensor of finite values.

    With ``masked_ok`` a logit may be -inf (a class masked out: probability 0) as long as every row keeps
    at least one finite class. Non-finite values are a :class:`NonFiniteLogitsError`. Introduced in 03_kl_divergence.
    """
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
    finite = torch.isfinite(logits)
    allowed = finite | (logits == -math.inf) if masked_ok else finite
    if not (allowed.all(1) & finite.any(1)).all():  # one check (one GPU sync) when all is well
        found = [("NaN", logits.isnan()), ("+inf", logits.isposinf())]
        found += [] if masked_ok else [("-inf", logits.isneginf())]
        kinds = [kind for kind, bad in found if bad.any()]
        if not kinds:
            raise NonFiniteLogitsError(f"{name} has a row with every class at -inf: at least one class per image "
                                       "must keep a finite logit")
        raise NonFiniteLogitsError(f"{name} contains {' and '.join(kinds)}: logits must be finite numbers"
                                   + (" (-inf only to mask a class)" if masked_ok else "")
                                   + "; a diverged model (lower the learning rate) or a division by 0 can cause this")


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


def check_mask(mask: torch.Tensor, batch_size: int) -> None:
    """Raise unless ``mask`` is a boolean tensor of shape (batch_size,)."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError("the labelled mask must be a boolean torch.Tensor (True where an image has a label)")
    if mask.shape != (batch_size,):
        raise ValueError(f"the labelled mask must have shape ({batch_size},), got {tuple(mask.shape)}")


class LooksLikeProbabilitiesWarning(UserWarning):
    """Logits whose every row lies in [0, 1] and sums to 1: probabilities were passed where raw logits belong."""


def is_distribution(x: torch.Tensor) -> bool:
    """True when every row (last dimension) of ``x`` lies in [0, 1] and sums to 1, up to the rounding of its dtype.

    Introduced in 03_kl_divergence. The tolerance is 1e-3, or float16/bfloat16's own precision where coarser.
    """
    tol = max(1e-3, torch.finfo(x.dtype).eps)
    x = x.detach().to(torch.promote_types(x.dtype, torch.float32))  # summed in float32 or wider: no added rounding
    return bool((((x >= 0) & (x <= 1 + tol)).all(-1) & ((x.sum(-1) - 1).abs() <= tol)).all())


def check_distributions(x: torch.Tensor, name: str) -> None:
    """Raise unless every row of ``x`` is a probability distribution (introduced in 03_kl_divergence)."""
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor of probabilities, got {x.dtype}: convert it with .float()")
    if not (x >= 0).all():  # also rejects NaN, which fails every comparison
        raise ValueError(f"{name} must be probabilities (no negative or NaN entries)")
    if not is_distribution(x):
        sums = x.detach().sum(-1)
        raise ValueError(f"the rows of {name} must sum to 1, got sums from {sums.min().item():.4g} to "
                         f"{sums.max().item():.4g}: each row is one distribution over the classes, so take the softmax "
                         "over the last dimension (torch.softmax(logits, dim=-1), or labkit.soft_targets)")


def warn_if_probabilities(**logits: torch.Tensor) -> None:
    """Warn once (:class:`LooksLikeProbabilitiesWarning`), naming the tensors whose rows look like probabilities.

    Introduced in 03_kl_divergence: softmax applied twice flattens the distributions, so the loss comes out wrong
    without any error.
    """
    names = [name for name, x in logits.items() if is_distribution(x)]
    if names:
        _warn_outside_labkit(f"{' and '.join(names)} look like probabilities (every row lies in [0, 1] and sums "
                             "to 1): pass the raw logits, the model's output before any softmax; labkit applies "
                             "softmax(logits / T) itself", LooksLikeProbabilitiesWarning)


def _warn_outside_labkit(message: str, category: type[Warning]) -> None:
    # Attribute the warning to the first caller outside labkit: the learner's line, however deep it was raised.
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("labkit."):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
