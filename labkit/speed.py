"""What a model costs to keep and to run: size, CPU latency and throughput (introduced in 05_distill_student).

Timings are taken the way a deployed model runs: eval mode, no autograd (``torch.inference_mode``),
``channels_last`` memory layout (oneDNN's fast path on CPU), a few warm-up calls first (oneDNN builds its
kernels on the first calls), then the **median** of many timed calls, which a moment of CPU contention from
another process hardly moves. The model passed in is never changed: timings run on a copy.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from labkit import models
from labkit.pretrained import save_weights
from labkit.settings import device as default_device


def _prepared(model: nn.Module, channels_last: bool, device: torch.device) -> nn.Module:
    clone = copy.deepcopy(model).eval().to(device)
    return clone.to(memory_format=torch.channels_last) if channels_last else clone


def _finish(device: torch.device) -> None:
    # GPU kernels run asynchronously: a timing must wait for them to end.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(model: nn.Module, batch_size: int, repeats: int, warmup: int = 3, channels_last: bool = True,
               image_size: tuple[int, int, int] = (3, 32, 32), device: torch.device | str | None = None) -> list[float]:
    """Seconds taken by each of ``repeats`` forward passes of one batch of ``batch_size`` random images.

    ``warmup`` untimed passes come first. Inputs are float images in [0, 1], like the course's loaders give.
    ``device`` defaults to :func:`labkit.device`.
    """
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need batch_size >= 1, repeats >= 1 and warmup >= 0, got {batch_size}, {repeats}, {warmup}")
    device = torch.device(device) if device is not None else default_device()
    net = _prepared(model, channels_last, device)
    x = torch.rand(batch_size, *image_size, generator=torch.Generator().manual_seed(0)).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            net(x)
        _finish(device)
        for _ in range(repeats):
            started = time.perf_counter()
            net(x)
            _finish(device)
            times.append(time.perf_counter() - started)
    return times


def latency_ms(model: nn.Module, batch_size: int = 1, repeats: int = 200, warmup: int = 20,
               channels_last: bool = True, device: torch.device | str | None = None) -> float:
    """Median milliseconds of one forward pass on a batch of ``batch_size`` (default 1: one image at a time)."""
    return 1000 * statistics.median(time_calls(model, batch_size, repeats, warmup, channels_last, device=device))


def throughput(model: nn.Module, batch_size: int = 256, repeats: int = 20, warmup: int = 3,
               channels_last: bool = True, device: torch.device | str | None = None) -> float:
    """Images per second in batches of ``batch_size``: the batch size over the median time of one batch."""
    return batch_size / statistics.median(time_calls(model, batch_size, repeats, warmup, channels_last,
                                                     device=device))


def weights_file_bytes(model: nn.Module, half: bool = True) -> int:
    """Bytes of the model's weights as :func:`labkit.pretrained.save_weights` writes them (float16 parameters
    when ``half``)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.safetensors"
        save_weights(model, path, half=half)
        return path.stat().st_size


def size_and_speed(model: nn.Module, *, latency_repeats: int = 200, throughput_repeats: int = 20,
                   throughput_batch: int = 256, warmup: int = 10) -> dict:
    """One row of a size-and-speed table: parameters, FLOPs, file size, latency, throughput, threads.

    ``latency_ms`` is for one image (batch 1); ``images_per_s`` for batches of ``throughput_batch``, both on
    :func:`labkit.device`. The device and the CPU threads in use are recorded too (``torch.get_num_threads()``):
    timings mean little without them.
    """
    return {
        "params": models.count_parameters(model),
        "mflops_per_image": round(models.forward_flops(model) / 1e6, 1),
        "file_kb": round(weights_file_bytes(model) / 1024, 1),
        "latency_ms": round(latency_ms(model, 1, latency_repeats, warmup), 3),
        "images_per_s": round(throughput(model, throughput_batch, throughput_repeats, max(1, warmup // 3)), 1),
        "throughput_batch": throughput_batch,
        "threads": torch.get_num_threads(),
        "device": str(default_device()),
    }
