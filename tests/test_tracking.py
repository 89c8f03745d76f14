"""Experiment tracking: callbacks in train/distill, history.csv, and TensorBoard / W&B logs read back from disk."""

from __future__ import annotations

import functools
import json
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from labkit import cli, models
from labkit.atomic import load_checked
from labkit.cli import main
from labkit.data import CifarData, load_cifar10
from labkit.history import History
from labkit.settings import CACHE_ENV
from labkit.tracking import TensorBoardLogger, WandbLogger, scalars
from labkit.train import distill, train

KL_COLUMNS = ["test_kl", "kl_part"]  # what the course asks learners to watch


def _synthetic(seed: int = 0) -> CifarData:
    """Random images, 20 per class to train on and 5 per class to test on: tracking needs no real learning."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (250, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.arange(250) % 10
    return CifarData(images[:200], labels[:200], images[200:], labels[200:])


def _wandb_history(run_file: Path) -> list[dict]:
    """The ``history`` records of an offline ``run-*.wandb`` file (a LevelDB-style log of protobuf records).

    wandb 0.31 ships no Python reader for it, so this follows the format: a 7-byte header (":W&B", magic,
    version), then 32 KiB blocks of chunks, each with a 7-byte header (CRC, length, type: 1 full, 2 first,
    3 middle, 4 last).
    """
    from wandb.proto import wandb_internal_pb2

    raw = run_file.read_bytes()
    assert raw[:4] == b":W&B", raw[:7]
    pos, block, parts, rows = 7, 32768, [], []
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # no room for a chunk header: the rest of the block is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if kind == 0:  # zero fill after the last record
            break
        parts.append(raw[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record.FromString(b"".join(parts))
            parts = []
            if record.WhichOneof("record_type") == "history":
                rows.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item})
    return rows


class Recorder:
    def __init__(self):
        self.rows: list[dict] = []

    def __call__(self, row: dict) -> None:
        self.rows.append(dict(row))
        row["test_kl"] = -1.0  # must reach neither the history nor the loggers called after this one


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """A 2-epoch distillation with a recorder, TensorBoard and (when installed) an offline W&B run attached."""
    root = tmp_path_factory.mktemp("tracked")
    recorder, loggers = Recorder(), []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(root / "cache"))  # the teacher-logit cache
        for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            mp.setenv(name, str(root / name.lower()))
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_CONSOLE", "off")
        try:
            loggers.append(TensorBoardLogger(root / "tb"))
        except ImportError:
            pass
        try:
            loggers.append(WandbLogger("kd-lab-test", name="tracked", config={"T": 4.0}, dir=root))
        except ImportError:
            pass
        torch.manual_seed(0)
        teacher, student = models.create("student_small"), models.create("student_small")
        history = distill(student, teacher, _synthetic(), T=4.0, alpha=0.7, epochs=2, teacher_views=1,
                          batch_size=100, progress=False, out=root / "run", callbacks=[recorder, *loggers])
        for logger in loggers:
            logger.close()
    return SimpleNamespace(root=root, history=history, recorder=recorder)


def test_callbacks_get_every_finished_row_and_csv_is_the_default(tracked_run):
    history = tracked_run.history
    assert history["epoch"] == [1, 2]
    assert tracked_run.recorder.rows == history.rows  # the whole row, after the test-set evaluation
    assert all(kl >= 0 for kl in history["test_kl"])  # the recorder edited its own copy only
    saved = History.from_csv(tracked_run.root / "run" / "history.csv")
    assert saved.columns == history.columns
    for column in KL_COLUMNS + ["test_acc", "test_agreement"]:
        assert saved[column] == pytest.approx(history[column])


def test_tensorboard_scalars_equal_the_history(tracked_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tracked_run.root / "tb"))
    events.Reload()
    history = tracked_run.history
    tags = set(events.Tags()["scalars"])
    assert tags == set(scalars(history.last)) and "epoch" not in tags
    assert set(KL_COLUMNS) <= tags
    for tag in tags:
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == history["epoch"], tag
        assert [e.value for e in logged] == pytest.approx(history[tag], rel=1e-6), tag  # stored as float32


def test_wandb_offline_run_holds_every_epoch(tracked_run):
    pytest.importorskip("wandb")
    runs = list((tracked_run.root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    [run_file] = runs[0].glob("run-*.wandb")
    logged = _wandb_history(run_file)
    history = tracked_run.history
    assert [row["_step"] for row in logged] == history["epoch"]
    for column in scalars(history.last):
        assert [row[column] for row in logged] == pytest.approx(history[column]), column


def test_wandb_adapter_calls(monkeypatch, tmp_path):
    """Against a stand-in ``wandb`` module: offline by default, numbers only, step = epoch, finish on exit."""
    calls = []
    run = SimpleNamespace(log=lambda data, step: calls.append(("log", data, step)),
                          finish=lambda: calls.append(("finish",)))
    fake = SimpleNamespace(init=lambda **kwargs: calls.append(("init", kwargs)) or run)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    with WandbLogger("p", dir=tmp_path) as logger:
        logger({"epoch": 3, "test_kl": 0.5, "kl_part": 2, "note": "text", "flag": True})
    assert calls == [("init", dict(project="p", name=None, config=None, mode="offline", dir=str(tmp_path))),
                     ("log", {"test_kl": 0.5, "kl_part": 2.0}, 3), ("finish",)]


@pytest.mark.parametrize("logger, modules, extra", [
    (lambda tmp: TensorBoardLogger(tmp), ["tensorboard", "torch.utils.tensorboard"], "tensorboard"),
    (lambda tmp: WandbLogger(dir=tmp), ["wandb"], "wandb"),
], ids=["tensorboard", "wandb"])
def test_a_missing_package_names_its_extra(logger, modules, extra, monkeypatch, tmp_path):
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` fail as if it were not installed
    with pytest.raises(ImportError, match=rf"pip install 'labkit\[{extra}\]'"):
        logger(tmp_path)


def test_train_calls_back_after_saving_the_epoch(isolated_cache, tmp_path):
    """``train`` passes callbacks too; a failing one stops the run only after the epoch's checkpoint and CSV."""
    seen = []

    def failing(row: dict) -> None:
        seen.append(row)
        raise RuntimeError("logger down")

    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="logger down"):
        train(models.create("student_small"), _synthetic(), epochs=2, batch_size=100, progress=False,
              out=tmp_path, callbacks=[failing])
    assert [row["epoch"] for row in seen] == [1]
    assert History.from_csv(tmp_path / "history.csv")["test_acc"] == pytest.approx([seen[0]["test_acc"]])
    assert load_checked(tmp_path / "checkpoint.pt")["epoch"] == 1


def test_cli_writes_tensorboard_logs(isolated_cache, tiny_cifar_folder, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.delenv("LABKIT_QUICK", raising=False)  # quick mode's subset is larger than the tiny folder
    monkeypatch.setattr(cli, "load_cifar10", functools.partial(load_cifar10, expect_full=False))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["distill", "--data", str(tiny_cifar_folder), "--epochs", "1", "--batch-size", "10",
                 "--views", "1", "--out", str(tmp_path / "run"), "--tensorboard", str(tmp_path / "tb")]) == 0
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    history = History.from_csv(tmp_path / "run" / "history.csv")
    assert [e.value for e in events.Scalars("test_kl")] == pytest.approx(history["test_kl"], rel=1e-6)
