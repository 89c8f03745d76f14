"""Checks for the exercises of notebooks 01 to 12: a pass message, or a hint diagnosed from the answer.

Every check recomputes the answer independently (with SciPy, plain PyTorch or labkit's reference functions)
and, when the learner's answer differs, compares it with what the usual mistakes produce (a missing ``T**2``,
``reduction="mean"``, probabilities where log-probabilities are expected, a reversed KL...), so that the
message names the mistake instead of only saying "wrong". A failed check raises :class:`CheckFailed`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import rel_entr, softmax
from scipy.stats import entropy
from torch import nn

from labkit.distillation import distillation_loss
from labkit.evaluate import expected_calibration_error, predict_logits
from labkit.loader import mixup


class CheckFailed(AssertionError):
    """An exercise's answer is missing or wrong; the message says what to look at."""


def _passed(what: str) -> None:
    print(f"✓ Test passed: {what}")


def _given(answer: Any, name: str) -> Any:
    if answer is None or answer is Ellipsis:
        raise CheckFailed(f"`{name}` is still empty: replace the `None` with your answer and run the cell again")
    return answer


def _tensor(answer: Any, name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """``answer`` as a float64 tensor (from a tensor, array, list or number), or a CheckFailed saying why not."""
    _given(answer, name)
    try:
        if isinstance(answer, (list, tuple)):
            t = torch.stack([torch.as_tensor(x, dtype=torch.float64) for x in answer]) if answer else torch.zeros(0)
        else:
            t = torch.as_tensor(answer).detach().to(torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise CheckFailed(f"`{name}` should hold numbers (a tensor, array, list or number), "
                          f"got {type(answer).__name__}") from None
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise CheckFailed(f"expected `{name}` of shape {tuple(shape)}, got {tuple(t.shape)}")
    return t


def _number(answer: Any, name: str) -> float:
    return _tensor(answer, name, shape=()).item()


def _compare(answer: Any, expected: Any, name: str, mistakes: dict[str, Any] | None = None,
             rtol: float = 1e-4, atol: float = 1e-6) -> None:
    """Return if ``answer`` matches ``expected``; else raise the hint of the first mistake whose value it matches."""
    expected = torch.as_tensor(expected, dtype=torch.float64)
    answer = _tensor(answer, name, shape=tuple(expected.shape))

    def close(value: Any) -> bool:
        return torch.allclose(answer, torch.as_tensor(value, dtype=torch.float64), rtol, atol, equal_nan=True)

    if close(expected):
        return
    for hint, value in (mistakes or {}).items():
        if torch.as_tensor(value).shape == answer.shape and close(value):
            raise CheckFailed(f"`{name}`: {hint}")
    if not torch.isfinite(answer).all():
        raise CheckFailed(f"`{name}` contains NaN or inf where the expected values are finite")
    gap = (answer - expected).abs().nan_to_num(math.inf).max().item()
    raise CheckFailed(f"`{name}` is not right yet: it differs from the expected value by up to {gap:.3g}")


def _call(fn: Any, name: str, *args: Any) -> Any:
    """Call the learner's function; a missing function, an exception or a ``None`` result becomes a hint."""
    if not callable(fn):
        raise CheckFailed(f"`{name}` should be a function, got {type(fn).__name__}")
    try:
        out = fn(*args)
    except Exception as err:  # any bug in the learner's code is reported, not re-raised
        raise CheckFailed(f"`{name}` raised {type(err).__name__}: {err}") from err
    if out is None:
        raise CheckFailed(f"`{name}` returned None: write its body and `return` the result")
    return out


def _index(answer: Any, name: str, n: int) -> int:
    value = _number(answer, name)
    if not (0 <= value < n and value == int(value)):  # also rejects NaN
        raise CheckFailed(f"`{name}` should be an image index between 0 and {n - 1}, got {value:g}")
    return int(value)


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Batch-mean KL(p || q) with SciPy, independent of labkit's and PyTorch's implementations."""
    return torch.tensor(rel_entr(p.detach().double().numpy(), q.detach().double().numpy()).sum(-1).mean())


def _soft(logits: torch.Tensor, T: float) -> torch.Tensor:
    return torch.from_numpy(softmax(logits.detach().double().numpy() / T, axis=-1))


def _class_means(p: torch.Tensor, groups: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Row c: the mean of ``p`` over the rows with ``groups == c`` among ``keep`` (NaN when there are none)."""
    return torch.stack([p[keep & (groups == c)].double().mean(0) for c in range(p.shape[1])])


# 01_dark_knowledge


def check_most_torn(torn: int, probs: torch.Tensor, classes: Sequence[str]) -> None:
    """Exercise 1 of 01_dark_knowledge: the image whose top two classes are deer and horse, closest in probability."""
    deer, horse = classes.index("deer"), classes.index("horse")
    top2 = probs.topk(2, dim=1).indices
    pool = ((top2 == deer).any(1) & (top2 == horse).any(1)).nonzero().flatten()
    gap = (probs[pool, deer] - probs[pool, horse]).abs()
    i = _index(torn, "torn", len(probs))
    if i in pool.tolist() and gap[pool.tolist().index(i)] <= gap.min() + 1e-6:  # a float32 near tie is fine
        return _passed(f"image {i}: deer {probs[i, deer]:.1%}, horse {probs[i, horse]:.1%}")
    if i == gap.argmin().item():
        raise CheckFailed("`torn` is a position in your list of deer/horse images, not an index into `probs`: "
                          "map it back with that list (e.g. `candidates[position]`)")
    if i == pool[gap.argmax()].item():
        raise CheckFailed("`torn` is the deer/horse image with the *largest* gap: take the smallest (argmin)")
    if i not in pool.tolist():
        a, b = (classes[c] for c in top2[i].tolist())
        raise CheckFailed(f"image {i}'s top two classes are {a} and {b}, not deer and horse")
    raise CheckFailed(f"image {i} is torn between deer and horse, but its gap {gap[pool.tolist().index(i)]:.3f} "
                      f"is not the smallest ({gap.min():.3f})")


def check_mistake_similarity(mean_pred_wrong: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor) -> None:
    """Exercise 2 of 01_dark_knowledge: the average soft prediction per true class, over the mistakes only."""
    pred, every = probs.argmax(1), torch.ones_like(labels, dtype=torch.bool)
    _compare(mean_pred_wrong, _class_means(probs, labels, pred != labels), "mean_pred_wrong", {
        "you averaged over all images: keep only those the teacher gets wrong (`pred != labels`)":
            _class_means(probs, labels, every),
        "you averaged the correct images: the mistakes are `pred != labels`":
            _class_means(probs, labels, pred == labels),
        "rows should be the *true* class (`labels`), not the teacher's prediction":
            _class_means(probs, pred, pred != labels),
    })
    _passed("row c is the teacher's average prediction on the class-c images it gets wrong")


def check_dark_knowledge_extremes(most: int, fewest: int, probs: torch.Tensor) -> None:
    """Exercise 3 of 01_dark_knowledge: the images with the most and the fewest dark-knowledge bits at T = 1."""
    rest = probs.double().clone().scatter_(1, probs.argmax(1, keepdim=True), 0.0)
    bits = math.log2(probs.shape[1] - 1) - entropy(rest.numpy(), base=2, axis=1)  # SciPy renormalises the rest
    total = entropy(probs.double().numpy(), base=2, axis=1)
    i, j = _index(most, "most", len(probs)), _index(fewest, "fewest", len(probs))

    def top(k: int) -> bool:  # within float32 rounding of the largest: a near tie is as good an answer
        return bits[k] >= bits.max() - 1e-4

    def bottom(k: int) -> bool:
        return bits[k] <= bits.min() + 1e-4

    if top(i) and bottom(j):
        return _passed(f"image {i} has {bits[i]:.2f} dark-knowledge bits, image {j} {bits[j]:.3f}")
    if top(j) and bottom(i):
        raise CheckFailed("`most` and `fewest` are swapped")
    if i == total.argmax() or j == total.argmin():
        raise CheckFailed("you ranked the images by their entropy: the dark-knowledge bits are log2(9) minus the "
                          "entropy of the nine non-top probabilities, renormalised (`dark_knowledge_bits`)")
    wrong = "fewest" if top(i) else "most"
    raise CheckFailed(f"`{wrong}` is not the extreme image: the bits range from {bits.min():.3f} to {bits.max():.2f}, "
                      f"yours has {bits[i if wrong == 'most' else j]:.3f}")


def check_label_smoothing(smoothed: torch.Tensor, labels: torch.Tensor, epsilon: float = 0.2,
                          num_classes: int = 10) -> None:
    """Exercise 4 of 01_dark_knowledge: label-smoothed targets, ``(1 - epsilon) * one_hot + epsilon / classes``."""
    one_hot = F.one_hot(labels, num_classes).double()
    true_share = 1 - epsilon + epsilon / num_classes
    _compare(smoothed, (1 - epsilon) * one_hot + epsilon / num_classes, "smoothed", {
        f"epsilon is spread over the {num_classes - 1} wrong classes only: label smoothing spreads it over all "
        f"{num_classes}, so the true class keeps {true_share:g}":
            (1 - epsilon) * one_hot + epsilon / (num_classes - 1) * (1 - one_hot),
        f"the true class lacks its share epsilon / {num_classes}: every row must sum to 1":
            (1 - epsilon) * one_hot + epsilon / num_classes * (1 - one_hot),
        "these are the one-hot labels: no smoothing yet": one_hot,
    })
    _passed(f"{true_share:g} on the true class, {epsilon / num_classes:g} on each of the others")


# 02_temperature


def check_half_as_likely(T_half: float, z: torch.Tensor, top: int, other: int) -> None:
    """Exercise 1 of 02_temperature: the T at which class ``other`` gets half the probability of class ``top``."""
    T = _number(T_half, "T_half")
    gap = (z[top] - z[other]).item()
    p = torch.softmax(z.double(), -1)
    _compare(T, gap / math.log(2), "T_half", {
        "wrong sign: z_top - z_other is positive here, so T must be too": -gap / math.log(2),
        "you multiplied by ln 2: exp(-gap / T) = 1/2 gives T = gap / ln 2": gap * math.log(2),
        "upside down: exp(-gap / T) = 1/2 gives T = gap / ln 2, not ln 2 / gap": math.log(2) / gap,
        "you used probabilities: the formula needs the logits z": (p[top] - p[other]).item() / math.log(2),
    }, rtol=1e-3)
    q = torch.softmax(z.double() / T, -1)
    _passed(f"at T = {T:.3f}, p_other / p_top = {q[other] / q[top]:.3f}")


def check_entropy_by_correctness(entropy_right: Sequence[float], entropy_wrong: Sequence[float],
                                 logits: torch.Tensor, labels: torch.Tensor, temperatures: Sequence[float]) -> None:
    """Exercise 2 of 02_temperature: mean entropy (bits) against T, for the images the teacher gets right and wrong."""
    right = logits.argmax(1) == labels

    def mean_entropy(keep: torch.Tensor, base: float = 2) -> torch.Tensor:
        return torch.tensor([entropy(_soft(logits[keep], T).numpy(), base=base, axis=1).mean() for T in temperatures])

    every, expected = torch.ones_like(right), {}
    for name, answer, keep in (("entropy_right", entropy_right, right), ("entropy_wrong", entropy_wrong, ~right)):
        expected[name] = mean_entropy(keep)
        if torch.isnan(_tensor(answer, name)).any():
            raise CheckFailed(f"`{name}` contains NaN: at small T some probabilities are exactly 0, and 0 * log(0) "
                              "is NaN in floating point; count 0 log 0 as 0, as `entropy_bits` of section 3 does")
        _compare(answer, expected[name], name, {
            "in nats: measure entropy in bits (log2), as in section 3": mean_entropy(keep, math.e),
            "these are the other group's values: right means `logits.argmax(1) == labels`": mean_entropy(~keep),
            "you averaged over all images: split them by `logits.argmax(1) == labels`": mean_entropy(every),
        }, rtol=1e-3)
    k = int(np.argmin(np.abs(np.log(np.asarray(temperatures, dtype=float)))))  # the temperature closest to 1
    _passed(f"at T = {temperatures[k]:.2g}: {expected['entropy_right'][k]:.2f} bits on the images the teacher gets "
            f"right, {expected['entropy_wrong'][k]:.2f} on its mistakes")


def check_numpy_softmax(numpy_softmax: Callable, logits: torch.Tensor) -> None:
    """Exercise 3 of 02_temperature: a temperature softmax in NumPy, compared with SciPy's on the teacher's logits."""
    z = logits.double().numpy()
    for T in (0.05, 1.0, 50.0):
        out = _call(numpy_softmax, "numpy_softmax", z.copy(), T)
        if isinstance(out, torch.Tensor):
            raise CheckFailed("`numpy_softmax` returned a torch tensor: this exercise is without PyTorch, "
                              "return a NumPy array")
        _compare(out, softmax(z / T, axis=-1), f"numpy_softmax(logits, T={T:g})", {
            "the temperature is ignored: divide the logits by T": softmax(z, axis=-1),
            "the logits are multiplied by T: divide them": softmax(z * T, axis=-1),
            "normalised over the images (axis 0): normalise each row, over the classes (the last axis)":
                softmax(z / T, axis=0),
        }, rtol=1e-5)
    extreme = np.array([[1000.0, 0.0, -1000.0]])
    out = _call(numpy_softmax, "numpy_softmax", extreme.copy(), 1.0)
    if not np.isfinite(np.asarray(out, dtype=float)).all():
        raise CheckFailed("`numpy_softmax` overflows on large logits (NaN or inf for [1000, 0, -1000]): subtract "
                          "each row's maximum of z / T before np.exp")
    _compare(out, softmax(extreme, axis=-1), "numpy_softmax([[1000, 0, -1000]], T=1)")
    _passed("numpy_softmax matches scipy.special.softmax at T = 0.05, 1 and 50, and does not overflow")


# 03_kl_divergence


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


# 04_cifar_teacher


def check_tta_passes(passes_per_image: int) -> None:
    """Exercise 1 of 04_cifar_teacher: forward passes per image of ``predict_logits(..., tta="flip_translate")``."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    predict_logits(model, torch.rand(4, 3, 8, 8), tta="flip_translate")  # one batch: one call is one pass per image
    n = _number(passes_per_image, "passes_per_image")
    expected = len(calls)
    if n == 2:
        raise CheckFailed("`passes_per_image`: 2 is the cost of tta='flip' (the image and its mirror); "
                          "flip_translate also uses shifted copies")
    if n == expected // 2:
        raise CheckFailed(f"`passes_per_image`: {n:g} positions, but every one is also mirrored")
    if n > expected and n % expected == 0:
        raise CheckFailed("`passes_per_image` counts several images or batches: give the passes for one image")
    _compare(n, expected, "passes_per_image")
    _passed(f"flip_translate costs {expected} forward passes per image, 6 times plain inference")


def check_temperature_scaling(ece_by_T: dict, logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Exercise 2 of 04_cifar_teacher: the ECE of ``logits / T`` for several temperatures T between 0.5 and 1.5."""
    if not isinstance(_given(ece_by_T, "ece_by_T"), dict) or len(ece_by_T) < 3:
        raise CheckFailed("`ece_by_T` should be a dict {T: ECE of logits / T} with at least 3 temperatures")
    for T, value in ece_by_T.items():
        T = _number(T, "a temperature (key of ece_by_T)")
        if not (math.isfinite(T) and T > 0):  # logits / 0 is inf or NaN: no ECE to compare with
            raise CheckFailed(f"`ece_by_T` has the temperature {T:g}: a temperature must be a finite number > 0, as "
                              "it divides the logits (logits / T); try temperatures between 0.5 and 1.5")
        ece = expected_calibration_error(logits / T, labels)
        _compare(value, ece, f"ece_by_T[{T:g}]", {
            "you multiplied the logits by T: temperature scaling divides them, logits / T":
                expected_calibration_error(logits * T, labels),
            "that is the ECE of the unscaled logits: divide them by T first":
                expected_calibration_error(logits, labels),
            "in percent: give the ECE as a fraction between 0 and 1": 100 * ece,
        }, rtol=1e-3)
    best = min(ece_by_T, key=ece_by_T.get)
    _passed(f"the lowest ECE among your temperatures is {ece_by_T[best]:.4f}, at T = {best:g}")


def check_confident_mistakes(worst8: Sequence[int], logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Exercise 3 of 04_cifar_teacher: the 8 test images the teacher gets wrong with the highest confidence."""
    idx = _tensor(worst8, "worst8", shape=(8,)).long()
    if idx.min() < 0 or idx.max() >= len(labels):
        raise CheckFailed(f"`worst8` should hold image indices between 0 and {len(labels) - 1}")
    confidence, pred = torch.softmax(logits.double(), 1).max(1)
    wrong = (pred != labels).nonzero().flatten()
    right = [i for i in idx.tolist() if pred[i] == labels[i]]
    if right:
        raise CheckFailed(f"`worst8`: the teacher classifies image(s) {right} correctly; keep only `pred != labels`")
    top = confidence[wrong].sort(descending=True).values[:8]
    if torch.allclose(confidence[idx].sort(descending=True).values, top):
        return _passed(f"the teacher's 8 most confident mistakes, from {top[0]:.1%} down to {top[-1]:.1%}")
    if set(idx.tolist()) == set(wrong[confidence[wrong].argsort()[:8]].tolist()):
        raise CheckFailed("`worst8` are the *least* confident mistakes: sort by confidence in descending order")
    if set(idx.tolist()) == set(wrong[logits[wrong].max(1).values.argsort(descending=True)[:8]].tolist()):
        raise CheckFailed("`worst8` is ranked by the largest logit: confidence is the largest *probability* (softmax)")
    raise CheckFailed(f"`worst8` are mistakes, but not the 8 most confident: those have at least {top[-1]:.1%}, "
                      f"one of yours has {confidence[idx].min():.1%}")


def check_smoothing_calibration(calibration_demo: Any, labels: torch.Tensor) -> None:
    """Exercise 4 of 04_cifar_teacher: accuracy and mean confidence of two small models, trained with label
    smoothing 0.2 and without it.

    ``calibration_demo[eps]`` for ``eps`` in (0.2, 0.0) holds ``"logits"`` (on the images of ``labels``), ``"acc"``
    and ``"confidence"`` (mean top probability); both numbers are recomputed from the logits.
    """
    if not isinstance(calibration_demo, dict) or sorted(calibration_demo) != [0.0, 0.2]:
        raise CheckFailed("`calibration_demo` should be a dict with keys 0.2 and 0.0 (the label smoothing of each "
                          "model), each holding 'logits', 'acc' and 'confidence'")
    logits = {}
    for eps, entry in calibration_demo.items():
        if not isinstance(entry, dict) or not {"logits", "acc", "confidence"} <= set(entry):
            raise CheckFailed(f"`calibration_demo[{eps:g}]` should be a dict with 'logits', 'acc' and 'confidence'")
        z = _tensor(entry["logits"], f"calibration_demo[{eps:g}]['logits']", shape=(len(labels), 10))
        probs = torch.from_numpy(softmax(z.numpy(), axis=1))
        _compare(entry["acc"], (probs.argmax(1) == labels).double().mean(), f"calibration_demo[{eps:g}]['acc']")
        _compare(entry["confidence"], probs.max(1).values.mean(), f"calibration_demo[{eps:g}]['confidence']", {
            "that is the mean probability of the true class; confidence is the *top* probability":
                probs[torch.arange(len(labels)), labels].mean(),
        })
        logits[eps] = z
    if torch.allclose(logits[0.0], logits[0.2]):
        raise CheckFailed("both entries hold the same logits: train a second model with `label_smoothing=0.0`")
    c = {eps: calibration_demo[eps]["confidence"] for eps in logits}
    _passed(f"mean confidence {c[0.2]:.1%} with label smoothing 0.2, {c[0.0]:.1%} without")


# 05_distill_student


def check_distillation_step(my_step: Callable) -> None:
    """Exercise 1 of 05_distill_student: one training step, ``my_step(student, teacher, images, labels, optimizer,
    T, alpha)``: the teacher's logits without gradients, the student's, :func:`labkit.distillation_loss`, backward,
    an optimizer step; it returns the loss as a number. Two steps are compared with a reference on a tiny model."""
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.randn(16, 8, generator=gen), torch.randint(0, 3, (16,), generator=gen)
    T, alpha = 2.0, 0.7

    def nets() -> tuple[nn.Module, nn.Module]:
        with torch.random.fork_rng(devices=[]):  # the learner's random state is left as it was
            torch.manual_seed(0)
            return nn.Linear(8, 3), nn.Linear(8, 3)

    def run(step: Callable) -> tuple[list[float], list[torch.Tensor], list[torch.Tensor]]:
        student, teacher = nets()
        optimizer = torch.optim.SGD(student.parameters(), lr=0.5)
        losses = [step(student, teacher, images, labels, optimizer, T, alpha) for _ in range(2)]
        return losses, [p.detach().clone() for p in student.parameters()], [p.detach() for p in teacher.parameters()]

    def reference(student, teacher, x, y, optimizer, T, alpha, *, zero=True, t=None, a=None):
        with torch.no_grad():
            teacher_logits = teacher(x)
        loss = distillation_loss(student(x), teacher_logits, y, T=T if t is None else t, alpha=alpha if a is None else a)
        if zero:
            optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    def attempt(step: Callable) -> tuple[list[float], list[torch.Tensor], list[torch.Tensor]]:
        try:
            return run(step)
        except CheckFailed:
            raise
        except Exception as err:  # any bug in the learner's code is reported, not re-raised
            if "does not require grad" in str(err):
                raise CheckFailed("the loss has no gradient to follow: are student and teacher logits swapped? "
                                  "distillation_loss(student_logits, teacher_logits, labels, ...) detaches its "
                                  "second argument") from err
            raise CheckFailed(f"`my_step` raised {type(err).__name__}: {err}") from err

    if not callable(my_step):
        raise CheckFailed(f"`my_step` should be a function, got {type(my_step).__name__}")
    losses, weights, teacher_weights = attempt(my_step)
    if any(v is None for v in losses):
        raise CheckFailed("the step returned None: `return loss.item()` at the end")
    if any(not torch.equal(a, b) for a, b in zip(teacher_weights, nets()[1].parameters())):
        raise CheckFailed("the teacher's weights changed: only the student learns (the optimizer holds the "
                          "student's parameters; compute the teacher's logits under torch.no_grad())")
    expected_losses, expected, _ = run(reference)
    if all(torch.allclose(w, e, atol=1e-6) for w, e in zip(weights, expected)):
        if not torch.allclose(_tensor(losses, "the returned losses"), torch.tensor(expected_losses, dtype=torch.float64),
                              atol=1e-6):
            raise CheckFailed("the weights are right, the returned value is not: `return loss.item()`, this step's loss")
        _passed(f"two steps, losses {expected_losses[0]:.4f} then {expected_losses[1]:.4f}, weights as expected")
        return
    mistakes = {
        "the gradients pile up from step to step: call optimizer.zero_grad() before loss.backward()":
            dict(zero=False),
        "the temperature is missing: pass T=T to distillation_loss": dict(t=1.0),
        "alpha weights the teacher's soft term: pass alpha=alpha, not 1 - alpha": dict(a=1 - alpha),
    }
    for hint, wrong in mistakes.items():
        _, value, _ = run(lambda *args, wrong=wrong: reference(*args, **wrong))
        if all(torch.allclose(w, v, atol=1e-6) for w, v in zip(weights, value)):
            raise CheckFailed(hint)
    if all(torch.equal(w, v) for w, v in zip(weights, nets()[0].parameters())):
        raise CheckFailed("the student did not change: call loss.backward() and optimizer.step()")
    raise CheckFailed("after two steps the student's weights differ from the expected ones: compute the teacher's "
                      "logits, the student's, distillation_loss(student_logits, teacher_logits, labels, T=T, "
                      "alpha=alpha), then zero_grad, backward and step")


def check_unweighted_kl(train_kl: Sequence[float], history: dict, T: float, alpha: float) -> None:
    """Exercise 3 of 05_distill_student: the unweighted KL(teacher || student) of a run, from its ``kl_part``."""
    kl_part = torch.tensor(history["kl_part"], dtype=torch.float64)
    _compare(train_kl, kl_part / (alpha * T**2), "train_kl", {
        "you divided by alpha only: the soft term is alpha * T**2 * KL, so divide by T**2 too": kl_part / alpha,
        "you divided by T**2 only: the soft term is weighted by alpha as well": kl_part / T**2,
        "you multiplied by the weights: divide kl_part by alpha * T**2": kl_part * alpha * T**2,
        "that is kl_part itself, still weighted: divide by alpha * T**2": kl_part,
    })
    _passed(f"KL(teacher || student) at T = {T:g}, epoch by epoch: " + ", ".join(f"{v:.4f}" for v in train_kl))


def check_agreement_vs_accuracy(agreements: Sequence[float], accuracies: Sequence[float], runs: list[dict]) -> None:
    """Exercise 4 of 05_distill_student: final validation agreement and accuracy of every run, in run order."""
    for name, answer, key in (("agreements", agreements, "val_agreement"), ("accuracies", accuracies, "val_acc")):
        history = torch.tensor([r["history"][key] for r in runs], dtype=torch.float64)
        _compare(answer, history[:, -1], name, {
            "these are the first epoch's values: use the final epoch (`[-1]`), as every number in this notebook":
                history[:, 0],
            "in percent: use fractions between 0 and 1": 100 * history[:, -1],
        })
    _passed(f"{len(runs)} runs: agreement and accuracy of the final epoch")


# 06_tuning_temperature_and_alpha


def check_dark_mass(dark_mass: float, logits: torch.Tensor, T: float) -> None:
    """Exercise 2 of 06_tuning_temperature_and_alpha: the mean probability off the top class at temperature T."""
    def mass(scaled: torch.Tensor) -> float:
        return (1 - torch.from_numpy(softmax(scaled.double().numpy(), axis=1)).max(1).values).mean().item()

    _compare(dark_mass, mass(logits / T), "dark_mass", {
        "that is the top class's probability: the dark mass is 1 - top": 1 - mass(logits / T),
        "the logits are multiplied by T: divide them": mass(logits * T),
        "the temperature is missing: that is the dark mass at T = 1": mass(logits),
        "summed over images: take the mean": mass(logits / T) * len(logits),
    })
    _passed(f"dark mass at T = {T:g}: {dark_mass:.3f}")


# 07_ensemble_teachers


def check_probability_average(avg_probs: torch.Tensor, member_logits: Sequence[torch.Tensor]) -> None:
    """Exercise 1 of 07_ensemble_teachers: the ensemble's prediction, the mean of the members' probabilities."""
    probs = torch.stack([_soft(z, 1.0) for z in member_logits])
    expected = probs.mean(0)
    _compare(avg_probs, expected, "avg_probs", {
        "you averaged the logits: average the members' probabilities (softmax each member first)":
            _soft(torch.stack(list(member_logits)).double().mean(0), 1.0),
        f"rows sum to {len(member_logits)}: divide the sum by the number of members": probs.sum(0),
        "these are log-probabilities: return the probabilities themselves": expected.log(),
        f"only the first {len(member_logits) - 1} members: include all {len(member_logits)}": probs[:-1].mean(0),
    })
    _passed(f"the mean probability vector of {len(member_logits)} members")


def check_disagreement(disagree: torch.Tensor, conf_disagree: float, conf_agree: float,
                       member_logits: Sequence[torch.Tensor], ensemble_logits: torch.Tensor) -> None:
    """Exercise 3 of 07_ensemble_teachers: where the members do not all agree, and the ensemble's top probability there."""
    predictions = torch.stack([z.argmax(1) for z in member_logits])
    expected = (predictions != predictions[0]).any(0)
    mask = _tensor(disagree, "disagree", shape=tuple(expected.shape))
    if torch.equal(mask.bool(), ~expected):
        raise CheckFailed("`disagree` is True where the members *agree*: invert it")
    if len(member_logits) > 2 and not torch.equal(expected, predictions[0] != predictions[1]) \
            and torch.equal(mask.bool(), predictions[0] != predictions[1]):
        raise CheckFailed(f"that compares the first two members only: look at all {len(member_logits)}")
    _compare(mask, expected, "disagree", {})
    top = _soft(ensemble_logits, 1.0).max(1).values
    max_logit = ensemble_logits.double().max(1).values
    for name, answer, keep in (("conf_disagree", conf_disagree, expected), ("conf_agree", conf_agree, ~expected)):
        _compare(answer, top[keep].mean(), name, {
            "swapped with the other group": top[~keep].mean(),
            "that is the mean of the largest *logit*: the top probability needs the softmax": max_logit[keep].mean(),
            "averaged over all images: keep only this group": top.mean(),
        })
    _passed(f"{int(expected.sum())} disagreements: top probability {conf_disagree:.1%} there, "
            f"{conf_agree:.1%} elsewhere")


# 08_beyond_logits


def check_inconsistent_fm_loss(inconsistent_fm_loss: Callable) -> None:
    """Exercise 3 of 08_beyond_logits: function matching with an inconsistent teacher.

    ``inconsistent_fm_loss(student, teacher, clean, blended, T)`` must be T**2 * KL(teacher on the clean images
    || student on the blends) at temperature T, averaged over the batch; it is tried on two small linear models.
    """
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # the two stand-in models' weights
    student, teacher = (nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10)) for _ in range(2))
    clean = torch.rand(8, 3, 4, 4, generator=g)
    blended = mixup(clean, g)

    def loss(teacher_sees: torch.Tensor, student_sees: torch.Tensor, T: float, reverse: bool = False) -> torch.Tensor:
        p, q = _soft(teacher(teacher_sees).detach(), T), _soft(student(student_sees).detach(), T)
        return T**2 * (_kl(q, p) if reverse else _kl(p, q))

    for T in (2.0, 1.0):
        out = _call(inconsistent_fm_loss, "inconsistent_fm_loss", student, teacher, clean, blended, T)
        _compare(out, loss(clean, blended, T), f"inconsistent_fm_loss at T={T:g}", {
            "the teacher sees the blend: that is the consistent loss; here the teacher sees `clean`":
                loss(blended, blended, T),
            "the student must see the blend and the teacher the clean images, not the other way round":
                loss(blended, clean, T),
            "forgot to multiply the KL by T**2": loss(clean, blended, T) / T**2,
            "the KL is reversed: use KL(teacher || student)": loss(clean, blended, T, reverse=True),
            "used reduction='mean': use 'batchmean'": loss(clean, blended, T) / 10,
        })
    _passed("inconsistent_fm_loss: T² · KL(teacher on clean images ‖ student on their blends)")


# 09_compress_and_deploy


def check_pruned_int8_row(row: dict, rows: dict[str, dict]) -> None:
    """Exercise 1 of 09_compress_and_deploy: the deployment row of the fine-tuned, channel-pruned student in int8."""
    keys = {"test_acc", "params", "stored_kb", "images_per_s"}
    if not isinstance(_given(row, "pruned_int8_row"), dict) or not keys <= set(row):
        raise CheckFailed("`pruned_int8_row` should be the dict that labkit.compress.deployment_row returns")
    pruned, int8 = rows["distilled, 50% channels removed"], rows["student, distilled, int8"]
    if row["params"] == rows["student, distilled"]["params"]:
        raise CheckFailed("`pruned_int8_row` measures the unpruned student: quantize the channel-pruned, "
                          "fine-tuned model")
    if row["params"] != pruned["params"]:
        raise CheckFailed(f"`pruned_int8_row` counts {row['params']:,} parameters, the channel-pruned student has "
                          f"{pruned['params']:,}: pass `float_model=` the pruned float model it came from")
    if row["stored_kb"] > 0.5 * pruned["stored_kb"]:
        raise CheckFailed("`pruned_int8_row` stores float32 weights: measure the int8 model "
                          "(`compile_int8(model, calibration)`), with `float_model=model`")
    _passed(f"pruned + int8: {row['test_acc']:.1%}, {row['stored_kb']:.0f} KB, {row['images_per_s']:.0f} img/s "
            f"(int8 distilled: {int8['test_acc']:.1%}, {int8['stored_kb']:.0f} KB, {int8['images_per_s']:.0f} img/s)")


# 10_omitted_class


def _accuracy_with_bias(logits: np.ndarray, labels: np.ndarray, omitted: int, bias: float,
                        only: np.ndarray | None = None) -> float:
    shifted = logits.copy()
    shifted[:, omitted] += bias
    right = shifted.argmax(1) == labels
    return float(right[only].mean() if only is not None else right.mean())


def check_choose_bias(my_choose_bias: Callable) -> None:
    """Exercise 1 of 10_omitted_class: the bias of the omitted class that maximises overall validation accuracy.

    ``my_choose_bias(logits, labels, omitted, grid)`` must return the smallest value of ``grid`` at which the
    accuracy over all images is highest. It is compared with a NumPy computation on random logits whose omitted
    class is held down (as in a student that never saw it), and a mismatch with the usual mistakes.
    """
    g = torch.Generator().manual_seed(0)
    grid = torch.linspace(0.0, 6.0, 61)
    for omitted in (3, 7):
        labels = torch.randint(0, 10, (400,), generator=g)
        logits = torch.randn(400, 10, generator=g, dtype=torch.float64) + 2.0 * F.one_hot(labels, 10)
        logits[:, omitted] -= 3.0
        given = logits.clone()
        answer = _number(_call(my_choose_bias, "my_choose_bias", logits, labels, omitted, grid),
                         "my_choose_bias(...)")
        if not torch.equal(logits, given):
            raise CheckFailed("`my_choose_bias` changed the logits it was given: add the bias to a copy "
                              "(`logits.clone()`), or every later bias is added on top of the earlier ones")
        z, y = logits.numpy(), labels.numpy()
        overall = np.array([_accuracy_with_bias(z, y, omitted, float(b)) for b in grid])
        recall = np.array([_accuracy_with_bias(z, y, omitted, float(b), y == omitted) for b in grid])
        best = np.flatnonzero(overall == overall.max())
        if math.isclose(answer, float(grid[best[0]]), abs_tol=1e-6):
            continue
        if math.isclose(answer, float(grid[best[-1]]), abs_tol=1e-6):
            raise CheckFailed("several biases tie for the best accuracy and you return the largest: return the "
                              "smallest, the one that changes the student least")
        if math.isclose(answer, float(grid[int(np.argmax(recall))]), abs_tol=1e-6):
            raise CheckFailed("that bias maximises the accuracy on the omitted class only, which a large enough "
                              "bias always drives up: maximise the accuracy over all the images")
        raise CheckFailed(f"for omitted class {omitted} you return a bias of {answer:g}, where the best is "
                          f"{float(grid[best[0]]):g}: try every value of `grid` and keep the first with the "
                          "highest overall accuracy")
    _passed("the smallest bias with the best overall accuracy, on two random cases")


def check_where_cats_go(cats_go_to: Any, runs: dict[str, list[dict]], classes: Sequence[str]) -> None:
    """Exercise 2 of 10_omitted_class: for each arm, the class that receives most of the omitted class's test
    images before the bias, summed over the seeds (``omitted_row`` of each run)."""
    if not isinstance(cats_go_to, dict) or set(cats_go_to) != set(runs):
        raise CheckFailed(f"`cats_go_to` should be a dict with one class name per arm, keys {sorted(runs)}")
    for arm, arm_runs in runs.items():
        before = np.sum([r["omitted_row"] for r in arm_runs], 0)
        after = np.sum([r["omitted_row_biased"] for r in arm_runs], 0)
        expected, got = classes[int(np.argmax(before))], cats_go_to[arm]
        if got == expected:
            continue
        if isinstance(got, (int, np.integer)) and not isinstance(got, bool) and got == int(np.argmax(before)):
            raise CheckFailed(f"`cats_go_to[{arm!r}]` is an index: give the class's name, `classes[index]`")
        if got == classes[int(np.argmax(after))]:
            raise CheckFailed(f"`cats_go_to[{arm!r}]` is {got!r}, where they go *after* the bias: use "
                              "`omitted_row`, the predictions before it")
        raise CheckFailed(f"`cats_go_to[{arm!r}]` is {got!r}: add up the seeds' `omitted_row` (test images of the "
                          "omitted class, counted by predicted class) and take the class with the largest count")
    _passed(", ".join(f"{arm}: {cats_go_to[arm]}" for arm in runs))


# 11_decision_boundaries


def check_pseudo_labels(pseudo: torch.Tensor, y: torch.Tensor, labelled: torch.Tensor,
                        teacher_logits: torch.Tensor) -> None:
    """Exercise 1 of 11_decision_boundaries: the hard pseudo-labels of a transfer set (own label where there is one,
    the teacher's top class elsewhere)."""
    guess = teacher_logits.argmax(1)
    _compare(pseudo, torch.where(labelled, y, guess), "pseudo", {
        "that is the teacher's top class everywhere: keep your own label where `labelled` is True": guess,
        "those are the given labels everywhere: the unlabelled points have none, use the teacher's top class there": y,
        "labelled and unlabelled are swapped: `torch.where(labelled, y, ...)` keeps the label where it exists":
            torch.where(labelled, guess, y),
    })
    _passed(f"{int(labelled.sum())} own labels, {int((~labelled).sum())} from the teacher, which disagrees with the "
            f"given label on {int((guess != y)[labelled].sum())} of the labelled points")


def _accuracies(arms: Any, arm: str, n: int, name: str) -> np.ndarray:
    """``arms[arm]`` as ``n`` accuracies (one per seed), or a CheckFailed saying what is missing."""
    if not isinstance(arms, dict) or arm not in arms:
        raise CheckFailed(f"`{name}` should be a dict with an entry {arm!r}: the test accuracy of each seed")
    values = _tensor(arms[arm], f"{name}[{arm!r}]")
    if values.shape != (n,):
        raise CheckFailed(f"`{name}[{arm!r}]` should hold one accuracy per seed ({n}), got shape {tuple(values.shape)}")
    return values.numpy()


def check_noisy_rerun(noisy: dict, scores: dict[str, Sequence[float]]) -> None:
    """Exercise 2 of 11_decision_boundaries: section 2 rerun at 10% and 30% label noise.

    ``noisy[noise]["accs"]`` holds the test accuracy of each seed for ``"labels only"`` and ``"distilled"``
    (``T = 2, alpha = 0.9``), ``noisy[noise]["gain"]`` their paired difference. At 10% the rerun is section 2 itself
    (same points, the teacher's steps chosen the same way, same seeds and steps), so it must reproduce ``scores``.
    """
    if not isinstance(_given(noisy, "noisy"), dict) or set(noisy) != {0.1, 0.3}:
        raise CheckFailed("`noisy` should be a dict with one entry per label noise, keys 0.1 and 0.3")
    n, accs = len(scores["labels only"]), {}
    for noise, run in noisy.items():
        name = f"noisy[{noise}]"
        if not isinstance(run, dict) or not isinstance(run.get("gain"), dict) or "mean" not in run["gain"]:
            raise CheckFailed(f"`{name}` should hold 'accs' (per arm and seed) and 'gain' (from paired_gains)")
        accs[noise] = {arm: _accuracies(run.get("accs"), arm, n, f"{name}['accs']")
                       for arm in ("labels only", "distilled")}
        gain = accs[noise]["distilled"].mean() - accs[noise]["labels only"].mean()
        _compare(run["gain"]["mean"], gain, f"{name}['gain']['mean']", {
            "that is labels only - distilled: the gain is distilled - labels only": -gain})
    for arm, section_2 in (("labels only", "labels only"), ("distilled", "distilled, T = 2")):
        if not np.allclose(accs[0.1][arm], scores[section_2]):
            raise CheckFailed(f"at 10% noise `noisy[0.1]['accs'][{arm!r}]` should reproduce section 2's "
                              f"{section_2!r} exactly: same points (seed 0), same student seeds and steps")
    _passed(f"at 10% noise the rerun reproduces section 2 over {n} seeds; the gain moved from "
            f"{100 * noisy[0.1]['gain']['mean']:+.2f} to {100 * noisy[0.3]['gain']['mean']:+.2f} points at 30%")


def check_bigger_student(big: dict, big_gain: dict, few: dict[str, Sequence[float]]) -> None:
    """Exercise 3 of 11_decision_boundaries: section 3's four arms with a (64, 64) student, and its paired gain.

    ``big`` maps each arm of section 3 to one test accuracy per seed, ``big_gain`` is transfer set - labels only
    (:func:`labkit.stats.paired_gains`).
    """
    n = len(few["labels only"])
    values = {arm: _accuracies(_given(big, "big"), arm, n, "big") for arm in few}
    if all(np.allclose(values[arm], few[arm]) for arm in few):
        raise CheckFailed("`big` holds the 16-unit student's accuracies of section 3: pass hidden=(64, 64)")
    if not isinstance(_given(big_gain, "big_gain"), dict) or "mean" not in big_gain:
        raise CheckFailed("`big_gain` should be the dict of paired_gains for transfer set - labels only")
    gain = values["distilled, transfer set"].mean() - values["labels only"].mean()
    _compare(big_gain["mean"], gain, "big_gain['mean']", {
        "that is labels only - transfer set: the gain is transfer set - labels only": -gain})
    _passed(f"the (64, 64) student over {n} seeds: transfer set - labels only {100 * gain:+.2f} points")


# 12_distill_language_model


def check_reverse_kl(my_reverse_kl: Callable) -> None:
    """Exercise 1 of 12_distill_language_model: the per-token reverse KL of (batch, time, vocab) logits.

    ``my_reverse_kl(student_logits, teacher_logits)`` must be KL(q || p) = sum_v q_v (log q_v - log p_v) at every
    position, q the student's softmax and p the teacher's, averaged over the batch x time positions; it is compared
    with a float64 SciPy computation on random logits of two shapes, and a mismatch with the usual mistakes.
    """
    g = torch.Generator().manual_seed(0)
    for shape in ((3, 5, 11), (2, 7, 4)):
        s = 2 * torch.randn(*shape, generator=g, dtype=torch.float64)
        t = 3 * torch.randn(*shape, generator=g, dtype=torch.float64)
        q, p = _soft(s, 1.0), _soft(t, 1.0)
        batch, time, vocab = shape

        def per_position(terms: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(terms.sum(-1))  # (batch, time)

        reverse = per_position(rel_entr(q.numpy(), p.numpy()))
        out = _call(my_reverse_kl, "my_reverse_kl", s.clone(), t.clone())
        if isinstance(out, torch.Tensor) and out.dim() > 0:
            hint = (" one per position: average them over the batch and time positions" if tuple(out.shape) ==
                    (batch, time) else "")
            raise CheckFailed(f"`my_reverse_kl` returned shape {tuple(out.shape)}{hint}; return one number")
        name = f"my_reverse_kl on logits of shape {shape}"
        log_q, log_p = np.log(q.numpy()), np.log(p.numpy())
        _compare(out, reverse.mean(), name, {
            "that is the forward KL, KL(teacher || student): the reverse one averages under the student, "
            "sum_v q_v (log q_v - log p_v)": per_position(rel_entr(p.numpy(), q.numpy())).mean(),
            "summed over the positions: average over the batch x time positions": reverse.sum(),
            "averaged over the batch only (summed over time): average over every position": reverse.sum(1).mean(),
            "averaged over the vocabulary too (reduction='mean'): sum over the vocabulary, average over positions":
                reverse.mean() / vocab,
            "used probabilities where log-probabilities belong: q (log q - log p) needs log_softmax":
                per_position(q.numpy() * (q.numpy() - p.numpy())).mean(),
            "F.kl_div(input, target) computes target (log target - input): pass the teacher's *log*-probabilities "
            "as input and the student's probabilities as target": per_position(q.numpy() * (log_q - p.numpy())).mean(),
            "the logits are not log-probabilities: apply log_softmax to both first":
                per_position(q.numpy() * (s.numpy() - t.numpy())).mean(),
            "the sign is flipped: a KL is never negative": -reverse.mean(),
        })
    _passed("my_reverse_kl matches KL(student || teacher) per position, averaged, for two shapes")


def check_lowest_diversity(lowest_diversity: str, metrics: dict[str, dict]) -> None:
    """Exercise 2 of 12_distill_language_model: the arm whose samples have the lowest distinct-4 rate.

    ``metrics`` maps each arm's name to its measurements (``distinct_4``, ``sample_entropy``).
    """
    _given(lowest_diversity, "lowest_diversity")
    arms = list(metrics)
    if not isinstance(lowest_diversity, str):
        raise CheckFailed(f"`lowest_diversity` should be the name of an arm (a string, one of {arms}), got "
                          f"{type(lowest_diversity).__name__}")
    if lowest_diversity not in metrics:
        reference = " (the teacher and the corpus are references, not arms)" if lowest_diversity.lower() in (
            "teacher", "corpus") else ""
        raise CheckFailed(f"`lowest_diversity` is {lowest_diversity!r}, not an arm's name{reference}: use one of "
                          f"{arms}")
    distinct = {arm: float(m["distinct_4"]) for arm, m in metrics.items()}
    lowest = min(distinct, key=distinct.get)
    if lowest_diversity == lowest:
        _passed(f"{lowest}: distinct-4 {distinct[lowest]:.3f} (the others: "
                + ", ".join(f"{a} {v:.3f}" for a, v in distinct.items() if a != lowest) + ")")
        return
    if lowest_diversity == max(distinct, key=distinct.get):
        raise CheckFailed(f"{lowest_diversity!r} has the *highest* distinct-4 rate: take the minimum")
    entropy = {arm: float(m["sample_entropy"]) for arm, m in metrics.items()}
    if lowest_diversity == min(entropy, key=entropy.get):
        raise CheckFailed(f"{lowest_diversity!r} has the lowest sample entropy, a related but other measure: the "
                          "question is about distinct-4, the share of distinct character 4-grams in the samples")
    raise CheckFailed(f"`lowest_diversity` is not the arm with the lowest distinct-4 rate: compare "
                      "`metrics[arm]['distinct_4']` over the arms")


def check_beta_sweep(sweep: dict, init: str) -> None:
    """Exercise 3 of 12_distill_language_model: an on-policy JSD sweep over beta, designed as a fair comparison.

    ``sweep`` maps each beta to the measurements of its student: ``init`` (``labkit.teacher.fingerprint`` of the
    student before training), ``steps``, ``forward_kl`` and ``reverse_kl``. ``init`` is the fingerprint of the
    arms' initial weights in section 3.
    """
    _given(sweep, "sweep")
    if not isinstance(sweep, dict) or not sweep:
        raise CheckFailed(f"`sweep` should be a dict {{beta: measurements}}, got {type(sweep).__name__}")
    needed = {"init", "steps", "forward_kl", "reverse_kl"}
    for beta, row in sweep.items():
        if not isinstance(beta, (int, float)) or isinstance(beta, bool):
            raise CheckFailed(f"the keys of `sweep` should be the betas (numbers), got {beta!r}")
        if not 0 < beta < 1:  # also rejects NaN
            raise CheckFailed(f"beta = {beta!r}: the generalized JSD needs 0 < beta < 1 (its ends are forward_kl and "
                              "reverse_kl, asked for by name)")
        if not isinstance(row, dict) or not needed <= set(row):
            raise CheckFailed(f"`sweep[{beta!r}]` should be a dict with the keys {sorted(needed)}")
        for key in ("forward_kl", "reverse_kl"):
            value = _number(row[key], f"sweep[{beta!r}][{key!r}]")
            if not (math.isfinite(value) and value >= 0):
                raise CheckFailed(f"`sweep[{beta!r}][{key!r}]` is {value}: a KL is a finite number >= 0")
    if len(sweep) < 3:
        raise CheckFailed(f"`sweep` has {len(sweep)} betas: try at least 3 (e.g. 0.1, 0.5 and 0.9)")
    if len({str(row["init"]) for row in sweep.values()}) > 1:
        raise CheckFailed("the students of the sweep started from different weights: call torch.manual_seed(SEED) "
                          "before building each one, as the arms of section 3 do")
    if str(next(iter(sweep.values()))["init"]) != str(init):
        raise CheckFailed("the sweep's students did not start from the arms' initial weights: build each one like "
                          "the arms of section 3 (`new_student()`)")
    if len({str(row["steps"]) for row in sweep.values()}) > 1:
        raise CheckFailed("the betas were trained for different numbers of steps: give each the same budget")
    betas = sorted(sweep)
    _passed(f"{len(betas)} betas from {betas[0]:g} to {betas[-1]:g}, same initial weights and "
            f"{next(iter(sweep.values()))['steps']} steps each")
