"""The whole course on one GPU: train the teacher recipe, run the distillation headline, execute every notebook.

    python benchmarks/gpu_check.py                 # on a CUDA machine: all three stages, full mode
    python benchmarks/gpu_check.py --stages notebooks --quick --allow-cpu   # a smoke run of the plumbing

Each stage runs as its own process, in a scratch copy of the repository's tracked files, so that the results
JSON and notebook outputs written on the GPU never replace the committed CPU ones. labkit picks the GPU by itself
(:func:`labkit.device`; whole data set on the device, bf16 autocast). Writes the wall time of every stage, the
teacher's accuracy, the headline's numbers, each notebook's minutes and the device to
benchmarks/results/gpu_check.json (gpu_check_quick.json in quick mode), and copies the stages' own results JSON
into benchmarks/results/gpu/. The aim: the whole course in under 10 minutes on one modern GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import RESULTS, write_json  # noqa: E402

STAGES = {
    "teacher": [sys.executable, "-m", "labkit", "train-teacher", "--out", "runs/gpu-teacher"],
    "headline": [sys.executable, "benchmarks/kd_headline.py"],
    "notebooks": [sys.executable, "benchmarks/notebook_runs.py"],
}
# What each stage leaves behind in the scratch copy, to keep.
OUTPUTS = {"teacher": ["runs/gpu-teacher/result.json"], "headline": ["benchmarks/results/kd_headline{q}.json"],
           "notebooks": ["benchmarks/results/notebook_runs{q}.json"]}


def scratch_copy(destination: Path) -> None:
    """The repository's tracked files (and untracked, not ignored ones) copied to ``destination``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def run_stage(name: str, workdir: Path, quick: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(workdir)}
    if quick:
        env["LABKIT_QUICK"] = "1"
    else:
        env.pop("LABKIT_QUICK", None)
    command = STAGES[name] + (["--quick"] if quick and name == "notebooks" else [])
    print(f"== {name}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, env=env)
    row = {"stage": name, "minutes": round((time.perf_counter() - started) / 60, 2), "exit_code": done.returncode}
    for pattern in OUTPUTS[name]:
        produced = workdir / pattern.format(q="_quick" if quick else "")
        if produced.is_file():
            row[produced.stem] = json.loads(produced.read_text())
            kept = RESULTS / "gpu" / f"{produced.stem}.json"
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(produced, kept)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    parser.add_argument("--quick", action="store_true", help="quick mode everywhere (a smoke run)")
    parser.add_argument("--allow-cpu", action="store_true", help="run even without a CUDA GPU")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.allow_cpu:
        parser.error("no CUDA GPU here; this check is for a GPU machine (pass --allow-cpu for a smoke run)")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    rows = []
    with tempfile.TemporaryDirectory(prefix="labkit-gpu-check-") as tmp:
        workdir = Path(tmp)
        scratch_copy(workdir)
        for name in args.stages:
            rows.append(run_stage(name, workdir, args.quick))
            print(f"   {rows[-1]['minutes']:.2f} min, exit code {rows[-1]['exit_code']}", flush=True)
    total = sum(r["minutes"] for r in rows)
    print(f"total {total:.2f} minutes on {device}")
    write_json("gpu_check_quick" if args.quick else "gpu_check",
               {"device": device, "quick": args.quick, "total_minutes": round(total, 2), "stages": rows})


if __name__ == "__main__":
    main()
