"""The course's headline result: a small student from scratch vs distilled from the shipped teacher.

    python benchmarks/kd_headline.py [--quick] [--epochs 4] [--views 4] [--student student_small]

The same experiment as notebooks/05_distill_student.ipynb, through the same function
(:func:`labkit.experiments.compare_scratch_vs_distilled`): settings chosen on 5,000 held-out training images,
3 seeds per arm with equal initial weights, batches, schedule and epochs, a loss-scale control, final-epoch
test accuracy. It adds the size-and-speed table of teacher and students and checks the student's goals (size, speed, accuracy).
Writes benchmarks/results/kd_headline.json and .md (kd_headline_quick.* in quick mode, so a quick run never
overwrites a full one). Defaults take about 25 minutes on 2 CPU cores; measured on the JPEG copy of CIFAR-10
that load_cifar10 finds (accuracy on the original pickled files can differ slightly).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from _common import RESULTS, machine, print_table, write_json
from labkit import models
from labkit.data import load_cifar10
from labkit.experiments import check_targets, compare_scratch_vs_distilled, headline_settings, markdown_table
from labkit.pretrained import load_teacher
from labkit.settings import QUICK_ENV, quick_mode
from labkit.speed import size_and_speed


def speed_table(student: str, quick: bool) -> dict[str, dict]:
    """Size and speed of the teacher and the students (fresh weights: timings do not depend on their values)."""
    reps = dict(latency_repeats=20, throughput_repeats=3, warmup=3) if quick else {}
    rows = {"teacher": size_and_speed(load_teacher(), **reps)}
    for name in dict.fromkeys([student, "student_small", "student_medium"]):
        torch.manual_seed(0)
        rows[name] = size_and_speed(models.create(name), **reps)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"tiny subset, 2 epochs (also set by {QUICK_ENV}=1)")
    parser.add_argument("--epochs", type=float, help="epochs per student (default: the notebook's)")
    parser.add_argument("--views", type=int, help="cached augmented views for the teacher's logits")
    parser.add_argument("--student", choices=models.available(), help="student architecture")
    parser.add_argument("--seeds", type=int, nargs="+", help="initialisation seeds (default 0 1 2)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.quick:
        os.environ[QUICK_ENV] = "1"  # headline_settings() reads quick mode through labkit.pick
    quick = quick_mode()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = headline_settings()
    for key, value in (("epochs", args.epochs), ("teacher_views", args.views), ("student", args.student),
                       ("seeds", tuple(args.seeds) if args.seeds else None)):
        if value is not None:
            settings[key] = value
    started = time.perf_counter()
    speed = speed_table(settings["student"], quick)
    print_table([{"model": name, **row} for name, row in speed.items()])
    results = compare_scratch_vs_distilled(load_teacher(), load_cifar10(verbose=False), **settings)
    targets = check_targets(results, speed)
    wall = time.perf_counter() - started
    table = markdown_table(results, targets)
    print(table)
    name = "kd_headline_quick" if quick else "kd_headline"
    command = "python benchmarks/kd_headline.py" + (" --quick" if quick else "")
    write_json(name, {"command": command, "wall_seconds": round(wall, 1), "speed": speed, "targets": targets,
                      **results})
    speed_md = ["| model | params | MFLOPs/img | file KB | latency ms (batch 1) | images/s (batch 256) |",
                "|---|---|---|---|---|---|"]
    speed_md += [f"| {n} | {r['params']:,} | {r['mflops_per_image']} | {r['file_kb']} | {r['latency_ms']} | "
                 f"{r['images_per_s']} |" for n, r in speed.items()]
    m = machine()
    header = (f"# Distillation headline{' (quick mode: not a result)' if quick else ''}\n\n`{command}`: "
              f"{wall / 60:.1f} min on {m['cpu']} ({m['torch_threads']} torch threads), torch {m['torch']}, "
              f"{m['date']}.\n\n")
    (RESULTS / f"{name}.md").write_text(header + table + "\n" + "\n".join(speed_md) + "\n")
    print(f"wrote {RESULTS / (name + '.md')}")


if __name__ == "__main__":
    main()
