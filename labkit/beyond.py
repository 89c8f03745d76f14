"""Distillation beyond the logits: FitNets feature hints and function matching (introduced in 08_beyond_logits).

* **Feature hints** (Romero et al., 2015, "FitNets"): the student's intermediate feature map, passed through a
  small trainable regressor, is pulled towards the teacher's feature map at a matching depth by a mean
  squared error, on top of the usual distillation loss. Features are taken with forward hooks, so no model
  needs editing.
* **Function matching** (Beyer et al., 2022, "Knowledge distillation: A good teacher is patient and
  consistent"): teacher and student see the *same*, strongly augmented view of each batch (here mixup of two
  images), and the student matches the teacher's output on it. No labels are used.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from labkit.data import CifarData
from labkit.evaluate import eval_mode
from labkit.history import History
from labkit.loader import Batch, mixup
from labkit.protocol import Budget, prepare, run_arms
from labkit.teacher import FrozenTeacher
from labkit.train import distill


class FeatureTap:
    """Keeps the latest output of one named submodule (``model.get_submodule(layer)``) via a forward hook.

    Use as a context manager, or call :meth:`remove` when done, so the hook does not outlive the experiment.
    """

    def __init__(self, model: nn.Module, layer: str):
        try:
            module = model.get_submodule(layer)
        except AttributeError as err:
            names = [name for name, _ in model.named_modules() if name]
            raise ValueError(f"{type(model).__name__} has no submodule {layer!r}; some it has: {names[:12]}") from err
        self.output: torch.Tensor | None = None
        self._handle = module.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.output = output

    def remove(self) -> None:
        self._handle.remove()

    def __enter__(self) -> "FeatureTap":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def feature_shape(model: nn.Module, layer: str, image_size: tuple[int, int, int] = (3, 32, 32)) -> tuple[int, ...]:
    """Shape (channels, height, width) of ``layer``'s output for one image."""
    device = next(model.parameters()).device
    with eval_mode(model), FeatureTap(model, layer) as tap, torch.no_grad():
        model(torch.zeros(1, *image_size, device=device))
    return tuple(tap.output.shape[1:])


class HintRegressor(nn.Module):
    """FitNets' regressor: a 1x1 convolution and BatchNorm from the student's channels to the teacher's,
    after average-pooling the student's map to the teacher's grid when the two differ."""

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(teacher_channels)

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(features.shape[-2:]) != tuple(size):
            features = F.adaptive_avg_pool2d(features, size)
        return self.norm(self.conv(features))


def hint_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the regressed student map and the teacher's (same shape required)."""
    if student_features.shape != teacher_features.shape:
        raise ValueError(f"feature maps differ in shape: student {tuple(student_features.shape)}, "
                         f"teacher {tuple(teacher_features.shape)}; regress the student's first")
    return F.mse_loss(student_features.float(), teacher_features.float())


class _WithRegressor(nn.Module):
    """The student plus its regressor, so one optimizer trains both; the forward pass is the student's."""

    def __init__(self, student: nn.Module, regressor: HintRegressor):
        super().__init__()
        self.student, self.regressor = student, regressor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)


def distill_with_hints(student: nn.Module, teacher: nn.Module, data: CifarData, T: float = 2.0, alpha: float = 0.5,
                       epochs: float | None = None, *, student_layer: str = "layers.1",
                       teacher_layer: str = "layers.1", beta: float = 1.0, teacher_views: int = 0,
                       out: str | Path | None = None, progress: bool = True, **overrides) -> History:
    """:func:`labkit.train.distill` with the online teacher plus ``beta`` x a FitNets hint between two layers.

    The default layers are the second stage of both CifarNets (teacher 256 x 7 x 7, ``student_small``
    48 x 8 x 8). The regressor is trained with the student and discarded afterwards; ``student`` is trained in
    place. The history's ``extra_part`` column is the weighted hint loss.
    """
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if teacher_views != 0:
        raise ValueError("feature hints need the online teacher (teacher_views=0): feature maps are not cached")
    inner = teacher.model if isinstance(teacher, FrozenTeacher) else teacher
    regressor = HintRegressor(feature_shape(student, student_layer)[0], feature_shape(inner, teacher_layer)[0])
    with FeatureTap(student, student_layer) as s_tap, FeatureTap(inner, teacher_layer) as t_tap:
        def hint(batch: Batch) -> torch.Tensor:
            target = t_tap.output
            return beta * hint_loss(regressor(s_tap.output, target.shape[-2:]), target)

        return distill(_WithRegressor(student, regressor), teacher, data, T=T, alpha=alpha, epochs=epochs,
                       teacher_views=0, extra_loss=hint, out=out, progress=progress, **overrides)


def function_matching(student: nn.Module, teacher: nn.Module, data: CifarData, T: float = 1.0, alpha: float = 1.0,
                      epochs: float | None = None, *, teacher_views: int = 0, out: str | Path | None = None,
                      progress: bool = True, **overrides) -> History:
    """Beyer et al.'s function matching: the student matches the teacher on mixup views both see; no labels.

    The same loop as :func:`labkit.train.distill` with every batch replaced by :func:`labkit.loader.mixup` of
    itself after the usual crop and flip; it needs the online teacher (``teacher_views=0``) and ``alpha=1``
    (the arguments exist so that it has ``distill``'s signature).
    """
    return distill(student, teacher, data, T=T, alpha=alpha, epochs=epochs, teacher_views=teacher_views, mix=mixup,
                   out=out, progress=progress, **overrides)


def compare_beyond_logits(teacher: nn.Module, data: CifarData, *, T: float = 2.0, alpha: float = 0.5,
                          beta: float = 1.0, fm_T: float = 1.0, progress: bool = False,
                          log: Callable[[str], None] | None = print, **budget) -> dict:
    """Plain KD vs KD + FitNets hint vs function matching, at an equal budget (introduced in 08_beyond_logits).

    ``budget`` holds :class:`labkit.protocol.Budget` fields (default: one seed). Same student, initial weights,
    epochs, schedule, batches and base augmentation for every arm (see :func:`labkit.protocol.run_arms`); plain KD
    reads cached teacher logits, the other two run the teacher online because they need its features or its
    output on freshly mixed images.
    """
    started = time.perf_counter()
    protocol = prepare(teacher, data, Budget(**{"seeds": (0,), **budget}), progress=progress, log=log)
    arms = {"kd": dict(T=T, alpha=alpha),
            "kd_with_hints": dict(T=T, alpha=alpha, teacher_views=0, method=distill_with_hints, beta=beta),
            "function_matching": dict(T=fm_T, alpha=1.0, teacher_views=0, method=function_matching)}
    return {"settings": protocol.settings(T=T, alpha=alpha, beta=beta, fm_T=fm_T), "arms": run_arms(protocol, arms),
            "seconds": round(time.perf_counter() - started, 1)}
