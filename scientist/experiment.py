"""The experiment loop of one idea: up to R runs, each with up to A attempts.

    for each run: ask the proposer for files -> sealed run in the sandbox ->
    feed the result (or the error tail, or the timeout) back -> next run,
    continuing from the last version that ran successfully.

Every attempt is recorded as it ends, in one place (`IdeaLog.record`), which fans it out to
the store, the proposer's history, the idea's notes and the progress display. The sandboxed
runs are keyed by content, so a resumed session gets finished runs back without recomputing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace

from base.cascade import ScreenDecision, decide
from base.events import IdeaDone, Reporter, RunComputing, RunFailed, RunScreened, RunStarted, RunSucceeded
from base.llm import LLM, Budget
from base.records import Comparison, Idea, IdeaOutcome, MetricResult, RunEntry, ScreenRecord
from base.stats import Test, better, compare, format_p, normalized
from base.store import Run, Store
from base.template import Template
from scientist import runner
from scientist.config import RunConfig
from scientist.proposers import Attempt, IdeaContext, Proposal, Proposer


@dataclass
class Cascade:
    """A session's evaluation cascade (--cascade): what a screen costs, and the bar screens are held against.

    The bar (base.cascade) is the screen of the best result fully evaluated so far: the baseline's to begin
    with, then that of any promoted candidate whose full result beats it. Shared by the ideas in flight.
    """

    template: Template         # the template with [screen] laid over it (Template.screened)
    seeds: int                 # the screens' seeds
    cost: float                # what a screen counts against --budget-evaluations (base.cascade.screen_cost)
    baseline_screen: Run
    bar: str = "baseline"      # whose screen the bar is
    bar_screen: Run | None = None
    bar_full: float | None = None  # the full result's mean whose screen is the bar
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def decide(self, screen: Run, metric: str, direction: str) -> ScreenDecision:
        """The promotion rule against the bar as it stands now."""
        with self._lock:
            bar, name = self.bar_screen or self.baseline_screen, self.bar
        return decide(screen.result.summary(metric).values, bar.result.summary(metric).values, direction, name,
                      self.template.spec.screen.margin)

    def offer(self, name: str, full: Run, screen: Run, metric: str, direction: str) -> None:
        """A promoted candidate's full result: its screen becomes the bar when the result beats the best so far."""
        mean = full.result.summary(metric).mean
        with self._lock:
            if self.bar_full is None or better(mean, self.bar_full, direction):
                self.bar, self.bar_screen, self.bar_full = name, screen, mean


@dataclass(frozen=True)
class Session:
    """One session as it runs, passed as one: what it was asked, where it records, what it may spend, whom it tells."""

    cfg: RunConfig
    store: Store
    id: int
    budget: Budget
    report: Reporter
    executor: runner.Executor | None = None     # where runs compute (None: in the calling thread)
    cascade: Cascade | None = None              # with --cascade: candidates are screened before the full evaluation
    # Set to stop the runs in flight: one idea stopped (budget, model error, Ctrl-C), so the others end too.
    cancel: threading.Event = field(default_factory=threading.Event)

    def llm(self) -> LLM:
        """A client of the session's model: its calls recorded under the session, paid from its budget."""
        return self.cfg.model_spec().client(recorder=self.store.recorder(self.id), budget=self.budget,
                                            forms=self.store.response_forms())


def compare_runs(run: Run, baseline: Run, metric: str, direction: str, test: Test = "welch") -> Comparison:
    """The run's main metric against the baseline's over seeds (base.stats.compare).

    The paired test pairs seed s with seed s only where the runs share seeds and data: the same
    template content (its train_seed and data), the same draw of the home's secrets (held-out data)
    and the same number of seeds.
    """
    shared = (run.template_hash == baseline.template_hash and run.seeds == baseline.seeds
              and (run.draw or 0) == (baseline.draw or 0))
    return compare(run.result.summary(metric).values, baseline.result.summary(metric).values, direction, test=test,
                   shared_seeds=shared)


def describe_result(run: Run, baseline: Run | None, metric: str, direction: str,
                    test: Test = "welch") -> tuple[str, Comparison | None]:
    """A run's result in words for the model, and its significance test against the baseline."""
    info = run.result
    m = info.summary(metric)
    text = f"{metric} = {m.mean:.4f} ± {m.stderr:.4f} (95% CI {m.ci95[0]:.4f} to {m.ci95[1]:.4f}, " \
           f"n={m.n}, {'higher' if direction == 'max' else 'lower'} is better)"
    others = [f"{k} = {v.mean:.4f}" for k, v in info.metrics.items() if k != metric]
    if others:
        text += "; also " + ", ".join(others)
    comparison = None
    if baseline is not None:
        comparison = compare_runs(run, baseline, metric, direction, test)
        b = baseline.result.summary(metric)
        text += (f". Baseline {b.mean:.4f} ± {b.stderr:.4f}; {comparison.test} "
                 f"{format_p(comparison.p_value)}: {comparison.verdict}")
    return text, comparison


def metric_result(run: Run, comparison: Comparison | None, baseline: Run, metric: str,
                  direction: str) -> MetricResult:
    """A successful run's main metric as summary.json records it."""
    m = run.result.summary(metric)
    base_mean = baseline.result.summary(metric).mean
    return MetricResult(name=metric, mean=m.mean, stderr=m.stderr, ci95=m.ci95, n=m.n, values=m.values,
                        comparison=comparison,
                        normalized=normalized(m.mean, base_mean, direction) if base_mean != 0 else None)


@dataclass
class IdeaLog:
    """Everything recorded about one idea's attempts; `record` is the one place an attempt is written down."""

    store: Store
    idea_id: int
    name: str
    report: Reporter
    direction: str
    history: list[Attempt] = field(default_factory=list)    # what the proposer sees of earlier attempts
    entries: list[RunEntry] = field(default_factory=list)   # what summary.json lists
    notes: list[str] = field(default_factory=list)          # notes.md, for the paper writer
    best: RunEntry | None = None

    def record(self, entry: RunEntry, attempt: Attempt, note: str, *, spend_usd: float | None = None,
               cached: bool = False) -> None:
        """An attempt ended: to the store, the proposer's history, summary entries, notes and the display.

        spend_usd is the session's spend once the attempt reached the sandbox (None for no usable edit);
        cached says its run was reused from the store.
        """
        self.store.save_step(self.idea_id, entry.run, entry.attempt, status=entry.status, run_id=entry.run_id,
                             reason=entry.reason, screen_run_id=entry.screen.run_id if entry.screen else None)
        self.history.append(attempt)
        self.entries.append(entry)
        self.notes.append(note)
        m = entry.metric
        if m is None:
            self.report.event(RunFailed(idea=self.name, run=entry.run, attempt=entry.attempt, status=entry.status,
                                        reason=entry.reason, spend_usd=spend_usd))
            return
        if self.best is None or better(m.mean, self.best.metric.mean, self.direction):
            self.best = entry
        self.report.event(RunSucceeded(idea=self.name, run=entry.run, attempt=entry.attempt, metric=m.mean,
                                       stderr=m.stderr, verdict=m.comparison.verdict, cached=cached,
                                       spend_usd=spend_usd, best=self.best.metric.mean))


def run_idea(s: Session, *, idx: int, idea: Idea, folder: str, proposer: Proposer, baseline: Run) -> IdeaOutcome:
    """Run the experiments of one idea; returns its outcome for summary.json."""
    cfg, store, budget, report, session_id = s.cfg, s.store, s.budget, s.report, s.id
    spec = cfg.template.spec
    metric, direction = spec.metric.name, spec.metric.direction
    baseline_text, _ = describe_result(baseline, None, metric, direction)
    idea_id = store.save_idea(session_id, idx, idea.model_dump(), status="running")
    log = IdeaLog(store, idea_id, idea.name, report, direction,
                  notes=[f"# {idea.title}", "", f"Hypothesis: {idea.hypothesis}", ""])
    files = cfg.template.editable_sources()
    reason: str | None = None

    for run_idx in range(1, cfg.runs + 1):
        succeeded = done = ended = False
        for attempt in range(1, cfg.attempts + 1):
            budget.check()
            report.event(RunStarted(idea=idea.name, run=run_idx, runs=cfg.runs, attempt=attempt,
                                    spend_usd=budget.spent_usd))
            ctx = IdeaContext(idx=idx, idea=idea, run_idx=run_idx, runs=cfg.runs, attempt=attempt,
                              attempts=cfg.attempts, files=files, history=log.history, baseline=baseline_text,
                              direction=direction)
            proposal = proposer.propose(ctx)
            if proposal.done:
                done = True
                log.notes.append(f"- Stopped before run {run_idx}: {proposal.note}.")
                break
            if proposal.sources is None:
                why = proposal.failure or "no candidate proposed"
                log.record(RunEntry(run=run_idx, attempt=attempt, status="no_edit", reason=why),
                           Attempt(run_idx, attempt, "no_edit", None, reason=why),
                           f"- Run {run_idx}, attempt {attempt}: no usable edit ({why}).")
                if proposal.final:
                    ended, reason = True, f"run {run_idx}, attempt {attempt}: {why}"
                    break
                continue
            succeeded = _evaluate(s, log, proposal, ctx, baseline, folder)
            if succeeded:
                files = proposal.sources
                store.save_idea(session_id, idx, idea.model_dump(), status="running", best_run_id=log.best.run_id)
                break
        if done or ended:
            break
        if not succeeded:
            last = log.history[-1].reason if log.history else "no attempt was made"
            # A screened-out attempt counts as one that gave no result: the next attempt tried another candidate.
            out = any(a.status == "screened_out" for a in log.history if a.run_idx == run_idx)
            reason = (f"run {run_idx} {'was screened out or ' if out else ''}failed in all {cfg.attempts} attempts; "
                      f"last: {last}")
            break

    status = "done" if log.best is not None else "failed"
    if status == "failed" and reason is None:
        reason = "no run succeeded"
    if status == "done" and reason is not None:
        log.notes.append(f"- Stopped early: {reason}.")
        reason = None
    notes_text = "\n".join(log.notes) + "\n"
    (cfg.out_dir / folder).mkdir(parents=True, exist_ok=True)
    (cfg.out_dir / folder / "notes.md").write_text(notes_text)
    store.save_idea(session_id, idx, idea.model_dump(), status=status, reason=reason, notes=notes_text,
                    best_run_id=log.best.run_id if log.best else None)
    report.event(IdeaDone(name=idea.name, status=status, reason=reason))
    return IdeaOutcome(idx=idx, name=idea.name, title=idea.title, folder=folder, status=status, reason=reason,
                       best=log.best, runs=log.entries)


def _evaluate(s: Session, log: IdeaLog, proposal: Proposal, ctx: IdeaContext, baseline: Run, folder: str) -> bool:
    """Run the proposal's files sealed in the sandbox and record the attempt; returns whether it succeeded.

    With the cascade on, the candidate is screened first (_screen) and evaluated fully only when promoted.
    """
    cfg, store, budget = s.cfg, s.store, s.budget
    spec = cfg.template.spec
    entry = RunEntry(run=ctx.run_idx, attempt=ctx.attempt, status="failed", note=proposal.note)
    dest = cfg.out_dir / folder / entry.folder
    req = runner.EvalRequest(template=cfg.template, sources=proposal.sources, seeds=cfg.seeds, sandbox=cfg.sandbox,
                             home=cfg.home, out_dir=dest.resolve(), reuse_failed=True,
                             label=f"{folder}/run_{ctx.run_idx}")
    report = log.report
    screen = None
    if s.cascade is not None:
        screen = _screen(s, log, req, entry, proposal, ctx)
        if screen is None:  # its screen failed or kept it out: recorded
            return False
        entry.screen = screen[1]
        # Recorded now, so a session stopped before the full evaluation still counts the screen (and its
        # decision); the full run's status replaces it.
        store.save_step(log.idea_id, ctx.run_idx, ctx.attempt, status="promoted", screen_run_id=screen[1].run_id)
    budget.reserve_evaluation()
    report.event(RunComputing(idea=log.name, run=ctx.run_idx, attempt=ctx.attempt, run_dir=str(dest),
                              expected_s=store.typical_seconds(cfg.template.name, cfg.seeds)))
    res = runner.evaluate(req, store, s.executor, s.cancel)  # a reused run's files are written into dest too
    if res.cached:
        budget.refund_evaluation()
    run = res.run
    entry.run_id, entry.run_dir = run.id, str(dest)
    what = f"- Run {ctx.run_idx} (attempt {ctx.attempt}): {proposal.note}."
    if run.status != "ok":
        entry.reason = run.reason
        log.record(entry, Attempt(ctx.run_idx, ctx.attempt, "failed", proposal.sources, reason=run.reason,
                                  log_tail=run.error_tail or "", meta=proposal.meta),
                   f"{what} Failed: {run.reason}.", spend_usd=budget.spent_usd)
        return False
    summary, comparison = describe_result(run, baseline, spec.metric.name, spec.metric.direction, cfg.test)
    entry.status = "ok"
    entry.metric = metric_result(run, comparison, baseline, spec.metric.name, spec.metric.direction)
    m = entry.metric
    if screen is not None:
        s.cascade.offer(f"{log.name} run {ctx.run_idx}", run, screen[0], spec.metric.name, spec.metric.direction)
    log.record(entry, Attempt(ctx.run_idx, ctx.attempt, "ok", proposal.sources, summary=summary, metric=m.mean,
                              meta=proposal.meta),
               f"{what} Result: {summary}.", spend_usd=budget.spent_usd, cached=res.cached)
    return True


def _screen(s: Session, log: IdeaLog, req: runner.EvalRequest, entry: RunEntry, proposal: Proposal,
            ctx: IdeaContext) -> tuple[Run, ScreenRecord] | None:
    """The cascade's screen of an attempt's candidate: (its screen run, its record) when promoted; else the attempt
    is recorded (its screen failed, or it was screened out) and None is returned.

    A screen counts against the evaluation budget at the cascade's cost (a reused one is free). A decision an
    earlier invocation of the session recorded for this attempt and screen stands: resuming replays it.
    """
    cascade, store, budget, report = s.cascade, s.store, s.budget, log.report
    metric, direction = s.cfg.template.spec.metric.name, s.cfg.template.spec.metric.direction
    sreq = runner.screen_request(req)
    budget.reserve_evaluation(cascade.cost)
    report.event(RunComputing(idea=log.name, run=ctx.run_idx, attempt=ctx.attempt, run_dir=str(sreq.out_dir),
                              expected_s=store.typical_seconds(s.cfg.template.name, sreq.seeds, screen=True),
                              screen=True))
    res = runner.evaluate(sreq, store, s.executor, s.cancel)
    if res.cached:
        budget.refund_evaluation(cascade.cost)
    run = res.run
    what = f"- Run {ctx.run_idx} (attempt {ctx.attempt}): {proposal.note}."
    if run.status != "ok":
        entry.reason = f"its screen failed: {run.reason}"
        entry.screen = ScreenRecord(run_id=run.id, run_dir=str(sreq.out_dir), seeds=sreq.seeds, promoted=False,
                                    reason=entry.reason)
        log.record(entry, Attempt(ctx.run_idx, ctx.attempt, "failed", proposal.sources, reason=entry.reason,
                                  log_tail=run.error_tail or "", meta=proposal.meta),
                   f"{what} Its screen failed: {run.reason}.", spend_usd=budget.spent_usd)
        return None
    decision = cascade.decide(run, metric, direction)
    recorded = next((st for st in store.steps(log.idea_id) if (st["run_idx"], st["attempt"]) == (ctx.run_idx,
                     ctx.attempt) and st["screen_run_id"] == run.id), None)
    if recorded is not None:  # decided before the session was resumed (with several ideas in flight, the bar may
        decision = replace(decision, promoted=recorded["status"] != "screened_out")  # have moved in another order)
    report.event(RunScreened(idea=log.name, run=ctx.run_idx, attempt=ctx.attempt, screen_mean=decision.mean,
                             screen_stderr=decision.stderr, bar=decision.bar, bar_mean=decision.bar_mean,
                             margin=decision.margin, p_value=decision.p_value, promoted=decision.promoted,
                             cached=res.cached, spend_usd=budget.spent_usd))
    record = ScreenRecord(run_id=run.id, run_dir=str(sreq.out_dir), seeds=sreq.seeds, promoted=decision.promoted,
                          reason=decision.why)
    if decision.promoted:
        return run, record
    entry.status, entry.reason, entry.screen = "screened_out", f"screened out: {decision.why}", record
    log.record(entry, Attempt(ctx.run_idx, ctx.attempt, "screened_out", proposal.sources, reason=entry.reason,
                              summary=decision.line(metric), meta=proposal.meta),
               f"{what} Screened out: {decision.why}.", spend_usd=budget.spent_usd, cached=res.cached)
    return None
