"""Progress reporters: the live view (a run in flight's phase, progress and time left; every event kind in words)
and JSON lines (the same bytes --log-json always wrote)."""

import io
import json
import time
from dataclasses import dataclass
from typing import ClassVar

from rich.console import Console

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
from scientist.progress import JsonReporter, RichReporter, _InFlight


def test_a_run_in_flight_shows_its_phase_training_progress_and_time_left(tmp_path):
    run = _InFlight("ppo_idea run 1.1", started=1000.0, run_dir=tmp_path, expected_s=600.0)
    assert run.phase(1001.0) == ("preparing", None)
    (tmp_path / "work").mkdir()
    (tmp_path / "trace").mkdir()
    assert run.phase(1002.0) == ("trace", None)  # the tracer exports the candidate's functions
    (tmp_path / "work" / "exports").mkdir()
    assert run.line(1030.0) == "ppo_idea run 1.1 · setup · 0:30 · about 9:30 left"  # the template's typical time
    timings = tmp_path / "work" / "timings.json"
    timings.write_text(json.dumps({"started": 1000.0, "setup": 10.0}))
    assert run.phase(1031.0) == ("compile", None)
    timings.write_text(json.dumps({"started": 1000.0, "setup": 10.0, "compile": 20.0}))
    assert run.phase(1040.0) == ("train", None)  # a harness that reports no progress
    # Training began at 1030; a quarter done at 1130: three times as long again.
    (tmp_path / "work" / "progress.json").write_text(json.dumps({"done": 25, "total": 100, "time": 1130.0}))
    assert run.line(1130.0) == "ppo_idea run 1.1 · train 25% · 2:10 · about 5:00 of training left"
    timings.write_text(json.dumps({"started": 1000.0, "setup": 10.0, "compile": 20.0, "train": 400, "export": 1}))
    assert run.phase(1500.0) == ("evaluate", None)
    assert run.line(1700.0).endswith("· longer than usual")


def test_a_garbled_progress_file_is_ignored_not_fatal(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "timings.json").write_text(json.dumps({"started": 0, "setup": 1, "compile": 1}))
    (tmp_path / "work" / "progress.json").write_text('{"done": 3, "total": 0}')
    run = _InFlight("x", started=time.time(), run_dir=tmp_path)
    assert run.phase() == ("train", None)


# One of each event record, in the order a session (then a campaign night's confirmation) emits them, with the
# JSON line the reporter wrote for it before events were records: --log-json's bytes must not change.
EVENTS = [
    (SessionStarted(template="ppo", proposer="evolve", out_dir="/runs/ppo", resumed=False),
     '{"event": "session", "time": 1700000000.5, "template": "ppo", "proposer": "evolve", "out_dir": "/runs/ppo", '
     '"resumed": false}'),
    (TemplateChanged(template="ppo", files=["harness.py"]),
     '{"event": "template_changed", "time": 1700000000.5, "template": "ppo", "files": ["harness.py"]}'),
    (Stage(stage="baseline"), '{"event": "stage", "time": 1700000000.5, "stage": "baseline"}'),
    (ExecutorChosen(description="2 local worker slots; profile none on CPU"),
     '{"event": "executor", "time": 1700000000.5, "description": "2 local worker slots; profile none on CPU"}'),
    (BaselineMeasured(metric="return", mean=1.5, ci95=[1.25, 1.75]),
     '{"event": "baseline", "time": 1700000000.5, "metric": "return", "mean": 1.5, "ci95": [1.25, 1.75]}'),
    (Stage(stage="ideas", spend_usd=0.25),
     '{"event": "stage", "time": 1700000000.5, "stage": "ideas", "spend_usd": 0.25}'),
    (IdeaDropped(name="dup", reason="near-duplicate of wide"),
     '{"event": "idea_dropped", "time": 1700000000.5, "name": "dup", "reason": "near-duplicate of wide"}'),
    (IdeaAccepted(idx=0, total=2, name="wide", title="A wider net"),
     '{"event": "idea", "time": 1700000000.5, "idx": 0, "total": 2, "name": "wide", "title": "A wider net"}'),
    (RunStarted(idea="wide", run=1, runs=2, attempt=1, spend_usd=0.5),
     '{"event": "run_start", "time": 1700000000.5, "idea": "wide", "run": 1, "runs": 2, "attempt": 1, '
     '"spend_usd": 0.5}'),
    (RunComputing(idea="wide", run=1, attempt=1, run_dir="/runs/ppo/00_wide/run_1", expected_s=60.0),
     '{"event": "run_computing", "time": 1700000000.5, "idea": "wide", "run": 1, "attempt": 1, '
     '"run_dir": "/runs/ppo/00_wide/run_1", "expected_s": 60.0}'),
    (RunSucceeded(idea="wide", run=1, attempt=1, metric=1.75, stderr=0.125, verdict="better", cached=False,
                  spend_usd=0.75, best=1.75),
     '{"event": "run_done", "time": 1700000000.5, "idea": "wide", "run": 1, "attempt": 1, "status": "ok", '
     '"metric": 1.75, "stderr": 0.125, "verdict": "better", "cached": false, "spend_usd": 0.75, "best": 1.75}'),
    (RunFailed(idea="wide", run=2, attempt=1, status="failed", reason="the loss is nan", spend_usd=1.0),
     '{"event": "run_done", "time": 1700000000.5, "idea": "wide", "run": 2, "attempt": 1, "status": "failed", '
     '"reason": "the loss is nan", "spend_usd": 1.0}'),
    (RunFailed(idea="wide", run=2, attempt=2, status="no_edit", reason="no SEARCH block matched"),
     '{"event": "run_done", "time": 1700000000.5, "idea": "wide", "run": 2, "attempt": 2, "status": "no_edit", '
     '"reason": "no SEARCH block matched"}'),
    # The cascade (--cascade): a screen computes, is screened out, and the attempt ends without a full evaluation.
    (RunStarted(idea="wide", run=2, runs=2, attempt=3, spend_usd=1.0),
     '{"event": "run_start", "time": 1700000000.5, "idea": "wide", "run": 2, "runs": 2, "attempt": 3, '
     '"spend_usd": 1.0}'),
    (RunComputing(idea="wide", run=2, attempt=3, run_dir="/runs/ppo/00_wide/run_2_attempt_3/screen", expected_s=20.0,
                  screen=True),
     '{"event": "run_computing", "time": 1700000000.5, "idea": "wide", "run": 2, "attempt": 3, '
     '"run_dir": "/runs/ppo/00_wide/run_2_attempt_3/screen", "expected_s": 20.0, "screen": true}'),
    (RunScreened(idea="wide", run=2, attempt=3, screen_mean=0.5, screen_stderr=0.25, bar="baseline", bar_mean=1.25,
                 margin=0.0625, p_value=0.01, promoted=False, cached=False, spend_usd=1.0),
     '{"event": "run_screened", "time": 1700000000.5, "idea": "wide", "run": 2, "attempt": 3, "screen_mean": 0.5, '
     '"screen_stderr": 0.25, "bar": "baseline", "bar_mean": 1.25, "margin": 0.0625, "p_value": 0.01, '
     '"promoted": false, "cached": false, "spend_usd": 1.0}'),
    (RunFailed(idea="wide", run=2, attempt=3, status="screened_out", reason="screened out: its screen is worse",
               spend_usd=1.0),
     '{"event": "run_done", "time": 1700000000.5, "idea": "wide", "run": 2, "attempt": 3, "status": "screened_out", '
     '"reason": "screened out: its screen is worse", "spend_usd": 1.0}'),
    (IdeaDone(name="wide", status="done", reason=None),
     '{"event": "idea_done", "time": 1700000000.5, "name": "wide", "status": "done", "reason": null}'),
    (Stage(stage="writeup wide"), '{"event": "stage", "time": 1700000000.5, "stage": "writeup wide"}'),
    (PaperDone(name="wide", status="ok", pdf="/runs/ppo/00_wide/paper/paper.pdf", reason=None),
     '{"event": "paper", "time": 1700000000.5, "name": "wide", "status": "ok", '
     '"pdf": "/runs/ppo/00_wide/paper/paper.pdf", "reason": null}'),
    (PaperDone(name="deep", status="writeup_failed", pdf=None, reason="Undefined control sequence"),
     '{"event": "paper", "time": 1700000000.5, "name": "deep", "status": "writeup_failed", "pdf": null, '
     '"reason": "Undefined control sequence"}'),
    (Reviewed(name="wide", overall=6, decision="Accept"),
     '{"event": "review", "time": 1700000000.5, "name": "wide", "overall": 6, "decision": "Accept"}'),
    (ReviewFailed(name="deep", error="budget: $5.00 spent"),
     '{"event": "review", "time": 1700000000.5, "name": "deep", "error": "budget: $5.00 spent"}'),
    (Stopped(reason="writeup: budget: $5.00 spent"),
     '{"event": "stopped", "time": 1700000000.5, "reason": "writeup: budget: $5.00 spent"}'),
    (NightStarted(campaign="nightly", night=3, out_dir="/h/campaigns/nightly/nights/003-2026-12-07", resumed=True),
     '{"event": "night", "time": 1700000000.5, "campaign": "nightly", "night": 3, '
     '"out_dir": "/h/campaigns/nightly/nights/003-2026-12-07", "resumed": true}'),
    (FreshSeedsDrawn(night=3, train_seed=None, draw=7),
     '{"event": "fresh_seeds", "time": 1700000000.5, "night": 3, "train_seed": null, "draw": 7}'),
    (ConfirmationDone(idea="wide", search_mean=1.75, mean=1.625, reason=None, verdict="better"),
     '{"event": "confirmed", "time": 1700000000.5, "idea": "wide", "search_mean": 1.75, "mean": 1.625, '
     '"reason": null}'),
    (ConfirmationDone(idea="deep", search_mean=1.5, mean=None, reason="the confirmation run failed: timeout"),
     '{"event": "confirmed", "time": 1700000000.5, "idea": "deep", "search_mean": 1.5, "mean": null, '
     '"reason": "the confirmation run failed: timeout"}'),
]


def test_the_samples_cover_every_event_kind():
    """A new kind of event needs a sample here, so that the tests below check both reporters handle it."""
    assert {type(e) for e, _ in EVENTS} == {c for c in Event.__subclasses__() if c.__module__ == "base.events"}
    kinds = {e.kind for e, _ in EVENTS}
    assert kinds == {"session", "template_changed", "stage", "executor", "baseline", "idea_dropped", "idea",
                     "run_start", "run_computing", "run_screened", "run_done", "idea_done", "paper", "review",
                     "stopped", "night", "fresh_seeds", "confirmed"}


def test_json_lines_keep_their_event_names_keys_and_bytes(monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 1700000000.5)
    stream = io.StringIO()
    report = JsonReporter(stream)
    for event, _ in EVENTS:
        report.event(event)
    assert stream.getvalue().splitlines() == [line for _, line in EVENTS]


def test_the_live_view_handles_every_event_kind_with_its_own_words():
    """Each event prints a line or changes the live view (stage, spend, best, runs in flight); none is dropped,
    and none falls to the plain default that a kind without a case gets."""
    out = io.StringIO()
    report = RichReporter(Console(file=out, width=300, highlight=False, emoji=False))
    for event, _ in EVENTS:
        view, printed = report.view(now=0.0), len(out.getvalue())
        report.event(event)
        said = out.getvalue()[printed:]
        assert said or report.view(now=0.0) != view, f"{type(event).__name__} showed nothing"
        assert not said.startswith(f"{event.kind}: {{"), f"{type(event).__name__} has no case of its own"
    head, rows = report.view(now=0.0)
    assert head == "[bold]writeup wide[/bold] · best 1.7500 · $1.00" and rows == []


def test_the_live_view_says_what_a_confirmation_found():
    out = io.StringIO()
    report = RichReporter(Console(file=out, width=300, highlight=False, emoji=False))
    report.event(FreshSeedsDrawn(night=3, train_seed=12, draw=7))
    for event in (ConfirmationDone(idea="wide", search_mean=1.75, mean=1.625, reason=None, verdict="better"),
                  ConfirmationDone(idea="flat", search_mean=1.5, mean=1.25, reason=None,
                                   verdict="no significant difference"),
                  ConfirmationDone(idea="deep", search_mean=1.5, mean=None, reason="the confirmation run failed")):
        report.event(event)
    assert out.getvalue().splitlines() == [
        "confirming on night 3's fresh seeds (train_seed 12, draw 7)",
        "  confirm wide: search 1.7500 -> 1.6250 on the fresh seeds, better than the baseline (before Holm's "
        "adjustment)",
        "  confirm flat: search 1.5000 -> 1.2500 on the fresh seeds, no significant difference from the baseline "
        "(before Holm's adjustment)",
        "  confirm deep: search 1.5000; failed: the confirmation run failed",
    ]


def test_the_live_view_shows_a_screen_in_flight_and_its_decision(tmp_path):
    out = io.StringIO()
    report = RichReporter(Console(file=out, width=300, highlight=False, emoji=False))
    report.event(RunStarted(idea="wide", run=1, runs=2, attempt=1, spend_usd=0.0))
    report.event(RunComputing(idea="wide", run=1, attempt=1, run_dir=str(tmp_path / "screen"), expected_s=None,
                              screen=True))
    assert report.view()[1] == ["wide run 1.1 · screen: preparing · 0:00"]
    report.event(RunScreened(idea="wide", run=1, attempt=1, screen_mean=1.2, screen_stderr=0.01, bar="baseline",
                             bar_mean=1.25, margin=0.0625, p_value=0.3, promoted=True, cached=True, spend_usd=0.0))
    report.event(RunComputing(idea="wide", run=1, attempt=1, run_dir=str(tmp_path / "full"), expected_s=None))
    assert report.view()[1] == ["wide run 1.1 · preparing · 0:00"]  # promoted: its full evaluation computes
    assert out.getvalue().splitlines() == [
        "  wide run 1.1: screen 1.2000 ± 0.0100 vs 1.2500 (baseline's screen; margin 0.0625), p=0.3 one-sided: "
        "promoted (cached)"]


def test_a_kind_without_a_case_is_shown_plainly_not_dropped():
    @dataclass(frozen=True, kw_only=True)
    class Novel(Event):
        kind: ClassVar[str] = "novel"
        what: str

    out = io.StringIO()
    RichReporter(Console(file=out, width=300, highlight=False, emoji=False)).event(Novel(what="news"))
    assert out.getvalue() == 'novel: {"what": "news"}\n'
