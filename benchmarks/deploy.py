"""Deployment measured: every CPU engine in fp32 and int8, pruning, quantization-aware distillation, the limited-data
rule and the decision matrix, for notebook 09_compress_and_deploy.

    python benchmarks/deploy.py [--quick] [--all] [--prune] [--qat] [--limited-data] [--lowrank]
                                [--compression-speed] [--mobile] [--qat-ablation] [--repeats 11] [--fresh [PART ...]]

**Engines** (always): for the shipped ``teacher`` and ``student_small_distilled``, five deployments each
(:mod:`labkit.compress`): **fp32 eager** (the model itself), **fp32 compiled** (:func:`~labkit.compress.compile_fp32`),
**int8 compiled** (:func:`~labkit.compress.compile_int8`: PT2E + ``X86InductorQuantizer`` + Inductor), **ORT fp32**
and **ORT int8** (:func:`~labkit.compress.export_onnx`, :func:`~labkit.compress.quantize_onnx_int8`: ONNX Runtime,
static QDQ, per-channel weights). int8 is calibrated on 2,000 training images, 200 per class. Each is measured for
test accuracy (all 10,000 images), agreement with its own fp32 eager predictions, stored size, latency at batch 1
and throughput at batch 256, timed by :func:`labkit.speed.time_interleaved` (all ten in turn, ``--repeats`` rounds,
median and spread), with the CPU's int8 flags (:func:`labkit.speed.cpu_int8_flags`): an int8 speed-up depends on
them. Goals: int8 >= 1.5x fp32 throughput on the same engine, and the student's fastest deployment >= 20x the
teacher's eager fp32 throughput. The shipped ``student_small_scratch`` is tested too (the "student scratch" row), and
both networks channel-pruned by ``--prune-amount`` are timed in the same rounds (fp32 eager), so that the pruned
rows' speed comes from the machine that timed the rest.

Parts that train, each run only when asked (``--all``: every one):

* ``--prune``: per-stage sensitivity scans (accuracy against the fraction of a stage's channels removed, with and
  without BatchNorm re-estimation) for student and teacher, on 1,000 images each never trained on (the student: the
  validation split; the teacher, which trained on every training image: 1,000 test images); both pruned by
  ``--prune-amount`` in every stage, BatchNorm re-estimated, fine-tuned with labels only and with distillation from
  the teacher (the teacher: first seed only, a baseline row at ten times a student's cost); the control, the same
  narrow student trained from scratch, labels only and distilled, for the pruned network's whole budget (the
  parent's 20 epochs plus the fine-tuning).
* ``--qat``: the distilled student quantized after training (calibration drawn per seed) against
  quantization-aware fine-tuning with labels only and with the teacher's soft targets, the same steps, with
  ``--qat-weight-bits`` bits of weights (default 4: int8 costs this student nothing, 8-bit weights leave nothing to
  recover; 4-bit weights run on the int8 kernels and simulate 4-bit accuracy, not 4-bit speed). Paired intervals.
* ``--limited-data``: :func:`labkit.limited_data.limited_data_rule` (transfer learning against distillation on
  CIFAR-10 classes 5-9 with 2% of their labels; with how often each student repeats the teacher's mistakes).
* ``--lowrank``: teacher and student factorized by :mod:`labkit.lowrank` at two kept energies, fine-tuned with
  labels or with the teacher (benchmarks/_compression_parts.py).
* ``--compression-speed``: the low-rank and channel-pruned networks on the five engines, and unstructured zeros in
  dense against CSR sparse kernels, timed in one interleaved session (run it on a quiet machine).
* ``--mobile``: prune, int8, then distill to recover (float KD then int8, or int8 QAT with the teacher), against no
  recovery and the unpruned int8 student; ``--qat-ablation``: quantization-aware training's recipe changed one
  thing at a time (benchmarks/_quantization_parts.py).

Distillation uses the (T, alpha) that ``benchmarks/kd_headline.py`` chose on validation (read from
benchmarks/results/kd_headline.json; :data:`FALLBACK_DISTILLATION` until it exists). Each part prints its estimated
minutes first. Finished parts and finished runs inside them are kept in benchmarks/kept/deploy/ (committed: a long
``--all`` can span sessions and machines; quick mode keeps them in runs/deploy_quick/) and reused by a later call
with the same settings (``--fresh`` measures again, every part or the parts named), and every finished part is
merged into the results at once, so an interrupted ``--all`` continues where it stopped. The decision matrix (:func:`labkit.decision.decision_rows`, Pareto
front) is built from whatever parts are there, with the transfer-set student from benchmarks/results/transfer_set.json.

Writes benchmarks/results/deploy.json and .md (``_quick`` in quick mode: tiny data and few repeats, not a result).
Run it on a quiet machine: another busy process makes every timing slower, unevenly. Measured on the JPEG copy of
CIFAR-10 that load_cifar10 finds.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from _common import RESULTS, write_json, write_report
from _compression_parts import ENERGIES, SPARSE_AMOUNTS, compression_speed, lowrank, lowrank_markdown, speed_markdown
from _deploy_kit import VAL_PER_CLASS, Kept, accuracy_on_test, calibration_set, fine_tune
from _quantization_parts import QAT_VARIANTS, mobile, mobile_markdown, qat_ablation, qat_ablation_markdown
from labkit import models
from labkit.compress import (OnnxModel, compile_fp32, compile_int8, convert_qat, export_onnx, prepare_qat,
                             prune_channels, quantize_onnx_int8, quantize_pt2e, reestimate_batchnorm,
                             sensitivity_scan, stored_bytes)
from labkit.data import CifarData, load_cifar10
from labkit.decision import decision_rows, pareto_front
from labkit.evaluate import accuracy, agreement, predict_logits
from labkit.limited_data import limited_data_budget, limited_data_rule
from labkit.pretrained import load_pretrained, load_teacher
from labkit.settings import QUICK_ENV, quick_mode
from labkit.speed import cpu_int8_flags, estimate_seconds, time_interleaved
from labkit.stats import describe_gain, paired_gains
from labkit.train import TrainConfig, distill

ENGINES = ("fp32 eager", "fp32 compiled", "int8 compiled", "ORT fp32", "ORT int8")
SAME_ENGINE = {"PyTorch compiled": ("fp32 compiled", "int8 compiled"), "ONNX Runtime": ("ORT fp32", "ORT int8"),
               "int8 compiled vs eager": ("fp32 eager", "int8 compiled")}
INT8_GOAL, STUDENT_GOAL = 1.5, 20.0
# Used only until benchmarks/kd_headline.py has written its choice: the first of its (T, alpha) candidates
# (labkit.experiments.DISTILLATION), not a measured choice. The results record which one was used.
FALLBACK_DISTILLATION = {"T": 2.0, "alpha": 0.5}
PART_KEYS = {"engines": ("cpu_int8_flags", "quality", "timings", "ratios", "scratch_student"),
             "pruning": ("pruning",), "qat": ("qat",), "limited_data": ("limited_data",), "lowrank": ("lowrank",),
             "compression_speed": ("compression_speed",), "mobile": ("mobile",), "qat_ablation": ("qat_ablation",)}
SCAN_IMAGES = {"student": "the 1,000-image validation split (held out from the shipped students' training)",
               "teacher": "1,000 test images, 100 per class (the shipped teacher trained on every training image)"}
# The pruned student inherits the shipped student's 20 epochs (labkit.experiments.patient_budget) and adds its
# fine-tuning: the narrow control trains as long from scratch, reading the same 4 cached views of the teacher's logits.
PARENT_EPOCHS, SCRATCH_VIEWS = 20, 4
QAT_GAINS = (("QAT KD", "post-training"), ("QAT labels", "post-training"), ("QAT KD", "QAT labels"))
# Planning assumptions of the estimates, not measurements: a fake-quantized student trains about 3x slower than
# the float one, and an uncompiled quantized graph (labkit.compress.QuantizedModel) predicts ~1,000 images/s.
QAT_SLOWDOWN, QUANTIZED_EAGER_PER_S, COMPILE_SECONDS = 3.0, 1000.0, 20.0


def distillation_settings(path: Path = RESULTS / "kd_headline.json") -> dict:
    """The (T, alpha) every distilled run here uses: the one kd_headline.py chose on validation, or the fallback."""
    if path.is_file():
        chosen = json.loads(path.read_text()).get("chosen", {})
        if "T" in chosen and "alpha" in chosen:
            return {"T": float(chosen["T"]), "alpha": float(chosen["alpha"]), "from": str(path.name)}
    return {**FALLBACK_DISTILLATION, "from": "FALLBACK_DISTILLATION (kd_headline.json not written yet)"}


def deployments(model: nn.Module, name: str, calibration: torch.Tensor, folder: Path) -> dict[str, nn.Module]:
    """The five deployments of one float model, by engine name."""
    onnx_fp32 = export_onnx(model, folder / f"{name}.onnx")
    return {"fp32 eager": model, "fp32 compiled": compile_fp32(model),
            "int8 compiled": compile_int8(model, calibration), "ORT fp32": OnnxModel(onnx_fp32),
            "ORT int8": OnnxModel(quantize_onnx_int8(onnx_fp32, calibration, folder / f"{name}_int8.onnx"))}


def quality(engines: dict[str, nn.Module], data: CifarData) -> dict[str, dict]:
    """Test accuracy, agreement with the fp32 eager model's predictions, and stored size of each deployment."""
    reference = predict_logits(engines["fp32 eager"], data.test_images)
    out = {}
    for engine, model in engines.items():
        logits = reference if engine == "fp32 eager" else predict_logits(model, data.test_images)
        out[engine] = {"test_acc": accuracy(logits, data.test_labels), "agreement": agreement(logits, reference),
                       "stored_kb": round(stored_bytes(model) / 1024, 1)}
    return out


def timings(models_: dict[str, nn.Module], repeats: int, quick: bool) -> dict[str, dict]:
    """Latency (batch 1) and throughput (batch 256) of every model, interleaved: {"batch_1": ..., "batch_256": ...}."""
    # Many calls per round at batch 1, where one call is well under a millisecond and a clock tick is not.
    settings = {1: dict(calls=2 if quick else 50, warmup=2 if quick else 20),
                256: dict(calls=1 if quick else 2, warmup=1 if quick else 3)}
    return {f"batch_{b}": time_interleaved(models_, batch_size=b, repeats=repeats, **kw) for b, kw in settings.items()}


def ratios(timed: dict) -> dict:
    """int8 / fp32 throughput (batch 256) and latency speed-up (batch 1) on the same engine, per model, and the
    student's fastest deployment against the teacher's eager fp32."""
    def ips(model, engine, batch=256):
        return timed[f"batch_{batch}"][f"{model}, {engine}"]["images_per_s"]["median"]

    def ms(model, engine):
        return timed["batch_1"][f"{model}, {engine}"]["ms"]["median"]

    same = {model: {family: {"throughput_x": round(ips(model, int8) / ips(model, fp32), 3),
                             "latency_speedup_x": round(ms(model, fp32) / ms(model, int8), 3)}
                    for family, (fp32, int8) in SAME_ENGINE.items()}
            for model in ("teacher", "student")}
    fastest = max(ENGINES, key=lambda e: ips("student", e))
    student_x = ips("student", fastest) / ips("teacher", "fp32 eager")
    return {"int8_vs_fp32": same,
            "int8_goal_met": {model: {family: same[model][family]["throughput_x"] >= INT8_GOAL
                                      for family in ("PyTorch compiled", "ONNX Runtime")} for model in same},
            "student_fastest_engine": fastest, "student_fastest_vs_teacher_eager_x": round(student_x, 2),
            "student_goal_met": student_x >= STUDENT_GOAL}


def engines_part(floats: dict[str, nn.Module], data: CifarData, repeats: int, quick: bool,
                 prune_amount: float) -> dict:
    """The five deployments of teacher and student: quality, interleaved timings, ratios, and the scratch student.
    The channel-pruned networks (``prune_amount``) are timed in the same rounds, in fp32 eager, so that every speed
    in the results comes from one machine; their accuracy is the pruning part's (speed does not depend on the
    weights' values, so these are pruned and BatchNorm re-estimated, not fine-tuned)."""
    calibration = calibration_set(data, quick)
    pruned = {f"{name} pruned, fp32 eager": reestimate_batchnorm(prune_channels(model, prune_amount), calibration)
              for name, model in floats.items()}
    with tempfile.TemporaryDirectory() as folder:
        engines = {name: deployments(model, name, calibration, Path(folder)) for name, model in floats.items()}
        timed = {f"{name}, {engine}": m for name, e in engines.items() for engine, m in e.items()}
        out = {"cpu_int8_flags": cpu_int8_flags(), "quality": {name: quality(e, data) for name, e in engines.items()},
               "timings": timings({**timed, **pruned}, repeats, quick)}
    out["ratios"] = ratios(out["timings"])
    scratch = load_pretrained("student_small_scratch", "cpu")
    out["scratch_student"] = {"test_acc": accuracy(predict_logits(scratch, data.test_images), data.test_labels)}
    return out


def pruning(teacher: nn.Module, student: nn.Module, data: CifarData, *, amount: float, epochs: float,
            scratch_epochs: float, seeds: list[int], distillation: dict, batch_size: int, quick: bool,
            kept: Kept) -> dict:
    """Sensitivity scans; pruned + BatchNorm re-estimated + fine-tuned models against the narrow architecture
    trained from scratch (the pruned networks are timed by :func:`engines_part`). Fine-tuning uses a tenth of the
    recipe's learning rate: the weights are already good. The pruned teacher is fine-tuned only with distillation
    (from itself, unpruned) and the first seed: it is a baseline row, and each of its runs costs ten student runs.
    Scans read images the model never trained on (:func:`scan_images`). The control trains ``scratch_epochs``
    (default: the parent's epochs plus the fine-tuning, the pruned network's whole budget). Every distilled run
    reads the same :data:`SCRATCH_VIEWS` cached views of the teacher's logits."""
    train_part = data.with_validation(5 if quick else VAL_PER_CLASS)
    calibration = calibration_set(train_part, quick)
    fractions = (0.25, 0.5, 0.75, 0.9)
    T, alpha = distillation["T"], distillation["alpha"]
    out = {"amount": amount, "epochs": epochs, "scratch_epochs": scratch_epochs, "seeds": seeds,
           "teacher_seeds": seeds[:1], "distillation": distillation, "views": SCRATCH_VIEWS,
           "scan_images": SCAN_IMAGES, "scans": {}, "arms": {}}
    for name, model in (("student", student), ("teacher", teacher)):
        images, labels = scan_images(name, train_part, data, quick)
        out["scans"][name] = {
            "bn_reestimated": sensitivity_scan(model, fractions, images, labels, calibration),
            "stale_bn": sensitivity_scan(model, fractions, images, labels),
            "unpruned": accuracy(predict_logits(model, images), labels)}
    lr = TrainConfig().lr / 10
    views = SCRATCH_VIEWS
    for name, model in (("student", student), ("teacher", teacher)):
        pruned = reestimate_batchnorm(prune_channels(model, amount), calibration)
        runs = {"pruned + labels": 0.0, "pruned + KD": alpha} if name == "student" else {"pruned + KD": alpha}
        arms = {"pruned, no fine-tuning": lambda seed: accuracy_on_test(pruned, data)}
        for arm, a in runs.items():
            arms[arm] = lambda seed, a=a: accuracy_on_test(fine_tune(copy.deepcopy(pruned), teacher, train_part, T=T,
                                                                      alpha=a, epochs=epochs, lr=lr, seed=seed,
                                                                      batch_size=batch_size, views=views), data)
        if name == "student":  # the control: the same narrow network, never pruned
            for arm, a in (("narrow, scratch labels", 0.0), ("narrow, scratch KD", alpha)):
                arms[arm] = lambda seed, a=a: accuracy_on_test(_scratch(pruned, train_part, teacher, T=T, alpha=a,
                                                                         epochs=scratch_epochs, seed=seed,
                                                                         batch_size=batch_size, views=views), data)
        for arm, run in arms.items():
            what = {"part": "pruning", "model": name, "arm": arm, "amount": amount, "epochs": epochs,
                    "scratch_epochs": scratch_epochs, "T": T, "alpha": alpha, "quick": quick}
            # nothing random in an arm without training; the teacher's arms: first seed (docstring)
            arm_seeds = seeds if name == "student" and arm != "pruned, no fine-tuning" else seeds[:1]
            accs = [kept.get({**what, "seed": seed}, lambda run=run, seed=seed: run(seed)) for seed in arm_seeds]
            out["arms"].setdefault(name, {})[arm] = {
                "test_acc": accs, "params": models.count_parameters(pruned),
                "mflops_per_image": round(models.forward_flops(pruned) / 1e6, 1),
                "stored_kb": round(stored_bytes(pruned) / 1024, 1)}
    return out


def scan_images(name: str, train_part: CifarData, data: CifarData, quick: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Images the model never trained on, for its sensitivity scans: the student's are the validation split (the
    shipped students trained on the 45,000 images outside a 5,000-image split that contains it); the shipped teacher
    trained on all 50,000 training images, so its are a stratified tenth of the test set. Nothing is chosen from a
    scan (the pruning amount is fixed in advance), so the test images it reads are not used to choose anything."""
    if name == "student":
        return train_part.val_images, train_part.val_labels
    test = data.subset(test_per_class=5 if quick else VAL_PER_CLASS, seed=1)
    return test.test_images, test.test_labels


def _scratch(like: models.CifarNet, data: CifarData, teacher: nn.Module, *, T: float, alpha: float, epochs: float,
             seed: int, batch_size: int, views: int) -> nn.Module:
    """A fresh network of ``like``'s (narrow) architecture, trained with labels only (alpha = 0) or distilled at the
    recipe's full learning rate (:func:`fine_tune`'s views)."""
    torch.manual_seed(seed)
    model = models.CifarNet(**like.config)
    distill(model, teacher, data, T=T, alpha=alpha, epochs=epochs, teacher_views=views, views_seed=0, seed=seed,
            batch_size=batch_size, progress=False)
    return model.eval()


def qat(teacher: nn.Module, student: nn.Module, data: CifarData, *, epochs: float, seeds: list[int],
        weight_bits: int, distillation: dict, batch_size: int, quick: bool, kept: Kept) -> dict:
    """Post-training quantization of the student against quantization-aware fine-tuning, labels only and
    distilled: per seed, the same calibration draw (PTQ's ranges, QAT's example batch), the same steps, batches and
    learning rate (a tenth of the recipe's). Accuracy of the converted models, uncompiled (the same numbers as
    compiled, :class:`labkit.compress.QuantizedModel`), on the whole test split; paired differences."""
    train_part = data.with_validation(5 if quick else VAL_PER_CLASS)
    lr = TrainConfig().lr / 10
    T, alpha = distillation["T"], distillation["alpha"]
    settings = {"epochs": epochs, "images_seen": int(epochs * len(train_part.train_labels)) // batch_size * batch_size,
                "seeds": seeds, "weight_bits": weight_bits, "lr": lr, "batch_size": batch_size,
                "calibration_images": len(calibration_set(train_part, quick)), "distillation": distillation}
    test = {"post-training": [], "QAT labels": [], "QAT KD": []}
    for seed in seeds:
        calibration = calibration_set(train_part, quick, seed=seed)
        what = {"part": "qat", **settings, "seed": seed, "quick": quick}
        test["post-training"].append(kept.get({**what, "arm": "post-training"}, lambda: accuracy_on_test(
            quantize_pt2e(student, calibration, weight_bits), data)))
        for arm, a in (("QAT labels", 0.0), ("QAT KD", alpha)):
            def run(a=a):
                prepared = fine_tune(prepare_qat(student, calibration[:64], weight_bits), teacher, train_part, T=T,
                                     alpha=a, epochs=epochs, lr=lr, seed=seed, batch_size=batch_size)
                return accuracy_on_test(convert_qat(prepared), data)
            test[arm].append(kept.get({**what, "arm": arm}, run))
    return {"settings": settings, "float": accuracy_on_test(student, data),
            "arms": {arm: {"test_acc": values} for arm, values in test.items()},
            "gains": paired_gains(test, QAT_GAINS) if len(seeds) > 1 else {}}


def limited_data(data: CifarData, seeds: list[int], distillation: dict, store: Path) -> dict:
    """:func:`labkit.limited_data.limited_data_rule` at its budget, runs kept in ``store``."""
    return limited_data_rule(data, T=distillation["T"], alpha=distillation["alpha"],
                             budget=limited_data_budget(seeds), store=store, log=lambda m: print(m, flush=True))


def _flops_left(name: str, amount: float) -> float:
    """The fraction of a network's FLOPs left after :func:`labkit.compress.prune_channels` by ``amount``."""
    full = models.create(name)
    return models.forward_flops(prune_channels(full, amount)) / models.forward_flops(full)


def estimates(args: argparse.Namespace, parts: list[str], seeds: list[int]) -> dict[str, float]:
    """Minutes each asked-for part should take on 2 quiet cores (:data:`labkit.speed.TWO_CORES`), by its arithmetic."""
    train_images, test_images = 50_000 - 10 * VAL_PER_CLASS, 10_000
    student, teacher = "student_small", "teacher"
    rate = estimate_seconds
    out = {}
    if "engines" in parts:
        # both models tested on 10,000 images by 5 engines; 4 compiled models, 3 batch shapes each; interleaved
        # rounds of 1 + calls (batch 256: 2 calls, batch 1: 50) per model (one teacher call ~0.2 s at batch 256),
        # the pruned teacher counted as one more teacher
        seconds = rate(teacher, infer=5 * test_images) + rate(student, infer=6 * test_images) + 12 * COMPILE_SECONDS \
            + args.repeats * 3 * 6 * rate(teacher, infer=256 + 256 / 4) + args.repeats * 51 * 12 * 0.002
        out["engines"] = seconds
    if "pruning" in parts:
        # a pruned network trains faster in proportion to its FLOPs; the teacher's logits: the shared views, the
        # scans (24 evaluations of 1,000 images, 12 re-estimations on 2,000) and the pruned teacher's tests
        n, cut = len(seeds), {m: _flops_left(m, args.prune_amount) for m in (student, teacher)}
        student_images = train_images * (2 * n * args.epochs + 2 * n * args.scratch_epochs)
        seconds = rate(student, train=cut[student] * student_images) \
            + rate(teacher, train=cut[teacher] * train_images * args.epochs) \
            + rate(teacher, infer=train_images * SCRATCH_VIEWS
                   + 24 * 1000 + 12 * 2000 + 2 * test_images)
        out["pruning"] = seconds
    if "qat" in parts:
        n = len(seeds)
        seconds = QAT_SLOWDOWN * rate(student, train=2 * n * args.qat_epochs * train_images) \
            + rate(teacher, infer=train_images * math.ceil(args.qat_epochs)) \
            + 3 * n * (test_images + 2000) / QUANTIZED_EAGER_PER_S
        out["qat"] = seconds
    if "limited_data" in parts:
        out["limited_data"] = limited_data_budget(seeds).estimate()["minutes"] * 60
    if "lowrank" in parts:
        # a factorized network keeps about 0.6 of the FLOPs (ENERGIES); 2 arms per energy and seed; one cached view
        runs = 2 * len(ENERGIES) * len(seeds) * args.epochs * train_images * 0.6
        seconds = rate(student, train=runs) + rate(teacher, train=runs) + rate(teacher, infer=train_images) \
            + rate(teacher, infer=(1 + len(ENERGIES) * (1 + 2 * len(seeds))) * test_images)
        out["lowrank"] = seconds
    if "mobile" in parts:
        # per seed a pruned float and a pruned QAT fine-tuning, four int8 conversions and tests
        cut = _flops_left(student, args.prune_amount)
        out["mobile"] = rate(student, train=len(seeds) * (1 + QAT_SLOWDOWN) * cut * args.epochs * train_images) \
            + 4 * len(seeds) * (test_images + 2000) / QUANTIZED_EAGER_PER_S
    if "qat_ablation" in parts:
        epochs = sum(v["epochs"] * (QAT_SLOWDOWN if v["qat"] else 1) for v in QAT_VARIANTS.values())
        out["qat_ablation"] = rate(student, train=len(seeds) * epochs * train_images) \
            + rate(teacher, infer=2 * train_images) + 7 * len(seeds) * (test_images + 2000) / QUANTIZED_EAGER_PER_S
    if "compression_speed" in parts:
        # 12 compiled models; per round, 30 deployments at batch 256 and 14 (the CSR ones slow) at batch 64
        rounds = args.repeats * 3 * (6 * rate(teacher, infer=256) + 20 * rate(teacher, infer=64))
        seconds = 12 * COMPILE_SECONDS + rounds \
            + len(SPARSE_AMOUNTS) * rate(teacher, infer=2 * test_images)
        out["compression_speed"] = seconds
    return {part: round(seconds / 60, 1) for part, seconds in out.items()}


def _range(spread: dict, unit: str, digits: int) -> str:
    return f"{spread['median']:,.{digits}f} {unit} [{spread['min']:,.{digits}f}–{spread['max']:,.{digits}f}]"


def markdown(payload: dict) -> str:
    flags = payload["cpu_int8_flags"]
    shown = ", ".join(f"{f} {'yes' if flags[f] else 'no'}" for f in ("avx512f", "avx512_vnni", "avx_vnni", "amx_int8"))
    lines = [f"CPU: {flags['cpu']} ({shown}; torch sees {flags['torch_cpu_capability']}, {flags['torch_threads']} "
             "threads). An int8 speed-up depends on these instructions.", "",
             "| model | engine | test acc % | agrees with fp32 % | stored KB | latency, batch 1 (median [min–max]) | "
             "throughput, batch 256 (median [min–max]) |", "|---|---|---|---|---|---|---|"]
    timed = payload["timings"]
    for model, rows in payload["quality"].items():
        for engine, q in rows.items():
            key = f"{model}, {engine}"
            lines.append(f"| {model} | {engine} | {100 * q['test_acc']:.2f} | {100 * q['agreement']:.2f} | "
                         f"{q['stored_kb']:,.0f} | {_range(timed['batch_1'][key]['ms'], 'ms', 3)} | "
                         f"{_range(timed['batch_256'][key]['images_per_s'], 'img/s', 0)} |")
    r = payload["ratios"]
    lines += ["", "| model | engine | int8 / fp32 throughput, batch 256 | fp32 / int8 latency, batch 1 |",
              "|---|---|---|---|"]
    for model, families in r["int8_vs_fp32"].items():
        lines += [f"| {model} | {family} | {v['throughput_x']:.2f}x | {v['latency_speedup_x']:.2f}x |"
                  for family, v in families.items()]
    met = r["int8_goal_met"]
    lines += ["", f"Goal int8 >= {INT8_GOAL}x fp32 throughput on the same engine: "
              + "; ".join(f"{m}: " + ", ".join(f"{fam} {'met' if ok else 'not met'}" for fam, ok in fams.items())
                          for m, fams in met.items()) + ".",
              f"Goal student's fastest deployment >= {STUDENT_GOAL:.0f}x the teacher's eager fp32 throughput: "
              f"{r['student_fastest_vs_teacher_eager_x']:.1f}x ({r['student_fastest_engine']}), "
              f"{'met' if r['student_goal_met'] else 'not met'}."]
    if "pruning" in payload:
        lines += ["", *_pruning_markdown(payload["pruning"])]
    if "qat" in payload:
        lines += ["", *_qat_markdown(payload["qat"])]
    if "limited_data" in payload:
        lines += ["", *_limited_markdown(payload["limited_data"])]
    if "lowrank" in payload:
        lines += ["", *lowrank_markdown(payload["lowrank"])]
    if "compression_speed" in payload:
        lines += ["", *speed_markdown(payload["compression_speed"])]
    if "mobile" in payload:
        lines += ["", *mobile_markdown(payload["mobile"])]
    if "qat_ablation" in payload:
        lines += ["", *qat_ablation_markdown(payload["qat_ablation"])]
    if "decision_matrix" in payload:
        lines += ["", "Decision matrix (Pareto-optimal: no other row is at least as accurate and as fast, and better "
                  "in one):", "",
                  "| strategy | engine | test acc % | stored KB | latency ms, batch 1 | img/s, batch 256 | Pareto |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['strategy']} | {r['engine']} | {100 * r['test_acc']:.2f} | {r['stored_kb']:,.0f} | "
                  f"{r['latency_ms']:.3f} | {r['images_per_s']:,.0f} | {'yes' if r['pareto'] else ''} |"
                  for r in payload["decision_matrix"]]
    return "\n".join(lines) + "\n"


def _pruning_markdown(p: dict) -> list[str]:
    lines = [f"Pruning: {p['amount']:.0%} of every stage's inner channels; fine-tuned {p['epochs']:g} epochs, "
             f"scratch controls {p['scratch_epochs']:g} epochs, seeds {p['seeds']}.", "",
             "| model | arm | params | MFLOPs | test acc % (per seed) |", "|---|---|---|---|---|"]
    for model, arms in p["arms"].items():
        lines += [f"| {model} | {arm} | {a['params']:,} | {a['mflops_per_image']} | "
                  + ", ".join(f"{100 * v:.2f}" for v in a["test_acc"]) + " |" for arm, a in arms.items()]
    lines += ["", "| model | stage | fraction removed | val acc %, BN re-estimated | val acc %, stale BN |",
              "|---|---|---|---|---|"]
    for model, scans in p["scans"].items():
        for fresh, stale in zip(scans["bn_reestimated"], scans["stale_bn"]):
            lines.append(f"| {model} | {fresh['stage']} | {fresh['fraction']:.0%} | {100 * fresh['accuracy']:.2f} | "
                         f"{100 * stale['accuracy']:.2f} |")
    return lines


def _qat_markdown(q: dict) -> list[str]:
    s = q["settings"]
    lines = [f"Quantization, {s['weight_bits']}-bit weights and 8-bit activations (int8 kernels: 4-bit accuracy, not "
             f"4-bit speed); fine-tuning {s['images_seen']:,} images per run, seeds {s['seeds']}, (T, alpha) = "
             f"({s['distillation']['T']:g}, {s['distillation']['alpha']:g}). Float student: {100 * q['float']:.2f}%.",
             "", "| student | test acc % (per seed) |", "|---|---|"]
    lines += [f"| {arm} | " + ", ".join(f"{100 * v:.2f}" for v in a["test_acc"]) + " |" for arm, a in q["arms"].items()]
    lines += ["", "| paired difference | mean, interval (Holm-corrected) |", "|---|---|"]
    lines += [f"| {pair} | {describe_gain(gain)} |" for pair, gain in q["gains"].items()]
    return lines


def _limited_markdown(r: dict) -> list[str]:
    s = r["settings"]
    lines = [f"Limited data: classes {', '.join(s['target_classes'])} with {s['labelled_images']} labels "
             f"({s['fraction']:.0%}), {s['unlabelled_images']:,} unlabelled; {s['images_seen_per_run']:,} images seen "
             f"per run; seeds {s['seeds']}; teacher `{s['teacher']}` trained on the same labels (test accuracy "
             + ", ".join(f"{100 * t['test_acc']:.2f}%" for t in r["teachers"]) + ").", "",
             "| arm | training set | pretrained on classes 0-4 | test acc % (mean ± std) |", "|---|---|---|---|"]
    lines += [f"| {name} | {a['training_set']} | {'yes' if a['pretrained'] else 'no'} | "
              f"{100 * a['test_acc']['mean']:.2f} ± {100 * a['test_acc']['std']:.2f} |"
              for name, a in r["arms"].items()]
    lines += ["", "| paired difference | mean, interval (Holm-corrected) |", "|---|---|"]
    lines += [f"| {pair} | {describe_gain(gain)} |" for pair, gain in r["gains"].items()]
    return lines + ["", r["verdict"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"tiny subset, few repeats (also set by {QUICK_ENV}=1)")
    parser.add_argument("--all", action="store_true", help="every part: engines, --prune, --qat, --limited-data, "
                        "--lowrank, "
                        "--compression-speed, --mobile, --qat-ablation")
    parser.add_argument("--repeats", type=int, default=11, help="interleaved timing rounds (at least 7; default 11)")
    parser.add_argument("--prune", action="store_true", help="also the pruning rows (trains)")
    parser.add_argument("--prune-amount", type=float, default=0.5, help="fraction of each stage's channels cut")
    parser.add_argument("--epochs", type=float, default=1.0, help="fine-tuning epochs of the pruned models")
    parser.add_argument("--scratch-epochs", type=float, default=None,
                        help="epochs of the --prune scratch controls (default: the parent's 20 + --epochs)")
    parser.add_argument("--qat", action="store_true", help="also quantization-aware fine-tuning (trains)")
    parser.add_argument("--qat-epochs", type=float, default=0.5, help="fine-tuning epochs of --qat, every arm")
    parser.add_argument("--qat-weight-bits", type=int, default=4, choices=(4, 8), help="weight bits of --qat")
    parser.add_argument("--limited-data", action="store_true", help="also the limited-data rule (trains)")
    parser.add_argument("--lowrank", action="store_true", help="also low-rank factorization, fine-tuned (trains)")
    parser.add_argument("--compression-speed", action="store_true",
                        help="also the timings of low-rank and zeroed (dense and CSR) models, on a quiet machine")
    parser.add_argument("--mobile", action="store_true", help="also prune, int8, then distill to recover (trains)")
    parser.add_argument("--qat-ablation", action="store_true", help="also QAT's recipe, one change at a time (trains)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the trained rows")
    parser.add_argument("--fresh", nargs="*", metavar="PART", default=None,
                        help="measure again what benchmarks/kept/deploy/ keeps: the parts named (engines, pruning, "
                        "qat, limited_data, lowrank, compression_speed, mobile, qat_ablation), or all of them")
    args = parser.parse_args()
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    quick = quick_mode()
    started = time.perf_counter()
    parts = ["engines"] + [part for part, asked in (("pruning", args.prune), ("qat", args.qat),
                                                    ("limited_data", args.limited_data), ("lowrank", args.lowrank),
                                                    ("compression_speed", args.compression_speed),
                                                    ("mobile", args.mobile), ("qat_ablation", args.qat_ablation))
                           if asked or args.all]
    seeds = args.seeds[:2] if quick else args.seeds
    args.scratch_epochs = 1.0 if quick else args.scratch_epochs or PARENT_EPOCHS + args.epochs
    scratch_epochs = args.scratch_epochs
    minutes = estimates(args, parts, seeds)
    print("estimated minutes on 2 quiet cores: " + ", ".join(f"{p} {m:g}" for p, m in minutes.items())
          + f"; {sum(minutes.values()):.0f} in all (kept parts are read back)", flush=True)
    name = "deploy" + ("_quick" if quick else "")
    # finished work is committed with the results, so that a long --all can span sessions and machines
    runs = Path("runs") / name if quick else Path(__file__).parent / "kept" / name

    def fresh(part: str) -> bool:
        return args.fresh is not None and (not args.fresh or part in args.fresh)

    path = RESULTS / f"{name}.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    # parts finished by an earlier call are kept; results written before parts were recorded are not read
    payload = {"parts": previous.get("parts", {}), "part_seconds": previous.get("part_seconds", {}),
               **{k: previous[k] for part in previous.get("parts", {}) for k in PART_KEYS[part]}}
    distillation = distillation_settings()
    batch_size = 100 if quick else 512
    data = load_cifar10(verbose=False)
    full = data
    if quick:
        data = data.subset(train_per_class=30, test_per_class=20)
    floats = {"teacher": load_teacher(device="cpu"), "student": load_pretrained("student_small_distilled", "cpu")}
    epochs = min(args.epochs, 1.0) if quick else args.epochs
    qat_epochs = min(args.qat_epochs, 1.0) if quick else args.qat_epochs
    make = {
        "engines": ({"repeats": args.repeats, "prune_amount": args.prune_amount},
                    lambda: engines_part(floats, data, args.repeats, quick, args.prune_amount)),
        "pruning": ({"amount": args.prune_amount, "epochs": epochs, "scratch_epochs": scratch_epochs,
                     "seeds": seeds, "distillation": distillation},
                    lambda: pruning(floats["teacher"], floats["student"], data, amount=args.prune_amount,
                                    epochs=epochs, scratch_epochs=scratch_epochs, seeds=seeds,
                                    distillation=distillation, batch_size=batch_size, quick=quick,
                                    kept=Kept(runs / "pruning", fresh("pruning")))),
        "qat": ({"epochs": qat_epochs, "seeds": seeds, "weight_bits": args.qat_weight_bits,
                 "distillation": distillation},
                lambda: qat(floats["teacher"], floats["student"], data, epochs=qat_epochs, seeds=seeds,
                            weight_bits=args.qat_weight_bits, distillation=distillation, batch_size=batch_size,
                            quick=quick, kept=Kept(runs / "qat", fresh("qat")))),
        # the limited-data rule shrinks CIFAR-10 itself in quick mode (labkit.limited_data.limited_data_budget)
        "lowrank": ({"energies": ENERGIES, "epochs": epochs, "seeds": seeds, "distillation": distillation},
                    lambda: lowrank(floats, data, energies=ENERGIES, epochs=epochs, seeds=seeds,
                                    distillation=distillation, batch_size=batch_size, quick=quick,
                                    kept=Kept(runs / "lowrank", fresh("lowrank")))),
        "compression_speed": ({"energies": ENERGIES, "amounts": SPARSE_AMOUNTS, "prune_amount": args.prune_amount,
                               "repeats": args.repeats},
                              lambda: compression_speed(floats, data, energies=ENERGIES, amounts=SPARSE_AMOUNTS,
                                                        prune_amount=args.prune_amount, repeats=args.repeats,
                                                        quick=quick)),
        "mobile": ({"amount": args.prune_amount, "epochs": epochs, "seeds": seeds, "distillation": distillation},
                   lambda: mobile(floats["teacher"], floats["student"], data, amount=args.prune_amount, epochs=epochs,
                                  seeds=seeds, distillation=distillation, batch_size=batch_size, quick=quick,
                                  kept=Kept(runs / "mobile", fresh("mobile")))),
        "qat_ablation": ({"seeds": seeds, "distillation": distillation},
                         lambda: qat_ablation(floats["teacher"], floats["student"], data, seeds=seeds,
                                              distillation=distillation, batch_size=batch_size, quick=quick,
                                              kept=Kept(runs / "qat_ablation", fresh("qat_ablation")))),
        "limited_data": ({"seeds": seeds, "distillation": distillation},
                         lambda: limited_data(full, seeds, distillation, runs / "limited_data")),
    }
    for part in parts:
        settings, run = make[part]
        print(f"{part}: about {minutes[part]:g} min", flush=True)
        part_started = time.perf_counter()
        kept, what = Kept(runs / "parts", fresh(part)), {"part": part, "quick": quick, **settings}
        read_back = kept.has(what)
        result = kept.get(what, run)
        payload.update(result if part == "engines" else {part: result})
        payload["parts"][part] = settings
        # a part read back reports the time its kept file recorded; parts made of runs kept over several
        # sessions recorded none, and an old figure from another machine must not stand in for it
        seconds = kept.seconds(what) if read_back else round(time.perf_counter() - part_started, 1)
        if seconds is None:
            payload["part_seconds"].pop(part, None)
        else:
            payload["part_seconds"][part] = seconds
        write_json(name, payload)  # every finished part is in the results at once
    transfer = RESULTS / "transfer_set.json"
    payload["decision_matrix"] = pareto_front(decision_rows(payload, json.loads(transfer.read_text())
                                                            if transfer.is_file() else None))
    payload.update(command="python benchmarks/deploy.py" + (" --quick" if quick else "")
                   + (" --all" if args.all else ""), distillation=distillation, estimated_minutes=minutes,
                   wall_seconds=round(time.perf_counter() - started, 1))
    about = f"{payload['wall_seconds'] / 60:.1f} min (parts read back from {runs} included), {args.repeats} rounds"
    write_report(name, payload, "Deployment: fp32 and int8 on every CPU engine", about, markdown(payload), quick)


if __name__ == "__main__":
    main()
