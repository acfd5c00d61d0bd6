"""Honest statistics over seeds: mean, standard error, 95% t-interval, Welch's or the paired test, Holm."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

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
    """The 97.5% quantile of Student's t with dof degrees of freedom (what scipy.stats.t.ppf computes).

    scipy.special, imported when first needed, costs half of what scipy.stats does: every evaluator process
    summarises its metrics, and most never test anything.
    """
    from scipy.special import stdtrit

    return float(stdtrit(dof, 0.975))


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


Test = Literal["welch", "paired"]

WELCH = "Welch's t-test (two-sided)"
PAIRED = "paired t-test over seeds (two-sided)"
PERMUTATION = "exact permutation test over the pooled seeds (two-sided)"
SIGN_FLIP = "exact sign-flip test over paired seeds (two-sided)"
# Why the paired test, in the words tables and papers use.
PAIRED_WHY = "runs share seeds and data, so seed-wise differences are tested"


def compare(candidate: Sequence[float], baseline: Sequence[float], direction: str,
            alpha: float = 0.05, test: Test = "welch", shared_seeds: bool = True) -> Comparison:
    """A two-sided test of candidate against baseline over seeds: Welch's t-test, or the paired t-test.

    test="paired" pairs seed i of the candidate with seed i of the baseline: valid only when
    the runs share seeds and data (same template, train_seed and seed count; the caller says
    so with `shared_seeds`). Otherwise Welch's test runs and `why` says so. Where the t
    statistic is undefined (no variance at all), an exact permutation (or sign-flip) test
    gives the smallest p the seeds allow, never 0; equal constant samples give p = 1.

    `verdict` is "better" or "worse" only when the difference is significant at
    `alpha` in that direction, else "no significant difference".
    """
    a, b = np.asarray(candidate, float), np.asarray(baseline, float)
    diff = float(a.mean() - b.mean())
    why = ""
    if test == "paired" and not shared_seeds:
        test, why = "welch", "not paired: the runs do not share seeds and data"
    elif test == "paired" and a.size != b.size:
        test, why = "welch", f"not paired: the runs have {a.size} and {b.size} seeds"
    elif test == "paired":
        why = PAIRED_WHY
    name, p, note = _paired(a - b) if test == "paired" else _welch(a, b)
    why = "; ".join(w for w in (why, note) if w)
    if not p < alpha:  # also catches NaN
        verdict = "no significant difference"
    else:
        verdict = "better" if better(a.mean(), b.mean(), direction) else "worse"
    return Comparison(test=name, why=why, alpha=alpha, difference=diff, p_value=p, verdict=verdict)


def _welch(a: np.ndarray, b: np.ndarray) -> tuple[str, float, str]:
    """(test, p, note) of Welch's test, or of the exact test that stands in where its t is undefined."""
    if a.size < 2 or b.size < 2:
        return WELCH, float("nan"), "fewer than 2 seeds on a side: not testable"
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # no variance on either side: t is 0/0 or x/0
        if a[0] == b[0]:
            return WELCH, 1.0, "identical constant samples: no difference"
        return PERMUTATION, _two_constants_p(a.size, b.size), "no variance on either side, so Welch's t is undefined"
    # One constant side is fine: the standard error comes from the other (df = its n - 1).
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    dof = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    return WELCH, _t_p_value((a.mean() - b.mean()) / math.sqrt(va + vb), dof), ""


def _paired(d: np.ndarray) -> tuple[str, float, str]:
    """(test, p, note) of the paired t-test on per-seed differences d (df n - 1), or its exact stand-in."""
    if d.size < 2:
        return PAIRED, float("nan"), "fewer than 2 seeds: not testable"
    if np.ptp(d) == 0:  # every seed moved by the same amount: t is 0/0 or x/0
        if d[0] == 0:
            return PAIRED, 1.0, "identical per-seed values: no difference"
        # Under no effect each difference's sign is a coin flip; only all-same-sign is as extreme.
        return SIGN_FLIP, 2.0 ** (1 - d.size), "equal per-seed differences, so the paired t is undefined"
    return PAIRED, _t_p_value(d.mean() / (d.std(ddof=1) / math.sqrt(d.size)), d.size - 1), ""


def _t_p_value(t: float, dof: float) -> float:
    """Two-sided p of a t statistic with dof degrees of freedom, as scipy.stats' t-tests compute it.

    From scipy.special, imported when first needed: a third of scipy.stats' import, which every
    command that compares runs paid (a second per `scientist eval` on 2 cores).
    """
    from scipy.special import stdtr

    return float(2.0 * stdtr(dof, -abs(t)))


def _two_constants_p(n_a: int, n_b: int) -> float:
    """Exact two-sided permutation p of |mean difference| for n_a copies of x against n_b copies of y (x != y).

    Relabel the pooled seeds every way: k copies of x in the candidate's group give a difference
    (x - y)(k/n_a - (n_a - k)/n_b); count the relabellings at least as far from 0 as the observed k = n_a.
    """
    n = n_a + n_b
    extreme = sum(math.comb(n_a, k) * math.comb(n_b, n_a - k) for k in range(max(0, n_a - n_b), n_a + 1)
                  if abs(k / n_a - (n_a - k) / n_b) >= 1 - 1e-12)
    return extreme / math.comb(n, n_a)


def format_p(p: float, name: str = "p", digits: int = 3) -> str:
    """`p=0.031` for tables and logs: below 0.0001 a bound (`p<0.0001`), never `p=0`; `p=n/a` when untestable."""
    if math.isnan(p):
        return f"{name}=n/a"
    return f"{name}<0.0001" if p < 1e-4 else f"{name}={p:.{digits}g}"


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


def holm_adjust(comparisons: Sequence[Comparison], direction: str) -> None:
    """Set Holm-adjusted p-values and verdicts on comparisons of one family (one baseline), in place."""
    for c, p in zip(comparisons, holm([c.p_value for c in comparisons]), strict=True):
        c.p_value_holm = p
        if not p < c.alpha:  # also catches NaN
            c.verdict_holm = "no significant difference"
        else:
            c.verdict_holm = "better" if (c.difference > 0) == (direction == "max") else "worse"


def normalized(value: float, baseline: float, direction: str) -> float:
    """Score relative to a baseline: 1 is the baseline, above 1 is better.

    1 + (value - baseline) / |baseline|, with the difference negated for a min
    metric, so a negative baseline or a minimised metric keep the meaning.
    """
    if baseline == 0:
        raise ValueError("cannot normalise by a baseline of 0")
    sign = 1.0 if direction == "max" else -1.0
    return 1.0 + sign * (value - baseline) / abs(baseline)
