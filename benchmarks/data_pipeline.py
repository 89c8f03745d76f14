"""Data-pipeline speed: one augmented training epoch at batch 256, labkit's Loader against torchvision's.

    python benchmarks/data_pipeline.py [--quick] [--data FOLDER] [--workers 0 2]

Rows: images/s of labkit's Loader (whole split as uint8 tensors, STANDARD crop + flip on each batch) and of
a torch DataLoader over torchvision's dataset (ImageFolder on an image-folder copy such as the JPEG one,
else CIFAR10) with RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize, at each worker
count; then load_cifar10 into a fresh empty cache (cold: decodes every image) and again (warm: reads the
tensor cache). labkit's loader does not normalize: its models start with a fixed Normalize layer.
``--quick`` (or LABKIT_QUICK=1) times 2,048 images per pipeline, and the loads on a copy of 20 images per
class of an image folder: a smoke test of a few seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets, transforms

from _common import machine, print_table, write_json
from labkit import data
from labkit.loader import STANDARD, Loader
from labkit.settings import CACHE_ENV, quick_mode

BATCH_SIZE = 256
QUICK_IMAGES = 2048
QUICK_LOAD_PER_CLASS = 20


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="CIFAR-10 folder (default: where load_cifar10 looks: $LABKIT_DATA, then the cache)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to time")
    parser.add_argument("--quick", action="store_true", help="a fraction of an epoch and a small load (smoke test)")
    return parser.parse_args()


def find_source(root: Path | None) -> data.CifarSource:
    """The local CIFAR-10 copy and its format; a benchmark never downloads."""
    found = data.find_cifar10(root)
    if found is None:
        raise data.DataNotFoundError(data.missing_data_message(root))
    return found


def describe(folder: Path, fmt: str) -> str:
    if fmt == "batches-py":
        return f"official python version (cifar-10-batches-py) at {folder}"
    suffixes = {p.suffix.lower() for p in (folder / "train" / data.CIFAR10_CLASSES[0]).iterdir()}
    kind = "JPEG" if suffixes <= {".jpg", ".jpeg"} else "/".join(sorted(suffixes))
    return f"{kind} image-folder copy at {folder} (its pixels differ slightly from the official files)"


def timed(batches: Iterable[object]) -> float:
    started = time.perf_counter()
    for _ in batches:
        pass
    return time.perf_counter() - started


def row(pipeline: str, workers: int | str, images: int, seconds: float) -> dict[str, object]:
    return {"pipeline": pipeline, "workers": workers, "images": images, "seconds": round(seconds, 3),
            "images_per_s": round(images / seconds, 1)}


def torchvision_train_set(folder: Path, fmt: str) -> Dataset:
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(data.CIFAR10_MEAN, data.CIFAR10_STD),
    ])
    if fmt == "image-folder":
        return datasets.ImageFolder(str(folder / "train"), transform=transform)
    return datasets.CIFAR10(str(folder.parent), train=True, transform=transform)


def epoch_rows(folder: Path, fmt: str, images: int | None, workers: list[int]) -> list[dict[str, object]]:
    """One epoch (or its first ``images`` examples) through each pipeline."""
    cifar = data.load_cifar10(folder, download=False, verbose=False)  # warm after the first run
    n = images or len(cifar.train_labels)
    loader = Loader(cifar.train_images[:n], cifar.train_labels[:n], BATCH_SIZE, augment=STANDARD, seed=0)
    rows = [row("labkit Loader, STANDARD augment", "-", n, timed(loader))]
    dataset = torchvision_train_set(folder, fmt)
    subset = Subset(dataset, torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n].tolist())
    for w in workers:
        # Worker start-up is part of an epoch's cost, so each count gets a fresh DataLoader.
        batches = DataLoader(subset, batch_size=BATCH_SIZE, shuffle=True, num_workers=w)
        rows.append(row(f"torchvision {type(dataset).__name__} + DataLoader", w, n, timed(batches)))
    return rows


@contextmanager
def fresh_cache() -> Iterator[Path]:
    """An empty labkit cache for the duration: a cold load must not find, nor replace, the user's tensors."""
    previous = os.environ.get(CACHE_ENV)
    with tempfile.TemporaryDirectory(prefix="labkit-bench-") as tmp:
        os.environ[CACHE_ENV] = str(Path(tmp) / "cache")
        try:
            yield Path(tmp)
        finally:
            if previous is None:
                del os.environ[CACHE_ENV]
            else:
                os.environ[CACHE_ENV] = previous


def copy_image_folder(folder: Path, dest: Path, per_class: int) -> Path:
    """The first ``per_class`` files of every class of both splits: a small copy to time a cold load on."""
    for split in ("train", "test"):
        for name in data.CIFAR10_CLASSES:
            (dest / split / name).mkdir(parents=True)
            for f in sorted((folder / split / name).iterdir())[:per_class]:
                shutil.copy(f, dest / split / name / f.name)
    return dest


def load_rows(folder: Path, fmt: str, per_class: int | None) -> list[dict[str, object]]:
    """load_cifar10 into an empty cache (cold), then again (warm); ``per_class`` loads a small copy instead."""
    with fresh_cache() as tmp:
        if per_class is not None and fmt == "image-folder":
            folder = copy_image_folder(folder, tmp / "small-copy", per_class)
        cold, cifar = timed_load(folder, expect_full=per_class is None)
        warm, _ = timed_load(folder, expect_full=per_class is None)
    n = len(cifar.train_labels) + len(cifar.test_labels)
    return [row("load_cifar10 cold (empty cache)", "-", n, cold), row("load_cifar10 warm (tensor cache)", "-", n, warm)]


def timed_load(folder: Path, expect_full: bool) -> tuple[float, data.CifarData]:
    started = time.perf_counter()
    cifar = data.load_cifar10(folder, download=False, verbose=False, expect_full=expect_full)
    return time.perf_counter() - started, cifar


def main() -> None:
    args = parse_args()
    quick = args.quick or quick_mode()
    folder, fmt = find_source(args.data)
    rows = epoch_rows(folder, fmt, QUICK_IMAGES if quick else None, args.workers)
    rows += load_rows(folder, fmt, QUICK_LOAD_PER_CLASS if quick else None)
    source = describe(folder, fmt)
    info = machine()
    print(f"data: {source}; batch {BATCH_SIZE}" + (" (quick: a fraction of an epoch)" if quick else ""))
    print(f"machine: {info['cpu_count']} CPUs, {info['torch_threads']} torch threads, torch {info['torch']}")
    print_table(rows)
    write_json("data_pipeline", {"data": source, "format": fmt, "batch_size": BATCH_SIZE, "quick": quick,
                                 "augment": "RandomCrop(32, padding=4) + RandomHorizontalFlip", "rows": rows})


if __name__ == "__main__":
    main()
