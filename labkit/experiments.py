"""Scratch vs distilled students, compared so that the result can be trusted (introduced in 05_distill_student).

:func:`compare_scratch_vs_distilled` is the experiment of notebook 05 and of ``benchmarks/kd_headline.py``. It
guards against the usual ways a distillation result fools its author:

* **No tuning on the test set.** 500 training images per class (5,000) are held out as a validation split.
  Students train on the other 45,000 and are tracked epoch by epoch on the validation images; the distillation
  setting (T, alpha) is chosen on them. The test split is used once, at the end, and only for the final models
  of the reported arms.
* **The final epoch, never the best one.** Every number is that of the model after its last epoch.
* **The same budget and the same everything.** For one seed, every student starts from the same initial weights
  (``torch.manual_seed(seed)`` right before :func:`labkit.models.create`; their fingerprint is recorded to prove
  it) and sees the same batches of the same augmented views, in the same order, under the same learning-rate
  schedule, for the same number of epochs. All arms go through :func:`labkit.train.distill`: the scratch student
  is ``alpha = 0`` (the teacher's term weighs nothing, the loss is plain cross-entropy on the labels), so the loop,
  the loss code and the schedule are literally the same. They differ in the loss only.
* **A control for the loss scale.** The distillation loss weights the labels' cross-entropy by ``1 - alpha``. If
  distillation only helped because that acts like a smaller learning rate, the control "labels only, learning rate
  times ``1 - alpha``" would match it (with Nesterov SGD and airbench's decoupled weight decay, scaling the
  learning rate is the same as scaling the loss).
* **Seeds.** Every arm runs several seeds; mean ± standard deviation, min-max and the per-seed (paired) gains are
  reported. The seeds vary the initial weights: :func:`labkit.train.distill` derives the augmented views and the
  batch order from its ``seed``, and keeping that one fixed (``data_seed``) is what lets the teacher's logits be
  computed once for every run (see :mod:`labkit.teacher`).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from labkit import models
from labkit.data import CifarData
from labkit.evaluate import accuracy, agreement, expected_calibration_error, predict_logits
from labkit.history import History
from labkit.settings import pick
from labkit.teacher import FrozenTeacher, fingerprint, teacher_logits_for_views
from labkit.train import TrainConfig, distill

ARMS = ("scratch", "distilled", "control")
ARM_TEXT = {
    "scratch": "labels only (alpha = 0), same learning rate",
    "distilled": "distilled from the teacher",
    "control": "labels only, learning rate x (1 - alpha): the distillation loss's weight on the labels",
}
# (T, alpha) tried on validation: no temperature; the command line's default; a softer teacher weighted more.
CANDIDATES = ((1.0, 0.5), (2.0, 0.5), (4.0, 0.9))
# distill() evaluates on data.test_*; here that split holds the validation images, and the names say so.
_VALIDATION_COLUMNS = {"test_acc": "val_acc", "agreement": "val_agreement", "test_kl": "val_kl"}


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


def summarize(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min, max and the values themselves."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("nothing to summarize")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values), "n": len(values),
            "values": values}


def validation_data(data: CifarData, val_per_class: int, seed: int = 0) -> CifarData:
    """The training images minus ``val_per_class`` per class, with the held-out ones as the *evaluation* split.

    :func:`labkit.train.distill` evaluates every epoch on ``test_*``; here those are the validation images, so a
    run can be watched, and settings chosen, without ever touching the test set.
    """
    rest, (val_images, val_labels) = data.split_validation(val_per_class, seed=seed)
    return CifarData(rest.train_images, rest.train_labels, val_images, val_labels, classes=data.classes,
                     source=data.source)


def _validation_history(history: History, T: float, alpha: float) -> History:
    rows = []
    for row in history.rows:
        row = {_VALIDATION_COLUMNS.get(k, k): v for k, v in row.items()}
        if alpha < 1:
            row["train_ce"] = row["ce_part"] / (1 - alpha)  # the unweighted cross-entropy with the labels
        if alpha > 0:
            row["train_kl"] = row["kl_part"] / (alpha * T**2)  # the unweighted KL(teacher || student) at T
        rows.append(row)
    return History(rows)


def train_student(teacher: nn.Module, tune: CifarData, *, student: str, seed: int, T: float, alpha: float,
                  lr_scale: float = 1.0, epochs: float, teacher_views: int = 4, batch_size: int = 512,
                  data_seed: int = 0, progress: bool = True, method: Callable[..., History] | None = None,
                  **method_options) -> tuple[nn.Module, dict]:
    """One student run through :func:`labkit.train.distill` (or ``method``, a function with its signature, such
    as :func:`labkit.beyond.function_matching`) on ``tune`` (built by :func:`validation_data`).

    Returns the trained student and a record of the run: its settings, the fingerprint of its initial weights,
    its per-epoch history (columns renamed ``val_acc``, ``val_agreement``, ``val_kl``, plus the unweighted
    ``train_ce`` and ``train_kl``), its final-epoch validation numbers and its wall time.
    """
    torch.manual_seed(seed)
    model = models.create(student)
    init = fingerprint(model)[:16]
    method = method or distill
    started = time.perf_counter()
    history = method(model, teacher, tune, T=T, alpha=alpha, epochs=epochs, teacher_views=teacher_views,
                     batch_size=batch_size, seed=data_seed, lr=TrainConfig().lr * lr_scale, progress=progress,
                     **method_options)
    history = _validation_history(history, T, alpha)
    last = history.last
    record = {"seed": seed, "method": method.__name__, "T": T, "alpha": alpha, "lr_scale": lr_scale,
              "init_fingerprint": init,
              "val_acc": last["val_acc"], "val_agreement": last["val_agreement"], "val_kl": last["val_kl"],
              "seconds": round(time.perf_counter() - started, 1), "history": history.to_dict()}
    return model, record


def evaluate_on_test(model: nn.Module, test_images: torch.Tensor, test_labels: torch.Tensor,
                     teacher_test_logits: torch.Tensor, T: float) -> dict:
    """Test accuracy, agreement with the teacher, KL(teacher || student) at ``T`` and ECE of a final model."""
    logits = predict_logits(model, test_images)
    kl = F.kl_div(F.log_softmax(logits / T, 1), F.log_softmax(teacher_test_logits / T, 1), reduction="batchmean",
                  log_target=True).item()
    return {"test_acc": accuracy(logits, test_labels), "test_agreement": agreement(logits, teacher_test_logits),
            "test_kl": kl, "test_ece": expected_calibration_error(logits, test_labels)}


def compare_scratch_vs_distilled(teacher: nn.Module, data: CifarData, *, student: str = "student_small",
                                 epochs: float = 4, seeds: Sequence[int] = (0, 1, 2),
                                 candidates: Sequence[tuple[float, float]] = CANDIDATES,
                                 teacher_views: int = 4, batch_size: int = 512, val_per_class: int = 500,
                                 train_per_class: int | None = None, test_per_class: int | None = None,
                                 data_seed: int = 0, control: bool = True, progress: bool = True,
                                 log: Callable[[str], None] | None = print) -> dict:
    """Students from scratch vs distilled from ``teacher`` at the same budget; a JSON-ready results dict.

    Steps (see the module's docstring for why):

    1. Optionally shrink ``data`` to ``train_per_class`` / ``test_per_class`` (quick mode), then hold out
       ``val_per_class`` training images per class as validation.
    2. Choose (T, alpha) among ``candidates``: one distilled run each with the first seed; the highest
       final-epoch **validation** accuracy wins (ties: the earlier candidate).
    3. Run the winner with the other seeds, the scratch student (alpha = 0; T only sets the temperature at which
       its KL to the teacher is tracked) with every seed, and, with ``control``, labels only at learning rate
       x (1 - alpha) with every seed.
    4. Evaluate the final models of those arms on the test split, once, and summarize over seeds.

    The result holds ``settings``, ``candidates`` (validation accuracy of each), ``chosen``, ``runs`` (one record
    per run, see :func:`train_student`, with test numbers for the reported arms), ``arms`` (summaries over seeds),
    ``teacher`` (its test accuracy) and ``headline`` (the gains and whether the seed ranges overlap).
    """
    if not seeds or not candidates:
        raise ValueError("need at least one seed and one (T, alpha) candidate")
    candidates = [(float(T), float(alpha)) for T, alpha in candidates]
    if any(not 0 < alpha < 1 for _, alpha in candidates):
        raise ValueError(f"every candidate's alpha must lie strictly between 0 and 1 (0 is the scratch arm, and "
                         f"the control's learning rate is x (1 - alpha)), got {candidates}")
    say = log or (lambda message: None)
    settings = dict(student=student, epochs=epochs, seeds=list(seeds), candidates=[list(c) for c in candidates],
                    teacher_views=teacher_views, batch_size=batch_size, val_per_class=val_per_class,
                    train_per_class=train_per_class, test_per_class=test_per_class, data_seed=data_seed,
                    control=control, data=data.source)
    started = time.perf_counter()
    if train_per_class is not None or test_per_class is not None:
        data = data.subset(train_per_class, test_per_class, seed=data_seed)
    tune = validation_data(data, val_per_class, seed=data_seed)
    settings.update(train_images=len(tune.train_labels), val_images=len(tune.test_labels),
                    test_images=len(data.test_labels))
    frozen = teacher if isinstance(teacher, FrozenTeacher) else FrozenTeacher(teacher)
    total = len(candidates) + 2 * len(seeds) - 1 + (len(seeds) if control else 0)
    runs, students = [], {}

    def run(arm: str, seed: int, T: float, alpha: float, lr_scale: float = 1.0) -> dict:
        say(f"[{len(runs) + 1}/{total}] {arm}: seed {seed}, T={T:g}, alpha={alpha:g}, lr x {lr_scale:g}")
        model, record = train_student(frozen, tune, student=student, seed=seed, T=T, alpha=alpha, lr_scale=lr_scale,
                                      epochs=epochs, teacher_views=teacher_views, batch_size=batch_size,
                                      data_seed=data_seed, progress=progress)
        record = {"arm": arm, **record}
        say(f"    final-epoch validation accuracy {record['val_acc']:.4f} ({record['seconds']:.0f} s)")
        runs.append(record)
        students[len(runs) - 1] = model
        return record

    first, rest_seeds = seeds[0], list(seeds[1:])
    tried = [run("candidate", first, T, alpha) for T, alpha in candidates]
    best = max(range(len(tried)), key=lambda i: (tried[i]["val_acc"], -i))
    T, alpha = candidates[best]
    tried[best]["arm"] = "distilled"
    say(f"chosen on validation: T={T:g}, alpha={alpha:g}")
    for seed in rest_seeds:
        run("distilled", seed, T, alpha)
    for seed in seeds:
        run("scratch", seed, T, 0.0)
    if control:
        for seed in seeds:
            run("control", seed, T, 0.0, lr_scale=1.0 - alpha)

    teacher_test = teacher_logits_for_views(frozen, [data.test_images], progress=progress)[0]
    for i, record in enumerate(runs):
        if record["arm"] in ARMS:
            record.update(evaluate_on_test(students[i], data.test_images, data.test_labels, teacher_test, T))
    arms = {}
    for arm in ARMS:
        members = [r for r in runs if r["arm"] == arm]
        if members:
            arms[arm] = {"description": ARM_TEXT[arm], "T": members[0]["T"], "alpha": members[0]["alpha"],
                         "lr_scale": members[0]["lr_scale"],
                         **{k: summarize([r[k] for r in members]) for k in
                            ("test_acc", "val_acc", "test_agreement", "test_kl", "test_ece")}}
    results = {
        "settings": settings,
        "candidates": [{"T": r["T"], "alpha": r["alpha"], "val_acc": r["val_acc"]} for r in tried],
        "chosen": {"T": T, "alpha": alpha, "by": f"final-epoch validation accuracy, seed {first}"},
        "teacher": {"test_acc": accuracy(teacher_test, data.test_labels)},
        "arms": arms,
        "runs": runs,
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
    """Issue 7's targets, each as ``{"value", "target", "met"}``.

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



def run_arms(arms: dict[str, dict], tune: CifarData, test_images: torch.Tensor, test_labels: torch.Tensor, *,
             student: str, seeds: Sequence[int], epochs: float, batch_size: int = 512, data_seed: int = 0,
             progress: bool = False, log: Callable[[str], None] | None = print) -> dict:
    """Train one student per (arm, seed) with :func:`train_student`, then test each final model once.

    ``arms`` maps a name to the arm's ``teacher`` and its :func:`train_student` options (``T``, ``alpha``,
    ``teacher_views``, ``method``, ...). For one seed every arm starts from the same weights and sees the same
    batches. Returns, per arm, summaries over seeds of test/validation accuracy, agreement and ECE, the
    teacher's test accuracy, and the runs (without their models).
    """
    if not arms or not seeds:
        raise ValueError("need at least one arm and one seed")
    say = log or (lambda message: None)
    out = {}
    for name, options in arms.items():
        options = dict(options)
        frozen = options.pop("teacher")
        frozen = frozen if isinstance(frozen, FrozenTeacher) else FrozenTeacher(frozen)
        teacher_test = teacher_logits_for_views(frozen, [test_images], progress=progress)[0]
        runs = []
        for seed in seeds:
            say(f"{name}: seed {seed}")
            model, record = train_student(frozen, tune, student=student, seed=seed, epochs=epochs,
                                          batch_size=batch_size, data_seed=data_seed, progress=progress, **options)
            record.update(evaluate_on_test(model, test_images, test_labels, teacher_test, options["T"]))
            say(f"    final test accuracy {record['test_acc']:.4f} ({record['seconds']:.0f} s)")
            runs.append(record)
        out[name] = {"teacher_test_acc": accuracy(teacher_test, test_labels),
                     **{k: summarize([r[k] for r in runs]) for k in ("test_acc", "val_acc", "test_agreement", "test_ece")},
                     "runs": runs}
    return out


def compare_teachers(teachers: dict[str, nn.Module], data: CifarData, *, T: float, alpha: float,
                     student: str = "student_small", epochs: float = 4, seeds: Sequence[int] = (0, 1, 2),
                     teacher_views: int = 4, batch_size: int = 512, val_per_class: int = 500,
                     train_per_class: int | None = None, test_per_class: int | None = None, data_seed: int = 0,
                     progress: bool = False, log: Callable[[str], None] | None = print) -> dict:
    """One student per seed distilled from each of ``teachers`` (name -> model) at the same budget and (T, alpha).

    Introduced in 07_ensemble_teachers; see :func:`run_arms` for what is held equal and what is returned.
    """
    started = time.perf_counter()
    if train_per_class is not None or test_per_class is not None:
        data = data.subset(train_per_class, test_per_class, seed=data_seed)
    tune = validation_data(data, val_per_class, seed=data_seed)
    arms = {name: dict(teacher=t, T=T, alpha=alpha, teacher_views=teacher_views) for name, t in teachers.items()}
    results = run_arms(arms, tune, data.test_images, data.test_labels, student=student, seeds=seeds, epochs=epochs,
                       batch_size=batch_size, data_seed=data_seed, progress=progress, log=log)
    settings = dict(T=T, alpha=alpha, student=student, epochs=epochs, seeds=list(seeds), teacher_views=teacher_views,
                    batch_size=batch_size, val_per_class=val_per_class, train_images=len(tune.train_labels),
                    val_images=len(tune.test_labels), test_images=len(data.test_labels), data=data.source)
    return {"settings": settings, "teachers": results, "seconds": round(time.perf_counter() - started, 1)}


def limited_data_comparison(teacher: nn.Module, data: CifarData, *, T: float, alpha: float,
                            fractions: Sequence[float] = (0.02, 0.1), student: str = "student_small",
                            images_seen: int = 50_000, seeds: Sequence[int] = (0, 1, 2), val_per_class: int = 100,
                            batch_size: int = 128, data_seed: int = 0, progress: bool = False,
                            log: Callable[[str], None] | None = print) -> dict:
    """Scratch vs distilled students trained on a small labelled fraction of the training set.

    Introduced in 09_compress_and_deploy (the "limited data" row of the decision matrix). ``val_per_class``
    images per class are held out first and never labelled for training; each fraction's labelled subset is
    drawn from the rest (a fraction of the full 50,000-image training set, stratified). Every run sees
    ``images_seen`` augmented images (so smaller subsets get more epochs) with the same batches, weights and
    schedule in both arms; the teacher's logits are cached for up to 8 views. The teacher was trained on all
    training labels, as in Hinton et al.'s 3% experiment: the question is what a student can get from it when
    the student's own labels are few.
    """
    if any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions must lie in (0, 1], got {fractions}")
    started = time.perf_counter()
    say = log or (lambda message: None)
    rest, (val_images, val_labels) = data.split_validation(val_per_class, seed=data_seed)
    per_class_total = len(data.train_labels) // len(data.classes)
    results = {}
    for fraction in fractions:
        labelled = rest.subset(max(1, round(fraction * per_class_total)), None, seed=data_seed)
        tune = CifarData(labelled.train_images, labelled.train_labels, val_images, val_labels, classes=data.classes,
                         source=data.source)
        epochs = images_seen / len(tune.train_labels)
        views = min(8, math.ceil(epochs))
        arms = {"scratch": dict(teacher=teacher, T=T, alpha=0.0, teacher_views=views),
                "distilled": dict(teacher=teacher, T=T, alpha=alpha, teacher_views=views)}
        say(f"{fraction:.0%} of the labels: {len(tune.train_labels):,} images, {epochs:.1f} epochs")
        arms = run_arms(arms, tune, data.test_images, data.test_labels, student=student, seeds=seeds, epochs=epochs,
                        batch_size=min(batch_size, len(tune.train_labels)), data_seed=data_seed, progress=progress,
                        log=log)
        gains = [d - s for d, s in zip(arms["distilled"]["test_acc"]["values"], arms["scratch"]["test_acc"]["values"])]
        results[f"{fraction:g}"] = {"labelled_images": len(tune.train_labels), "epochs": epochs, "arms": arms,
                                    "paired_gains": gains}
    settings = dict(T=T, alpha=alpha, fractions=list(fractions), student=student, images_seen=images_seen,
                    seeds=list(seeds), val_per_class=val_per_class, batch_size=batch_size, data=data.source)
    return {"settings": settings, "fractions": results, "seconds": round(time.perf_counter() - started, 1)}
