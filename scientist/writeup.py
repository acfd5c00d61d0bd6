"""The paper stage: one paper per idea of a finished (or stopped) run folder.

Used by `scientist run` after its experiments and by `scientist writeup --run-dir DIR`.
It reads only what the run logged (summary.json, ideas.json, final_info.json
files) and writes DIR/<idea>/paper/, then records each paper in summary.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from papers.facts import load_input
from papers.paper import write_paper
from scientist.llm import LLM
from scientist.template import Template


def write_papers(run_dir: Path, template: Template, *, llm: LLM | None, idea: str | None = None,
                 report=None) -> list[dict]:
    """Write the papers of a run folder's ideas (or of one idea); returns one status per paper."""
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text())
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


def _save(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
