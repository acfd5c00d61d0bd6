"""`scientist run`: baseline, ideas, experiments per idea, summary; resumable and within budget.

A session is identified by its output folder. Resuming is replay: the model's
answers are recorded by request hash and the sandboxed runs by content hash, so
running the same command again walks the same path for free and continues at
the first step that had not finished.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from difflib import SequenceMatcher
from pathlib import Path

from base.formats import FormatError
from base.llm import LLM, Budget, BudgetExceeded, LLMError
from base.stats import better, holm
from base.store import Run, Store
from base.template import Template
from sandbox.backends import Sandbox
from scientist import runner
from scientist.experiment import LoopConfig, run_idea
from scientist.literature import LiteratureError, cached_search
from scientist.proposers import NoValidAnswer, Proposer
from scientist.proposers.evolve import EvolveProposer, load_search_space
from scientist.proposers.llm import LLMProposer
from scientist.writeup import RunFilesMissing, write_papers

DUPLICATE_SIMILARITY = 0.8
EXIT_OK, EXIT_ERROR, EXIT_BUDGET, EXIT_INTERRUPTED = 0, 1, 3, 130


@dataclass(frozen=True)
class RunConfig:
    """Everything `scientist run` was asked to do: CLI flags and the template, in one place."""

    template: Template
    proposer: str                   # 'llm' or 'evolve'
    model: str | None
    api_base: str | None
    ideas: int
    runs: int
    attempts: int
    reflections: int
    seeds: int
    sandbox: Sandbox
    home: Path
    out_dir: Path
    budget_usd: float | None = None
    budget_minutes: float | None = None
    seed: int = 0
    retries: int = 5
    literature: str | None = None   # 'semantic-scholar' or 'openalex'
    literature_url: str | None = None
    literature_key: str | None = None  # from the environment; never written to disk
    writeup: bool = True
    writer: str = "template"          # 'template' (no model) or 'llm'
    review: bool = True
    review_ensemble: int = 5
    review_reflections: int = 5

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("literature_key")
        d["template"] = self.template.name
        d["home"], d["out_dir"] = str(self.home), str(self.out_dir)
        return d


def similarity(a: dict, b: dict) -> float:
    """How alike two ideas read: word-sequence similarity of title, hypothesis and experiment."""
    def words(i: dict) -> list[str]:
        return " ".join(str(i.get(k, "")) for k in ("title", "hypothesis", "experiment")).lower().split()

    if a.get("name") == b.get("name"):
        return 1.0
    return SequenceMatcher(None, words(a), words(b), autojunk=False).ratio()


def find_duplicate(idea: dict, previous: list[dict]) -> str | None:
    """The name of an earlier idea this one nearly repeats, if any."""
    for p in previous:
        if similarity(idea, p["idea"]) >= DUPLICATE_SIMILARITY:
            return p["idea"]["name"]
    return None


def ensure_baseline(cfg: RunConfig, store: Store) -> Run:
    """The template's baseline for these seeds: computed once per content hash, copied into the run folder."""
    dest = cfg.out_dir / "baseline"
    req = runner.EvalRequest(template=cfg.template, sources=cfg.template.editable_sources(), seeds=cfg.seeds,
                             sandbox=cfg.sandbox, home=cfg.home, out_dir=dest.resolve(), kind="baseline")
    res = runner.evaluate(req, store)  # a cached baseline's files are written into dest too
    if not res.ok:
        raise BaselineFailed(f"the baseline of {cfg.template.name} failed: {res.run.reason}")
    return res.run


class BaselineFailed(Exception):
    """The shipped template does not run here: nothing can be compared with it."""


def _archive(store: Store, template: str, session_id: int, ids: list[int] | None) -> list[dict]:
    """Earlier ideas of the template from other sessions, with their best metric (frozen at session start)."""
    out = []
    for row in store.ideas(template=template):
        if row["session_id"] == session_id or (ids is not None and row["id"] not in ids):
            continue
        best = store.get(row["best_run_id"]) if row["best_run_id"] else None
        metric = best.metric_mean if best else None
        out.append({"id": row["id"], "idea": row["idea"], "metric": metric})
    return out


def make_proposer(cfg: RunConfig, store: Store, session_id: int, budget: Budget, baseline: Run) -> Proposer:
    if cfg.proposer == "evolve":
        return EvolveProposer(load_search_space(cfg.template), cfg.template.spec.metric.direction, seed=cfg.seed,
                              baseline_metric=baseline.metric_mean)
    llm = LLM(cfg.model, recorder=store.recorder(session_id), budget=budget, api_base=cfg.api_base,
              max_retries=cfg.retries)
    return LLMProposer(llm, cfg.template, reflections=cfg.reflections)


def check_novelty(cfg: RunConfig, store: Store, proposer: LLMProposer, idea: dict) -> tuple[bool, str]:
    """Search the literature for the idea's title and let the model judge; the papers go into the idea."""
    papers = cached_search(store, cfg.literature, idea["title"], base_url=cfg.literature_url,
                           api_key=cfg.literature_key, retries=cfg.retries)
    found = [asdict(p) for p in papers]
    idea["literature"] = [{k: p[k] for k in ("title", "year", "venue", "url")} for p in found]
    return proposer.judge_novelty(idea, found)


def check_model(cfg: RunConfig) -> None:
    """Fail before any work when the model needs an API key that is not in the environment."""
    if cfg.proposer == "llm":
        LLM(cfg.model, recorder=None, budget=Budget(), api_base=cfg.api_base).check()


class OutDirTaken(Exception):
    """--out names the folder of another kind of session (template, proposer or model); one line for the user."""


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


def run_session(cfg: RunConfig, store: Store, report) -> int:
    """Run (or resume) the whole session; always writes summary.json; returns the exit code."""
    started = time.time()
    claim_out_dir(cfg, store)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    session_id, resumed, stored = store.open_session(
        out_dir=cfg.out_dir, template=cfg.template.name, proposer=cfg.proposer, model=cfg.model,
        args=cfg.to_json())
    budget = Budget(usd=cfg.budget_usd, minutes=cfg.budget_minutes, spent_usd=store.session_cost(session_id)[0])
    report.event("session", template=cfg.template.name, proposer=cfg.proposer, out_dir=str(cfg.out_dir),
                 resumed=resumed)
    ideas: list[dict] = []
    baseline: Run | None = None
    status, reason, code = "complete", None, EXIT_OK
    try:
        budget.check()
        report.event("stage", stage="baseline")
        baseline = ensure_baseline(cfg, store)
        m = baseline.final_info["metrics"][cfg.template.spec.metric.name]
        report.event("baseline", metric=cfg.template.spec.metric.name, mean=m["mean"], ci95=m["ci95"])
        archive_ids = stored.get("archive_ids")
        archive = _archive(store, cfg.template.name, session_id, archive_ids)
        if archive_ids is None:  # freeze the archive, so a resumed session asks the same questions
            store.set_session_args(session_id, {**stored, "archive_ids": [a["id"] for a in archive]})
        proposer = make_proposer(cfg, store, session_id, budget, baseline)
        loop = LoopConfig(template=cfg.template, runs=cfg.runs, attempts=cfg.attempts, seeds=cfg.seeds,
                          sandbox=cfg.sandbox, home=cfg.home, out_dir=cfg.out_dir)
        seen: list[dict] = []
        idx = 0
        while len(ideas) < cfg.ideas and idx < 2 * cfg.ideas:
            budget.check()
            report.event("stage", stage="ideas", spend_usd=budget.spent_usd)
            idea = proposer.next_idea(idx, archive + seen)
            folder = f"{idx:02d}_{idea['name']}"
            duplicate = None if "genome" in idea else find_duplicate(idea, archive + seen)
            seen.append({"idea": idea, "metric": None})
            if duplicate is not None:
                why = f"near-duplicate of {duplicate}"
                store.save_idea(session_id, idx, idea, status="duplicate", reason=why)
                report.event("idea_dropped", name=idea["name"], reason=why)
                idx += 1
                continue
            if cfg.literature is not None and isinstance(proposer, LLMProposer):
                report.event("stage", stage="literature", spend_usd=budget.spent_usd)
                novel, why = check_novelty(cfg, store, proposer, idea)
                if not novel:
                    store.save_idea(session_id, idx, idea, status="not_novel", reason=why)
                    report.event("idea_dropped", name=idea["name"], reason=f"not novel: {why}")
                    idx += 1
                    continue
            report.event("idea", idx=len(ideas), total=cfg.ideas, name=idea["name"], title=idea["title"])
            report.event("stage", stage="experiments", spend_usd=budget.spent_usd)
            outcome = run_idea(loop, store, session_id=session_id, idx=idx, idea=idea, folder=folder,
                               proposer=proposer, baseline=baseline, budget=budget, report=report)
            seen[-1]["metric"] = outcome["best"]["metric"]["mean"] if outcome["best"] else None
            ideas.append(outcome)
            idx += 1
        if len(ideas) < cfg.ideas:
            status, reason = "stopped", (f"only {len(ideas)} of {cfg.ideas} ideas were new; the others were "
                                         "near-duplicates or, with --literature, not novel")
    except BudgetExceeded as e:
        status, reason, code = "stopped", str(e), EXIT_BUDGET
    except (LLMError, NoValidAnswer, BaselineFailed, LiteratureError) as e:
        status, reason, code = "stopped", str(e), EXIT_ERROR
    except KeyboardInterrupt:
        status, reason, code = "stopped", "interrupted by the user", EXIT_INTERRUPTED
    finally:
        if status != "complete":
            report.event("stopped", reason=reason)
        store.close_session(session_id, status, reason)
        _write_outputs(cfg, store, session_id, baseline, ideas, status, reason, time.time() - started)
    if cfg.writeup and baseline is not None and ideas and code != EXIT_INTERRUPTED:
        code = max(code, _writeup(cfg, store, session_id, budget, report))
        if cfg.review and cfg.model and code in (EXIT_OK, EXIT_ERROR):
            code = max(code, _review(cfg, store, session_id, budget, report))
    report.event("stage", stage=status, spend_usd=store.session_cost(session_id)[0])
    return code


def _review(cfg: RunConfig, store: Store, session_id: int, budget: Budget, report) -> int:
    """Review every compiled paper with the run's model; scores go to summary.json and the store."""
    from reviewer.batch import llm_factory, review_one_paper
    from reviewer.review import ReviewSettings, default_fewshot

    summary_path = cfg.out_dir / "summary.json"
    summary = json.loads(summary_path.read_text())
    settings = ReviewSettings(ensemble=cfg.review_ensemble, reflections=cfg.review_reflections,
                              fewshot=default_fewshot())
    make_llm = llm_factory(cfg.model, recorder=store.recorder(session_id), budget=budget, api_base=cfg.api_base,
                           retries=cfg.retries)
    code = EXIT_OK
    for entry in summary["ideas"]:
        paper = entry.get("paper") or {}
        if paper.get("status") != "ok":
            continue
        report.event("stage", stage=f"review {entry['name']}", spend_usd=budget.spent_usd)
        res = review_one_paper(Path(paper["pdf"]), make_llm, settings, run_dir=cfg.out_dir)
        (Path(paper["pdf"]).parent / "review.json").write_text(json.dumps(res, indent=1))
        if res["status"] == "ok":
            entry["review"] = {k: res["review"][k] for k in ("Overall", "Decision", "Soundness", "Confidence")}
            entry["review"]["path"] = str(Path(paper["pdf"]).parent / "review.json")
            store.save_review(session_id, entry["idx"], res["review"])
        else:
            entry["review"] = {"status": "error", "error": res["error"]}
            code = EXIT_BUDGET if res["error"].startswith("budget:") else EXIT_ERROR
        report.event("review", name=entry["name"], **({"error": res["error"]} if res["status"] != "ok" else
                                                      {"overall": res["review"]["Overall"],
                                                       "decision": res["review"]["Decision"]}))
        _write_json(summary_path, summary)
    return code


def _writeup(cfg: RunConfig, store: Store, session_id: int, budget: Budget, report) -> int:
    """Write every idea's paper; a budget or model failure here stops cleanly like anywhere else.

    A run whose every paper failed to compile is an error too (exit 1), not a success with no paper.
    """
    llm = None
    if cfg.writer == "llm":
        llm = LLM(cfg.model, recorder=store.recorder(session_id), budget=budget, api_base=cfg.api_base,
                  max_retries=cfg.retries)
    try:
        results = write_papers(cfg.out_dir, cfg.template, llm=llm, store=store, report=report)
    except BudgetExceeded as e:
        report.event("stopped", reason=f"writeup: {e}")
        return EXIT_BUDGET
    except (LLMError, FormatError, RunFilesMissing) as e:
        report.event("stopped", reason=f"writeup: {e}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        report.event("stopped", reason="interrupted by the user")
        return EXIT_INTERRUPTED
    return EXIT_ERROR if results and not any(r["status"] == "ok" for r in results) else EXIT_OK


def _write_outputs(cfg: RunConfig, store: Store, session_id: int, baseline: Run | None, ideas: list[dict],
                   status: str, reason: str | None, wall_s: float) -> None:
    cost, calls, prompt_tokens, completion_tokens = store.session_cost(session_id)
    metric = cfg.template.spec.metric
    base = None
    if baseline is not None:
        m = baseline.final_info["metrics"][metric.name]
        base = {"run_id": baseline.id, "mean": m["mean"], "stderr": m["stderr"], "ci95": m["ci95"], "n": m["n"],
                "run_dir": str(cfg.out_dir / "baseline")}
    _adjust_for_multiple_comparisons(ideas, metric.direction)
    best = None
    for i in ideas:
        if i["best"] is None:
            continue
        if best is None or better(i["best"]["metric"]["mean"], best["metric"]["mean"], metric.direction):
            best = {"idea": i["name"], **i["best"]}
    summary = {
        "template": cfg.template.name,
        "template_hash": cfg.template.content_hash(),
        "metric": {"name": metric.name, "direction": metric.direction},
        "proposer": cfg.proposer,
        "model": cfg.model,
        "status": status,
        "reason": reason,
        "baseline": base,
        "best": best,
        "ideas": ideas,
        "significance_test": "Welch's t-test (two-sided) over seeds, alpha 0.05; verdict_holm adjusts for "
                             "every run of the session compared with the baseline (Holm-Bonferroni)",
        "cost_usd": cost,
        "llm_calls": calls,
        "tokens": {"prompt": prompt_tokens, "completion": completion_tokens},
        "wall_s": wall_s,
        "writeup": ("skipped (--no-writeup)" if not cfg.writeup else
                    f"{cfg.writer} writer; each idea's paper is under its folder (ideas[].paper)"),
        "review": ("skipped (--no-review)" if not cfg.review else
                   "skipped: no model to review with (--model)" if not cfg.model else
                   f"ensemble of {cfg.review_ensemble}, {cfg.review_reflections} reflections (ideas[].review)"),
        "config": cfg.to_json(),
    }
    _write_json(cfg.out_dir / "summary.json", summary)
    all_ideas = [{**r["idea"], "idx": r["idx"], "status": r["status"], "reason": r["reason"]}
                 for r in store.ideas(session_id=session_id)]
    _write_json(cfg.out_dir / "ideas.json", all_ideas)


def _adjust_for_multiple_comparisons(ideas: list[dict], direction: str) -> None:
    """Add Holm-adjusted p-values and verdicts to every successful run's comparison, in place."""
    comparisons = [e["metric"]["comparison"] for i in ideas for e in i["runs"]
                   if e.get("metric") and e["metric"].get("comparison")]
    for c, p in zip(comparisons, holm([c["p_value"] for c in comparisons]), strict=True):
        c["p_value_holm"] = p
        if not p < c["alpha"]:
            c["verdict_holm"] = "no significant difference"
        else:
            c["verdict_holm"] = "better" if (c["difference"] > 0) == (direction == "max") else "worse"
    for i in ideas:  # the idea's best entry shares its comparison dict with its run entry
        if i["best"] is not None:
            run = next(e for e in i["runs"] if e.get("run_id") == i["best"]["run_id"] and e.get("metric"))
            i["best"]["metric"] = run["metric"]


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # the user may have deleted the folder while we ran
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
