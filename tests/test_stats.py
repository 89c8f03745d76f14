"""Summaries over seeds and the paired interval, against scipy.stats as the oracle."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from labkit.stats import describe_gain, paired_gains, paired_interval

values = st.lists(st.floats(0.0, 1.0), min_size=2, max_size=8)


@settings(max_examples=60, deadline=None)
@given(values, st.data())
def test_paired_interval_equals_scipys_paired_t_interval(a, data):
    b = data.draw(st.lists(st.floats(0.0, 1.0), min_size=len(a), max_size=len(a)))
    diffs = [x - y for x, y in zip(a, b)]
    if max(diffs) - min(diffs) < 1e-9:
        return  # no spread: scipy's interval is undefined
    ours = paired_interval(a, b)
    theirs = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert ours["low"] == pytest.approx(theirs.low, abs=1e-9) and ours["high"] == pytest.approx(theirs.high, abs=1e-9)
    assert ours["shown"] == (theirs.low > 0 or theirs.high < 0)


def test_a_gain_whose_interval_includes_zero_is_not_shown():
    assert not paired_interval([0.80, 0.82, 0.79], [0.79, 0.80, 0.80])["shown"]
    assert paired_interval([0.81, 0.82, 0.815], [0.79, 0.80, 0.796])["shown"]
    with pytest.raises(ValueError):
        paired_interval([0.8], [0.7])


def test_gains_over_a_baseline_are_paired_per_seed_and_described_honestly():
    arms = {"labels only": [0.70, 0.72, 0.71], "distilled": [0.75, 0.78, 0.76], "noisy": [0.69, 0.74, 0.71]}
    gains = paired_gains(arms, [("distilled", "labels only"), ("noisy", "labels only"), ("distilled", "noisy")])
    assert list(gains) == ["distilled - labels only", "noisy - labels only", "distilled - noisy"]
    assert gains["distilled - labels only"]["differences"] == pytest.approx([0.05, 0.06, 0.05])
    assert describe_gain(gains["distilled - labels only"]).startswith("+5.33 points, 95% interval [+")
    assert describe_gain(gains["distilled - labels only"]).endswith(": shown")
    assert describe_gain(gains["noisy - labels only"]).endswith(": not shown")
    with pytest.raises(ValueError, match="scratch"):
        paired_gains(arms, [("distilled", "scratch")])
