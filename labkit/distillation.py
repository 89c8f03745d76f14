"""The distillation math the course teaches: soft targets, entropy, KL divergence and Hinton's loss.

``soft_targets`` is introduced in 00_start_here and 02_temperature, ``entropy`` in 01_dark_knowledge,
``kl_divergence`` and ``kl_at_temperature`` in 03_kl_divergence, ``distillation_loss`` in 03_kl_divergence and
used for every student from 05_distill_student on.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from labkit.validate import (check_alpha, check_distributions, check_labels, check_logits, check_mask,
                             check_same_shape, check_temperature, warn_if_probabilities)


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

    ``p`` and ``q`` are probability distributions over the last dimension (rows that do not sum to 1 are a
    ValueError). A 1-D input is one distribution; for a batch the per-row divergences are averaged over the
    first dimension (PyTorch's "batchmean").
    Terms with p_i = 0 count as 0 (0 log 0 = 0); a q_i = 0 where p_i > 0 gives +inf, as the math says.
    """
    if not isinstance(p, torch.Tensor) or not isinstance(q, torch.Tensor):
        raise ValueError("p and q must be torch tensors of probabilities")
    check_same_shape(p, q, ("p", "q"))
    if p.dim() == 0 or p.numel() == 0:
        raise ValueError(f"p and q must be non-empty distributions, got shape {tuple(p.shape)}")
    check_distributions(p, "p")  # NaN would be silently dropped by the support mask below
    check_distributions(q, "q")
    support = p > 0
    # Substitute 1 outside p's support so that neither the value nor the gradient sees log(0) there.
    p_safe = torch.where(support, p, torch.ones_like(p))
    q_safe = torch.where(support, q, torch.ones_like(q))
    terms = torch.where(support, p_safe * (torch.log(p_safe) - torch.log(q_safe)), torch.zeros_like(p))
    per_row = terms.sum(dim=-1)
    return per_row if per_row.dim() == 0 else per_row.sum() / p.shape[0]


def entropy(p: torch.Tensor, base: float = 2.0) -> torch.Tensor:
    """Shannon entropy ``-sum p log p`` of each distribution over the last dimension (introduced in 01_dark_knowledge).

    In bits by default (``base=math.e`` gives nats): 0 for one-hot, log2(classes) for uniform; 0 log 0 counts as 0.
    """
    if not isinstance(p, torch.Tensor) or p.dim() == 0 or p.shape[-1] == 0:
        raise ValueError("p must be a tensor of probabilities with a non-empty class dimension")
    if not (isinstance(base, (int, float)) and math.isfinite(base) and base > 0 and base != 1):
        raise ValueError(f"base must be a logarithm's base, a number > 0 other than 1 (2 for bits, math.e for nats), "
                         f"got {base}")
    check_distributions(p, "p")
    p_safe = torch.where(p > 0, p, torch.ones_like(p))  # 1 log 1 = 0: the value and the gradient avoid log(0)
    return -(p_safe * torch.log(p_safe)).sum(dim=-1) / math.log(base)


def _check_logit_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    check_logits(student_logits, "student_logits")
    check_logits(teacher_logits, "teacher_logits", masked_ok=True)
    check_same_shape(student_logits, teacher_logits, ("student_logits", "teacher_logits"))
    warn_if_probabilities(student_logits=student_logits, teacher_logits=teacher_logits)


def _kl_at_temperature(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    dtype = _compute_dtype(student_logits)
    # Autocast would run log_softmax in half precision; the loss is cheap, so always do it in float32+.
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        log_p = F.log_softmax(teacher_logits.to(dtype) / T, dim=1)
        log_q = F.log_softmax(student_logits.to(dtype) / T, dim=1)
        # A masked teacher class (logit -inf) has p = 0 and adds 0 (0 log 0 = 0), where 0 * -inf would be NaN.
        terms = log_p.exp() * (log_p.masked_fill(log_p == -math.inf, 0.0) - log_q)
        return terms.sum() / len(student_logits)


def kl_at_temperature(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """KL(soft_targets(teacher, T) || soft_targets(student, T)) from logits, averaged over the batch.

    Introduced in 03_kl_divergence: the soft term of :func:`distillation_loss` without its weight ``alpha * T**2``,
    equal to ``F.kl_div(F.log_softmax(student / T, 1), F.log_softmax(teacher / T, 1), reduction="batchmean",
    log_target=True)``. Computed in float32 log-space even under autocast; a teacher logit of -inf masks its
    class (probability 0). Gradients flow to both arguments.
    """
    T = check_temperature(T)
    _check_logit_pair(student_logits, teacher_logits)
    return _kl_at_temperature(student_logits, teacher_logits, T)


def standardize_logits(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Each row's logits minus their mean, divided by their (sample) standard deviation: logit standardization
    (Sun et al., CVPR 2024), which lets the student match the teacher's *shape* of logits rather than their scale.
    The result does not change when a row is shifted or scaled by a positive number."""
    mean = logits.mean(dim=-1, keepdim=True)
    return (logits - mean) / (logits.std(dim=-1, keepdim=True) + eps)


class DKDLoss(NamedTuple):
    """Decoupled KD's total and its two parts, each already multiplied by ``T**2`` (:func:`dkd_loss_parts`)."""

    total: torch.Tensor  # alpha * tckd + beta * nckd
    tckd: torch.Tensor  # target-class KD: KL between the binary (target, rest) distributions
    nckd: torch.Tensor  # non-target-class KD: KL between the distributions over the other classes


def dkd_loss_parts(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                   T: float = 4.0, alpha: float = 1.0, beta: float = 8.0) -> DKDLoss:
    """Decoupled knowledge distillation (Zhao et al., CVPR 2022): Hinton's KL split into a target-class part and a
    non-target-class part, weighted apart. Here ``alpha`` and ``beta`` are DKD's weights of those two parts (not
    :func:`distillation_loss`'s ``alpha``); the paper's defaults on CIFAR-100 are alpha 1, beta 8, T 4, next to a
    cross-entropy term of weight 1, which this loss does not include.

    With b = (p_target, 1 - p_target) at temperature T and p̂ the distribution over the other classes renormalised,
    ``tckd = T² KL(b_teacher || b_student)`` and ``nckd = T² KL(p̂_teacher || p̂_student)``, batch means; per image
    ``KL(p || q) = tckd + (1 - p_target of the teacher) * nckd`` (the paper's decomposition). Computed in float32
    log space (or wider); the teacher's logits are detached.
    """
    T = check_temperature(T)
    for name, weight in (("alpha", alpha), ("beta", beta)):
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
            raise ValueError(f"DKD's {name} (the weight of its {'target' if name == 'alpha' else 'non-target'}-class "
                             f"part) must be a finite number >= 0, got {weight!r}")
    _check_logit_pair(student_logits, teacher_logits)
    batch_size, num_classes = student_logits.shape
    check_labels(labels, batch_size, num_classes)
    dtype = _compute_dtype(student_logits)
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        log_p = F.log_softmax(teacher_logits.detach().to(dtype) / T, dim=1)
        log_q = F.log_softmax(student_logits.to(dtype) / T, dim=1)
        target = F.one_hot(labels.long(), num_classes).bool()
        tckd = _binary_kl(log_p, log_q, target)
        nckd = _kl_rows(_renormalised(log_p, target), _renormalised(log_q, target))
    tckd, nckd = T**2 * tckd.mean(), T**2 * nckd.mean()
    return DKDLoss(alpha * tckd + beta * nckd, tckd, nckd)


def _renormalised(log_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Log-probabilities over the non-target classes only (the target at -inf)."""
    others = log_probs.masked_fill(target, -math.inf)
    return others - others.logsumexp(dim=1, keepdim=True)


def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row from log-probabilities; classes where p is 0 add 0."""
    return torch.where(log_p > -math.inf, log_p.exp() * (log_p - log_q), 0.0).sum(dim=1)


def _binary_kl(log_p: torch.Tensor, log_q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL between the (target, rest) distributions, per row."""
    def binary(log_probs: torch.Tensor) -> torch.Tensor:
        on = log_probs.masked_fill(~target, -math.inf).logsumexp(dim=1)
        off = log_probs.masked_fill(target, -math.inf).logsumexp(dim=1)
        return torch.stack([on, off], dim=1)
    return _kl_rows(binary(log_p), binary(log_q))


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
             T: float = 4.0, alpha: float = 1.0, beta: float = 8.0) -> torch.Tensor:
    """The total of :func:`dkd_loss_parts`: ``alpha * tckd + beta * nckd``."""
    return dkd_loss_parts(student_logits, teacher_logits, labels, T, alpha, beta).total


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
    *,
    labelled: torch.Tensor | None = None,
) -> DistillationLoss:
    """Hinton et al.'s loss with its parts; see :func:`distillation_loss` (introduced in 03_kl_divergence).

    ``labelled`` (a boolean mask, one entry per image) restricts the hard term to the images that have a label
    (a transfer set, 05_distill_student): the others' entries of ``labels`` are ignored. Both terms stay means over
    the *whole* batch, so every image's loss is ``alpha T² KL`` plus, if it is labelled, ``(1 - alpha) CE``.
    """
    T, alpha = check_temperature(T), check_alpha(alpha)
    _check_logit_pair(student_logits, teacher_logits)
    batch_size, num_classes = student_logits.shape
    if labelled is None:
        check_labels(labels, batch_size, num_classes)
    else:
        check_mask(labelled, batch_size)
        if labelled.any():
            check_labels(labels[labelled], int(labelled.sum()), num_classes)

    kl = _kl_at_temperature(student_logits, teacher_logits.detach(), T)
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        logits32 = student_logits.to(_compute_dtype(student_logits))
        if labelled is None:
            ce = F.cross_entropy(logits32, labels.long())
        else:
            ce = F.cross_entropy(logits32[labelled], labels[labelled].long(), reduction="sum") / batch_size
    soft = alpha * T**2 * kl
    hard = (1.0 - alpha) * ce
    return DistillationLoss(soft + hard, soft, hard)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    T: float = 2.0,
    alpha: float = 0.5,
    *,
    labelled: torch.Tensor | None = None,
) -> torch.Tensor:
    """``alpha * T**2 * KL(soft_targets(teacher, T) || soft_targets(student, T)) + (1 - alpha) * CE(student, labels)``.

    Introduced in 03_kl_divergence. KL is averaged over the batch ("batchmean"); ``alpha`` weights the
    teacher's soft term; the T**2 factor keeps the soft term's gradients the same size as T changes
    (they shrink like 1/T**2 otherwise). Takes logits, never models, so any teacher can be swapped in; the
    teacher logits are detached. Computed in float32 log-space even under autocast. A teacher logit of -inf masks
    its class (probability 0, adding nothing to the KL); NaN or +inf logits, or -inf student logits, are a
    ValueError. Probabilities passed as logits give a :class:`~labkit.validate.LooksLikeProbabilitiesWarning`.
    ``labelled`` masks the hard term to the images that have labels (see :func:`distillation_loss_parts`).
    """
    return distillation_loss_parts(student_logits, teacher_logits, labels, T, alpha, labelled=labelled).total
