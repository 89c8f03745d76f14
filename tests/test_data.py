"""labkit.data and labkit.download (04_cifar_teacher): both CIFAR-10 formats, subsets, the cache, the download."""

from __future__ import annotations

import os
import pickle
import re
import socket
import subprocess
import sys
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from torchvision.datasets import CIFAR10, ImageFolder
from torchvision.datasets import utils as tv_utils
from torchvision.io import decode_image, write_png

from labkit import data, download
from labkit.data import (CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, CifarData, DataNotFoundError, ImageSubset,
                         load_cifar10, stratified_indices, tensor_cache_path)
from labkit.settings import DATA_ENV

# torchvision 0.29 deprecates its image codecs, which the tiny copy is written and read with.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")

# The label order of the official batches.meta, which torchvision's CIFAR10 uses
# (https://www.cs.toronto.edu/~kriz/cifar.html).
OFFICIAL_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture
def real_cifar(cifar: CifarData, real_cifar_root: Path | None) -> CifarData:
    if real_cifar_root is None:
        pytest.skip(f"needs the real CIFAR-10: set {DATA_ENV} to it")
    return cifar


# --- what load_cifar10 returns -----------------------------------------------------------------------------------

def test_shapes_dtypes_and_classes(cifar):
    for images, labels in ((cifar.train_images, cifar.train_labels), (cifar.test_images, cifar.test_labels)):
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)
        assert labels.dtype == torch.int64 and labels.shape == (len(images),)
        assert set(labels.unique().tolist()) == set(range(10))
    assert cifar.classes == CIFAR10_CLASSES


def test_class_order_is_torchvisions():
    # An image folder is labelled in sorted folder-name order, torchvision's CIFAR10 in batches.meta order:
    # both copies give the same label to the same class only because that order is alphabetical.
    assert CIFAR10_CLASSES == OFFICIAL_CLASSES == tuple(sorted(OFFICIAL_CLASSES))


def test_real_data_has_5000_and_1000_images_per_class(real_cifar):
    assert real_cifar.train_labels.bincount().tolist() == [5000] * 10
    assert real_cifar.test_labels.bincount().tolist() == [1000] * 10


def test_mean_and_std_constants_match_the_train_split(real_cifar):
    # From each channel's histogram of the 256 pixel values: exact, and no 600 MB float copy of the split.
    hist = torch.stack([real_cifar.train_images[:, c].flatten().bincount(minlength=256) for c in range(3)]).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    mean = (hist * values).sum(1) / hist.sum(1)
    std = ((hist * values**2).sum(1) / hist.sum(1) - mean**2).sqrt()
    # 0.003: the JPEG copy's pixels differ slightly from the official ones the constants come from.
    assert torch.allclose(mean, torch.tensor(CIFAR10_MEAN, dtype=torch.float64), atol=0.003)
    assert torch.allclose(std, torch.tensor(CIFAR10_STD, dtype=torch.float64), atol=0.003)


def test_image_folder_is_decoded_file_by_file_in_order(isolated_cache, tiny_cifar_folder):
    loaded = load_cifar10(tiny_cifar_folder, download=False, verbose=False, expect_full=False)
    for split in ("train", "test"):
        samples = ImageFolder(str(tiny_cifar_folder / split), loader=lambda p: p).samples
        expected = torch.stack([decode_image(path) for path, _ in samples])
        assert torch.equal(getattr(loaded, f"{split}_images"), expected)
        assert getattr(loaded, f"{split}_labels").tolist() == [label for _, label in samples]
    assert loaded.source == f"image-folder:{tiny_cifar_folder}"


def test_data_env_var_is_searched_first(isolated_cache, tiny_cifar_folder, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tiny_cifar_folder))
    loaded = load_cifar10(download=False, verbose=False, expect_full=False)
    assert loaded.source == f"image-folder:{tiny_cifar_folder}"


def test_find_cifar10_looks_where_load_cifar10_does_and_creates_nothing(isolated_cache, tiny_copy, monkeypatch):
    assert data.find_cifar10() is None
    assert data.find_cifar10(tiny_copy) == (tiny_copy, "image-folder")
    monkeypatch.setenv(DATA_ENV, str(tiny_copy.parent))  # a known child name is found too
    (tiny_copy.parent / "cifar10-jpg").symlink_to(tiny_copy)
    assert data.find_cifar10() == (tiny_copy.parent / "cifar10-jpg", "image-folder")
    write_batches_py(isolated_cache / "cifar-10-batches-py")
    found = data.find_cifar10(tiny_copy.parent / "nowhere")
    assert (found.folder, found.format) == (isolated_cache / "cifar-10-batches-py", "batches-py")
    assert sorted(p.name for p in isolated_cache.iterdir()) == ["cifar-10-batches-py"]  # no tensors decoded


def test_image_folder_with_other_classes_is_refused(isolated_cache, tmp_path):
    for split in ("train", "test"):
        (tmp_path / "odd" / split / "cats").mkdir(parents=True)
        (tmp_path / "odd" / split / "cats" / "0000.png").write_bytes(b"")  # never decoded: refused before
    with pytest.raises(ValueError, match="class folders"):
        load_cifar10(tmp_path / "odd", download=False, verbose=False)


# --- the official cifar-10-batches-py format ---------------------------------------------------------------------

def write_batches_py(folder: Path, per_batch: int = 20, seed: int = 0) -> dict[str, torch.Tensor]:
    """A fake ``cifar-10-batches-py`` in the official pickle format; returns the tensors it holds."""
    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    parts = {}
    for name in names:
        images = torch.randint(0, 256, (per_batch, 3, 32, 32), dtype=torch.uint8, generator=gen)
        labels = torch.arange(per_batch) % 10
        batch = {"batch_label": name, "labels": labels.tolist(),
                 "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
                 "data": images.reshape(per_batch, -1).numpy()}  # rows of R, G, B planes, like the real files
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        parts[name] = images, labels
    meta = {"label_names": list(OFFICIAL_CLASSES), "num_cases_per_batch": per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    train = [parts[n] for n in names[:5]]
    return {"train_images": torch.cat([i for i, _ in train]), "train_labels": torch.cat([l for _, l in train]),
            "test_images": parts["test_batch"][0], "test_labels": parts["test_batch"][1]}


@pytest.fixture
def skip_md5(monkeypatch):
    # torchvision md5-checks every batch file and batches.meta against the official ones, which fake files
    # cannot pass. Patching CIFAR10._check_integrity would not do: _load_meta checks batches.meta with the
    # module's check_integrity, which _check_integrity also uses, so that one function is patched.
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)


def test_batches_py_format_is_read_exactly(isolated_cache, tmp_path, skip_md5):
    expected = write_batches_py(tmp_path / "cifar-10-batches-py")
    loaded = load_cifar10(tmp_path, download=False, verbose=False, expect_full=False)
    for key, tensor in expected.items():
        assert torch.equal(getattr(loaded, key), tensor), key
    assert loaded.train_images.dtype == torch.uint8 and loaded.train_labels.dtype == torch.int64
    assert loaded.source.startswith("batches-py:")


def test_batches_py_under_another_name_gets_a_clear_error(isolated_cache, tmp_path, skip_md5):
    write_batches_py(tmp_path / "my-cifar")
    with pytest.raises(ValueError, match="rename it to 'cifar-10-batches-py'"):
        load_cifar10(tmp_path / "my-cifar", download=False, verbose=False)


def test_damaged_batches_py_gets_a_clear_error(isolated_cache, tmp_path):
    write_batches_py(tmp_path / "cifar-10-batches-py")  # real md5 checks: the fake files fail them
    with pytest.raises(ValueError, match="incomplete or damaged"):
        load_cifar10(tmp_path, download=False, verbose=False)


# --- incomplete and damaged copies ------------------------------------------------------------------------------

def test_incomplete_image_folder_is_refused_also_from_the_cache(isolated_cache, tiny_copy):
    with pytest.raises(ValueError, match=r"looks incomplete: 30 training and 20 test images.*extract") as caught:
        load_cifar10(tiny_copy, download=False, verbose=False)
    assert isinstance(caught.value, data.DataError) and str(tiny_copy) in str(caught.value)
    load_cifar10(tiny_copy, download=False, verbose=False, expect_full=False)  # a deliberately small copy
    with pytest.raises(data.DataError, match="looks incomplete"):  # read back from the cache, still checked
        load_cifar10(tiny_copy, download=False, verbose=False)


def test_incomplete_batches_py_is_refused(isolated_cache, tmp_path, skip_md5):
    write_batches_py(tmp_path / "cifar-10-batches-py")
    with pytest.raises(ValueError, match="looks incomplete: 100 training and 20 test images"):
        load_cifar10(tmp_path, download=False, verbose=False)


def test_a_split_without_every_class_is_refused_even_when_small(isolated_cache, tmp_path, skip_md5):
    write_batches_py(tmp_path / "cifar-10-batches-py", per_batch=9)  # labels 0-8: no truck
    with pytest.raises(ValueError, match="images of 9 classes"):
        load_cifar10(tmp_path, download=False, verbose=False, expect_full=False)


@pytest.mark.parametrize("content, problem", [
    (b"", "cannot be decoded"),
    (b"not an image at all", "cannot be decoded"),
    (torch.zeros(3, 64, 48, dtype=torch.uint8), "is 48x64 pixels, expected 32x32"),
])
def test_a_bad_image_is_named_with_what_is_wrong(isolated_cache, tiny_copy, content, problem):
    bad = tiny_copy / "train" / "cat" / "0001.png"
    bad.write_bytes(content) if isinstance(content, bytes) else write_png(content, str(bad))
    with pytest.raises(ValueError, match=re.escape(f"{bad}: {problem}")) as caught:
        load_cifar10(tiny_copy, download=False, verbose=False, expect_full=False)
    assert isinstance(caught.value, data.DataError)


def test_a_truncated_jpeg_is_named(isolated_cache, tiny_copy):
    bad = tiny_copy / "test" / "dog" / "0000.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(data.DataError, match=re.escape(f"{bad}: cannot be decoded (") + ".*truncated"):
        load_cifar10(tiny_copy, download=False, verbose=False, expect_full=False)


# --- subsets and validation splits -------------------------------------------------------------------------------

def indexed_data(class_sizes: list[int], seed: int = 0) -> CifarData:
    """Shuffled labels with the given class sizes; image i carries i in its first two pixels."""
    labels = torch.repeat_interleave(torch.arange(len(class_sizes)), torch.tensor(class_sizes))
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]
    images = torch.zeros(len(labels), 3, 32, 32, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(len(labels)) % 256
    images[:, 0, 0, 1] = torch.arange(len(labels)) // 256
    return CifarData(images, labels, images.clone(), labels.clone())


def image_ids(images: torch.Tensor) -> list[int]:
    return (images[:, 0, 0, 0].long() + 256 * images[:, 0, 0, 1].long()).tolist()


SIZES = [30 + c for c in range(10)]


@pytest.mark.parametrize("per_class", [1, 7, 30])
def test_stratified_indices_take_exactly_per_class_without_duplicates(per_class):
    labels = indexed_data(SIZES).train_labels
    idx = stratified_indices(labels, per_class, seed=3)
    assert labels[idx].bincount().tolist() == [per_class] * 10
    assert idx.unique().numel() == idx.numel()
    assert torch.equal(idx, idx.sort().values)


def test_stratified_indices_are_seeded():
    labels = indexed_data(SIZES).train_labels
    assert torch.equal(stratified_indices(labels, 5, seed=1), stratified_indices(labels, 5, seed=1))
    assert not torch.equal(stratified_indices(labels, 5, seed=1), stratified_indices(labels, 5, seed=2))


@pytest.mark.parametrize("per_class", [0, 31])
def test_stratified_indices_refuse_impossible_counts(per_class):
    with pytest.raises(ValueError):
        stratified_indices(indexed_data(SIZES).train_labels, per_class)


def test_subset_keeps_images_with_their_labels():
    full = indexed_data(SIZES)
    sub = full.subset(train_per_class=4, seed=5)
    assert sub.train_labels.bincount().tolist() == [4] * 10
    assert torch.equal(full.train_labels[image_ids(sub.train_images)], sub.train_labels)
    assert torch.equal(sub.test_labels, full.test_labels)  # None keeps a split whole
    assert torch.equal(full.subset(4, seed=5).train_images, sub.train_images)


def test_split_validation_is_disjoint_and_complete():
    full = indexed_data(SIZES)
    rest, (val_images, val_labels) = full.split_validation(val_per_class=6, seed=2)
    val_ids, rest_ids = set(image_ids(val_images)), set(image_ids(rest.train_images))
    assert not val_ids & rest_ids
    assert val_ids | rest_ids == set(range(len(full.train_labels)))
    assert val_labels.bincount().tolist() == [6] * 10
    assert rest.train_labels.bincount().tolist() == [s - 6 for s in SIZES]
    assert torch.equal(full.train_labels[sorted(val_ids)], val_labels)
    assert torch.equal(rest.test_images, full.test_images)
    assert rest.train_images.images is full.train_images  # the 45,000 kept images are not copied


def test_image_subset_indexes_like_the_copy_it_replaces():
    images = torch.randint(0, 256, (40, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    keep = torch.rand(40, generator=torch.Generator().manual_seed(1)) < 0.6
    subset, copy = ImageSubset(images, keep), images[keep]
    assert subset.shape == copy.shape and len(subset) == len(copy) and subset.dtype == torch.uint8
    picks = torch.tensor([3, 0, 7, 7])
    for key in (picks, slice(2, 9), slice(None, None, 3), 5, (slice(None), 0, 1, 2), (picks, slice(None), 0)):
        assert torch.equal(subset[key], copy[key]), key
    inner = copy[:, 0, 0, 0] % 2 == 0
    nested = ImageSubset(subset, inner)
    assert nested.images is images and torch.equal(nested[:], copy[inner])
    with pytest.raises(ValueError, match="mask of 39 entries"):
        ImageSubset(images, keep[:-1])


# --- the tensor cache --------------------------------------------------------------------------------------------

def count_decodes(monkeypatch) -> list[Path]:
    calls = []
    decode = data._read_image_folder

    def counted(folder: Path) -> dict[str, torch.Tensor]:
        calls.append(folder)
        return decode(folder)

    monkeypatch.setattr(data, "_read_image_folder", counted)
    return calls


def test_warm_load_reads_the_cache_instead_of_decoding(isolated_cache, tiny_cifar_folder, monkeypatch, capsys):
    decodes = count_decodes(monkeypatch)
    cold = load_cifar10(tiny_cifar_folder, expect_full=False)
    warm = load_cifar10(tiny_cifar_folder, expect_full=False)
    assert len(decodes) == 1  # what makes a warm load fast; timings belong to benchmarks/data_pipeline.py
    assert capsys.readouterr().out.count("Decoding CIFAR-10") == 1
    assert all(torch.equal(getattr(cold, k), getattr(warm, k)) for k in ("train_images", "test_images", "test_labels"))
    assert tensor_cache_path(tiny_cifar_folder, "image-folder").parent == isolated_cache / "tensors"


def flip_byte_in_train_images(path: Path, train_images: torch.Tensor) -> None:
    # Inside the tensor payload the file stays a valid zip: only labkit's own checksums can notice.
    raw = bytearray(path.read_bytes())
    at = raw.find(train_images.numpy().tobytes()[:64])
    assert at > 0
    raw[at + 10] ^= 0xFF
    path.write_bytes(bytes(raw))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", [flip_byte_in_train_images, truncate])
def test_damaged_cache_is_rebuilt_never_used(isolated_cache, tiny_cifar_folder, monkeypatch, capsys, damage):
    good = load_cifar10(tiny_cifar_folder, verbose=False, expect_full=False)
    path = tensor_cache_path(tiny_cifar_folder, "image-folder")
    if damage is truncate:
        damage(path)
    else:
        damage(path, good.train_images)
    decodes = count_decodes(monkeypatch)
    reloaded = load_cifar10(tiny_cifar_folder, verbose=False, expect_full=False)
    assert len(decodes) == 1 and "Ignoring damaged cache" in capsys.readouterr().out
    assert torch.equal(reloaded.train_images, good.train_images)
    load_cifar10(tiny_cifar_folder, verbose=False, expect_full=False)  # the rebuilt cache is whole again
    assert len(decodes) == 1 and capsys.readouterr().out == ""


def test_cache_follows_images_added_replaced_and_removed(isolated_cache, tiny_copy, monkeypatch):
    decodes = count_decodes(monkeypatch)
    load_cifar10(tiny_copy, download=False, verbose=False, expect_full=False)
    cat = tiny_copy / "train" / "cat"
    replaced = cat / "0000.png"
    new_pixels = 255 - decode_image(str(replaced))
    replaced.unlink()
    write_png(new_pixels, str(replaced))
    os.utime(replaced, ns=(0, 10**18))  # a new mtime even where the file system's clock is coarse
    second = load_cifar10(tiny_copy, download=False, verbose=False, expect_full=False)
    assert len(decodes) == 2 and torch.equal(second.train_images[second.train_labels == 3][0], new_pixels)
    write_png(new_pixels, str(cat / "0003.png"))  # an image added, as an extraction that goes on would
    assert len(load_cifar10(tiny_copy, download=False, verbose=False, expect_full=False).train_labels) == 31
    (cat / "0003.png").unlink()
    assert len(load_cifar10(tiny_copy, download=False, verbose=False, expect_full=False).train_labels) == 30
    assert len(decodes) == 4
    load_cifar10(tiny_copy, download=False, verbose=False, expect_full=False)
    assert len(decodes) == 4  # nothing changed: the cache is used
    assert list((isolated_cache / "tensors").iterdir()) == [tensor_cache_path(tiny_copy, "image-folder")]


# --- downloading -------------------------------------------------------------------------------------------------

class FakeNetwork:
    """Stands in for torchvision's download_and_extract_archive: URL i fails with ``errors[i]`` or succeeds."""

    def __init__(self, errors: list[Exception | None], on_success=None):
        self.errors, self.on_success, self.urls = errors, on_success, []

    def __call__(self, url, download_root, filename=None, md5=None, **kwargs):
        assert (filename, md5) == ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
        assert socket.getdefaulttimeout() == download.SOCKET_TIMEOUT_S
        error = self.errors[len(self.urls)]
        self.urls.append(url)
        if error is not None:
            raise error
        self.on_success(Path(download_root) / "cifar-10-batches-py")


def test_the_primary_url_comes_first_then_mirrors_all_md5_checked():
    assert download.CIFAR10_URLS[0] == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert download.ARCHIVE_MD5 == CIFAR10.tgz_md5
    assert len(download.CIFAR10_URLS) >= 2 and all(u.startswith("https://") for u in download.CIFAR10_URLS)


def test_offline_error_says_where_labkit_looked_and_what_to_do(isolated_cache, tmp_path, monkeypatch):
    nowhere = tmp_path / "nowhere"
    monkeypatch.setenv(DATA_ENV, str(nowhere))
    errors = [URLError("timed out"), RuntimeError("File not found or corrupted."), ConnectionResetError("reset")]
    network = FakeNetwork(errors)
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", network)
    timeout = socket.getdefaulttimeout()
    with pytest.raises(DataNotFoundError) as caught:
        load_cifar10(verbose=False)
    message = str(caught.value)
    assert network.urls == list(download.CIFAR10_URLS)
    assert f"  - {nowhere}\n  - {isolated_cache}\n" in message
    assert DATA_ENV in message and "by hand" in message and "cifar-10-batches-py" in message
    assert all(url in message for url in download.CIFAR10_URLS) and "File not found or corrupted" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # one error, no chained tracebacks
    assert socket.getdefaulttimeout() == timeout
    assert not isolated_cache.exists() or list(isolated_cache.iterdir()) == []  # no half downloads left behind


def test_no_download_when_told_not_to(isolated_cache, monkeypatch):
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", FakeNetwork([]))  # any call would fail
    with pytest.raises(DataNotFoundError, match="CIFAR-10 was not found.\nlabkit looked in:"):
        load_cifar10(download=False)


def test_download_falls_back_to_a_mirror_and_loads(isolated_cache, monkeypatch, capsys, skip_md5):
    expected = {}
    network = FakeNetwork([URLError("unreachable"), None], on_success=lambda f: expected.update(write_batches_py(f)))
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", network)
    loaded = load_cifar10(expect_full=False)
    assert network.urls == list(download.CIFAR10_URLS[:2])
    assert f"downloaded from {download.CIFAR10_URLS[1]}" in capsys.readouterr().out
    assert loaded.source == f"batches-py:{isolated_cache / 'cifar-10-batches-py'}"
    assert torch.equal(loaded.test_images, expected["test_images"])
    assert sorted(p.name for p in isolated_cache.iterdir()) == ["cifar-10-batches-py", "tensors"]


def test_download_error_lists_each_url_failure(tmp_path, monkeypatch):
    network = FakeNetwork([URLError("down")] * len(download.CIFAR10_URLS))
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", network)
    with pytest.raises(RuntimeError) as caught:
        download.download_cifar10(tmp_path, verbose=False)
    assert isinstance(caught.value, download.DownloadError)
    assert caught.value.failures == [f"{url} -> URLError: <urlopen error down>" for url in download.CIFAR10_URLS]
    assert all(failure in str(caught.value) for failure in caught.value.failures)


def test_download_module_does_not_import_the_data_module():
    code = "import sys, labkit.download; print('labkit.data' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "False\n"  # no import circle: labkit.data imports labkit.download, never the other way


def test_download_replaces_an_incomplete_copy(tmp_path, monkeypatch):
    stale = tmp_path / "cifar-10-batches-py"
    stale.mkdir()
    (stale / "data_batch_1").write_bytes(b"half")
    network = FakeNetwork([None], on_success=lambda f: (f.mkdir(), (f / "test_batch").write_bytes(b"new")))
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", network)
    assert download.download_cifar10(tmp_path, verbose=False) == stale
    assert [p.name for p in stale.iterdir()] == ["test_batch"]

