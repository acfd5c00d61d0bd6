"""A run's sealed result (final_info.json) and a campaign's confirmation of one, as typed records.

The sealed evaluator (scientist.evaluator) writes final_info.json, and the store keeps a copy in
runs.final_info; a campaign keeps each confirmation's result in confirmations.result. Both are JSON
objects whose keys are read here and nowhere else: `FinalInfo.from_json(data).summary(name)` is one
metric over seeds. A record keeps the keys it was read with, known or not, and adds none, so
`to_json()` gives back what was read: files and stores written by earlier versions still load, and
what is written stays as it always was.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict

from base.records import Verdict


class MissingMetric(KeyError):
    """A metric the sealed result does not have (a KeyError, as the dict lookup it replaces raised)."""

    def __str__(self) -> str:
        return str(self.args[0])  # KeyError would quote the message


class _Logged(BaseModel):
    """A JSON object the framework wrote: unknown keys are kept and absent ones stay absent (see to_json)."""

    model_config = ConfigDict(extra="allow")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """The record of a decoded JSON object; a pydantic ValidationError (a ValueError) when it is not one."""
        return cls.model_validate(data)

    def to_json(self) -> dict[str, Any]:
        """The JSON object again: the keys it was read or made with, in the order they were always written."""
        return self.model_dump(exclude_unset=True)


class MetricSummary(_Logged):
    """One metric over seeds, as base.stats.summarize makes it (NaN stderr and interval for one seed)."""

    model_config = ConfigDict(frozen=True)

    values: list[float]                # one per seed
    mean: float
    stderr: float
    ci95: list[float]                  # [low, high]
    ci95_method: Literal["t", "logit-t", "log-t"] = "t"   # absent from results scored before bounded intervals
    n: int


class FinalInfo(_Logged):
    """What the sealed evaluator wrote for a run: each metric's summary over seeds, and the template's `extra`."""

    model_config = ConfigDict(frozen=True)

    template: str
    metric: str                        # the template's main metric (named first in `metrics`)
    direction: Literal["max", "min"]
    n: int                             # seeds
    metrics: dict[str, MetricSummary]
    extra: dict[str, Any] = {}         # free-form, whatever the template's evaluator logged (curves for figures)
    evaluate_s: float | None = None    # how long the evaluation took; the evaluator adds it last

    def summary(self, name: str) -> MetricSummary:
        """The metric's summary over seeds; MissingMetric naming the metrics there are when it has none."""
        try:
            return self.metrics[name]
        except KeyError:
            raise MissingMetric(f"the sealed result of {self.template} has no metric {name!r} "
                                f"(it has {', '.join(self.metrics) or 'none'})") from None


class PreviousBest(_Logged):
    """The campaign's previous best in a confirmation: which it was and, where it ran again on the same fresh
    seeds, its summary there; where the candidate's mean beat that, the test against it."""

    # Filled in as the night's confirmations run and their Holm family is adjusted.
    model_config = ConfigDict(validate_assignment=True)

    idea: str
    night: str | None = None
    confirmation_id: int
    failed: str | None = None          # why it has no result on these seeds
    run_id: int | None = None
    mean: float | None = None
    stderr: float | None = None
    ci95: list[float] | None = None
    n: int | None = None
    verdict: Verdict | None = None     # None: not tested (its mean was not beaten), so never a new best
    p_value_holm: float | None = None
    test: str | None = None
    p_value: float | None = None
    difference: float | None = None


class ConfirmationResult(_Logged):
    """A campaign candidate evaluated again on a night's fresh seeds, against the baseline on the same seeds.

    Results of earlier versions lack the fresh seeds and the previous best (absent keys stay absent).
    Its adjusted p-value and verdict are set once the night's Holm family is complete.
    """

    model_config = ConfigDict(validate_assignment=True)

    metric: str
    direction: Literal["max", "min"]
    night: str | None = None           # the night's folder name
    mean: float
    stderr: float
    ci95: list[float]
    n: int
    baseline_mean: float
    test: str
    p_value: float
    difference: float
    alpha: float
    train_seed: int | None = None      # the night's fresh [config] train_seed (None: the template has none)
    draw: int | None = None            # the night's fresh draw of the [private] secrets
    previous: PreviousBest | None = None
    p_value_holm: float | None = None
    verdict: Verdict | None = None
