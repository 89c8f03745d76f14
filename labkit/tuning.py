"""Choosing T and alpha on validation data (introduced in 06_tuning_temperature_and_alpha)."""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
from torch import nn

from labkit.data import CifarData
from labkit.distillation import entropy, soft_targets
from labkit.protocol import Budget, prepare
from labkit.teacher import teacher_logits_for_views


def soft_target_profile(logits: torch.Tensor, Ts: Sequence[float]) -> dict[float, dict[str, float]]:
    """How peaked the teacher's soft targets are at each temperature, averaged over ``logits``' rows.

    ``entropy_bits``: 0 for one-hot, log2(classes) for uniform. ``dark_mass``: the probability on all classes
    but the top one, the "dark knowledge" a student can learn from. ``top_prob``: the top class's probability.
    """

    profile = {}
    for T in Ts:
        p = soft_targets(logits, T)
        top = p.max(-1).values
        profile[float(T)] = {"entropy_bits": entropy(p).mean().item(), "dark_mass": (1 - top).mean().item(),
                             "top_prob": top.mean().item()}
    return profile


def sweep_temperature_alpha(teacher: nn.Module, data: CifarData, *, Ts: Sequence[float] = (1, 2, 4, 8),
                            alphas: Sequence[float] = (0.25, 0.5, 0.75, 0.95), seed: int = 0, epochs: float = 3,
                            progress: bool = False, log: Callable[[str], None] | None = print, **budget) -> dict:
    """Final-epoch validation accuracy of one student per (T, alpha), plus the labels-only student (alpha = 0).

    ``budget`` holds :class:`labkit.protocol.Budget` fields (student, teacher_views, batch_size, val_per_class,
    train_per_class, data_seed). Every run starts from the same initial weights (``seed``) and sees the same
    batches (see :mod:`labkit.protocol`); the teacher's logits are computed once and cached. Only training
    and validation images are used: the test split is not touched. Returns ``grid`` (``len(Ts) x len(alphas)``
    validation accuracies), ``scratch`` (alpha = 0), ``best``, every run's record, and the teacher's soft-target
    profile on the validation images.
    """
    if not Ts or not alphas or any(not 0 < a <= 1 for a in alphas):
        raise ValueError(f"need temperatures and alphas in (0, 1]; got Ts={Ts}, alphas={alphas}")
    protocol = prepare(teacher, data, Budget(seeds=(seed,), epochs=epochs, **budget), progress=progress, log=log)
    started, runs = time.perf_counter(), []
    total = len(Ts) * len(alphas) + 1

    def run(T: float, alpha: float) -> dict:
        protocol.say(f"[{len(runs) + 1}/{total}] T={T:g}, alpha={alpha:g}")
        _, record = protocol.train(seed, T=T, alpha=alpha)
        protocol.say(f"    validation accuracy {record['val_acc']:.4f} ({record['seconds']:.0f} s)")
        runs.append(record)
        return record

    scratch = run(float(Ts[0]), 0.0)
    grid = [[run(float(T), float(a))["val_acc"] for a in alphas] for T in Ts]
    i, j = max(((i, j) for i in range(len(Ts)) for j in range(len(alphas))), key=lambda ij: grid[ij[0]][ij[1]])
    val_logits = teacher_logits_for_views(protocol.teacher, [protocol.data.val_images], progress=False)[0]
    settings = {k: v for k, v in protocol.settings(Ts=[float(T) for T in Ts], alphas=[float(a) for a in alphas],
                                                   seed=seed).items()
                if not k.startswith("test_")}  # the sweep never touches the test split
    return {
        "settings": settings,
        "grid": grid,
        "scratch": scratch["val_acc"],
        "best": {"T": float(Ts[i]), "alpha": float(alphas[j]), "val_acc": grid[i][j]},
        "teacher_profile": {str(T): v for T, v in soft_target_profile(val_logits, Ts).items()},
        "runs": runs,
        "seconds": round(time.perf_counter() - started, 1),
    }
