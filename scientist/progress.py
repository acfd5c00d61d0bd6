"""Progress of `scientist run`: a live view with rich, or JSON lines with --log-json.

The loop emits typed events (base.events: `report.event(RunStarted(...))`) and never formats output
itself; each reporter turns events into what its reader wants. Events come from several threads when
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
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.text import Text

from base.events import (
    BaselineMeasured,
    ConfirmationDone,
    Event,
    ExecutorChosen,
    FreshSeedsDrawn,
    IdeaAccepted,
    IdeaDone,
    IdeaDropped,
    NightStarted,
    PaperDone,
    Reviewed,
    ReviewFailed,
    RunComputing,
    RunFailed,
    RunScreened,
    RunStarted,
    RunSucceeded,
    SessionStarted,
    Stage,
    Stopped,
    TemplateChanged,
)
from base.stats import format_p


class JsonReporter:
    """One JSON object per line on stdout, for machines."""

    def __init__(self, stream: TextIO = sys.stdout):
        self.stream = stream
        self._lock = threading.Lock()

    def event(self, event: Event) -> None:
        """Write the event as one line: {"event": its kind, "time": ..., its fields}."""
        line = json.dumps({"event": event.kind, "time": round(time.time(), 3), **event.json_fields()}) + "\n"
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
    screen: bool = False              # the cascade's screen of the candidate, before its full evaluation

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
        text = f"{self.label} · {'screen: ' if self.screen else ''}{phase} · {_clock(elapsed)}"
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

    def view(self, now: float | None = None) -> tuple[str, list[str]]:
        """The live view's head (markup: stage, best so far, spend) and one line per run in flight."""
        with self._lock:
            head = f"[bold]{escape(self.stage)}[/bold]"
            if self.best is not None:
                head += f" · best {self.best:.4f}"
            head += f" · ${self.spend:.2f}"
            now = time.time() if now is None else now
            return head, [run.line(now) for run in self.inflight.values()]

    def __rich__(self) -> Group:
        """What the live view shows, rebuilt at each refresh (phases move while no event comes)."""
        head, rows = self.view()
        return Group(Spinner("dots", text=Text.from_markup(head)), *(Text(f"  {row}") for row in rows))

    def _say(self, text: str) -> None:
        self.console.print(text)

    def event(self, event: Event) -> None:
        """Update the live view, or print a line to the log above it, for the event."""
        with self._lock:
            self._event(event)
            if self._live is None and self.console.is_terminal:
                self._live = Live(self, console=self.console, refresh_per_second=4, transient=True)
                self._live.start()

    def _spent(self, spend_usd: float | None) -> None:
        if spend_usd is not None:
            self.spend = spend_usd

    def _event(self, e: Event) -> None:
        say = self._say
        match e:
            case Stage():
                self.stage = e.stage
                self._spent(e.spend_usd)
            case SessionStarted():
                how = "resuming" if e.resumed else "starting"
                say(f"{how} {e.proposer} run of [bold]{escape(e.template)}[/bold] in {escape(e.out_dir)}")
            case ExecutorChosen():
                say(f"runs on {escape(e.description)}")
            case TemplateChanged():
                what = ", ".join(e.files) or "its settings in template.toml"
                say(f"[yellow]note:[/yellow] template {escape(e.template)} changed since this session started "
                    f"({escape(what)}): runs of the earlier version are not reused")
            case BaselineMeasured():
                say(f"baseline {e.metric} = {e.mean:.4f} (95% CI {e.ci95[0]:.4f} to {e.ci95[1]:.4f})")
            case IdeaAccepted():
                say(f"[bold]idea {e.idx + 1}/{e.total}[/bold] {escape(e.name)}: {escape(e.title)}")
            case IdeaDropped():
                say(f"  [yellow]dropped[/yellow] {escape(e.name)}: {escape(e.reason)}")
            case RunStarted():
                self._spent(e.spend_usd)
                key = _key(e.idea, e.run, e.attempt)
                self.inflight[key] = _InFlight(escape(key), time.time())
            case RunComputing():
                run = self.inflight.get(_key(e.idea, e.run, e.attempt))
                if run is not None:
                    run.run_dir, run.expected_s, run.started = Path(e.run_dir), e.expected_s, time.time()
                    run.screen = bool(e.screen)
            case RunScreened():
                self._spent(e.spend_usd)
                cached = " (cached)" if e.cached else ""
                verdict = "promoted" if e.promoted else "[yellow]screened out[/yellow]"
                say(f"  {escape(e.idea)} run {e.run}.{e.attempt}: screen {e.screen_mean:.4f} ± {e.screen_stderr:.4f} "
                    f"vs {e.bar_mean:.4f} ({escape(e.bar)}'s screen; margin {e.margin:.4f}), {format_p(e.p_value)} "
                    "one-sided: "
                    f"{verdict}{cached}")
            case RunSucceeded():
                self._spent(e.spend_usd)
                self.inflight.pop(_key(e.idea, e.run, e.attempt), None)
                self.best = e.best  # the reporting idea's best so far
                cached = " (cached)" if e.cached else ""
                say(f"  {escape(e.idea)} run {e.run}.{e.attempt}: {e.metric:.4f} ± {e.stderr:.4f}, "
                    f"{escape(e.verdict)}{cached}")
            case RunFailed():
                self._spent(e.spend_usd)
                self.inflight.pop(_key(e.idea, e.run, e.attempt), None)
                if e.status == "screened_out":  # its RunScreened line said so, with the screen's numbers
                    return
                say(f"  {escape(e.idea)} run {e.run}.{e.attempt}: [red]{e.status}[/red]: {escape(e.reason or '')}")
            case IdeaDone():
                self.inflight = {k: v for k, v in self.inflight.items() if not k.startswith(f"{e.name} ")}
                color = "green" if e.status == "done" else "red"
                reason = f": {escape(e.reason)}" if e.reason else ""
                say(f"  idea {escape(e.name)} [{color}]{e.status}[/{color}]{reason}")
            case PaperDone():
                if e.status == "ok":
                    say(f"  paper {escape(e.name)}: {escape(e.pdf or '')}")
                else:
                    say(f"  paper {escape(e.name)}: [red]{e.status}[/red]: {escape(e.reason or '')}")
            case Reviewed():
                say(f"  review {escape(e.name)}: Overall {e.overall}, {escape(e.decision)}")
            case ReviewFailed():
                say(f"  review {escape(e.name)}: [red]failed[/red]: {escape(e.error)}")
            case Stopped():
                say(f"[yellow]stopped:[/yellow] {escape(e.reason)}")
            case NightStarted():
                resumed = " (resuming the night a killed process left unfinished)" if e.resumed else ""
                say(f"campaign [bold]{escape(e.campaign)}[/bold]: night {e.night}{resumed} in {escape(e.out_dir)}")
            case FreshSeedsDrawn():
                train_seed = "none" if e.train_seed is None else e.train_seed
                say(f"confirming on night {e.night}'s fresh seeds (train_seed {train_seed}, draw {e.draw})")
            case ConfirmationDone():
                say(_confirmation(e))
            case _:
                # A kind with no case above is still shown, never dropped; tests/test_progress.py fails until
                # it has its own.
                say(f"{e.kind}: {escape(json.dumps(e.json_fields(), default=str))}")

    def close(self) -> None:
        with self._lock:
            if self._live is not None:
                self._live.stop()
                self._live = None


def _key(idea: str, run: int, attempt: int) -> str:
    """A run in flight, as the live view names it."""
    return f"{idea} run {run}.{attempt}"


_VERDICT_WORDS = {"better": "[green]better than the baseline[/green]",
                  "no significant difference": "no significant difference from the baseline",
                  "worse": "[red]worse than the baseline[/red]"}


def _confirmation(e: ConfirmationDone) -> str:
    """A candidate's confirmation on the fresh seeds, in words: its search mean, its fresh mean and its verdict."""
    head = f"  confirm {escape(e.idea)}: search {e.search_mean:.4f}"
    if e.mean is None:
        return f"{head}; [red]failed[/red]: {escape(e.reason or 'no result')}"
    # The verdict before Holm's adjustment over the night; the night's summary after the session says which
    # candidate, if any, is the campaign's new best.
    verdict = _VERDICT_WORDS.get(e.verdict or "", "not compared with the baseline")
    return f"{head} -> {e.mean:.4f} on the fresh seeds, {verdict} (before Holm's adjustment)"
