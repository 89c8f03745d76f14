"""The course's comparisons of students, built so that their results can be trusted (introduced in 05_distill_student).

Every experiment here fixes what its arms share (split, teacher, budget, seeds) once, in a
:class:`labkit.protocol.Protocol`, whose module docstring lists the guarantees that follow: validation for every
choice, the test set once at the end, the final epoch, the same initial weights, batches and views for every arm of
a seed. Budgets: :func:`patient_budget` (05's headline), :func:`transfer_budget` (05's transfer set),
:func:`short_budget` (quicker comparisons). Experiments: :func:`headline_comparison` (the best labels-only student,
the distilled one and two stand-in teachers), :func:`transfer_protocols` (few labels, many unlabelled images),
:func:`compare_teachers` (07); 09's limited-data rule is :func:`labkit.limited_data.limited_data_rule`. Gains are
reported by :func:`labkit.stats.paired_gains`.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

from torch import nn

from labkit.controls import ClassAverageTargets, uniform_targets
from labkit.data import CifarData
from labkit.evaluate import accuracy
from labkit.history import History
from labkit.protocol import Budget, Protocol, prepare, run_arms, run_chosen, summaries
from labkit.settings import pick
from labkit.stats import paired_gains, summarize  # noqa: F401  (notebooks 09 and 11 import summarize from here)
from labkit.teacher import teacher_logits_for_views
from labkit.transfer import labelled_mask, labelled_part, pseudo_labelled, transfer_set


def short_budget(seeds: Sequence[int] = (0, 1, 2)) -> Budget:
    """The short budget of the course's quicker comparisons (04_cifar_teacher's teacher choice, 05's exercises):
    ``student_small``, 4 epochs of the 45,000 training images, 3 seeds, 4 cached views; about 2 minutes per run on
    2 CPU cores. Quick mode: a tiny subset, 2 epochs."""
    return Budget(student="student_small", epochs=pick(4, 2), seeds=tuple(seeds), teacher_views=4,
                  batch_size=pick(512, 100), val_per_class=pick(500, 20), train_per_class=pick(None, 100),
                  test_per_class=pick(None, 30), data_seed=0)


def history_of(results: dict, arm: str, seed: int) -> History:
    """The per-epoch :class:`History` of one run (``arm`` is "distilled", "scratch", "control" or "candidate")."""
    for record in results["runs"]:
        if record["arm"] == arm and record["seed"] == seed:
            return History.from_dict(record["history"])
    raise KeyError(f"no run of arm {arm!r} with seed {seed}")


def compare_teachers(teachers: dict[str, nn.Module], data: CifarData, *, T: float, alpha: float,
                     progress: bool = False, log: Callable[[str], None] | None = print, **budget) -> dict:
    """One student per seed distilled from each of ``teachers`` (name -> model) at the same budget and (T, alpha).

    Introduced in 07_ensemble_teachers; ``budget`` holds :class:`labkit.protocol.Budget` fields, and
    :func:`labkit.protocol.run_arms` says what is held equal and what is returned.
    """
    started = time.perf_counter()
    first, *_ = teachers.values()
    protocol = prepare(first, data, Budget(**budget), progress=progress, log=log)
    arms = {name: dict(teacher=t, T=T, alpha=alpha) for name, t in teachers.items()}
    return {"settings": protocol.settings(T=T, alpha=alpha), "teachers": run_arms(protocol, arms),
            "seconds": round(time.perf_counter() - started, 1)}


# The headline of 05_distill_student: label smoothing eps (uniform targets at T = 1, alpha = eps), and (T, alpha).
SMOOTHING = ((1.0, 0.0), (1.0, 0.1), (1.0, 0.2))
DISTILLATION = ((2.0, 0.5), (2.0, 0.9), (4.0, 0.9))
HEADLINE_ARMS = ("labels only", "distilled", "uniform teacher", "class-average teacher")
HEADLINE_GAINS = (("distilled", "labels only"), ("distilled", "uniform teacher"),
                  ("distilled", "class-average teacher"), ("class-average teacher", "labels only"))
HEADLINE_PRIMARY = HEADLINE_GAINS[0]  # named before the runs (kd_headline.py's TARGET); the others explain it


def patient_budget(seeds: Sequence[int] = (0, 1, 2, 3, 4)) -> Budget:
    """The budget of 05_distill_student's headline: ``student_small``, 20 epochs of the 45,000 training images.

    20 epochs take about 9 minutes per run on 2 CPU cores with the teacher's logits cached for 4 augmented views:
    patient for a CPU, short by the standard of Beyer et al. (2022), whose students train hundreds to thousands of
    epochs with the teacher on every fresh view. Every seed draws its own initial weights, batch order and
    views; only the teacher and the split are fixed. Quick mode: a tiny subset, 2 epochs.
    """
    return Budget(student="student_small", epochs=pick(20, 2), seeds=tuple(seeds), teacher_views=4,
                  batch_size=pick(512, 100), val_per_class=pick(500, 20), train_per_class=pick(None, 100),
                  test_per_class=pick(None, 30), data_seed=0, batch_order_per_seed=True, views_per_seed=True)


def class_average_teacher(protocol: Protocol, T: float) -> ClassAverageTargets:
    """The teacher's mean soft prediction at ``T`` per class, over the protocol's (unaugmented) training images."""
    logits = teacher_logits_for_views(protocol.teacher, [protocol.data.train_images], progress=protocol.progress)[0]
    return ClassAverageTargets.from_logits(logits, protocol.data.train_labels, T)


def headline_arms(protocol: Protocol, *, smoothing: float, T: float, alpha: float,
                  names: Sequence[str] = HEADLINE_ARMS) -> dict[str, dict]:
    """The arms ``names`` of 05_distill_student's headline at the chosen settings, as
    :func:`labkit.protocol.run_arms` takes them: the best labels-only recipe, the distilled student, and two
    stand-ins for the teacher's predictions at the same (T, alpha) that keep their softness but not their
    per-image content (:mod:`labkit.controls`)."""
    unknown = set(names) - set(HEADLINE_ARMS)
    if unknown:
        raise ValueError(f"no headline arm named {sorted(unknown)}; the arms are {HEADLINE_ARMS}")
    arms = {"labels only": lambda: dict(T=1.0, alpha=smoothing, targets=uniform_targets),
            "distilled": lambda: dict(T=T, alpha=alpha),
            "uniform teacher": lambda: dict(T=T, alpha=alpha, targets=uniform_targets),
            "class-average teacher": lambda: dict(T=T, alpha=alpha, targets=class_average_teacher(protocol, T))}
    return {name: arms[name]() for name in names}


def headline_comparison(protocol: Protocol, *, smoothing: Sequence[tuple[float, float]] = SMOOTHING,
                        candidates: Sequence[tuple[float, float]] = DISTILLATION) -> dict:
    """Distillation against the strongest labels-only baseline and two controls (05_distill_student).

    Label smoothing is chosen among ``smoothing`` and (T, alpha) among ``candidates`` on validation with the first
    seed; the other arms of :func:`headline_arms` run at those settings; every arm runs every seed of the budget
    and is tested once. Returns the choices, the summaries per arm, every run and the paired gains
    (:data:`HEADLINE_GAINS`).
    """
    started = time.perf_counter()
    labels = run_chosen(protocol, "labels only", smoothing, targets=uniform_targets)
    distilled = run_chosen(protocol, "distilled", candidates)
    chosen = distilled["chosen"]
    controls = run_arms(protocol, headline_arms(protocol, smoothing=labels["chosen"]["alpha"], **chosen,
                                                names=("uniform teacher", "class-average teacher")))
    ran = {"labels only": labels, "distilled": distilled, **controls}
    test = {name: arm["test_acc"]["values"] for name, arm in ran.items()}
    return {"settings": protocol.settings(smoothing_candidates=[list(c) for c in smoothing],
                                          distillation_candidates=[list(c) for c in candidates]),
            "chosen": {"smoothing": labels["chosen"]["alpha"], **chosen},
            "candidates": {"labels only": labels["candidates"], "distilled": distilled["candidates"]},
            "teacher": {"test_acc": accuracy(protocol.teacher_test_logits(), protocol.data.test_labels)},
            "arms": {name: summaries(arm) for name, arm in ran.items()},
            "runs": {name: arm["runs"] for name, arm in ran.items()},
            "gains": paired_gains(test, HEADLINE_GAINS, primary=HEADLINE_PRIMARY),
            "seconds": round(time.perf_counter() - started, 1)}


# Arms of the transfer-set experiment (05_distill_student, benchmarks/transfer_set.py)
TRANSFER_ARMS = ("labels only", "distilled, labelled only", "distilled, transfer set", "pseudo-labels")
TRANSFER_GAINS = (("distilled, transfer set", "labels only"), ("distilled, transfer set", "pseudo-labels"),
                  ("distilled, labelled only", "labels only"), ("pseudo-labels", "labels only"))


def transfer_budget(seeds: Sequence[int] = (0, 1, 2, 3, 4)) -> Budget:
    """The budget of the transfer-set experiment (05_distill_student): ``student_small``, 4 epochs of 45,000
    images per run whatever the labelled fraction, 4 cached views; every seed draws its own initial weights and
    batch order (the views, and so the teacher's logits, are shared). Quick mode: a tiny subset, 2 epochs."""
    return Budget(student="student_small", epochs=pick(4, 2), seeds=tuple(seeds), teacher_views=4,
                  batch_size=pick(512, 100), val_per_class=pick(500, 20), train_per_class=pick(None, 100),
                  test_per_class=pick(None, 30), data_seed=0, batch_order_per_seed=True)


def transfer_protocols(base: Protocol, fraction: float) -> dict:
    """The training sets of the transfer-set experiment at a labelled ``fraction`` of ``base``'s training images.

    A stratified ``fraction`` keeps its labels (drawn with the budget's ``data_seed``; the validation split was
    held out before). Returns a protocol per training set, each with the same images seen per epoch:
    ``"labelled"`` (the labelled images, repeated to fill an epoch), ``"transfer set"`` (every image, the others
    unlabelled) and ``"pseudo-labels"`` (every image, the others labelled with the teacher's top class); plus
    ``labelled_per_class``, ``repeat`` and ``pseudo_label_accuracy`` (how often the teacher's label is right).
    """
    classes = len(base.data.classes)
    per_class = max(1, round(fraction * len(base.data.train_labels) / classes))
    transfer = transfer_set(base.data, per_class, seed=base.budget.data_seed)
    repeat = round(len(transfer.train_labels) / (per_class * classes))
    pseudo = pseudo_labelled(transfer, base.teacher)
    unlabelled = ~labelled_mask(transfer.train_labels)
    right = (pseudo.train_labels[unlabelled] == base.data.train_labels[unlabelled]).float().mean().item()
    return {"labelled": base.with_training(labelled_part(transfer, repeat)),
            "transfer set": base.with_training(transfer), "pseudo-labels": base.with_training(pseudo),
            "labelled_per_class": per_class, "repeat": repeat, "unlabelled_images": int(unlabelled.sum()),
            "pseudo_label_accuracy": right}
