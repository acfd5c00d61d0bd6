"""The typed records that move between stages: an idea, a run's result, an idea's outcome, a session's summary.

summary.json is `SessionSummary.model_dump()` written as JSON, and reading it back is
`SessionSummary.model_validate()`: the same shape in memory and on disk, never a dict passed around.
Field names are those summary.json has always had, so older run folders still read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

Verdict = Literal["better", "worse", "no significant difference"]


class Record(BaseModel):
    """A record: unknown keys in a file are ignored (written by a newer version), assignment is validated."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)


class Idea(Record):
    """A research idea, whoever proposed it, in The AI Scientist's format.

    The LLM proposer fills the scores (1 to 10); the evolve proposer fills `genome`, the member
    of the template's search space the idea is. `literature` is what a novelty check found.
    """

    name: str
    title: str
    hypothesis: str = ""
    experiment: str = ""
    interestingness: int | None = None
    feasibility: int | None = None
    novelty: int | None = None
    genome: Any = None
    literature: list[dict] | None = None

    def shown(self) -> dict:
        """The idea as a model is shown it: its text and scores, no genome or search results."""
        return self.model_dump(exclude={"genome", "literature"}, exclude_none=True)


class ArchiveEntry(Record):
    """An earlier idea of the template (this session's or another's) with its best sealed metric."""

    idea: Idea
    metric: float | None = None
    id: int | None = None          # the store's idea id, for ideas of earlier sessions


class Comparison(Record):
    """A run against the baseline: a test over seeds (Welch's or paired), and the same after Holm's adjustment."""

    test: str                          # the test that ran, by name (base.stats: WELCH, PAIRED, ...)
    why: str = ""                      # why that test, when it is not plain Welch's (paired, or a fallback)
    alpha: float
    difference: float
    p_value: float
    verdict: Verdict
    p_value_holm: float | None = None
    verdict_holm: Verdict | None = None

    @property
    def final_verdict(self) -> Verdict:
        """The verdict that counts: Holm's once the session has adjusted, else the unadjusted one."""
        return self.verdict_holm or self.verdict


class MetricResult(Record):
    """A successful run's main metric over seeds, and how it compares with the baseline."""

    name: str
    mean: float
    stderr: float
    ci95: list[float]
    n: int
    values: list[float]
    comparison: Comparison | None = None
    normalized: float | None = None    # 1 + (value - baseline) / |baseline|; None when the baseline is 0


class ScreenRecord(Record):
    """An attempt's screen, with the evaluation cascade on: the store's screen run and what it decided.

    It carries no metric on purpose: a screen (fewer seeds, a shorter run) is no result, and summary.json
    holds nothing a table, a paper or a leaderboard could take for one. The store has its numbers.
    """

    run_id: int
    run_dir: str | None = None
    seeds: int
    promoted: bool
    reason: str                        # the decision in words (base.cascade.ScreenDecision.why)


class RunEntry(Record):
    """One attempt of one run of an idea: what summary.json lists under ideas[].runs."""

    run: int
    attempt: int
    # "screened_out": the cascade's screen kept it from the full evaluation (reason says why; no metric)
    status: Literal["ok", "failed", "no_edit", "screened_out"] = "ok"   # older summaries wrote the best run without it
    run_id: int | None = None          # the store's (full) run, when it got as far as one
    run_dir: str | None = None
    note: str = ""                     # what the proposer says it tried
    reason: str | None = None          # why it failed or was screened out, one line
    metric: MetricResult | None = None
    screen: ScreenRecord | None = None  # with --cascade: its screen and the decision

    @property
    def folder(self) -> str:
        """Its folder under the idea's: run_<j>, or run_<j>_attempt_<k> for a retry."""
        return f"run_{self.run}" if self.attempt == 1 else f"run_{self.run}_attempt_{self.attempt}"


class PaperStatus(Record):
    """How an idea's paper came out (summary.json's ideas[].paper)."""

    status: Literal["ok", "writeup_failed"]
    pdf: str | None = None
    reason: str | None = None          # the first LaTeX error, when it failed
    log: str | None = None
    tex: str
    claim_check: str
    unverified_numbers: int
    figures: int
    struck_sentences: int = 0


class ReviewSummary(Record):
    """The automated review of an idea's paper (summary.json's ideas[].review), or why there is none."""

    status: Literal["ok", "error"] = "ok"
    Overall: int | None = None
    Decision: str | None = None
    Soundness: int | None = None
    Confidence: int | None = None
    path: str | None = None
    error: str | None = None


class IdeaOutcome(Record):
    """An idea's experiments: every attempt, the best successful run, its paper and review."""

    idx: int
    name: str
    title: str
    folder: str
    status: Literal["done", "failed"]
    reason: str | None = None
    best: RunEntry | None = None
    runs: list[RunEntry] = []
    paper: PaperStatus | None = None
    review: ReviewSummary | None = None

    @property
    def ok_runs(self) -> list[RunEntry]:
        """The attempts that produced a result."""
        return [r for r in self.runs if r.status == "ok" and r.metric is not None]

    @property
    def verdict(self) -> Verdict | None:
        """The idea's verdict: its best run's against the baseline (Holm's); None without a result."""
        if self.best is None or self.best.metric is None or self.best.metric.comparison is None:
            return None
        return self.best.metric.comparison.final_verdict


class BaselineResult(Record):
    """The template's baseline as the session compared against it."""

    run_id: int
    mean: float
    stderr: float
    ci95: list[float]
    n: int
    run_dir: str


class MetricSpec(Record):
    name: str
    direction: Literal["max", "min"]


class SessionBest(RunEntry):
    """The session's best run over all ideas, and whose it is."""

    idea: str


class CascadeSummary(Record):
    """The evaluation cascade of a session (--cascade): its rule, what a screen costs, and how many were screened."""

    rule: str                          # the promotion rule in words (base.cascade.rule)
    screen: dict                       # the template's [screen] overlay, as template.toml declares it
    seeds: int                         # the screens' seeds
    cost: float                        # what a screen counts against --budget-evaluations (base.cascade.screen_cost)
    baseline_screen_run_id: int | None = None
    screened: int = 0                  # attempts screened
    promoted: int = 0                  # of them, fully evaluated
    screened_out: int = 0


class SessionSummary(Record):
    """What summary.json holds: the session's configuration, status, baseline, every idea, cost and time."""

    template: str
    template_hash: str
    profile: str | None = None         # the template's profile the runs used (--profile, or the one --gpus chose)
    device: str = "cpu"                # what the runs computed on: cpu, or gpu with --gpus
    metric: MetricSpec
    proposer: str
    model: str | None = None
    status: str                        # "complete" or "stopped"
    reason: str | None = None
    baseline: BaselineResult | None = None
    best: SessionBest | None = None
    ideas: list[IdeaOutcome] = []
    significance_test: str = ""
    cost_usd: float = 0.0
    llm_calls: int = 0
    tokens: dict[str, int] = {}
    wall_s: float = 0.0
    writeup: str = ""
    review: str = ""
    config: dict = {}
    cascade: CascadeSummary | None = None   # with --cascade; its screens are counted, never listed as results

    @classmethod
    def read(cls, run_dir: Path) -> SessionSummary:
        """The summary.json of a run folder; OSError when it is missing, a one-line ValueError when it is not one."""
        path = run_dir / "summary.json"
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
            raise ValueError(f"{path} is not a summary written by scientist run: field '{where}': "
                             f"{first['msg']}{more}") from None

    def write(self, run_dir: Path) -> None:
        """Write summary.json atomically (NaN p-values of too few seeds stay NaN, as json writes them)."""
        write_json(run_dir / "summary.json", self.model_dump())


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a reader never sees half a file; the folder is made if it was deleted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
