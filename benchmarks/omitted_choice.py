"""Which teacher, T and alpha for the omitted-class experiment (10_omitted_class), chosen on validation only.

    python benchmarks/omitted_choice.py [--quick]

The budget of notebook 10 (:func:`labkit.omitted.omitted_budget`): every cat removed from the training images after
a validation split of 500 images per class is held out. For each shipped teacher (``teacher``, label smoothing 0.2;
``teacher_2``, none) and each (T, alpha) of :data:`labkit.omitted.CANDIDATES`, one distilled ``student_small`` with
the first seed, plus one labels-only student; each student's cat bias is chosen on validation and the criterion is
the share of the 500 validation cats it then recognises (:func:`labkit.omitted.choose_omitted_setting`). The test
set is not used. Notebook 10 reads the choice.

Finished runs are kept in runs/omitted_choice/ (hash-named), so an interrupted run continues where it stopped.
Writes benchmarks/results/omitted_choice.json and .md (``_quick`` in quick mode).
"""

from __future__ import annotations

import argparse
import os
import time

from _common import write_report
from labkit.data import load_cifar10
from labkit.omitted import CANDIDATES, TEACHERS, choose_omitted_setting, omitted_budget
from labkit.pretrained import load_pretrained
from labkit.settings import QUICK_ENV, quick_mode


def markdown(payload: dict) -> str:
    lines = ["| teacher | T | alpha | val cats recognised, with the bias % | bias | val cats, no bias % | "
             "val acc, no bias % |", "|---|---|---|---|---|---|---|"]
    rows = [(c["teacher"], f"{c['T']:g}", f"{c['alpha']:g}", c) for c in payload["candidates"]]
    rows.append(("labels only", "-", "0", payload["labels_only"]))
    for teacher, T, alpha, c in rows:
        lines.append(f"| {teacher} | {T} | {alpha} | {100 * c['val_omitted_acc_biased']:.1f} | {c['bias']:.1f} | "
                     f"{100 * c['val_omitted_acc']:.1f} | {100 * c['val_acc']:.2f} |")
    chosen = payload["chosen"]
    lines += ["", f"Chosen on validation: **{chosen['teacher']}, T = {chosen['T']:g}, alpha = {chosen['alpha']:g}**."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"tiny subset, 1 epoch (also set by {QUICK_ENV}=1)")
    args = parser.parse_args(argv)
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    quick = quick_mode()
    started = time.perf_counter()
    data = load_cifar10(verbose=False)
    result = choose_omitted_setting({name: load_pretrained(name) for name in TEACHERS}, data,
                                    omitted=data.classes.index("cat"), candidates=CANDIDATES,
                                    store="runs/omitted_choice" + ("_quick" if quick else ""),
                                    log=lambda m: print(m, flush=True), **omitted_budget())
    payload = {"command": "python benchmarks/omitted_choice.py" + (" --quick" if quick else ""),
               "wall_seconds": round(time.perf_counter() - started, 1), **result}
    name = "omitted_choice" + ("_quick" if quick else "")
    about = f"{payload['wall_seconds'] / 60:.1f} min (runs read back from runs/omitted_choice included)"
    write_report(name, payload, "The omitted-class experiment's setting, chosen on validation", about,
                 markdown(payload), quick)
    return payload


if __name__ == "__main__":
    main()
