"""Scratch vs distilled students, compared so that the result can be trusted (introduced in 05_distill_student).

:func:`compare_scratch_vs_distilled` is the experiment of notebook 05 and of ``benchmarks/kd_headline.py``. What
every arm shares (split, teacher, budget, seeds) is fixed once by :func:`labkit.protocol.prepare`, whose module
docstring lists the guarantees that follow: validation for every choice, the test set once at the end, the final
epoch, the same initial weights and batches for every arm of a seed. On top of them:

* **A control for the loss scale.** The distillation loss weights the labels' cross-entropy by ``1 - alpha``. If
  distillation only helped because that acts like a smaller learning rate, the control "labels only, learning rate
  times ``1 - alpha``" would match it (with Nesterov SGD and airbench's decoupled weight decay, scaling the
  learning rate is the same as scaling the loss).
* **Seeds.** Every arm runs several seeds; mean ± standard deviation, min-max and the per-seed (paired) gains are
  reported.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

from torch import nn

from labkit.data import CifarData
from labkit.evaluate import accuracy
from labkit.history import History
from labkit.protocol import Budget, choose_on_validation, prepare, run_arms, summaries
from labkit.settings import pick
from labkit.stats import summarize  # noqa: F401  (notebooks 09 and 11 import it from here)

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


def history_of(results: dict, arm: str, seed: int) -> History:
    """The per-epoch :class:`History` of one run (``arm`` is "distilled", "scratch", "control" or "candidate")."""
    for record in results["runs"]:
        if record["arm"] == arm and record["seed"] == seed:
            columns = record["history"]
            return History(dict(zip(columns, values)) for values in zip(*columns.values()))
    raise KeyError(f"no run of arm {arm!r} with seed {seed}")


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


def limited_data_comparison(teacher: nn.Module, data: CifarData, *, T: float, alpha: float,
                            fractions: Sequence[float] = (0.02, 0.1), images_seen: int = 50_000,
                            progress: bool = False, log: Callable[[str], None] | None = print, **budget) -> dict:
    """Scratch vs distilled students trained on a small labelled fraction of the training set.

    Introduced in 09_compress_and_deploy (the "limited data" row of the decision matrix). ``budget`` holds
    :class:`labkit.protocol.Budget` fields (defaults here: 100 validation images per class, batches of 128).
    The validation images are held out first and never labelled for training; each fraction's labelled subset is
    drawn from the rest (a fraction of the full 50,000-image training set, stratified). Every run sees
    ``images_seen`` augmented images (so smaller subsets get more epochs) with the same batches, weights and
    schedule in both arms; the teacher's logits are cached for up to 8 views. The teacher was trained on all
    training labels, as in Hinton et al.'s 3% experiment: the question is what a student can get from it when
    the student's own labels are few.
    """
    if any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions must lie in (0, 1], got {fractions}")
    started = time.perf_counter()
    base = prepare(teacher, data, Budget(**{"val_per_class": 100, "batch_size": 128, **budget}), progress=progress,
                   log=log)
    per_class_total = len(data.train_labels) // len(data.classes)
    results = {}
    for fraction in fractions:
        labelled = base.data.subset(max(1, round(fraction * per_class_total)), None, seed=base.budget.data_seed)
        n = len(labelled.train_labels)
        epochs = images_seen / n
        protocol = base.with_training(labelled, epochs=epochs, teacher_views=min(8, math.ceil(epochs)),
                                      batch_size=min(base.budget.batch_size, n))
        protocol.say(f"{fraction:.0%} of the labels: {n:,} images, {epochs:.1f} epochs")
        arms = run_arms(protocol, {"scratch": dict(T=T, alpha=0.0), "distilled": dict(T=T, alpha=alpha)})
        gains = [d - s for d, s in zip(arms["distilled"]["test_acc"]["values"], arms["scratch"]["test_acc"]["values"])]
        results[f"{fraction:g}"] = {"labelled_images": n, "epochs": epochs, "arms": arms, "paired_gains": gains}
    settings = base.settings(T=T, alpha=alpha, fractions=list(fractions), images_seen=images_seen)
    return {"settings": settings, "fractions": results, "seconds": round(time.perf_counter() - started, 1)}
