"""A student with another vocabulary (labkit.lm.vocabulary): the per-token KL refuses it; the projection of the
teacher onto the student's tokens is checked against sums written by hand."""

from __future__ import annotations

import pytest
import torch

from labkit import lm


def test_a_per_token_kl_between_two_vocabularies_says_what_to_do():
    with pytest.raises(lm.VocabularyMismatchError, match="project_to_vocabulary.*model_text"):
        lm.forward_kl(torch.randn(2, 3, 5), torch.randn(2, 3, 7))
    with pytest.raises(lm.VocabularyMismatchError):
        lm.reverse_kl(torch.randn(2, 3, 5), torch.randn(2, 3, 7))


def test_case_folding_sends_both_cases_to_one_token():
    teacher, student = lm.CharTokenizer(("A", "B", "a", "b", "é")), lm.CharTokenizer(("a", "b"))
    assert lm.vocabulary_map(teacher, student, str.lower).tolist() == [0, 1, 2, 1, 2, 0]
    assert lm.vocabulary_map(student, student).tolist() == [0, 1, 2]


def test_the_projection_adds_the_teachers_probabilities_per_student_token():
    logits = torch.randn(2, 4, 6, dtype=torch.float64)
    mapping = torch.tensor([0, 1, 2, 1, 2, 0])
    p = torch.softmax(logits, -1)
    by_hand = torch.stack([p[..., 0] + p[..., 5], p[..., 1] + p[..., 3], p[..., 2] + p[..., 4]], -1)
    projected = lm.project_to_vocabulary(logits, mapping, 3)
    torch.testing.assert_close(projected.exp().double(), by_hand, rtol=1e-5, atol=1e-7)
    student = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    kl = lm.forward_kl(student, projected)
    expected = (by_hand * (by_hand.log() - torch.log_softmax(student, -1))).sum(-1).mean()
    torch.testing.assert_close(kl.double(), expected, rtol=1e-5, atol=1e-6)
    kl.backward()
    assert student.grad is not None and projected.grad_fn is None


def test_the_identity_map_gives_the_teachers_own_distribution():
    logits = torch.randn(3, 5, 8)
    torch.testing.assert_close(lm.project_to_vocabulary(logits, torch.arange(8), 8), torch.log_softmax(logits, -1))


def test_a_student_token_no_teacher_token_reaches_gets_a_negligible_finite_log_probability():
    projected = lm.project_to_vocabulary(torch.randn(1, 2, 3), torch.tensor([0, 0, 1]), 3)
    assert torch.isfinite(projected).all()
    torch.testing.assert_close(projected[..., 2].exp(), torch.full((1, 2), torch.finfo(torch.float32).tiny),
                               rtol=1e-3, atol=0)


def test_bad_maps_are_refused():
    with pytest.raises(ValueError, match="one student id per teacher token"):
        lm.project_to_vocabulary(torch.randn(1, 2, 4), torch.tensor([0, 1, 1]), 2)
    with pytest.raises(lm.VocabularyMismatchError):
        lm.project_to_vocabulary(torch.randn(1, 2, 3), torch.tensor([0, 1, 5]), 2)
    with pytest.raises(ValueError, match="finite"):
        lm.project_to_vocabulary(torch.tensor([[[0.0, float("nan"), 1.0]]]), torch.tensor([0, 1, 1]), 2)
