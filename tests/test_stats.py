"""Summaries over seeds, the paired interval and Holm's correction, against scipy.stats and statsmodels as the
oracles."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.multitest import multipletests

from labkit.stats import describe_gain, holm, paired_gains, paired_interval, verdict

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
    assert ours["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(1e-6, 1.0), min_size=1, max_size=8))
def test_holm_rejects_what_statsmodels_rejects(p_values):
    rejected, *_ = multipletests(p_values, alpha=0.05, method="holm")
    ours = holm(p_values)
    if any(abs(p - r["level"]) < 1e-12 for p, r in zip(p_values, ours)):
        return  # a p-value exactly at its level: the two differ only in < against <=
    assert [r["rejected"] for r in ours] == list(rejected)


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
    assert describe_gain(gains["distilled - labels only"]).startswith("+5.33 points, 98.33% interval (Holm, 3 comparisons) [+")
    assert describe_gain(gains["distilled - labels only"]).endswith(": shown")
    assert describe_gain(gains["noisy - labels only"]).endswith(": not shown")
    with pytest.raises(ValueError, match="scratch"):
        paired_gains(arms, [("distilled", "scratch")])


def test_comparisons_on_the_same_seeds_are_holm_corrected():
    # p-values 0.027, 0.0008, 0.023, 0.11: the course's headline (05), uncorrected three of them are shown
    arms = {"labels only": [0.8437, 0.8397, 0.8426, 0.8451, 0.8420], "distilled": [0.8491, 0.8462, 0.8453,
            0.8482, 0.8448], "uniform": [0.8365, 0.8337, 0.8361, 0.8344, 0.8335]}
    pairs = [("distilled", "labels only"), ("distilled", "uniform"), ("uniform", "labels only")]
    alone = paired_gains(arms, pairs[:1])["distilled - labels only"]
    assert alone["confidence"] == pytest.approx(0.95) and alone["correction"] == "none"
    family = paired_gains(arms, pairs)
    p = [family[f"{a} - {b}"]["p"] for a, b in pairs]
    levels = sorted(family[f"{a} - {b}"]["confidence"] for a, b in pairs)
    assert levels == pytest.approx([0.95, 1 - 0.05 / 2, 1 - 0.05 / 3])  # each tested at its Holm level
    for (a, b), r in zip(pairs, multipletests(p, alpha=0.05, method="holm")[0]):
        assert family[f"{a} - {b}"]["shown"] == r
    assert "(Holm, 3 comparisons)" in describe_gain(family["distilled - uniform"])


def test_a_primary_comparison_is_tested_alone_and_gates_the_others():
    arms = {"a": [0.80, 0.81, 0.82, 0.80, 0.81], "b": [0.79, 0.80, 0.805, 0.795, 0.80],
            "c": [0.70, 0.71, 0.72, 0.70, 0.71]}
    gains = paired_gains(arms, [("a", "b"), ("a", "c"), ("b", "c")], primary=("a", "b"))
    assert gains["a - b"]["confidence"] == pytest.approx(0.95) and gains["a - b"]["correction"] == "primary"
    assert gains["a - c"]["correction"] == "holm" and gains["a - c"]["comparisons"] == 2
    assert gains["a - b"]["shown"] and gains["a - c"]["shown"]
    flat = {**arms, "b": [0.80, 0.82, 0.81, 0.80, 0.81]}  # the primary difference now swings around 0
    gated = paired_gains(flat, [("a", "b"), ("a", "c"), ("b", "c")], primary=("a", "b"))
    assert not gated["a - b"]["shown"] and not gated["a - c"]["shown"], "nothing is claimed past a failed primary"
    assert "earlier comparison" in describe_gain(gated["a - c"])
    with pytest.raises(ValueError, match="primary"):
        paired_gains(arms, [("a", "c")], primary=("a", "b"))


def test_a_verdict_claims_only_what_is_shown():
    up = paired_gains({"x": [0.81, 0.82, 0.815], "y": [0.79, 0.80, 0.796]}, [("x", "y")])["x - y"]
    down = paired_gains({"x": [0.79, 0.80, 0.796], "y": [0.81, 0.82, 0.815]}, [("x", "y")])["x - y"]
    flat = paired_gains({"x": [0.80, 0.82, 0.79], "y": [0.79, 0.80, 0.80]}, [("x", "y")])["x - y"]
    assert verdict(up, "x helps", "a gain of x is not shown").startswith("x helps (+1.97 points")
    assert verdict(flat, "x helps", "a gain of x is not shown").startswith("a gain of x is not shown (")
    assert verdict(down, "x helps", "a gain of x is not shown").startswith(
        "a gain of x is not shown; the difference is shown the other way (-1.97")
