"""Intervals, significance and normalised scores, including minimised metrics and negative baselines."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from base.stats import compare, normalized, summarize


def test_summarize_gives_t_interval():
    values = [1.0, 2.0, 3.0, 4.0]
    s = summarize(values)
    sem = np.std(values, ddof=1) / 2
    assert s["n"] == 4 and s["mean"] == 2.5
    assert s["stderr"] == pytest.approx(sem)
    half = sps.t.ppf(0.975, 3) * sem
    assert s["ci95"] == pytest.approx([2.5 - half, 2.5 + half])
    assert s["values"] == values


def test_summarize_single_seed_has_no_interval():
    s = summarize([3.0])
    assert math.isnan(s["stderr"]) and all(math.isnan(x) for x in s["ci95"])


@pytest.mark.parametrize("direction,candidate,verdict", [
    ("max", [2.0, 2.1, 2.2, 2.05], "better"),
    ("min", [2.0, 2.1, 2.2, 2.05], "worse"),
    ("max", [0.0, 0.1, 0.2, 0.05], "worse"),
    ("min", [0.0, 0.1, 0.2, 0.05], "better"),
])
def test_compare_respects_direction(direction, candidate, verdict):
    baseline = [1.0, 1.1, 0.9, 1.05]
    c = compare(candidate, baseline, direction)
    assert c.verdict == verdict and c.p_value < 0.05


def test_compare_overlapping_is_not_significant():
    c = compare([1.0, 1.2, 0.9, 1.1], [1.05, 1.15, 0.95, 1.0], "max")
    assert c.verdict == "no significant difference"
    assert c.p_value == pytest.approx(sps.ttest_ind([1.0, 1.2, 0.9, 1.1], [1.05, 1.15, 0.95, 1.0],
                                                        equal_var=False).pvalue)


@pytest.mark.parametrize("value,baseline,direction,expected", [
    (2.0, 1.0, "max", 2.0),     # twice the baseline
    (0.5, 1.0, "min", 1.5),     # half the loss is better
    (2.0, 1.0, "min", 0.0),
    (-5.0, -10.0, "max", 1.5),  # less negative return is better
    (-20.0, -10.0, "max", 0.0),
    (-4.0, -2.0, "min", 2.0),   # more negative is better for a min metric
])
def test_normalized_keeps_meaning(value, baseline, direction, expected):
    assert normalized(value, baseline, direction) == pytest.approx(expected)
    assert normalized(baseline, baseline, direction) == 1.0


def test_normalized_rejects_zero_baseline():
    with pytest.raises(ValueError):
        normalized(1.0, 0.0, "max")


def test_holm_adjustment_matches_the_definition():
    from base.stats import holm

    got = holm([0.01, 0.04, 0.03, float("nan"), 0.5])
    # sorted: 0.01 (x4) = 0.04, 0.03 (x3) = 0.09, 0.04 (x2) = 0.08 -> monotone 0.09, 0.5 (x1) = 0.5
    assert got[0] == pytest.approx(0.04) and got[2] == pytest.approx(0.09) and got[1] == pytest.approx(0.09)
    assert math.isnan(got[3]) and got[4] == pytest.approx(0.5)
    assert holm([]) == []


def test_bounded_metric_interval_stays_in_its_range():
    # An accuracy near 0 (issue: "95% CI -0.0000 to 0.0006"): the t-interval leaves [0, 1], the logit one cannot.
    values = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0024]
    plain = summarize(values)
    assert plain["ci95"][0] < 0 and plain["ci95_method"] == "t"
    s = summarize(values, low=0.0, high=1.0)
    assert s["ci95_method"] == "logit-t"
    assert 0.0 < s["ci95"][0] < s["mean"] < s["ci95"][1] < 1.0
    assert s["mean"] == plain["mean"] and s["stderr"] == plain["stderr"]  # only the interval changes
    near_one = summarize([1 - v for v in values], low=0.0, high=1.0)
    assert near_one["ci95"] == pytest.approx([1 - s["ci95"][1], 1 - s["ci95"][0]])
    # One bound: the log scale; a metric at least 0 (an MMD, bits per character) or at most 0.
    above = summarize([0.01, 0.002, 0.003, 0.0005], low=0.0)
    assert above["ci95_method"] == "log-t" and 0.0 < above["ci95"][0] < above["mean"] < above["ci95"][1]
    below = summarize([-0.01, -0.002, -0.003, -0.0005], high=0.0)
    assert below["ci95"] == pytest.approx([-above["ci95"][1], -above["ci95"][0]])
    # Every seed on a bound: no spread, the interval is the point.
    assert summarize([1.0, 1.0, 1.0], low=0.0, high=1.0)["ci95"] == [1.0, 1.0]


def test_bounded_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    a, b = 2.0, 30.0  # a rate near 0.06, 8 seeds, as a solve rate or an accuracy early in training
    truth = a / (a + b)
    hits = 0
    for _ in range(2000):
        lo, hi = summarize(rng.beta(a, b, size=8), low=0.0, high=1.0)["ci95"]
        hits += lo <= truth <= hi
    assert 0.90 <= hits / 2000 <= 0.98
