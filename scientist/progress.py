"""Progress of `scientist run`: a live view with rich, or JSON lines with --log-json.

The loop emits events (`report.event("run_done", ...)`) and never formats output itself; each
reporter turns events into what its reader wants. Events come from several threads when
several ideas are in flight, so reporters take a lock.

The live view shows one line per run in flight: its idea, run and attempt, its phase (proposing,
trace, setup, compile, train, export, evaluate: read from the harness's timings.json as it is written),
elapsed time and an estimate of the time left: from the harness's training progress where it
reports it (progress.json, sealed.Progress), else from the template's earlier runs.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.text import Text


class JsonReporter:
    """One JSON object per line on stdout, for machines."""

    def __init__(self, stream: TextIO = sys.stdout):
        self.stream = stream
        self._lock = threading.Lock()

    def event(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"event": kind, "time": round(time.time(), 3), **fields}) + "\n"
        with self._lock:
            self.stream.write(line)
            self.stream.flush()

    def close(self) -> None:
        pass


# The harness's phases in order (sealed.Stopwatch writes each as it ends); the one after the last written is running.
_PHASES = ("setup", "compile", "train", "export")


@dataclass
class _InFlight:
    """A run being proposed or computed."""

    label: str
    started: float
    run_dir: Path | None = None       # known once the run computes
    expected_s: float | None = None   # the template's typical run time, for the estimate

    def phase(self, now: float | None = None) -> tuple[str, float | None]:
        """The phase the run is in and, while it trains and the harness reports progress, the training time left."""
        if self.run_dir is None:
            return "proposing", None
        work = self.run_dir / "work"
        try:
            marks = json.loads((work / "timings.json").read_text())
        except (OSError, ValueError):
            if (self.run_dir / "trace").is_dir() and not (work / "exports").is_dir():
                return "trace", None  # the candidate's functions are being exported, in their own sandbox
            return ("setup" if work.is_dir() else "preparing"), None
        done = [p for p in _PHASES if p in marks]
        if len(done) == len(_PHASES):
            return "evaluate", None
        if _PHASES[len(done)] != "train":
            return _PHASES[len(done)], None
        try:  # sealed.Progress, written by harnesses that report it (the PPO templates)
            report = json.loads((work / "progress.json").read_text())
            fraction = float(report["done"]) / float(report["total"])
            train_started = float(marks["started"]) + sum(float(marks[p]) for p in done)
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
            return "train", None
        spent = (now or time.time()) - train_started
        return f"train {fraction:.0%}", (spent * (1 - fraction) / fraction if 0 < fraction <= 1 else None)

    def line(self, now: float) -> str:
        elapsed = now - self.started
        phase, training_left = self.phase(now)
        text = f"{self.label} · {phase} · {_clock(elapsed)}"
        if training_left is not None:
            text += f" · about {_clock(training_left)} of training left"
        elif self.expected_s and self.run_dir is not None:
            left = self.expected_s - elapsed
            text += f" · about {_clock(left)} left" if left > 0 else " · longer than usual"
        return text


def _clock(seconds: float) -> str:
    m, s = divmod(int(max(seconds, 0)), 60)
    return f"{m}:{s:02d}"


class RichReporter:
    """A live view (stage, runs in flight with phase and estimate, best so far, spend) and a log of results."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(highlight=False, emoji=False)
        self.stage = "starting"
        self.best: float | None = None
        self.spend = 0.0
        self.inflight: dict[str, _InFlight] = {}
        self._lock = threading.RLock()
        self._live: Live | None = None

    def __rich__(self) -> Group:
        """What the live view shows, rebuilt at each refresh (phases move while no event comes)."""
        with self._lock:
            head = f"[bold]{escape(self.stage)}[/bold]"
            if self.best is not None:
                head += f" · best {self.best:.4f}"
            head += f" · ${self.spend:.2f}"
            now = time.time()
            rows = [Text(f"  {run.line(now)}") for run in self.inflight.values()]
        return Group(Spinner("dots", text=Text.from_markup(head)), *rows)

    def _say(self, text: str) -> None:
        self.console.print(text)

    def event(self, kind: str, **f: Any) -> None:
        with self._lock:
            self._event(kind, f)
            if self._live is None and self.console.is_terminal:
                self._live = Live(self, console=self.console, refresh_per_second=4, transient=True)
                self._live.start()

    def _event(self, kind: str, f: dict[str, Any]) -> None:
        say = self._say
        if "spend_usd" in f:
            self.spend = f["spend_usd"]
        key = f"{f.get('idea', '')} run {f.get('run')}.{f.get('attempt')}"
        if kind == "stage":
            self.stage = f["stage"]
        elif kind == "session":
            how = "resuming" if f["resumed"] else "starting"
            say(f"{how} {f['proposer']} run of [bold]{f['template']}[/bold] in {f['out_dir']}")
        elif kind == "executor":
            say(f"runs on {escape(f['description'])}")
        elif kind == "template_changed":
            what = ", ".join(f["files"]) or "its settings in template.toml"
            say(f"[yellow]note:[/yellow] template {f['template']} changed since this session started ({what}): "
                "runs of the earlier version are not reused")
        elif kind == "baseline":
            say(f"baseline {f['metric']} = {f['mean']:.4f} (95% CI {f['ci95'][0]:.4f} to {f['ci95'][1]:.4f})")
        elif kind == "idea":
            say(f"[bold]idea {f['idx'] + 1}/{f['total']}[/bold] {escape(f['name'])}: {escape(f['title'])}")
        elif kind == "idea_dropped":
            say(f"  [yellow]dropped[/yellow] {escape(f['name'])}: {escape(f['reason'])}")
        elif kind == "run_start":
            self.inflight[key] = _InFlight(escape(key), time.time())
        elif kind == "run_computing" and key in self.inflight:
            run = self.inflight[key]
            run.run_dir, run.expected_s, run.started = Path(f["run_dir"]), f.get("expected_s"), time.time()
        elif kind == "run_done":
            self.inflight.pop(key, None)
            if f["status"] == "ok":
                if f.get("best") is not None:
                    self.best = f["best"]  # the reporting idea's best so far
                cached = " (cached)" if f.get("cached") else ""
                say(f"  {escape(f.get('idea', ''))} run {f['run']}.{f['attempt']}: {f['metric']:.4f} ± "
                    f"{f['stderr']:.4f}, {escape(f['verdict'])}{cached}")
            else:
                say(f"  {escape(f.get('idea', ''))} run {f['run']}.{f['attempt']}: [red]{f['status']}[/red]: "
                    f"{escape(f['reason'] or '')}")
        elif kind == "idea_done":
            self.inflight = {k: v for k, v in self.inflight.items() if not k.startswith(f"{f['name']} ")}
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

    def close(self) -> None:
        with self._lock:
            if self._live is not None:
                self._live.stop()
                self._live = None
