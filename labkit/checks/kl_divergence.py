"""Checks for the exercises of 03_kl_divergence."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from labkit.distillation import distillation_loss

from labkit.checks._base import CheckFailed, _passed, _given, _compare, _call, _kl, _soft


def check_kl_directions(kl_forward: Sequence[float], kl_reverse: Sequence[float], teacher_logits: torch.Tensor,
                        student_logits: torch.Tensor, Ts: Sequence[float] = (1, 2, 4, 8)) -> None:
    """Exercise 1 of 03_kl_divergence: KL(teacher || student) and KL(student || teacher) at each T."""
    p = [_soft(teacher_logits, T) for T in Ts]
    q = [_soft(student_logits, T) for T in Ts]
    forward = torch.stack([_kl(a, b) for a, b in zip(p, q)])
    reverse = torch.stack([_kl(b, a) for a, b in zip(p, q)])
    t_squared = torch.tensor([float(T) ** 2 for T in Ts], dtype=torch.float64)
    classes = teacher_logits.shape[1]
    p1, q1 = _soft(teacher_logits, 1.0), _soft(student_logits, 1.0)
    for name, answer, expected, other, untempered in (("kl_forward", kl_forward, forward, reverse, _kl(p1, q1)),
                                                      ("kl_reverse", kl_reverse, reverse, forward, _kl(q1, p1))):
        _compare(answer, expected, name, {
            "forward and reverse are swapped: forward is KL(teacher || student), the teacher's p first": other,
            "multiplied by T**2: the exercise asks for the KL itself": expected * t_squared,
            "divided by the number of classes: reduction='mean' averages over all elements, use 'batchmean'":
                expected / classes,
            "the same value at every T: divide the logits by T before the softmax": untempered.expand(len(Ts)),
        })
    _passed("forward " + ", ".join(f"{v:.4f}" for v in forward) + "; reverse " + ", ".join(f"{v:.4f}" for v in reverse))


def _loss_mistakes(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, T: float, alpha: float) -> dict[str, Any]:
    """What the usual mistakes make of Hinton's loss, each with its hint."""
    log_p, log_q = F.log_softmax(t / T, 1), F.log_softmax(s / T, 1)
    kl = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
    ce = F.cross_entropy(s, y)

    def loss(soft: torch.Tensor, hard: torch.Tensor = ce) -> torch.Tensor:
        return alpha * soft + (1 - alpha) * hard

    plain_kl = F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="batchmean", log_target=True)
    return {
        "forgot to multiply the KL term by T**2": loss(kl),
        "used reduction='mean', which averages over batch x classes: use reduction='batchmean'":
            loss(T**2 * kl / s.shape[1]),
        "passed probabilities as F.kl_div's input: it expects the student's *log*-probabilities (log_softmax)":
            loss(T**2 * F.kl_div(log_q.exp(), log_p.exp(), reduction="batchmean")),
        "the KL is reversed: distillation uses KL(teacher || student), F.kl_div(student_log_probs, teacher_...)":
            loss(T**2 * F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)),
        "alpha weighs the wrong term: alpha multiplies the teacher's soft term, 1 - alpha the cross-entropy":
            (1 - alpha) * T**2 * kl + alpha * ce,
        "the cross-entropy with the labels uses the plain logits, not logits / T":
            loss(T**2 * kl, F.cross_entropy(s / T, y)),
        "no temperature in the soft targets: use softmax(logits / T) for teacher and student": loss(T**2 * plain_kl),
        "the temperature divides the probabilities (softmax(z) / T): it must divide the logits, softmax(z / T)":
            loss(T * plain_kl),
    }


def check_distillation_loss(my_distillation_loss: Callable) -> None:
    """Exercise 2 of 03_kl_divergence: Hinton's loss written with F.kl_div and F.cross_entropy only.

    ``my_distillation_loss(student_logits, teacher_logits, labels, T, alpha)`` must equal
    :func:`labkit.distillation_loss`; a mismatch is compared with the usual mistakes, one setting at a time.
    """
    g = torch.Generator().manual_seed(0)
    s, t = 2 * torch.randn(16, 10, generator=g), 3 * torch.randn(16, 10, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    for T, alpha in ((4.0, 0.5), (2.0, 0.25), (2.0, 0.9), (1.0, 0.5)):
        out = _call(my_distillation_loss, "my_distillation_loss", s.clone(), t.clone(), y.clone(), T, alpha)
        if isinstance(out, torch.Tensor) and out.dim() > 0:
            raise CheckFailed(f"`my_distillation_loss` returned shape {tuple(out.shape)}: return one number, the "
                              "loss averaged over the batch")
        if isinstance(out, torch.Tensor) and torch.isnan(out):
            raise CheckFailed("`my_distillation_loss` returned NaN: log-probabilities as F.kl_div's target need "
                              "log_target=True (or pass probabilities as the target)")
        _compare(out, distillation_loss(s, t, y, T=T, alpha=alpha), f"my_distillation_loss at T={T:g}, alpha={alpha:g}",
                 _loss_mistakes(s, t, y, T, alpha))
    _passed("my_distillation_loss equals labkit.distillation_loss for 4 settings of T and alpha")


def check_loss_parts(parts: Any, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                     T: float, alphas: Sequence[float]) -> None:
    """Exercise 4 of 03_kl_divergence: the soft and hard terms of Hinton's loss for one student, at each alpha.

    ``parts[alpha]`` must be ``(soft, hard)`` with soft = alpha · T² · KL(teacher_T ‖ student_T) and hard =
    (1 − alpha) · CE(student, labels), both batch means; they are recomputed with SciPy.
    """
    _given(parts, "near_parts")
    if not isinstance(parts, dict) or sorted(parts) != sorted(alphas):
        raise CheckFailed(f"`parts` should be a dict with one entry per alpha, keys {list(alphas)}")
    kl = _kl(_soft(teacher_logits, T), _soft(student_logits, T)).item()
    ce = F.cross_entropy(student_logits.double(), labels).item()
    for alpha in alphas:
        expected = torch.tensor([alpha * T**2 * kl, (1 - alpha) * ce])
        _compare(parts[alpha], expected, f"parts[{alpha:g}]", {
            "the soft term lacks `T**2`": torch.tensor([alpha * kl, (1 - alpha) * ce]),
            "the terms are not weighted: multiply the soft one by `alpha`, the hard one by `1 - alpha`":
                torch.tensor([T**2 * kl, ce]),
            "soft and hard are swapped: `(soft, hard)`": torch.tensor([(1 - alpha) * ce, alpha * T**2 * kl]),
            "the KL is in the wrong direction: the teacher's soft targets come first, KL(teacher_T ‖ student_T)":
                torch.tensor([alpha * T**2 * _kl(_soft(student_logits, T), _soft(teacher_logits, T)).item(),
                              (1 - alpha) * ce]),
        }, rtol=1e-3)
    _passed(f"soft and hard terms at {len(alphas)} values of alpha (T = {T:g})")


def _soft_term_grad(s: torch.Tensor, t: torch.Tensor, T: float) -> torch.Tensor:
    """The oracle of check_soft_grad: float64 autograd of T² · KL(softmax(t/T) ‖ softmax(s/T)), batch mean, in s."""
    z = s.detach().double().requires_grad_()
    with torch.enable_grad():  # the learner's function runs under no_grad; the oracle needs a graph
        log_q = z / T - torch.logsumexp(z / T, dim=1, keepdim=True)
        log_p = t.double() / T - torch.logsumexp(t.double() / T, dim=1, keepdim=True)
        loss = T**2 * (log_p.exp() * (log_p - log_q)).sum() / len(z)
        grad, = torch.autograd.grad(loss, z)
    return grad


def _soft_grad_mistakes(s: torch.Tensor, t: torch.Tensor, T: float) -> dict[str, torch.Tensor]:
    """What the usual slips make of the gradient T · (q − p) / batch size, each with its hint (SciPy softmaxes)."""
    q, p = _soft(s, T), _soft(t, T)
    batch, classes = s.shape
    right = T * (q - p) / batch
    return {
        "forgot T**2: (q - p) / T is the gradient of the KL alone; the soft term is T**2 · KL": right / T**2,
        "T**2 * (q - p) forgets the 1/T of the chain rule (log q_j contains z_j / T): the result is T * (q - p)":
            right * T,
        "q - p lacks the factor T: T**2 from the loss times 1/T from the chain rule leaves T * (q - p)": right / T,
        "the sign is flipped: the gradient is T * (q - p), the student's soft targets minus the teacher's "
        "(were p and q, or the teacher's and the student's logits, swapped?)": -right,
        "no batch mean: the loss averages over the images, so each image's gradient is divided by the batch size":
            right * batch,
        "divided by batch size x classes: the loss averages over the images only (batchmean), not over the classes":
            right / classes,
        "the softmaxes have no temperature: p and q are softmax(logits / T), for the teacher and the student":
            T * (_soft(s, 1.0) - _soft(t, 1.0)) / batch,
    }


def check_soft_grad(my_soft_grad: Callable) -> None:
    """Section 6 of 03_kl_divergence: the gradient of the soft term, written from the formula.

    ``my_soft_grad(student_logits, teacher_logits, T)`` must return d(T² · KL(p_T ‖ q_T), batch mean)/d(student
    logits), of the student logits' shape. It is compared with float64 autograd on logits of the check's own, at
    two temperatures; a mismatch is compared with the usual mistakes. The function runs under ``torch.no_grad()``:
    the exercise is the formula, not autograd.
    """
    g = torch.Generator().manual_seed(0)
    s, t = 2 * torch.randn(12, 10, generator=g), 3 * torch.randn(12, 10, generator=g)
    for T in (3.0, 2.0):  # T != 1 and 12 images: each mistake below gives a different value
        name = f"my_soft_grad at T={T:g}"
        try:
            with torch.no_grad():
                out = _call(my_soft_grad, "my_soft_grad", s.clone(), t.clone(), T)
        except CheckFailed as failed:
            if isinstance(failed.__cause__, RuntimeError) and "grad" in str(failed.__cause__):
                raise CheckFailed("`my_soft_grad` seems to use autograd (backward or torch.autograd.grad): write "
                                  "the gradient from the formula derived above") from None
            raise
        if (isinstance(out, torch.Tensor) and out.dim() == 0) or isinstance(out, (int, float)):
            raise CheckFailed(f"`{name}` returned one number: return the gradient, one value per student logit "
                              f"(shape {tuple(s.shape)}, like student_logits)")
        low = getattr(out, "dtype", None) in (torch.float16, torch.bfloat16, np.float16)  # a correct form, rounded
        _compare(out, _soft_term_grad(s, t, T), name, _soft_grad_mistakes(s, t, T),
                 rtol=1e-2 if low else 1e-4, atol=1e-5 if low else 1e-6)
    _passed("my_soft_grad equals float64 autograd of T² · KL(p_T ‖ q_T) (batch mean) at T = 3 and T = 2")
