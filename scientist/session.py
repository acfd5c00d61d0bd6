"""`scientist run`: baseline, ideas, experiments per idea, papers, reviews; resumable and within budget.

A session is identified by its output folder. Resuming is replay: the model's
answers are recorded by request hash and the sandboxed runs by content hash, so
running the same command again walks the same path for free and continues at
the first step that had not finished. The session's summary lives in memory as a
`SessionSummary` and is written to summary.json whenever it changes.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, replace
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from base.cascade import rule, screen_cost
from base.events import (
    BaselineMeasured,
    ExecutorChosen,
    IdeaAccepted,
    IdeaDropped,
    Reporter,
    Reviewed,
    ReviewFailed,
    SessionStarted,
    Stage,
    Stopped,
    TemplateChanged,
)
from base.formats import FormatError
from base.llm import Budget, BudgetExceeded, LLMError
from base.records import (
    ArchiveEntry,
    BaselineResult,
    CascadeSummary,
    Idea,
    IdeaOutcome,
    MetricSpec,
    ReviewSummary,
    SessionBest,
    SessionSummary,
    write_json,
)
from base.search_space import SearchSpaceError
from base.stats import PAIRED_WHY, Test, better, holm_adjust
from base.store import Run, Store
from base.template import Template
from sandbox.backends import Sandbox
from scientist import runner
from scientist.config import RunConfig, Settings
from scientist.executors import RayUnavailable, check_reachable, default_workers, make_executor
from scientist.experiment import Cascade, Session, run_idea
from scientist.literature import LiteratureError, cached_search
from scientist.proposers import NoValidAnswer, Proposer
from scientist.proposers.evolve import EvolveProposer, load_search_space
from scientist.proposers.llm import LLMProposer
from scientist.writeup import RunFilesMissing, write_papers

DUPLICATE_SIMILARITY = 0.8
EXIT_OK, EXIT_ERROR, EXIT_BUDGET, EXIT_INTERRUPTED = 0, 1, 3, 130


def significance_test(test: Test = "welch") -> str:
    """How a session tests its runs against the baseline, in words (summary.json; the paper writer reads it)."""
    how = (f"paired t-test (two-sided) over seeds ({PAIRED_WHY})" if test == "paired"
           else "Welch's t-test (two-sided) over seeds")
    return (f"{how}, alpha 0.05 (an exact permutation or sign-flip test where the t statistic is undefined); "
            "verdict_holm adjusts for every run of the session compared with the baseline (Holm-Bonferroni)")


def similarity(a: Idea, b: Idea) -> float:
    """How alike two ideas read: word-sequence similarity of title, hypothesis and experiment."""
    def words(i: Idea) -> list[str]:
        return " ".join((i.title, i.hypothesis, i.experiment)).lower().split()

    if a.name == b.name:
        return 1.0
    return SequenceMatcher(None, words(a), words(b), autojunk=False).ratio()


def find_duplicate(idea: Idea, previous: list[ArchiveEntry]) -> str | None:
    """The name of an earlier idea this one nearly repeats, if any."""
    for p in previous:
        if similarity(idea, p.idea) >= DUPLICATE_SIMILARITY:
            return p.idea.name
    return None


def ensure_baseline(cfg: RunConfig, store: Store, executor: runner.Executor | None = None) -> Run:
    """The template's baseline for these seeds: computed once per content hash, written into the run folder."""
    dest = cfg.out_dir / "baseline"
    req = runner.EvalRequest(template=cfg.template, sources=cfg.template.editable_sources(), seeds=cfg.seeds,
                             sandbox=cfg.sandbox, home=cfg.home, out_dir=dest.resolve(), kind="baseline")
    res = runner.evaluate(req, store, executor)  # a cached baseline's files are written into dest too
    if not res.ok:
        raise BaselineFailed(f"the baseline of {cfg.template.name} failed: {res.run.reason}")
    return res.run


def ensure_cascade(cfg: RunConfig, store: Store, baseline: Run, executor: runner.Executor | None = None) -> Cascade:
    """The session's cascade: the baseline's screen (computed once per screened content hash, written into
    out/baseline/screen), which starts the bar, and what a screen costs against the evaluation budget."""
    req = runner.screen_request(runner.EvalRequest(
        template=cfg.template, sources=cfg.template.editable_sources(), seeds=cfg.seeds, sandbox=cfg.sandbox,
        home=cfg.home, out_dir=(cfg.out_dir / "baseline").resolve(), kind="baseline"))
    res = runner.evaluate(req, store, executor)
    if not res.ok:
        raise BaselineFailed(f"the baseline's screen of {cfg.template.name} failed: {res.run.reason}")
    return Cascade(template=req.template, seeds=req.seeds, cost=screen_cost(res.run.timings, baseline.timings),
                   baseline_screen=res.run)


def cascade_summary(cascade: Cascade | None, template: Template, store: Store,
                    session_id: int) -> CascadeSummary | None:
    """The session's cascade for summary.json: its rule, the screen and its cost, and how many were screened.

    Counted from the store's steps of all the session's ideas, those a stop left unfinished too: their screens
    were spent as well.
    """
    if cascade is None:
        return None
    steps = [st for i in store.ideas(session_id) for st in store.steps(i["id"]) if st["screen_run_id"] is not None]
    out = sum(st["status"] == "screened_out" for st in steps)
    failed = sum(st["status"] == "failed" and st["run_id"] is None for st in steps)  # the screen itself failed
    return CascadeSummary(rule=rule(template.spec.screen.margin),
                          screen=template.spec.screen.model_dump(exclude_defaults=True),
                          seeds=cascade.seeds, cost=cascade.cost, baseline_screen_run_id=cascade.baseline_screen.id,
                          screened=len(steps), promoted=len(steps) - out - failed, screened_out=out)


class BaselineFailed(Exception):
    """The shipped template does not run here: nothing can be compared with it."""


class OutDirTaken(Exception):
    """--out names the folder of another kind of session (template, proposer or model); one line for the user."""


def _archive(store: Store, template: Template, session_id: int, ids: list[int] | None,
             campaign: str | None = None) -> list[ArchiveEntry]:
    """The template's seed ideas, then its earlier ideas from other sessions with their best metric.

    As in The AI Scientist, the seed ideas start the archive: the LLM proposer is shown them as ideas
    already had, and an idea that nearly repeats one is dropped. Store ideas are frozen at session start.
    A night of a campaign sees the campaign's earlier nights only.
    """
    out = [ArchiveEntry(idea=idea) for idea in template.seed_ideas()]
    for row in store.ideas(template=template.name):
        if row["session_id"] == session_id or (ids is not None and row["id"] not in ids):
            continue
        if campaign is not None and row["campaign"] != campaign:
            continue
        best = store.get(row["best_run_id"]) if row["best_run_id"] else None
        out.append(ArchiveEntry(id=row["id"], idea=Idea.model_validate(row["idea"]),
                                metric=best.metric_mean if best else None))
    return out


def _run_ideas(s: Session, proposer: Proposer, archive: list[ArchiveEntry], baseline: Run,
               outcomes: dict[int, IdeaOutcome]) -> None:
    """Up to cfg.ideas ideas, up to cfg.workers of them in flight; their outcomes go into `outcomes` by index as
    they finish, so a session that stops (budget, model error, Ctrl-C) still reports the ideas that ended.

    Ideas are proposed one at a time, here, from the archive as it stands when a worker frees:
    earlier ideas with their best metric, and ideas still running as pending (no metric), so the
    evolve proposer never picks the same parents twice. Each idea's own loop runs in a thread of its
    own and stays sequential. An idea is recorded in the store as soon as it is proposed, and a
    resumed session takes its ideas from there: the same ideas, in the same order, however the
    earlier session's ideas interleaved.
    """
    cfg, budget, report = s.cfg, s.budget, s.report
    proposed = {row["idx"]: row for row in s.store.ideas(session_id=s.id)}
    seen: list[ArchiveEntry] = []
    running: dict[Future, tuple[int, ArchiveEntry]] = {}
    idx = accepted = 0
    pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="idea")
    try:
        while True:
            while accepted < cfg.ideas and idx < 2 * cfg.ideas and len(running) < cfg.workers:
                budget.check()
                report.event(Stage(stage="ideas", spend_usd=budget.spent_usd))
                row = proposed.get(idx)
                idea = Idea.model_validate(row["idea"]) if row else proposer.next_idea(idx, archive + seen)
                entry = ArchiveEntry(idea=idea)
                dropped = _drop(s, idx, idea, row, proposer, archive + seen)
                seen.append(entry)
                if not dropped:
                    s.store.save_idea(s.id, idx, idea.model_dump(), status="running")
                    report.event(IdeaAccepted(idx=accepted, total=cfg.ideas, name=idea.name, title=idea.title))
                    report.event(Stage(stage="experiments", spend_usd=budget.spent_usd))
                    future = pool.submit(run_idea, s, idx=idx, idea=idea, folder=f"{idx:02d}_{idea.name}",
                                         proposer=proposer, baseline=baseline)
                    running[future] = (idx, entry)
                    accepted += 1
                idx += 1
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                i, entry = running.pop(future)
                outcome = future.result()  # an idea's stop (budget, model error, Ctrl-C) stops the session
                entry.metric = outcome.best.metric.mean if outcome.best else None
                outcomes[i] = outcome
    except BaseException:
        s.cancel.set()  # the other ideas' runs end now, recorded as interrupted, to be resumed
        for future in running:
            try:
                future.result()
            except BaseException:  # noqa: BLE001 - they end by the cancel; the first stop is reported
                pass
        raise
    finally:
        pool.shutdown(wait=True)


def _drop(s: Session, idx: int, idea: Idea, row: dict | None, proposer: Proposer,
          previous: list[ArchiveEntry]) -> bool:
    """Whether an idea is dropped (a near-duplicate, or not novel with --literature), recorded as such."""
    report = s.report
    if row is not None and row["status"] in ("duplicate", "not_novel"):  # decided before the session was resumed
        report.event(IdeaDropped(name=idea.name, reason=row["reason"]))
        return True
    if row is not None:
        return False
    duplicate = find_duplicate(idea, previous) if proposer.may_repeat else None
    if duplicate is not None:
        why = f"near-duplicate of {duplicate}"
        s.store.save_idea(s.id, idx, idea.model_dump(), status="duplicate", reason=why)
        report.event(IdeaDropped(name=idea.name, reason=why))
        return True
    if s.cfg.literature is not None and isinstance(proposer, LLMProposer):
        report.event(Stage(stage="literature", spend_usd=s.budget.spent_usd))
        novel, why = check_novelty(s, proposer, idea)
        if not novel:
            s.store.save_idea(s.id, idx, idea.model_dump(), status="not_novel", reason=why)
            report.event(IdeaDropped(name=idea.name, reason=f"not novel: {why}"))
            return True
    return False


def make_proposer(s: Session, baseline: Run) -> Proposer:
    """The proposer the configuration asks for, ready to propose."""
    cfg = s.cfg
    if cfg.proposer != "llm":
        return EvolveProposer(load_search_space(cfg.template), cfg.template.spec.metric.direction, seed=cfg.seed,
                              baseline_metric=baseline.metric_mean, sample_only=cfg.proposer == "random")
    return LLMProposer(s.llm(), cfg.template, reflections=cfg.reflections, best=cfg.best_known)


def check_novelty(s: Session, proposer: LLMProposer, idea: Idea) -> tuple[bool, str]:
    """Search the literature for the idea's title and let the model judge; the papers go into the idea."""
    cfg = s.cfg
    papers = cached_search(s.store, cfg.literature, idea.title, base_url=cfg.literature_url,
                           api_key=cfg.literature_key, retries=cfg.retries, budget=s.budget)
    found = [asdict(p) for p in papers]
    idea.literature = [{k: p[k] for k in ("title", "year", "venue", "url")} for p in found]
    return proposer.judge_novelty(idea, found)


def run_config(settings: Settings, template: Template, sandbox: Sandbox, **where: Any) -> RunConfig:
    """The settings resolved for one session: the template's seeds and one worker per GPU given where they were
    left out; `where` holds the rest (home, out_dir, campaign, ...). ValidationError as RunConfig raises it."""
    return RunConfig.of(settings, template=template, sandbox=sandbox, seeds=settings.seeds or template.spec.seeds,
                        workers=settings.workers or default_workers(settings.gpus), **where)


class CannotStart(Exception):
    """The session cannot start as configured: one line naming what to fix, before anything is computed or paid."""


def check_can_start(cfg: RunConfig, store: Store) -> None:
    """CannotStart unless the session can start: its Ray cluster answers, its search space loads, its model has
    an API key, its folder is its own. Checked before the baseline is spent."""
    try:
        if cfg.executor == "ray":
            check_reachable(cfg.ray_address)
        if cfg.proposer != "llm":
            load_search_space(cfg.template)
        check_model(cfg)
        claim_out_dir(cfg, store)
    except (RayUnavailable, SearchSpaceError, LLMError, OutDirTaken) as e:
        raise CannotStart(str(e)) from None


def check_model(cfg: RunConfig) -> None:
    """Fail before any work when the model needs an API key that is not in the environment."""
    if cfg.proposer == "llm":
        cfg.model_spec().check()


def claim_out_dir(cfg: RunConfig, store: Store) -> None:
    """Make sure cfg.out_dir is this session's to resume or to start.

    The store knows sessions by their folder. A folder whose session was of another template,
    proposer or model is refused while it still holds that session's summary.json; once the user
    has deleted it, the old session keeps its records but lets go of the folder.
    """
    other = store.session_at(cfg.out_dir)
    if other is None or (other["template"], other["proposer"], other["model"]) == (
            cfg.template.name, cfg.proposer, cfg.model):
        return
    if (cfg.out_dir / "summary.json").is_file():
        what = other["model"] or other["proposer"]
        raise OutDirTaken(f"{cfg.out_dir} holds a session of template {other['template']} ({what}); pass another "
                          "--out, or delete that folder to start a new session there")
    store.release_out_dir(other["id"])


def _note_template_change(cfg: RunConfig, store: Store, session_id: int, stored: dict, report: Reporter) -> dict:
    """Say so when the template changed since the session started (its runs are then computed anew)."""
    files, digest = cfg.template.file_hashes(), cfg.template.content_hash()
    before = stored.get("template_files")
    if before is not None and stored.get("template_hash") != digest:
        changed = sorted(f for f in set(before) | set(files) if before.get(f) != files.get(f))
        report.event(TemplateChanged(template=cfg.template.name, files=changed))
    updated = {**stored, "template_hash": digest, "template_files": files}
    store.set_session_args(session_id, updated)
    return updated


def run_session(cfg: RunConfig, store: Store, report: Reporter) -> tuple[int, SessionSummary]:
    """Run (or resume) the whole session; always writes summary.json; returns the exit code and the summary."""
    started = time.time()
    claim_out_dir(cfg, store)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    session_id, resumed, stored = store.open_session(
        out_dir=cfg.out_dir, template=cfg.template.name, proposer=cfg.proposer, model=cfg.model,
        args=cfg.to_json(), campaign=cfg.campaign)
    budget = Budget(usd=cfg.budget.usd, minutes=cfg.budget.minutes, spent_usd=store.session_cost(session_id)[0],
                    evaluations=cfg.budget.evaluations)
    report.event(SessionStarted(template=cfg.template.name, proposer=cfg.proposer, out_dir=str(cfg.out_dir),
                                resumed=resumed))
    stored = _note_template_change(cfg, store, session_id, stored, report)
    s = Session(cfg, store, session_id, budget, report)
    finished: dict[int, IdeaOutcome] = {}
    write = False
    baseline: Run | None = None
    status, reason, code = "complete", None, EXIT_OK
    try:
        budget.check()
        report.event(Stage(stage="baseline"))
        executor = make_executor(cfg.executor, cfg.workers, cfg.sandbox.gpus, cfg.ray_address)
        s = replace(s, executor=executor)
        profile = f"profile {cfg.template.spec.profile or 'none'} on {cfg.template.device.upper()}"
        report.event(ExecutorChosen(description=f"{executor.describe()}; {profile}"))
        baseline = ensure_baseline(cfg, store, executor)
        m = baseline.result.summary(cfg.template.spec.metric.name)
        report.event(BaselineMeasured(metric=cfg.template.spec.metric.name, mean=m.mean, ci95=m.ci95))
        if cfg.cascade:
            s = replace(s, cascade=ensure_cascade(cfg, store, baseline, executor))
        archive_ids = stored.get("archive_ids")
        archive = _archive(store, cfg.template, session_id, archive_ids, cfg.campaign)
        if archive_ids is None:  # freeze the archive, so a resumed session asks the same questions
            store.set_session_args(session_id, {**stored, "archive_ids": [a.id for a in archive if a.id is not None]})
        proposer = make_proposer(s, baseline)
        _run_ideas(s, proposer, archive, baseline, finished)
        write = bool(finished)  # papers only for a session whose ideas all ran (a stopped one resumes first)
        if len(finished) < cfg.ideas:
            status, reason = "stopped", (f"only {len(finished)} of {cfg.ideas} ideas were new; the others were "
                                         "near-duplicates or, with --literature, not novel")
    except BudgetExceeded as e:
        status, reason, code = "stopped", str(e), EXIT_BUDGET
    except (LLMError, NoValidAnswer, BaselineFailed, LiteratureError, RayUnavailable) as e:
        status, reason, code = "stopped", str(e), EXIT_ERROR
    except KeyboardInterrupt:
        status, reason, code = "stopped", "interrupted by the user", EXIT_INTERRUPTED
    finally:
        ideas = [finished[i] for i in sorted(finished)]  # also those that ended before a stop
        if status != "complete":
            report.event(Stopped(reason=reason))
        store.close_session(session_id, status, reason)
        summary = _summary(cfg, store, session_id, baseline, ideas, status, reason, time.time() - started)
        summary.cascade = cascade_summary(s.cascade, cfg.template, store, session_id)
        _write_outputs(cfg, store, session_id, summary)
    if cfg.writeup and baseline is not None and write and code != EXIT_INTERRUPTED:
        code = max(code, _writeup(s, summary))
        if cfg.review and cfg.model and code in (EXIT_OK, EXIT_ERROR):
            code = max(code, _review(s, summary))
        # the papers' and reviews' model calls count too
        cost, calls, prompt_tokens, completion_tokens = store.session_cost(session_id)
        summary.cost_usd, summary.llm_calls = cost, calls
        summary.tokens = {"prompt": prompt_tokens, "completion": completion_tokens}
        summary.write(cfg.out_dir)
    report.event(Stage(stage=status, spend_usd=store.session_cost(session_id)[0]))
    return code, summary


def _review(s: Session, summary: SessionSummary) -> int:
    """Review every compiled paper with the run's model; scores go to summary.json and the store."""
    from reviewer.batch import llm_factory, review_one_paper
    from reviewer.review import ReviewSettings, default_fewshot

    cfg, budget, report = s.cfg, s.budget, s.report
    settings = ReviewSettings(ensemble=cfg.review_ensemble, reflections=cfg.review_reflections,
                              fewshot=default_fewshot(), protocol=cfg.review_protocol)
    make_llm = llm_factory(cfg.model_spec(), recorder=s.store.recorder(s.id), budget=budget,
                           forms=s.store.response_forms())
    code = EXIT_OK
    for entry in summary.ideas:
        if entry.paper is None or entry.paper.status != "ok":
            continue
        report.event(Stage(stage=f"review {entry.name}", spend_usd=budget.spent_usd))
        pdf = Path(entry.paper.pdf)
        res = review_one_paper(pdf, make_llm, settings, run_dir=cfg.out_dir, summary=summary)
        path = pdf.parent / "review.json"
        write_json(path, res)
        if res["status"] == "ok":
            rev = res["review"]
            entry.review = ReviewSummary(Overall=rev["Overall"], Decision=rev["Decision"],
                                         Soundness=rev["Soundness"], Confidence=rev["Confidence"], path=str(path))
            s.store.save_review(s.id, entry.idx, rev)
            report.event(Reviewed(name=entry.name, overall=rev["Overall"], decision=rev["Decision"]))
        else:
            entry.review = ReviewSummary(status="error", error=res["error"])
            code = EXIT_BUDGET if res["error"].startswith("budget:") else EXIT_ERROR
            report.event(ReviewFailed(name=entry.name, error=res["error"]))
        summary.write(cfg.out_dir)
    return code


def _writeup(s: Session, summary: SessionSummary) -> int:
    """Write every idea's paper; a budget or model failure here stops cleanly like anywhere else."""
    cfg, report = s.cfg, s.report
    llm = s.llm() if cfg.writer == "llm" else None
    try:
        papers = write_papers(summary, cfg.out_dir, cfg.template, llm=llm, store=s.store, report=report)
    except BudgetExceeded as e:
        report.event(Stopped(reason=f"writeup: {e}"))
        return EXIT_BUDGET
    except (LLMError, FormatError, RunFilesMissing) as e:
        report.event(Stopped(reason=f"writeup: {e}"))
        return EXIT_ERROR
    except KeyboardInterrupt:
        report.event(Stopped(reason="interrupted by the user"))
        return EXIT_INTERRUPTED
    # Papers were attempted and none compiled: the run did not deliver what it was asked for.
    if papers and not any(p.status == "ok" for p in papers):
        return EXIT_ERROR
    return EXIT_OK


def _summary(cfg: RunConfig, store: Store, session_id: int, baseline: Run | None, ideas: list[IdeaOutcome],
             status: str, reason: str | None, wall_s: float) -> SessionSummary:
    """The session's summary from what it did, with every comparison adjusted for the session's number of them."""
    cost, calls, prompt_tokens, completion_tokens = store.session_cost(session_id)
    metric = cfg.template.spec.metric
    base = None
    if baseline is not None:
        m = baseline.result.summary(metric.name)
        base = BaselineResult(run_id=baseline.id, mean=m.mean, stderr=m.stderr, ci95=m.ci95, n=m.n,
                              run_dir=str(cfg.out_dir / "baseline"))
    _adjust_for_multiple_comparisons(ideas, metric.direction)
    best = None
    for i in ideas:
        if i.best is not None and (best is None or better(i.best.metric.mean, best.metric.mean, metric.direction)):
            best = SessionBest(idea=i.name, **i.best.model_dump())
    return SessionSummary(
        template=cfg.template.name, template_hash=cfg.template.content_hash(), profile=cfg.template.spec.profile,
        device=cfg.template.device,
        metric=MetricSpec(name=metric.name, direction=metric.direction), proposer=cfg.proposer, model=cfg.model,
        status=status, reason=reason, baseline=base, best=best, ideas=ideas,
        significance_test=significance_test(cfg.test),
        cost_usd=cost, llm_calls=calls, tokens={"prompt": prompt_tokens, "completion": completion_tokens},
        wall_s=wall_s,
        writeup=("skipped (--no-writeup)" if not cfg.writeup else
                 f"{cfg.writer} writer; each idea's paper is under its folder (ideas[].paper)"),
        review=("skipped (--no-review)" if not cfg.review else
                "skipped: no model to review with (--model)" if not cfg.model else
                f"{cfg.review_protocol} protocol, ensemble of {cfg.review_ensemble}, "
                + ("the protocol's reflections" if cfg.review_reflections is None else
                   f"{cfg.review_reflections} reflections") + " (ideas[].review)"),
        config=cfg.to_json())


def _write_outputs(cfg: RunConfig, store: Store, session_id: int, summary: SessionSummary) -> None:
    summary.write(cfg.out_dir)
    all_ideas = [{**r["idea"], "idx": r["idx"], "status": r["status"], "reason": r["reason"]}
                 for r in store.ideas(session_id=session_id)]
    write_json(cfg.out_dir / "ideas.json", all_ideas)


def _adjust_for_multiple_comparisons(ideas: list[IdeaOutcome], direction: str) -> None:
    """Add Holm-adjusted p-values and verdicts to every successful run's comparison, in place."""
    holm_adjust([r.metric.comparison for i in ideas for r in i.runs if r.metric and r.metric.comparison], direction)
