"""Checks for the exercises of 10_omitted_class."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from labkit.checks._base import CheckFailed, _passed, _given, _number, _call


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
    _given(cats_go_to, "cats_go_to")
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
