"""The course's headline: a small student distilled from the default teacher against the best labels-only recipe.

    python benchmarks/kd_headline.py [--quick] [--seeds 0 1 2 3 4]

The experiment of notebooks/05_distill_student.ipynb (:func:`labkit.experiments.headline_comparison`), at the
patient budget of :func:`labkit.experiments.patient_budget`: ``student_small``, 20 epochs of the 45,000 training
images (5,000 held out for validation), the teacher's logits cached for 4 augmented views per seed. Arms:

* **labels only**: cross-entropy with label smoothing chosen on validation among {0, 0.1, 0.2};
* **distilled**: the default teacher, (T, alpha) chosen on validation among three candidates;
* **uniform teacher**: the teacher replaced by the uniform distribution at the chosen (T, alpha): softer targets,
  nothing learnt;
* **class-average teacher**: every image of class c gets the teacher's mean soft prediction for class c: which
  classes resemble which, nothing specific to the image.

Every seed varies the initial weights, the batch order and the augmented views (only the teacher and the split are
fixed); the choices use the first seed and validation; the test set is used once, for the final-epoch models.
Paired differences come with t-intervals: the primary comparison (distilled - labels only, named before the runs)
at 95%, the three that explain it Holm-corrected (:func:`labkit.stats.paired_gains`). Finished runs (weights and
record) are kept in benchmarks/kept/kd_headline/, which is committed: the whole experiment takes about 3.8 hours
on 2 CPU cores, more than one working session, and an interrupted run, on this machine or a fresh clone, continues
where it stopped (quick mode keeps its runs in runs/, uncommitted). Writes benchmarks/results/kd_headline.json and
.md (``_quick`` in quick mode). Measured on the JPEG copy of CIFAR-10 that load_cifar10 finds.
"""

from __future__ import annotations

import argparse
import os

from _common import write_report
from labkit.data import load_cifar10
from labkit.experiments import headline_comparison, patient_budget
from labkit.pretrained import load_teacher
from labkit.protocol import prepare
from labkit.settings import QUICK_ENV, quick_mode
from labkit.stats import describe_gain

TARGET = 0.015  # distilled - labels only, with the interval above 0


def markdown(results: dict) -> str:
    """The arms and the paired differences as Markdown tables."""
    lines = ["| arm | T | alpha | test acc % (mean ± std) | per seed % | val acc % | agreement % | ECE |",
             "|---|---|---|---|---|---|---|---|"]
    for name, arm in results["arms"].items():
        first = results["runs"][name][0]
        t = arm["test_acc"]
        lines.append(f"| {name} | {first['T']:g} | {first['alpha']:g} | {100 * t['mean']:.2f} ± {100 * t['std']:.2f} | "
                     + ", ".join(f"{100 * v:.2f}" for v in t["values"])
                     + f" | {100 * arm['val_acc']['mean']:.2f} | {100 * arm['test_agreement']['mean']:.2f} | "
                       f"{arm['test_ece']['mean']:.4f} |")
    lines += ["", "| paired difference (test accuracy) | mean, interval (the primary at 95%, the others Holm-corrected) |", "|---|---|"]
    lines += [f"| {pair} | {describe_gain(gain)} |" for pair, gain in results["gains"].items()]
    lines += ["", "| chosen on validation (first seed) | candidate | val acc % |", "|---|---|---|"]
    for arm, tried in results["candidates"].items():
        lines += [f"| {arm} | T {c['T']:g}, alpha {c['alpha']:g} | {100 * c['val_acc']:.2f} |" for c in tried]
    gain = results["gains"]["distilled - labels only"]
    reached = gain["mean"] >= TARGET and gain["low"] > 0
    lines += ["", f"Target: distilled - labels only >= +{100 * TARGET:.1f} points with the interval above 0: "
              f"{'reached' if reached else 'not reached'} ({describe_gain(gain)}). Teacher test accuracy "
              f"{100 * results['teacher']['test_acc']:.2f}%."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"tiny subset, 2 epochs (also set by {QUICK_ENV}=1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="seeds: initial weights, batch order, augmented views (default 0 1 2 3 4)")
    args = parser.parse_args()
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    quick = quick_mode()
    name = "kd_headline" + ("_quick" if quick else "")
    budget = patient_budget(args.seeds)
    store = f"runs/{name}" if quick else f"benchmarks/kept/{name}"
    protocol = prepare(load_teacher(), load_cifar10(verbose=False), budget, store=store,
                       log=lambda m: print(m, flush=True))
    results = headline_comparison(protocol)
    payload = {"command": "python benchmarks/kd_headline.py" + (" --quick" if quick else ""), **results}
    about = (f"{len(budget.seeds)} seeds, {budget.epochs:g} epochs of {results['settings']['train_images']:,} images "
             f"per run, {results['seconds'] / 60:.1f} min for this invocation (runs read back from {store} were not trained again). Final-epoch "
             "test accuracy, settings chosen on validation")
    write_report(name, payload, "Distillation against the best labels-only recipe", about, markdown(results), quick)


if __name__ == "__main__":
    main()
