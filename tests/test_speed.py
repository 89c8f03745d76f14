"""Size and speed measurement: units, medians, warm-up, and the measured model left untouched."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from labkit import models
from labkit.speed import latency_ms, size_and_speed, throughput, time_calls, weights_file_bytes

DELAY = 0.005  # seconds


class Sleepy(nn.Module):
    """A model whose forward pass takes DELAY seconds (plus a first-call delay), whatever the batch size."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        time.sleep(DELAY * (20 if self.calls == 1 else 1))  # a slow first call, as oneDNN's kernel set-up
        return x.flatten(1)[:, :10] * self.weight[0]


def test_latency_is_the_median_in_milliseconds_after_warmup():
    ms = latency_ms(Sleepy(), batch_size=1, repeats=7, warmup=1)
    assert DELAY * 1000 <= ms < DELAY * 1000 * 4  # the 20x first call is warm-up, and a median ignores outliers


def test_throughput_is_images_per_second():
    ips = throughput(Sleepy(), batch_size=8, repeats=5, warmup=1)
    assert 8 / (DELAY * 4) < ips <= 8 / DELAY


def test_calls_are_counted_and_run_without_autograd():
    model = Sleepy()
    times = time_calls(model, batch_size=2, repeats=4, warmup=2)
    assert len(times) == 4 and all(t > 0 for t in times)
    assert model.calls == 0, "timings must run on a copy"


def test_the_measured_model_is_not_changed():
    torch.manual_seed(0)
    model = models.create("student_small").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    latency_ms(model, repeats=2, warmup=1)
    throughput(model, batch_size=4, repeats=2, warmup=1)
    assert model.training
    conv = model.layers[0].conv1.weight
    assert conv.is_contiguous() and not conv.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "BN statistics or weights changed"


def test_inference_mode_is_on_during_timing():
    seen = []
    original = Sleepy.forward

    def spy(self, x):
        seen.append(torch.is_inference_mode_enabled())
        return original(self, x)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Sleepy, "forward", spy)
        time_calls(Sleepy(), batch_size=1, repeats=2, warmup=1)
    assert seen == [True, True, True]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        time_calls(Sleepy(), batch_size=0, repeats=1)
    with pytest.raises(ValueError):
        latency_ms(Sleepy(), repeats=0)


def test_file_size_is_about_two_bytes_per_parameter():
    model = models.create("student_small")
    params = models.count_parameters(model)
    buffers = sum(b.numel() for b in model.buffers())
    size = weights_file_bytes(model)
    # float16 parameters, buffers (BatchNorm statistics) at most 4 bytes each, and a small JSON header
    assert 2 * params <= size < 2 * params + 4 * buffers + 64 * 1024
    assert weights_file_bytes(model, half=False) > 1.9 * size


def test_size_and_speed_row_has_every_column():
    row = size_and_speed(models.create("student_small"), latency_repeats=2, throughput_repeats=2,
                         throughput_batch=8, warmup=1)
    assert set(row) == {"params", "mflops_per_image", "file_kb", "latency_ms", "images_per_s", "throughput_batch",
                        "threads", "device"}
    assert row["params"] == models.count_parameters(models.create("student_small"))
    assert row["latency_ms"] > 0 and row["images_per_s"] > 0 and row["throughput_batch"] == 8
