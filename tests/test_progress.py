"""The live view's line for a run in flight: phase from the harness's timings.json, progress and time left."""

import json
import time

from scientist.progress import _InFlight


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
