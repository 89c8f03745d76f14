"""The decision matrix from measurements: one row per way of shipping a CIFAR-10 model, and the rows no other row
beats on both accuracy and throughput (introduced in 09_compress_and_deploy).

:func:`decision_rows` reads the results of ``benchmarks/deploy.py`` (and the transfer-set benchmark's) into rows
of ``strategy``, ``test_acc``, ``stored_kb``, ``latency_ms`` (batch 1), ``images_per_s`` (batch 256) and
``measured_by`` (where each number comes from); :func:`pareto_front` marks the Pareto-optimal ones.
"""

from __future__ import annotations

from typing import Sequence

FP32_ENGINES = ("fp32 eager", "fp32 compiled", "ORT fp32")
INT8_ENGINES = ("int8 compiled", "ORT int8")


def _quickest(timings: dict, label: str, engines: Sequence[str], speed: str) -> str:
    """The engine of ``engines`` with the highest throughput, or the lowest latency."""
    if speed == "latency_ms":
        return min(engines, key=lambda e: timings["batch_1"][f"{label}, {e}"]["ms"]["median"])
    return max(engines, key=lambda e: timings["batch_256"][f"{label}, {e}"]["images_per_s"]["median"])


def _fastest(deploy: dict, model: str, engines: Sequence[str], speed: str) -> str:
    return _quickest(deploy["timings"], model, engines, speed)


def _speed(deploy: dict, model: str, engine: str) -> dict:
    """Stored size, batch-1 latency and batch-256 throughput of one measured deployment."""
    key = f"{model}, {engine}"
    return {"stored_kb": deploy["quality"][model][engine]["stored_kb"],
            "latency_ms": deploy["timings"]["batch_1"][key]["ms"]["median"],
            "images_per_s": deploy["timings"]["batch_256"][key]["images_per_s"]["median"]}


def _fastest_compressed(deploy: dict, label: str, engines: Sequence[str], speed: str) -> str:
    return _quickest(deploy["compression_speed"]["timings"]["lowrank"], label, engines, speed)


def _compressed_speed(deploy: dict, label: str, engine: str) -> dict:
    """Stored size and speed of one deployment that the compression_speed part timed (``label``: "<model>,
    <variant>")."""
    part = deploy["compression_speed"]
    timed, key = part["timings"]["lowrank"], f"{label}, {engine}"
    return {"stored_kb": part["stored_kb"][key], "latency_ms": timed["batch_1"][key]["ms"]["median"],
            "images_per_s": timed["batch_256"][key]["images_per_s"]["median"]}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def decision_rows(deploy: dict, transfer_set: dict | None = None, transfer_fraction: str = "0.02",
                  speed: str = "images_per_s") -> list[dict]:
    """The decision matrix's rows from ``deploy`` (the JSON of ``benchmarks/deploy.py``) and ``transfer_set`` (the
    JSON of ``benchmarks/transfer_set.py``), for the parts that were run.

    fp32 and int8 rows are the fastest engine of each kind (named in ``engine``): the highest throughput at batch
    256, or with ``speed="latency_ms"`` the lowest latency at batch 1 (:func:`pareto_front`'s two views).
    Rows whose network is one already timed take its size and speed: the scratch and transfer-set students are ``student_small`` in fp32 like the
    distilled one; a QAT student runs the int8 student's kernels (4-bit weights are stored and run as int8).
    Pruned rows take the timings of their own, narrower networks (``"<model> pruned, fp32 eager"``). Accuracies
    over seeds are means; ``seeds`` says how many.
    """
    if speed not in ("images_per_s", "latency_ms"):
        raise ValueError(f"speed is 'images_per_s' (batch-256 throughput) or 'latency_ms' (batch 1), got {speed!r}")
    rows = []

    def add(strategy: str, test_acc: float, speed: dict, engine: str, measured_by: str, seeds: int = 1) -> None:
        rows.append({"strategy": strategy, "test_acc": test_acc, **speed, "engine": engine, "seeds": seeds,
                     "measured_by": measured_by})

    quality = deploy["quality"]
    for model, name in (("teacher", "teacher"), ("student", "student distilled")):
        fp32, int8 = _fastest(deploy, model, FP32_ENGINES, speed), _fastest(deploy, model, INT8_ENGINES, speed)
        add(f"{name}, fp32", quality[model][fp32]["test_acc"], _speed(deploy, model, fp32), fp32, "engines")
        add(f"{name}, int8", quality[model][int8]["test_acc"], _speed(deploy, model, int8), int8, "engines")
    student_fp32 = _fastest(deploy, "student", FP32_ENGINES, speed)
    if "scratch_student" in deploy:
        add("student scratch, fp32", deploy["scratch_student"]["test_acc"], _speed(deploy, "student", student_fp32),
            student_fp32, "engines (student_small_scratch, timed as the distilled student)")
    if "qat" in deploy:
        q = deploy["qat"]
        int8 = _fastest(deploy, "student", INT8_ENGINES, speed)
        bits = q["settings"]["weight_bits"]
        for arm, label in (("post-training", "post-training"), ("QAT KD", "QAT + KD"), ("QAT labels", "QAT, labels")):
            accs = q["arms"][arm]["test_acc"]
            add(f"student distilled, {label} ({bits}-bit weights)", _mean(accs), _speed(deploy, "student", int8), int8,
                "qat (timed as the int8 student)", len(accs))
    if "pruning" in deploy:
        p = deploy["pruning"]
        for model, arm, label in (("teacher", "pruned + KD", "teacher pruned + KD"),
                                  ("student", "pruned + KD", "student pruned + KD"),
                                  ("student", "narrow, scratch KD", "narrow student trained directly, KD")):
            if arm in p["arms"].get(model, {}):
                accs = p["arms"][model][arm]["test_acc"]
                key = f"{model} pruned, fp32 eager"
                timed = {"latency_ms": deploy["timings"]["batch_1"][key]["ms"]["median"],
                         "images_per_s": deploy["timings"]["batch_256"][key]["images_per_s"]["median"]}
                add(label, _mean(accs), {"stored_kb": p["arms"][model][arm]["stored_kb"], **timed}, "fp32 eager",
                    "pruning (timed with the engines)", len(accs))
    if "lowrank" in deploy and "compression_speed" in deploy:
        for model, name in (("teacher", "teacher"), ("student", "student distilled")):
            for energy in deploy["lowrank"]["energies"]:
                row = deploy["lowrank"]["models"][model][f"energy {energy:g}"]
                label = f"{model}, energy {energy:g}"
                kinds = [("fp32", FP32_ENGINES, row["KD"])]
                if "KD, int8" in row:  # int8 accuracy is measured for the students only
                    kinds.append(("int8", INT8_ENGINES, row["KD, int8"]))
                for kind, engines, accs in kinds:
                    engine = _fastest_compressed(deploy, label, engines, speed)
                    add(f"{name}, low-rank ({energy:.0%} energy) + KD, {kind}", _mean(accs),
                        _compressed_speed(deploy, label, engine), engine, "lowrank (timed by compression_speed)",
                        len(accs))
    if "mobile" in deploy and "compression_speed" in deploy:
        m, label = deploy["mobile"], f"student, pruned {deploy['mobile']['amount']:.0%}"
        engine = _fastest_compressed(deploy, label, INT8_ENGINES, speed)
        for arm in ("pruned, int8 QAT with KD", "pruned, KD, then int8", "pruned, int8, no recovery"):
            accs = m["arms"][arm]["test_acc"]
            add(f"student distilled, {arm}", _mean(accs), _compressed_speed(deploy, label, engine), engine,
                "mobile (timed by compression_speed)", len(accs))
    if transfer_set is not None and transfer_fraction in transfer_set.get("fractions", {}):
        arm = transfer_set["fractions"][transfer_fraction]["arms"]["distilled, transfer set"]
        add(f"transfer-set student ({float(transfer_fraction):.0%} labels), fp32", arm["test_acc"]["mean"],
            _speed(deploy, "student", student_fp32), student_fp32,
            "transfer_set (timed as the distilled student)", arm["test_acc"]["n"])
    return rows


def pareto_front(rows: Sequence[dict], accuracy: str = "test_acc", speed: str = "images_per_s") -> list[dict]:
    """Copies of ``rows`` with ``pareto`` True where no other row is at least as accurate and at least as fast and
    better in one of the two: the strategies worth considering; every other one is beaten outright. ``speed`` is
    throughput (``"images_per_s"``, higher is faster) or latency (``"latency_ms"``, lower is faster: the batch-1
    view of a phone or a request server)."""
    sign = -1 if speed == "latency_ms" else 1

    def beaten(r: dict) -> bool:
        return any(o[accuracy] >= r[accuracy] and sign * o[speed] >= sign * r[speed]
                   and (o[accuracy] > r[accuracy] or sign * o[speed] > sign * r[speed]) for o in rows)
    return [{**r, "pareto": not beaten(r)} for r in rows]
