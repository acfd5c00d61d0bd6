"""Honest statistics over seeds: mean, standard error, 95% t-interval, Welch's test."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats


def summarize(values: Sequence[float]) -> dict:
    """Per-seed values with mean, standard error, a 95% t-interval and n."""
    x = np.asarray(values, dtype=float)
    n = int(x.size)
    mean = float(x.mean())
    if n > 1:
        stderr = float(x.std(ddof=1) / math.sqrt(n))
        half = float(stats.t.ppf(0.975, n - 1) * stderr)
    else:
        stderr, half = float("nan"), float("nan")
    return {
        "values": [float(v) for v in x],
        "mean": mean,
        "stderr": stderr,
        "ci95": [mean - half, mean + half],
        "n": n,
    }


def better(a: float, b: float, direction: str) -> bool:
    """Whether a is strictly better than b for a metric of this direction."""
    return a > b if direction == "max" else a < b


def compare(candidate: Sequence[float], baseline: Sequence[float], direction: str, alpha: float = 0.05) -> dict:
    """Welch's two-sided t-test of candidate against baseline over seeds.

    `verdict` is "better" or "worse" only when the difference is significant at
    `alpha` in that direction, else "no significant difference".
    """
    a, b = np.asarray(candidate, float), np.asarray(baseline, float)
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        p = float("nan")
    elif a.std(ddof=1) == 0 and b.std(ddof=1) == 0:
        p = 1.0 if diff == 0 else 0.0
    else:
        with warnings.catch_warnings():  # nearly identical samples only cost precision, said by p
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    if not p < alpha:  # also catches NaN
        verdict = "no significant difference"
    else:
        verdict = "better" if better(a.mean(), b.mean(), direction) else "worse"
    return {"test": "Welch's t-test (two-sided)", "alpha": alpha, "difference": diff, "p_value": p,
            "verdict": verdict}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values: control the family-wise error over several comparisons.

    A session compares many runs with the same baseline; at alpha 0.05 one in twenty
    unadjusted comparisons of equal candidates comes out "significant" by chance.
    NaN p-values (too few seeds) stay NaN and do not count towards the family.
    """
    valid = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    m = len(valid)
    adjusted = [float("nan")] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(valid)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def normalized(value: float, baseline: float, direction: str) -> float:
    """Score relative to a baseline: 1 is the baseline, above 1 is better.

    1 + (value - baseline) / |baseline|, with the difference negated for a min
    metric, so a negative baseline or a minimised metric keep the meaning.
    """
    if baseline == 0:
        raise ValueError("cannot normalise by a baseline of 0")
    sign = 1.0 if direction == "max" else -1.0
    return 1.0 + sign * (value - baseline) / abs(baseline)
