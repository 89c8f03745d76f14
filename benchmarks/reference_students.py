"""The shipped reference students: seed 0 of notebook 05's two main arms, stored with float16 parameters.

    python benchmarks/reference_students.py

``student_small_scratch`` is seed 0 of the headline's "labels only" arm (the best labels-only recipe, label
smoothing chosen on validation) and ``student_small_distilled`` seed 0 of its "distilled" arm (``T, alpha`` chosen
on validation), both from ``python benchmarks/kd_headline.py``, whose finished runs are kept in
benchmarks/kept/kd_headline/. This script finds those two runs there (same seed, ``T``, ``alpha`` and final
validation accuracy as benchmarks/results/kd_headline.json records), writes them to labkit/weights/ and prints the
sha256 to pin in ``labkit.pretrained.SHIPPED``; ``python benchmarks/teacher_report.py`` then measures them for the
model card. No training: it only converts what the benchmark kept.
"""

from __future__ import annotations

import json
from pathlib import Path

from _common import RESULTS
from labkit import models
from labkit.pretrained import WEIGHTS_DIR, load_weights, save_weights

KEPT = Path(__file__).parent / "kept" / "kd_headline"
ARMS = {"student_small_scratch": "labels only", "student_small_distilled": "distilled"}


def kept_run(record: dict) -> Path:
    """The kept weights whose record matches ``record`` (a run of kd_headline.json) in seed, T, alpha and val_acc."""
    fields = ("seed", "T", "alpha", "val_acc")
    matches = [p.with_suffix(".safetensors") for p in sorted(KEPT.glob("*.json"))
               if all(json.loads(p.read_text())[f] == record[f] for f in fields)]
    if len(matches) != 1:
        raise LookupError(f"{len(matches)} kept runs in {KEPT} match {({f: record[f] for f in fields})}; expected one. "
                          "Run `python benchmarks/kd_headline.py` to (re)create them.")
    return matches[0]


def main() -> None:
    headline = json.loads((RESULTS / "kd_headline.json").read_text())
    for name, arm in ARMS.items():
        record = next(r for r in headline["runs"][arm] if r["seed"] == 0)
        source = kept_run(record)
        model = load_weights(models.create(headline["settings"]["student"]), source)
        sha = save_weights(model, WEIGHTS_DIR / f"{name}.safetensors")
        print(f"{name}: {arm}, seed 0, T {record['T']:g}, alpha {record['alpha']:g}, final validation accuracy "
              f"{record['val_acc']:.2%}, from {source.name}\n    sha256 {sha}")


if __name__ == "__main__":
    main()
