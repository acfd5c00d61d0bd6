"""Execution at scale: several ideas at once on one machine, a Ray cluster of two nodes, kill -9 mid-flight.

Everything goes through the real CLI, the real bubblewrap sandbox, a real Ray head and a second Ray
node started on this machine by `ray start` (each with its own resources), and the real store.
"""

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, scientist

RAY = Path(sys.executable).with_name("ray")


def run_args(templates, home, out, *extra):
    return ("run", "--template", "discopop", "--templates-dir", str(templates), "--home", str(home),
            "--proposer", "evolve", "--ideas", "2", "--runs", "2", "--out", str(out), "--no-writeup",
            "--sandbox", "bwrap", *extra)


def runs(home) -> list[dict]:
    with sqlite3.connect(home / "store.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT id, kind, status, reason, node, created, finished FROM runs")]


def proposals(home) -> list[tuple[int, str, str]]:
    with sqlite3.connect(home / "store.sqlite") as db:
        return [(i, n, json.dumps(json.loads(idea).get("genome"), sort_keys=True))
                for i, n, idea in db.execute("SELECT idx, name, idea FROM ideas ORDER BY idx")]


def test_two_workers_run_two_ideas_at_once_each_on_its_own_cores(tiny_templates, tmp_path):
    home = tmp_path / "home"
    r = scientist(*run_args(tiny_templates, home, tmp_path / "out", "--workers", "2"), timeout=900)
    assert r.code == 0, r.text
    assert "runs on 2 local worker(s) (slot 0: cores 0; slot 1: cores 1)" in r.out
    done = [x for x in runs(home) if x["kind"] == "candidate"]
    assert {x["status"] for x in done} == {"ok"} and {x["node"] for x in done} == {"local slot 0", "local slot 1"}
    # Two runs were computing at the same time: their intervals overlap.
    overlap = any(a["created"] < b["finished"] and b["created"] < a["finished"]
                  for a in done for b in done if a["id"] < b["id"])
    assert overlap, done
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "complete" and [i["name"] for i in summary["ideas"]] == ["evolve_000", "evolve_001"]


def test_kill_9_with_two_runs_in_flight_then_the_same_command_resumes(tiny_templates, tmp_path):
    home, out = tmp_path / "home", tmp_path / "out"
    args = run_args(tiny_templates, home, out, "--workers", "2")
    # The baseline first, so that the kill falls while both ideas compute.
    assert scientist("baseline", "--template", "discopop", "--templates-dir", str(tiny_templates), "--home",
                     str(home), "--sandbox", "bwrap").code == 0
    proc = subprocess.Popen([sys.executable, "-m", "scientist", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # Both runs recorded as running and a sandbox of theirs started: a run's row is written a moment before
    # its first sandbox starts, and between its tracer's sandbox and its training's there is none.
    deadline = time.time() + 300
    started: list[psutil.Process] = []
    while time.time() < deadline and not (sum(x["status"] == "running" for x in runs(home)) == 2 and started):
        time.sleep(0.2)
        started = psutil.Process(proc.pid).children(recursive=True)  # its sandboxes and their runs
    assert sum(x["status"] == "running" for x in runs(home)) == 2, runs(home)
    assert started
    proposed = proposals(home)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Nothing it started survives it (other tests' sandboxes may run beside this one, so only its own
    # processes count); the kernel tears a killed JAX process down in its own time on a busy machine.
    survivors = lambda: [p for p in started if _alive(p)] + [  # noqa: E731
        p for p in _processes() if str(tmp_path) in p]
    deadline = time.time() + 15
    while survivors() and time.time() < deadline:
        time.sleep(0.2)
    assert not survivors()
    again = scientist(*args, timeout=900)
    assert again.code == 0, again.text
    after = runs(home)
    assert not [x for x in after if x["status"] == "running"]
    assert sum(x["reason"] == "interrupted: the process running it ended" for x in after) == 2
    # The same ideas in the same order: taken from the store, not proposed again.
    assert proposals(home)[:len(proposed)] == proposed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and len(summary["ideas"]) == 2


@pytest.mark.parametrize("backend", ["process", "bwrap", "docker"])
def test_a_worker_slots_cores_bind_everything_its_run_starts(backend, tmp_path, request):
    from base.template import PROJECT_ROOT
    from sandbox import backends
    from sandbox.limits import Limits

    if backend == "docker":
        from docker_engine import TEST_IMAGE
        sandbox = backends.resolve("docker", image=TEST_IMAGE, docker_host=request.getfixturevalue("docker_host"))
    else:
        sandbox = backends.resolve(backend)
    work = tmp_path / "work"
    work.mkdir()
    # The run and a child of its own (a process that detaches or a subprocess inherits the set).
    (work / "probe.py").write_text("import os, subprocess, sys\nprint('run', sorted(os.sched_getaffinity(0)))\n"
                                   "subprocess.run([sys.executable, '-c', 'import os; "
                                   "print(\"child\", sorted(os.sched_getaffinity(0)))'])\n"
                                   "import jax\n"
                                   "print('optimize', not jax.config.read('jax_disable_most_optimizations'))\n")
    last = max(os.sched_getaffinity(0))
    outcome = backends.run(sandbox, backends.Job(script="probe.py", work=work, libs_parent=PROJECT_ROOT,
                                                 cpus=(last,), xla_optimize=False), Limits(time_s=120),
                           tmp_path / "log")
    assert outcome.ok, outcome.log_tail
    log = (tmp_path / "log").read_text()
    assert f"run [{last}]" in log and f"child [{last}]" in log, log
    # And the sandbox's JAX compiles as the template's [compile] says (the default, optimised, elsewhere).
    assert "optimize False" in log, log


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _processes() -> list[str]:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if "bwrap" in line or "harness.py" in line]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray head and a second node on this machine, two CPUs each (what a template's run asks), marked by
    resources of their own.

    Token authentication is off for this test cluster (RAY_AUTH_MODE=disabled, for the nodes and for
    the scientist commands that connect to it): a ~/.ray/auth_token left by an earlier local
    `ray.init()` would otherwise make the nodes disagree about it.
    """
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED")}
    os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    env = dict(os.environ)
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's sockets live under it
    common = ["--num-cpus", "2", "--object-store-memory", str(100 * 2**20), "--disable-usage-stats"]
    head = subprocess.run([str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                           "--include-dashboard", "false", "--temp-dir", temp, "--resources", '{"node_a": 1}',
                           *common], capture_output=True, text=True, env=env, timeout=120)
    assert head.returncode == 0, head.stdout + head.stderr
    node = subprocess.run([str(RAY), "start", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1",
                           "--resources", '{"node_b": 1}', *common], capture_output=True, text=True, env=env,
                          timeout=120)
    try:
        assert node.returncode == 0, node.stdout + node.stderr
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def test_a_session_spreads_over_two_ray_nodes(tiny_templates, tmp_path, ray_cluster):
    home = tmp_path / "home"
    r = scientist(*run_args(tiny_templates, home, tmp_path / "out", "--workers", "2", "--executor", "ray",
                            "--ray-address", ray_cluster), timeout=900)
    assert r.code == 0, r.text
    assert "2 node(s), 4 CPUs" in r.out
    done = runs(home)
    assert {x["status"] for x in done} == {"ok"}, (done, r.text)
    assert len({x["node"] for x in done}) == 2, done  # some runs computed on each node
    # Each run says where its time outside the computation went (bench/ray_overhead.py reads them).
    with sqlite3.connect(home / "store.sqlite") as db:
        timings = [json.loads(t) for (t,) in db.execute("SELECT timings FROM runs")]
    assert all({"ray_submit", "ray_queue", "ray_unpack", "ray_return"} <= t.keys() for t in timings), timings
    # The runs' files came back by value into the driver's folders.
    for idea in json.loads((tmp_path / "out" / "summary.json").read_text())["ideas"]:
        for entry in idea["runs"]:
            assert (Path(entry["run_dir"]) / "final_info.json").is_file()
            assert (Path(entry["run_dir"]) / "train.log").is_file()


def test_a_run_that_kills_its_ray_worker_is_retried_once_then_failed(tiny_templates, tmp_path, ray_cluster):
    killer = tmp_path / "loss.py"
    killer.write_text("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n\n"
                      "def loss(a, b, c, d, beta):\n    return a\n")
    r = scientist("eval", "--template", "discopop", "--templates-dir", str(tiny_templates), "--home",
                  str(tmp_path / "home"), "--candidate", str(killer), "--sandbox", "process", "--executor", "ray",
                  "--ray-address", ray_cluster, timeout=600)
    assert r.code == 1, r.text
    assert "lost the Ray worker running it, also on its one retry" in r.err and "internal error" not in r.text


def test_prepared_data_goes_to_a_node_by_value_and_is_installed_as_made(tiny_templates, tmp_path):
    """What a Ray driver sends its nodes instead of each preparing the data (no JAX here: the data is made up)."""
    from base.secrets import secret_keys
    from base.template import load_template
    from sandbox import backends
    from scientist import runner

    template = load_template(str(tiny_templates / "discopop"))
    job = runner.Job(template=template, sources=template.editable_sources(), seeds=2, sandbox=backends.Sandbox("bwrap"),
                     home=tmp_path / "driver", secrets=secret_keys(template.spec.private))
    made = runner.data_cache(job)
    (made / "sub").mkdir(parents=True)
    (made / "train.npz").write_bytes(b"\x00data")
    (made / "sub" / "more.bin").write_bytes(b"more")
    files = runner.data_files(job)  # already made: read, not prepared again
    assert files == {"sub/more.bin": b"more", "train.npz": b"\x00data"}
    node = replace(job, home=tmp_path / "node")
    installed = runner.install_data(node, files)
    assert installed == runner.data_cache(node) and installed.name == made.name  # named by the same digest
    assert {str(p.relative_to(installed)): p.read_bytes() for p in installed.rglob("*") if p.is_file()} == files
    assert not [p for p in installed.parent.iterdir() if ".tmp-" in p.name]
    with pytest.raises(ValueError, match="not a path inside"):
        runner.install_data(replace(job, home=tmp_path / "other"), {"../escape": b"x"})
    assert not (tmp_path / "other").exists()
