"""Shared fixtures: an isolated labkit cache, a tiny CIFAR-10 look-alike, and the CIFAR-10 to test on."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from torchvision.io import write_jpeg, write_png

from labkit import data
from labkit.settings import CACHE_ENV, DATA_ENV, PRECISION_ENV

# The unit tests compare with float32 oracles and reference numbers, so they compute in float32 wherever they run;
# tests of the precision switch set it themselves, and the notebooks (run by the same `make test`) keep the
# machine's own `auto`. `LABKIT_PRECISION=bf16 make unit` runs the unit tests in bfloat16 instead.
UNIT_TEST_PRECISION = os.environ.get(PRECISION_ENV) or "fp32"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Set the unit tests' precision for one test of this folder (its fixtures included), then restore it."""
    if not Path(item.path).is_relative_to(Path(__file__).parent):  # a hook of every item, notebooks included
        yield
        return
    before = os.environ.get(PRECISION_ENV)
    os.environ[PRECISION_ENV] = UNIT_TEST_PRECISION
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PRECISION_ENV, None)
        else:
            os.environ[PRECISION_ENV] = before


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``LABKIT_CACHE`` and no ``LABKIT_DATA``: the test can neither see nor damage the user's files."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    monkeypatch.delenv(DATA_ENV, raising=False)
    return cache


@pytest.fixture(scope="session")
def tiny_cifar_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image-folder copy with random pixels: 3 PNG images per class in train/, 2 JPEG images per class in test/."""
    root = tmp_path_factory.mktemp("tiny-cifar10")
    gen = torch.Generator().manual_seed(0)
    for split, per_class, suffix in (("train", 3, ".png"), ("test", 2, ".jpg")):
        for name in data.CIFAR10_CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=gen)
                _write_image(image, str(folder / f"{i:04d}{suffix}"))
    return root


@pytest.fixture
def tiny_copy(tiny_cifar_folder: Path, tmp_path: Path) -> Path:
    """A fresh copy of ``tiny_cifar_folder`` that the test may change (add, replace or damage images)."""
    return Path(shutil.copytree(tiny_cifar_folder, tmp_path / "tiny-copy"))


def _write_image(image: torch.Tensor, path: str) -> None:
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its image codecs (for TorchCodec)
        warnings.filterwarnings("ignore", "The image decoding and encoding", DeprecationWarning)
        if path.endswith(".png"):
            write_png(image, path)
        else:
            write_jpeg(image, path, quality=90)


@pytest.fixture(scope="session")
def real_cifar_root() -> Path | None:
    """The CIFAR-10 copy ``load_cifar10`` finds when ``LABKIT_DATA`` is set (CI extracts the JPEG copy there),
    else None: without it the tests use the tiny copy, whatever labkit's cache holds."""
    found = data.find_cifar10() if os.environ.get(DATA_ENV) else None
    return found.folder if found else None


@pytest.fixture(scope="session")
def cifar(real_cifar_root: Path | None, tiny_cifar_folder: Path,
          tmp_path_factory: pytest.TempPathFactory) -> data.CifarData:
    """The real CIFAR-10 when ``LABKIT_DATA`` has it, else the tiny copy (decoded into a temporary cache)."""
    if real_cifar_root is not None:
        # The default cache, read-only here: a warm load takes 0.15 s where decoding takes many seconds.
        return data.load_cifar10(real_cifar_root, download=False, verbose=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
        return data.load_cifar10(tiny_cifar_folder, download=False, verbose=False, expect_full=False)


@pytest.fixture(scope="session")
def local_cifar() -> data.CifarData:
    """All of the real CIFAR-10 found locally (never downloaded); the test is skipped when there is none."""
    try:
        return data.load_cifar10(download=False, verbose=False)
    except data.DataNotFoundError as err:
        pytest.skip(f"real CIFAR-10 not available: {err}")


# A real (headless) Chromium for the browser tests (tests/test_temperature_lab_browser.py, tests/test_site.py).
# Playwright adds its automation flags and --user-data-dir (a new temporary profile); the others keep an offline
# machine's Chromium from trying the network.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[1]


def no_browser(reason: str) -> None:
    """Under CI (``CI`` set, as ``.ci/run`` does) a missing browser fails loudly: there it must not pass as a green
    test. Elsewhere the browser tests are skipped with the reason, and ``LABKIT_NO_BROWSER=1`` skips them anywhere."""
    if os.environ.get("LABKIT_NO_BROWSER") == "1":
        pytest.skip(f"LABKIT_NO_BROWSER=1: {reason}")
    if os.environ.get("CI"):
        pytest.fail(f"{reason}. CI requires the browser tests (LABKIT_NO_BROWSER=1 skips them).", pytrace=False)
    pytest.skip(f"{reason}; install it to run the browser tests (required when CI is set)")


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = os.environ.get("LABKIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        no_browser("No Chromium found (Debian/Ubuntu: `apt-get install chromium`, or set LABKIT_CHROMIUM=/path)")
    return path


@pytest.fixture(scope="module")
def page(chromium_path: str, tmp_path_factory: pytest.TempPathFactory):
    """A page of a headless Chromium driven by Playwright, with a new empty profile."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        no_browser("Playwright is not installed (pip install -e '.[browser]')")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"), executable_path=chromium_path, headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(60_000)  # JupyterLab on a busy 2-core CI machine is slow, not broken
        yield context.pages[0]
        context.close()


@pytest.fixture
def artifacts() -> Path:
    """Where browser tests leave their screenshots: ``$LABKIT_ARTIFACTS``, default ``test-artifacts/``."""
    folder = Path(os.environ.get("LABKIT_ARTIFACTS", REPO / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
