"""Tests for labkit.distillation: the math of 02_temperature and 03_kl_divergence, checked against oracles.

The style the rest of the suite follows: every formula is compared with an independent implementation
(PyTorch's own ``F.kl_div`` / ``F.cross_entropy`` and scipy's ``rel_entr``), on random inputs drawn by
hypothesis, and every derivative claimed in the notebooks is checked with autograd.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import log_softmax as scipy_log_softmax
from scipy.special import rel_entr
from scipy.stats import entropy as scipy_entropy

from labkit.distillation import distillation_loss, distillation_loss_parts, kl_divergence, soft_targets
from labkit.distillation import entropy as labkit_entropy
from labkit.distillation import kl_at_temperature
from labkit.validate import LooksLikeProbabilitiesWarning, NonFiniteLogitsError

# Small enough that the whole file runs in a few seconds on a laptop CPU.
PROPERTY = settings(max_examples=25, deadline=None)

temperatures = st.floats(0.25, 20.0)
alphas = st.floats(0.0, 1.0)


@st.composite
def logits_and_labels(draw: st.DrawFn, max_abs: float = 30.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Student logits, teacher logits (batch x classes, float64) and integer labels of the same batch."""
    batch, classes = draw(st.integers(1, 6)), draw(st.integers(2, 8))
    finite = st.floats(-max_abs, max_abs, allow_nan=False, allow_infinity=False)
    student = draw(hnp.arrays(np.float64, (batch, classes), elements=finite))
    teacher = draw(hnp.arrays(np.float64, (batch, classes), elements=finite))
    labels = draw(hnp.arrays(np.int64, (batch,), elements=st.integers(0, classes - 1)))
    return student, teacher, labels


def torch_kl_oracle(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) with batchmean, as PyTorch computes it (note the argument order: input is log q)."""
    return F.kl_div(q.log(), p.log(), reduction="batchmean", log_target=True)


def torch_distillation_oracle(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, T: float, alpha: float) -> torch.Tensor:
    """Hinton et al.'s loss written with PyTorch's built-ins, the formula the notebooks state."""
    soft = F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), reduction="batchmean", log_target=True)
    return alpha * T**2 * soft + (1 - alpha) * F.cross_entropy(s, y)


def scipy_distillation_oracle(s: np.ndarray, t: np.ndarray, y: np.ndarray, T: float, alpha: float) -> float:
    """The same loss in numpy/scipy, sharing no code with PyTorch."""
    p, q = np.exp(scipy_log_softmax(t / T, axis=1)), np.exp(scipy_log_softmax(s / T, axis=1))
    kl = rel_entr(p, q).sum(axis=1).mean()
    ce = -scipy_log_softmax(s, axis=1)[np.arange(len(y)), y].mean()
    return alpha * T**2 * kl + (1 - alpha) * ce


def probabilities(logits: np.ndarray) -> torch.Tensor:
    return torch.softmax(torch.from_numpy(logits), dim=-1)


def entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.log()).sum(dim=-1)


def student_grad(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, T: float, alpha: float) -> torch.Tensor:
    """d loss / d student logits, by autograd."""
    s = student.clone().requires_grad_()
    distillation_loss(s, teacher, labels, T=T, alpha=alpha).backward()
    return s.grad


def zero_mean_logits(batch: int, classes: int, seed: int) -> torch.Tensor:
    logits = torch.randn(batch, classes, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 3
    return logits - logits.mean(dim=1, keepdim=True)


# --- soft_targets (02_temperature) -------------------------------------------------------------------------


@PROPERTY
@given(logits_and_labels(), temperatures)
def test_soft_targets_rows_sum_to_one(pair, T):
    p = soft_targets(torch.from_numpy(pair[0]), T)
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(dim=1), torch.ones(p.shape[0], dtype=p.dtype))


@PROPERTY
@given(logits_and_labels(), temperatures)
def test_soft_targets_is_scipy_softmax_of_scaled_logits(pair, T):
    expected = np.exp(scipy_log_softmax(pair[0] / T, axis=1))
    torch.testing.assert_close(soft_targets(torch.from_numpy(pair[0]), T), torch.from_numpy(expected))


@PROPERTY
@given(logits_and_labels(), temperatures, st.floats(-1e3, 1e3))
def test_soft_targets_ignore_a_shift_of_all_logits(pair, T, shift):
    logits = torch.from_numpy(pair[0])
    torch.testing.assert_close(soft_targets(logits + shift, T), soft_targets(logits, T))


def test_high_temperature_gives_uniform():
    logits = torch.tensor([[5.0, 1.0, -2.0, 0.5]])
    torch.testing.assert_close(soft_targets(logits, T=1e6), torch.full((1, 4), 0.25))


def test_low_temperature_gives_one_hot():
    logits = torch.tensor([[0.3, 2.0, 1.9, -4.0], [1.0, -1.0, 0.0, 0.99]])
    expected = F.one_hot(logits.argmax(dim=1), 4).float()
    torch.testing.assert_close(soft_targets(logits, T=1e-4), expected)


def test_entropy_grows_with_temperature():
    logits = torch.tensor([6.0, 4.0, 1.5, 1.0, 0.0, -2.0])
    entropies = [entropy(soft_targets(logits, T)).item() for T in (0.5, 1, 2, 5, 20)]
    assert entropies == sorted(entropies) and len(set(entropies)) == len(entropies)
    assert entropies[-1] < math.log(len(logits))


def test_soft_targets_keep_float64_and_promote_half():
    assert soft_targets(torch.zeros(2, 3, dtype=torch.float64)).dtype == torch.float64
    assert soft_targets(torch.zeros(2, 3, dtype=torch.float16)).dtype == torch.float32


# --- kl_divergence (03_kl_divergence) -----------------------------------------------------------------------


@PROPERTY
@given(logits_and_labels())
def test_kl_matches_torch_and_scipy(pair):
    p, q = probabilities(pair[1]), probabilities(pair[0])
    kl = kl_divergence(p, q)
    torch.testing.assert_close(kl, torch_kl_oracle(p, q))
    assert kl.item() == pytest.approx(rel_entr(p.numpy(), q.numpy()).sum(axis=1).mean(), rel=1e-9, abs=1e-12)


@PROPERTY
@given(logits_and_labels())
def test_kl_of_one_distribution_is_its_row_sum(pair):
    p, q = probabilities(pair[1][0]), probabilities(pair[0][0])
    assert kl_divergence(p, q).dim() == 0
    assert kl_divergence(p, q).item() == pytest.approx(rel_entr(p.numpy(), q.numpy()).sum(), rel=1e-9, abs=1e-12)


def test_kl_averages_over_the_batch_not_over_classes():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=torch.float64)
    q = torch.tensor([[0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    per_row = torch.stack([kl_divergence(p[i], q[i]) for i in range(2)])
    torch.testing.assert_close(kl_divergence(p, q), per_row.mean())


@PROPERTY
@given(logits_and_labels())
def test_kl_is_not_negative(pair):
    # Rounding can leave a KL of ~1e-16 below zero when p and q nearly coincide.
    assert kl_divergence(probabilities(pair[1]), probabilities(pair[0])).item() >= -1e-12


@PROPERTY
@given(logits_and_labels())
def test_kl_of_a_distribution_with_itself_is_zero(pair):
    p = probabilities(pair[1])
    assert kl_divergence(p, p).item() == 0.0


def test_zero_probabilities_in_p_count_as_zero():
    p = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    kl = kl_divergence(p, q)
    assert torch.isfinite(kl)
    assert kl.item() == pytest.approx(rel_entr(p.numpy(), q.numpy()).sum()) == pytest.approx(math.log(2))


def test_kl_is_infinite_where_q_misses_part_of_p():
    p = torch.tensor([0.5, 0.5, 0.0])
    q = torch.tensor([1.0, 0.0, 0.0])
    assert kl_divergence(p, q).item() == math.inf == rel_entr(p.numpy(), q.numpy()).sum()


def test_kl_gradients_are_finite_when_p_has_zeros():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8]], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([[0.25, 0.25, 0.5], [0.3, 0.3, 0.4]], dtype=torch.float64, requires_grad=True)
    kl_divergence(p, q).backward()
    assert torch.isfinite(p.grad).all() and torch.isfinite(q.grad).all()
    support = p.detach() > 0
    # On p's support: d/dp = (log(p/q) + 1) / batch and d/dq = -(p/q) / batch; off it nothing flows.
    expected_dp = torch.where(support, (p.detach() / q.detach()).log() + 1, torch.zeros_like(p)) / 2
    expected_dq = torch.where(support, -p.detach() / q.detach(), torch.zeros_like(q)) / 2
    torch.testing.assert_close(p.grad, expected_dp)
    torch.testing.assert_close(q.grad, expected_dq)


# --- distillation_loss (03_kl_divergence) ------------------------------------------------------------------


@PROPERTY
@given(logits_and_labels(), temperatures, alphas)
def test_distillation_loss_matches_torch_builtins(pair, T, alpha):
    s, t, y = (torch.from_numpy(a) for a in pair)
    torch.testing.assert_close(distillation_loss(s, t, y, T, alpha), torch_distillation_oracle(s, t, y, T, alpha))


@PROPERTY
@given(logits_and_labels(), temperatures, alphas)
def test_distillation_loss_matches_scipy(pair, T, alpha):
    s, t, y = (torch.from_numpy(a) for a in pair)
    expected = scipy_distillation_oracle(*pair, T, alpha)
    assert distillation_loss(s, t, y, T, alpha).item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


@PROPERTY
@given(logits_and_labels(), temperatures, alphas)
def test_loss_parts_are_the_weighted_soft_and_hard_terms(pair, T, alpha):
    s, t, y = (torch.from_numpy(a) for a in pair)
    total, soft, hard = distillation_loss_parts(s, t, y, T, alpha)
    kl = kl_divergence(soft_targets(t, T), soft_targets(s, T))
    torch.testing.assert_close(soft, alpha * T**2 * kl)
    torch.testing.assert_close(hard, (1 - alpha) * F.cross_entropy(s, y))
    torch.testing.assert_close(total, soft + hard)


def test_alpha_zero_is_plain_cross_entropy():
    s, t = zero_mean_logits(4, 5, seed=1), zero_mean_logits(4, 5, seed=2)
    y = torch.tensor([0, 4, 2, 2])
    torch.testing.assert_close(distillation_loss(s, t, y, T=3.0, alpha=0.0), F.cross_entropy(s, y))


def test_teacher_receives_no_gradient():
    s = zero_mean_logits(3, 4, seed=3).requires_grad_()
    t = zero_mean_logits(3, 4, seed=4).requires_grad_()
    distillation_loss(s, t, torch.tensor([0, 1, 2])).backward()
    assert t.grad is None and s.grad is not None


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 10.0])
def test_hinton_gradient_of_the_soft_term(T):
    """d KL_T / d z = (q - p) / T per sample; with T**2 and batchmean the loss gradient is T (q - p) / batch."""
    s, t = zero_mean_logits(5, 7, seed=5), zero_mean_logits(5, 7, seed=6)
    p, q = soft_targets(t, T), soft_targets(s, T)
    for i in range(len(s)):
        z = s[i].clone().requires_grad_()
        kl_divergence(p[i], soft_targets(z, T)).backward()
        torch.testing.assert_close(z.grad, (q[i] - p[i]) / T)

    labels = torch.zeros(5, dtype=torch.long)  # irrelevant: alpha = 1 switches the hard term off
    torch.testing.assert_close(student_grad(s, t, labels, T, alpha=1.0), T * (q - p) / len(s))


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_gradient_of_the_whole_loss(alpha):
    T, s, t = 3.0, zero_mean_logits(4, 6, seed=7), zero_mean_logits(4, 6, seed=8)
    y = torch.tensor([5, 0, 3, 3])
    soft_grad = T * (soft_targets(s, T) - soft_targets(t, T))
    hard_grad = torch.softmax(s, dim=1) - F.one_hot(y, 6)
    expected = (alpha * soft_grad + (1 - alpha) * hard_grad) / len(s)
    torch.testing.assert_close(student_grad(s, t, y, T, alpha), expected)


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (4.0, 0.9), (0.5, 0.1)])
def test_gradcheck_in_float64(T, alpha):
    s = zero_mean_logits(3, 5, seed=9).requires_grad_()
    t, y = zero_mean_logits(3, 5, seed=10), torch.tensor([1, 4, 0])
    assert torch.autograd.gradcheck(lambda z: distillation_loss(z, t, y, T, alpha), (s,))


def test_high_temperature_limit_is_logit_matching():
    """For zero-mean logits z, v and large T: (q - p) / T -> (z - v) / (N T**2), so T**2 KL has gradient (z - v) / N.

    The next term of the expansion is O(1/T), so ten times the temperature gives ten times less error.
    """
    z, v = zero_mean_logits(1, 10, seed=11), zero_mean_logits(1, 10, seed=12)
    labels, logit_matching = torch.zeros(1, dtype=torch.long), (z - v) / z.shape[1]

    def relative_error(T: float) -> float:
        grad = student_grad(z, v, labels, T, alpha=1.0)  # batch of one: the per-sample gradient of T**2 KL
        return ((grad - logit_matching).norm() / logit_matching.norm()).item()

    assert relative_error(100.0) < 0.05
    assert 8 < relative_error(10.0) / relative_error(100.0) < 12


def test_t_squared_keeps_the_soft_gradient_the_same_size():
    s, t, y = zero_mean_logits(8, 10, seed=13), zero_mean_logits(8, 10, seed=14), torch.zeros(8, dtype=torch.long)
    norms = [student_grad(s, t, y, T, alpha=1.0).norm().item() for T in (2.0, 20.0)]
    # Without the T**2 factor the gradient at T = 20 would be ~100x smaller than at T = 2.
    assert 0.5 < norms[1] / norms[0] < 2


# --- numerical robustness ------------------------------------------------------------------------------


def assert_finite_loss_and_grad(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, T: float, alpha: float = 0.5) -> None:
    s = s.detach().clone().requires_grad_()
    loss = distillation_loss(s, t, y, T, alpha)
    loss.backward()
    assert torch.isfinite(loss), f"loss {loss} at T={T}"
    assert torch.isfinite(s.grad).all(), f"gradient {s.grad} at T={T}"


@PROPERTY
@given(logits_and_labels(max_abs=1e4), st.floats(0.05, 100.0), alphas)
def test_finite_for_extreme_temperatures_and_logits(pair, T, alpha):
    s, t, y = (torch.from_numpy(a) for a in pair)
    assert_finite_loss_and_grad(s.float(), t.float(), y, T, alpha)


@pytest.mark.parametrize("T", [0.05, 1.0, 100.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_finite_at_the_edges(T, dtype):
    s = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=dtype)
    y = torch.tensor([1, 0])
    assert_finite_loss_and_grad(s, -s, y, T)
    assert distillation_loss(s, -s, y, T).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits_give_a_float32_loss_close_to_full_precision(dtype):
    s, t, y = zero_mean_logits(4, 10, seed=15).float(), zero_mean_logits(4, 10, seed=16).float(), torch.tensor([0, 1, 2, 3])
    half = distillation_loss(s.to(dtype), t.to(dtype), y, T=4.0)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, distillation_loss(s, t, y, T=4.0), rtol=0.02, atol=0.02)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_keeps_the_loss_in_float32(dtype):
    torch.manual_seed(0)
    layer, features, y = torch.nn.Linear(16, 10), torch.randn(4, 16), torch.tensor([0, 3, 9, 9])
    teacher = torch.randn(4, 10)
    try:
        with torch.autocast("cpu", dtype=dtype):
            logits = layer(features)
            loss = distillation_loss(logits, teacher, y, T=4.0)
    except RuntimeError as err:  # older CPU builds only autocast to bfloat16
        pytest.skip(f"CPU autocast to {dtype} is not supported here: {err}")
    if logits.dtype != dtype:
        pytest.skip(f"CPU autocast did not run the layer in {dtype}")
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(layer.weight.grad).all()
    torch.testing.assert_close(loss, distillation_loss(layer(features), teacher, y, T=4.0), rtol=0.02, atol=0.02)


# --- every bad input is a ValueError ---------------------------------------------------------------------

S, Y = torch.zeros(3, 4), torch.tensor([0, 1, 3])


@pytest.mark.parametrize("T", [math.nan, math.inf, -math.inf, 0.0, -1.0])
def test_bad_temperature(T):
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(S, S, Y, T=T)
    with pytest.raises(ValueError, match="temperature"):
        soft_targets(S, T)


@pytest.mark.parametrize("alpha", [math.nan, -0.1, 1.1, math.inf])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(S, S, Y, alpha=alpha)


@pytest.mark.parametrize(
    "student,teacher,labels,message",
    [
        (S, torch.zeros(3, 5), Y, "same shape"),
        (torch.zeros(4, 4), S, Y, "same shape"),
        (torch.zeros(4), torch.zeros(4), Y, "2-D"),
        (torch.zeros(3, 4, 1), torch.zeros(3, 4, 1), Y, "2-D"),
        (torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), "empty"),
        (torch.zeros(3, 1), torch.zeros(3, 1), torch.zeros(3, dtype=torch.long), "2 classes"),
        (S.long(), S.long(), Y, "floating"),
        (S.tolist(), S, Y, "torch.Tensor"),
        (S, S, torch.tensor([0, -1, 2]), r"\[0, 3\]"),
        (S, S, torch.tensor([0, 4, 2]), r"\[0, 3\]"),
        (S, S, Y[:, None], "shape"),
        (S, S, torch.tensor([0, 1]), "shape"),
        (S, S, Y.float(), "integer"),
    ],
    ids=[
        "classes-differ", "batches-differ", "1-D", "3-D", "empty-batch", "one-class", "integer-logits",
        "not-a-tensor", "negative-label", "label-too-large", "labels-2-D", "labels-too-few", "float-labels",
    ],
)
def test_bad_logits_and_labels(student, teacher, labels, message):
    with pytest.raises(ValueError, match=message):
        distillation_loss(student, teacher, labels)


@pytest.mark.parametrize(
    "p,q",
    [
        (torch.full((2, 3), 1 / 3), torch.full((2, 4), 1 / 4)),
        (torch.tensor([0.5, 0.5]), torch.tensor([1.5, -0.5])),
        (torch.tensor([math.nan, 1.0]), torch.tensor([0.5, 0.5])),
        (torch.tensor([0.5, 0.5]), torch.tensor([math.nan, 1.0])),
        (torch.tensor(1.0), torch.tensor(1.0)),
        (torch.zeros(0), torch.zeros(0)),
        ([0.5, 0.5], torch.tensor([0.5, 0.5])),
    ],
    ids=["shape-mismatch", "negative", "nan-in-p", "nan-in-q", "0-D", "empty", "not-a-tensor"],
)
def test_bad_kl_inputs(p, q):
    with pytest.raises(ValueError):
        kl_divergence(p, q)


@pytest.mark.parametrize("logits", [torch.tensor(1.0), torch.zeros(3, 0), [1.0, 2.0]], ids=["0-D", "no-classes", "list"])
def test_bad_soft_target_inputs(logits):
    with pytest.raises(ValueError, match="logits"):
        soft_targets(logits)


# --- masked (-inf) teacher classes and non-finite logits ----------------------------------------------------


def masked_pair(seed: int = 20) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 student logits, teacher logits with some classes masked to -inf (never a whole row), labels."""
    s, t = zero_mean_logits(4, 6, seed=seed), zero_mean_logits(4, 6, seed=seed + 1)
    t[0, 2] = t[1, [0, 5]] = t[3, 1:] = -math.inf  # row 3 keeps one class only: p is one-hot there
    return s, t, torch.tensor([0, 1, 2, 3])


def support_kl(t: torch.Tensor, s: torch.Tensor, T: float) -> float:
    """Batch-mean KL(softmax(t/T) || softmax(s/T)) in numpy float64, summed over the teacher's support only."""
    p, log_q = np.exp(scipy_log_softmax(t.numpy() / T, axis=1)), scipy_log_softmax(s.numpy() / T, axis=1)
    assert ((p > 0) == np.isfinite(t.numpy())).all()
    return rel_entr(p, np.exp(log_q)).sum(axis=1).mean()


@pytest.mark.parametrize("T", [0.5, 1.0, 4.0])
def test_masked_teacher_classes_count_zero(T):
    s, t, y = masked_pair()
    total, soft, hard = distillation_loss_parts(s, t, y, T=T, alpha=0.7)
    assert soft.item() == pytest.approx(0.7 * T**2 * support_kl(t, s, T), rel=1e-9)
    torch.testing.assert_close(soft, 0.7 * T**2 * kl_divergence(soft_targets(t, T), soft_targets(s, T)))
    torch.testing.assert_close(hard, 0.3 * F.cross_entropy(s, y))


@pytest.mark.parametrize("T", [0.5, 1.0, 4.0])
def test_masked_teacher_classes_give_the_hinton_gradient(T):
    s, t, y = masked_pair()
    grad = student_grad(s, t, y, T, alpha=1.0)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad, T * (soft_targets(s, T) - soft_targets(t, T)) / len(s))


def test_masked_teacher_classes_in_float32_and_under_autocast():
    s, t, y = (a.float() if a.is_floating_point() else a for a in masked_pair())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = distillation_loss(s, t, y, T=2.0)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(distillation_loss(s.double(), t.double(), y, T=2.0).item(), rel=1e-5)


@pytest.mark.parametrize("name", ["student_logits", "teacher_logits"])
@pytest.mark.parametrize("value,kind", [(math.nan, "NaN"), (math.inf, r"\+inf")])
def test_nan_and_positive_infinity_are_rejected(name, value, kind):
    s, t, y = masked_pair()
    (s if name == "student_logits" else t)[1, 3] = value
    with pytest.raises(NonFiniteLogitsError, match=f"{name} contains {kind}"):  # a ValueError too
        distillation_loss(s, t, y)


def test_non_finite_logits_are_value_errors():
    assert issubclass(NonFiniteLogitsError, ValueError)


def test_student_minus_infinity_is_rejected():
    s, t, y = masked_pair()
    s[2, 0] = -math.inf
    with pytest.raises(ValueError, match="student_logits contains -inf"):
        distillation_loss(s, t, y)


def test_a_teacher_row_masked_everywhere_is_rejected():
    s, t, y = masked_pair()
    t[2] = -math.inf
    with pytest.raises(ValueError, match="teacher_logits.*every class"):
        distillation_loss(s, t, y)


# --- probabilities where logits belong, distributions that do not sum to 1 ----------------------------------


def test_probabilities_passed_as_logits_warn():
    s, t, y = zero_mean_logits(8, 10, seed=30), zero_mean_logits(8, 10, seed=31), torch.arange(8)
    with pytest.warns(LooksLikeProbabilitiesWarning, match="raw logits") as caught:
        distillation_loss(torch.softmax(s, 1), torch.softmax(t, 1), y)
    assert caught[0].filename == __file__  # attributed to the caller's line, not to labkit
    with pytest.warns(LooksLikeProbabilitiesWarning, match="teacher_logits"):
        distillation_loss(s, torch.softmax(t.float(), 1).half(), y)
    with pytest.warns(LooksLikeProbabilitiesWarning, match="student_logits"):
        kl_at_temperature(torch.softmax(s, 1), t, 2.0)


def test_real_logits_do_not_warn():
    s, t, y = zero_mean_logits(8, 10, seed=30), zero_mean_logits(8, 10, seed=31), torch.arange(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distillation_loss(s, t, y)
        distillation_loss(torch.softmax(s, 1) + 0.1, t, y)  # in [0, 1] maybe, but the rows sum to 2
        kl_at_temperature(s, t, 2.0)


def test_kl_rows_must_sum_to_one():
    logits = zero_mean_logits(3, 4, seed=32)
    p = torch.softmax(logits, dim=-1)
    with pytest.raises(ValueError, match=r"sum to 1.*softmax.*last dimension"):
        kl_divergence(torch.softmax(logits, dim=0), p)  # softmax over the batch: columns sum to 1, rows do not
    with pytest.raises(ValueError, match="q.*sum to 1"):
        kl_divergence(p, 2 * p)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_kl_accepts_rounded_distributions_of_every_precision(dtype):
    logits = torch.randn(64, 100, generator=torch.Generator().manual_seed(33))  # no probability rounds to 0
    p, q = (torch.softmax(z, dim=-1).to(dtype) for z in (logits, logits.flip(0)))
    assert torch.isfinite(kl_divergence(p, q))
    assert torch.isfinite(labkit_entropy(p)).all()


def test_kl_gradcheck_in_float64():
    p, q = (torch.softmax(zero_mean_logits(3, 5, seed) / 3, dim=-1).requires_grad_() for seed in (34, 35))
    assert torch.autograd.gradcheck(kl_divergence, (p, q))


# --- kl_at_temperature and entropy: the course's math in one place ------------------------------------------


@PROPERTY
@given(logits_and_labels(), temperatures)
def test_kl_at_temperature_is_the_kl_of_the_soft_targets(pair, T):
    s, t = torch.from_numpy(pair[0]), torch.from_numpy(pair[1])
    kl = kl_at_temperature(s, t, T)
    torch.testing.assert_close(kl, F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), reduction="batchmean",
                                            log_target=True))
    torch.testing.assert_close(kl, kl_divergence(soft_targets(t, T), soft_targets(s, T)))
    assert kl.item() == pytest.approx(support_kl(t, s, T), rel=1e-9, abs=1e-12)


def test_kl_at_temperature_handles_masks_checks_inputs_and_keeps_gradients():
    s, t, _ = masked_pair()
    assert kl_at_temperature(s, t, 2.0).item() == pytest.approx(support_kl(t, s, 2.0), rel=1e-9)
    z, v = s.clone().requires_grad_(), t.clone().requires_grad_()
    kl_at_temperature(z, v, 2.0).backward()
    assert torch.isfinite(z.grad).all() and torch.isfinite(v.grad).all()  # the teacher is not detached here
    assert kl_at_temperature(s.half(), t.half(), 2.0).dtype == torch.float32
    with pytest.raises(ValueError, match="temperature"):
        kl_at_temperature(s, t, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        kl_at_temperature(s, t[:, :3], 1.0)
    with pytest.raises(ValueError, match="student_logits contains NaN"):
        kl_at_temperature(torch.full_like(s, math.nan), t, 1.0)


@PROPERTY
@given(logits_and_labels(), temperatures)
def test_entropy_matches_scipy_in_bits_and_nats(pair, T):
    p = soft_targets(torch.from_numpy(pair[1]), T)
    for base in (2, math.e):
        np.testing.assert_allclose(labkit_entropy(p, base=base).numpy(), scipy_entropy(p.numpy(), base=base, axis=1),
                                   rtol=1e-9, atol=1e-12)


def test_entropy_limits_zeros_and_gradient():
    assert labkit_entropy(torch.full((10,), 0.1)).item() == pytest.approx(math.log2(10))
    assert labkit_entropy(torch.eye(10)[3]).item() == 0.0  # 0 log 0 counts as 0
    p = torch.tensor([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5]], dtype=torch.float64, requires_grad=True)
    labkit_entropy(p).sum().backward()
    assert torch.isfinite(p.grad).all()
    with pytest.raises(ValueError, match="sum to 1"):
        labkit_entropy(torch.tensor([0.5, 0.2]))
    with pytest.raises(ValueError, match="probabilities"):
        labkit_entropy(torch.tensor([1.5, -0.5]))
