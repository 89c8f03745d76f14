"""Training throughput of the course's models on this machine, against its fp32 matmul ceiling.

    python benchmarks/train_throughput.py [--quick] [--batch-size 512]

For each model: images/s of a full training step (forward, backward, Nesterov SGD; channels_last, random
inputs: the data pipeline is measured separately), effective GFLOP/s = 3 x forward FLOPs x images/s, and
its ratio to a 2048x2048 fp32 matmul measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from _common import print_table, write_json
from labkit import models
from labkit.settings import quick_mode


def matmul_gflops(seconds: float, n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b)
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - started) / 1e9


def train_images_per_s(name: str, batch_size: int, seconds: float) -> float:
    torch.manual_seed(0)
    model = models.create(name).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.85, nesterov=True)
    x = torch.rand(batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,))

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # oneDNN builds its kernels on the first calls
        step()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        count += 1
    return count * batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=30.0, help="timing window per model")
    parser.add_argument("--quick", action="store_true", help="1-second windows (smoke test)")
    args = parser.parse_args()
    seconds = 1.0 if args.quick or quick_mode() else args.seconds
    ceiling = matmul_gflops(seconds)
    rows = []
    for name in ("teacher", "student_medium", "student_small"):
        flops = models.forward_flops(models.create(name))
        ips = train_images_per_s(name, args.batch_size, seconds)
        gflops = 3 * flops * ips / 1e9
        rows.append({"model": name, "params": models.count_parameters(models.create(name)),
                     "fwd_gflop_per_img": round(flops / 1e9, 4), "batch": args.batch_size, "train_img_per_s": round(ips, 1),
                     "effective_gflop_per_s": round(gflops, 1), "fraction_of_matmul": round(gflops / ceiling, 3)})
    print(f"fp32 2048x2048 matmul: {ceiling:.1f} GFLOP/s")
    print_table(rows)
    write_json("train_throughput", {"matmul_2048_gflop_per_s": round(ceiling, 1), "seconds_per_model": seconds,
                                    "rows": rows})


if __name__ == "__main__":
    main()
