"""Summaries over seeds and the paired interval, against scipy.stats as the oracle."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from labkit.stats import paired_interval

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
