"""Where notebooks and benchmarks write their measured results (introduced in 05_distill_student)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from labkit.atomic import write_text_atomic
from labkit.settings import cache_dir, native_bf16, precision, quick_mode


def machine_info() -> dict:
    """What a number was measured on: CPU, cores, torch threads and version, GPU or not, the precision labkit
    computed in (and why, :func:`labkit.settings.native_bf16`), and when."""
    return {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(), "precision": precision(), "native_bf16": native_bf16(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def results_dir(start: Path | None = None) -> Path:
    """The repository's ``benchmarks/results`` when run from inside a checkout, else labkit's cache folder."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "benchmarks").is_dir() and (folder / "labkit").is_dir():
            return folder / "benchmarks" / "results"
    return cache_dir() / "results"


def save_results(name: str, payload: dict, folder: Path | None = None) -> Path:
    """Write ``payload`` with :func:`machine_info` and the mode to ``<name>.json`` (``<name>_quick.json`` in quick
    mode, so a test run never overwrites a full result) and return the path."""
    quick = quick_mode()
    path = (folder or results_dir()) / f"{name}{'_quick' if quick else ''}.json"
    return write_text_atomic(path, json.dumps({"machine": machine_info(), "quick_mode": quick, **payload}, indent=2))
