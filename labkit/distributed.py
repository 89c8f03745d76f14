"""One process, or data parallel across processes with Hugging Face Accelerate (introduced in docs/scaling.md).

:func:`labkit.train.train` and :func:`labkit.train.distill` ask :func:`processes` how they were started. A plain
``python`` or Jupyter process gets :class:`SingleProcess`, which changes nothing. Under ``accelerate launch`` they
get :class:`DataParallel`: every process draws the same seeded global batch and trains on its own slice of it, so
the global batch size, the number of steps and the per-1024-example learning rate mean what they mean in one
process. Accelerate is an optional dependency (``pip install 'labkit[scale]'``), imported only when launched.
"""

from __future__ import annotations

import contextlib
import os
from typing import ContextManager, TypeVar

import torch

from labkit.loader import Batch
from labkit import settings
from labkit.settings import device as default_device

Placeable = TypeVar("Placeable", torch.Tensor, torch.nn.Module)


def launched() -> bool:
    """True when ``accelerate launch`` (or torchrun) started this process (docs/scaling.md)."""
    # Every `accelerate launch` sets ACCELERATE_MIXED_PRECISION, even for one process; torchrun only says so
    # through WORLD_SIZE.
    return "ACCELERATE_MIXED_PRECISION" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


class SingleProcess:
    """The default: one process on :func:`labkit.device`, nothing to synchronise (docs/scaling.md)."""

    num_processes = 1
    process_index = 0
    is_main_process = True

    def __init__(self, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else default_device()

    def place(self, x: Placeable) -> Placeable:
        """``x`` (a model, a tensor, or images such as :class:`labkit.data.ImageSubset`) on this process's device."""
        return x.to(self.device)

    def shard(self, batch: Batch) -> Batch:
        """This process's slice of a global batch, on its device."""
        return batch._replace(images=self.place(batch.images), labels=self.place(batch.labels))

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
                ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """The model and optimizer to train with (wrapped for gradient averaging when data parallel)."""
        return model, optimizer

    def backward(self, loss: torch.Tensor) -> None:
        """Gradients of ``loss``, a sum over this process's examples."""
        loss.backward()

    def total(self, sums: dict[str, float]) -> dict[str, float]:
        """Per-process sums added up over all processes."""
        return sums

    def precision(self, model: torch.nn.Module | None = None) -> str:
        """``"bf16"`` or ``"fp32"``: :func:`labkit.settings.precision` of ``model`` on this process's device."""
        return settings.precision(self.device, model)

    def autocast(self, model: torch.nn.Module | None = None, computed_in: str | None = None) -> ContextManager:
        """The forward passes' precision: :func:`labkit.settings.autocast` on this process's device (``computed_in``:
        a precision decided once for the whole run)."""
        return settings.autocast(self.device, model, computed_in)

    def main_process_first(self) -> ContextManager:
        """Run the block on the main process of each machine first (to fill the disk cache once)."""
        return contextlib.nullcontext()

    def wait_for_everyone(self) -> None:
        """Block until every process gets here."""


class DataParallel(SingleProcess):
    """Data parallel training with an :class:`accelerate.Accelerator` (introduced in docs/scaling.md).

    ``find_unused_parameters`` is needed when some parameter stops training mid-run (the teacher's whitening
    bias): DDP otherwise expects its gradient and raises "Expected to have finished reduction" the step after.
    """

    def __init__(self, find_unused_parameters: bool = False):
        try:
            from accelerate import Accelerator
            from accelerate.utils import DistributedDataParallelKwargs
        except ImportError as err:
            raise ImportError("this process was started by a launcher, which needs Hugging Face Accelerate: "
                              "pip install 'labkit[scale]'") from err
        ddp = DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)
        self.accelerator = Accelerator(kwargs_handlers=[ddp])
        launched_as = int(os.environ.get("WORLD_SIZE", "1"))
        if self.accelerator.num_processes != launched_as:
            raise ValueError(f"{launched_as} processes were launched but Accelerate set up "
                             f"{self.accelerator.num_processes} ({self.accelerator.distributed_type}); without GPUs, "
                             "launch with ACCELERATE_USE_CPU=1 (see docs/scaling.md)")
        self.num_processes = self.accelerator.num_processes
        self.process_index = self.accelerator.process_index
        self.is_main_process = self.accelerator.is_main_process
        self.device = self.accelerator.device

    def shard(self, batch: Batch) -> Batch:
        n = len(batch.labels)
        if n % self.num_processes:
            raise ValueError(f"the batch size ({n}) must be a multiple of the number of processes "
                             f"({self.num_processes}): each process trains on an equal slice of every batch")
        size = n // self.num_processes
        part = slice(self.process_index * size, (self.process_index + 1) * size)
        # The index stays on the CPU: it looks up rows of tensors of any device.
        return Batch(self.place(batch.images[part]), self.place(batch.labels[part]), batch.index[part], batch.view)

    def prepare(self, model, optimizer):
        return self.accelerator.prepare(model, optimizer)

    def backward(self, loss: torch.Tensor) -> None:
        # DDP averages the processes' gradients; the loss is a sum over examples, so multiplying it by the number
        # of processes makes the gradient the sum over the global batch, as in one process.
        self.accelerator.backward(loss * self.num_processes)

    def total(self, sums: dict[str, float]) -> dict[str, float]:
        values = torch.tensor(list(sums.values()), dtype=torch.float64, device=self.device)
        return dict(zip(sums, self.accelerator.reduce(values, "sum").tolist()))

    def precision(self, model: torch.nn.Module | None = None) -> str:
        # `accelerate launch --mixed_precision` decides here, not LABKIT_PRECISION (docs/scaling.md).
        if getattr(model, "fixed_precision", None) is not None:
            return model.fixed_precision
        return {"no": "fp32"}.get(str(self.accelerator.mixed_precision), str(self.accelerator.mixed_precision))

    def autocast(self, model: torch.nn.Module | None = None, computed_in: str | None = None) -> ContextManager:
        if getattr(model, "fixed_precision", None) is not None:
            return contextlib.nullcontext()
        return self.accelerator.autocast()

    def main_process_first(self) -> ContextManager:
        return self.accelerator.local_main_process_first()

    def wait_for_everyone(self) -> None:
        self.accelerator.wait_for_everyone()


def processes(find_unused_parameters: bool = False) -> SingleProcess:
    """:class:`DataParallel` when a launcher started this process, else :class:`SingleProcess` (docs/scaling.md)."""
    return DataParallel(find_unused_parameters) if launched() else SingleProcess()
