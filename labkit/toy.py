"""Two-dimensional problems whose decision boundaries can be drawn (introduced in 11_decision_boundaries).

Everything here is small enough to train in a fraction of a second on a CPU: full-batch Adam on a few hundred
points, so a student can be re-distilled live while a slider moves.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from labkit.distillation import distillation_loss


def spirals(n_per_class: int = 200, classes: int = 3, noise: float = 0.15, label_noise: float = 0.1,
            seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Interleaved spiral arms, one per class: points ``x`` (N x 2), noisy labels ``y`` and the true labels.

    ``noise`` jitters the points; ``label_noise`` is the fraction of points whose training label is replaced
    by a random other class (what makes a teacher's soft boundary worth more than the labels).
    """
    if n_per_class < 1 or classes < 2 or noise < 0 or not 0 <= label_noise < 1:
        raise ValueError("need n_per_class >= 1, classes >= 2, noise >= 0 and label_noise in [0, 1)")
    gen = torch.Generator().manual_seed(seed)
    r = torch.linspace(0.15, 1.0, n_per_class).repeat(classes)
    true = torch.arange(classes).repeat_interleave(n_per_class)
    angle = 3.5 * r + true * 2 * math.pi / classes
    x = torch.stack([r * torch.cos(angle), r * torch.sin(angle)], 1) + noise * r[:, None] * torch.randn(len(r), 2, generator=gen)
    flip = torch.rand(len(r), generator=gen) < label_noise
    other = (true + torch.randint(1, classes, (len(r),), generator=gen)) % classes
    return x, torch.where(flip, other, true), true


def mlp(hidden: Sequence[int], classes: int = 3, seed: int = 0) -> nn.Sequential:
    """A 2-input multilayer perceptron with GELU activations, initialised from ``seed``."""
    torch.manual_seed(seed)
    sizes, layers = (2, *hidden), []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.GELU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], classes))


def few_labels(y: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """A boolean mask keeping the labels of ``per_class`` random points of each class (stratified by ``y``): the
    labelled part of a toy transfer set, the rest being unlabelled points the teacher can label."""
    counts = torch.bincount(y)
    if per_class < 1 or int(counts.min()) < per_class:
        raise ValueError(f"per_class must be between 1 and the smallest class's {int(counts.min())} points, "
                         f"got {per_class}")
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(y), dtype=torch.bool)
    for c in range(len(counts)):
        members = torch.nonzero(y == c).flatten()
        mask[members[torch.randperm(len(members), generator=gen)[:per_class]]] = True
    return mask


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, teacher_logits: torch.Tensor | None = None,
        T: float = 1.0, alpha: float = 0.0, steps: int = 300, lr: float = 0.02,
        labelled: torch.Tensor | None = None) -> nn.Module:
    """Full-batch Adam on ``(x, y)``: cross-entropy, or :func:`labkit.distillation_loss` when ``teacher_logits``
    is given (``labelled``, a mask, restricts its hard term to the points that have a label: a transfer set).
    Trains ``model`` in place and returns it."""
    if labelled is not None and teacher_logits is None:
        raise ValueError("labelled needs teacher_logits: without a teacher, train on x[labelled], y[labelled]")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small: extra threads cost more in synchronisation than they give
    try:
        for _ in range(steps):
            logits = model(x)
            loss = (F.cross_entropy(logits, y) if teacher_logits is None
                    else distillation_loss(logits, teacher_logits, y, T=T, alpha=alpha, labelled=labelled))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model


TRANSFER_ARMS = ("labels only", "distilled, labelled only", "distilled, transfer set", "pseudo-labels")


def transfer_students(x: torch.Tensor, y: torch.Tensor, labelled: torch.Tensor, teacher_logits: torch.Tensor, *,
                      hidden: Sequence[int], seed: int, T: float = 2.0, alpha: float = 0.9,
                      steps: int = 600) -> dict[str, nn.Module]:
    """The students of 11_decision_boundaries' few-label experiment, the arms of 05_distill_student's transfer set:
    labels only and distilled on the labelled points; distilled on every point (hard term masked to the labelled
    ones); cross-entropy with the teacher's top class where a point has no label. Same initial weights (``seed``)
    and number of full-batch steps in every arm."""
    pseudo = torch.where(labelled, y, teacher_logits.argmax(1))
    return {
        "labels only": fit(mlp(hidden, seed=seed), x[labelled], y[labelled], steps=steps),
        "distilled, labelled only": fit(mlp(hidden, seed=seed), x[labelled], y[labelled],
                                        teacher_logits=teacher_logits[labelled], T=T, alpha=alpha, steps=steps),
        "distilled, transfer set": fit(mlp(hidden, seed=seed), x, y, teacher_logits=teacher_logits, T=T, alpha=alpha,
                                       labelled=labelled, steps=steps),
        "pseudo-labels": fit(mlp(hidden, seed=seed), x, pseudo, steps=steps),
    }


def grid(x: torch.Tensor, resolution: int = 150, margin: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Mesh coordinates (``resolution`` x ``resolution`` each) covering the points ``x`` plus a margin."""
    lo, hi = x.min(0).values - margin, x.max(0).values + margin
    xs, ys = torch.linspace(lo[0], hi[0], resolution), torch.linspace(lo[1], hi[1], resolution)
    return torch.meshgrid(xs, ys, indexing="xy")


@torch.no_grad()
def grid_probabilities(model: nn.Module, xx: torch.Tensor, yy: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """The model's softmax(logits / T) at every mesh point: resolution x resolution x classes."""
    logits = model(torch.stack([xx.flatten(), yy.flatten()], 1))
    return torch.softmax(logits / T, 1).reshape(*xx.shape, -1)


@torch.no_grad()
def accuracy_on(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of points whose top class is ``y``."""
    return (model(x).argmax(1) == y).float().mean().item()
