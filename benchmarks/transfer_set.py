"""Distillation where it wins: few labels, many unlabelled images, and a teacher that labels them.

    python benchmarks/transfer_set.py [--quick] [--fractions 0.01 0.02 0.1] [--seeds 0 1 2 3 4]

The teacher stands for a model trained elsewhere, on labels the student's owner does not have (here: the shipped
default teacher, trained on all 50,000 training labels); the student's owner has a few labelled images and many
unlabelled ones. A validation split (500 images per class) is held out first, with its labels, for choosing
settings; of the other 45,000 training images a stratified ``fraction`` keeps its labels. Arms, all
``student_small`` through one :class:`labkit.protocol.Protocol`:

* **(a) labels only**: the labelled images, cross-entropy with label smoothing chosen on validation among
  {0, 0.1, 0.2} (run as distillation with :func:`labkit.controls.uniform_targets` at T = 1, which is label smoothing);
* **(b) distilled, labelled images only**: the teacher's soft targets on the same labelled images;
* **(c) distilled with the transfer set**: every training image; the unlabelled ones get the soft term only;
* **(d) hard pseudo-labels**: every training image, the unlabelled ones labelled with the teacher's top class,
  cross-entropy with label smoothing chosen as in (a): the same images as (c) without the teacher's probabilities.

Equal budget: every run sees ``epochs`` x 45,000 augmented images in batches of 512 under the same schedule (the
labelled-only arms repeat their images to fill an epoch), on 4 cached augmented views. (T, alpha) for (b) and (c),
and the label smoothing of (a) and (d), are chosen on validation with the first seed; every seed then varies the
initial weights and the batch order; the test set is used once, for the final models. Paired differences come with
t-intervals, Holm-corrected within each fraction (:func:`labkit.stats.paired_gains`).

Finished runs are kept in runs/transfer_set/ (hash-named), so an interrupted run continues where it stopped, and
each fraction can be run on its own (``--fractions 0.02``): results merge into benchmarks/results/transfer_set.json
and .md (``_quick`` in quick mode). Measured on the JPEG copy of CIFAR-10 that load_cifar10 finds.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

from _common import RESULTS, write_report
from labkit.controls import uniform_targets
from labkit.data import load_cifar10
from labkit.experiments import SMOOTHING, TRANSFER_ARMS, TRANSFER_GAINS, transfer_budget, transfer_protocols
from labkit.pretrained import load_teacher
from labkit.protocol import Protocol, prepare, run_chosen, summaries
from labkit.settings import QUICK_ENV, quick_mode
from labkit.stats import describe_gain, paired_gains

TRANSFER_CANDIDATES = ((1.0, 0.5), (2.0, 0.9), (4.0, 1.0))


def fraction_result(base: Protocol, fraction: float) -> dict:
    """Every arm at one labelled fraction, and the paired differences between them."""
    p = transfer_protocols(base, fraction)
    labelled_images = p["labelled_per_class"] * len(base.data.classes)
    base.say(f"{fraction:g} of the labels: {labelled_images:,} labelled images (repeated {p['repeat']}x), "
             f"{p['unlabelled_images']:,} unlabelled; the teacher's labels for them are right on "
             f"{p['pseudo_label_accuracy']:.1%}")
    arms = {"labels only": run_chosen(p["labelled"], "labels only", SMOOTHING, targets=uniform_targets),
            "distilled, labelled only": run_chosen(p["labelled"], "distilled, labelled only", TRANSFER_CANDIDATES),
            "distilled, transfer set": run_chosen(p["transfer set"], "distilled, transfer set", TRANSFER_CANDIDATES),
            "pseudo-labels": run_chosen(p["pseudo-labels"], "pseudo-labels", SMOOTHING, targets=uniform_targets)}
    test = {name: arm["test_acc"]["values"] for name, arm in arms.items()}
    return {"labelled_images": labelled_images, "labelled_per_class": p["labelled_per_class"], "repeat": p["repeat"],
            "images_per_epoch": len(p["transfer set"].data.train_labels),
            "pseudo_label_accuracy": p["pseudo_label_accuracy"],
            "arms": {name: summaries(arm) for name, arm in arms.items()},
            "runs": {name: arm["runs"] for name, arm in arms.items()},
            "gains": paired_gains(test, TRANSFER_GAINS)}


def markdown(payload: dict) -> str:
    lines = ["| labels | " + " | ".join(TRANSFER_ARMS) + " |", "|---|" + "---|" * len(TRANSFER_ARMS)]
    for fraction, r in sorted(payload["fractions"].items(), key=lambda kv: float(kv[0])):
        cells = []
        for name in TRANSFER_ARMS:
            arm = r["arms"][name]
            t, c = arm["test_acc"], arm["chosen"]
            setting = f"eps {c['alpha']:g}" if name in ("labels only", "pseudo-labels") else f"T {c['T']:g}, alpha {c['alpha']:g}"
            cells.append(f"{100 * t['mean']:.2f} ± {100 * t['std']:.2f} ({setting})")
        lines.append(f"| {float(fraction):.0%} ({r['labelled_images']:,} images) | " + " | ".join(cells) + " |")
    lines += ["", "| labels | paired difference (test accuracy) | mean, interval (Holm-corrected) |", "|---|---|---|"]
    for fraction, r in sorted(payload["fractions"].items(), key=lambda kv: float(kv[0])):
        for pair, gain in r["gains"].items():
            lines.append(f"| {float(fraction):.0%} | {pair} | {describe_gain(gain)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"tiny subset, 2 epochs (also set by {QUICK_ENV}=1)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.02, 0.1],
                        help="labelled fractions of the training images (default 0.01 0.02 0.1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="seeds: initial weights and batch order (default 0 1 2 3 4)")
    parser.add_argument("--epochs", type=float, help="epochs of 45,000 images per run (default 4)")
    args = parser.parse_args()
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    quick = quick_mode()
    budget = transfer_budget(args.seeds)
    if args.epochs is not None:
        budget = replace(budget, epochs=args.epochs)
    started = time.perf_counter()
    base = prepare(load_teacher(), load_cifar10(verbose=False), budget, store="runs/transfer_set" + ("_quick" if quick else ""),
                   log=lambda m: print(m, flush=True))
    name = "transfer_set" + ("_quick" if quick else "")
    path = RESULTS / f"{name}.json"
    payload = json.loads(path.read_text()) if path.is_file() else {"fractions": {}}
    if payload.get("settings", {}).get("seeds", list(budget.seeds)) != list(budget.seeds) or \
            payload.get("settings", {}).get("epochs", budget.epochs) != budget.epochs:
        payload = {"fractions": {}}  # other seeds or budget: the old fractions are not comparable
    for fraction in args.fractions:
        payload["fractions"][f"{fraction:g}"] = fraction_result(base, fraction)
    payload.update(command="python benchmarks/transfer_set.py" + (" --quick" if quick else ""),
                   settings=base.settings(smoothing_candidates=SMOOTHING, distillation_candidates=TRANSFER_CANDIDATES),
                   wall_seconds_last_call=round(time.perf_counter() - started, 1))
    payload.pop("machine", None)
    about = (f"{len(budget.seeds)} seeds, {budget.epochs:g} epochs of {base.settings()['train_images']:,} images per "
             "run. Test accuracy (%) of the final models, mean ± std over seeds, with the setting chosen on validation")
    write_report(name, payload, "Distillation with a transfer set", about, markdown(payload), quick)

if __name__ == "__main__":
    main()
