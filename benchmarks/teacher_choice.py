"""Which shipped teacher teaches better: the same student distilled from each, with plain and flip-averaged targets.

    python benchmarks/teacher_choice.py [--quick] [--seeds 0 1 2] [--wide]

The short budget (:func:`labkit.experiments.short_budget`): ``student_small``,
4 epochs on 45,000 training images, 4 cached augmented views, 5,000 validation images. For each teacher target —
``teacher`` (label smoothing 0.2) and ``teacher_2`` (none), each plain and flip-averaged
(:class:`labkit.evaluate.FlipAveraged`, twice the teacher's cost) — (T, alpha) is chosen among three
candidates on validation with the first seed, then every seed trains with its own initial weights and batch order
(the views, and so the teacher's cached logits, are shared). The test set is used once, for the final models.
Paired differences between targets come with 95% t-intervals (:func:`labkit.stats.paired_interval`).

``--wide`` searches a wider grid (T in {1, 2} x alpha in {0.5, 0.7, 0.9}, plus (3, 0.7) and (4, 0.9)) for the
plain targets only, and writes ``teacher_choice_wide``: runs already made by the narrow search are reused.

Finished runs are kept in runs/teacher_choice/ (hash-named), so an interrupted run continues where it stopped.
Writes benchmarks/results/teacher_choice.json and .md (``_quick`` in quick mode). Measured on the JPEG copy of
CIFAR-10 that load_cifar10 finds (accuracy on the original pickled files can differ slightly).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from itertools import combinations

from torch import nn

from _common import write_report
from labkit.data import CifarData, load_cifar10
from labkit.evaluate import FlipAveraged, accuracy, expected_calibration_error
from labkit.experiments import short_budget
from labkit.pretrained import load_pretrained
from labkit.protocol import Budget, prepare, run_chosen, summaries
from labkit.settings import QUICK_ENV, quick_mode
from labkit.stats import paired_interval

TEACHERS = ("teacher", "teacher_2")
CANDIDATES = ((1.0, 0.5), (2.0, 0.5), (4.0, 0.9))
WIDE_CANDIDATES = ((1.0, 0.5), (2.0, 0.5), (4.0, 0.9), (1.0, 0.7), (1.0, 0.9), (2.0, 0.7), (2.0, 0.9), (3.0, 0.7))


def teacher_targets(flip: bool = True) -> dict[str, nn.Module]:
    """Each shipped teacher, plain and (with ``flip``) flip-averaged, by name ("teacher_2, flip", ...)."""
    out = {}
    for name in TEACHERS:
        model = load_pretrained(name)
        out[f"{name}, plain"] = model
        if flip:
            out[f"{name}, flip"] = FlipAveraged(model)
    return out


def measure(name: str, target: nn.Module, data: CifarData, budget: Budget, store: str,
            candidates: tuple[tuple[float, float], ...]) -> dict:
    protocol = prepare(target, data, budget, store=store, log=lambda m: print(f"[{name}] {m}", flush=True))
    arm = run_chosen(protocol, name, candidates)
    test_logits = protocol.teacher_test_logits()
    return {"chosen": arm["chosen"], "candidates": arm["candidates"],
            "teacher": {"test_acc": accuracy(test_logits, protocol.data.test_labels),
                        "test_ece": expected_calibration_error(test_logits, protocol.data.test_labels)},
            "student": summaries(arm), "runs": arm["runs"], "settings": protocol.settings()}


def comparisons(results: dict) -> dict:
    """Paired test- and validation-accuracy differences, per seed, between every two targets."""
    out = {}
    for a, b in combinations(results, 2):
        out[f"{b} - {a}"] = {split: paired_interval(results[b]["student"][split]["values"],
                                                    results[a]["student"][split]["values"])
                             for split in ("val_acc", "test_acc")}
    return out


def markdown(payload: dict) -> str:
    lines = ["| teacher target | teacher test acc % | teacher ECE | chosen T, alpha | student val acc % | "
             "student test acc % (mean ± std) | per seed % |", "|---|---|---|---|---|---|---|"]
    for name, r in payload["targets"].items():
        s, t = r["student"], r["teacher"]
        lines.append(f"| {name} | {100 * t['test_acc']:.2f} | {t['test_ece']:.3f} | {r['chosen']['T']:g}, "
                     f"{r['chosen']['alpha']:g} | {100 * s['val_acc']['mean']:.2f} | {100 * s['test_acc']['mean']:.2f} ± "
                     f"{100 * s['test_acc']['std']:.2f} | "
                     + ", ".join(f"{100 * v:.2f}" for v in s["test_acc"]["values"]) + " |")
    lines += ["", "| paired difference (test) | mean, points | 95% interval | shown |", "|---|---|---|---|"]
    for pair, c in payload["comparisons"].items():
        d = c["test_acc"]
        lines.append(f"| {pair} | {100 * d['mean']:+.2f} | [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] | "
                     f"{'yes' if d['shown'] else 'no'} |")
    best = payload["best_on_validation"]
    lines += ["", f"Best teacher target on validation (mean over seeds): **{best}**."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"tiny subset, 2 epochs (also set by {QUICK_ENV}=1)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1 2): initial weights and batch order")
    parser.add_argument("--wide", action="store_true", help="a wider (T, alpha) grid, plain targets only")
    args = parser.parse_args()
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    quick = quick_mode()
    budget = replace(short_budget(args.seeds or (0, 1, 2)), batch_order_per_seed=True)
    started = time.perf_counter()
    data = load_cifar10(verbose=False)
    store = "runs/teacher_choice" + ("_quick" if quick else "")
    candidates = WIDE_CANDIDATES if args.wide else CANDIDATES
    results = {name: measure(name, target, data, budget, store, candidates)
               for name, target in teacher_targets(flip=not args.wide).items()}
    command = "python benchmarks/teacher_choice.py" + (" --wide" if args.wide else "") + (" --quick" if quick else "")
    payload = {"command": command,
               "wall_seconds": round(time.perf_counter() - started, 1), "targets": results,
               "comparisons": comparisons(results),
               "best_on_validation": max(results, key=lambda n: results[n]["student"]["val_acc"]["mean"])}
    name = "teacher_choice" + ("_wide" if args.wide else "") + ("_quick" if quick else "")
    about = (f"{payload['wall_seconds'] / 60:.1f} min, seeds {list(budget.seeds)} (the wall time includes runs read "
             "back from runs/teacher_choice)")
    write_report(name, payload, "Which teacher teaches better", about, markdown(payload), quick)

if __name__ == "__main__":
    main()
