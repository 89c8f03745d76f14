"""What this machine offers the course: versions, threads, accelerators, labkit's device and precision, quick
mode, CIFAR-10.

Introduced in 00_start_here, whose first code cell prints :func:`print_environment_report`. Nothing here
downloads or writes anything, so the check is instant and safe to run offline.
"""

from __future__ import annotations

import importlib
import os
import platform
from typing import TypedDict

import torch

from labkit import data, settings
from labkit.settings import quick_mode


class EnvironmentReport(TypedDict):
    """The facts :func:`environment_report` gathers (introduced in 00_start_here)."""

    python: str
    torch: str
    torchvision: str
    cpu_threads: int
    cuda_available: bool
    mps_available: bool
    device: str  # what labkit.settings.device() picks, or "none (<why LABKIT_DEVICE is refused>)"
    precision: str  # what labkit.settings.precision() picks and why, or "none (<why LABKIT_PRECISION is refused>)"
    quick_mode: bool
    cifar10: str | None  # "<folder> (<format>)" of the local copy, None when there is none
    cifar10_help: str | None  # where labkit looked and how to get the data, when it is missing


def _module_version(name: str) -> str:
    """The module's version, or why it cannot be imported: a broken install should show up, not crash the check."""
    try:
        return importlib.import_module(name).__version__
    except Exception as err:
        return f"not importable ({type(err).__name__}: {err})"


def _device() -> str:
    try:
        return str(settings.device())
    except ValueError as err:  # a LABKIT_DEVICE this machine cannot honour: the check reports it, not crashes
        return f"none ({err})"


def _precision() -> str:
    try:
        chosen = settings.precision()
        on = settings.device()
    except ValueError as err:
        return f"none ({err})"
    wanted = os.environ.get(settings.PRECISION_ENV, "").strip()
    if wanted and wanted.lower() != "auto":
        return f"{chosen} ({settings.PRECISION_ENV}={wanted})"
    why = settings.native_bf16(on)
    return f"{chosen} (auto: {why})" if why else f"{chosen} (auto: no native bfloat16 on {on.type})"


def _local_cifar10() -> tuple[str | None, str | None]:
    """The local CIFAR-10 copy as text, else the help text; looks exactly where ``load_cifar10`` would."""
    found = data.find_cifar10()
    return (f"{found.folder} ({found.format})", None) if found else (None, data.missing_data_message())


def environment_report() -> EnvironmentReport:
    """Versions, CPU threads, accelerators, labkit's device and precision, quick mode and local CIFAR-10, read-only
    (introduced in 00_start_here)."""
    cifar10, cifar10_help = _local_cifar10()
    return EnvironmentReport(
        python=platform.python_version(),
        torch=torch.__version__,
        torchvision=_module_version("torchvision"),
        cpu_threads=torch.get_num_threads(),
        cuda_available=torch.cuda.is_available(),
        mps_available=settings._mps_available(),  # the answer settings.device() goes by
        device=_device(),
        precision=_precision(),
        quick_mode=quick_mode(),
        cifar10=cifar10,
        cifar10_help=cifar10_help,
    )


def print_environment_report() -> None:
    """Print :func:`environment_report` for people (introduced in 00_start_here)."""
    report = environment_report()
    rows = [
        ("Python", report["python"]),
        ("PyTorch", report["torch"]),
        ("torchvision", report["torchvision"]),
        ("CPU threads", str(report["cpu_threads"])),
        ("CUDA GPU", "yes" if report["cuda_available"] else "no"),
        ("Apple MPS", "yes" if report["mps_available"] else "no"),
        ("labkit device", report["device"]),
        ("Precision", report["precision"]),
        ("Quick mode", "on (small, fast settings)" if report["quick_mode"] else "off"),
        ("CIFAR-10", report["cifar10"] or "not found locally"),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    if report["cifar10_help"]:
        # 00's whole game is the first cell that needs the images, and load_cifar10 downloads them when it can.
        print("\nThe notebooks use CIFAR-10 from 00's whole game on; load_cifar10() downloads it if it can.")
        print(report["cifar10_help"])
