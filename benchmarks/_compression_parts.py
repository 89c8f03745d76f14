"""Two parts of benchmarks/deploy.py for notebook 09: low-rank factorization (accuracy before and after fine-tuning
with labels or with the teacher) and the speed of compressed models (low-rank on every engine; unstructured zeros
in dense and in CSR sparse kernels), timed together in one interleaved session on a quiet machine."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch
from torch import nn

from _deploy_kit import VAL_PER_CLASS, Kept, accuracy_on_test, calibration_set, fine_tune
from labkit import models
from labkit.compress import (OnnxModel, compile_fp32, compile_int8, export_onnx, prune_channels, prune_unstructured,
                             quantize_onnx_int8, quantize_pt2e, reestimate_batchnorm, sparsity, stored_bytes,
                             to_sparse)
from labkit.data import CifarData
from labkit.lowrank import factorize
from labkit.speed import cpu_int8_flags, time_interleaved
from labkit.stats import describe_gain, paired_gains
from labkit.train import TrainConfig

ENERGIES = (0.9, 0.8)  # kept squared singular values per layer: about 2/3 and 1/2 of the student's FLOPs
SPARSE_AMOUNTS = (0.5, 0.9)
SPARSE_BATCH = 64  # im2col at batch 256 would hold ~600 MB for one of the teacher's layers


def _size(model: nn.Module) -> dict:
    return {"params": models.count_parameters(model), "mflops_per_image": round(models.forward_flops(model) / 1e6, 1),
            "stored_kb": round(stored_bytes(model) / 1024, 1)}


def lowrank(floats: dict[str, nn.Module], data: CifarData, *, energies: tuple[float, ...], epochs: float,
            seeds: list[int], distillation: dict, batch_size: int, quick: bool, kept: Kept) -> dict:
    """Teacher and student factorized (:func:`labkit.lowrank.factorize`) at each kept ``energy``: sizes, test
    accuracy as factorized, and after ``epochs`` of fine-tuning at a tenth of the recipe's learning rate with
    labels only (alpha = 0) or distilled from the shipped teacher (the factorized teacher: from itself,
    unfactorized), the same seeds, batches and steps in both arms; each fine-tuned student is also quantized to int8
    (PT2E, that seed's calibration draw) and tested. KD - labels per model and energy, paired over the
    seeds, Holm-corrected over all of them (they share the seeds)."""
    train_part = data.with_validation(5 if quick else VAL_PER_CLASS)
    lr = TrainConfig().lr / 10
    T, alpha = distillation["T"], distillation["alpha"]
    out = {"energies": list(energies), "epochs": epochs, "seeds": seeds, "lr": lr, "distillation": distillation,
           "models": {}}
    accs = {}
    for name, model in floats.items():
        rows = {"original": {**_size(model), "test_acc": accuracy_on_test(model, data)}}
        for energy in energies:
            small = factorize(model, energy=energy)
            row = {**_size(small), "ranks": small.lowrank_ranks, "no fine-tuning": accuracy_on_test(small, data)}
            for arm, a in (("labels", 0.0), ("KD", alpha)):
                what = {"part": "lowrank", "model": name, "energy": energy, "arm": arm, "epochs": epochs, "T": T,
                        "alpha": alpha, "quick": quick}

                def run(seed: int, a: float = a, with_int8: bool = name == "student") -> dict:
                    tuned = fine_tune(copy.deepcopy(small), floats["teacher"], train_part, T=T, alpha=a,
                                      epochs=epochs, lr=lr, seed=seed, batch_size=batch_size)
                    out = {"test_acc": accuracy_on_test(tuned, data)}
                    if with_int8:  # an uncompiled int8 teacher tests at ~100 images/s: the student only
                        int8 = quantize_pt2e(tuned, calibration_set(train_part, quick, seed=seed))
                        out["int8_test_acc"] = accuracy_on_test(int8, data)
                    return out
                results = [kept.get({**what, "seed": seed}, lambda seed=seed: run(seed)) for seed in seeds]
                row[arm] = [r["test_acc"] for r in results]
                if name == "student":
                    row[f"{arm}, int8"] = [r["int8_test_acc"] for r in results]
                accs[f"{name}, energy {energy:g}, {arm}"] = row[arm]
            rows[f"energy {energy:g}"] = row
        out["models"][name] = rows
    pairs = [(f"{n}, energy {e:g}, KD", f"{n}, energy {e:g}, labels") for n in floats for e in energies]
    out["gains"] = paired_gains(accs, pairs) if len(seeds) > 1 else {}
    return out


def _engines(model: nn.Module, name: str, calibration: torch.Tensor, folder: Path) -> dict[str, nn.Module]:
    onnx_fp32 = export_onnx(model, folder / f"{name}.onnx")
    return {"fp32 eager": model, "fp32 compiled": compile_fp32(model),
            "int8 compiled": compile_int8(model, calibration), "ORT fp32": OnnxModel(onnx_fp32),
            "ORT int8": OnnxModel(quantize_onnx_int8(onnx_fp32, calibration, folder / f"{name}_int8.onnx"))}


def _csr_kb(model: nn.Module) -> float:
    return round(sum(b.numel() * b.element_size() for b in model.buffers()) / 1024, 1)


def compression_speed(floats: dict[str, nn.Module], data: CifarData, *, energies: tuple[float, ...],
                      amounts: tuple[float, ...], prune_amount: float, repeats: int, quick: bool) -> dict:
    """Latency (batch 1) and throughput of the compressed models, all in one interleaved session per batch size:
    low-rank at each energy, the original and (for the student, the mobile part's network) the channel-pruned
    network on the five engines (batch 256), and, for unstructured zeros
    (:func:`labkit.compress.prune_unstructured` at each amount), the zeroed network in its dense layers against
    its CSR copy (:func:`labkit.compress.to_sparse`, batch ``SPARSE_BATCH``), with the original beside them.
    Speed does not depend on the weights' values, so nothing here is fine-tuned; the zeroed networks' test
    accuracy without fine-tuning is recorded for what it is."""
    calibration = calibration_set(data, quick)
    sparse_rows, sparse_models = {}, {}
    for name, model in floats.items():
        sparse_models[f"{name}, original, dense"] = model
        for amount in amounts:
            zeroed = prune_unstructured(model, amount).eval()
            csr = to_sparse(zeroed)
            sparse_rows[f"{name}, {amount:.0%} zeros"] = {
                "sparsity": round(sparsity(zeroed), 4), "test_acc_no_fine_tuning": accuracy_on_test(zeroed, data),
                "dense_kb": round(stored_bytes(zeroed) / 1024, 1), "csr_buffers_kb": _csr_kb(csr)}
            sparse_models[f"{name}, {amount:.0%} zeros, dense"] = zeroed
            sparse_models[f"{name}, {amount:.0%} zeros, CSR"] = csr
    calls = {1: dict(calls=2 if quick else 50, warmup=2 if quick else 20),
             "large": dict(calls=1 if quick else 2, warmup=1 if quick else 3)}
    with tempfile.TemporaryDirectory() as folder:
        lowrank_models, stored = {}, {}
        for name, model in floats.items():
            variants = {"original": model, **{f"energy {e:g}": factorize(model, energy=e) for e in energies}}
            if name == "student":
                variants[f"pruned {prune_amount:.0%}"] = reestimate_batchnorm(prune_channels(model, prune_amount),
                                                                              calibration)
            for variant, m in variants.items():
                for engine, deployed in _engines(m, f"{name}_{variant.replace(' ', '_').replace('%', '')}",
                                                 calibration, Path(folder)).items():
                    lowrank_models[f"{name}, {variant}, {engine}"] = deployed
                    stored[f"{name}, {variant}, {engine}"] = round(stored_bytes(deployed) / 1024, 1)
        timings = {"lowrank": {f"batch_{b}": time_interleaved(lowrank_models, batch_size=b, repeats=repeats,
                                                              **calls[1 if b == 1 else "large"]) for b in (1, 256)}}
    timings["sparse"] = {f"batch_{b}": time_interleaved(sparse_models, batch_size=b, repeats=repeats,
                                                        **calls[1 if b == 1 else "large"]) for b in (1, SPARSE_BATCH)}
    return {"cpu_int8_flags": cpu_int8_flags(), "energies": list(energies), "amounts": list(amounts),
            "prune_amount": prune_amount, "stored_kb": stored,
            "sparse_batch": SPARSE_BATCH, "sparse": sparse_rows, "timings": timings}


def speed_goals(r: dict) -> dict:
    """The student's speed goals from the compression_speed timings (one machine, one session): int8 / fp32
    throughput on the same engine (goal >= 1.5x), and each student deployment's throughput against the teacher's
    eager fp32 (goal >= 20x), the fastest named."""
    ips = {key: t["images_per_s"]["median"] for key, t in r["timings"]["lowrank"]["batch_256"].items()}
    same = {f"{variant}, {family}": ips[f"student, {variant}, {int8}"] / ips[f"student, {variant}, {fp32}"]
            for variant in {k.split(", ")[1] for k in ips if k.startswith("student, ")}
            for family, fp32, int8 in (("compiled", "fp32 compiled", "int8 compiled"), ("ORT", "ORT fp32", "ORT int8"))}
    teacher = ips["teacher, original, fp32 eager"]
    vs_teacher = {key.removeprefix("student, "): v / teacher for key, v in ips.items() if key.startswith("student, ")}
    fastest = max(vs_teacher, key=vs_teacher.get)
    return {"int8_vs_fp32": same, "vs_teacher_eager": vs_teacher, "fastest": fastest,
            "int8_goal_met": max(same.values()) >= 1.5, "student_goal_met": vs_teacher[fastest] >= 20}


def lowrank_markdown(r: dict) -> list[str]:
    lines = [f"Low-rank factorization (spatial SVD of the convolutions, SVD of the head; rank per layer by kept "
             f"energy), fine-tuned {r['epochs']:g} epoch at lr {r['lr']:g}, seeds {r['seeds']}, (T, alpha) = "
             f"({r['distillation']['T']:g}, {r['distillation']['alpha']:g}).", "",
             "| model | variant | params | MFLOPs | stored KB | test acc %, as factorized | labels (per seed) | "
             "KD (per seed) | KD, then int8 (per seed) |", "|---|---|---|---|---|---|---|---|---|"]
    for model, rows in r["models"].items():
        for variant, row in rows.items():
            if variant == "original":
                lines.append(f"| {model} | original | {row['params']:,} | {row['mflops_per_image']} | "
                             f"{row['stored_kb']:,.0f} | {100 * row['test_acc']:.2f} | | | |")
                continue
            lines.append(f"| {model} | {variant} | {row['params']:,} | {row['mflops_per_image']} | "
                         f"{row['stored_kb']:,.0f} | {100 * row['no fine-tuning']:.2f} | "
                         + ", ".join(f"{100 * v:.2f}" for v in row["labels"]) + " | "
                         + ", ".join(f"{100 * v:.2f}" for v in row["KD"]) + " | "
                         + ", ".join(f"{100 * v:.2f}" for v in row.get("KD, int8", [])) + " |")
    lines += ["", "| paired difference | mean, interval (Holm-corrected) |", "|---|---|"]
    return lines + [f"| {pair} | {describe_gain(gain)} |" for pair, gain in r["gains"].items()]


def speed_markdown(r: dict) -> list[str]:
    low, sparse = r["timings"]["lowrank"], r["timings"]["sparse"]
    lines = ["Compressed models timed in one interleaved session (median ms at batch 1; median images/s at batch "
             f"256 for low-rank, batch {r['sparse_batch']} for the zeroed networks).", "",
             "| model, variant, engine | latency ms, batch 1 | images/s |", "|---|---|---|"]
    lines += [f"| {key} | {low['batch_1'][key]['ms']['median']:.3f} | "
              f"{low['batch_256'][key]['images_per_s']['median']:,.0f} |" for key in low["batch_1"]]
    lines += ["", "| model, zeros, kernels | latency ms, batch 1 | images/s |", "|---|---|---|"]
    big = f"batch_{r['sparse_batch']}"
    lines += [f"| {key} | {sparse['batch_1'][key]['ms']['median']:.3f} | "
              f"{sparse[big][key]['images_per_s']['median']:,.0f} |" for key in sparse["batch_1"]]
    goals = speed_goals(r)
    lines += ["", "Student speed goals on this machine: int8 / fp32 throughput on the same engine "
              + ", ".join(f"{k} {v:.2f}x" for k, v in goals["int8_vs_fp32"].items())
              + f" (>= 1.5x: {'met' if goals['int8_goal_met'] else 'not met'}); fastest student deployment "
              f"{goals['fastest']}, {goals['vs_teacher_eager'][goals['fastest']]:.1f}x the teacher's eager fp32 "
              f"throughput (>= 20x: {'met' if goals['student_goal_met'] else 'not met'})."]
    lines += ["", "| zeroed network | sparsity | test acc %, no fine-tuning | dense KB | CSR arrays KB |",
              "|---|---|---|---|---|"]
    lines += [f"| {key} | {row['sparsity']:.1%} | {100 * row['test_acc_no_fine_tuning']:.2f} | "
              f"{row['dense_kb']:,.0f} | {row['csr_buffers_kb']:,.0f} |" for key, row in r["sparse"].items()]
    return lines
