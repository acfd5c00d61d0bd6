"""Intervals, significance and normalised scores, including minimised metrics and negative baselines."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from scientist.stats import compare, normalized, summarize


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
    assert c["verdict"] == verdict and c["p_value"] < 0.05


def test_compare_overlapping_is_not_significant():
    c = compare([1.0, 1.2, 0.9, 1.1], [1.05, 1.15, 0.95, 1.0], "max")
    assert c["verdict"] == "no significant difference"
    assert c["p_value"] == pytest.approx(sps.ttest_ind([1.0, 1.2, 0.9, 1.1], [1.05, 1.15, 0.95, 1.0],
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
    from scientist.stats import holm

    got = holm([0.01, 0.04, 0.03, float("nan"), 0.5])
    # sorted: 0.01 (x4) = 0.04, 0.03 (x3) = 0.09, 0.04 (x2) = 0.08 -> monotone 0.09, 0.5 (x1) = 0.5
    assert got[0] == pytest.approx(0.04) and got[2] == pytest.approx(0.09) and got[1] == pytest.approx(0.09)
    assert math.isnan(got[3]) and got[4] == pytest.approx(0.5)
    assert holm([]) == []
