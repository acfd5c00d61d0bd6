"""The experiment loop of one idea: up to R runs, each with up to A attempts.

    for each run: ask the proposer for files -> sealed run in the sandbox ->
    feed the result (or the error tail, or the timeout) back -> next run,
    continuing from the last version that ran successfully.

Every attempt is recorded in the store as it ends; the sandboxed runs are keyed
by content, so a resumed session gets finished runs back without recomputing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from base.llm import Budget
from base.stats import better, compare, normalized
from base.store import Run, Store
from base.template import Template
from sandbox.backends import Sandbox
from scientist import runner
from scientist.proposers import Attempt, IdeaContext, Proposer


@dataclass(frozen=True)
class LoopConfig:
    """The parts of the run configuration the experiment loop needs."""

    template: Template
    runs: int
    attempts: int
    seeds: int
    sandbox: Sandbox
    home: Path
    out_dir: Path


def describe_result(run: Run, baseline: Run | None, metric: str, direction: str) -> tuple[str, dict | None]:
    """A run's result in words for the model, and its significance test against the baseline."""
    metrics = run.final_info["metrics"]
    m = metrics[metric]
    text = f"{metric} = {m['mean']:.4f} ± {m['stderr']:.4f} (95% CI {m['ci95'][0]:.4f} to {m['ci95'][1]:.4f}, " \
           f"n={m['n']}, {'higher' if direction == 'max' else 'lower'} is better)"
    others = [f"{k} = {v['mean']:.4f}" for k, v in metrics.items() if k != metric]
    if others:
        text += "; also " + ", ".join(others)
    comparison = None
    if baseline is not None:
        comparison = compare(m["values"], baseline.final_info["metrics"][metric]["values"], direction)
        b = baseline.final_info["metrics"][metric]
        text += (f". Baseline {b['mean']:.4f} ± {b['stderr']:.4f}; {comparison['test']} "
                 f"p = {comparison['p_value']:.3g}: {comparison['verdict']}")
    return text, comparison


def run_idea(cfg: LoopConfig, store: Store, *, session_id: int, idx: int, idea: dict, folder: str,
             proposer: Proposer, baseline: Run, budget: Budget, report) -> dict:
    """Run the experiments of one idea; returns its entry for summary.json."""
    spec = cfg.template.spec
    metric, direction = spec.metric.name, spec.metric.direction
    baseline_text, _ = describe_result(baseline, None, metric, direction)
    idea_id = store.save_idea(session_id, idx, idea, status="running")
    files = cfg.template.editable_sources()
    history: list[Attempt] = []
    entries: list[dict] = []
    notes: list[str] = [f"# {idea['title']}", "", f"Hypothesis: {idea.get('hypothesis', '')}", ""]
    best: dict | None = None
    reason: str | None = None

    for run_idx in range(1, cfg.runs + 1):
        succeeded = done = False
        for attempt in range(1, cfg.attempts + 1):
            budget.check()
            report.event("run_start", run=run_idx, runs=cfg.runs, attempt=attempt, spend_usd=budget.spent_usd)
            ctx = IdeaContext(idx=idx, idea=idea, run_idx=run_idx, runs=cfg.runs, attempt=attempt,
                              attempts=cfg.attempts, files=files, history=history, baseline=baseline_text,
                              direction=direction)
            proposal = proposer.propose(ctx)
            if proposal.done:
                done = True
                notes.append(f"- Stopped before run {run_idx}: {proposal.note}.")
                break
            if proposal.sources is None:
                why = proposal.failure or "no candidate proposed"
                history.append(Attempt(run_idx, attempt, "no_edit", None, reason=why))
                store.save_step(idea_id, run_idx, attempt, status="no_edit", reason=why)
                entries.append({"run": run_idx, "attempt": attempt, "status": "no_edit", "reason": why})
                notes.append(f"- Run {run_idx}, attempt {attempt}: no usable edit ({why}).")
                report.event("run_done", run=run_idx, attempt=attempt, status="no_edit", reason=why)
                continue
            dest = cfg.out_dir / folder / (f"run_{run_idx}" if attempt == 1 else f"run_{run_idx}_attempt_{attempt}")
            req = runner.EvalRequest(template=cfg.template, sources=proposal.sources, seeds=cfg.seeds,
                                     sandbox=cfg.sandbox, home=cfg.home, out_dir=dest.resolve(),
                                     reuse_failed=True, label=f"{folder}/run_{run_idx}")
            res = runner.evaluate(req, store)  # a reused run's files are written into dest too
            run = res.run
            store.save_step(idea_id, run_idx, attempt, status=run.status, run_id=run.id, reason=run.reason)
            entry = {"run": run_idx, "attempt": attempt, "status": run.status, "run_id": run.id,
                     "run_dir": str(dest), "note": proposal.note}
            if run.status == "ok":
                summary, comparison = describe_result(run, baseline, metric, direction)
                m = run.final_info["metrics"][metric]
                history.append(Attempt(run_idx, attempt, "ok", proposal.sources, summary=summary, metric=m["mean"],
                                       meta=proposal.meta))
                entry.update(metric=_metric_entry(m, comparison, baseline, metric, direction))
                if best is None or better(m["mean"], best["metric"]["mean"], direction):
                    best = {"run": run_idx, "attempt": attempt, "run_id": run.id, "run_dir": str(dest),
                            "metric": entry["metric"]}
                    store.save_idea(session_id, idx, idea, status="running", best_run_id=run.id)
                files = proposal.sources
                succeeded = True
                notes.append(f"- Run {run_idx} (attempt {attempt}): {proposal.note}. Result: {summary}.")
                report.event("run_done", run=run_idx, attempt=attempt, status="ok", metric=m["mean"],
                             stderr=m["stderr"], verdict=comparison["verdict"], best=best["metric"]["mean"],
                             cached=res.cached, spend_usd=budget.spent_usd)
            else:
                history.append(Attempt(run_idx, attempt, "failed", proposal.sources, reason=run.reason,
                                       log_tail=run.error_tail or "", meta=proposal.meta))
                entry["reason"] = run.reason
                notes.append(f"- Run {run_idx} (attempt {attempt}): {proposal.note}. Failed: {run.reason}.")
                report.event("run_done", run=run_idx, attempt=attempt, status="failed", reason=run.reason,
                             spend_usd=budget.spent_usd)
            entries.append(entry)
            if succeeded:
                break
        if done:
            break
        if not succeeded:
            last = history[-1].reason if history else "no attempt was made"
            reason = f"run {run_idx} failed in all {cfg.attempts} attempts; last: {last}"
            break

    status = "done" if best is not None else "failed"
    if status == "failed" and reason is None:
        reason = "no run succeeded"
    if status == "done" and reason is not None:
        notes.append(f"- Stopped early: {reason}.")
        reason = None
    notes_text = "\n".join(notes) + "\n"
    (cfg.out_dir / folder).mkdir(parents=True, exist_ok=True)
    (cfg.out_dir / folder / "notes.md").write_text(notes_text)
    store.save_idea(session_id, idx, idea, status=status, reason=reason, notes=notes_text,
                    best_run_id=best["run_id"] if best else None)
    report.event("idea_done", name=idea["name"], status=status, reason=reason)
    return {"idx": idx, "name": idea["name"], "title": idea["title"], "folder": folder, "status": status,
            "reason": reason, "best": best, "runs": entries}


def _metric_entry(m: dict, comparison: dict | None, baseline: Run, metric: str, direction: str) -> dict:
    base_mean = baseline.final_info["metrics"][metric]["mean"]
    entry = {"name": metric, "mean": m["mean"], "stderr": m["stderr"], "ci95": m["ci95"], "n": m["n"],
             "values": m["values"], "comparison": comparison}
    if base_mean != 0:
        entry["normalized"] = normalized(m["mean"], base_mean, direction)
    return entry
