"""The token-level losses of language-model distillation (12_distill_language_model): forward KL, reverse KL,
generalized Jensen-Shannon, and next-token cross-entropy."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from labkit.distillation import kl_at_temperature
from labkit.lm.tokenizer import VocabularyMismatchError, _check_ids
from labkit.validate import check_logits, check_same_shape, check_temperature, warn_if_probabilities


def _flatten_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, time, vocab) logits as (batch * time, vocab) rows, one per token, after checking their shapes."""
    for name, x in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            raise ValueError(f"{name} must be a (batch, time, vocab) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}; for "
                             "(batch, classes) logits use labkit.kl_at_temperature")
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise VocabularyMismatchError(
            f"student_logits cover {student_logits.shape[-1]} tokens and teacher_logits {teacher_logits.shape[-1]}: a "
            "per-token divergence needs one vocabulary. Map the teacher's distribution onto the student's tokens "
            "(labkit.lm.project_to_vocabulary, when every teacher token stands for one student token), or distill at "
            "the sequence level: train the student on text the teacher wrote (labkit.lm.model_text)")
    check_same_shape(student_logits, teacher_logits, ("student_logits", "teacher_logits"))
    vocab = student_logits.shape[-1]
    return student_logits.reshape(-1, vocab), teacher_logits.reshape(-1, vocab)


def _log_probs(student: torch.Tensor, teacher: torch.Tensor, T: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and (detached) teacher log-softmax at ``T``, in float32 or wider even under autocast."""
    check_logits(student, "student_logits")
    check_logits(teacher, "teacher_logits")  # finite: a masked teacher class makes KL(student || teacher) infinite
    warn_if_probabilities(student_logits=student, teacher_logits=teacher)
    dtype = torch.promote_types(student.dtype, torch.float32)
    with torch.autocast(device_type=student.device.type, enabled=False):
        return F.log_softmax(student.to(dtype) / T, dim=-1), F.log_softmax(teacher.detach().to(dtype) / T, dim=-1)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """KL(teacher_T || student_T) per token, averaged over batch and time (introduced in 12_distill_language_model).

    Hinton's soft term of 03_kl_divergence applied at every position: exactly :func:`labkit.kl_at_temperature` on
    the (batch * time, vocab) rows, whose "batchmean" is then a mean over tokens. Mean-seeking: the student pays
    wherever the teacher puts mass it misses. No ``T**2`` factor (multiply by it when mixing with a hard loss);
    the teacher's logits are detached.
    """
    student, teacher = _flatten_pair(student_logits, teacher_logits)
    return kl_at_temperature(student, teacher.detach(), T)


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """KL(student_T || teacher_T) per token, averaged over batch and time (introduced in 12_distill_language_model).

    Mode-seeking: the expectation is under the student, so it pays for putting mass where the teacher has little
    and nothing for the teacher's modes it ignores. Used on the student's own samples (on-policy distillation, as
    in MiniLLM and GKD). Gradients flow to the student only; computed in float32 log space.
    """
    T = check_temperature(T)
    log_q, log_p = _log_probs(*_flatten_pair(student_logits, teacher_logits), T)
    return (log_q.exp() * (log_q - log_p)).sum() / len(log_q)


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.5,
                    T: float = 1.0) -> torch.Tensor:
    """Generalized Jensen-Shannon divergence per token, as in GKD (Agarwal et al. 2024, TRL's GKDTrainer).

    Introduced in 12_distill_language_model. With teacher p, student q and the mixture m = beta p + (1 - beta) q:
    ``JSD_beta = beta KL(p || m) + (1 - beta) KL(q || m)``, averaged over batch and time; beta = 0.5 is the
    ordinary Jensen-Shannon divergence, bounded by log 2. The loss itself tends to 0 at both ends, but scaled it
    approaches the two KLs: ``JSD_beta / beta -> KL(p || q)`` (:func:`forward_kl`) as beta -> 0 and
    ``JSD_beta / (1 - beta) -> KL(q || p)`` (:func:`reverse_kl`) as beta -> 1. TRL returns those two KLs *at*
    beta = 0 and 1, a jump from the nearby values; here beta must lie strictly between, and the endpoints are
    asked for by name. Gradients flow to the student only; computed in float32 log space.
    """
    beta, T = float(beta), check_temperature(T)
    if not 0.0 < beta < 1.0:  # also rejects NaN
        raise ValueError(f"beta must lie strictly between 0 and 1, got {beta}: at beta = 0 use forward_kl, "
                         "at beta = 1 use reverse_kl (the limits JSD_beta approaches once divided by beta or 1 - beta)")
    log_q, log_p = _log_probs(*_flatten_pair(student_logits, teacher_logits), T)
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
    kl_pm = (log_p.exp() * (log_p - log_m)).sum()
    kl_qm = (log_q.exp() * (log_q - log_m)).sum()
    return (beta * kl_pm + (1 - beta) * kl_qm) / len(log_q)


def next_token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats per token) of (batch, time, vocab) ``logits`` for the (batch, time) ``targets``.

    Introduced in 12_distill_language_model. ``targets[b, t]`` is the token that follows position t, i.e. the
    inputs shifted by one (:attr:`TokenBatch.targets`). Computed in float32 even under autocast.
    """
    if not isinstance(targets, torch.Tensor):
        raise ValueError(f"targets must be a torch.Tensor of token ids, got {type(targets).__name__}: convert it with "
                         "torch.as_tensor(targets)")
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"logits must be (batch, time, vocab) and targets (batch, time), got shapes "
                         f"{tuple(getattr(logits, 'shape', ()))} and {tuple(targets.shape)}")
    flat = logits.reshape(-1, logits.shape[-1])
    check_logits(flat, "logits")
    _check_ids(targets, logits.shape[-1], "targets")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return F.cross_entropy(flat.to(torch.promote_types(flat.dtype, torch.float32)), targets.reshape(-1))
