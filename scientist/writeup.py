"""The paper stage: one paper per idea of a finished (or stopped) session.

Used by `scientist run` after its experiments (with the summary in memory) and by
`scientist writeup --run-dir DIR` (with the summary read from DIR/summary.json). It reads only
what the run logged (final_info.json files, notes, ideas.json), writes DIR/<idea>/paper/, and
records each paper in the summary, written to summary.json after each paper. Run folders
deleted since the run are written again from the store first.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from base.events import PaperDone, Reporter, Stage
from base.formats import FormatError
from base.llm import LLM, ModelSpec
from base.records import PaperStatus, SessionSummary
from base.store import Store
from base.template import Template, TemplateError, load_template
from papers.facts import load_input
from papers.paper import write_paper
from scientist.runner import materialize


class RunFilesMissing(Exception):
    """A run folder of the run directory is gone and the store cannot make it again; one line for the user."""


class NotARunDir(Exception):
    """`scientist writeup` was pointed at a folder it cannot write about; one line for the user."""


def finished_run(run_dir: Path, templates_dir: Path, idea: str | None = None) -> tuple[SessionSummary, Template]:
    """A finished run's summary and its template with the settings its runs had (which the papers state).

    NotARunDir when run_dir holds no valid summary.json, its template cannot be loaded, or it has no
    ideas (or not the one asked for).
    """
    if not (run_dir / "summary.json").is_file():
        raise NotARunDir(f"{run_dir} holds no summary.json; is it a folder written by scientist run?")
    try:
        summary = SessionSummary.read(run_dir)
    except (ValueError, OSError) as e:
        raise NotARunDir(f"{run_dir / 'summary.json'} is not a valid summary.json ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:300]})") from None
    try:
        template = load_template(summary.template, templates_dir)
        if summary.profile:
            template = replace(template.with_profile(summary.profile), device=summary.device)
    except TemplateError as e:
        raise NotARunDir(str(e)) from None
    names = [i.name for i in summary.ideas]
    if idea is not None and idea not in names:
        raise NotARunDir(f"no idea {idea!r} in {run_dir} (ideas: {', '.join(names) or 'none'})")
    if not names:
        raise NotARunDir(f"{run_dir} has no ideas to write about")
    return summary, template


def writer_llm(model: ModelSpec, store: Store, run_dir: Path, template: Template) -> LLM:
    """The model client of a rewrite: its calls recorded under a session of its own in the store."""
    session_id = store.open_session(out_dir=run_dir.resolve(), template=template.name, proposer="llm",
                                    model=model.model, args={"writeup": True})[0]
    llm = model.client(recorder=store.recorder(session_id), forms=store.response_forms())
    llm.check()
    return llm


def write_papers(summary: SessionSummary, run_dir: Path, template: Template, *, llm: LLM | None, store: Store,
                 idea: str | None = None, report: Reporter | None = None) -> list[PaperStatus]:
    """Write the papers of the session's ideas (or of one idea) into run_dir; returns one status per paper."""
    restore_run_files(run_dir, summary, store)
    results = []
    for entry in summary.ideas:
        if idea is not None and entry.name != idea:
            continue
        if report is not None:
            report.event(Stage(stage=f"writeup {entry.name}"))
        inp = load_input(template, run_dir, entry, summary)
        paper_dir = run_dir / entry.folder / "paper"
        try:
            entry.paper = write_paper(inp, paper_dir, llm=llm)
        except FormatError as e:  # the model gave no usable section: this paper failed, the next one is written
            entry.paper = PaperStatus(status="writeup_failed", reason=f"the model wrote no usable LaTeX: {e}",
                                      tex=str(paper_dir / "paper.tex"), claim_check=str(paper_dir / "claim_check.json"),
                                      unverified_numbers=0, figures=0)
        results.append(entry.paper)
        if report is not None:
            report.event(PaperDone(name=entry.name, status=entry.paper.status, pdf=entry.paper.pdf,
                                   reason=entry.paper.reason))
        summary.write(run_dir)  # after each paper, so a stop keeps the ones written
    return results


def restore_run_files(run_dir: Path, summary: SessionSummary, store: Store) -> int:
    """Write again, from the store, every run folder of run_dir that lost its files; returns how many.

    A folder is checked against the store's row (status and metric), so a store of
    another home, whose run ids mean other runs, is never taken for this one's.
    """
    wanted: list[tuple[int, Path, str, float | None]] = []
    if summary.baseline is not None:
        wanted.append((summary.baseline.run_id, run_dir / "baseline", "ok", summary.baseline.mean))
    for entry in summary.ideas:
        wanted += [(r.run_id, run_dir / entry.folder / r.folder, r.status, r.metric.mean if r.metric else None)
                   for r in entry.runs if r.run_id is not None]
    restored = 0
    for run_id, dest, status, mean in wanted:
        complete = (dest / "final_info.json").is_file() if status == "ok" else (dest / "candidate").is_dir()
        if complete:
            continue
        run = store.get(run_id)
        if run is None or run.status != status or (mean is not None and run.metric_mean != mean):
            raise RunFilesMissing(f"{dest} is missing its files and the store at {store.path} does not hold its "
                                  f"run {run_id}; run the same `scientist run` command again (with the same "
                                  "--home) to recompute it")
        materialize(store, run, dest)
        restored += 1
    return restored
