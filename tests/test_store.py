"""The store's rules for reuse and resume: what is reused, what is redone, what a dead process leaves."""

import json
import subprocess
import sys

from base.store import ABANDONED, INTERRUPTED, Store, run_key, source_hash

SOURCES = {"loss.py": "def loss(a, b, c, d, beta):\n    return a\n"}


def start(store: Store, tmp_path, sources=SOURCES) -> int:
    return store.start_run(kind="candidate", template="t", template_hash="h", sources=sources, seeds=2,
                           sandbox="bwrap", out_dir=tmp_path)


def key(sources=SOURCES) -> str:
    return run_key("h", source_hash(sources), 2)


def test_failed_runs_are_reused_only_when_they_failed_by_themselves(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    crashed = start(store, tmp_path)
    store.finish_run(crashed, status="failed", reason="loss raised on a tiny batch: ValueError")
    assert store.find_ok(key()) is None
    assert store.find_finished(key()).id == crashed
    interrupted = start(store, tmp_path, {"loss.py": "x = 1\n"})
    store.finish_run(interrupted, status="failed", reason=INTERRUPTED)
    assert store.find_finished(key({"loss.py": "x = 1\n"})) is None


def test_run_left_running_by_a_dead_process_is_marked_abandoned(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    mine = start(store, tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    other = start(store, tmp_path, {"loss.py": "y = 2\n"})
    store.db.execute("UPDATE runs SET pid=? WHERE id=?", (int(dead.stdout), other))
    reopened = Store(tmp_path / "s.sqlite")  # opening the store reaps what dead processes left
    assert reopened.get(other).status == "failed" and reopened.get(other).reason == ABANDONED
    assert reopened.get(mine).status == "running"  # this process is alive: its run is left alone
    assert reopened.find_finished(key({"loss.py": "y = 2\n"})) is None


def test_call_log_round_trip_and_session_cost(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    sid, resumed, args = store.open_session(out_dir=tmp_path / "o", template="t", proposer="llm", model="m",
                                            args={"ideas": 1})
    assert not resumed and args == {"ideas": 1}
    log = store.recorder(sid)
    call = {"stage": "idea", "model": "m", "messages": [{"role": "user", "content": "hi"}], "response": "yo",
            "prompt_tokens": 3, "completion_tokens": 1, "cost_usd": 0.25, "latency_s": 0.1}
    log.record("k1", call)
    log.record("k2", {**call, "cost_usd": 0.5})
    got = log.lookup("k1")
    assert got["response"] == "yo" and got["messages"] == call["messages"] and log.lookup("nope") is None
    assert store.session_cost(sid) == (0.75, 2, 6, 2)
    again, resumed, _ = store.open_session(out_dir=tmp_path / "o", template="t", proposer="llm", model="m",
                                           args={"ideas": 5})
    assert again == sid and resumed


def test_a_store_made_by_an_earlier_version_is_upgraded_and_keeps_its_runs(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)  # the runs table as the first release made it: no pid, no logs
    old.executescript("""
        CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, run_key TEXT NOT NULL, kind TEXT NOT NULL,
            template TEXT NOT NULL, template_hash TEXT NOT NULL, candidate_hash TEXT NOT NULL,
            candidate_source TEXT NOT NULL, seeds INTEGER NOT NULL, sandbox TEXT NOT NULL, status TEXT NOT NULL,
            reason TEXT, metric_name TEXT, metric_mean REAL, metric_stderr REAL, final_info TEXT, timings TEXT,
            error_tail TEXT, out_dir TEXT, created REAL NOT NULL, finished REAL);
        INSERT INTO runs (run_key, kind, template, template_hash, candidate_hash, candidate_source, seeds, sandbox,
            status, created) VALUES ('k', 'baseline', 't', 'h', 'c', '{"loss.py": "x"}', 2, 'bwrap', 'ok', 0);
    """)
    old.close()
    store = Store(path)
    run = store.get(1)
    assert run.status == "ok" and run.candidate_source == {"loss.py": "x"} and run.pid is None
    assert store.run_logs(1) == {}  # recorded before logs were kept
    new = start(store, tmp_path)
    store.finish_run(new, status="failed", reason="r", logs={"train.log": "line\n" * 1000})
    assert store.run_logs(new) == {"train.log": "line\n" * 1000}
    assert store.get(12345) is None


def test_an_out_dir_of_another_session_is_refused_until_its_folder_is_gone(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    out = tmp_path / "out"
    sid, _, _ = store.open_session(out_dir=out, template="t", proposer="evolve", model=None, args={})
    assert store.session_at(out)["id"] == sid
    store.release_out_dir(sid)
    assert store.session_at(out) is None
    again, resumed, _ = store.open_session(out_dir=out, template="u", proposer="evolve", model=None, args={})
    assert again != sid and not resumed


def test_threads_sharing_one_store_each_get_their_own_run(tmp_path):
    # Several ideas start and finish runs at once through one connection: no run may get another's id.
    from concurrent.futures import ThreadPoolExecutor

    store = Store(tmp_path / "s.sqlite")

    def one(i: int) -> int:
        run_id = start(store, tmp_path, {"loss.py": f"# {i}\n"})
        store.finish_run(run_id, status="ok", reason=str(i))
        return run_id

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(one, range(400)))
    assert len(set(ids)) == 400
    rows = store.db.execute("SELECT status, reason, candidate_source FROM runs").fetchall()
    assert len(rows) == 400 and {r["status"] for r in rows} == {"ok"}
    assert all(json.loads(r["candidate_source"]) == {"loss.py": f"# {r['reason']}\n"} for r in rows)


def test_processes_writing_one_store_at_once_lose_no_row(tmp_path):
    # Two sessions on one home: separate processes, each with its own connection, writing at once.
    code = ("import sys; from pathlib import Path; from base.store import Store\n"
            "s = Store(Path(sys.argv[1]))\n"
            "for i in range(150):\n"
            "    r = s.start_run(kind='candidate', template='t', template_hash='h',"
            " sources={'f': sys.argv[2] + str(i)}, seeds=2, sandbox='bwrap', out_dir=Path('.'))\n"
            "    s.finish_run(r, status='ok')\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "s.sqlite"), tag]) for tag in "abc"]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    rows = Store(tmp_path / "s.sqlite").db.execute("SELECT status FROM runs").fetchall()
    assert len(rows) == 450 and {r["status"] for r in rows} == {"ok"}
