"""Two parts of benchmarks/deploy.py for notebook 09: the mobile rule as stated (prune, quantize, then distill to
recover) and an ablation of quantization-aware training, to find why it lost to post-training quantization."""

from __future__ import annotations

import copy

from torch import nn

from _deploy_kit import VAL_PER_CLASS, Kept, accuracy_on_test, calibration_set, fine_tune
from labkit.compress import convert_qat, prepare_qat, prune_channels, quantize_pt2e, reestimate_batchnorm
from labkit.data import CifarData
from labkit.stats import describe_gain, paired_gains
from labkit.train import TrainConfig

MOBILE_GAINS = (("pruned, KD, then int8", "pruned, int8, no recovery"),
                ("pruned, int8 QAT with KD", "pruned, int8, no recovery"),
                ("pruned, int8 QAT with KD", "pruned, KD, then int8"),
                ("int8, unpruned", "pruned, int8 QAT with KD"))
# Each variant changes one thing of the qat part's recipe (4-bit weights, a tenth of the learning rate, half an
# epoch, the teacher's soft targets); "float KD, then post-training" fine-tunes without fake quantization, to
# separate what the fine-tuning itself does from what quantization-aware training does. Until labkit.train's
# optimizer found the BatchNorm layers inside an exported QAT graph (QatModel.batchnorm_parameters), their biases
# learned 64 times slower there than in float fine-tuning: the last variant reproduces that.
QAT_VARIANTS = {
    "QAT KD (the qat part's recipe)": {"qat": True, "lr_scale": 0.1, "epochs": 0.5, "weight_bits": 4},
    "float KD, then post-training": {"qat": False, "lr_scale": 0.1, "epochs": 0.5, "weight_bits": 4},
    "QAT KD, lr / 100": {"qat": True, "lr_scale": 0.01, "epochs": 0.5, "weight_bits": 4},
    "QAT KD, 2 epochs": {"qat": True, "lr_scale": 0.1, "epochs": 2.0, "weight_bits": 4},
    "QAT KD, 8-bit weights": {"qat": True, "lr_scale": 0.1, "epochs": 0.5, "weight_bits": 8},
    "QAT KD, BatchNorm biases at the base rate (as before the fix)": {"qat": True, "lr_scale": 0.1, "epochs": 0.5,
                                                                      "weight_bits": 4, "bias_scaler": 1.0},
}


def mobile(teacher: nn.Module, student: nn.Module, data: CifarData, *, amount: float, epochs: float,
           seeds: list[int], distillation: dict, batch_size: int, quick: bool, kept: Kept) -> dict:
    """The rule "prune and quantize first, then distill to recover", on the distilled student with ``amount`` of
    every stage's channels removed and BatchNorm re-estimated, int8 (8-bit weights, PT2E), per seed (which draws
    the calibration images and the fine-tuning's batches): no recovery; distillation fine-tuning in float, then
    int8; quantization-aware fine-tuning with the teacher (the same steps); and the unpruned student in int8.
    Accuracy of the converted models on the whole test split; paired, Holm-corrected differences. Their speed is
    the compression_speed part's (the pruned network's engines)."""
    train_part = data.with_validation(5 if quick else VAL_PER_CLASS)
    lr = TrainConfig().lr / 10
    T, alpha = distillation["T"], distillation["alpha"]
    pruned = reestimate_batchnorm(prune_channels(student, amount), calibration_set(train_part, quick))
    test = {arm: [] for arm in ("int8, unpruned", "pruned, int8, no recovery", "pruned, KD, then int8",
                                "pruned, int8 QAT with KD")}
    for seed in seeds:
        calibration = calibration_set(train_part, quick, seed=seed)
        what = {"part": "mobile", "amount": amount, "epochs": epochs, "T": T, "alpha": alpha, "seed": seed,
                "quick": quick}

        def kd_then_int8() -> float:
            tuned = fine_tune(copy.deepcopy(pruned), teacher, train_part, T=T, alpha=alpha, epochs=epochs, lr=lr,
                              seed=seed, batch_size=batch_size)
            return accuracy_on_test(quantize_pt2e(tuned, calibration), data)

        def qat_kd() -> float:
            prepared = fine_tune(prepare_qat(pruned, calibration[:64]), teacher, train_part, T=T, alpha=alpha,
                                 epochs=epochs, lr=lr, seed=seed, batch_size=batch_size)
            return accuracy_on_test(convert_qat(prepared), data)

        runs = {"int8, unpruned": lambda: accuracy_on_test(quantize_pt2e(student, calibration), data),
                "pruned, int8, no recovery": lambda: accuracy_on_test(quantize_pt2e(pruned, calibration), data),
                "pruned, KD, then int8": kd_then_int8, "pruned, int8 QAT with KD": qat_kd}
        for arm, run in runs.items():
            test[arm].append(kept.get({**what, "arm": arm}, run))
    return {"amount": amount, "epochs": epochs, "seeds": seeds, "lr": lr, "distillation": distillation,
            "float_pruned_no_recovery": accuracy_on_test(pruned, data),
            "arms": {arm: {"test_acc": values} for arm, values in test.items()},
            "gains": paired_gains(test, MOBILE_GAINS) if len(seeds) > 1 else {}}


def qat_ablation(teacher: nn.Module, student: nn.Module, data: CifarData, *, seeds: list[int], distillation: dict,
                 batch_size: int, quick: bool, kept: Kept) -> dict:
    """:data:`QAT_VARIANTS` of the distilled student's quantization-aware fine-tuning with the teacher, each
    against post-training quantization with the same weight bits and the same seed's calibration draw; paired,
    Holm-corrected over all the variants (they share the seeds)."""
    train_part = data.with_validation(5 if quick else VAL_PER_CLASS)
    T, alpha = distillation["T"], distillation["alpha"]
    test = {f"post-training, {bits}-bit weights": [] for bits in (4, 8)} | {name: [] for name in QAT_VARIANTS}
    for seed in seeds:
        calibration = calibration_set(train_part, quick, seed=seed)
        what = {"part": "qat_ablation", "T": T, "alpha": alpha, "seed": seed, "quick": quick}
        for bits in (4, 8):
            test[f"post-training, {bits}-bit weights"].append(kept.get(
                {**what, "arm": "post-training", "weight_bits": bits},
                lambda bits=bits: accuracy_on_test(quantize_pt2e(student, calibration, bits), data)))
        for name, v in QAT_VARIANTS.items():
            def run(v=v) -> float:
                lr = TrainConfig().lr * v["lr_scale"]
                extra = {"bias_scaler": v["bias_scaler"]} if "bias_scaler" in v else {}
                if not v["qat"]:
                    tuned = fine_tune(copy.deepcopy(student), teacher, train_part, T=T, alpha=alpha,
                                      epochs=v["epochs"], lr=lr, seed=seed, batch_size=batch_size)
                    return accuracy_on_test(quantize_pt2e(tuned, calibration, v["weight_bits"]), data)
                prepared = fine_tune(prepare_qat(student, calibration[:64], v["weight_bits"]), teacher, train_part,
                                     T=T, alpha=alpha, epochs=v["epochs"], lr=lr, seed=seed, batch_size=batch_size,
                                     **extra)
                return accuracy_on_test(convert_qat(prepared), data)
            test[name].append(kept.get({**what, "arm": name, **v}, run))
    pairs = [(name, f"post-training, {v['weight_bits']}-bit weights") for name, v in QAT_VARIANTS.items()]
    return {"seeds": seeds, "distillation": distillation, "variants": QAT_VARIANTS,
            "float": accuracy_on_test(student, data),
            "arms": {arm: {"test_acc": values} for arm, values in test.items()},
            "gains": paired_gains(test, pairs) if len(seeds) > 1 else {}}


def mobile_markdown(r: dict) -> list[str]:
    lines = [f"The mobile rule: {r['amount']:.0%} of every stage's channels removed, int8 (8-bit weights), "
             f"recovery {r['epochs']:g} epoch at lr {r['lr']:g}, seeds {r['seeds']}. Pruned float network without "
             f"recovery: {100 * r['float_pruned_no_recovery']:.2f}%.", "",
             "| arm | test acc % (per seed) |", "|---|---|"]
    lines += [f"| {arm} | " + ", ".join(f"{100 * v:.2f}" for v in a["test_acc"]) + " |" for arm, a in r["arms"].items()]
    lines += ["", "| paired difference | mean, interval (Holm-corrected) |", "|---|---|"]
    return lines + [f"| {pair} | {describe_gain(gain)} |" for pair, gain in r["gains"].items()]


def qat_ablation_markdown(r: dict) -> list[str]:
    lines = [f"Quantization-aware training, one change at a time (seeds {r['seeds']}; float student "
             f"{100 * r['float']:.2f}%).", "", "| arm | test acc % (per seed) |", "|---|---|"]
    lines += [f"| {arm} | " + ", ".join(f"{100 * v:.2f}" for v in a["test_acc"]) + " |" for arm, a in r["arms"].items()]
    lines += ["", "| paired difference | mean, interval (Holm-corrected) |", "|---|---|"]
    return lines + [f"| {pair} | {describe_gain(gain)} |" for pair, gain in r["gains"].items()]
