"""Decoupled KD and logit standardization (labkit.distillation), checked against the papers' formulas in float64."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from labkit.distillation import dkd_loss, dkd_loss_parts, kl_at_temperature, standardize_logits


def batch(seed: int = 0, n: int = 6, classes: int = 5):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, classes, generator=g, dtype=torch.float64) * 2
    t = torch.randn(n, classes, generator=g, dtype=torch.float64) * 3
    return s, t, torch.randint(0, classes, (n,), generator=g)


def mdistiller_reference(s, t, y, T, alpha, beta):
    """DKD as Zhao et al.'s code writes it: binary probabilities by masking, the target pushed out by -1000."""
    gt = F.one_hot(y, s.shape[1]).double()
    p, q = F.softmax(t / T, 1), F.softmax(s / T, 1)
    pb = torch.stack([(p * gt).sum(1), (p * (1 - gt)).sum(1)], 1)
    qb = torch.stack([(q * gt).sum(1), (q * (1 - gt)).sum(1)], 1)
    tckd = (pb * (pb.log() - qb.log())).sum() * T**2 / len(y)
    p2, log_q2 = F.softmax(t / T - 1000.0 * gt, 1), F.log_softmax(s / T - 1000.0 * gt, 1)
    nckd = F.kl_div(log_q2, p2, reduction="sum") * T**2 / len(y)
    return alpha * tckd + beta * nckd


@pytest.mark.parametrize("T, alpha, beta", [(4.0, 1.0, 8.0), (1.0, 0.5, 2.0), (2.5, 0.0, 1.0)])
def test_dkd_equals_the_papers_code(T, alpha, beta):
    s, t, y = batch()
    torch.testing.assert_close(dkd_loss(s, t, y, T, alpha, beta), mdistiller_reference(s, t, y, T, alpha, beta))


def test_kd_is_tckd_plus_the_teachers_non_target_mass_times_nckd():
    s, t, y = batch(1)
    T = 3.0
    for i in range(len(y)):  # the paper's decomposition, image by image
        parts = dkd_loss_parts(s[i:i + 1], t[i:i + 1], y[i:i + 1], T)
        p_target = F.softmax(t[i] / T, 0)[y[i]]
        kd = T**2 * kl_at_temperature(s[i:i + 1], t[i:i + 1], T)
        torch.testing.assert_close(parts.tckd + (1 - p_target) * parts.nckd, kd)


def test_alpha_one_beta_zero_is_the_target_part_alone():
    s, t, y = batch(2)
    parts = dkd_loss_parts(s, t, y, 4.0, alpha=1.0, beta=0.0)
    torch.testing.assert_close(parts.total, parts.tckd)
    assert parts.nckd > 0


def test_dkd_gradients_match_finite_differences():
    s, t, y = batch(3, n=3, classes=4)
    s.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: dkd_loss(x, t, y, 2.0, 1.0, 8.0), (s,))


def test_a_student_equal_to_its_teacher_has_no_dkd_loss():
    _, t, y = batch(4)
    assert dkd_loss(t.clone(), t, y).abs() < 1e-10


@pytest.mark.parametrize("alpha, beta", [(-1.0, 8.0), (1.0, math.nan), (1.0, math.inf)])
def test_bad_dkd_weights_are_refused_naming_them(alpha, beta):
    s, t, y = batch()
    with pytest.raises(ValueError, match=r"DKD's (alpha|beta)"):
        dkd_loss(s, t, y, 4.0, alpha, beta)


def test_dkd_refuses_labels_out_of_range_and_mismatched_shapes():
    s, t, y = batch()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        dkd_loss(s, t, y + 5)
    with pytest.raises(ValueError, match="same shape"):
        dkd_loss(s, t[:, :4], y)


def test_standardized_logits_ignore_a_shift_and_a_positive_scale():
    s, _, _ = batch(5)
    z = standardize_logits(s)
    torch.testing.assert_close(standardize_logits(3.0 * s + 7.0), z)
    torch.testing.assert_close(z.mean(1), torch.zeros(len(s), dtype=s.dtype), atol=1e-12, rtol=0)
    torch.testing.assert_close(z.std(1), torch.ones(len(s), dtype=s.dtype), atol=1e-6, rtol=0)
