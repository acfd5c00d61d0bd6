"""The paper stage: one paper per idea of a finished (or stopped) run folder.

Used by `scientist run` after its experiments and by `scientist writeup --run-dir DIR`.
It reads only what the run logged (summary.json, ideas.json, final_info.json
files) and writes DIR/<idea>/paper/, then records each paper in summary.json.
Run folders deleted since the run are written again from the store first.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from base.llm import LLM
from base.store import Store
from base.template import Template
from papers.facts import load_input, run_name
from papers.paper import write_paper
from scientist.runner import materialize


class RunFilesMissing(Exception):
    """A run folder of the run directory is gone and the store cannot make it again; one line for the user."""


def write_papers(run_dir: Path, template: Template, *, llm: LLM | None, store: Store, idea: str | None = None,
                 report=None) -> list[dict]:
    """Write the papers of a run folder's ideas (or of one idea); returns one status per paper."""
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text())
    restore_run_files(run_dir, summary, store)
    results = []
    for entry in summary["ideas"]:
        if idea is not None and entry["name"] != idea:
            continue
        if report is not None:
            report.event("stage", stage=f"writeup {entry['name']}")
        inp = load_input(template, run_dir, entry, summary)
        paper = write_paper(inp, run_dir / entry["folder"] / "paper", llm=llm)
        entry["paper"] = paper
        results.append({"idea": entry["name"], **paper})
        if report is not None:
            report.event("paper", name=entry["name"], status=paper["status"], pdf=paper.get("pdf"),
                         reason=paper.get("reason"))
        _save(summary_path, summary)  # after each paper, so a stop keeps the ones written
    return results


def restore_run_files(run_dir: Path, summary: dict, store: Store) -> int:
    """Write again, from the store, every run folder of run_dir that lost its files; returns how many.

    A folder is checked against the store's row (status and metric), so a store of
    another home, whose run ids mean other runs, is never taken for this one's.
    """
    wanted: list[tuple[int, Path, dict]] = []
    if summary.get("baseline"):
        wanted.append((summary["baseline"]["run_id"], run_dir / "baseline",
                       {"status": "ok", "metric": summary["baseline"]}))
    for entry in summary["ideas"]:
        for r in entry["runs"]:
            if r.get("run_id") is not None:
                wanted.append((r["run_id"], run_dir / entry["folder"] / run_name(r), r))
    restored = 0
    for run_id, dest, logged in wanted:
        complete = (dest / "final_info.json").is_file() if logged["status"] == "ok" else (dest / "candidate").is_dir()
        if complete:
            continue
        run = store.get(run_id)
        mean = (logged.get("metric") or {}).get("mean")
        if run is None or run.status != logged["status"] or (mean is not None and run.metric_mean != mean):
            raise RunFilesMissing(f"{dest} is missing its files and the store at {store.path} does not hold its "
                                  f"run {run_id}; run the same `scientist run` command again (with the same "
                                  "--home) to recompute it")
        materialize(store, run, dest)
        restored += 1
    return restored


def _save(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
