"""Run-wide settings read from the environment: quick mode and where data lives (introduced in 00_start_here)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

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
