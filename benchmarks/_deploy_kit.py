"""What the parts of benchmarks/deploy.py share: finished work kept on disk, the calibration images, and the
fine-tuning loop every compressed model gets (labels only, or distilled from the teacher)."""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from labkit.data import CifarData
from labkit.evaluate import accuracy, predict_logits
from labkit.train import distill

VAL_PER_CLASS = 100  # the validation split that fine-tuning runs watch (the test split is used once, at the end)


class Kept:
    """Finished work kept as JSON under runs/deploy/: a part's result, or one run's numbers inside a part, named
    by a hash of the settings that decide it. ``fresh`` ignores (and overwrites) what is kept."""

    def __init__(self, folder: Path, fresh: bool):
        self.folder, self.fresh = folder, fresh

    def _path(self, what: dict) -> Path:
        name = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:20]
        return self.folder / f"{name}.json"

    def has(self, what: dict) -> bool:
        """Whether :meth:`get` would read ``what`` back instead of making it."""
        return self._path(what).is_file() and not self.fresh

    def seconds(self, what: dict) -> float | None:
        """How long making ``what`` took, where the kept file recorded it (files kept before 2026-12-08 did not)."""
        return json.loads(self._path(what).read_text()).get("seconds") if self.has(what) else None

    def get(self, what: dict, make: Callable[[], object]) -> object:
        path = self._path(what)
        if self.has(what):
            return json.loads(path.read_text())["value"]
        started = time.perf_counter()
        value = make()
        seconds = round(time.perf_counter() - started, 1)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"what": what, "value": value, "seconds": seconds}, default=str))
        tmp.replace(path)  # atomic: a half-written file is never taken for a finished one
        return value


def calibration_set(data: CifarData, quick: bool, seed: int = 0) -> torch.Tensor:
    """Stratified training images for int8 calibration: the local copy is sorted by class, and its first 2,000
    images are all airplanes."""
    return data.subset(train_per_class=20 if quick else 200, seed=seed).train_images


def fine_tune(model: nn.Module, teacher: nn.Module, data: CifarData, *, T: float, alpha: float, epochs: float,
              lr: float, seed: int, batch_size: int, views: int | None = None, **overrides) -> nn.Module:
    """``model`` fine-tuned in place (alpha = 0: labels only, the same loop), watching ``data``'s validation split.
    The teacher's logits are cached for ``views`` fixed augmented views (default one per epoch), epoch e reading
    view e % views: runs with the same views share one cache, whatever their epochs. ``overrides`` change other
    fields of :class:`labkit.train.TrainConfig`."""
    distill(model, teacher, data, T=T, alpha=alpha, epochs=epochs, teacher_views=views or math.ceil(epochs),
            views_seed=0, seed=seed, lr=lr, batch_size=batch_size, progress=False, **overrides)
    return model.eval()


def accuracy_on_test(model: nn.Module, data: CifarData) -> float:
    """Accuracy on the whole test split (used once per final model)."""
    return accuracy(predict_logits(model, data.test_images), data.test_labels)
