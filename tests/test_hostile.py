"""Hostile candidates against both real sandboxes (bubblewrap and Docker): each is blocked or changes nothing.

The contained-candidate test runs DPO behind a prelude that attacks and records
what happened in probe.json in the tracer's folder (the only place the candidate's Python runs):
it also rebinds the shared training code, reads for the training data, and forges artifacts from
an exit handler and a lingering thread. The run must still score exactly like DPO, and the host
must be as it was. The other attacks (fork bomb, disk
fill, output flood, parent killed) must end in a failed run with a one-line reason
and leave no process or container behind; the flood runs under the process backend
too, since its bounded log is the same for all three. Network attempts target only loopback (a
listener of the test's own) and a documentation address (192.0.2.1, TEST-NET-1).
"""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest
from conftest import DPO_SOURCE, ROOT, own_caches, scientist, write_tiny_template

from base.store import Store
from sandbox.logs import MiB

BACKENDS = ["bwrap", "docker"]
TMP_MB = 32
FLOOD_MB = 24

PRELUDE = r'''
import json, os, resource, socket, subprocess
probe = {}

def attempt(name, fn):
    try:
        probe[name] = {"ok": True, "value": fn()}
    except BaseException as e:
        probe[name] = {"ok": False, "error": type(e).__name__}

def connect(address):
    s = socket.create_connection(address, timeout=2)
    s.sendall(b"escaped")
    return "connected"

attempt("loopback_to_host", lambda: connect(("127.0.0.1", HOST_PORT)))
attempt("other_address", lambda: connect(("192.0.2.1", 80)))
attempt("dns", lambda: socket.getaddrinfo("pypi.org", 443))
attempt("interfaces", lambda: sorted(name for _, name in socket.if_nameindex()))
attempt("env_secret", lambda: os.environ.get("SCIENTIST_TEST_SECRET"))
attempt("env_names", lambda: sorted(os.environ))
attempt("read_secret_file", lambda: open(SECRET_PATH).read())
attempt("read_evaluator", lambda: open(EVALUATOR_PATH).read()[:20])

def overwrite(path):
    with open(path, "w") as f:
        f.write("raise SystemExit('tampered')\n")
    return "written"

attempt("write_evaluator", lambda: overwrite(EVALUATOR_PATH))
attempt("write_usr", lambda: overwrite("/usr/hostile.txt"))
attempt("write_root", lambda: overwrite("/hostile.txt"))
attempt("write_workloads", lambda: overwrite("/opt/scientist/jax_workloads/preference.py"))
attempt("write_harness", lambda: overwrite("harness.py"))          # its own copy: loaded already, rebuilt per run
attempt("forge_outside", lambda: overwrite("/sandbox/final_info.json"))
attempt("forge_inside", lambda: json.dump({"metrics": {"reward_gain_at_kl": {"values": [99.0, 99.0]}}},
                                          open("final_info.json", "w")))
attempt("sandbox_entries", lambda: sorted(os.listdir("/sandbox")))
attempt("cache_siblings", lambda: sorted(os.listdir("/sandbox/jax-cache/..")))

def poison_cache():
    os.makedirs("/sandbox/jax-cache", exist_ok=True)
    names = os.listdir("/sandbox/jax-cache") + ["jit_train-forged-cache-entry"]
    for name in names:
        path = os.path.join("/sandbox/jax-cache", name)
        if os.path.isfile(path) or not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(b"poison" * 100)
    return len(names)

attempt("poison_own_cache", poison_cache)

def fill_tmp():
    written = 0
    try:
        with open("/tmp/fill", "wb") as f:
            while written < 4 * 2**30:
                f.write(b"x" * 2**20)
                f.flush()
                written += 2**20
    except OSError:
        pass
    os.remove("/tmp/fill")
    return written // 2**20

attempt("fill_tmp_mb", fill_tmp)
attempt("raise_process_limit", lambda: resource.setrlimit(resource.RLIMIT_NPROC, (10**7, 10**7)))

# Attacks on training itself: rebind the shared training code (three times the steps: a "better" loss that
# is only more compute), read the training data, and forge artifacts and exports after the loss is exported.
import atexit, dataclasses, threading, time
import jax_workloads.preference as _pf
_make_train = _pf.make_train
_pf.make_train = lambda config, loss_fn: _make_train(dataclasses.replace(config, steps=config.steps * 3), loss_fn)
attempt("rebind_training", lambda: _pf.make_train is not _make_train)
attempt("read_train_data", lambda: open("data/train.npz", "rb").read(16).hex())

def forge():
    os.makedirs("artifacts", exist_ok=True)
    with open("artifacts/policy.npz", "wb") as f:
        f.write(b"forged")
    with open("../work/artifacts/policy.npz", "wb") as f:
        f.write(b"forged")

atexit.register(lambda: attempt("forge_at_exit", forge))
threading.Thread(target=lambda: (time.sleep(2), forge())).start()  # not a daemon: the tracer waits for it
attempt("become_root", lambda: os.setuid(0) or os.getuid())
attempt("detached", lambda: subprocess.Popen(["sleep", "876543"], start_new_session=True).pid)
with open("probe.json", "w") as f:
    json.dump(probe, f)
'''


def _tree_digest(path) -> str:
    # Every file but JAX's LRU bookkeeping (last-use stamps and the lock), which the trusted evaluator
    # itself rewrites on each read of its size-bounded cache.
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.endswith(("-atime", ".lockfile"))):
        h.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return h.hexdigest()


def _leftovers(marker: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]


def _containers(args: list[str]) -> list[str]:
    if "docker" not in args:
        return []
    from docker_engine import remaining_containers

    return remaining_containers(args[args.index("--docker-host") + 1])


@pytest.fixture(scope="module")
def hostile_templates(tmp_path_factory):
    dest = tmp_path_factory.mktemp("hostile-templates")
    write_tiny_template(dest, processes="256", disk_mb="64", tmp_mb=str(TMP_MB))
    return dest


@pytest.fixture(scope="module")
def hostile_home(hostile_templates, tmp_path_factory):
    """A home whose DPO baseline is computed (in bubblewrap) before any hostile candidate runs."""
    home = tmp_path_factory.mktemp("hostile-home")
    own_caches(home)  # its own, not the run's shared caches: the test digests them
    r = scientist("baseline", "--template", "discopop", "--templates-dir", str(hostile_templates),
                  "--home", str(home), "--sandbox", "bwrap")
    assert r.code == 0, r.text
    return home


def _eval(templates, home, candidate, out, args):
    return scientist("eval", "--template", "discopop", "--templates-dir", str(templates), "--home", str(home),
                     "--candidate", str(candidate), "--out", str(out), *args)


@pytest.mark.parametrize("sandbox_args", BACKENDS, indirect=True)
def test_hostile_candidate_is_contained(sandbox_args, hostile_templates, hostile_home, tmp_path, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret-token")
    evaluator = hostile_templates / "discopop" / "evaluate.py"
    before = evaluator.read_text()
    caches = hostile_home / "cache"
    other_caches = {p.name: _tree_digest(p) for p in (caches / "jax-sandbox").iterdir()}
    eval_cache = _tree_digest(caches / "jax-eval")
    received: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        listener.settimeout(90)
        try:
            conn, _ = listener.accept()
            received.append(conn.recv(64))
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    prelude = (PRELUDE.replace("HOST_PORT", str(port)).replace("SECRET_PATH", repr(str(secret)))
               .replace("EVALUATOR_PATH", repr(str(evaluator))))
    hostile = tmp_path / "hostile.py"
    hostile.write_text(prelude + "\n" + DPO_SOURCE)
    monkeypatch.setenv("SCIENTIST_TEST_SECRET", "from-the-host-environment")
    out = tmp_path / "run"
    r = _eval(hostile_templates, hostile_home, hostile, out, sandbox_args)
    listener.close()
    assert r.code == 0, r.text
    probe = json.loads((out / "trace" / "probe.json").read_text())  # the candidate ran in the tracer's sandbox only

    assert not probe["loopback_to_host"]["ok"] and received == []        # no way out, not even to loopback
    assert not probe["other_address"]["ok"] and not probe["dns"]["ok"]   # nor anywhere else
    assert probe["interfaces"]["value"] == ["lo"]                          # a network namespace of its own
    assert probe["env_secret"] == {"ok": True, "value": None}              # the host's environment is not there
    assert not [k for k in probe["env_names"]["value"] if "SECRET" in k or "KEY" in k or "TOKEN" in k]
    assert not probe["read_secret_file"]["ok"]                             # files outside the run folder: absent
    assert not probe["read_evaluator"]["ok"] and not probe["write_evaluator"]["ok"]
    assert evaluator.read_text() == before                                 # the evaluator is untouched
    assert not probe["write_usr"]["ok"] and not probe["write_root"]["ok"]  # read-only host (or image)
    assert not probe["write_workloads"]["ok"]                              # and read-only shared library
    assert not probe["forge_outside"]["ok"]                                # the real final_info.json is out of reach
    assert probe["sandbox_entries"]["value"] == ["work"]                   # its own folder, and nothing else:
    assert not probe["cache_siblings"]["ok"] and not probe["poison_own_cache"]["ok"]  # no cache to poison
    assert probe["rebind_training"]["ok"] and not probe["read_train_data"]["ok"]  # rebound in its own process only
    assert not (out / "work" / "probe.json").exists()                      # nothing of it ran where training did
    assert (out / "work" / "artifacts" / "policy.npz").read_bytes()[:6] != b"forged"  # the harness's export
    assert probe["fill_tmp_mb"]["ok"] and probe["fill_tmp_mb"]["value"] <= TMP_MB  # /tmp is small and private
    assert not probe["raise_process_limit"]["ok"] or sandbox_args[1] == "bwrap" and os.getuid() == 0
    assert not probe["become_root"]["ok"] or sandbox_args[1] == "bwrap"   # docker: nobody, no capabilities
    assert probe["detached"]["ok"]
    assert _leftovers("876543") == [] and _containers(sandbox_args) == []

    # The score is DPO's: nothing the prelude did (forged files, edited harness) changed what was evaluated,
    # and no other candidate's compiled programs nor the evaluator's were touched.
    info = json.loads((out / "final_info.json").read_text())
    (dpo,) = [r for r in Store(hostile_home / "store.sqlite").runs("discopop") if r.kind == "baseline"]
    assert info["metrics"]["reward_gain_at_kl"]["values"] == dpo.final_info["metrics"]["reward_gain_at_kl"]["values"]
    assert {n: _tree_digest(caches / "jax-sandbox" / n) for n in other_caches} == other_caches
    assert _tree_digest(caches / "jax-eval") == eval_cache


@pytest.mark.parametrize("sandbox_args", BACKENDS, indirect=True)
def test_fork_bomb_is_stopped_at_the_process_limit(sandbox_args, hostile_templates, tmp_path):
    from sandbox.limits import pids_cgroup

    if sandbox_args[1] == "bwrap" and os.getuid() == 0:
        cg = pids_cgroup(16)
        if cg is None:
            pytest.skip("root without a pids cgroup: nothing in the kernel would cap a fork bomb here")
        cg.rmdir()
    marker = f"forkbomb{len(sandbox_args)}"
    bomb = tmp_path / "bomb.py"
    bomb.write_text(f'''import subprocess, time
subprocess.Popen(["sh", "-c", ": {marker}; f() {{ f | f & }}; f"])
time.sleep(600)
''')
    r = _eval(hostile_templates, tmp_path / "home", bomb, tmp_path / "run", sandbox_args)
    # The reason is the process limit's, not the 40 s time limit's.
    assert r.code == 1 and "process limit: the run reached 256 processes and threads" in r.err, r.text
    time.sleep(0.5)
    assert _leftovers(marker) == [] and _containers(sandbox_args) == []


@pytest.mark.parametrize("sandbox_args", BACKENDS, indirect=True)
def test_disk_fill_is_stopped_and_its_files_removed(sandbox_args, hostile_templates, tmp_path):
    filler = tmp_path / "filler.py"
    filler.write_text('''import os, time
for i in range(10**6):
    try:
        with open(f"fill-{i}.bin", "wb") as f:
            f.write(os.urandom(4 * 2**20))
    except OSError:
        time.sleep(0.1)
''')
    free = psutil.disk_usage(str(tmp_path)).free
    r = _eval(hostile_templates, tmp_path / "home", filler, tmp_path / "run", sandbox_args)
    assert r.code == 1 and "disk limit: the run wrote more than 64 MB in its folder" in r.err, r.text
    # The candidate filled the tracer's folder (where its import runs): removed, its log kept.
    assert not (tmp_path / "run" / "trace").exists() and (tmp_path / "run" / "trace.log").exists()
    assert psutil.disk_usage(str(tmp_path)).free > free - 32 * 2**20  # the space is given back
    assert _containers(sandbox_args) == []


@pytest.fixture(scope="module")
def flood_templates(tmp_path_factory):
    """The tiny template with a small output limit, so a flood is stopped within seconds."""
    dest = tmp_path_factory.mktemp("flood-templates")
    toml = write_tiny_template(dest) / "template.toml"
    toml.write_text(toml.read_text().replace("[limits]\n", f"[limits]\noutput_mb = {FLOOD_MB}\n", 1))
    return dest


FLOOD = """import subprocess, sys
subprocess.Popen(["sleep", "MARKER"])
print("FLOOD-START", flush=True)
line = "x" * 2**20 + "\\n"
i = 0
while True:
    sys.stdout.write(f"out {i} " + line)
    sys.stderr.write(f"err {i} " + line)
    i += 1
"""
DROPPED = re.compile(rb"\n\[\.\.\. ([\d,]+) bytes of output dropped: "
                     rb"the log keeps its first 1 MiB and last 3 MiB \.\.\.\]\n")


def _folder_bytes(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.mark.parametrize("sandbox_args", [*BACKENDS, "process"], indirect=True)
def test_output_flood_is_stopped_and_its_log_bounded(sandbox_args, flood_templates, tmp_path):
    marker = f"66554{len(sandbox_args)}"
    flood = tmp_path / "flood.py"
    flood.write_text(FLOOD.replace("MARKER", marker))
    home, out = tmp_path / "home", tmp_path / "run"
    t0 = time.time()
    r = _eval(flood_templates, home, flood, out, sandbox_args)
    took = time.time() - t0
    reason = (f"output limit: the run wrote more than {FLOOD_MB} MB to its output (a flood?); "
              "its log keeps the first 1 MiB and the last 3 MiB")
    assert r.code == 1 and reason in r.err and "Traceback" not in r.text, r.text
    assert len([line for line in r.err.splitlines() if "failed:" in line]) == 1
    # The reason above is the output limit's, not the 40 s time limit's: no timing assertion is needed (a loaded
    # machine took 40 s to write the flood).

    # The log (the tracer's: the candidate's import floods): the first 1 MiB, the marker line, the last 3 MiB.
    log = (out / "trace.log").read_bytes()
    dropped = DROPPED.search(log)
    assert dropped and len(log) - len(dropped.group(0)) == 4 * MiB
    head, tail = log[:dropped.start()], log[dropped.end():]
    assert b"FLOOD-START\nout 0 xxx" in head and int(dropped.group(1).replace(b",", b"")) >= (FLOOD_MB - 4) * MiB
    assert max(int(n) for n in re.findall(rb"(?:out|err) (\d+) ", tail)) >= FLOOD_MB // 2 - 1  # the flood's end
    assert _folder_bytes(out) < 6 * MiB  # the whole run folder: the log, the candidate, its small work folder
    print(f"flood on {sandbox_args[1]}: stopped after {took:.1f} s, {int(dropped.group(1).replace(b',', b'')):,} "
          f"bytes dropped, trace.log {len(log):,} bytes, run folder {_folder_bytes(out):,} bytes")
    time.sleep(0.5)
    assert _leftovers(marker) == [] and _containers(sandbox_args) == []

    normal = tmp_path / "dpo.py"
    normal.write_text(DPO_SOURCE)
    r = _eval(flood_templates, home, normal, tmp_path / "after", sandbox_args)
    assert r.code == 0, r.text
    assert (tmp_path / "after" / "final_info.json").is_file()


def _start_sleeper(templates, home, tmp_path, args) -> tuple[subprocess.Popen, str]:
    marker = f"55443{len(args)}"
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text(f"import subprocess, time\nsubprocess.Popen(['sleep', '{marker}'])\ntime.sleep(600)\n")
    cli = subprocess.Popen([sys.executable, "-m", "scientist", "eval", "--template", "discopop", "--templates-dir",
                            str(templates), "--home", str(home), "--candidate", str(sleeper), *args],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while time.time() < deadline and not _leftovers(marker):
        time.sleep(0.2)
    assert _leftovers(marker), "the sandboxed candidate never started"
    return cli, marker


@pytest.mark.parametrize("sandbox_args", ["docker"], indirect=True)
def test_terminated_parent_removes_its_container(sandbox_args, hostile_templates, tmp_path):
    cli, marker = _start_sleeper(hostile_templates, tmp_path / "home", tmp_path, sandbox_args)
    assert _containers(sandbox_args) != []
    cli.send_signal(signal.SIGTERM)
    out, err = cli.communicate(timeout=30)
    assert cli.returncode == 130 and "interrupted" in err and "Traceback" not in out + err
    assert _containers(sandbox_args) == [] and _leftovers(marker) == []


@pytest.mark.parametrize("sandbox_args", ["docker"], indirect=True)
def test_container_of_a_killed_parent_is_reaped_by_the_next_run(sandbox_args, hostile_templates, tmp_path):
    cli, marker = _start_sleeper(hostile_templates, tmp_path / "home", tmp_path, sandbox_args)
    cli.kill()  # SIGKILL: no chance to clean up
    cli.communicate(timeout=30)
    assert _containers(sandbox_args) != []  # orphaned, until its own deadline or the next run
    broken = tmp_path / "broken.py"
    broken.write_text("def loss(a, b, c, d, beta):\n    raise ValueError('boom')\n")
    r = _eval(hostile_templates, tmp_path / "home", broken, tmp_path / "next", sandbox_args)
    assert r.code == 1 and "boom" in r.err
    assert _containers(sandbox_args) == [] and _leftovers(marker) == []
