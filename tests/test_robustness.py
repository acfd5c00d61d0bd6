"""The evaluator process on bad artifacts, and an interrupted run: recorded, nothing left behind."""

import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import psutil
from conftest import ROOT, warm_home


def test_evaluator_process_rejects_a_bad_artifact(tiny_templates, tmp_path):
    work = tmp_path / "work"
    (work / "artifacts").mkdir(parents=True)
    # Right names, wrong shapes: what a tampered export would look like.
    np.savez(work / "artifacts" / "policy.npz", w1=np.zeros((1, 1), np.float32), b1=np.zeros(1, np.float32),
             w2=np.zeros(1, np.float32), b2=np.zeros(1, np.float32))
    out = tmp_path / "final_info.json"
    p = subprocess.run([sys.executable, "-I", "-m", "scientist.evaluator", "evaluate", "--template",
                        str(tiny_templates / "discopop"), "--dir", str(work), "--seeds", "2", "--out", str(out)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 3
    assert "HARNESS-FAIL: artifact rejected: policy.npz: array 'w1' has shape (1, 1)" in p.stderr
    assert not out.exists()


def test_interrupted_run_is_recorded_and_leaves_no_process(tiny_templates, tmp_path):
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(120)\n")
    home = warm_home(tmp_path / "home")
    cli = subprocess.Popen([sys.executable, "-m", "scientist", "eval", "--template", "discopop", "--templates-dir",
                            str(tiny_templates), "--home", str(home), "--candidate", str(slow)],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait for the sandboxed tracer itself (not just its log file): a loaded machine may still be starting it.
    deadline = time.time() + 120
    while time.time() < deadline and not _tracers(psutil.Process(cli.pid)):
        time.sleep(0.2)
    assert _tracers(psutil.Process(cli.pid)), "the tracer never started"
    time.sleep(2.0)  # the tracer is now importing the candidate, which sleeps
    run_dir = next(home.glob("runs/discopop/*"))
    cli.send_signal(signal.SIGINT)
    out, err = cli.communicate(timeout=90)  # prompt when quiet (about 2 s); a loaded CI machine is slower
    assert cli.returncode == 130 and "interrupted" in err and "Traceback" not in out + err, out + err
    row = sqlite3.connect(home / "store.sqlite").execute("SELECT status, reason FROM runs").fetchone()
    assert row == ("failed", "interrupted by the user")
    left = [p for p in psutil.process_iter(["cmdline"]) if str(run_dir) in " ".join(p.info["cmdline"] or [])]
    assert left == []


def _tracers(cli: psutil.Process) -> list[psutil.Process]:
    try:
        return [p for p in cli.children(recursive=True) if "trace.py" in " ".join(p.cmdline())]
    except psutil.Error:  # a child ended while it was read
        return []


def test_the_tracers_exports_are_copied_only_as_plain_files(tmp_path):
    """A candidate owns the tracer's folder: a linked exports/ or a linked export must not pull host files in."""
    import os

    import pytest

    from scientist.runner import _copy_exports

    (tmp_path / "linked").symlink_to("/etc")
    with pytest.raises(ValueError, match="no longer a plain folder"):
        _copy_exports(tmp_path / "linked", tmp_path / "dest")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "loss.jaxexport").write_bytes(b"x")
    os.symlink("/etc/hostname", plain / "policy.jaxexport")
    with pytest.raises(ValueError, match="not a plain file"):
        _copy_exports(plain, tmp_path / "dest2")
    (plain / "policy.jaxexport").unlink()
    _copy_exports(plain, tmp_path / "dest3")
    assert sorted(os.listdir(tmp_path / "dest3")) == ["loss.jaxexport"]
