"""Summaries of results over seeds (introduced in 05_distill_student)."""

from __future__ import annotations

import math
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


def paired_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict:
    """The paired difference ``a - b`` (one pair per seed): mean, Student-t interval and whether it excludes 0.

    Introduced in 05_distill_student. Pairs share everything but the compared choice (same seed: same initial
    weights and batches), so their differences cancel most of the seed-to-seed spread. ``shown`` is False when the
    interval includes 0: the difference is then not shown by these seeds, whatever its mean.
    """
    from scipy import stats

    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need two equally long lists of at least 2 paired values, got {len(a)} and {len(b)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    half = stats.t.ppf(0.5 + confidence / 2, len(diffs) - 1) * sd / math.sqrt(len(diffs))
    low, high = mean - half, mean + half
    return {"mean": mean, "low": low, "high": high, "confidence": confidence, "n": len(diffs), "differences": diffs,
            "shown": bool(low > 0 or high < 0)}


def paired_gains(arms: dict[str, Sequence[float]], pairs: Sequence[tuple[str, str]],
                 confidence: float = 0.95) -> dict[str, dict]:
    """``"a - b"`` for each ``(a, b)`` in ``pairs``: the paired difference of the arms' values per seed (in the same
    seed order), with its interval (:func:`paired_interval`).

    The one reporting rule of the course's experiments (05_distill_student): a gain is claimed only where its
    interval excludes 0 (``shown``); otherwise it is "not shown", whatever its mean.
    """
    missing = sorted({name for pair in pairs for name in pair} - set(arms))
    if missing:
        raise ValueError(f"no arm named {missing}; the arms are {list(arms)}")
    return {f"{a} - {b}": paired_interval(arms[a], arms[b], confidence) for a, b in pairs}


def describe_gain(gain: dict, unit: float = 100.0, suffix: str = " points") -> str:
    """A paired difference in words: ``+1.23 points, 95% interval [+0.40, +2.06]: shown`` (or ``not shown``)."""
    return (f"{unit * gain['mean']:+.2f}{suffix}, {gain['confidence']:.0%} interval [{unit * gain['low']:+.2f}, "
            f"{unit * gain['high']:+.2f}]: {'shown' if gain['shown'] else 'not shown'}")
