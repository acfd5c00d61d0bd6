"""Progress of `scientist run`: a live status line with rich, or JSON lines with --log-json.

The loop emits events (`report.event("run_done", ...)`) and never formats output
itself; each reporter turns events into what its reader wants.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.status import Status


class JsonReporter:
    """One JSON object per line on stdout, for machines."""

    def __init__(self, stream: TextIO = sys.stdout):
        self.stream = stream

    def event(self, kind: str, **fields: Any) -> None:
        self.stream.write(json.dumps({"event": kind, "time": round(time.time(), 3), **fields}) + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class RichReporter:
    """A status line (stage, idea i of N, run j of R, best so far, spend so far) and a log of results."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(highlight=False)
        self.state: dict[str, Any] = {"stage": "starting", "idea": "", "run": "", "best": None, "spend": 0.0}
        self.status: Status | None = None

    def _line(self) -> str:
        s = self.state
        parts = [f"[bold]{s['stage']}[/bold]"]
        if s["idea"]:
            parts.append(s["idea"])
        if s["run"]:
            parts.append(s["run"])
        if s["best"] is not None:
            parts.append(f"best {s['best']:.4f}")
        parts.append(f"${s['spend']:.2f}")
        return " · ".join(parts)

    def _refresh(self) -> None:
        if self.status is None:
            self.status = self.console.status(self._line())
            self.status.start()
        else:
            self.status.update(self._line())

    def event(self, kind: str, **f: Any) -> None:
        s, say = self.state, self.console.print
        if "spend_usd" in f:
            s["spend"] = f["spend_usd"]
        if kind == "stage":
            s["stage"] = f["stage"]
        elif kind == "session":
            how = "resuming" if f["resumed"] else "starting"
            say(f"{how} {f['proposer']} run of [bold]{f['template']}[/bold] in {f['out_dir']}")
        elif kind == "template_changed":
            what = ", ".join(f["files"]) or "its settings in template.toml"
            say(f"[yellow]note:[/yellow] template {f['template']} changed since this session started ({what}): "
                "runs of the earlier version are not reused")
        elif kind == "baseline":
            say(f"baseline {f['metric']} = {f['mean']:.4f} (95% CI {f['ci95'][0]:.4f} to {f['ci95'][1]:.4f})")
        elif kind == "idea":
            s["idea"], s["run"] = f"idea {f['idx'] + 1}/{f['total']}", ""
            say(f"[bold]idea {f['idx'] + 1}/{f['total']}[/bold] {escape(f['name'])}: {escape(f['title'])}")
        elif kind == "idea_dropped":
            say(f"  [yellow]dropped[/yellow] {escape(f['name'])}: {escape(f['reason'])}")
        elif kind == "run_start":
            s["run"] = f"run {f['run']}/{f['runs']}" + (f" attempt {f['attempt']}" if f["attempt"] > 1 else "")
        elif kind == "run_done":
            if f["status"] == "ok":
                if f.get("best") is not None:
                    s["best"] = f["best"]
                cached = " (cached)" if f.get("cached") else ""
                say(f"  run {f['run']}.{f['attempt']}: {f['metric']:.4f} ± {f['stderr']:.4f}, "
                    f"{escape(f['verdict'])}{cached}")
            else:
                say(f"  run {f['run']}.{f['attempt']}: [red]{f['status']}[/red]: {escape(f['reason'] or '')}")
        elif kind == "idea_done":
            color = "green" if f["status"] == "done" else "red"
            reason = f": {escape(f['reason'])}" if f.get("reason") else ""
            say(f"  idea {escape(f['name'])} [{color}]{f['status']}[/{color}]{reason}")
        elif kind == "paper":
            if f["status"] == "ok":
                say(f"  paper {escape(f['name'])}: {f['pdf']}")
            else:
                say(f"  paper {escape(f['name'])}: [red]{f['status']}[/red]: {escape(f.get('reason') or '')}")
        elif kind == "review":
            if "error" in f:
                say(f"  review {escape(f['name'])}: [red]failed[/red]: {escape(f['error'])}")
            else:
                say(f"  review {escape(f['name'])}: Overall {f['overall']}, {f['decision']}")
        elif kind == "stopped":
            say(f"[yellow]stopped:[/yellow] {escape(f['reason'])}")
        self._refresh()

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None
