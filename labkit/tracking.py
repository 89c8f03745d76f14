"""Experiment tracking: per-epoch callbacks for TensorBoard and Weights & Biases (introduced in 05_distill_student).

CSV is the default tracker and needs nothing here: :func:`labkit.train.train` and :func:`labkit.train.distill`
write ``history.csv`` (:meth:`labkit.history.History.to_csv`) under ``out`` after every epoch. For a live
dashboard pass ``callbacks=[...]``: each callback is called on the main process with the finished epoch's row
(the dict that becomes a row of the history), so anything taking a dict can serve as one.

Both loggers import their package only when created, so labkit runs without them; the extras install them:
``pip install 'labkit[tensorboard]'``, ``pip install 'labkit[wandb]'`` or both with ``'labkit[track]'``.
Distillation's KL columns are the ones to watch: ``test_kl`` (the student vs the teacher on the test images at
temperature T) and ``kl_part`` (the soft term of the training loss).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any


def _require(module: str, extra: str, user: str) -> ModuleType:
    """Import an optional package, or say which extra installs it (the bare ImportError names no remedy)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{user} needs the optional package {extra!r}: pip install 'labkit[{extra}]' "
                          f"(in a checkout of the course: pip install -e '.[{extra}]')") from err


def scalars(row: dict) -> dict[str, float]:
    """The numeric columns of a history row except ``epoch``, which the loggers use as the step."""
    return {k: float(v) for k, v in row.items()
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class _Logger:
    """Closes itself at the end of a ``with`` block, so that an exception in training still flushes the log."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TensorBoardLogger(_Logger):
    """Writes every numeric column of each epoch's row as a TensorBoard scalar at step ``epoch``.

    View with ``tensorboard --logdir LOG_DIR``; several runs under one parent folder appear side by side.
    """

    def __init__(self, log_dir: str | Path):
        tensorboard = _require("torch.utils.tensorboard", "tensorboard", "TensorBoardLogger")
        self.log_dir = Path(log_dir)
        self.writer = tensorboard.SummaryWriter(log_dir=str(self.log_dir))

    def __call__(self, row: dict) -> None:
        for name, value in scalars(row).items():
            self.writer.add_scalar(name, value, global_step=int(row["epoch"]))
        self.writer.flush()  # an epoch takes seconds to minutes: show it now, not when the buffer fills

    def close(self) -> None:
        self.writer.close()


class WandbLogger(_Logger):
    """Logs each epoch's row to a Weights & Biases run at step ``epoch``; offline by default.

    An offline run needs no account or network: it is written under ``dir`` (default ``./wandb``) and can be
    uploaded later with ``wandb sync``. ``mode="online"`` logs live; ``config`` records the run's settings.
    """

    def __init__(self, project: str = "kd-lab", name: str | None = None, config: dict[str, Any] | None = None,
                 mode: str = "offline", dir: str | Path | None = None):
        wandb = _require("wandb", "wandb", "WandbLogger")
        self.run = wandb.init(project=project, name=name, config=config, mode=mode,
                              dir=None if dir is None else str(dir))

    def __call__(self, row: dict) -> None:
        self.run.log(scalars(row), step=int(row["epoch"]))

    def finish(self) -> None:
        self.run.finish()

    close = finish
