"""Measure what the written model answers of notebooks 05, 06 and 08 predict.

    python benchmarks/exercise_answers.py [--only 06-e1 06-e2 ...]

Each section reruns one exercise the way its notebook asks, at the settings the exercise names (the same
validation split, student, epochs, batches and teacher views), and compares with the numbers that notebook's
full run saved in ``benchmarks/results/`` (what a learner compares with). Only validation accuracy is used: the
test set is for the final answers of the notebooks. Sections run separately are merged into
``benchmarks/results/exercise_answers.json``; LABKIT_QUICK=1 runs the same code on the quick subsets and writes
``exercise_answers_quick.json`` (a smoke test: compare with the notebooks' quick results, never quote it).
Measured on the CIFAR-10 copy load_cifar10 finds (here: the JPEG copy). All sections: about 80 minutes on
2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Callable

import torch
from torch import nn

from _common import RESULTS, machine, print_table
from labkit import models
from labkit.atomic import write_text_atomic
from labkit.beyond import distill_with_hints, function_matching
from labkit.data import CifarData, load_cifar10
from labkit.experiments import short_budget
from labkit.protocol import train_student
from labkit.loader import mixup
from labkit.pretrained import load_teacher
from labkit.settings import pick, quick_mode
from labkit.teacher import FrozenTeacher, teacher_logits_for_views
from labkit.train import TrainingDivergedError, distill
from labkit.tuning import soft_target_profile

SWEEP = dict(student="student_small", epochs=pick(3, 1), batch_size=pick(512, 100), teacher_views=4, data_seed=0)
SWEEP_SPLIT = dict(train_per_class=pick(None, 60), val_per_class=pick(500, 10))  # notebook 06
BEYOND = dict(student="student_small", epochs=pick(4, 1), batch_size=pick(512, 100), data_seed=0)
BEYOND_SPLIT = dict(train_per_class=pick(None, 60), val_per_class=pick(500, 10))  # notebook 08
SHORT_T, SHORT_ALPHA = 1.0, 0.5  # notebook 05's exercise 2 (key 05-e2), at labkit.experiments.short_budget()


def without_t_squared(T: float, alpha: float) -> tuple[float, float]:
    """(alpha', lr_scale) such that lr_scale * [alpha' T² KL + (1 - alpha') CE] = alpha KL + (1 - alpha) CE.

    ``labkit.train``'s optimiser scales its weight decay with the learning rate (airbench's decoupling), so
    multiplying the loss by a factor and multiplying the learning rate by it give the same updates: the loss
    without T² then needs no second training loop.
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    alpha_prime = alpha / (alpha + (1 - alpha) * T**2)
    return alpha_prime, alpha / (alpha_prime * T**2)


class CleanViewTeacher(nn.Module):
    """A teacher that answers for the unblended batch: Beyer et al.'s "inconsistent teaching" (08, exercise 3).

    :meth:`blend` is passed to ``distill`` as its ``mix`` hook; it remembers the clean batch, and the next forward
    pass (the teacher's, which ``distill`` calls first) uses it instead of the blend. Any other call (the
    validation logits) sees its own input.
    """

    def __init__(self, teacher: nn.Module):
        super().__init__()
        self.teacher, self.clean = FrozenTeacher(teacher), None

    def blend(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        self.clean = images
        return mixup(images, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, self.clean = (x if self.clean is None else self.clean), None
        return self.teacher(x)


def notebook_results(name: str) -> dict:
    return json.loads((RESULTS / f"{name}{'_quick' if quick_mode() else ''}.json").read_text())


def split(data: CifarData, train_per_class: int | None, val_per_class: int) -> CifarData:
    return data.subset(train_per_class, None).with_validation(val_per_class)


def val_run(teacher: nn.Module, tune: CifarData, **options) -> dict:
    """One student through :func:`labkit.protocol.train_student`: its final validation accuracy and time.

    A run whose loss diverges is an answer too (a learner running the exercise would see it): its ``val_acc`` is
    None and ``diverged`` holds labkit's message.
    """
    shown = {k: getattr(v, "__name__", v) for k, v in options.items()}
    try:
        _, record = train_student(teacher, tune, progress=False, **options)
    except TrainingDivergedError as error:
        print(f"  {shown}: diverged: {error}", flush=True)
        return {"val_acc": None, "diverged": str(error)}
    row = {k: record[k] for k in ("seed", "T", "alpha", "lr_scale", "val_acc", "val_agreement", "seconds")}
    print(f"  {shown}: val_acc {row['val_acc']:.4f} ({row['seconds']:.0f} s)", flush=True)
    return row


def sweep_cell(sweep: dict, T: float, alpha: float) -> float:
    return next(r["val_acc"] for r in sweep["runs"] if (r["T"], r["alpha"], r["lr_scale"]) == (T, alpha, 1.0))


def e06_seeds(ctx: dict) -> dict:
    """06, exercise 1: the best cell and T = 2, alpha = 0.5 with seeds 1 and 2 (seed 0 is the sweep's)."""
    sweep = notebook_results("06_tuning_temperature_and_alpha")
    best = sweep["best"]
    cells = {"best": (best["T"], best["alpha"]), "T2_a05": (2.0, 0.5)}
    out = {}
    for name, (T, alpha) in cells.items():
        runs = [val_run(ctx["teacher"], ctx["sweep_tune"], T=T, alpha=alpha, seed=seed, **SWEEP) for seed in (1, 2)]
        out[name] = {"T": T, "alpha": alpha, "val_acc_by_seed": [sweep_cell(sweep, T, alpha)] + [r["val_acc"] for r in runs],
                     "runs": runs}
    gaps = [a - b for a, b in zip(out["best"]["val_acc_by_seed"], out["T2_a05"]["val_acc_by_seed"])]
    return {**out, "paired_gap_best_minus_T2": gaps, "best_wins_every_seed": all(g > 0 for g in gaps),
            "grid_span": max(max(row) for row in sweep["grid"]) - min(min(row) for row in sweep["grid"])}


def e06_below_one(ctx: dict) -> dict:
    """06, exercise 2: dark mass at T = 0.5 and a T = 0.5 row of the sweep (seed 0)."""
    sweep = notebook_results("06_tuning_temperature_and_alpha")
    val_logits = teacher_logits_for_views(ctx["teacher"], [ctx["sweep_tune"].val_images], progress=False)[0]
    profile = soft_target_profile(val_logits, (0.5, 1.0))
    alphas = sweep["settings"]["alphas"]
    runs = [val_run(ctx["teacher"], ctx["sweep_tune"], T=0.5, alpha=a, seed=0, **SWEEP) for a in alphas]
    return {"dark_mass": {str(T): row["dark_mass"] for T, row in profile.items()}, "alphas": alphas,
            "T0.5_row": [r["val_acc"] for r in runs], "T1_row": [sweep_cell(sweep, 1.0, a) for a in alphas],
            "best_row_of_sweep": max(max(row) for row in sweep["grid"]), "labels_only": sweep["scratch"], "runs": runs}


def e06_without_t2(ctx: dict) -> dict:
    """06, exercise 3: the T = 8 row with the loss's T² factor removed (seed 0)."""
    sweep = notebook_results("06_tuning_temperature_and_alpha")
    alphas = sweep["settings"]["alphas"]
    runs = []
    for a in alphas:
        alpha_prime, lr_scale = without_t_squared(8.0, a)
        runs.append(val_run(ctx["teacher"], ctx["sweep_tune"], T=8.0, alpha=alpha_prime, lr_scale=lr_scale, seed=0,
                            **SWEEP) | {"alpha_without_t2": a})
    return {"alphas": alphas, "T8_row_without_t2": [r["val_acc"] for r in runs],
            "T8_row_with_t2": [sweep_cell(sweep, 8.0, a) for a in alphas], "labels_only": sweep["scratch"],
            "runs": runs}


def e05_online(ctx: dict) -> dict:
    """05, exercise 2 (key 05-e2): one epoch of distill with cached teacher
    logits vs the online teacher."""
    b = short_budget()
    out = {"T": SHORT_T, "alpha": SHORT_ALPHA}
    for name, views in (("cached", b.teacher_views), ("online", 0)):
        torch.manual_seed(0)
        student = models.create(b.student)
        started = time.perf_counter()
        history = distill(student, ctx["teacher"], ctx["short_tune"], T=SHORT_T, alpha=SHORT_ALPHA, epochs=1,
                          teacher_views=views, batch_size=b.batch_size, seed=0, progress=False)
        out[name] = {"epoch_seconds": history.last["seconds"], "call_seconds": round(time.perf_counter() - started, 1)}
        print(f"  {name}: epoch {out[name]['epoch_seconds']:.1f} s, call {out[name]['call_seconds']:.1f} s", flush=True)
    out["teacher_share_online"] = 1 - out["cached"]["epoch_seconds"] / out["online"]["epoch_seconds"]
    out["note"] = "the cached call's extra time over its epoch reads the cache (warm here) and evaluates"
    return out


def e08_hints(ctx: dict) -> dict:
    """08, exercise 1: the hint at layers.0, and at layers.1 with beta 10 times larger (seed 0)."""
    beyond = notebook_results("08_beyond_logits")
    T, alpha = beyond["settings"]["T"], beyond["settings"]["alpha"]
    variants = {"layers.0": dict(student_layer="layers.0", teacher_layer="layers.0", beta=1.0),
                "beta_x10": dict(beta=10.0)}
    runs = {name: val_run(ctx["teacher"], ctx["beyond_tune"], T=T, alpha=alpha, seed=0, teacher_views=0,
                          method=distill_with_hints, **options, **BEYOND) for name, options in variants.items()}
    reference = {arm: beyond["arms"][arm]["val_acc"]["mean"] for arm in ("kd", "kd_with_hints")}
    return {"val_acc": {name: r["val_acc"] for name, r in runs.items()}, "notebook_08": reference, "runs": runs}


def e08_patience(ctx: dict) -> dict:
    """08, exercise 2: function matching and plain KD for twice the epochs (KD with 8 teacher views)."""
    beyond = notebook_results("08_beyond_logits")
    T, alpha, fm_T = (beyond["settings"][k] for k in ("T", "alpha", "fm_T"))
    longer = {**BEYOND, "epochs": 2 * BEYOND["epochs"]}
    kd = val_run(ctx["teacher"], ctx["beyond_tune"], T=T, alpha=alpha, seed=0, teacher_views=2 * 4, **longer)
    fm = val_run(ctx["teacher"], ctx["beyond_tune"], T=fm_T, alpha=1.0, seed=0, teacher_views=0,
                 method=function_matching, **longer)
    short = {arm: beyond["arms"][arm]["val_acc"]["mean"] for arm in ("kd", "function_matching")}
    return {"epochs": longer["epochs"], "kd": kd["val_acc"], "function_matching": fm["val_acc"],
            "gap_long": kd["val_acc"] - fm["val_acc"], "notebook_08": short,
            "gap_short": short["kd"] - short["function_matching"], "runs": [kd, fm]}


def e08_inconsistent(ctx: dict) -> dict:
    """08, exercise 3: function matching with the teacher on the clean images, the student on the blends."""
    beyond = notebook_results("08_beyond_logits")
    fm_T = beyond["settings"]["fm_T"]
    clean_teacher = CleanViewTeacher(ctx["teacher"])

    def inconsistent(student, teacher, data, **options):
        return distill(student, clean_teacher, data, mix=clean_teacher.blend, **options)

    inconsistent.__name__ = "inconsistent_function_matching"
    run = val_run(ctx["teacher"], ctx["beyond_tune"], T=fm_T, alpha=1.0, seed=0, teacher_views=0,
                  method=inconsistent, **BEYOND)
    return {"inconsistent": run["val_acc"], "consistent_notebook_08": beyond["arms"]["function_matching"]["val_acc"]["mean"],
            "run": run}


SECTIONS: dict[str, Callable[[dict], dict]] = {
    "06-e1": e06_seeds, "06-e2": e06_below_one, "06-e3": e06_without_t2,
    "05-e2": e05_online, "08-e3": e08_inconsistent, "08-e1": e08_hints,
    "08-e2": e08_patience,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    args = parser.parse_args()
    data = load_cifar10(verbose=False)
    b = short_budget()
    ctx = {"teacher": FrozenTeacher(load_teacher()),
           "sweep_tune": split(data, **SWEEP_SPLIT), "beyond_tune": split(data, **BEYOND_SPLIT),
           "short_tune": split(data, b.train_per_class, b.val_per_class)}
    path = RESULTS / f"exercise_answers{'_quick' if quick_mode() else ''}.json"
    results = json.loads(path.read_text()) if path.is_file() else {"sections": {}}
    for name in args.only:
        print(f"{name}: {SECTIONS[name].__doc__.splitlines()[0]}", flush=True)
        started = time.perf_counter()
        found = SECTIONS[name](ctx)
        found["minutes"] = round((time.perf_counter() - started) / 60, 1)
        results["sections"][name] = {"machine": machine(), "data": data.source, **found}
        write_text_atomic(path, json.dumps(results, indent=2))  # after every section: a long run keeps what it measured
        print_table([{k: v for k, v in found.items() if isinstance(v, (int, float, str, bool))}])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
