"""Checks for the exercises of 01_dark_knowledge."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from scipy.stats import entropy

from labkit.checks._base import CheckFailed, _passed, _compare, _index, _class_means


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
