"""labkit.envcheck (00_start_here): the report is complete, finds local CIFAR-10 read-only, and explains a miss."""

from __future__ import annotations

import platform
import re
from pathlib import Path

import pytest
import torch

from labkit import data, envcheck, settings
from labkit.settings import CACHE_ENV, DATA_ENV, DEVICE_ENV, QUICK_ENV


@pytest.fixture
def no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty data and cache folders, and a load_cifar10 that fails loudly: the check must never download."""
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "data"))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("environment_report must not load or download CIFAR-10")

    monkeypatch.setattr(data, "load_cifar10", forbidden)
    return tmp_path


def make_batches_py(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name in ("data_batch_1", "test_batch"):
        (folder / name).write_bytes(b"")


def test_report_describes_this_python_and_torch(no_data, monkeypatch):
    monkeypatch.setenv(QUICK_ENV, "1")
    report = envcheck.environment_report()
    assert report["python"] == platform.python_version()
    assert report["torch"] == torch.__version__
    assert report["torchvision"][0].isdigit()
    assert report["cpu_threads"] == torch.get_num_threads() >= 1
    assert report["cuda_available"] == torch.cuda.is_available()
    assert isinstance(report["mps_available"], bool)
    assert report["quick_mode"] is True


def test_quick_mode_off_is_reported(no_data, monkeypatch):
    monkeypatch.delenv(QUICK_ENV, raising=False)
    assert envcheck.environment_report()["quick_mode"] is False


def test_missing_data_gives_the_help_text_and_creates_nothing(no_data):
    report = envcheck.environment_report()
    assert report["cifar10"] is None
    assert report["cifar10_help"].startswith("CIFAR-10 was not found")
    assert str(no_data / "data") in report["cifar10_help"]
    assert list(no_data.iterdir()) == []


@pytest.mark.parametrize("layout", ["batches-py", "image-folder"])
def test_local_copy_is_found(no_data, layout):
    copy = no_data / "data" / "cifar-10-batches-py"
    if layout == "batches-py":
        make_batches_py(copy)
    else:
        (copy / "train").mkdir(parents=True)
        (copy / "test").mkdir()
    report = envcheck.environment_report()
    assert report["cifar10"] == f"{copy} ({layout})"
    assert report["cifar10_help"] is None


def test_copy_in_the_cache_folder_is_found(no_data):
    make_batches_py(no_data / "cache" / "cifar-10-batches-py")
    assert envcheck.environment_report()["cifar10"].startswith(str(no_data / "cache"))


def test_printed_report(no_data, capsys):
    envcheck.print_environment_report()
    out = capsys.readouterr().out
    assert re.search(rf"^PyTorch +{re.escape(torch.__version__)}$", out, flags=re.MULTILINE)
    assert "CIFAR-10" in out and "To fix it" in out


def test_accelerators_and_device_are_labkits_own(no_data, monkeypatch, capsys):
    monkeypatch.setattr(settings, "_mps_available", lambda: True)  # one answer for the report and device()
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    report = envcheck.environment_report()
    assert report["mps_available"] is True and report["device"] == "cpu"
    envcheck.print_environment_report()
    assert re.search(r"^labkit device +cpu$", capsys.readouterr().out, flags=re.MULTILINE)


def test_a_refused_device_is_reported_not_raised(no_data, monkeypatch):
    monkeypatch.setenv(DEVICE_ENV, "gpu please")
    assert envcheck.environment_report()["device"].startswith(f"none ({DEVICE_ENV}='gpu please' is not a device")


def test_broken_module_is_reported_not_raised():
    assert envcheck._module_version("labkit_no_such_module").startswith("not importable (ModuleNotFoundError")
