"""benchmarks/exercise_answers.py's two tricks: the loss without T² as a reparametrised run, the inconsistent teacher."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from exercise_answers import CleanViewTeacher, without_t_squared  # noqa: E402

from labkit.distillation import distillation_loss  # noqa: E402


@settings(max_examples=30, deadline=None)
@given(T=st.floats(0.5, 16), alpha=st.floats(0.01, 1.0), seed=st.integers(0, 1000))
def test_reparametrised_loss_equals_the_loss_without_t_squared(T, alpha, seed):
    g = torch.Generator().manual_seed(seed)
    student, teacher = torch.randn(8, 10, generator=g, dtype=torch.float64), torch.randn(8, 10, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 10, (8,), generator=g)
    kl = F.kl_div(F.log_softmax(student / T, 1), F.log_softmax(teacher / T, 1), reduction="batchmean", log_target=True)
    wanted = alpha * kl + (1 - alpha) * F.cross_entropy(student, labels)
    alpha_prime, lr_scale = without_t_squared(T, alpha)
    assert 0 < alpha_prime <= 1
    got = lr_scale * distillation_loss(student, teacher, labels, T=T, alpha=alpha_prime)
    torch.testing.assert_close(got, wanted)


def test_without_t_squared_rejects_alpha_zero():
    with pytest.raises(ValueError, match="alpha"):
        without_t_squared(4.0, 0.0)


def test_clean_view_teacher_answers_for_the_clean_batch_once():
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    teacher = CleanViewTeacher(inner)
    clean = torch.rand(4, 3, 2, 2)
    blended = teacher.blend(clean, torch.Generator().manual_seed(0))
    assert not torch.equal(blended, clean)
    with torch.no_grad():
        torch.testing.assert_close(teacher(blended), inner(clean))  # the teacher saw the clean images
        torch.testing.assert_close(teacher(blended), inner(blended))  # later calls see their own input
