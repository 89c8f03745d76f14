"""Size and speed measurement: units, medians, warm-up, and the measured model left untouched."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from labkit import models
from labkit.speed import (cpu_int8_flags, estimate_seconds, latency_ms, size_and_speed, throughput, time_calls,
                          time_interleaved, weights_file_bytes)

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


class FakeClock:
    """A clock that only the fake models below move: timings without the real clock's noise."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_models(clock: FakeClock, log: list[str], seconds: dict[str, list[float]]) -> dict:
    """Callables that log their name and advance the clock by their next duration (the last one repeats)."""
    def model(name):
        durations = iter(seconds[name])
        last = [seconds[name][0]]

        def run(x):
            log.append(name)
            last[0] = next(durations, last[0])
            clock.now += last[0]
            return x
        return run
    return {name: model(name) for name in seconds}


def test_interleaved_rounds_alternate_between_models():
    clock, log = FakeClock(), []
    models_ = fake_models(clock, log, {"A": [0.001], "B": [0.002], "C": [0.003]})
    time_interleaved(models_, batch_size=4, repeats=7, calls=2, warmup=1, clock=clock)
    # warm-up once each, then 7 rounds of A, B, C: each one untimed call and 2 timed calls
    assert log[:3] == ["A", "B", "C"]
    assert log[3:] == [name for _ in range(7) for name in "ABC" for _ in range(3)]


def test_interleaved_timing_reports_medians_and_spread():
    clock = FakeClock()
    # each round takes one untimed and one timed call: the timed ones are every second duration
    b_times = [0.010, 0.001, 0.010, 0.003, 0.010, 0.002, 0.010, 0.009, 0.010, 0.002, 0.010, 0.004, 0.010, 0.002]
    models_ = fake_models(clock, [], {"A": [0.005], "B": b_times})
    result = time_interleaved(models_, batch_size=10, repeats=7, warmup=0, clock=clock)
    assert result["A"]["ms"]["median"] == pytest.approx(5.0)
    assert result["A"]["images_per_s"]["median"] == pytest.approx(2000)
    b = result["B"]
    assert b["ms"]["median"] == pytest.approx(2.0) and b["ms"]["min"] == pytest.approx(1.0)
    assert b["ms"]["max"] == pytest.approx(9.0) and b["ms"]["q1"] <= b["ms"]["median"] <= b["ms"]["q3"]
    assert b["images_per_s"]["max"] == pytest.approx(10_000)
    assert b["images_per_s"]["min"] == pytest.approx(10 / 0.009, rel=1e-3)
    assert b["batch_size"] == 10 and b["repeats"] == 7 and b["calls"] == 1


def test_interleaved_timing_copies_modules_and_refuses_too_few_rounds():
    model = Sleepy()
    result = time_interleaved({"sleepy": model}, batch_size=2, repeats=7, warmup=1)
    assert model.calls == 0, "modules are timed on a copy"
    assert DELAY * 1000 <= result["sleepy"]["ms"]["median"] < DELAY * 1000 * 4
    with pytest.raises(ValueError, match="repeats >= 7"):
        time_interleaved({"sleepy": model}, batch_size=2, repeats=5)
    with pytest.raises(ValueError, match="at least one model"):
        time_interleaved({}, batch_size=2)


CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni amx_bf16 amx_tile amx_int8
"""


def test_cpu_int8_flags_are_read_from_cpuinfo():
    flags = cpu_int8_flags(CPUINFO)
    assert flags["cpu"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert flags["avx512_vnni"] and flags["amx_int8"] and flags["amx_tile"] and flags["avx512f"]
    assert not flags["avx_vnni"] and flags["int8_dot_product"] and flags["flags_known"]
    assert flags["torch_threads"] == torch.get_num_threads()
    old = cpu_int8_flags("model name\t: Old CPU\nflags\t\t: fpu sse2 avx2\n")
    assert not old["int8_dot_product"] and not old["avx512f"] and old["cpu"] == "Old CPU"
    unknown = cpu_int8_flags("")
    assert not unknown["flags_known"] and not unknown["int8_dot_product"]


def test_estimates_are_images_over_rates_and_unknown_models_are_refused():
    rates = {"net": {"train": 100.0, "infer": 400.0}}
    assert estimate_seconds("net", train=1_000, infer=2_000, rates=rates) == pytest.approx(15.0)
    assert estimate_seconds("student_small", train=1_800) == pytest.approx(1.0), "2 quiet cores by default"
    with pytest.raises(ValueError, match="rates="):
        estimate_seconds("student_medium", train=1)
