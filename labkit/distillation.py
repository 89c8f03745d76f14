"""The distillation math the course teaches: soft targets, KL divergence and Hinton's loss.

``soft_targets`` is introduced in 00_start_here and 02_temperature, ``kl_divergence`` in 03_kl_divergence,
``distillation_loss`` in 03_kl_divergence and used for every student from 05_distill_student on.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from labkit.validate import check_alpha, check_labels, check_logits, check_same_shape, check_temperature


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """float32 at least, float64 kept (for gradcheck): half precision is too coarse for log-probabilities."""
    return torch.promote_types(t.dtype, torch.float32)


def soft_targets(logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """Softmax of ``logits / T`` over the last dimension, in float32 or wider (introduced in 02_temperature).

    T = 1 is the ordinary softmax; T > 1 flattens the distribution and reveals the small probabilities of
    the wrong classes ("dark knowledge"); T -> 0 approaches one-hot. Stable for any logit magnitude because
    ``torch.softmax`` subtracts the row maximum first.
    """
    T = check_temperature(T)
    if not isinstance(logits, torch.Tensor) or logits.dim() == 0 or logits.shape[-1] == 0:
        raise ValueError("logits must be a tensor with a non-empty class dimension")
    return torch.softmax(logits.to(_compute_dtype(logits)) / T, dim=-1)


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_i p_i log(p_i / q_i), written from the formula (introduced in 03_kl_divergence).

    ``p`` and ``q`` are probability distributions over the last dimension. A 1-D input is one distribution;
    for a batch the per-row divergences are averaged over the first dimension (PyTorch's "batchmean").
    Terms with p_i = 0 count as 0 (0 log 0 = 0); a q_i = 0 where p_i > 0 gives +inf, as the math says.
    """
    if not isinstance(p, torch.Tensor) or not isinstance(q, torch.Tensor):
        raise ValueError("p and q must be torch tensors of probabilities")
    check_same_shape(p, q, ("p", "q"))
    if p.dim() == 0 or p.numel() == 0:
        raise ValueError(f"p and q must be non-empty distributions, got shape {tuple(p.shape)}")
    if not ((p >= 0).all() and (q >= 0).all()):  # also rejects NaN, which the support mask would silently drop
        raise ValueError("p and q must be probabilities (no negative or NaN entries)")
    support = p > 0
    # Substitute 1 outside p's support so that neither the value nor the gradient sees log(0) there.
    p_safe = torch.where(support, p, torch.ones_like(p))
    q_safe = torch.where(support, q, torch.ones_like(q))
    terms = torch.where(support, p_safe * (torch.log(p_safe) - torch.log(q_safe)), torch.zeros_like(p))
    per_row = terms.sum(dim=-1)
    return per_row if per_row.dim() == 0 else per_row.sum() / p.shape[0]


class DistillationLoss(NamedTuple):
    """The total distillation loss and its two weighted parts (introduced in 03_kl_divergence)."""

    total: torch.Tensor
    soft: torch.Tensor  # alpha * T^2 * KL(teacher_T || student_T)
    hard: torch.Tensor  # (1 - alpha) * CE(student, labels)


def distillation_loss_parts(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    T: float = 2.0,
    alpha: float = 0.5,
) -> DistillationLoss:
    """Hinton et al.'s loss with its parts; see :func:`distillation_loss` (introduced in 03_kl_divergence)."""
    T, alpha = check_temperature(T), check_alpha(alpha)
    check_logits(student_logits, "student_logits")
    check_logits(teacher_logits, "teacher_logits")
    check_same_shape(student_logits, teacher_logits, ("student_logits", "teacher_logits"))
    batch_size, num_classes = student_logits.shape
    check_labels(labels, batch_size, num_classes)

    dtype = _compute_dtype(student_logits)
    # Autocast would run log_softmax in half precision; the loss is cheap, so always do it in float32+.
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        student = student_logits.to(dtype)
        teacher = teacher_logits.detach().to(dtype)
        log_p_teacher = F.log_softmax(teacher / T, dim=1)
        log_q_student = F.log_softmax(student / T, dim=1)
        kl = (log_p_teacher.exp() * (log_p_teacher - log_q_student)).sum() / batch_size
        ce = F.cross_entropy(student, labels.long())
        soft = alpha * T**2 * kl
        hard = (1.0 - alpha) * ce
    return DistillationLoss(soft + hard, soft, hard)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    T: float = 2.0,
    alpha: float = 0.5,
) -> torch.Tensor:
    """``alpha * T**2 * KL(soft_targets(teacher, T) || soft_targets(student, T)) + (1 - alpha) * CE(student, labels)``.

    Introduced in 03_kl_divergence. KL is averaged over the batch ("batchmean"); ``alpha`` weights the
    teacher's soft term; the T**2 factor keeps the soft term's gradients the same size as T changes
    (they shrink like 1/T**2 otherwise). Takes logits, never models, so any teacher can be swapped in; the
    teacher logits are detached. Computed in float32 log-space even under autocast.
    """
    return distillation_loss_parts(student_logits, teacher_logits, labels, T, alpha).total
