"""Hostile candidates against the real bubblewrap sandbox: each attack is blocked or changes nothing.

The candidate is DPO with a prelude that attacks and records what happened in
probe.json in its work folder; the run must still score exactly like DPO.
Network attempts target only loopback (a listener of the test's own), and the
sandbox's interfaces are listed rather than probed.
"""

import json
import socket
import threading

import psutil
from conftest import DPO_SOURCE, scientist

from scientist.store import Store

PRELUDE = r'''
import json, os, socket, subprocess
probe = {}

def attempt(name, fn):
    try:
        probe[name] = {"ok": True, "value": fn()}
    except Exception as e:
        probe[name] = {"ok": False, "error": type(e).__name__}

def connect():
    s = socket.create_connection(("127.0.0.1", HOST_PORT), timeout=2)
    s.sendall(b"escaped")
    return "connected"

attempt("loopback_to_host", connect)
attempt("interfaces", lambda: sorted(name for _, name in socket.if_nameindex()))
attempt("env_secret", lambda: os.environ.get("SCIENTIST_TEST_SECRET"))
attempt("read_secret_file", lambda: open(SECRET_PATH).read())
attempt("read_evaluator", lambda: open(EVALUATOR_PATH).read()[:20])

def overwrite(path):
    with open(path, "w") as f:
        f.write("raise SystemExit('tampered')\n")
    return "written"

attempt("write_evaluator", lambda: overwrite(EVALUATOR_PATH))
attempt("write_usr", lambda: overwrite("/usr/hostile.txt"))
attempt("write_workloads", lambda: overwrite("/opt/scientist/jax_workloads/preference.py"))
attempt("sandbox_entries", lambda: sorted(os.listdir("/sandbox")))
attempt("cache_siblings", lambda: sorted(os.listdir("/sandbox/jax-cache/..")))
attempt("detached", lambda: subprocess.Popen(["sleep", "876543"], start_new_session=True).pid)
with open("probe.json", "w") as f:
    json.dump(probe, f)
'''


def test_hostile_candidate_is_contained_by_bwrap(tiny_templates, home, tmp_path, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret-token")
    evaluator = tiny_templates / "discopop" / "evaluate.py"
    before = evaluator.read_text()
    received: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        listener.settimeout(60)
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
    baseline = scientist("baseline", "--template", "discopop", "--templates-dir", str(tiny_templates),
                         "--home", str(home))
    assert baseline.code == 0, baseline.text
    out = tmp_path / "run"
    r = scientist("eval", "--template", "discopop", "--templates-dir", str(tiny_templates), "--home", str(home),
                  "--candidate", str(hostile), "--sandbox", "bwrap", "--out", str(out))
    listener.close()
    assert r.code == 0, r.text
    probe = json.loads((out / "work" / "probe.json").read_text())

    assert not probe["loopback_to_host"]["ok"] and received == []        # no way out, not even to loopback
    assert probe["interfaces"]["value"] == ["lo"]                          # a network namespace of its own
    assert probe["env_secret"] == {"ok": True, "value": None}              # the host's environment is not there
    assert not probe["read_secret_file"]["ok"]                             # files outside the run folder: absent
    assert not probe["read_evaluator"]["ok"] and not probe["write_evaluator"]["ok"]
    assert evaluator.read_text() == before                                 # the evaluator is untouched
    assert not probe["write_usr"]["ok"] and not probe["write_workloads"]["ok"]  # read-only host and library
    assert probe["sandbox_entries"]["value"] == ["jax-cache", "work"]
    assert probe["cache_siblings"]["value"] == ["jax-cache", "work"]       # only its own compilation cache
    assert probe["detached"]["ok"]
    assert [p for p in psutil.process_iter(["cmdline"]) if "876543" in " ".join(p.info["cmdline"] or [])] == []

    # And the score is DPO's: nothing the prelude did changed what was evaluated.
    info = json.loads((out / "final_info.json").read_text())
    (dpo,) = [r for r in Store(home / "store.sqlite").runs("discopop") if r.kind == "baseline" and r.status == "ok"]
    assert info["metrics"]["reward_gain_at_kl"]["values"] == dpo.final_info["metrics"]["reward_gain_at_kl"]["values"]
