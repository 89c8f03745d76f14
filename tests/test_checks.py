"""labkit.checks: each check passes a correct answer, names each mistake it claims to diagnose, and turns garbage
into CheckFailed (never a TypeError from inside the check)."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labkit import checks, distillation_loss, distillation_loss_parts, kl_divergence, soft_targets
from labkit.checks import CheckFailed
from labkit.data import CIFAR10_CLASSES
from labkit.evaluate import expected_calibration_error
from labkit.omitted import choose_bias, with_bias

# Some tests make PyTorch's reduction="mean" mistake on purpose; PyTorch warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")
CLASSES = list(CIFAR10_CLASSES)
GARBAGE = [None, "forty-two", {"a": 1}, [1.0, "x"], torch.zeros(3, 7), math.nan]


@pytest.fixture(scope="module")
def logits() -> torch.Tensor:
    return 2 * torch.randn(2000, 10, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def labels(logits: torch.Tensor) -> torch.Tensor:
    """The prediction for 70% of the images, a random class for the rest: both right and wrong images exist."""
    g = torch.Generator().manual_seed(1)
    noisy = torch.rand(len(logits), generator=g) < 0.3
    return torch.where(noisy, torch.randint(0, 10, (len(logits),), generator=g), logits.argmax(1))


def passes(capsys: pytest.CaptureFixture, check, *args) -> None:
    check(*args)
    assert "✓ Test passed" in capsys.readouterr().out


def fails_with(hint: str, check, *args) -> None:
    with pytest.raises(CheckFailed, match=hint):
        check(*args)


def test_check_failed_is_an_assertion_error():
    assert issubclass(CheckFailed, AssertionError)


# 01_dark_knowledge


def deer_horse(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.softmax(logits, 1)
    deer, horse = CLASSES.index("deer"), CLASSES.index("horse")
    top2 = probs.topk(2, 1).indices
    pool = ((top2 == deer).any(1) & (top2 == horse).any(1)).nonzero().flatten()
    return pool, (probs[pool, deer] - probs[pool, horse]).abs()


def test_most_torn(capsys, logits):
    probs = torch.softmax(logits, 1)
    pool, gap = deer_horse(logits)
    passes(capsys, checks.check_most_torn, pool[gap.argmin()].item(), probs, CLASSES)
    fails_with("largest", checks.check_most_torn, pool[gap.argmax()], probs, CLASSES)
    outside = next(i for i in range(len(probs)) if i not in pool.tolist() and i != gap.argmin())
    fails_with("not deer and horse", checks.check_most_torn, outside, probs, CLASSES)
    fails_with("position in your list", checks.check_most_torn, gap.argmin(), probs, CLASSES)


def test_mistake_similarity(capsys, logits, labels):
    probs = torch.softmax(logits, 1)
    pred = probs.argmax(1)

    def means(groups, keep):
        return torch.stack([probs[keep & (groups == c)].mean(0) for c in range(10)])

    wrong = pred != labels
    passes(capsys, checks.check_mistake_similarity, means(labels, wrong), probs, labels)
    fails_with("over all images", checks.check_mistake_similarity, means(labels, wrong | ~wrong), probs, labels)
    fails_with("correct images", checks.check_mistake_similarity, means(labels, ~wrong), probs, labels)
    fails_with("true", checks.check_mistake_similarity, means(pred, wrong), probs, labels)
    fails_with("shape", checks.check_mistake_similarity, means(labels, wrong)[:9], probs, labels)


def test_dark_knowledge_extremes(capsys, logits):
    probs = torch.softmax(logits, 1)
    rest = probs.clone().scatter_(1, probs.argmax(1, keepdim=True), 0.0)
    rest = rest / rest.sum(1, keepdim=True)
    bits = math.log2(9) + torch.where(rest > 0, rest * torch.log2(rest), 0.0).sum(1)  # 0 log 0 = 0 at the top class
    entropy = -(probs * torch.log2(probs)).sum(1)
    most, fewest = bits.argmax().item(), bits.argmin().item()
    passes(capsys, checks.check_dark_knowledge_extremes, most, fewest, probs)
    fails_with("swapped", checks.check_dark_knowledge_extremes, fewest, most, probs)
    fails_with("entropy", checks.check_dark_knowledge_extremes, entropy.argmax(), fewest, probs)
    fails_with("not the extreme", checks.check_dark_knowledge_extremes, most, bits.argsort()[5], probs)


def test_label_smoothing(capsys, labels):
    one_hot = F.one_hot(labels, 10).float()
    passes(capsys, checks.check_label_smoothing, 0.8 * one_hot + 0.02, labels)
    fails_with("wrong classes only", checks.check_label_smoothing, 0.8 * one_hot + 0.2 / 9 * (1 - one_hot), labels)
    fails_with("sum to 1", checks.check_label_smoothing, 0.8 * one_hot + 0.02 * (1 - one_hot), labels)
    fails_with("one-hot", checks.check_label_smoothing, one_hot, labels)
    fails_with("shape", checks.check_label_smoothing, one_hot[:, :9], labels)


# 02_temperature


def test_half_as_likely(capsys, logits):
    z, (top, other) = logits[0], logits[0].topk(2).indices.tolist()
    gap = (z[top] - z[other]).item()
    passes(capsys, checks.check_half_as_likely, gap / math.log(2), z, top, other)
    fails_with("sign", checks.check_half_as_likely, -gap / math.log(2), z, top, other)
    fails_with("multiplied by ln 2", checks.check_half_as_likely, gap * math.log(2), z, top, other)
    fails_with("upside down", checks.check_half_as_likely, math.log(2) / gap, z, top, other)
    p = torch.softmax(z, 0)
    fails_with("probabilities", checks.check_half_as_likely, (p[top] - p[other]) / math.log(2), z, top, other)


def test_entropy_by_correctness(capsys, logits, labels):
    temperatures = np.logspace(-1, 2, 7)
    right = logits.argmax(1) == labels

    def curve(keep, log=torch.log2):
        return [(-torch.where(p > 0, p * log(p), 0.0).sum(1)).mean().item()
                for p in (torch.softmax(logits[keep] / T, 1) for T in temperatures)]

    args = (logits, labels, temperatures)
    passes(capsys, checks.check_entropy_by_correctness, curve(right), curve(~right), *args)
    fails_with("nats", checks.check_entropy_by_correctness, curve(right, torch.log), curve(~right), *args)
    fails_with("other group", checks.check_entropy_by_correctness, curve(~right), curve(right), *args)
    fails_with("all images", checks.check_entropy_by_correctness, curve(right | ~right), curve(~right), *args)
    fails_with("shape", checks.check_entropy_by_correctness, curve(right)[:3], curve(~right), *args)
    nan_curve = [(-(p * torch.log2(p)).sum(1)).mean().item() for p in (torch.softmax(logits[right] / T, 1)
                                                                        for T in temperatures)]
    assert math.isnan(nan_curve[0]), "at T = 0.1 some probabilities underflow to 0"
    fails_with("0 log 0", checks.check_entropy_by_correctness, nan_curve, curve(~right), *args)


def stable_softmax(z, T):
    e = np.exp(z / T - (z / T).max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("fn,hint", [
    (lambda z, T: np.exp(z / T) / np.exp(z / T).sum(-1, keepdims=True), "overflows"),
    (lambda z, T: stable_softmax(z, 1.0), "temperature is ignored"),
    (lambda z, T: stable_softmax(z * T, 1.0), "multiplied by T"),
    (lambda z, T: np.exp(z / T) / np.exp(z / T).sum(0, keepdims=True), "axis 0"),
    (lambda z, T: torch.softmax(torch.from_numpy(z) / T, -1), "NumPy array"),
    (lambda z, T: None, "returned None"),
    (lambda z: z, "raised TypeError"),
    (42, "should be a function"),
])
def test_numpy_softmax_mistakes(logits, fn, hint):
    fails_with(hint, checks.check_numpy_softmax, fn, logits[:50])


def test_numpy_softmax_passes(capsys, logits):
    passes(capsys, checks.check_numpy_softmax, stable_softmax, logits[:50])


# 03_kl_divergence


def test_kl_directions(capsys, logits):
    teacher, student = logits[:100], 0.1 * logits[100:200]
    Ts = (1, 2, 4, 8)

    def kl(a, b, T, reduction="batchmean"):
        return F.kl_div(F.log_softmax(b / T, 1), F.log_softmax(a / T, 1), reduction=reduction, log_target=True)

    fwd = [kl(teacher, student, T) for T in Ts]
    rev = [kl(student, teacher, T) for T in Ts]
    passes(capsys, checks.check_kl_directions, fwd, rev, teacher, student, Ts)
    fails_with("swapped", checks.check_kl_directions, rev, fwd, teacher, student, Ts)
    fails_with("T\\*\\*2", checks.check_kl_directions, [T**2 * v for T, v in zip(Ts, fwd)], rev, teacher, student, Ts)
    fails_with("batchmean", checks.check_kl_directions, [kl(teacher, student, T, "mean") for T in Ts], rev,
               teacher, student, Ts)
    fails_with("every T", checks.check_kl_directions, fwd, [rev[0]] * 4, teacher, student, Ts)


def reference_loss(s, t, y, T, alpha):
    return distillation_loss(s, t, y, T=T, alpha=alpha)


def make_loss(soft, hard=lambda s, y, T: F.cross_entropy(s, y), weights=lambda a: (a, 1 - a)):
    def loss(s, t, y, T, alpha):
        w_soft, w_hard = weights(alpha)
        return w_soft * soft(s, t, T) + w_hard * hard(s, y, T)
    return loss


def kl_term(s, t, T, reduction="batchmean", scale=lambda T: T**2):
    return scale(T) * F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), reduction=reduction, log_target=True)


@pytest.mark.parametrize("fn,hint", [
    (make_loss(lambda s, t, T: kl_term(s, t, T, scale=lambda T: 1)), "forgot to multiply the KL term by T\\*\\*2"),
    (make_loss(lambda s, t, T: kl_term(s, t, T, reduction="mean")), "batchmean"),
    (make_loss(lambda s, t, T: T**2 * F.kl_div(F.softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean")),
     "log\\*-probabilities"),
    (make_loss(lambda s, t, T: kl_term(t, s, T)), "reversed"),
    (make_loss(lambda s, t, T: kl_term(s, t, T), weights=lambda a: (1 - a, a)), "wrong term"),
    (make_loss(lambda s, t, T: kl_term(s, t, T), hard=lambda s, y, T: F.cross_entropy(s / T, y)), "plain logits"),
    (make_loss(lambda s, t, T: T**2 * kl_term(s, t, 1.0)), "no temperature"),
    (make_loss(lambda s, t, T: T**2 * F.kl_div(torch.log(F.softmax(s, 1) / T), F.softmax(t, 1) / T,
                                               reduction="batchmean")), "divides the probabilities"),
    (make_loss(lambda s, t, T: T**2 * F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1),
                                               reduction="batchmean")), "log_target=True"),
    (lambda s, t, y, T, alpha: F.cross_entropy(s, y, reduction="none"), "return one number"),
    (lambda s, t, y, T, alpha: None, "returned None"),
    (lambda s, t, y, T, alpha: torch.tensor(1.0), "not right yet"),
    (lambda s, t, y: 0.0, "raised TypeError"),
    (None, "should be a function"),
])
def test_distillation_loss_mistakes(fn, hint):
    fails_with(hint, checks.check_distillation_loss, fn)


def test_distillation_loss_passes(capsys):
    passes(capsys, checks.check_distillation_loss, reference_loss)
    probabilities_as_target = make_loss(
        lambda s, t, T: T**2 * F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean"))
    passes(capsys, checks.check_distillation_loss, probabilities_as_target)


# 04_cifar_teacher


def test_tta_passes(capsys):
    passes(capsys, checks.check_tta_passes, 6)
    fails_with("tta='flip'", checks.check_tta_passes, 2)
    fails_with("mirrored", checks.check_tta_passes, 3)
    fails_with("one image", checks.check_tta_passes, 60)
    fails_with("not right yet", checks.check_tta_passes, 5)


def test_temperature_scaling(capsys, logits, labels):
    Ts = (0.5, 1.0, 1.5)
    passes(capsys, checks.check_temperature_scaling,
           {T: expected_calibration_error(logits / T, labels) for T in Ts}, logits, labels)
    fails_with("multiplied", checks.check_temperature_scaling,
               {T: expected_calibration_error(logits * T, labels) for T in Ts}, logits, labels)
    fails_with("unscaled", checks.check_temperature_scaling,
               {T: expected_calibration_error(logits, labels) for T in Ts}, logits, labels)
    fails_with("percent", checks.check_temperature_scaling,
               {T: 100 * expected_calibration_error(logits / T, labels) for T in Ts}, logits, labels)
    fails_with("at least 3", checks.check_temperature_scaling, {1.0: 0.1}, logits, labels)
    fails_with("still empty", checks.check_temperature_scaling, None, logits, labels)


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, math.inf, math.nan])
def test_temperature_scaling_with_a_temperature_that_is_not_positive(logits, labels, bad):
    answer = {bad: 0.1, **{T: expected_calibration_error(logits / T, labels) for T in (0.5, 1.0, 1.5)}}
    fails_with(r"temperature .* must be a finite number > 0.*logits / T", checks.check_temperature_scaling,
               answer, logits, labels)


def test_confident_mistakes(capsys, logits, labels):
    confidence, pred = torch.softmax(logits, 1).max(1)
    wrong = (pred != labels).nonzero().flatten()
    worst = wrong[confidence[wrong].argsort(descending=True)]
    passes(capsys, checks.check_confident_mistakes, worst[:8].flip(0), logits, labels)
    fails_with("least", checks.check_confident_mistakes, worst[-8:], logits, labels)
    fails_with("correctly", checks.check_confident_mistakes, torch.cat([worst[:7], (pred == labels).nonzero()[0]]),
               logits, labels)
    fails_with("not the 8 most confident", checks.check_confident_mistakes, worst[1:9], logits, labels)
    fails_with("shape", checks.check_confident_mistakes, worst[:5], logits, labels)


def test_confident_mistakes_by_logit():
    """Three groups of 8 mistakes: the largest logits (0-7), the most confident (8-15), the least confident."""
    logits = torch.tensor([[5.0, 4.9, 0.0]] * 8 + [[3.0, -3.0, -3.0]] * 8 + [[1.0, 0.99, 0.98]] * 8)
    labels = torch.full((24,), 2)
    checks.check_confident_mistakes(list(range(8, 16)), logits, labels)
    fails_with("largest logit", checks.check_confident_mistakes, list(range(8)), logits, labels)


# 05_distill_student


def _step(*, zero=True, swap=False, t=None, a=None, teacher_learns=False, result="item"):
    def step(student, teacher, images, labels, optimizer, T, alpha):
        context = contextlib.nullcontext() if teacher_learns else torch.no_grad()
        with context:
            teacher_logits = teacher(images)
        student_logits = student(images)
        pair = (teacher_logits, student_logits) if swap else (student_logits, teacher_logits)
        loss = distillation_loss(*pair, labels, T=T if t is None else t, alpha=alpha if a is None else a)
        if teacher_learns:
            loss = loss + teacher_logits.sum()
        if zero:
            optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if teacher_learns:
            with torch.no_grad():
                for p in teacher.parameters():
                    p -= 0.1 * p.grad
        return {"item": loss.item(), "none": None, "zero": 0.0}[result]
    return step


def test_distillation_step(capsys):
    passes(capsys, checks.check_distillation_step, _step())
    fails_with("zero_grad", checks.check_distillation_step, _step(zero=False))
    fails_with("swapped", checks.check_distillation_step, _step(swap=True))
    fails_with("temperature", checks.check_distillation_step, _step(t=1.0))
    fails_with("1 - alpha", checks.check_distillation_step, _step(a=0.3))
    fails_with("teacher's weights changed", checks.check_distillation_step, _step(teacher_learns=True))
    fails_with("returned None", checks.check_distillation_step, _step(result="none"))
    fails_with("loss.item", checks.check_distillation_step, _step(result="zero"))
    fails_with("did not change", checks.check_distillation_step, lambda s, t, x, y, o, T, a: 1.0)
    fails_with("raised ZeroDivisionError", checks.check_distillation_step, lambda *args: 1 / 0)
    fails_with("should be a function", checks.check_distillation_step, None)


def test_unweighted_kl(capsys):
    history, T, alpha = {"kl_part": [0.9, 0.5, 0.3]}, 4.0, 0.9
    kl = [v / (alpha * T**2) for v in history["kl_part"]]
    passes(capsys, checks.check_unweighted_kl, kl, history, T, alpha)
    fails_with("by alpha only", checks.check_unweighted_kl, [v / alpha for v in history["kl_part"]], history, T, alpha)
    fails_with("T\\*\\*2 only", checks.check_unweighted_kl, [v / T**2 for v in history["kl_part"]], history, T, alpha)
    fails_with("kl_part itself", checks.check_unweighted_kl, history["kl_part"], history, T, alpha)


def test_agreement_vs_accuracy(capsys):
    runs = [{"history": {"val_agreement": [0.5, 0.7], "val_acc": [0.4, 0.6]}},
            {"history": {"val_agreement": [0.55, 0.8], "val_acc": [0.45, 0.65]}}]
    passes(capsys, checks.check_agreement_vs_accuracy, [0.7, 0.8], [0.6, 0.65], runs)
    fails_with("first epoch", checks.check_agreement_vs_accuracy, [0.5, 0.55], [0.6, 0.65], runs)
    fails_with("percent", checks.check_agreement_vs_accuracy, [70, 80], [0.6, 0.65], runs)


# 06_tuning_temperature_and_alpha


def test_dark_mass(capsys, logits):
    def mass(z):
        return (1 - torch.softmax(z, 1).max(1).values).mean()

    passes(capsys, checks.check_dark_mass, mass(logits / 0.5), logits, 0.5)
    fails_with("1 - top", checks.check_dark_mass, 1 - mass(logits / 0.5), logits, 0.5)
    fails_with("multiplied", checks.check_dark_mass, mass(logits * 0.5), logits, 0.5)
    fails_with("T = 1", checks.check_dark_mass, mass(logits), logits, 0.5)
    fails_with("mean", checks.check_dark_mass, mass(logits / 0.5) * len(logits), logits, 0.5)


# 07_ensemble_teachers


def test_probability_average(capsys, logits):
    members = [logits[:100], 3 * logits[100:200], 0.5 * logits[200:300]]
    probs = torch.stack([torch.softmax(z, 1) for z in members])
    passes(capsys, checks.check_probability_average, probs.mean(0), members)
    fails_with("averaged the logits", checks.check_probability_average, torch.softmax(torch.stack(members).mean(0), 1),
               members)
    fails_with("rows sum to 3", checks.check_probability_average, probs.sum(0), members)
    fails_with("log-probabilities", checks.check_probability_average, probs.mean(0).log(), members)
    fails_with("only the first 2", checks.check_probability_average, probs[:2].mean(0), members)


def test_disagreement(capsys, logits):
    a, b = logits[:500], logits[:500] + 2 * torch.randn(500, 10, generator=torch.Generator().manual_seed(2))
    ensemble = (a + b) / 2
    disagree = a.argmax(1) != b.argmax(1)
    top = torch.softmax(ensemble, 1).max(1).values
    args = ([a, b], ensemble)
    passes(capsys, checks.check_disagreement, disagree, top[disagree].mean(), top[~disagree].mean(), *args)
    fails_with("agree", checks.check_disagreement, ~disagree, top[disagree].mean(), top[~disagree].mean(), *args)
    fails_with("swapped", checks.check_disagreement, disagree, top[~disagree].mean(), top[~disagree].mean(), *args)
    fails_with("logit", checks.check_disagreement, disagree, ensemble.max(1).values[disagree].mean(),
               top[~disagree].mean(), *args)
    fails_with("all images", checks.check_disagreement, disagree, top[disagree].mean(), top.mean(), *args)


def test_disagreement_of_three_members(capsys, logits):
    noise = torch.Generator().manual_seed(3)
    members = [logits[:500] + 2 * torch.randn(500, 10, generator=noise) for _ in range(3)]
    ensemble = torch.stack(members).mean(0)
    predictions = torch.stack([z.argmax(1) for z in members])
    disagree = (predictions != predictions[0]).any(0)
    first_two = predictions[0] != predictions[1]
    assert not torch.equal(disagree, first_two)
    top = torch.softmax(ensemble, 1).max(1).values
    passes(capsys, checks.check_disagreement, disagree, top[disagree].mean(), top[~disagree].mean(), members, ensemble)
    fails_with("first two members", checks.check_disagreement, first_two, top[first_two].mean(),
               top[~first_two].mean(), members, ensemble)


# 08_beyond_logits


def fm_loss(teacher_on: str, student_on: str, T_power: int = 2, reverse: bool = False, reduction: str = "batchmean"):
    def loss(student, teacher, clean, blended, T):
        views = {"clean": clean, "blended": blended}
        log_p = F.log_softmax(teacher(views[teacher_on]) / T, 1)
        log_q = F.log_softmax(student(views[student_on]) / T, 1)
        first, second = (log_p, log_q) if reverse else (log_q, log_p)
        return T**T_power * F.kl_div(first, second, reduction=reduction, log_target=True)
    return loss


@pytest.mark.parametrize("fn,hint", [
    (fm_loss("blended", "blended"), "consistent loss"),
    (fm_loss("blended", "clean"), "other way round"),
    (fm_loss("clean", "blended", T_power=0), "T\\*\\*2"),
    (fm_loss("clean", "blended", reverse=True), "reversed"),
    (fm_loss("clean", "blended", reduction="mean"), "batchmean"),
    (lambda student, teacher, clean, blended, T: None, "returned None"),
])
def test_inconsistent_fm_loss_mistakes(fn, hint):
    fails_with(hint, checks.check_inconsistent_fm_loss, fn)


def test_inconsistent_fm_loss_passes(capsys):
    passes(capsys, checks.check_inconsistent_fm_loss, fm_loss("clean", "blended"))


# 09_compress_and_deploy


def test_pruned_int8_row(capsys):
    rows = {"student, distilled": {"params": 1000, "stored_kb": 4.0},
            "distilled, 50% channels removed": {"params": 600, "stored_kb": 2.4},
            "student, distilled, int8": {"test_acc": 0.8, "stored_kb": 1.0, "images_per_s": 100.0}}
    row = {"test_acc": 0.7, "params": 600, "stored_kb": 0.7, "images_per_s": 150.0}
    passes(capsys, checks.check_pruned_int8_row, row, rows)
    fails_with("unpruned", checks.check_pruned_int8_row, {**row, "params": 1000}, rows)
    fails_with("float_model", checks.check_pruned_int8_row, {**row, "params": 0}, rows)
    fails_with("float32", checks.check_pruned_int8_row, {**row, "stored_kb": 2.4}, rows)
    fails_with("deployment_row", checks.check_pruned_int8_row, [row], rows)
    fails_with("still empty", checks.check_pruned_int8_row, None, rows)


# 11_decision_boundaries


def test_pseudo_labels(capsys):
    gen = torch.Generator().manual_seed(0)
    teacher_logits, y = torch.randn(30, 3, generator=gen), torch.randint(0, 3, (30,), generator=gen)
    labelled = torch.arange(30) < 6
    guess = teacher_logits.argmax(1)
    passes(capsys, checks.check_pseudo_labels, torch.where(labelled, y, guess), y, labelled, teacher_logits)
    fails_with("top class everywhere", checks.check_pseudo_labels, guess, y, labelled, teacher_logits)
    fails_with("given labels everywhere", checks.check_pseudo_labels, y, y, labelled, teacher_logits)
    fails_with("swapped", checks.check_pseudo_labels, torch.where(labelled, guess, y), y, labelled, teacher_logits)


SECTION_2 = {"labels only": [0.80, 0.82, 0.81], "distilled, T = 2": [0.83, 0.82, 0.84]}


def noisy_answer(low_labels=(0.80, 0.82, 0.81), sign=1.0):
    def run(labels, distilled):
        return {"accs": {"labels only": list(labels), "distilled": list(distilled)},
                "gain": {"mean": sign * (np.mean(distilled) - np.mean(labels))}}
    return {0.1: run(low_labels, SECTION_2["distilled, T = 2"]), 0.3: run([0.70, 0.71, 0.69], [0.76, 0.74, 0.75])}


def test_noisy_rerun(capsys):
    passes(capsys, checks.check_noisy_rerun, noisy_answer(), SECTION_2)
    fails_with("labels only - distilled", checks.check_noisy_rerun, noisy_answer(sign=-1.0), SECTION_2)
    fails_with("reproduce section 2", checks.check_noisy_rerun, noisy_answer(low_labels=(0.7, 0.8, 0.9)), SECTION_2)
    fails_with("keys 0.1 and 0.3", checks.check_noisy_rerun, {0.1: noisy_answer()[0.1]}, SECTION_2)
    short = noisy_answer()
    short[0.3]["accs"]["distilled"] = [0.7]
    fails_with("one accuracy per seed", checks.check_noisy_rerun, short, SECTION_2)


FEW = {"labels only": [0.5, 0.6], "distilled, labelled only": [0.55, 0.62], "distilled, transfer set": [0.8, 0.85],
       "pseudo-labels": [0.78, 0.8]}


def test_bigger_student(capsys):
    big = {arm: [v + 0.01 for v in values] for arm, values in FEW.items()}
    gain = {"mean": np.mean(big["distilled, transfer set"]) - np.mean(big["labels only"])}
    passes(capsys, checks.check_bigger_student, big, gain, FEW)
    fails_with("16-unit student", checks.check_bigger_student, FEW, gain, FEW)
    fails_with("labels only - transfer set", checks.check_bigger_student, big, {"mean": -gain["mean"]}, FEW)
    fails_with("entry 'pseudo-labels'", checks.check_bigger_student,
               {k: v for k, v in big.items() if k != "pseudo-labels"}, gain, FEW)



# 10_omitted_class


def bias_scores(logits, labels, omitted, grid, only=None):
    keep = torch.ones_like(labels, dtype=torch.bool) if only is None else only
    return torch.stack([(with_bias(logits, omitted, float(b)).argmax(1) == labels)[keep].double().mean() for b in grid])


def largest_best_bias(logits, labels, omitted, grid):
    scores = bias_scores(logits, labels, omitted, grid)
    return float(grid[int(torch.nonzero(scores == scores.max())[-1])])


def omitted_only_bias(logits, labels, omitted, grid):
    return float(grid[int(bias_scores(logits, labels, omitted, grid, labels == omitted).argmax())])


def in_place_bias(logits, labels, omitted, grid):
    logits[:, omitted] += 1.0
    return choose_bias(logits, labels, omitted, grid)


def test_choose_bias(capsys):
    passes(capsys, checks.check_choose_bias, choose_bias)
    fails_with("the largest", checks.check_choose_bias, largest_best_bias)
    fails_with("omitted class only", checks.check_choose_bias, omitted_only_bias)
    fails_with("copy", checks.check_choose_bias, in_place_bias)
    fails_with("the best is", checks.check_choose_bias, lambda logits, labels, omitted, grid: 0.0)
    fails_with("returned None", checks.check_choose_bias, lambda *args: None)


WHERE_CATS_GO = {"distilled": [{"omitted_row": [1, 0, 2, 0, 0, 5, 0, 0, 0, 0],
                                "omitted_row_biased": [0, 0, 1, 6, 0, 1, 0, 0, 0, 0]},
                               {"omitted_row": [0, 0, 4, 0, 0, 3, 1, 0, 0, 0],
                                "omitted_row_biased": [0, 0, 2, 5, 0, 1, 0, 0, 0, 0]}],
                 "labels only": [{"omitted_row": [0, 0, 6, 0, 0, 2, 0, 0, 0, 0],
                                  "omitted_row_biased": [0, 0, 5, 1, 0, 2, 0, 0, 0, 0]}]}


def test_where_cats_go(capsys):
    passes(capsys, checks.check_where_cats_go, {"distilled": "dog", "labels only": "bird"}, WHERE_CATS_GO, CLASSES)
    fails_with("an index", checks.check_where_cats_go, {"distilled": 5, "labels only": "bird"}, WHERE_CATS_GO, CLASSES)
    fails_with("after", checks.check_where_cats_go, {"distilled": "cat", "labels only": "bird"}, WHERE_CATS_GO, CLASSES)
    fails_with("add up the seeds", checks.check_where_cats_go, {"distilled": "bird", "labels only": "bird"},
               WHERE_CATS_GO, CLASSES)  # bird leads the second seed only: add up the seeds
    fails_with("one class name per arm", checks.check_where_cats_go, {"distilled": "dog"}, WHERE_CATS_GO, CLASSES)


# 12_distill_language_model


def log_softmax_pair(s, t):
    return torch.log_softmax(s, -1), torch.log_softmax(t, -1)


def reverse_kl(s, t):
    log_q, log_p = log_softmax_pair(s, t)
    return (log_q.exp() * (log_q - log_p)).sum(-1).mean()


def test_reverse_kl_passes(capsys):
    passes(capsys, checks.check_reverse_kl, reverse_kl)
    passes(capsys, checks.check_reverse_kl,  # F.kl_div with the teacher's log-probabilities as input
           lambda s, t: F.kl_div(torch.log_softmax(t, -1).flatten(0, 1), torch.softmax(s, -1).flatten(0, 1),
                                 reduction="batchmean"))


@pytest.mark.parametrize("fn,hint", [
    (lambda s, t: reverse_kl(t, s), "forward KL"),
    (lambda s, t: F.kl_div(torch.log_softmax(s, -1), torch.softmax(t, -1), reduction="sum") / s.shape[0] / s.shape[1],
     "forward KL"),
    (lambda s, t: reverse_kl(s, t) * s.shape[0] * s.shape[1], "summed over the positions"),
    (lambda s, t: reverse_kl(s, t) * s.shape[1], "averaged over the batch only"),
    (lambda s, t: F.kl_div(torch.log_softmax(t, -1), torch.softmax(s, -1), reduction="mean"), "vocabulary too"),
    (lambda s, t: (torch.softmax(s, -1) * (torch.softmax(s, -1) - torch.softmax(t, -1))).sum(-1).mean(),
     "probabilities where log-probabilities"),
    (lambda s, t: F.kl_div(torch.softmax(t, -1).flatten(0, 1), torch.softmax(s, -1).flatten(0, 1),
                           reduction="batchmean"), "F.kl_div"),
    (lambda s, t: (torch.softmax(s, -1) * (s - t)).sum(-1).mean(), "not log-probabilities"),
    (lambda s, t: -reverse_kl(s, t), "sign"),
    (lambda s, t: (lambda lq, lp: (lq.exp() * (lq - lp)).sum(-1))(*log_softmax_pair(s, t)), "one per position"),
    (lambda s, t: None, "returned None"),
    (lambda s: s, "raised TypeError"),
    (lambda s, t: 0.123, "not right yet"),
])
def test_reverse_kl_mistakes(fn, hint):
    fails_with(hint, checks.check_reverse_kl, fn)


DIVERSITY = {"a": {"distinct_4": 0.6, "sample_entropy": 1.5}, "b": {"distinct_4": 0.4, "sample_entropy": 1.2},
             "c": {"distinct_4": 0.3, "sample_entropy": 1.4}, "d": {"distinct_4": 0.5, "sample_entropy": 1.0}}


def test_lowest_diversity(capsys):
    passes(capsys, checks.check_lowest_diversity, "c", DIVERSITY)
    fails_with("highest", checks.check_lowest_diversity, "a", DIVERSITY)
    fails_with("sample entropy", checks.check_lowest_diversity, "d", DIVERSITY)
    fails_with("not the arm", checks.check_lowest_diversity, "b", DIVERSITY)
    fails_with("references", checks.check_lowest_diversity, "teacher", DIVERSITY)
    fails_with("a string", checks.check_lowest_diversity, 3, DIVERSITY)
    fails_with("still empty", checks.check_lowest_diversity, None, DIVERSITY)


def sweep_of(*betas, init="x", steps=10):
    return {beta: {"init": init, "steps": steps, "forward_kl": 0.5, "reverse_kl": 0.4} for beta in betas}


def test_beta_sweep(capsys):
    passes(capsys, checks.check_beta_sweep, sweep_of(0.1, 0.5, 0.9), "x")
    fails_with("at least 3", checks.check_beta_sweep, sweep_of(0.1, 0.9), "x")
    fails_with("0 < beta < 1", checks.check_beta_sweep, sweep_of(0.0, 0.5, 0.9), "x")
    fails_with("arms' initial weights", checks.check_beta_sweep, sweep_of(0.1, 0.5, 0.9, init="y"), "x")
    mixed = {**sweep_of(0.1, 0.5), **sweep_of(0.9, init="y")}
    fails_with("different weights", checks.check_beta_sweep, mixed, "x")
    fails_with("numbers of steps", checks.check_beta_sweep, {**sweep_of(0.1, 0.5), **sweep_of(0.9, steps=5)}, "x")
    fails_with("finite number", checks.check_beta_sweep,
               {**sweep_of(0.1, 0.5), 0.9: {"init": "x", "steps": 10, "forward_kl": -1.0, "reverse_kl": 0.1}}, "x")
    fails_with("keys", checks.check_beta_sweep, {0.5: {"init": "x"}}, "x")
    fails_with("betas", checks.check_beta_sweep, {"0.5": sweep_of(0.5)[0.5]}, "x")



def loss_parts_of(student, teacher, labels, T, alphas, soft_scale=1.0):
    out = {}
    for a in alphas:
        _, soft, hard = distillation_loss_parts(student, teacher, labels, T=T, alpha=a)
        out[a] = (soft.item() * soft_scale, hard.item())
    return out


def test_loss_parts(capsys, logits, labels):
    s, t, y, T, alphas = logits[:50] / 2, logits[50:100], labels[:50], 2.0, (0.0, 0.5, 1.0)
    passes(capsys, checks.check_loss_parts, loss_parts_of(s, t, y, T, alphas), s, t, y, T, alphas)
    fails_with("lacks `T", checks.check_loss_parts, loss_parts_of(s, t, y, T, alphas, soft_scale=1 / T**2), s, t, y, T, alphas)
    swapped = {a: v[::-1] for a, v in loss_parts_of(s, t, y, T, alphas).items()}
    fails_with("swapped", checks.check_loss_parts, swapped, s, t, y, T, alphas)
    full_soft, full_hard = loss_parts_of(s, t, y, T, (1.0,))[1.0][0], loss_parts_of(s, t, y, T, (0.0,))[0.0][1]
    fails_with("not weighted", checks.check_loss_parts, {a: (full_soft, full_hard) for a in alphas}, s, t, y, T, alphas)
    reverse = {a: (a * T**2 * kl_divergence(soft_targets(s, T), soft_targets(t, T)).item(),
                   (1 - a) * F.cross_entropy(s, y).item()) for a in alphas}
    fails_with("wrong direction", checks.check_loss_parts, reverse, s, t, y, T, alphas)
    fails_with("one entry per alpha", checks.check_loss_parts, {0.5: (0.0, 0.0)}, s, t, y, T, alphas)


def calibration_entry(z, y):
    probs = torch.softmax(z, 1)
    return {"logits": z, "acc": (probs.argmax(1) == y).double().mean().item(), "confidence": probs.max(1).values.mean().item()}


def test_smoothing_calibration(capsys, logits, labels):
    z, y = logits[:100], labels[:100]
    demo = {0.2: calibration_entry(z / 3, y), 0.0: calibration_entry(z, y)}
    passes(capsys, checks.check_smoothing_calibration, demo, y)
    true_class = {**demo, 0.0: {**demo[0.0], "confidence": torch.softmax(z, 1)[torch.arange(100), y].mean().item()}}
    fails_with("true class", checks.check_smoothing_calibration, true_class, y)
    fails_with("same logits", checks.check_smoothing_calibration, {0.2: demo[0.0], 0.0: demo[0.0]}, y)
    fails_with("acc", checks.check_smoothing_calibration, {**demo, 0.2: {**demo[0.2], "acc": 0.0}}, y)
    fails_with("keys 0.2 and 0.0", checks.check_smoothing_calibration, {0.2: demo[0.2]}, y)


# Garbage in any check is a CheckFailed, never an exception from inside the check.


@pytest.mark.parametrize("answer", GARBAGE, ids=["None", "str", "dict", "mixed-list", "wrong-shape", "nan"])
def test_garbage_is_check_failed(answer, logits, labels):
    probs = torch.softmax(logits, 1)
    calls = [
        lambda: checks.check_most_torn(answer, probs, CLASSES),
        lambda: checks.check_mistake_similarity(answer, probs, labels),
        lambda: checks.check_label_smoothing(answer, labels),
        lambda: checks.check_dark_knowledge_extremes(answer, 0, probs),
        lambda: checks.check_half_as_likely(answer, logits[0], 0, 1),
        lambda: checks.check_entropy_by_correctness(answer, answer, logits, labels, (1.0, 2.0)),
        lambda: checks.check_numpy_softmax(answer, logits[:10]),
        lambda: checks.check_kl_directions(answer, answer, logits[:50], logits[50:100]),
        lambda: checks.check_distillation_loss(answer),
        lambda: checks.check_loss_parts(answer, logits[:10], logits[10:20], labels[:10], 2.0, (0.0, 1.0)),
        lambda: checks.check_tta_passes(answer),
        lambda: checks.check_smoothing_calibration(answer, labels[:10]),
        lambda: checks.check_temperature_scaling(answer, logits, labels),
        lambda: checks.check_confident_mistakes(answer, logits, labels),
        lambda: checks.check_distillation_step(answer),
        lambda: checks.check_unweighted_kl(answer, {"kl_part": [0.1, 0.2]}, 2.0, 0.5),
        lambda: checks.check_agreement_vs_accuracy(answer, answer, [{"history": {"val_agreement": [1.0],
                                                                                 "val_acc": [1.0]}}]),
        lambda: checks.check_dark_mass(answer, logits, 2.0),
        lambda: checks.check_probability_average(answer, [logits[:10], logits[10:20]]),
        lambda: checks.check_disagreement(answer, answer, answer, [logits[:10], logits[10:20]], logits[:10]),
        lambda: checks.check_inconsistent_fm_loss(answer),
        lambda: checks.check_pruned_int8_row(answer, {}),
        lambda: checks.check_choose_bias(answer),
        lambda: checks.check_where_cats_go(answer, WHERE_CATS_GO, CLASSES),
        lambda: checks.check_pseudo_labels(answer, labels[:10], torch.arange(10) < 3, logits[:10]),
        lambda: checks.check_noisy_rerun(answer, SECTION_2),
        lambda: checks.check_bigger_student(answer, answer, FEW),
        lambda: checks.check_reverse_kl(answer),
        lambda: checks.check_lowest_diversity(answer, DIVERSITY),
        lambda: checks.check_beta_sweep(answer, "x"),
    ]
    for call in calls:
        with pytest.raises(CheckFailed):
            call()


def test_every_check_is_tested():
    """A new check needs its tests here: every public check_* of labkit.checks is called in this file."""
    source = open(__file__).read()
    public = [name for name in dir(checks) if name.startswith("check_")]
    assert public and all(f"checks.{name}(" in source or f"checks.{name}," in source for name in public)


# 03_kl_divergence, section 6: the gradient of the soft term from the formula (check_soft_grad)


def soft_grad(s, t, T):
    """T · (q − p) / batch size: the gradient of T² · KL(p_T ‖ q_T), batch mean, with respect to the student logits."""
    return T * (soft_targets(s, T) - soft_targets(t, T)) / len(s)


def numpy_soft_grad(s, t, T):
    from scipy.special import softmax
    return T * (softmax(s.numpy() / T, axis=1) - softmax(t.numpy() / T, axis=1)) / len(s)


def autograd_soft_grad(s, t, T):
    z = s.clone().requires_grad_()
    loss = distillation_loss(z, t, torch.zeros(len(s), dtype=torch.long), T=T, alpha=1.0)
    return torch.autograd.grad(loss, z)[0]


def raises_not_implemented(s, t, T):
    raise NotImplementedError("write the formula")


@pytest.mark.parametrize("fn", [
    soft_grad,
    numpy_soft_grad,
    lambda s, t, T: soft_grad(s.double(), t.double(), T),
    lambda s, t, T: soft_grad(s, t, T).half(),
    lambda s, t, T: numpy_soft_grad(s, t, T).astype("float16"),
    lambda s, t, T: soft_grad(s, t, T).bfloat16(),
], ids=["float32", "numpy", "float64", "float16", "numpy-float16", "bfloat16"])
def test_soft_grad_passes(capsys, fn):
    passes(capsys, checks.check_soft_grad, fn)


@pytest.mark.parametrize("fn,hint", [
    (lambda s, t, T: soft_grad(s, t, T) / T**2, "forgot T\\*\\*2"),
    (lambda s, t, T: soft_grad(s, t, T) * T, "chain rule"),
    (lambda s, t, T: soft_grad(s, t, T) / T, "lacks the factor T"),
    (lambda s, t, T: -soft_grad(s, t, T), "sign is flipped"),
    (lambda s, t, T: soft_grad(t, s, T), "sign is flipped"),  # teacher and student swapped in the softmaxes
    (lambda s, t, T: soft_grad(s, t, T) * len(s), "no batch mean"),
    (lambda s, t, T: soft_grad(s, t, T) / s.shape[1], "batchmean"),
    (lambda s, t, T: T * (soft_targets(s) - soft_targets(t)) / len(s), "no temperature"),
    (autograd_soft_grad, "autograd"),
    (lambda s, t, T: soft_grad(s, t, T).sum(), "one number"),
    (lambda s, t, T: 0.0, "one number"),
    (lambda s, t, T: soft_grad(s, t, T)[:, :5], "shape"),
    (lambda s, t, T: soft_grad(s, t, T).T, "shape"),
    (lambda s, t, T: torch.full_like(s, math.nan), "NaN"),
    (lambda s, t, T: torch.zeros_like(s), "not right yet"),
    (lambda s, t, T: "x", "numbers"),
    (lambda s, t, T: None, "returned None"),
    (raises_not_implemented, "raised NotImplementedError"),
    (lambda s, t: 0.0, "raised TypeError"),
    (None, "should be a function"),
    (soft_grad(torch.zeros(2, 10), torch.zeros(2, 10), 2.0), "should be a function"),  # a result, not the function
])
def test_soft_grad_mistakes(fn, hint):
    fails_with(hint, checks.check_soft_grad, fn)


@pytest.mark.parametrize("answer", GARBAGE, ids=["None", "str", "dict", "mixed-list", "wrong-shape", "nan"])
def test_soft_grad_garbage_is_check_failed(answer):
    with pytest.raises(CheckFailed):
        checks.check_soft_grad(answer)


# 09_compress_and_deploy: the labs (int8 by hand, the pruning criterion, BatchNorm re-estimation)


@pytest.fixture(scope="module")
def distilled_student():
    from labkit.pretrained import load_pretrained
    return load_pretrained("student_small_distilled", "cpu")


def lab_qparams(x, mistake=None):
    lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    if mistake == "no zero in range":
        lo, hi = x.min().item(), x.max().item()
    scale = {"from max": hi / 255, "256": (hi - lo) / 256, "symmetric": max(-lo, hi) / 127.5}.get(mistake,
                                                                                               (hi - lo) / 255)
    zero = {"sign": round(lo / scale), "unrounded": -lo / scale}.get(mistake, round(-lo / scale))
    return scale, zero


def lab_quantize(x, scale, zero, qmin, qmax, mistake=None):
    raw = x / scale
    steps = {"no round": raw, "trunc": raw.trunc(), "floor": raw.floor(), "times": torch.round(x * scale)}.get(
        mistake, torch.round(raw))
    if mistake == "wrap":
        return (steps + zero).to(torch.int16).remainder(256).to(torch.uint8)
    if mistake == "no clamp":
        return steps + zero
    return torch.clamp(steps - zero if mistake == "minus" else steps + zero, qmin, qmax)


def test_affine_quantization(capsys, distilled_student):
    w = distilled_student.layers[0].conv1.weight.detach()
    passes(capsys, checks.check_affine_quantization, lab_qparams, lab_quantize, w)
    # other correct forms: float64 arithmetic, tensors as results, a uint8 q
    passes(capsys, checks.check_affine_quantization, lambda x: tuple(torch.tensor(v) for v in lab_qparams(x)),
           lambda *a: lab_quantize(*a).to(torch.int16), w.double())
    for mistake, hint in [("from max", "maximum alone"), ("256", "not 256"), ("symmetric", "symmetric scale"),
                          ("no zero in range", "include 0"), ("sign", "wrong sign"), ("unrounded", "integer")]:
        fails_with(hint, checks.check_affine_quantization, lambda x: lab_qparams(x, mistake), lab_quantize, w)
    for mistake, hint in [("no round", "not rounded"), ("trunc", "cut off"), ("floor", "rounded down"),
                          ("no clamp", "not clamped"), ("wrap", "wrapped around"), ("minus", "subtracted"),
                          ("times", "multiplied")]:
        fails_with(hint, checks.check_affine_quantization, lab_qparams,
                   lambda *a: lab_quantize(*a, mistake=mistake), w)
    fails_with("raised", checks.check_affine_quantization, lab_qparams,
               lambda x, s, z, lo, hi: torch.clamp(torch.round(x / float(s)) + z, lo, hi), w)  # one scale only
    fails_with("returned None", checks.check_affine_quantization, lambda x: None, lab_quantize, w)
    fails_with("two numbers", checks.check_affine_quantization, lambda x: 0.1, lab_quantize, w)
    fails_with("returned None", checks.check_affine_quantization, lab_qparams, lambda *a: None, w)


def channel_scales(w, mistake=None):
    dims = tuple(range(1, w.dim()))
    return {"per tensor": w.abs().max() / 127.5, "repeated": torch.full((len(w),), w.abs().max().item() / 127.5),
            "127": w.abs().amax(dims) / 127, "no abs": w.amax(dims) / 127.5, "dim 0": w.abs().amax(0) / 127.5,
            "affine": (w.amax(dims) - w.amin(dims)) / 255}.get(mistake, w.abs().amax(dims) / 127.5)


def weight_errors(w, channel_range=(-128, 127)):
    lo, hi = w.min().item(), w.max().item()
    s, z = (hi - lo) / 255, round(-lo / (hi - lo) * 255)
    tensor = (w - s * (torch.clamp(torch.round(w / s) + z, 0, 255) - z)).abs().mean()
    sc = channel_scales(w).view(-1, 1, 1, 1)
    return tensor.item(), (w - sc * torch.clamp(torch.round(w / sc), *channel_range)).abs().mean().item()


def pt2e_weight(w):
    """What convert_pt2e stores: it multiplies by 1 / scale, so -127.5 steps round to -127."""
    s = channel_scales(w)
    return torch.clamp(torch.round(w * (1 / s.view(-1, 1, 1, 1))), -128, 127).to(torch.int8), s, torch.zeros(len(w))


def test_channel_scales(capsys, distilled_student):
    w = distilled_student.layers[0].conv1.weight.detach()
    stored, errors = pt2e_weight(w), weight_errors(w)
    passes(capsys, checks.check_channel_scales, channel_scales, errors, w, stored)
    passes(capsys, checks.check_channel_scales, lambda x: channel_scales(x).view(-1, 1, 1, 1).double(),
           np.array(errors), w, stored)
    for mistake, hint in [("per tensor", "one number"), ("repeated", "whole tensor"), ("127", "divided by 127"),
                          ("no abs", "largest magnitude"), ("dim 0", "numbers for 24"), ("affine", "affine")]:
        fails_with(hint, checks.check_channel_scales, lambda x: channel_scales(x, mistake), errors, w, stored)
    fails_with("swapped", checks.check_channel_scales, channel_scales, errors[::-1], w, stored)
    fails_with("clipped", checks.check_channel_scales, channel_scales, weight_errors(w, (0, 255)), w, stored)
    fails_with("still empty", checks.check_channel_scales, channel_scales, None, w, stored)
    fails_with("shape", checks.check_channel_scales, channel_scales, errors[:1], w, stored)
    fails_with("quantized_weight", checks.check_channel_scales, channel_scales, errors, w, "stored")
    fails_with("same layer", checks.check_channel_scales, channel_scales, errors, w, pt2e_weight(w[:4]))
    fails_with("returned None", checks.check_channel_scales, lambda x: None, errors, w, stored)


def lab_int8_matmul(q_w, q_x, zero_x, scale_w, scale_x):
    return (q_w.to(torch.int32) @ (q_x.to(torch.int32) - zero_x)).float() * (scale_w[:, None] * scale_x)


def layer_product(student, images=8):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(images, 3, 32, 32, generator=g)
    with torch.no_grad():
        x = student.stem_activ(student.stem(student.normalize(x)))
    w = student.layers[0].conv1.weight.detach()
    return w.flatten(1), F.unfold(x, 3, padding=1).transpose(0, 1).flatten(1)


@pytest.mark.parametrize("fn,hint", [
    (lambda qw, qx, z, sw, sx: (qw @ (qx.to(torch.int8) - z)).float() * (sw[:, None] * sx), "overflowed int8"),
    (lambda qw, qx, z, sw, sx: (qw.short() @ (qx.short() - z)).float() * (sw[:, None] * sx), "overflowed int16"),
    (lambda qw, qx, z, sw, sx: (qw.int() @ (qx - z).int()).float() * (sw[:, None] * sx), "computed in uint8"),
    (lambda qw, qx, z, sw, sx: (qw.int() @ qx.int()).float() * (sw[:, None] * sx), "zero point is missing"),
    (lambda qw, qx, z, sw, sx: (qw.int() @ (qx.int() + z)).float() * (sw[:, None] * sx), "zero point is added"),
    (lambda qw, qx, z, sw, sx: qw.int() @ (qx.int() - z), "integer sums"),
    (lambda qw, qx, z, sw, sx: (qw.int() @ (qx.int() - z)).float() * sw[:, None], "scale_w only"),
    (lambda qw, qx, z, sw, sx: (qw.int() @ (qx.int() - z)).float() * sx, "scale_x only"),
    (lambda qw, qx, z, sw, sx: (qw.int() @ (qx.int() - z)).float().T, "shape"),
    (lambda qw, qx, z, sw, sx: None, "returned None"),
    (lambda qw, qx: 0, "raised TypeError"),
])
def test_int8_matmul_mistakes(distilled_student, fn, hint):
    fails_with(hint, checks.check_int8_matmul, fn, *layer_product(distilled_student))


def test_int8_matmul_passes(capsys, distilled_student):
    product = layer_product(distilled_student)
    passes(capsys, checks.check_int8_matmul, lab_int8_matmul, *product)
    # float32 sums are exact up to 2**24, beyond every sum here: a right answer too
    passes(capsys, checks.check_int8_matmul,
           lambda qw, qx, z, sw, sx: (qw.double() @ (qx.double() - z)) * (sw.double()[:, None] * sx), *product)
    fails_with("flattened filters", checks.check_int8_matmul, lab_int8_matmul, product[0], product[1][:5])


def lab_spatial_svd(conv, rank, mistake=None):
    w = conv.weight.detach()
    c_out, c_in, k, _ = w.shape
    m = w.reshape(c_out * k, c_in * k) if mistake == "layout" else w.permute(1, 2, 0, 3).reshape(c_in * k, c_out * k)
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    r = min(m.shape) if mistake == "full" else rank
    root = torch.ones(r) if mistake == "no S" else s[:r].sqrt()
    left, right = u[:, :r] * root, root[:, None] * vh[:r]
    if mistake == "layout":  # the learner still shapes the factors as the exercise asks
        left, right = left.reshape(c_in * k, -1)[:, :rank], right.reshape(-1, c_out * k)[:rank]
    keep = r if mistake == "full" else rank
    return left.T.reshape(-1, c_in, k, 1)[:keep], right.reshape(-1, c_out, 1, k).permute(1, 0, 2, 3)[:, :keep]


def test_spatial_svd(capsys, distilled_student):
    conv = distilled_student.layers[1].conv2
    passes(capsys, checks.check_spatial_svd, lab_spatial_svd, conv, 20)
    for mistake, hint in [("full", "shape"), ("no S", "singular values are missing")]:
        fails_with(hint, checks.check_spatial_svd, lambda c, r: lab_spatial_svd(c, r, mistake), conv, 20)
    fails_with("not right yet|wrong axes", checks.check_spatial_svd, lambda c, r: lab_spatial_svd(c, r, "layout"),
               conv, 20)
    fails_with("two weight tensors", checks.check_spatial_svd, lambda c, r: lab_spatial_svd(c, r)[0], conv, 20)


def lab_keep(model, amount, mistake=None):
    counts = [round(g.conv1.out_channels * (1 - amount)) for g in model.layers]
    if mistake != "none kept":
        counts = [max(1, k) for k in counts]
    if mistake == "floor":
        counts = [int(g.conv1.out_channels * (1 - amount)) for g in model.layers]
    scores = []
    for g in model.layers:
        w, bn = g.conv1.weight.detach(), g.norm1
        norm = w.pow(2).sum((1, 2, 3)).sqrt() if mistake == "L2" else w.abs().sum((1, 2, 3))
        std = (bn.running_var + bn.eps) if mistake == "var" else (bn.running_var + bn.eps).sqrt()
        scores.append(norm if mistake == "no BN" else norm * (bn.weight / std).abs())
    if mistake == "global":
        top = torch.cat(scores).topk(sum(counts)).indices
        starts = torch.tensor([0] + [len(s) for s in scores]).cumsum(0)
        return [top[(top >= a) & (top < b)] - a for a, b in zip(starts[:-1], starts[1:])]
    return [s.topk(k, largest=mistake != "ascending").indices for s, k in zip(scores, counts)]


def test_channels_to_keep(capsys, distilled_student):
    passes(capsys, checks.check_channels_to_keep, lab_keep, distilled_student, 0.5)
    masks = lambda m, a: [torch.zeros(g.conv1.out_channels, dtype=torch.bool).index_fill(0, k, True)  # noqa: E731
                          for g, k in zip(m.layers, lab_keep(m, a))]
    passes(capsys, checks.check_channels_to_keep, masks, distilled_student, 0.5)
    passes(capsys, checks.check_channels_to_keep, lambda m, a: [k.tolist()[::-1] for k in lab_keep(m, a)],
           distilled_student, 0.5)
    for mistake, hint in [("ascending", "least important"), ("L2", "L2 norm"), ("no BN", "BatchNorm factor is"),
                          ("var", "divides by the variance"), ("global", "across all stages"),
                          ("floor", "round\\(C"), ("none kept", "at least one")]:
        fails_with(hint, checks.check_channels_to_keep, lambda m, a: lab_keep(m, a, mistake), distilled_student, 0.5)
    fails_with("one collection", checks.check_channels_to_keep, lambda m, a: lab_keep(m, a)[:2], distilled_student, 0.5)
    fails_with("integer channel", checks.check_channels_to_keep,
               lambda m, a: [k.float() for k in lab_keep(m, a)], distilled_student, 0.5)
    fails_with("0..23", checks.check_channels_to_keep, lambda m, a: [k + 100 for k in lab_keep(m, a)],
               distilled_student, 0.5)
    fails_with("twice", checks.check_channels_to_keep, lambda m, a: [torch.cat([k, k[:1]]) for k in lab_keep(m, a)],
               distilled_student, 0.5)
    fails_with("returned None", checks.check_channels_to_keep, lambda m, a: None, distilled_student, 0.5)
    fails_with("CifarNet", checks.check_channels_to_keep, lab_keep, torch.nn.Linear(2, 2), 0.5)


def lab_reestimate(model, images, batch_size=500, reset=True, train=True, momentum=True, grad=False, evaluate=True):
    from labkit.loader import to_float
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            if reset:
                m.reset_running_stats()
            if momentum:
                m.momentum = None
    model.train(train)
    with contextlib.nullcontext() if grad else torch.no_grad():
        for chunk in images.split(batch_size):
            model(to_float(chunk))
    return model.eval() if evaluate else model


@pytest.fixture(scope="module")
def pruned_and_images(distilled_student):
    from labkit.compress import prune_channels
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8, generator=g)
    return prune_channels(distilled_student, 0.5), images, images[:100], torch.randint(0, 10, (100,), generator=g)


def test_bn_reestimation(capsys, pruned_and_images):
    passes(capsys, checks.check_bn_reestimation, lab_reestimate, *pruned_and_images)
    # without no_grad only memory is wasted; every layer in train mode is the same for this network (no dropout)
    passes(capsys, checks.check_bn_reestimation, lambda m, x: lab_reestimate(m, x, grad=True), *pruned_and_images)
    for kwargs, hint in [({"train": False}, "reset values"), ({"reset": False}, "barely moved"),
                         ({"momentum": False}, "momentum"), ({"evaluate": False}, "training mode"),
                         ({"batch_size": 100}, "differ from reestimate_batchnorm")]:
        fails_with(hint, checks.check_bn_reestimation, lambda m, x: lab_reestimate(m, x, **kwargs), *pruned_and_images)
    fails_with("returned None", checks.check_bn_reestimation, lambda m, x: None, *pruned_and_images)
    fails_with("return the model", checks.check_bn_reestimation, lambda m, x: 1.0, *pruned_and_images)
    fails_with("pruned network", checks.check_bn_reestimation, lab_reestimate, torch.nn.Linear(2, 2),
               *pruned_and_images[1:])


@pytest.mark.parametrize("answer", GARBAGE, ids=["None", "str", "dict", "mixed-list", "wrong-shape", "nan"])
def test_compress_labs_garbage_is_check_failed(answer, distilled_student, pruned_and_images):
    w = distilled_student.layers[0].conv1.weight.detach()
    calls = [
        lambda: checks.check_affine_quantization(answer, lab_quantize, w),
        lambda: checks.check_affine_quantization(lab_qparams, answer, w),
        lambda: checks.check_affine_quantization(lambda x: answer, lab_quantize, w),
        lambda: checks.check_affine_quantization(lab_qparams, lambda *a: answer, w),
        lambda: checks.check_channel_scales(answer, weight_errors(w), w, pt2e_weight(w)),
        lambda: checks.check_channel_scales(lambda x: answer, weight_errors(w), w, pt2e_weight(w)),
        lambda: checks.check_channel_scales(channel_scales, answer, w, pt2e_weight(w)),
        lambda: checks.check_channel_scales(channel_scales, weight_errors(w), w, answer),
        lambda: checks.check_int8_matmul(answer, *layer_product(distilled_student, 1)),
        lambda: checks.check_int8_matmul(lambda *a: answer, *layer_product(distilled_student, 1)),
        lambda: checks.check_channels_to_keep(answer, distilled_student, 0.5),
        lambda: checks.check_channels_to_keep(lambda m, a: answer, distilled_student, 0.5),
        lambda: checks.check_channels_to_keep(lambda m, a: [answer] * 3, distilled_student, 0.5),
        lambda: checks.check_bn_reestimation(answer, *pruned_and_images),
        lambda: checks.check_bn_reestimation(lambda m, x: answer, *pruned_and_images),
        lambda: checks.check_spatial_svd(answer, distilled_student.layers[0].conv2, 4),
        lambda: checks.check_spatial_svd(lambda c, r: answer, distilled_student.layers[0].conv2, 4),
        lambda: checks.check_spatial_svd(lambda c, r: (answer, answer), distilled_student.layers[0].conv2, 4),
    ]
    for call in calls:
        with pytest.raises(CheckFailed):
            call()


# 05_distill_student, section 1: the learner's epoch (check_train_epoch)


def _epoch(train=True, teacher_train=False, first_only=False, result="mean"):
    def train_epoch(student, teacher, batches, optimizer, T, alpha):
        student.train(train)
        teacher.train(teacher_train)
        losses = []
        for batch in batches:
            losses.append(_step()(student, teacher, batch.images, batch.labels, optimizer, T, alpha))
            if first_only:
                break
        return {"mean": sum(losses) / len(losses), "sum": sum(losses), "last": losses[-1], "none": None}[result]
    return train_epoch


def test_train_epoch(capsys):
    passes(capsys, checks.check_train_epoch, _epoch())
    fails_with("eval mode", checks.check_train_epoch, _epoch(train=False))
    fails_with("teacher's BatchNorm", checks.check_train_epoch, _epoch(teacher_train=True))
    fails_with("only the first batch", checks.check_train_epoch, _epoch(first_only=True))
    fails_with("sum of the losses", checks.check_train_epoch, _epoch(result="sum"))
    fails_with("last batch", checks.check_train_epoch, _epoch(result="last"))
    fails_with("returned None", checks.check_train_epoch, _epoch(result="none"))
    fails_with("raised ZeroDivisionError", checks.check_train_epoch, lambda *args: 1 / 0)
    fails_with("trained nothing", checks.check_train_epoch, lambda *args: None)
    for garbage in GARBAGE:
        with pytest.raises(CheckFailed):
            checks.check_train_epoch(garbage)
