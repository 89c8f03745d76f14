"""What a model costs to keep and to run: size, CPU latency and throughput (introduced in 05_distill_student).

Timings are taken the way a deployed model runs: eval mode, no autograd (``torch.inference_mode``),
``channels_last`` memory layout (oneDNN's fast path on CPU), a few warm-up calls first (oneDNN builds its
kernels on the first calls), then the **median** of many timed calls, which a moment of CPU contention from
another process hardly moves. The model passed in is never changed: timings run on a copy.

To compare models (09_compress_and_deploy), :func:`time_interleaved` times them in turns, A, B, C, A, B, C, ...,
so that a slow minute of the machine slows every model alike, and reports the median and spread of the rounds;
:func:`cpu_int8_flags` records whether the CPU has the instructions that make int8 fast.
"""

from __future__ import annotations

import copy
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping

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


def time_interleaved(models: Mapping[str, Callable[[torch.Tensor], object]], batch_size: int, repeats: int = 7,
                     calls: int = 1, warmup: int = 3, channels_last: bool = True,
                     image_size: tuple[int, int, int] = (3, 32, 32), device: torch.device | str = "cpu",
                     clock: Callable[[], float] = time.perf_counter) -> dict[str, dict]:
    """Time several models on the same batch of ``batch_size`` random images, in interleaved rounds.

    Each model first gets ``warmup`` untimed calls (compiled models compile there). Then ``repeats`` rounds
    (at least 7) each run every model in turn, A, B, C, A, B, C, ...: one untimed call (it absorbs what the previous
    model left behind: caches, spinning threads), then ``calls`` timed calls in a row, whose mean is the round's
    time (use many calls for batch 1). Per model: ``ms`` (per call) and ``images_per_s``, each as the median over
    the rounds with the ``min``, ``max`` and quartiles ``q1``, ``q3``, plus the settings. Modules are timed like
    :func:`time_calls` times them (a copy, eval mode, channels_last, no autograd); other callables as they are.
    ``device`` is the CPU by default, where the deployment engines run.
    """
    if not models:
        raise ValueError("time_interleaved needs at least one model")
    if batch_size < 1 or repeats < 7 or calls < 1 or warmup < 0:
        raise ValueError("need batch_size >= 1, repeats >= 7 (a median of fewer rounds is not a measurement), "
                         f"calls >= 1 and warmup >= 0; got {batch_size}, {repeats}, {calls}, {warmup}")
    device = torch.device(device)
    nets = {name: _prepared(m, channels_last, device) if isinstance(m, nn.Module) else m for name, m in models.items()}
    x = torch.rand(batch_size, *image_size, generator=torch.Generator().manual_seed(0)).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    seconds = {name: [] for name in nets}
    with torch.inference_mode():
        for net in nets.values():
            for _ in range(warmup):
                net(x)
        _finish(device)
        for _ in range(repeats):
            for name, net in nets.items():
                net(x)
                _finish(device)
                started = clock()
                for _ in range(calls):
                    net(x)
                _finish(device)
                seconds[name].append((clock() - started) / calls)
    return {name: _spread(times, batch_size, repeats, calls) for name, times in seconds.items()}


def _spread(times: list[float], batch_size: int, repeats: int, calls: int) -> dict:
    """Median, min, max and quartiles of per-call times, in ms and in images/s (the fastest call is the max)."""
    ms = sorted(1000 * t for t in times)
    q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    summary = {"median": statistics.median(ms), "min": ms[0], "max": ms[-1], "q1": q1, "q3": q3}
    per_s = {"median": summary["median"], "min": summary["max"], "max": summary["min"], "q1": summary["q3"],
             "q3": summary["q1"]}
    return {"ms": {k: round(v, 4) for k, v in summary.items()},
            "images_per_s": {k: round(1000 * batch_size / v, 1) for k, v in per_s.items()},
            "batch_size": batch_size, "repeats": repeats, "calls": calls}


INT8_FLAGS = ("avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")


def cpu_int8_flags(cpuinfo: str | None = None) -> dict:
    """What the CPU offers for int8 arithmetic, from ``/proc/cpuinfo`` (or the ``cpuinfo`` text given).

    ``avx512_vnni`` and ``avx_vnni`` add an int8 dot-product instruction (four int8 products summed per step), and
    ``amx_int8`` tile matrix units: with one of them int8 convolutions can run much faster than float32, without
    them int8 mostly saves memory. Returns each flag (False when unknown), ``int8_dot_product`` (any of those
    three), the CPU's model name, torch's view of the vector unit (``torch.backends.cpu.get_cpu_capability()``)
    and the threads PyTorch uses. Off Linux, without ``cpuinfo``, the flags are unknown (``flags_known`` False).
    """
    if cpuinfo is None:
        source = Path("/proc/cpuinfo")
        cpuinfo = source.read_text() if source.is_file() else ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:  # every core repeats the same lines: the first one is enough
            fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    found = {flag: flag in flags for flag in INT8_FLAGS}
    return {"cpu": fields.get("model name") or platform.processor() or "unknown", **found,
            "int8_dot_product": found["avx512_vnni"] or found["avx_vnni"] or found["amx_int8"],
            "flags_known": bool(flags), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads()}


# Images per second on 2 quiet CPU cores (the course's reference machine), at the course's batch sizes: what the
# benchmarks' time estimates are computed from. "train": one training step per image (forward and backward);
# "infer": a forward pass, e.g. for cached teacher logits or an evaluation.
TWO_CORES = {"student_small": {"train": 1800, "infer": 5000}, "teacher": {"train": 180, "infer": 700}}


def estimate_seconds(model: str, train: float = 0, infer: float = 0,
                     rates: Mapping[str, Mapping[str, float]] = TWO_CORES) -> float:
    """Seconds that ``train`` training images and ``infer`` inference images of the architecture ``model`` take at
    ``rates`` (default :data:`TWO_CORES`): the arithmetic of a budget, before running it (09_compress_and_deploy).
    A busy or different machine is slower or faster; the estimate is for planning, not a measurement."""
    if model not in rates:
        raise ValueError(f"no rate for {model!r}; the rates cover {sorted(rates)}: pass rates= with its images/s")
    return train / rates[model]["train"] + infer / rates[model]["infer"]
