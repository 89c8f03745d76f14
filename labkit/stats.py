"""Summaries of results over seeds, paired differences and the verdicts they allow (introduced in
05_distill_student)."""

from __future__ import annotations

import math
import statistics
from typing import Sequence

ALPHA = 0.05  # one false claim in twenty, for a whole family of comparisons


def _finite(values: Sequence[float], what: str) -> list[float]:
    """``values`` as floats, or a ValueError naming ``what`` when one is NaN or infinite (a failed run, usually)."""
    values = [float(v) for v in values]
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{what} holds NaN or an infinity ({bad[0]} among {values}): a run diverged or was not measured; rerun it or "
                         "leave it out of every arm (the values are paired by seed)")
    return values


def summarize(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min, max and the values themselves."""
    values = _finite(values, "the values to summarize")
    if not values:
        raise ValueError("nothing to summarize")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values), "n": len(values),
            "values": values}


def paired_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict:
    """The paired difference ``a - b`` (one pair per seed): mean, Student-t interval, two-sided p-value and whether
    the interval excludes 0.

    Introduced in 05_distill_student. Pairs share everything but the compared choice (same seed: same initial
    weights and batches), so their differences cancel most of the seed-to-seed spread. ``shown`` is False when the
    interval includes 0: the difference is then not shown by these seeds, whatever its mean.
    """
    from scipy import stats

    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need two equally long lists of at least 2 paired values, got {len(a)} and {len(b)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    diffs = [x - y for x, y in zip(_finite(a, "the first arm"), _finite(b, "the second arm"))]
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    se = sd / math.sqrt(len(diffs))
    half = stats.t.ppf(0.5 + confidence / 2, len(diffs) - 1) * se
    low, high = mean - half, mean + half
    p = 2 * stats.t.sf(abs(mean) / se, len(diffs) - 1) if se > 0 else float(mean == 0)
    return {"mean": mean, "low": float(low), "high": float(high), "confidence": confidence, "p": float(p), "n": len(diffs),
            "differences": diffs, "shown": bool(low > 0 or high < 0)}


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> list[dict]:
    """Holm's step-down correction (Holm 1979), introduced in 05_distill_student: the smallest p-value is tested
    at ``alpha / m``, the next at ``alpha / (m - 1)``, ..., and testing stops at the first that fails. For each
    p-value (in the given order): the ``level`` it is tested at and whether it is ``rejected`` (the difference shown).
    The chance of any false claim in the family stays at most ``alpha``."""
    p_values = _finite(p_values, "the p-values")
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    out: list[dict] = [{}] * len(p_values)
    going = True
    for rank, i in enumerate(order):
        level = alpha / (len(p_values) - rank)
        going = going and p_values[i] < level
        out[i] = {"level": level, "rejected": going}
    return out


def paired_gains(arms: dict[str, Sequence[float]], pairs: Sequence[tuple[str, str]],
                 primary: tuple[str, str] | None = None, alpha: float = ALPHA) -> dict[str, dict]:
    """``"a - b"`` for each ``(a, b)`` in ``pairs``: the paired difference of the arms' values per seed (in the same
    seed order), with its interval (:func:`paired_interval`), corrected for the other comparisons on the same seeds.

    The one reporting rule of the course's experiments (05_distill_student): a gain is claimed only where it is
    ``shown``; otherwise it is "not shown", whatever its mean. Several comparisons of one experiment share its seeds,
    so they are Holm-corrected (:func:`holm`): each interval is at the confidence its test used (``1 - level``).
    ``primary`` names the one comparison fixed before the runs: it is tested alone at ``1 - alpha``, and the others
    (Holm-corrected among themselves) are claimed only if it is shown.
    """
    for pair in pairs:
        if isinstance(pair, str) or len(pair) != 2:
            raise ValueError(f"the pair {pair!r} must be a tuple (a, b) of two arm names, e.g. ('kd', 'labels only')")
    for name, values in arms.items():
        _finite(values, f"the arm {name!r}")
    missing = sorted({name for pair in pairs for name in pair} - set(arms))
    if missing:
        raise ValueError(f"no arm named {missing}; the arms are {list(arms)}")
    if primary is not None and tuple(primary) not in [tuple(p) for p in pairs]:
        raise ValueError(f"the primary comparison {primary} is not among the pairs {list(pairs)}")
    pairs = [tuple(p) for p in pairs]
    family = [p for p in pairs if p != primary]
    raw = {p: paired_interval(arms[p[0]], arms[p[1]]) for p in pairs}
    tests = dict(zip(family, holm([raw[p]["p"] for p in family], alpha)))
    gate = True
    if primary is not None:
        tests[primary] = {"level": alpha, "rejected": raw[primary]["p"] < alpha}
        gate = tests[primary]["rejected"]
    out = {}
    for a, b in pairs:
        test = tests[(a, b)]
        gain = paired_interval(arms[a], arms[b], 1 - test["level"])
        correction = "primary" if (a, b) == primary else ("holm" if len(family) > 1 else "none")
        out[f"{a} - {b}"] = {**gain, "shown": bool(test["rejected"] and (gate or (a, b) == primary)),
                             "correction": correction, "comparisons": len(family), "family_alpha": alpha}
    return out


def describe_gain(gain: dict, unit: float = 100.0, suffix: str = " points") -> str:
    """A paired difference in words: ``+1.23 points, 95% interval [+0.40, +2.06]: shown`` (or ``not shown``), with
    the correction it was tested under (:func:`paired_gains`)."""
    if gain["shown"] and gain["low"] <= 0 <= gain["high"]:
        raise ValueError(f"a gain marked shown whose interval [{gain['low']:.4g}, {gain['high']:.4g}] includes 0: "
                         "take gains from paired_gains or paired_interval, which set 'shown' from the interval")
    level = f"{100 * gain['confidence']:.2f}".rstrip("0").rstrip(".")
    correction = {"holm": f" (Holm, {gain.get('comparisons')} comparisons)",
                  "primary": " (the primary comparison)"}.get(gain.get("correction", "none"), "")
    text = (f"{unit * gain['mean']:+.2f}{suffix}, {level}% interval{correction} [{unit * gain['low']:+.2f}, "
            f"{unit * gain['high']:+.2f}]: {'shown' if gain['shown'] else 'not shown'}")
    if not gain["shown"] and (gain["low"] > 0 or gain["high"] < 0):
        text += " (the correction stops at an earlier comparison that is not shown)"
    return text


def verdict(gain: dict, claim: str, otherwise: str) -> str:
    """The sentence a paired difference allows (introduced in 05_distill_student): ``claim`` when the gain is shown
    and positive, ``otherwise`` (the claim's "not shown" form) when not; either way followed by the numbers."""
    if gain["shown"] and gain["mean"] > 0:
        return f"{claim} ({describe_gain(gain)})."
    against = "; the difference is shown the other way" if gain["shown"] else ""
    return f"{otherwise}{against} ({describe_gain(gain)})."
