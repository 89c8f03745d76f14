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
from labkit.protocol import Budget, Protocol, choose_on_validation, prepare, run_arms, run_chosen, summaries
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


# Notebook 05's earlier experiment (scratch vs distilled at 4 epochs), kept until the notebook moves to
# headline_comparison.
ARMS = ("scratch", "distilled", "control")
ARM_TEXT = {
    "scratch": "labels only (alpha = 0), same learning rate",
    "distilled": "distilled from the teacher",
    "control": "labels only, learning rate x (1 - alpha): the distillation loss's weight on the labels",
}
# (T, alpha) tried on validation: no temperature; the command line's default; a softer teacher weighted more.
CANDIDATES = ((1.0, 0.5), (2.0, 0.5), (4.0, 0.9))


def headline_settings() -> dict:
    """The settings of notebook 05 and ``benchmarks/kd_headline.py``; quick mode: a tiny subset, 2 epochs.

    Full mode fits in about 25 minutes on 2 CPU cores: 11 student runs of 4 epochs on 45,000 images (about
    25 s per epoch for ``student_small``) plus the teacher's logits for 4 augmented views (about 4-5 minutes,
    once). With 4 epochs and 4 views every epoch sees a fresh augmented copy of each image, as ordinary training
    does, so the views cost the scratch student nothing. The candidates include T = 1: the shipped teacher is
    under-confident (label smoothing 0.2, see 04_cifar_teacher), so its soft targets are soft already.
    """
    return dict(student="student_small", epochs=pick(4, 2), seeds=(0, 1, 2), candidates=CANDIDATES,
                teacher_views=4, batch_size=pick(512, 100), val_per_class=pick(500, 20),
                train_per_class=pick(None, 100), test_per_class=pick(None, 30), data_seed=0, control=True)


def compare_scratch_vs_distilled(teacher: nn.Module, data: CifarData, *,
                                 candidates: Sequence[tuple[float, float]] = CANDIDATES, control: bool = True,
                                 progress: bool = True, log: Callable[[str], None] | None = print,
                                 **budget) -> dict:
    """Students from scratch vs distilled from ``teacher`` at the same budget; a JSON-ready results dict.

    ``budget`` holds the fields of a :class:`labkit.protocol.Budget` (student, epochs, seeds, teacher_views,
    batch_size, val_per_class, train_per_class, test_per_class, data_seed). Steps:

    1. :func:`labkit.protocol.prepare` shrinks ``data`` (quick mode) and holds out the validation split.
    2. Choose (T, alpha) among ``candidates``: one distilled run each with the first seed; the highest
       final-epoch **validation** accuracy wins (ties: the earlier candidate).
    3. Run the winner with the other seeds, the scratch student (alpha = 0; T only sets the temperature at which
       its KL to the teacher is tracked) with every seed, and, with ``control``, labels only at learning rate
       x (1 - alpha) with every seed.
    4. Evaluate the final models of those arms on the test split, once, and summarize over seeds.

    The result holds ``settings``, ``candidates`` (validation accuracy of each), ``chosen``, ``runs`` (one record
    per run, see :func:`labkit.protocol.train_student`, with test numbers for the reported arms), ``arms``
    (summaries over seeds), ``teacher`` (its test accuracy) and ``headline`` (the gains and whether the seed
    ranges overlap).
    """
    if not candidates:
        raise ValueError("need at least one (T, alpha) candidate")
    candidates = [(float(T), float(alpha)) for T, alpha in candidates]
    if any(not 0 < alpha < 1 for _, alpha in candidates):
        raise ValueError(f"every candidate's alpha must lie strictly between 0 and 1 (0 is the scratch arm, and "
                         f"the control's learning rate is x (1 - alpha)), got {candidates}")
    budget = Budget(**budget)
    started = time.perf_counter()
    protocol = prepare(teacher, data, budget, progress=progress, log=log)
    first = budget.seeds[0]
    best, tried = choose_on_validation(protocol, candidates)
    T, alpha = candidates[best]
    protocol.say(f"chosen on validation: T={T:g}, alpha={alpha:g}")
    arms = {"distilled": dict(T=T, alpha=alpha), "scratch": dict(T=T, alpha=0.0)}
    if control:
        arms["control"] = dict(T=T, alpha=0.0, lr_scale=1.0 - alpha)
    ran = run_arms(protocol, arms, trained={("distilled", first): tried[best]})
    candidate_runs = [dict(record, arm="candidate") for i, (_, record) in enumerate(tried) if i != best]
    results = {
        "settings": protocol.settings(candidates=[list(c) for c in candidates], control=control),
        "candidates": [{"T": r["T"], "alpha": r["alpha"], "val_acc": r["val_acc"]} for _, r in tried],
        "chosen": {"T": T, "alpha": alpha, "by": f"final-epoch validation accuracy, seed {first}"},
        "teacher": {"test_acc": accuracy(protocol.teacher_test_logits(), protocol.data.test_labels)},
        "arms": {arm: {"description": ARM_TEXT[arm], "T": a["runs"][0]["T"], "alpha": a["runs"][0]["alpha"],
                       "lr_scale": a["runs"][0]["lr_scale"], **summaries(a)} for arm, a in ran.items()},
        "runs": candidate_runs + [r for a in ran.values() for r in a["runs"]],
        "seconds": round(time.perf_counter() - started, 1),
    }
    results["headline"] = headline(results)
    return results


def headline(results: dict) -> dict:
    """The claim in numbers: gains of the distilled arm (means, per seed) and whether the seed spreads overlap."""
    arms = results["arms"]
    d, s = arms["distilled"]["test_acc"], arms["scratch"]["test_acc"]
    by_seed = {r["seed"]: r["test_acc"] for r in results["runs"] if r["arm"] == "scratch"}
    out = {
        "distilled_test_acc": d["mean"], "scratch_test_acc": s["mean"], "gain_over_scratch": d["mean"] - s["mean"],
        "paired_gains": [r["test_acc"] - by_seed[r["seed"]] for r in results["runs"]
                         if r["arm"] == "distilled" and r["seed"] in by_seed],
        "ranges_overlap": d["min"] <= s["max"],  # min-max over seeds
        "std_intervals_overlap": d["mean"] - d["std"] <= s["mean"] + s["std"],
    }
    if "control" in arms:
        out["control_test_acc"] = arms["control"]["test_acc"]["mean"]
        out["gain_over_control"] = d["mean"] - out["control_test_acc"]
    return out


def check_targets(results: dict, speed: dict[str, dict] | None = None, *, min_test_acc: float = 0.90,
                  min_gain: float = 0.01, max_params_ratio: float = 0.2, min_speedup: float = 5.0) -> dict:
    """The goals of notebook 05's student, each as ``{"value", "target", "met"}``.

    ``speed`` maps "teacher" and the student's name to rows of :func:`labkit.speed.size_and_speed`.

    Distilled student: mean final test accuracy >= ``min_test_acc``, >= ``min_gain`` over scratch, seed ranges
    not overlapping; with ``speed``: parameters <= ``max_params_ratio``
    of the teacher's and throughput >= ``min_speedup`` times the teacher's.
    """
    h = results["headline"]
    targets = {
        "distilled_test_acc": {"value": h["distilled_test_acc"], "target": f">= {min_test_acc}"},
        "gain_over_scratch": {"value": h["gain_over_scratch"], "target": f">= {min_gain}"},
        "seed_ranges_disjoint": {"value": not h["ranges_overlap"], "target": "True"},
    }
    targets["distilled_test_acc"]["met"] = h["distilled_test_acc"] >= min_test_acc
    targets["gain_over_scratch"]["met"] = h["gain_over_scratch"] >= min_gain
    targets["seed_ranges_disjoint"]["met"] = not h["ranges_overlap"]
    student = results["settings"]["student"]
    if speed is not None:
        ratio = speed[student]["params"] / speed["teacher"]["params"]
        speedup = speed[student]["images_per_s"] / speed["teacher"]["images_per_s"]
        targets["params_ratio"] = {"value": ratio, "target": f"<= {max_params_ratio}", "met": ratio <= max_params_ratio}
        targets["throughput_speedup"] = {"value": speedup, "target": f">= {min_speedup}", "met": speedup >= min_speedup}
    return targets


def _pct(summary: dict) -> str:
    return f"{100 * summary['mean']:.2f} ± {100 * summary['std']:.2f}"


def markdown_table(results: dict, targets: dict | None = None) -> str:
    """The results as Markdown: arms (final-epoch test accuracy over seeds), candidates, and targets."""
    s = results["settings"]
    lines = [f"Student `{s['student']}`, {s['epochs']:g} epochs, seeds {s['seeds']}, {s['train_images']} training / "
             f"{s['val_images']} validation / {s['test_images']} test images ({s['data']}). Teacher test accuracy "
             f"{100 * results['teacher']['test_acc']:.2f}%. Accuracies are of the final epoch, mean ± std over seeds.",
             "",
             "| arm | T | alpha | lr x | test acc % | min-max % | val acc % | agreement % | test KL | ECE |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm, a in results["arms"].items():
        t = a["test_acc"]
        lines.append(f"| {arm}: {a['description']} | {a['T']:g} | {a['alpha']:g} | {a['lr_scale']:g} | {_pct(t)} | "
                     f"{100 * t['min']:.2f}-{100 * t['max']:.2f} | {_pct(a['val_acc'])} | "
                     f"{100 * a['test_agreement']['mean']:.2f} | {a['test_kl']['mean']:.4f} | "
                     f"{a['test_ece']['mean']:.4f} |")
    lines += ["", f"Chosen on validation ({results['chosen']['by']}):", "",
              "| T | alpha | val acc % |", "|---|---|---|"]
    lines += [f"| {c['T']:g} | {c['alpha']:g} | {100 * c['val_acc']:.2f} |" for c in results["candidates"]]
    h = results["headline"]
    lines += ["", f"Gain over scratch: {100 * h['gain_over_scratch']:+.2f} points (per seed: "
              + ", ".join(f"{100 * g:+.2f}" for g in h["paired_gains"]) + "); seed ranges "
              + ("overlap." if h["ranges_overlap"] else "do not overlap.")]
    if "gain_over_control" in h:
        lines[-1] += f" Gain over the control: {100 * h['gain_over_control']:+.2f} points."
    if targets:
        lines += ["", "| target | value | wanted | met |", "|---|---|---|---|"]
        for name, t in targets.items():
            value = f"{t['value']:.4f}" if isinstance(t["value"], float) else str(t["value"])
            lines.append(f"| {name} | {value} | {t['target']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"



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


SMOOTHING = ((1.0, 0.0), (1.0, 0.1), (1.0, 0.2))
DISTILLATION = ((2.0, 0.5), (2.0, 0.9), (4.0, 0.9))
HEADLINE_ARMS = ("labels only", "distilled", "uniform teacher", "class-average teacher")
HEADLINE_GAINS = (("distilled", "labels only"), ("distilled", "uniform teacher"),
                  ("distilled", "class-average teacher"), ("class-average teacher", "labels only"))


def patient_budget(seeds: Sequence[int] = (0, 1, 2, 3, 4)) -> Budget:
    """The budget of 05_distill_student's headline: ``student_small``, 20 epochs of the 45,000 training images.

    A patient schedule (Beyer et al. 2022): 20 epochs take about 9 minutes per run on 2 CPU cores with the
    teacher's logits cached for 4 augmented views. Every seed draws its own initial weights, batch order and
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
            "gains": paired_gains(test, HEADLINE_GAINS),
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
