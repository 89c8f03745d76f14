"""Summaries of results over seeds (introduced in 05_distill_student)."""

from __future__ import annotations

import statistics
from typing import Sequence


def summarize(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min, max and the values themselves."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("nothing to summarize")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values), "n": len(values),
            "values": values}
