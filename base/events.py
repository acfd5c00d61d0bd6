"""Progress events: one small frozen record per kind, and the Reporter that receives them.

The loop emits records (`report.event(RunStarted(idea=..., run=1, ...))`) and never formats output
itself; scientist/progress.py turns them into a live view or JSON lines. `kind` is the name the
JSON line has always carried in its "event" key, and the fields are its other keys in the same
order, so `--log-json` output reads as it always has (users' cron scripts parse it). Two records
share a kind where one event had two shapes: a run that scored (RunSucceeded) or did not
(RunFailed), a review that came (Reviewed) or failed (ReviewFailed).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, Protocol

from base.records import Verdict

# A key the JSON line leaves out while its value is None, as the line did before it was a record.
_OPTIONAL = {"omit_none": True}
# What the live view says and the JSON line does not carry: its keys stay those scripts already parse.
_DISPLAY_ONLY = {"display_only": True}


@dataclass(frozen=True, kw_only=True)
class Event:
    """A progress event; each kind is a subclass with the fields that kind carries."""

    kind: ClassVar[str]

    def json_fields(self) -> dict[str, Any]:
        """The JSON line's keys after "event" and "time", in declaration order."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("display_only") or (value is None and f.metadata.get("omit_none")):
                continue
            out[f.name] = value
        return out


@dataclass(frozen=True, kw_only=True)
class Stage(Event):
    """The session moved to another stage (baseline, ideas, experiments, writeup, review, ...) or ended."""

    kind: ClassVar[str] = "stage"
    stage: str
    spend_usd: float | None = field(default=None, metadata=_OPTIONAL)


@dataclass(frozen=True, kw_only=True)
class SessionStarted(Event):
    """A session started or resumed in its output folder."""

    kind: ClassVar[str] = "session"
    template: str
    proposer: str
    out_dir: str
    resumed: bool


@dataclass(frozen=True, kw_only=True)
class ExecutorChosen(Event):
    """Where runs compute, and the template's profile and device."""

    kind: ClassVar[str] = "executor"
    description: str


@dataclass(frozen=True, kw_only=True)
class TemplateChanged(Event):
    """The template changed since the session started: its earlier runs are not reused."""

    kind: ClassVar[str] = "template_changed"
    template: str
    files: list[str]  # the files that changed; empty when only template.toml's settings did


@dataclass(frozen=True, kw_only=True)
class BaselineMeasured(Event):
    """The baseline's metric over seeds."""

    kind: ClassVar[str] = "baseline"
    metric: str
    mean: float
    ci95: list[float]  # [low, high]


@dataclass(frozen=True, kw_only=True)
class IdeaAccepted(Event):
    """An idea was accepted and its experiments start (idx counts accepted ideas from 0)."""

    kind: ClassVar[str] = "idea"
    idx: int
    total: int
    name: str
    title: str


@dataclass(frozen=True, kw_only=True)
class IdeaDropped(Event):
    """An idea was dropped before its experiments: a near-duplicate, or not novel."""

    kind: ClassVar[str] = "idea_dropped"
    name: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class RunStarted(Event):
    """An attempt at one of an idea's runs began: the proposer is asked for a candidate."""

    kind: ClassVar[str] = "run_start"
    idea: str
    run: int
    runs: int
    attempt: int
    spend_usd: float


@dataclass(frozen=True, kw_only=True)
class RunComputing(Event):
    """The attempt's candidate computes in run_dir; expected_s is the template's typical time, when known."""

    kind: ClassVar[str] = "run_computing"
    idea: str
    run: int
    attempt: int
    run_dir: str
    expected_s: float | None
    screen: bool | None = field(default=None, metadata=_OPTIONAL)  # True: the cascade's screen of the candidate


@dataclass(frozen=True, kw_only=True)
class RunScreened(Event):
    """The cascade screened an attempt's candidate: its screen against the bar's screen, and whether it was promoted
    to the full evaluation. Screens are shorter runs on fewer seeds: their numbers are never results."""

    kind: ClassVar[str] = "run_screened"
    idea: str
    run: int
    attempt: int
    screen_mean: float
    screen_stderr: float
    bar: str              # whose screen the bar is: "baseline", or an idea's run
    bar_mean: float
    margin: float         # how far below the bar's screen a screen may be (base.cascade.decide)
    p_value: float        # one-sided, that the candidate's screen is worse than the bar's less the margin
    promoted: bool
    cached: bool
    spend_usd: float


@dataclass(frozen=True, kw_only=True)
class RunSucceeded(Event):
    """An attempt scored: its metric against the baseline, and the idea's best so far."""

    kind: ClassVar[str] = "run_done"
    idea: str
    run: int
    attempt: int
    status: Literal["ok"] = "ok"
    metric: float
    stderr: float
    verdict: Verdict
    cached: bool
    spend_usd: float
    best: float


@dataclass(frozen=True, kw_only=True)
class RunFailed(Event):
    """An attempt ended without a score: its run failed, the proposer gave no usable edit (no spend then), or the
    cascade's screen kept it from the full evaluation (screened_out)."""

    kind: ClassVar[str] = "run_done"
    idea: str
    run: int
    attempt: int
    status: Literal["failed", "no_edit", "screened_out"]
    reason: str | None
    spend_usd: float | None = field(default=None, metadata=_OPTIONAL)


@dataclass(frozen=True, kw_only=True)
class IdeaDone(Event):
    """An idea's experiments ended."""

    kind: ClassVar[str] = "idea_done"
    name: str
    status: Literal["done", "failed"]
    reason: str | None


@dataclass(frozen=True, kw_only=True)
class PaperDone(Event):
    """An idea's paper was written (pdf) or failed (reason)."""

    kind: ClassVar[str] = "paper"
    name: str
    status: Literal["ok", "writeup_failed"]
    pdf: str | None
    reason: str | None


@dataclass(frozen=True, kw_only=True)
class Reviewed(Event):
    """An idea's paper was reviewed."""

    kind: ClassVar[str] = "review"
    name: str
    overall: int
    decision: str


@dataclass(frozen=True, kw_only=True)
class ReviewFailed(Event):
    """An idea's paper could not be reviewed."""

    kind: ClassVar[str] = "review"
    name: str
    error: str


@dataclass(frozen=True, kw_only=True)
class Stopped(Event):
    """The session, or its writeup, stopped before the end: budget, model error, the user."""

    kind: ClassVar[str] = "stopped"
    reason: str


@dataclass(frozen=True, kw_only=True)
class NightStarted(Event):
    """A campaign's night started, or resumed where a killed process left it."""

    kind: ClassVar[str] = "night"
    campaign: str
    night: int
    out_dir: str
    resumed: bool


@dataclass(frozen=True, kw_only=True)
class FreshSeedsDrawn(Event):
    """A campaign night's confirmations run on these fresh seeds."""

    kind: ClassVar[str] = "fresh_seeds"
    night: int
    train_seed: int | None
    draw: int


@dataclass(frozen=True, kw_only=True)
class ConfirmationDone(Event):
    """A candidate of a campaign night was evaluated again on the fresh seeds (mean), or failed (reason).

    verdict is against the baseline on the same seeds, before Holm's adjustment over the night; whether
    the candidate is the campaign's new best is decided once the whole night is confirmed.
    """

    kind: ClassVar[str] = "confirmed"
    idea: str
    search_mean: float
    mean: float | None
    reason: str | None
    verdict: Verdict | None = field(default=None, metadata=_DISPLAY_ONLY)


class Reporter(Protocol):
    """Where the agent loop reports progress: a live display, JSON lines, or nothing."""

    def event(self, event: Event) -> None: ...
