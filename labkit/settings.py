"""Run-wide settings read from the environment: quick mode, where data lives, the device and the precision
(introduced in 00_start_here)."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, ContextManager, TypeVar

if TYPE_CHECKING:
    import torch

T_ = TypeVar("T_")

GRADE_LOG_ENV = "LABKIT_GRADE_LOG"  # set by labkit.grade: the file each check call appends its outcome to
QUICK_ENV = "LABKIT_QUICK"
DATA_ENV = "LABKIT_DATA"
CACHE_ENV = "LABKIT_CACHE"


_ON, _OFF = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


def quick_mode() -> bool:
    """True when ``LABKIT_QUICK`` is set to 1/true/yes: the test command's small, fast settings. Also while
    ``labkit grade`` runs a student's notebook (``LABKIT_GRADE_LOG`` set), whatever the notebook sets: a graded
    run stays within its time limit."""
    if os.environ.get(GRADE_LOG_ENV):
        return True
    value = os.environ.get(QUICK_ENV, "").strip().lower()
    if value not in _ON | _OFF:
        warnings.warn(f"{QUICK_ENV}={value!r} is neither on ({', '.join(sorted(_ON))}) nor off (empty, "
                      f"{', '.join(sorted(_OFF - {''}))}): running in full mode", UserWarning, stacklevel=2)
    return value in _ON


def pick(full: T_, quick: T_) -> T_:
    """``quick`` in quick mode, else ``full``: how notebooks and benchmarks size subsets and epochs."""
    return quick if quick_mode() else full


def quick_note() -> None:
    """Under a training cell's numbers, in quick mode only: a sentence saying they cannot show the lesson
    (introduced in 05_distill_student). Quick mode exists for the test suite; its students see a few hundred
    images and sit near chance."""
    if quick_mode():
        print("Quick mode: a few hundred images and a short schedule, for the test suite. These numbers show that "
              "the code runs, not what it learns; the notebook's committed outputs are a full run.")


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


PRECISION_ENV = "LABKIT_PRECISION"
PRECISIONS = ("auto", "bf16", "fp32")
# Runs, checkpoints and stored runs written before labkit recorded the precision computed in float32: autocast
# was used on CUDA only, and every stored run of the course was made on a CPU.
LEGACY_PRECISION = "fp32"


def precision(on: torch.device | str | None = None, model: torch.nn.Module | None = None) -> str:
    """``"bf16"`` or ``"fp32"``: how labkit computes forward passes on ``on`` (default :func:`device`).

    Introduced in 00_start_here. ``$LABKIT_PRECISION`` decides: ``fp32``, ``bf16``, or ``auto`` (the default),
    which is bfloat16 autocast where the hardware computes in bfloat16 natively (:func:`native_bf16`) and float32
    everywhere else. Under bf16 the convolutions and matrix products (forward, and so their backward) run in
    bfloat16; weights, optimizer state, BatchNorm statistics and the losses stay in float32. A ``model`` whose number format is part
    of what it is (a quantized or deployed model of :mod:`labkit.compress`, which sets ``fixed_precision``) keeps
    its own.
    """
    fixed = getattr(model, "fixed_precision", None)
    if fixed is not None:
        return fixed
    wanted = os.environ.get(PRECISION_ENV, "").strip().lower() or "auto"
    if wanted not in PRECISIONS:
        raise ValueError(f"{PRECISION_ENV}={os.environ[PRECISION_ENV]!r} is not a precision; use one of "
                         f"{', '.join(PRECISIONS)} (auto: bf16 where the hardware has it, else fp32)")
    if wanted != "auto":
        return wanted
    return "bf16" if native_bf16(on) else "fp32"


def native_bf16(on: torch.device | str | None = None) -> str | None:
    """Why ``on`` computes in bfloat16 natively (e.g. ``"CPU with AVX512-BF16"``), or None where it does not.

    Introduced in 00_start_here. A CUDA GPU counts when PyTorch reports bfloat16 support; a CPU when PyTorch's
    CPU feature detection (the instructions oneDNN uses) finds AMX or AVX512-BF16. Elsewhere bfloat16 would be
    emulated, slower than float32, so ``auto`` keeps float32.
    """
    import torch

    on = torch.device(on) if on is not None else device()
    if on.type == "cuda":
        return "CUDA GPU with bfloat16" if _cuda_native_bf16() else None
    if on.type == "cpu":
        found = _cpu_bf16_instructions()
        return f"CPU with {' and '.join(found)}" if found else None
    return None


def _cuda_native_bf16() -> bool:
    import torch

    try:  # pre-Ampere GPUs (V100, T4) only emulate bfloat16, which torch counts unless told not to
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # a torch without the argument counted native support only
        return torch.cuda.is_bf16_supported()


def _cpu_bf16_instructions() -> list[str]:
    import torch

    cpu = torch.cpu
    checks = {"AMX": "_is_amx_tile_supported", "AVX512-BF16": "_is_avx512_bf16_supported"}
    return [name for name, check in checks.items() if getattr(cpu, check, lambda: False)()]


def autocast(on: torch.device | str, model: torch.nn.Module | None = None, computed_in: str | None = None
             ) -> ContextManager:
    """bfloat16 autocast on ``on`` when ``computed_in`` (default: :func:`precision` for ``model``) is bf16 and
    ``model`` has no number format of its own, else nothing.

    Introduced in 04_cifar_teacher. Every training, distillation and teacher-logit forward pass of labkit runs
    inside it; :func:`labkit.evaluate.predict_logits` too, in float32 unless asked otherwise.
    """
    import torch

    on = torch.device(on)
    if getattr(model, "fixed_precision", None) is None and (computed_in or precision(on, model)) == "bf16":
        return torch.autocast(on.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
