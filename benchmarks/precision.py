"""bfloat16 against float32 on this machine: training-step speed of the course's models, and the accuracy runs reach.

    python benchmarks/precision.py [--quick] [--part speed accuracy teacher] [--seeds 0 1 2]

* **speed**: for the teacher and each student, a full training step as labkit takes it (forward under
  :func:`labkit.settings.autocast`, cross-entropy in float32, backward, the course's Nesterov SGD; channels_last;
  random images, batch 512) in interleaved rounds, fp32 then bf16, so both share the machine's state; steps/s is the
  median over the rounds.
* **accuracy**: ``student_small`` distilled at the headline's patient budget (:func:`labkit.experiments.patient_budget`,
  the headline's chosen T = 4, alpha = 0.9), the same seeds in fp32 and in bf16 (same initial weights, batch order
  and views); the paired difference of test accuracy with its 95% interval. The fp32 runs are the headline's own
  when benchmarks/kept/kd_headline holds them (they were computed in float32), else trained here; bf16 runs are
  kept in benchmarks/kept/precision.
* **notebooks**: reads the full-mode notebook runs made in each precision by
  ``LABKIT_PRECISION=fp32 python benchmarks/notebook_runs.py --memory-limit 1536 --results precision_notebooks_fp32
  notebooks/05_distill_student.ipynb`` (and the same with bf16): minutes and peak memory side by side.
* **teacher**: the shipped teacher's recipe (``labkit train-teacher``'s defaults: 12 epochs on all 50,000 training
  images, seed 0) once in bf16, against the shipped teacher's test accuracy (trained in fp32).

Writes benchmarks/results/precision.json and .md (``_quick`` in quick mode, whose numbers are not results). The
parts of an earlier run that this one does not repeat are kept in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import RESULTS, write_report
from labkit import models, settings
from labkit.data import load_cifar10
from labkit.evaluate import accuracy, predict_logits
from labkit.experiments import patient_budget
from labkit.models import init_whitening
from labkit.pretrained import load_teacher
from labkit.protocol import prepare
from labkit.settings import PRECISION_ENV, QUICK_ENV, pick, quick_mode
from labkit.speed import cpu_int8_flags
from labkit.stats import describe_gain, paired_interval, summarize
from labkit.train import TrainConfig, make_optimizer, train

PRECISIONS = ("fp32", "bf16")
SPEED_MODELS = ("teacher", "student_small", "student_medium")
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")
T, ALPHA = 4.0, 0.9  # the headline's choice (benchmarks/results/kd_headline.json)
HEADLINE_SEEDS = (0, 1, 2, 3, 4)


def cpu_description() -> dict:
    """The CPU's name, its bfloat16 instructions as /proc/cpuinfo lists them, torch's vector unit and threads."""
    info = cpu_int8_flags()
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.is_file() else set()
    return {"cpu": info["cpu"], **{flag: flag in flags for flag in BF16_FLAGS},
            "torch_cpu_capability": info["torch_cpu_capability"], "torch_threads": info["torch_threads"]}


def in_precision(precision: str):
    """Set ``LABKIT_PRECISION`` for what follows (every labkit call reads it)."""
    os.environ[PRECISION_ENV] = precision
    return precision


def training_step(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor):
    """One step of ``model`` as labkit's loop takes it, in the precision ``LABKIT_PRECISION`` says."""
    optimizer = make_optimizer(model, TrainConfig())

    def step() -> None:
        with settings.autocast("cpu", model):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels, reduction="sum")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def steps_per_second(name: str, batch_size: int, rounds: int, steps: int) -> dict:
    """Median steps/s of ``name`` in each precision over ``rounds`` interleaved rounds of ``steps`` timed steps."""
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, 3, 32, 32, generator=gen).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch_size,), generator=gen)
    steppers = {}
    for precision in PRECISIONS:
        torch.manual_seed(0)
        model = models.create(name).to(memory_format=torch.channels_last).train()
        if getattr(model, "whiten", False):
            init_whitening(model, images)
        steppers[precision] = training_step(model, images, labels)
        in_precision(precision)
        for _ in range(2):  # oneDNN builds its kernels on the first calls
            steppers[precision]()
    seconds = {p: [] for p in PRECISIONS}
    for _ in range(rounds):
        for precision in PRECISIONS:
            in_precision(precision)
            steppers[precision]()  # untimed: absorbs what the other precision left behind
            started = time.perf_counter()
            for _ in range(steps):
                steppers[precision]()
            seconds[precision].append((time.perf_counter() - started) / steps)
    row = {"model": name, "batch_size": batch_size, "rounds": rounds}
    for precision in PRECISIONS:
        row[f"{precision}_steps_per_s"] = round(1 / statistics.median(seconds[precision]), 3)
        row[f"{precision}_images_per_s"] = round(batch_size / statistics.median(seconds[precision]), 1)
    row["speed_up"] = round(row["bf16_steps_per_s"] / row["fp32_steps_per_s"], 3)
    return row


def speed_part(quick: bool) -> dict:
    rows = [steps_per_second(name, pick(512, 64), pick(7, 2), pick(4, 1)) for name in SPEED_MODELS]
    return {"rows": rows}


def accuracy_part(seeds: list[int], quick: bool) -> dict:
    """The distilled student of the headline in each precision, same seeds; the paired difference bf16 - fp32."""
    data = load_cifar10(verbose=False)
    runs = {}
    for precision in PRECISIONS:
        in_precision(precision)
        headline = "runs/kd_headline_quick" if quick else "benchmarks/kept/kd_headline"
        store = headline if precision == "fp32" else ("runs/precision_quick" if quick else "benchmarks/kept/precision")
        # the headline's budget (its five seeds are part of what names its kept runs); the seeds asked for are run
        protocol = prepare(load_teacher(), data, patient_budget(HEADLINE_SEEDS), store=store,
                           log=lambda m: print(m, flush=True))
        runs[precision] = []
        for seed in seeds:
            print(f"{precision}: seed {seed}", flush=True)
            model, record = protocol.train(seed, T=T, alpha=ALPHA)
            record = {k: v for k, v in record.items() if k != "history"}
            # a run kept before labkit recorded precisions is the headline's own, from another session and machine
            record.update(kept_from=None if "precision" in record else store, precision=precision,
                          **protocol.test(model, T))
            print(f"    test accuracy {record['test_acc']:.4f} ({record['seconds']:.0f} s)", flush=True)
            runs[precision].append(record)
    test = {p: [r["test_acc"] for r in runs[p]] for p in PRECISIONS}
    # the budget names the headline's five seeds (its kept runs' names); seeds_run are the ones trained and compared
    return {"settings": {**protocol.settings(), "T": T, "alpha": ALPHA, "seeds_run": list(seeds)},
            "test_acc": {p: summarize(v) for p, v in test.items()},
            "bf16 - fp32": paired_interval(test["bf16"], test["fp32"]) if len(seeds) > 1 else None,
            "runs": runs}


def teacher_part(quick: bool) -> dict:
    """The teacher recipe once in bf16 (seed 0), tested in float32 like the shipped teacher (trained in fp32)."""
    data = load_cifar10(verbose=False)
    if quick:
        data = data.subset(100, 30, seed=0)
    shipped = accuracy(predict_logits(load_teacher(), data.test_images), data.test_labels)
    in_precision("bf16")
    torch.manual_seed(0)
    model = models.create("teacher")
    started = time.perf_counter()
    # checkpointed every epoch in runs/ (not committed), so an interrupted run resumes
    history = train(model, data, epochs=pick(12, 1), batch_size=pick(512, 100), seed=0,
                    out=f"runs/precision_teacher{'_quick' if quick else ''}", resume=True,
                    progress=not os.environ.get("CI"))
    seconds = time.perf_counter() - started
    tested = accuracy(predict_logits(model, data.test_images), data.test_labels)  # float32, like the shipped one's
    return {"epochs": len(history), "precision": history.precision, "test_acc": tested,
            "shipped_fp32_test_acc": shipped, "seconds": round(seconds, 1),
            "seconds_per_epoch": [r["seconds"] for r in history.rows]}


def cell_minutes(notebook: Path, top: int = 4) -> list[dict]:
    """The ``top`` longest code cells of an executed notebook (nbclient's timing metadata), longest first."""
    cells = []
    for number, cell in enumerate(json.loads(notebook.read_text())["cells"]):
        timing = cell.get("metadata", {}).get("execution", {})
        if cell["cell_type"] == "code" and "shell.execute_reply" in timing:
            took = (datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
                    - datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))).total_seconds()
            cells.append({"cell": number, "minutes": round(took / 60, 2), "starts": "".join(cell["source"])[:60]})
    return sorted(cells, key=lambda c: -c["minutes"])[:top]


def notebooks_part(quick: bool, executed: Path | None = None) -> dict:
    """The notebook runs of each precision (``benchmarks/notebook_runs.py --results precision_notebooks_<p>``), with
    the longest cells of the executed copies found in ``executed/<p>/``."""
    runs = {}
    for precision in PRECISIONS:
        path = RESULTS / f"precision_notebooks_{precision}{'_quick' if quick else ''}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run LABKIT_PRECISION={precision} python "
                                    f"benchmarks/notebook_runs.py --results precision_notebooks_{precision} NOTEBOOK")
        runs[precision] = {r["notebook"]: r for r in json.loads(path.read_text())["runs"]}
    both = sorted(set(runs["fp32"]) & set(runs["bf16"]))
    rows = []
    for name in both:
        row = {"notebook": name}
        for p in PRECISIONS:
            run = runs[p][name]
            row.update({f"{p}_minutes": run["minutes"], f"{p}_peak_rss_mb": run["peak_rss_mb"],
                        f"{p}_completed": run.get("completed", True)})
        # a run killed at the memory limit took longer than its minutes: no ratio
        done = row["fp32_completed"] and row["bf16_completed"]
        row["speed_up"] = round(row["fp32_minutes"] / row["bf16_minutes"], 2) if done else None
        for p in PRECISIONS:
            copy = executed / p / name if executed else None
            if copy is not None and copy.is_file() and row[f"{p}_completed"]:
                row[f"{p}_longest_cells"] = cell_minutes(copy)
        rows.append(row)
    return {"rows": rows}


def markdown(results: dict) -> str:
    lines = []
    if "cpu" in results:
        cpu = results["cpu"]
        flags = ", ".join(f"{f} {'yes' if cpu[f] else 'no'}" for f in BF16_FLAGS)
        lines += [f"CPU: {cpu['cpu']} ({flags}; torch's vector unit {cpu['torch_cpu_capability']}); labkit's `auto` "
                  f"here: {'bf16, ' + results['native_bf16'] if results.get('native_bf16') else 'fp32'}.", ""]
    if "speed" in results:
        lines += ["| model | batch | fp32 steps/s | bf16 steps/s | bf16 / fp32 |", "|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['batch_size']} | {r['fp32_steps_per_s']:.2f} | {r['bf16_steps_per_s']:.2f} | "
                  f"{r['speed_up']:.2f}x |" for r in results["speed"]["rows"]]
    if "accuracy" in results:
        acc = results["accuracy"]
        lines += ["", "| student_small distilled (T = 4, alpha = 0.9), 20 epochs | test acc % per seed | mean | "
                      "runs |", "|---|---|---|---|"]
        for p in PRECISIONS:
            values = acc["test_acc"][p]["values"]
            kept = {r.get("kept_from") for r in acc["runs"][p]} - {None}
            where = f"the headline's, read from {', '.join(sorted(kept))}" if kept else "trained by this command"
            lines.append(f"| {p} | {', '.join(f'{100 * v:.2f}' for v in values)} | {100 * statistics.fmean(values):.2f} "
                         f"| {where} |")
        if acc["bf16 - fp32"] is not None:
            lines += ["", f"bf16 - fp32 (paired by seed): {describe_gain(acc['bf16 - fp32'])}."]
    if "notebooks" in results:
        lines += ["", "| notebook, full mode, 1.5 GiB limit | fp32 minutes | bf16 minutes | fp32 / bf16 | "
                      "peak RSS MiB fp32 / bf16 |", "|---|---|---|---|---|"]
        def minutes(r: dict, p: str) -> str:
            return f"{r[f'{p}_minutes']:.1f}" + ("" if r.get(f"{p}_completed", True) else " (killed at the limit)")

        lines += [f"| {r['notebook']} | {minutes(r, 'fp32')} | {minutes(r, 'bf16')} | "
                  f"{'-' if r['speed_up'] is None else format(r['speed_up'], '.2f') + 'x'} | "
                  f"{r['fp32_peak_rss_mb']:,} / {r['bf16_peak_rss_mb']:,} |" for r in results["notebooks"]["rows"]]
        for r in results["notebooks"]["rows"]:
            for p in PRECISIONS:
                if r.get(f"{p}_longest_cells"):
                    cells = "; ".join(f"cell {c['cell']} {c['minutes']:.1f} min" for c in r[f"{p}_longest_cells"])
                    lines.append(f"\nLongest cells of {r['notebook']} in {p} (cell numbers of the notebook as it was "
                                 f"on that date): {cells}.")
    if "teacher" in results:
        t = results["teacher"]
        lines += ["", f"Teacher recipe in bf16 ({t['epochs']} epochs, seed 0): {100 * t['test_acc']:.2f}% test accuracy "
                      f"in {t['seconds'] / 60:.1f} min; the shipped teacher (fp32): {100 * t['shipped_fp32_test_acc']:.2f}%."]
    return "\n".join(lines) + "\n"


PARTS = {"speed": speed_part, "accuracy": accuracy_part, "notebooks": notebooks_part, "teacher": teacher_part}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"tiny sizes (also set by {QUICK_ENV}=1)")
    parser.add_argument("--part", nargs="+", choices=PARTS, default=["speed", "accuracy"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--executed", type=Path, metavar="DIR",
                        help="notebooks: executed copies in DIR/fp32 and DIR/bf16 (notebook_runs.py --executed)")
    args = parser.parse_args()
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    quick = quick_mode()
    name = "precision" + ("_quick" if quick else "")
    previous = RESULTS / f"{name}.json"
    results = json.loads(previous.read_text()) if previous.is_file() else {}
    results.pop("machine", None)
    # the parts kept from earlier runs are named too; each part's "measured" says when and where
    parts = [p for p in PARTS if p in results or p in args.part]
    results["command"] = "python benchmarks/precision.py --part " + " ".join(parts)
    results["cpu"] = cpu_description()
    results["native_bf16"] = settings.native_bf16("cpu")
    for part in args.part:
        started = time.perf_counter()
        results[part] = (accuracy_part(args.seeds, quick) if part == "accuracy"
                         else notebooks_part(quick, args.executed) if part == "notebooks" else PARTS[part](quick))
        results[part]["measured"] = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": results["cpu"]["cpu"],
                                     "minutes": round((time.perf_counter() - started) / 60, 1),
                                     "command": f"python benchmarks/precision.py --part {part}"}
    os.environ.pop(PRECISION_ENV, None)
    about = {"speed": "training steps", "accuracy": "distilled students", "notebooks": "notebooks",
             "teacher": "the teacher recipe"}
    write_report(name, results, "bf16 against fp32", ", ".join(about[p] for p in parts),
                 markdown(results), quick)


if __name__ == "__main__":
    main()
