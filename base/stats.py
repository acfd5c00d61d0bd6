"""Honest statistics over seeds: mean, standard error, 95% t-interval, Welch's test."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from base.records import Comparison


def summarize(values: Sequence[float], low: float | None = None, high: float | None = None) -> dict:
    """Per-seed values with mean, standard error, a 95% interval of the mean and n.

    The interval is Student's t-interval, unless the metric has a declared range
    (low and/or high): then it is the t-interval on the logit scale (both bounds) or
    the log scale (one bound) of the mean, by the delta method, mapped back, so it
    never leaves the range (an accuracy near 0 gets [0.0001, 0.003], not [-0.0000, 0.0006]).
    `ci95_method` says which ("t", "logit-t" or "log-t"); see interval_method().
    """
    x = np.asarray(values, dtype=float)
    n = int(x.size)
    mean = float(x.mean())
    method = "t"
    if n > 1:
        stderr = float(x.std(ddof=1) / math.sqrt(n))
        t = _t_quantile(n - 1)
        ci = [mean - t * stderr, mean + t * stderr]
        if low is not None or high is not None:
            method, ci = _bounded_interval(mean, stderr, t, low, high)
    else:
        stderr, ci = float("nan"), [float("nan"), float("nan")]
    return {
        "values": [float(v) for v in x],
        "mean": mean,
        "stderr": stderr,
        "ci95": ci,
        "ci95_method": method,
        "n": n,
    }


def _t_quantile(dof: int) -> float:
    """The 97.5% quantile of Student's t with dof degrees of freedom (scipy imported when first needed)."""
    from scipy import stats

    return float(stats.t.ppf(0.975, dof))


def _bounded_interval(mean: float, stderr: float, t: float, low: float | None,
                      high: float | None) -> tuple[str, list[float]]:
    """The t-interval on a scale that maps the metric's range onto the real line, mapped back."""
    if low is not None and high is not None:
        width = high - low
        u = (mean - low) / width
        if not 0 < u < 1 or stderr == 0:  # every seed at a bound (or all equal): no spread to transform
            return "logit-t", [mean, mean]
        z, s = math.log(u / (1 - u)), stderr / (width * u * (1 - u))
        return "logit-t", [low + width * _expit(z - t * s), low + width * _expit(z + t * s)]
    d = mean - low if low is not None else high - mean
    if not d > 0 or stderr == 0:
        return "log-t", [mean, mean]
    lo_d, hi_d = d * math.exp(-t * stderr / d), d * math.exp(t * stderr / d)
    return "log-t", ([low + lo_d, low + hi_d] if low is not None else [high - hi_d, high - lo_d])


def _expit(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def interval_method(method: str, low: float | None = None, high: float | None = None) -> str:
    """In words, how summarize() made a 95% interval (for tables, papers and reports)."""
    if method == "logit-t":
        return (f"Student's t-interval on the logit scale of the mean (delta method), mapped back into the metric's "
                f"range [{low:g}, {high:g}]")
    if method == "log-t":
        bound = f"at least {low:g}" if low is not None else f"at most {high:g}"
        return f"Student's t-interval on the log scale of the mean's distance to its bound (delta method; the " \
               f"metric is {bound}), mapped back"
    return "Student's t-interval of the mean over seeds"


def better(a: float, b: float, direction: str) -> bool:
    """Whether a is strictly better than b for a metric of this direction."""
    return a > b if direction == "max" else a < b


def compare(candidate: Sequence[float], baseline: Sequence[float], direction: str,
            alpha: float = 0.05) -> Comparison:
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
            from scipy import stats  # imported when first needed: it costs half a second

            p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    if not p < alpha:  # also catches NaN
        verdict = "no significant difference"
    else:
        verdict = "better" if better(a.mean(), b.mean(), direction) else "worse"
    return Comparison(test="Welch's t-test (two-sided)", alpha=alpha, difference=diff, p_value=p, verdict=verdict)


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
