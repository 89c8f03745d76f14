"""Accuracy, per-class accuracy and calibration of the shipped weights on the CIFAR-10 test split.

    python benchmarks/teacher_report.py

The numbers in labkit/weights/README.md (the model card) are the ones this prints. Measured on whatever
CIFAR-10 copy load_cifar10 finds (here: the JPEG copy; the original pickled files can differ slightly).
"""

from __future__ import annotations

import torch

from _common import print_table, write_json
from labkit import models
from labkit.data import load_cifar10
from labkit.evaluate import accuracy, expected_calibration_error, per_class_accuracy, predict_logits
from labkit.pretrained import SHIPPED, load_pretrained


def report(name: str, data) -> dict:
    model = load_pretrained(name)
    row = {"model": name, "params": models.count_parameters(model),
           "fwd_gflop_per_img": round(models.forward_flops(model) / 1e9, 4)}
    for tta in ("none", "flip", "flip_translate"):
        logits = predict_logits(model, data.test_images, tta=tta)
        row[f"acc_{tta}"] = round(accuracy(logits, data.test_labels), 4)
        if tta == "none":
            row["ece"] = round(expected_calibration_error(logits, data.test_labels), 4)
            per_class = per_class_accuracy(logits, data.test_labels)
    row["per_class"] = dict(zip(data.classes, [round(v, 4) for v in per_class.tolist()]))
    return row


def main() -> None:
    torch.manual_seed(0)
    data = load_cifar10(verbose=False)
    rows = [report(name, data) for name in SHIPPED]
    print(f"data: {data.source} ({len(data.test_labels)} test images)")
    print_table([{k: v for k, v in r.items() if k != "per_class"} for r in rows])
    for r in rows:
        print(f"{r['model']} per-class accuracy (no TTA): " + ", ".join(f"{c} {a:.3f}" for c, a in r["per_class"].items()))
    write_json("teacher_report", {"data": data.source, "test_images": len(data.test_labels), "rows": rows})


if __name__ == "__main__":
    main()
