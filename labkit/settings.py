"""Run-wide settings read from the environment: quick mode and where data lives (introduced in 00_start_here)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import torch

T_ = TypeVar("T_")

QUICK_ENV = "LABKIT_QUICK"
DATA_ENV = "LABKIT_DATA"
CACHE_ENV = "LABKIT_CACHE"


def quick_mode() -> bool:
    """True when ``LABKIT_QUICK`` is set to 1/true/yes: the test command's small, fast settings."""
    return os.environ.get(QUICK_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def pick(full: T_, quick: T_) -> T_:
    """``quick`` in quick mode, else ``full``: how notebooks and benchmarks size subsets and epochs."""
    return quick if quick_mode() else full


def cache_dir() -> Path:
    """labkit's cache folder: ``$LABKIT_CACHE``, else ``$XDG_CACHE_HOME/labkit``, else ``~/.cache/labkit``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "labkit"


DEVICE_ENV = "LABKIT_DEVICE"


def device() -> torch.device:
    """Where labkit computes: ``$LABKIT_DEVICE`` if set (``cpu``, ``cuda``, ``cuda:1``, ``mps``), else a CUDA GPU,
    else Apple's MPS, else the CPU (introduced in 00_start_here).

    Every training, distillation, evaluation and timing function uses it as its default device, so a notebook
    runs on a GPU when the machine has one and nothing in it needs changing.
    """
    import torch

    wanted = os.environ.get(DEVICE_ENV, "").strip()
    if wanted:
        try:
            chosen = torch.device(wanted)
        except RuntimeError as err:
            raise ValueError(f"{DEVICE_ENV}={wanted!r} is not a device name; use cpu, cuda, cuda:N or mps") from err
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"{DEVICE_ENV}={wanted!r} asks for CUDA, which this PyTorch cannot use here; "
                             f"unset {DEVICE_ENV} or set it to cpu")
        if chosen.type == "mps" and not _mps_available():
            raise ValueError(f"{DEVICE_ENV}={wanted!r} asks for Apple MPS, which is not available here; "
                             f"unset {DEVICE_ENV} or set it to cpu")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("mps") if _mps_available() else torch.device("cpu")


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())
