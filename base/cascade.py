"""The evaluation cascade's two rules: which screens earn a full evaluation, and what a screen costs.

A template's [screen] (base.template.Template.screened) trains a candidate with fewer seeds and a
shorter run. With the cascade on, every candidate is screened first, and only a screen within reach of
the best so far is promoted to the full evaluation. Screens are compared with screens only: a shorter
run has another scale than a full one, so a screen's number is never a result and never shown as one.

The promotion rule (`decide`): the bar is the screen of the best result fully evaluated so far (the
baseline's screen to begin with; a promoted candidate whose full result beats the best takes its place).
A candidate is screened out only when its screen is significantly worse than the bar's by more than a
margin: a one-sided Welch's t-test over the screens' seeds, at SCREEN_ALPHA, of the candidate's screen
against the bar's screen less `margin` times its magnitude (a non-inferiority test; margin 0.05 unless
the template's [screen] sets another). The margin is there because a short run ranks candidates near
the top differently from a full one: a loss that learns more slowly trails early and leads at the end
(BENCHMARKS.md, "The evaluation cascade": with no margin, the two candidates the full evaluation rated
better than the baseline were both screened out, their screens 0.5% and 2.1% below the baseline's, each
significant on 4 seeds). The margin keeps those and still screens out a loss that does not learn or
learns a fraction of what the bar does. The bar is a full result's screen, not the best screen seen,
because the maximum of many noisy screens is biased upwards (the winner's curse).

The cost rule (`screen_cost`): a screen counts against --budget-evaluations as the fraction of a full
evaluation that the baseline's screen took of the baseline's full run (their wall times without the
data preparation, which is paid once per template version), at most 1. Minutes count themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from base.stats import better, compare

SCREEN_ALPHA = 0.05
SCREEN_MARGIN = 0.05  # a fraction of the bar's screen (its magnitude); a template's [screen] margin replaces it


def rule(margin: float = SCREEN_MARGIN) -> str:
    """The promotion rule in words (summary.json, the command line, digests)."""
    return (f"promoted unless its screen is significantly worse than the bar's less a margin of {margin:.0%} of it "
            f"(one-sided Welch's t-test over the screens' seeds, alpha {SCREEN_ALPHA:g}); the bar is the screen of "
            "the best result fully evaluated so far, the baseline's to begin with")


@dataclass(frozen=True)
class ScreenDecision:
    """Whether a candidate's screen earns it the full evaluation, against which bar, and the test that said so."""

    promoted: bool
    mean: float                # the candidate's screen (a screen, never a result)
    stderr: float
    bar: str                   # whose screen the bar is: "baseline", or an idea's run
    bar_mean: float
    bar_stderr: float
    margin: float              # how far below the bar's screen (in the metric's units) a screen may be
    p_value: float             # one-sided: that the candidate's screen is worse than the bar's less the margin

    @property
    def why(self) -> str:
        """The decision in words, with no screen metric in it: summary.json and papers say this, never a number
        that could be read as a result."""
        if self.promoted:
            return f"its screen is within reach of the screen of {self.bar} (not significantly worse, less the margin)"
        return (f"its screen is significantly worse than the screen of {self.bar} by more than the margin "
                f"(one-sided Welch's t-test, alpha {SCREEN_ALPHA:g}), so it was not fully evaluated")

    def line(self, metric: str) -> str:
        """The decision with its numbers, for the live display and the command line (labelled as screens)."""
        p = "p=n/a" if math.isnan(self.p_value) else f"p={self.p_value:.3g}"
        verdict = "promoted to the full evaluation" if self.promoted else "screened out"
        return (f"screen {metric} {self.mean:.4f} ± {self.stderr:.4f} vs {self.bar_mean:.4f} ± {self.bar_stderr:.4f} "
                f"({self.bar}'s screen; margin {self.margin:.4f}), {p} one-sided: {verdict}")


def decide(screen: Sequence[float], bar: Sequence[float], direction: str, bar_name: str,
           margin: float = SCREEN_MARGIN) -> ScreenDecision:
    """The promotion rule (see the module's docstring): screened out only when significantly worse than the bar
    less the margin (a fraction of the bar's screen mean's magnitude).

    screen, bar: the per-seed values of the candidate's and the bar's screens (the same screen settings).
    """
    s, b = _mean_se(screen), _mean_se(bar)
    allowed = margin * abs(b[0])
    shift = -allowed if direction == "max" else allowed
    lowered = [v + shift for v in bar]  # the bar the candidate must not be significantly worse than
    c = compare(screen, lowered, direction)
    worse = better(b[0] + shift, s[0], direction)
    # compare() is two-sided; the one-sided p of "worse" halves it on the worse side. NaN (a single seed) promotes.
    p = c.p_value / 2 if worse else 1 - c.p_value / 2
    return ScreenDecision(promoted=not p < SCREEN_ALPHA, mean=s[0], stderr=s[1], bar=bar_name, bar_mean=b[0],
                          bar_stderr=b[1], margin=allowed, p_value=p)


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def work_seconds(timings: dict | None) -> float | None:
    """A run's wall time without "prepare" (the data, made once per template version); None when unknown."""
    if not timings or not isinstance(timings.get("total"), int | float):
        return None
    prepare = timings.get("prepare", 0.0)
    return float(timings["total"]) - (float(prepare) if isinstance(prepare, int | float) else 0.0)


def screen_cost(screen_timings: dict | None, full_timings: dict | None) -> float:
    """What one screen counts against an evaluation budget: the baseline's screen time over its full run's.

    Wall times without "prepare" (work_seconds); 1 when either is unknown, at most 1 (a screen never counts as
    more than the evaluation it stands before), never 0.
    """
    s, f = work_seconds(screen_timings), work_seconds(full_timings)
    if s is None or f is None or not s > 0 or not f > 0:
        return 1.0
    return round(min(1.0, max(0.01, s / f)), 3)
