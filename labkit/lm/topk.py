"""Top-k logit caching, as offline distillation stores a large teacher (introduced in 12_distill_language_model).

A full next-token distribution costs ``vocab`` floats per position: for a 150,000-token vocabulary and a billion
tokens, far more than the text. Offline distillation keeps only the teacher's ``k`` most likely tokens per position
(their ids and log-probabilities) and trains the student from those. This module stores them
(:func:`top_k_targets`), says what the truncation costs (:func:`kept_mass`, :func:`truncation_kl`,
:func:`bytes_per_token`) and computes the forward KL from a store (:func:`top_k_forward_kl`).

The renormalisation choice: the stored probabilities are renormalised over the ``k`` kept tokens,
``p̃_i = p_i / S`` with ``S`` the mass kept, and the loss is ``KL(p̃ || q)`` against the student's *full* softmax
``q``. Dropping the tail instead of spreading it (uniformly, say) over the other tokens keeps the target what the
teacher said, and at ``k = vocab`` it is exactly :func:`~labkit.lm.losses.forward_kl`. The price is measurable:
``KL(p̃ || p) = -log S``, the truncation's own divergence from the full teacher.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from labkit.validate import check_logits, check_temperature, warn_if_probabilities


class TopKTargets(NamedTuple):
    """The teacher's ``k`` most likely tokens per position: ``ids`` (int64) and their ``log_probs`` under the full
    distribution at temperature ``T`` (not renormalised), each (batch, time, k)."""

    ids: torch.Tensor
    log_probs: torch.Tensor
    vocab_size: int
    T: float = 1.0


def top_k_targets(teacher_logits: torch.Tensor, k: int, T: float = 1.0) -> TopKTargets:
    """The store of (batch, time, vocab) ``teacher_logits``: the ``k`` largest log-probabilities at ``T`` and their
    ids, detached (introduced in 12_distill_language_model)."""
    if teacher_logits.dim() != 3:
        raise ValueError(f"teacher_logits must be (batch, time, vocab), got {tuple(teacher_logits.shape)}")
    vocab = teacher_logits.shape[-1]
    if not 1 <= k <= vocab:
        raise ValueError(f"k must lie between 1 and the vocabulary's {vocab} tokens, got {k}")
    check_logits(teacher_logits.reshape(-1, vocab), "teacher_logits", masked_ok=True)  # a masked token: probability 0
    log_p = F.log_softmax(teacher_logits.detach().float() / check_temperature(T), dim=-1)
    values, ids = log_p.topk(k, dim=-1)
    return TopKTargets(ids, values, vocab, T)


def kept_mass(targets: TopKTargets) -> torch.Tensor:
    """``S``, the teacher's probability on the kept tokens, per position (batch, time)."""
    return targets.log_probs.exp().sum(-1)


def truncation_kl(targets: TopKTargets) -> float:
    """Mean over positions of ``KL(p̃ || p) = -log S``: how far the renormalised store is from the full teacher
    (0 at ``k = vocab``)."""
    return (-targets.log_probs.logsumexp(-1)).clamp_min(0).mean().item()


def top_k_forward_kl(student_logits: torch.Tensor, targets: TopKTargets) -> torch.Tensor:
    """``KL(p̃ || q)`` per token, averaged over batch and time: the renormalised top-k teacher against the student's
    full softmax at the store's temperature (introduced in 12_distill_language_model)."""
    if student_logits.shape[:-1] != targets.ids.shape[:-1] or student_logits.shape[-1] != targets.vocab_size:
        raise ValueError(f"student_logits {tuple(student_logits.shape)} do not fit a store of "
                         f"{tuple(targets.ids.shape[:-1])} positions over {targets.vocab_size} tokens")
    student = student_logits.reshape(-1, targets.vocab_size)  # one row per token
    check_logits(student, "student_logits")
    warn_if_probabilities(student_logits=student)
    log_q = F.log_softmax(student.float() / targets.T, dim=-1).gather(1, targets.ids.reshape(len(student), -1))
    log_p = targets.log_probs.reshape(len(student), -1)
    log_p_renormalised = log_p - log_p.logsumexp(-1, keepdim=True)
    kept = log_p_renormalised > -math.inf  # a masked token in the store (probability 0) adds 0, not 0 * inf
    terms = torch.where(kept, log_p_renormalised.exp() * (log_p_renormalised - log_q), 0.0)
    return terms.sum() / len(student)


def bytes_per_token(k: int, vocab_size: int) -> int:
    """Bytes one position of a store takes, as offline distillation keeps it: ``k`` ids (2 bytes each while the
    vocabulary has at most 65,536 tokens, else 4) and ``k`` float16 log-probabilities; the full distribution, ``k =
    vocab_size``, needs no ids."""
    if k == vocab_size:
        return 2 * vocab_size
    return k * ((2 if vocab_size <= 65_536 else 4) + 2)
