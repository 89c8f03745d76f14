"""Fault kinds of the math: labkit.distillation, labkit.lm (losses, top-k stores, vocabularies), labkit.stats,
labkit.settings and labkit.validate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labkit import lm, settings, stats, validate
from labkit.distillation import distillation_loss, distillation_loss_parts, entropy, kl_divergence, soft_targets
from labkit.lm import topk
from labkit.validate import LooksLikeProbabilitiesWarning, NonFiniteLogitsError

fault = pytest.mark.fault


def logits(*shape: int, seed: int = 0) -> torch.Tensor:
    """float64 logits of the given shape, spread like a real model's (std 3)."""
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 3


def reference_kl(t: torch.Tensor, s: torch.Tensor, T: float = 1.0) -> float:
    """Mean over rows of KL(softmax(t / T) || softmax(s / T)) in float64, 0 log 0 = 0 (a -inf teacher logit adds 0)."""
    t, s = t.double().reshape(-1, t.shape[-1]) / T, s.double().reshape(-1, s.shape[-1]) / T
    log_p, log_q = t.log_softmax(-1), s.log_softmax(-1)
    terms = torch.where(log_p.isneginf(), torch.zeros_like(log_p), log_p.exp() * (log_p - log_q))
    return terms.sum(-1).mean().item()


def reference_loss(s, t, y, T, alpha, labelled=None) -> tuple[float, float]:
    """(soft, hard) of Hinton's loss in float64; the hard term sums over labelled rows and divides by the batch."""
    labelled = torch.ones(len(s), dtype=torch.bool) if labelled is None else labelled
    ce = F.cross_entropy(s.double()[labelled], y[labelled].long(), reduction="sum").item() / len(s)
    return alpha * T**2 * reference_kl(t, s, T), (1 - alpha) * ce


# --- labkit.distillation ------------------------------------------------------------------------------------------


@fault("labkit.distillation", "handled")
def test_temperature_given_as_a_0d_tensor_is_taken_as_its_value():
    s, t, y = logits(4, 5, seed=1), logits(4, 5, seed=2), torch.tensor([0, 1, 2, 4])
    loss = distillation_loss(s, t, y, T=torch.tensor(3.0), alpha=0.4)
    assert loss.item() == pytest.approx(sum(reference_loss(s, t, y, 3.0, 0.4)), rel=1e-9)


@fault("labkit.distillation", "error")
def test_a_per_example_temperature_tensor_is_refused_naming_T():
    with pytest.raises(ValueError, match=r"temperature T.*\(3,\)"):
        soft_targets(logits(3, 4), T=torch.tensor([1.0, 2.0, 4.0]))


@fault("labkit.distillation", "error")
def test_a_temperature_so_small_that_logits_over_T_overflow_is_refused():
    x = torch.tensor([[1.0, 2.0, 0.5], [3.0, -1.0, 0.0]])  # logits / 1e-40 overflow float32: NaN, silently, before
    with pytest.raises(ValueError, match=r"T = 1e-40 is below 1e-06.*overflow"):
        soft_targets(x, 1e-40)
    with pytest.raises(ValueError, match=r"T = 1e-40"):
        distillation_loss(x, x.flip(1), torch.tensor([0, 1]), T=1e-40)


@fault("labkit.distillation", "error")
def test_one_hot_labels_are_refused_naming_the_shape_wanted():
    s, y = logits(3, 4), torch.tensor([0, 1, 3])
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\), got \(3, 4\)"):
        distillation_loss(s, s, F.one_hot(y, 4))


@fault("labkit.distillation", "handled")
def test_labels_of_unlabelled_images_are_ignored_under_the_mask():
    s, t = logits(4, 5, seed=3), logits(4, 5, seed=4)
    labelled = torch.tensor([True, False, True, False])
    y = torch.tensor([2, -1, 4, 99])  # garbage where there is no label: it must not be read
    total, soft, hard = distillation_loss_parts(s, t, y, T=2.0, alpha=0.3, labelled=labelled)
    ref_soft, ref_hard = reference_loss(s, t, y, 2.0, 0.3, labelled)
    assert (soft.item(), hard.item()) == pytest.approx((ref_soft, ref_hard), rel=1e-9)
    assert total.item() == pytest.approx(ref_soft + ref_hard, rel=1e-9)


@fault("labkit.distillation", "handled")
def test_a_batch_with_no_labelled_image_keeps_the_soft_term_only():
    s, t = logits(3, 4, seed=5).requires_grad_(), logits(3, 4, seed=6)
    total, soft, hard = distillation_loss_parts(s, t, torch.tensor([-5, 7, 100]), T=4.0, alpha=0.5,
                                                labelled=torch.zeros(3, dtype=torch.bool))
    assert hard.item() == 0.0
    assert total.item() == pytest.approx(0.5 * 16 * reference_kl(t, s, 4.0), rel=1e-9)
    total.backward()
    assert torch.isfinite(s.grad).all()


@fault("labkit.distillation", "handled")
def test_a_float16_student_with_a_float64_teacher_gives_a_float32_loss():
    s16, t64, y = logits(4, 6, seed=7).half(), logits(4, 6, seed=8), torch.tensor([0, 5, 2, 1])
    loss = distillation_loss(s16, t64, y, T=2.0, alpha=0.7)
    assert loss.dtype == torch.float32
    # the reference takes the student as it was given (rounded to float16), everything else in float64
    assert loss.item() == pytest.approx(sum(reference_loss(s16.double(), t64, y, 2.0, 0.7)), rel=1e-5)


@fault("labkit.distillation", "handled")
def test_kl_of_a_float64_and_a_float32_distribution_is_float64():
    p, q = torch.softmax(logits(3, 5, seed=9), -1), torch.softmax(logits(3, 5, seed=10), -1).float()
    got = kl_divergence(p, q)
    assert got.dtype == torch.float64
    expected = (p * (p.log() - q.double().log())).sum(-1).mean().item()
    assert got.item() == pytest.approx(expected, rel=1e-6)  # log q is taken in q's float32


@fault("labkit.distillation", "error")
def test_an_integer_one_hot_distribution_is_refused_naming_its_dtype():
    one_hot = F.one_hot(torch.tensor([0, 1, 3]), 4)
    with pytest.raises(ValueError, match=r"p must be a floating.*torch\.int64"):
        entropy(one_hot)
    with pytest.raises(ValueError, match=r"p must be a floating.*torch\.int64"):
        kl_divergence(one_hot, torch.full((3, 4), 0.25))


@fault("labkit.distillation", "error")
def test_an_entropy_base_that_is_no_logarithm_base_is_refused():
    p = torch.softmax(logits(2, 4), -1)
    for base in (1, 0, -2):
        with pytest.raises(ValueError, match=rf"base.*got {base}"):
            entropy(p, base=base)


# --- labkit.lm: token-level losses --------------------------------------------------------------------------------


def masked_teacher() -> torch.Tensor:
    t = logits(2, 3, 5, seed=11)
    t[0, 1, 2] = t[1, 0, [0, 4]] = -math.inf
    return t


@fault("labkit.lm", "handled")
def test_forward_kl_with_masked_teacher_tokens_counts_them_zero():
    s, t = logits(2, 3, 5, seed=12), masked_teacher()
    assert lm.forward_kl(s, t, T=2.0).item() == pytest.approx(reference_kl(t, s, 2.0), rel=1e-9)


@fault("labkit.lm", "error")
def test_reverse_kl_against_a_masked_teacher_token_is_refused():
    # KL(student || teacher) is infinite where the teacher's probability is 0 and the student's is not
    with pytest.raises(NonFiniteLogitsError, match=r"teacher_logits contains -inf.*must be finite"):
        lm.reverse_kl(logits(2, 3, 5, seed=12), masked_teacher())


@fault("labkit.lm", "warning")
def test_teacher_probabilities_in_forward_kl_warn_and_give_the_kl_of_their_softmax():
    s, probs = logits(2, 3, 6, seed=13), torch.softmax(logits(2, 3, 6, seed=14), -1)
    with pytest.warns(LooksLikeProbabilitiesWarning, match=r"teacher_logits look like probabilities.*raw logits"):
        got = lm.forward_kl(s, probs)
    assert got.item() == pytest.approx(reference_kl(probs, s), rel=1e-9)


@fault("labkit.lm", "error")
def test_targets_not_shifted_by_one_are_refused_with_both_shapes():
    with pytest.raises(ValueError, match=r"targets \(batch, time\), got shapes \(2, 3, 5\) and \(2, 4\)"):
        lm.next_token_cross_entropy(logits(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))


@fault("labkit.lm", "error")
def test_padding_targets_of_minus_100_are_refused_naming_the_ids():
    # Hugging Face marks padding with -100 (ignore_index); labkit's batches have no padding
    with pytest.raises(lm.VocabularyMismatchError, match=r"targets hold ids from -100 .*0 to 4"):
        lm.next_token_cross_entropy(logits(2, 3, 5), torch.full((2, 3), -100))


@fault("labkit.lm", "error")
def test_numpy_targets_are_refused_saying_to_make_a_tensor():
    with pytest.raises(ValueError, match=r"targets.*ndarray.*torch\.(as_tensor|from_numpy|tensor)"):
        lm.next_token_cross_entropy(logits(2, 3, 5), np.zeros((2, 3), dtype=np.int64))


# --- labkit.lm: top-k stores ----------------------------------------------------------------------------------------


def reference_top_k_kl(t: torch.Tensor, s: torch.Tensor, k: int) -> float:
    """KL(renormalised top-k of softmax(t) || softmax(s)) per token in float64."""
    p, log_q = t.double().softmax(-1), s.double().log_softmax(-1)
    top, ids = p.topk(k, dim=-1)
    top = top / top.sum(-1, keepdim=True)
    return (top * (top.log() - log_q.gather(-1, ids))).sum(-1).mean().item()


@fault("labkit.lm", "error")
def test_a_fractional_k_is_refused_naming_k():
    with pytest.raises((TypeError, ValueError), match=r"'?k'?.*must be int"):
        topk.top_k_targets(logits(1, 2, 10), 10 * 0.25)


@fault("labkit.lm", "handled")
def test_a_float16_teacher_gives_a_float32_store_and_the_float64_kl():
    t16, s = logits(2, 3, 8, seed=15).half(), logits(2, 3, 8, seed=16).float()
    store = topk.top_k_targets(t16, 3)
    assert store.log_probs.dtype == torch.float32 and store.ids.dtype == torch.int64
    assert topk.top_k_forward_kl(s, store).item() == pytest.approx(reference_top_k_kl(t16, s, 3), rel=1e-5)


@fault("labkit.lm", "warning")
def test_student_probabilities_in_top_k_forward_kl_warn():
    t, probs = logits(2, 3, 6, seed=17), torch.softmax(logits(2, 3, 6, seed=18), -1)
    with pytest.warns(LooksLikeProbabilitiesWarning, match="student_logits"):
        got = topk.top_k_forward_kl(probs, topk.top_k_targets(t, 6))
    assert got.item() == pytest.approx(reference_kl(t, probs), rel=1e-5)


@fault("labkit.lm", "handled")
def test_a_store_of_a_teacher_with_masked_tokens_gives_the_forward_kl():
    s, t = logits(2, 3, 5, seed=12), masked_teacher()
    got = topk.top_k_forward_kl(s, topk.top_k_targets(t, 5))
    assert got.item() == pytest.approx(reference_kl(t, s), rel=1e-5)


# --- labkit.lm: another vocabulary -------------------------------------------------------------------------------

TEACHER = lm.CharTokenizer(("A", "B", "a", "b", "ß"))
STUDENT = lm.CharTokenizer(("a", "b", "s"))


@fault("labkit.lm", "error")
def test_tokenizers_swapped_in_vocabulary_map_are_refused_by_the_projection():
    swapped = lm.vocabulary_map(STUDENT, TEACHER)
    with pytest.raises(ValueError, match=r"one student id per teacher token \(6\), got shape \(4,\).*"
                                         r"vocabulary_map\(teacher_tokenizer, student_tokenizer\)"):
        lm.project_to_vocabulary(logits(1, 2, 6), swapped, STUDENT.vocab_size)


@fault("labkit.lm", "handled")
def test_a_fold_to_several_characters_maps_to_the_unknown_token():
    # str.casefold("ß") is "ss": two student tokens, so no one token stands for it
    mapping = lm.vocabulary_map(TEACHER, STUDENT, str.casefold)
    assert mapping.tolist() == [0, 1, 2, 1, 2, lm.CharTokenizer.UNKNOWN]
    t = logits(1, 2, 6, seed=19)
    p = t.softmax(-1)
    expected = torch.stack([p[..., 0] + p[..., 5], p[..., 1] + p[..., 3], p[..., 2] + p[..., 4]], -1)
    projected = lm.project_to_vocabulary(t, mapping, STUDENT.vocab_size)
    torch.testing.assert_close(projected[..., :3].exp().double(), expected, rtol=1e-5, atol=1e-7)


@fault("labkit.lm", "error")
def test_a_mapping_given_as_a_list_is_refused_saying_how_to_build_it():
    with pytest.raises(ValueError, match=r"mapping.*list.*vocabulary_map"):
        lm.project_to_vocabulary(logits(1, 2, 6), [0, 1, 2, 1, 2, 0], STUDENT.vocab_size)


# --- labkit.stats ---------------------------------------------------------------------------------------------------

BASE = [0.70, 0.72, 0.71]


@fault("labkit.stats", "error")
def test_arms_of_unequal_length_are_refused_with_both_lengths():
    with pytest.raises(ValueError, match=r"equally long.*got 3 and 2"):
        stats.paired_gains({"distilled": [0.75, 0.78, 0.76], "labels only": [0.70, 0.72]},
                           [("distilled", "labels only")])


@fault("labkit.stats", "error")
def test_a_nan_result_in_an_arm_is_refused_naming_the_arm():
    with pytest.raises(ValueError, match=r"(?s)NaN.*distilled|distilled.*NaN"):
        stats.paired_gains({"distilled": [0.75, math.nan, 0.76], "labels only": BASE}, [("distilled", "labels only")])


@fault("labkit.stats", "error")
def test_a_nan_value_to_summarize_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        stats.summarize([0.8, math.nan, 0.7])


@fault("labkit.stats", "error")
def test_a_nan_p_value_to_holm_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        stats.holm([math.nan, 0.001])


@fault("labkit.stats", "handled")
def test_identical_arms_give_a_zero_gain_that_is_not_shown():
    gain = stats.paired_gains({"a": BASE, "copy": list(BASE)}, [("a", "copy")])["a - copy"]
    assert (gain["mean"], gain["low"], gain["high"], gain["p"], gain["shown"]) == (0.0, 0.0, 0.0, 1.0, False)
    assert stats.describe_gain(gain).endswith(": not shown")


@fault("labkit.stats", "error")
def test_a_confidence_in_percent_is_refused():
    with pytest.raises(ValueError, match=r"confidence must lie in \(0, 1\), got 95"):
        stats.paired_interval([0.75, 0.78, 0.76], BASE, confidence=95)


@fault("labkit.stats", "error")
def test_a_pair_written_as_one_string_is_refused_asking_for_a_tuple():
    with pytest.raises(ValueError, match=r"kd - base.*tuple"):
        stats.paired_gains({"kd": [0.75, 0.78, 0.76], "base": BASE}, ["kd - base"])


# --- labkit.settings ----------------------------------------------------------------------------------------------


@fault("labkit.settings", "error")
def test_labkit_device_mps_where_there_is_none_is_refused(monkeypatch):
    monkeypatch.setattr(settings, "_mps_available", lambda: False)
    monkeypatch.setenv(settings.DEVICE_ENV, "mps")
    with pytest.raises(ValueError, match=r"LABKIT_DEVICE='mps'.*not available.*set it to cpu"):
        settings.device()


@fault("labkit.settings", "handled")
def test_labkit_device_with_spaces_around_it_is_read(monkeypatch):
    monkeypatch.setenv(settings.DEVICE_ENV, " cpu\n")
    assert settings.device() == torch.device("cpu")


@fault("labkit.settings", "warning")
def test_a_misspelt_labkit_quick_warns_naming_the_accepted_values(monkeypatch):
    monkeypatch.delenv(settings.GRADE_LOG_ENV, raising=False)
    monkeypatch.setenv(settings.QUICK_ENV, "ture")
    with pytest.warns(UserWarning, match=r"LABKIT_QUICK.*ture.*\b1\b"):
        assert not settings.quick_mode()


@fault("labkit.settings", "handled")
def test_a_notebook_turning_quick_mode_off_under_grading_stays_quick(monkeypatch, tmp_path):
    monkeypatch.setenv(settings.QUICK_ENV, "0")
    monkeypatch.setenv(settings.GRADE_LOG_ENV, str(tmp_path / "grade.log"))
    assert settings.quick_mode() and settings.pick("full", "quick") == "quick"


# --- labkit.validate ----------------------------------------------------------------------------------------------


@fault("labkit.validate", "error")
def test_a_temperature_or_alpha_that_is_no_number_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"temperature T.*None"):
        validate.check_temperature(None)
    with pytest.raises(ValueError, match=r"alpha.*half"):
        validate.check_alpha("half")


# --- labkit.settings: precision -------------------------------------------------------------------------------------


@fault("labkit.settings", "error")
def test_a_precision_that_is_not_one_is_refused_listing_the_choices(monkeypatch):
    monkeypatch.setenv(settings.PRECISION_ENV, "float16")
    with pytest.raises(ValueError, match=r"LABKIT_PRECISION='float16' is not a precision; use one of auto, bf16, fp32"):
        settings.precision("cpu")


@fault("labkit.settings", "handled")
def test_auto_precision_on_a_cpu_without_bfloat16_is_float32(monkeypatch):
    monkeypatch.setenv(settings.PRECISION_ENV, "auto")
    monkeypatch.setattr(settings, "_cpu_bf16_instructions", lambda: [])
    assert settings.precision("cpu") == "fp32" and settings.native_bf16("cpu") is None


@fault("labkit.settings", "handled")
def test_a_model_with_its_own_number_format_keeps_it_whatever_the_setting(monkeypatch):
    monkeypatch.setenv(settings.PRECISION_ENV, "bf16")
    model = torch.nn.Linear(2, 2)
    model.fixed_precision = "int8"
    assert settings.precision("cpu", model) == "int8"
