"""labkit.lm.topk: a top-k store of the teacher, its truncation error and the forward KL from it, against dense
computations (the oracle) and labkit.lm.forward_kl at k = vocab."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from labkit import lm
from labkit.lm import topk


def logits(seed: int, shape=(2, 5, 11)) -> torch.Tensor:
    return 3 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("T", [1.0, 2.5])
def test_the_full_store_gives_the_forward_kl(T):
    student, teacher = logits(0), logits(1)
    store = topk.top_k_targets(teacher, 11, T)
    assert torch.allclose(topk.top_k_forward_kl(student, store), lm.forward_kl(student, teacher, T), atol=1e-6)
    assert topk.truncation_kl(store) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_a_truncated_store_is_the_renormalised_teacher(k):
    student, teacher = logits(2), logits(3)
    store = topk.top_k_targets(teacher, k)
    p = F.softmax(teacher, -1)
    kept = torch.zeros_like(p).scatter(-1, p.topk(k, -1).indices, 1.0).bool()
    p_tilde = torch.where(kept, p, 0.0) / torch.where(kept, p, 0.0).sum(-1, keepdim=True)
    log_q = F.log_softmax(student, -1)
    dense = torch.where(kept, p_tilde * (p_tilde.clamp_min(1e-30).log() - log_q), 0.0).sum(-1).mean()
    assert torch.allclose(topk.top_k_forward_kl(student, store), dense, atol=1e-6)
    mass = torch.where(kept, p, 0.0).sum(-1)
    assert torch.allclose(topk.kept_mass(store), mass, atol=1e-6)
    kl_tilde_p = torch.where(kept, p_tilde * (p_tilde.clamp_min(1e-30).log() - p.log()), 0.0).sum(-1).mean()
    assert topk.truncation_kl(store) == pytest.approx(kl_tilde_p.item(), abs=1e-6)
    assert topk.truncation_kl(store) == pytest.approx(-mass.log().mean().item(), abs=1e-6)


def test_the_student_learns_through_the_store():
    student = logits(4).requires_grad_()
    topk.top_k_forward_kl(student, topk.top_k_targets(logits(5), 3)).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_bad_stores_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match="between 1 and"):
        topk.top_k_targets(logits(0), 0)
    with pytest.raises(ValueError, match="between 1 and"):
        topk.top_k_targets(logits(0), 12)
    with pytest.raises(ValueError, match=r"\(batch, time, vocab\)"):
        topk.top_k_targets(torch.randn(4, 11), 2)
    with pytest.raises(ValueError, match="do not fit"):
        topk.top_k_forward_kl(logits(0, (2, 4, 11)), topk.top_k_targets(logits(1), 2))
    with pytest.raises(ValueError):
        topk.top_k_targets(torch.full((1, 2, 5), math.nan), 2)


def test_bytes_per_token_counts_ids_and_half_precision_values():
    assert topk.bytes_per_token(20, 100) == 20 * (2 + 2)
    assert topk.bytes_per_token(100, 100) == 200, "the full distribution needs no ids"
    assert topk.bytes_per_token(20, 150_000) == 20 * (4 + 2), "ids above 65,535 take 4 bytes"
