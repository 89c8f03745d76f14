"""Fault kinds of training and its data: labkit.train, labkit.data, labkit.download, labkit.loader, labkit.teacher,
labkit.transfer, labkit.models and labkit.evaluate."""

from __future__ import annotations

import copy
import hashlib
import io
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import urllib.request
from dataclasses import replace
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from torch import nn

from labkit import download, models
from labkit.data import (CifarData, DataError, DataNotFoundError, load_cifar10, tensor_cache_path,
                         training_set_digest)
from labkit.evaluate import evaluate, predict_logits
from labkit.loader import Loader
from labkit.teacher import FrozenTeacher, teacher_logits_for_views
from labkit.train import NoTrainingStepsError, NonFiniteLossError, ResumeError, distill, train
from labkit.transfer import TransferSetError, labelled_part, pseudo_labelled, transfer_set, with_unlabelled

fault = pytest.mark.fault

# torchvision 0.29 deprecates its image codecs, which the tiny copy is written and read with.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")

FAST = dict(batch_size=10, progress=False)  # 2 steps an epoch on tiny_data()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: a second thread costs more than it gains, more so on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_data(per_class: int = 2, seed: int = 0) -> CifarData:
    """Random images, ``per_class`` training and 1 test image of each of the 10 classes."""
    n = 10 * (per_class + 1)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    labels = torch.arange(n) % 10
    return CifarData(images[10:], labels[10:], images[:10], labels[:10])


def student(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.create("student_small")


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- labkit.train -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", [{"epochs": 0}, {"batch_size": 0}, {"lr": float("nan")}],
                         ids=["zero-epochs", "zero-batch-size", "nan-lr"])
@fault("labkit.train", "error")
def test_a_training_setting_that_is_not_positive_is_refused_before_any_step(setting):
    (name, value), steps = next(iter(setting.items())), []
    with pytest.raises(ValueError, match=rf"must be positive: TrainConfig\(.*\b{name}={value}\b"):
        train(student(), tiny_data(), on_step=steps.append, **{**FAST, **setting})
    assert steps == []


@fault("labkit.train", "error")
def test_infinite_epochs_are_refused_naming_the_setting():
    with pytest.raises(ValueError, match=r"(?i)epochs.*finite"):
        train(student(), tiny_data(), epochs=float("inf"), **FAST)


@pytest.mark.parametrize("bad, message", [({"T": 0.0}, r"temperature T must be a finite number > 0, got 0\.0"),
                                          ({"alpha": 1.5}, r"alpha .* must lie in \[0, 1\], got 1\.5")],
                         ids=["T", "alpha"])
@fault("labkit.train", "error")
def test_a_distillation_temperature_or_weight_out_of_range_is_refused_before_any_work(isolated_cache, bad, message):
    steps = []
    with pytest.raises(ValueError, match=message):
        distill(student(), student(5), tiny_data(), on_step=steps.append, **bad, **FAST)
    assert steps == [] and not isolated_cache.exists()  # not even the teacher's logits were computed


@fault("labkit.train", "error")
def test_resuming_a_distillation_with_another_teacher_is_refused_and_the_checkpoint_kept(isolated_cache, tmp_path):
    data = tiny_data()
    distill(student(), student(5), data, epochs=1, teacher_views=1, out=tmp_path, **FAST)
    kept = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(ResumeError, match=r"teacher: '[0-9a-f]+' in the checkpoint, '[0-9a-f]+' now.*another out="):
        distill(student(), student(6), data, epochs=1, teacher_views=1, out=tmp_path, resume=True, **FAST)
    assert (tmp_path / "checkpoint.pt").read_bytes() == kept


@fault("labkit.train", "error")
def test_resuming_on_as_many_training_images_with_other_labels_is_refused(tmp_path):
    data = tiny_data()
    train(student(), data, epochs=1, out=tmp_path, **FAST)
    relabelled = replace(data, train_labels=data.train_labels.roll(1))  # same size, same images, other labels
    with pytest.raises(ResumeError, match=r"data: '[0-9a-f]+' in the checkpoint, '[0-9a-f]+' now.*another out="):
        train(student(), relabelled, epochs=1, out=tmp_path, resume=True, **FAST)


@fault("labkit.train", "handled")
def test_resuming_a_finished_run_returns_it_without_another_step(tmp_path):
    data, finished = tiny_data(), student()
    history = train(finished, data, epochs=1, out=tmp_path, **FAST)
    again, steps = student(seed=1), []
    resumed = train(again, data, epochs=1, out=tmp_path, resume=True, on_step=steps.append, **FAST)
    assert steps == [] and resumed.rows == history.rows and same_weights(again, finished)


@fault("labkit.train", "handled")
def test_resume_without_a_checkpoint_trains_from_the_start_like_a_plain_run(tmp_path):
    data, plain, resumed = tiny_data(), student(), student()
    train(plain, data, epochs=1, **FAST)
    train(resumed, data, epochs=1, out=tmp_path / "new", resume=True, **FAST)
    assert same_weights(plain, resumed) and (tmp_path / "new" / "checkpoint.pt").is_file()


@fault("labkit.train", "error")
def test_resuming_a_checkpoint_with_a_flipped_byte_is_refused_naming_it(tmp_path):
    train(student(), tiny_data(), epochs=1, out=tmp_path, **FAST)
    path = tmp_path / "checkpoint.pt"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # inside the checksummed payload: the file still unpickles
    path.write_bytes(bytes(raw))
    with pytest.raises(ResumeError, match=re.escape(f"{path} cannot be read (DamagedFileError") +
                       r".*delete it to train from scratch"):
        train(student(), tiny_data(), epochs=1, out=tmp_path, resume=True, **FAST)


@fault("labkit.train", "error")
def test_a_teacher_with_another_number_of_classes_is_refused_naming_both_shapes(isolated_cache):
    teacher = models.create("student_small", num_classes=5)
    with pytest.raises(ValueError, match=r"student_logits and teacher_logits must have the same shape, "
                                         r"got \(10, 10\) and \(10, 5\)"):
        distill(student(), teacher, tiny_data(), epochs=1, teacher_views=1, **FAST)


@fault("labkit.train", "error")
def test_a_student_with_fewer_classes_than_the_labels_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"\b5 classes"):
        train(models.create("student_small", num_classes=5), tiny_data(), epochs=1, **FAST)


@fault("labkit.train", "handled")
def test_a_student_handed_over_in_eval_mode_is_distilled_as_one_in_training_mode(isolated_cache):
    data, teacher = tiny_data(), student(5)
    in_training, in_eval = student(), student().eval()
    for model in (in_training, in_eval):
        distill(model, teacher, data, epochs=1, teacher_views=1, **FAST)
    assert same_weights(in_training, in_eval)  # BatchNorm statistics included: they only move in training mode


@fault("labkit.train", "handled")
def test_the_callers_teacher_is_left_as_it_was_after_distillation(isolated_cache):
    teacher = student(5).train()
    for p in teacher.parameters():
        p.requires_grad_(True)  # as a model the caller might still train
    before = copy.deepcopy(teacher.state_dict())
    distill(student(), teacher, tiny_data(), epochs=1, teacher_views=0, **FAST)  # online: the teacher runs every step
    assert teacher.training and all(m.training for m in teacher.modules())
    assert all(p.requires_grad and p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


@fault("labkit.train", "error")
def test_a_teacher_whose_logits_are_nan_stops_distillation_naming_the_teacher(isolated_cache):
    teacher = student(5)
    teacher.head.register_forward_hook(lambda module, inputs, output: output * float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"teacher_logits contains NaN.*epoch 1, step 1\b.*check the inputs"):
        distill(student(), teacher, tiny_data(), epochs=1, teacher_views=0, **FAST)


@fault("labkit.train", "error")
def test_an_empty_training_set_is_refused_saying_it_is_empty():
    empty = tiny_data().keep_train(torch.zeros(20, dtype=torch.bool))
    with pytest.raises(NoTrainingStepsError) as caught:
        train(student(), empty, epochs=1, **FAST)
    message = str(caught.value)
    assert re.search(r"(?i)empty|no training images", message) and "batch_size <= 0" not in message, message


# --- labkit.data --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["missing", "empty"])
@fault("labkit.data", "error")
def test_a_root_without_cifar_is_named_with_what_to_do(isolated_cache, tmp_path, state):
    root = tmp_path / "my-cifar"
    if state == "empty":
        root.mkdir()
    with pytest.raises(DataNotFoundError, match=rf"(?s)labkit looked in:\n  - {re.escape(str(root))}\n.*To fix it"):
        load_cifar10(root, download=False, verbose=False)
    assert root.exists() is (state == "empty")  # nothing created


@fault("labkit.data", "error")
def test_an_image_folder_whose_splits_are_empty_is_refused_as_incomplete(isolated_cache, tmp_path):
    root = tmp_path / "cifar10"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    with pytest.raises(DataError, match=rf"{re.escape(str(root / 'train'))}.*extract"):
        load_cifar10(root, download=False, verbose=False, expect_full=False)


@fault("labkit.data", "error")
def test_an_image_folder_missing_a_class_folder_is_refused_naming_the_split(isolated_cache, tiny_copy):
    shutil.rmtree(tiny_copy / "test" / "truck")
    with pytest.raises(DataError, match=re.escape(f"{tiny_copy / 'test'} has class folders [") +
                       r"[^\]]*'ship'\], expected \[[^\]]*'truck'\]"):
        load_cifar10(tiny_copy, download=False, verbose=False, expect_full=False)


@fault("labkit.data", "error")
def test_an_empty_class_folder_is_refused_naming_it(isolated_cache, tiny_copy):
    for image in (tiny_copy / "test" / "truck").iterdir():
        image.unlink()
    with pytest.raises(DataError, match=re.escape(str(tiny_copy / "test" / "truck"))):
        load_cifar10(tiny_copy, download=False, verbose=False, expect_full=False)


def flip_a_byte_of_the_pixel_data(png: Path) -> None:
    """A bit rot inside the compressed pixels of a PNG (its IDAT chunk): the file still starts like a PNG."""
    raw = bytearray(png.read_bytes())
    at = raw.index(b"IDAT")
    length = int.from_bytes(raw[at - 4:at], "big")
    raw[at + 4 + length // 2] ^= 0xFF
    png.write_bytes(bytes(raw))


@fault("labkit.data", "error")
def test_a_png_with_a_flipped_byte_in_its_pixels_is_named_without_crashing(isolated_cache, tiny_copy):
    bad = tiny_copy / "train" / "cat" / "0001.png"
    flip_a_byte_of_the_pixel_data(bad)
    code = ("import sys\nfrom labkit.data import DataError, load_cifar10\ntry:\n"
            "    load_cifar10(sys.argv[1], download=False, verbose=False, expect_full=False)\n"
            "except DataError as err:\n    print(err)\n")
    # In a child process: the crash would otherwise take pytest down with it.
    run = subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(tiny_copy)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, f"the process died with {run.returncode}: {run.stderr[-300:]}"
    assert f"{bad}: cannot be decoded" in run.stdout and "replace it" in run.stdout, run.stdout


@fault("labkit.data", "handled")
def test_stray_files_beside_the_images_are_ignored(isolated_cache, tiny_cifar_folder, tiny_copy):
    (tiny_copy / "train" / ".DS_Store").write_bytes(b"\0\1\2")
    (tiny_copy / "train" / "cat" / "Thumbs.db").write_bytes(b"\0\1\2")
    (tiny_copy / "test" / "dog" / "README.txt").write_text("downloaded from somewhere")
    clean = load_cifar10(tiny_cifar_folder, download=False, verbose=False, expect_full=False)
    cluttered = load_cifar10(tiny_copy, download=False, verbose=False, expect_full=False)
    assert all(torch.equal(getattr(clean, k), getattr(cluttered, k))
               for k in ("train_images", "train_labels", "test_images", "test_labels"))


def _leave_a_mark(path: str) -> None:
    Path(path).write_text("unpickled")


class _Booby:
    """Unpickling it calls :func:`_leave_a_mark`: what any code in a planted cache file could do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return _leave_a_mark, (self.path,)


@fault("labkit.data", "handled")
def test_a_tensor_cache_holding_pickled_code_is_rebuilt_without_running_it(isolated_cache, tiny_cifar_folder,
                                                                          tmp_path, capsys):
    clean = load_cifar10(tiny_cifar_folder, download=False, verbose=False, expect_full=False)
    path, mark = tensor_cache_path(tiny_cifar_folder, "image-folder"), tmp_path / "mark"
    torch.save({"format": 1, "key": "x", "tensors": _Booby(str(mark)), "crc32": {}}, path)
    again = load_cifar10(tiny_cifar_folder, download=False, verbose=False, expect_full=False)
    assert not mark.exists() and f"Ignoring damaged cache {path}" in capsys.readouterr().out
    assert torch.equal(again.train_images, clean.train_images) and torch.equal(again.test_labels, clean.test_labels)


@fault("labkit.data", "error")
def test_a_subset_asking_more_images_per_class_than_there_are_is_refused():
    with pytest.raises(ValueError, match=r"class 0 has only 1 examples, fewer than per_class=3"):
        tiny_data().subset(train_per_class=1, test_per_class=3)  # 1 test image per class


@fault("labkit.data", "error")
def test_a_validation_split_taking_every_training_image_is_refused():
    with pytest.raises(ValueError, match=r"val_per_class=2"):
        tiny_data(per_class=2).with_validation(val_per_class=2)


@fault("labkit.data", "error")
def test_taking_a_validation_split_twice_is_refused():
    once = tiny_data(per_class=3).with_validation(val_per_class=1)
    with pytest.raises(ValueError, match=r"validation split"):
        once.with_validation(val_per_class=1)


@fault("labkit.train", "error")
def test_a_checkpoint_is_not_resumed_on_other_images_with_the_same_labels(tmp_path):
    data = tiny_data()
    inverted = replace(data, train_images=255 - data.train_images)  # the same labels, the same shape
    assert training_set_digest(inverted) == training_set_digest(data)  # what names kept runs cannot see it
    train(student(), data, epochs=1, out=tmp_path, **FAST)
    with pytest.raises(ResumeError, match=r"pixels: '[0-9a-f]+' in the checkpoint, '[0-9a-f]+' now"):
        train(student(), inverted, epochs=2, out=tmp_path, resume=True, **FAST)


@fault("labkit.protocol", "error")
def test_a_stored_run_is_not_reused_on_other_images_with_the_same_labels(tmp_path):
    from labkit.protocol import StoredRunError, kept_model

    def make():
        return nn.Linear(2, 2), {"test_acc": 0.5}

    kept_model(tmp_path, {"arm": "x"}, make, lambda: nn.Linear(2, 2), verify={"pixels": "0000abcd"})
    with pytest.raises(StoredRunError, match=r"made on other data.*delete it"):
        kept_model(tmp_path, {"arm": "x"}, make, lambda: nn.Linear(2, 2), verify={"pixels": "1111abcd"})


# --- labkit.download ----------------------------------------------------------------------------------------------


class FakeResponse:
    """What ``urllib.request.urlopen`` returns, serving ``body``; reading past ``drop_after`` bytes resets."""

    def __init__(self, url: str, body: bytes, drop_after: int | None = None):
        self.url, self.length, self._body, self._drop_after = url, len(body), io.BytesIO(body), drop_after

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self, size: int = -1) -> bytes:
        if self._drop_after is not None and self._body.tell() >= self._drop_after:
            raise ConnectionResetError(104, "Connection reset by peer")
        return self._body.read(size)


def fake_network(monkeypatch, serve) -> list:
    """Replace the URL opener torchvision downloads with by ``serve(url)``; returns (url, socket timeout) per call."""
    calls = []

    def urlopen(request, *args, **kwargs):
        calls.append((request.full_url, socket.getdefaulttimeout()))
        return serve(request.full_url)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


def leftovers(cache: Path) -> list:
    return sorted(cache.rglob("*")) if cache.exists() else []


@fault("labkit.download", "error")
def test_offline_a_load_fails_at_once_naming_every_url_and_what_to_do(isolated_cache, monkeypatch):
    def unreachable(url):
        raise URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    calls = fake_network(monkeypatch, unreachable)
    with pytest.raises(DataNotFoundError, match=r"(?s)could not be downloaded.*name resolution.*place "
                                                r"'cifar-10-batches-py' by hand") as caught:
        load_cifar10(verbose=False)
    assert [url for url, _ in calls] == list(download.CIFAR10_URLS)  # one try each, no retry loop
    assert {timeout for _, timeout in calls} == {download.SOCKET_TIMEOUT_S}  # a silent host could not hang it
    assert all(url in str(caught.value) for url in download.CIFAR10_URLS)
    assert leftovers(isolated_cache) == []


@fault("labkit.download", "error")
def test_a_web_page_served_instead_of_the_archive_is_refused_and_not_kept(isolated_cache, monkeypatch):
    page = b"<html><body>Sign in to the hotel's Wi-Fi</body></html>"  # what a captive portal answers
    fake_network(monkeypatch, lambda url: FakeResponse(url, page))
    with pytest.raises(DataNotFoundError, match=r"(?s)(-> RuntimeError: File not found or corrupted.*){3}by hand"):
        load_cifar10(verbose=False)
    assert leftovers(isolated_cache) == []


@fault("labkit.download", "handled")
def test_a_connection_dropped_mid_download_moves_on_to_a_mirror_and_leaves_no_part(tmp_path, monkeypatch):
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.parent.mkdir()
    batch.write_bytes(b"the test batch")
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(batch.parent, arcname="cifar-10-batches-py")
    archive = archive.getvalue()
    monkeypatch.setattr(download, "ARCHIVE_MD5", hashlib.md5(archive).hexdigest())
    mirror = download.CIFAR10_URLS[1]
    calls = fake_network(monkeypatch, lambda url: FakeResponse(url, archive, drop_after=None if url == mirror else 10))
    cache = tmp_path / "cache"
    target = download.download_cifar10(cache, verbose=False)
    assert calls[0][0] == download.CIFAR10_URLS[0] and calls[-1][0] == mirror  # the first URL was tried and dropped
    assert target == cache / "cifar-10-batches-py" and (target / "test_batch").read_bytes() == b"the test batch"
    assert [p.name for p in cache.iterdir()] == ["cifar-10-batches-py"]  # no half archive, no scratch folder


# --- labkit.loader ------------------------------------------------------------------------------------------------


@fault("labkit.loader", "error")
def test_a_loader_over_float_images_is_refused_naming_the_dtype():
    images = torch.rand(8, 3, 32, 32)
    with pytest.raises((TypeError, ValueError), match=r"uint8.*float32|float32.*uint8"):
        next(iter(Loader(images, torch.arange(8) % 10, batch_size=4)))


# --- labkit.teacher -----------------------------------------------------------------------------------------------


def tiny_teacher(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10), nn.BatchNorm1d(10)).eval()


def tiny_views(seed: int = 1) -> list[torch.Tensor]:
    return [torch.randint(0, 256, (12, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))]


def cached_files(cache: Path) -> set[Path]:
    return set((cache / "teacher_logits").glob("*.pt"))


def counted(teacher: nn.Module) -> list:
    calls: list = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    return calls


@fault("labkit.teacher", "handled")
def test_another_teachers_logit_file_put_under_this_ones_name_is_recomputed(isolated_cache):
    views, a, b = tiny_views(), tiny_teacher(0), tiny_teacher(1)
    teacher_logits_for_views(a, views, progress=False)
    (file_a,) = cached_files(isolated_cache)
    logits_b = teacher_logits_for_views(b, views, progress=False)
    (file_b,) = cached_files(isolated_cache) - {file_a}
    shutil.copyfile(file_a, file_b)  # e.g. a cache folder merged by hand: a whole, well-formed file of another key
    calls = counted(b)
    assert torch.equal(teacher_logits_for_views(b, views, progress=False), logits_b) and calls


@fault("labkit.teacher", "handled")
def test_a_teacher_differing_only_in_its_batchnorm_statistics_gets_its_own_logits(isolated_cache):
    views, a = tiny_views(), tiny_teacher()
    b = copy.deepcopy(a)
    b[2].running_mean += 1.0  # the same parameters; other buffers, so other logits in eval mode
    first = teacher_logits_for_views(a, views, progress=False)
    second = teacher_logits_for_views(b, views, progress=False)
    with torch.no_grad():
        assert torch.allclose(second[0], b(views[0].float() / 255), atol=1e-6) and not torch.equal(first, second)
    assert len(cached_files(isolated_cache)) == 2


@fault("labkit.teacher", "handled")
def test_views_differing_in_one_pixel_get_their_own_logits(isolated_cache):
    teacher, views = tiny_teacher(), tiny_views()
    changed = views[0].clone()
    changed[7, 0, 0, 0] ^= 0xFF
    first = teacher_logits_for_views(teacher, views, progress=False)
    second = teacher_logits_for_views(teacher, [changed], progress=False)
    assert torch.equal(first[0, :7], second[0, :7]) and not torch.equal(first[0, 7], second[0, 7])
    assert len(cached_files(isolated_cache)) == 2


@fault("labkit.teacher", "handled")
def test_a_frozen_teacher_gives_the_model_its_mode_back_after_a_failed_forward_pass():
    model, modes = tiny_teacher().train(), []

    def fail(module, inputs):
        modes.append(module.training)
        raise RuntimeError("out of memory")

    model[1].register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError, match="out of memory"):
        FrozenTeacher(model)(torch.rand(2, 3, 4, 4))
    assert modes == [False] and all(m.training for m in model.modules())


# --- labkit.transfer ----------------------------------------------------------------------------------------------


@fault("labkit.transfer", "error")
def test_a_labelled_part_repeated_zero_times_is_refused():
    with pytest.raises(ValueError, match=r"repeat must be >= 1, got 0"):
        labelled_part(transfer_set(tiny_data(), 1), repeat=0)


@fault("labkit.transfer", "error")
def test_a_transfer_set_keeping_more_labels_per_class_than_there_are_is_refused():
    with pytest.raises(ValueError, match=r"class 0 has only 2 examples, fewer than per_class=3"):
        transfer_set(tiny_data(per_class=2), labelled_per_class=3)


@fault("labkit.transfer", "error")
def test_unlabelled_images_in_numpys_height_width_channel_layout_are_refused():
    photos = np.zeros((4, 32, 32, 3), dtype=np.uint8)  # as PIL and numpy lay images out
    with pytest.raises(TransferSetError, match=r"torch\.uint8 tensor N x 3 x 32 x 32 like the labelled ones, "
                                               r"got uint8 \(4, 32, 32, 3\)"):
        with_unlabelled(tiny_data(), photos)


@fault("labkit.transfer", "error")
def test_pseudo_labels_from_a_teacher_of_another_number_of_classes_are_refused():
    teacher = models.create("student_small", num_classes=100)
    with pytest.raises(TransferSetError, match=r"100 classes"):
        pseudo_labelled(transfer_set(tiny_data(), 1), teacher)


# --- labkit.models ------------------------------------------------------------------------------------------------


@fault("labkit.models", "error")
def test_creating_a_model_under_a_misspelt_name_lists_the_names_there_are():
    with pytest.raises(ValueError, match=r"unknown model 'Student_Small'; choose one of \[.*'student_small'.*\]"):
        models.create("Student_Small")


@fault("labkit.models", "handled")
def test_uint8_images_straight_into_an_eager_model_are_read_as_0_to_1():
    model = models.create("student_medium").eval()
    images = tiny_data().test_images
    with torch.no_grad():
        torch.testing.assert_close(model(images), model(images.float() / 255))


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64], ids=["float-0-255", "int64-0-255"])
@fault("labkit.models", "warning")
def test_0_to_255_images_of_another_dtype_than_uint8_are_warned_about_and_still_predicted(dtype):
    model = models.create("student_small").eval()
    images = tiny_data().test_images.to(dtype)
    with pytest.warns(models.InputRangeWarning, match=r"range from 0 to 255.*divide 0\.\.255 floats by 255"):
        logits = predict_logits(model, images)
    with torch.no_grad(), pytest.warns(models.InputRangeWarning):
        as_given = model(images.float())
    torch.testing.assert_close(logits, as_given)  # the values as given, not silently rescaled


# --- labkit.evaluate ----------------------------------------------------------------------------------------------


@fault("labkit.evaluate", "error")
def test_evaluating_images_against_labels_of_another_length_is_refused():
    data = tiny_data()
    with pytest.raises(ValueError, match=r"10 predictions for 20 labels"):
        evaluate(models.create("student_small"), data.test_images, data.train_labels)


@fault("labkit.evaluate", "handled")
def test_predicting_no_images_gives_no_rows_and_leaves_the_model_training():
    model = models.create("student_small").train()
    logits = predict_logits(model, torch.zeros(0, 3, 32, 32, dtype=torch.uint8))
    assert logits.shape == (0, 10) and logits.dtype == torch.float32 and model.training
