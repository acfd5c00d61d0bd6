"""The store's rules for reuse and resume: what is reused, what is redone, what a dead process leaves."""

import json
import subprocess
import sys

import pytest

from base.results import ConfirmationResult, FinalInfo, MissingMetric
from base.store import ABANDONED, INTERRUPTED, Store, run_key, source_hash
from scientist import campaign_store as records

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


def test_a_sealed_result_reads_as_a_record_and_is_written_back_as_it_was(echo_template, tmp_path):
    from scientist.evaluator import main

    # final_info.json as the sealed evaluator writes it, for the grokking fixture (val_acc bounded to [0, 1]).
    root = echo_template
    (tmp_path / "result.json").write_text(json.dumps({
        "per_seed": {"val_acc": [0.5, 0.75, 0.625], "val_loss": [1.0, 2, 1.5]},
        "extra": {"curve": [[0.1, 0.2], [0.3, 0.4]], "steps": 3}}))
    out = tmp_path / "final_info.json"
    assert main(["evaluate", "--template", str(root), "--dir", str(tmp_path), "--seeds", "3", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    info = FinalInfo.from_json(data)
    assert json.dumps(info.to_json(), indent=1) == out.read_text()  # the same keys, values and order
    acc = info.summary("val_acc")
    assert (acc.values, acc.mean, acc.n, acc.ci95_method) == ([0.5, 0.75, 0.625], 0.625, 3, "logit-t")
    assert (acc.stderr, acc.ci95) == (data["metrics"]["val_acc"]["stderr"], data["metrics"]["val_acc"]["ci95"])
    assert info.summary("val_loss").values == [1.0, 2.0, 1.5] and info.extra["steps"] == 3
    assert (info.template, info.metric, info.direction, info.n) == ("grokking", "val_acc", "max", 3)
    with pytest.raises(MissingMetric, match=r"no metric 'val_bpc' \(it has val_acc, val_loss\)"):
        info.summary("val_bpc")
    # A result scored before bounded intervals and evaluation times: read with defaults, written back without them.
    old = {k: v for k, v in data.items() if k != "evaluate_s"}
    old["metrics"] = {name: {k: v for k, v in m.items() if k != "ci95_method"} for name, m in data["metrics"].items()}
    assert FinalInfo.from_json(old).summary("val_acc").ci95_method == "t" and FinalInfo.from_json(old).to_json() == old

    # The store keeps the JSON as written; a run reads it as the record.
    store = Store(tmp_path / "s.sqlite")
    ok = start(store, tmp_path)
    store.finish_run(ok, status="ok", final_info=data, metric="val_acc")
    run = store.get(ok)
    assert run.final_info == data and run.result == info and (run.metric_mean, run.metric_stderr) == (0.625, acc.stderr)
    failed = start(store, tmp_path, {"loss.py": "x = 1\n"})
    store.finish_run(failed, status="failed", reason="loss returned NaN")
    with pytest.raises(ValueError, match=f"run {failed} has no sealed result \\(failed: loss returned NaN\\)"):
        _ = store.get(failed).result


def test_a_confirmation_result_of_an_earlier_version_loads_and_is_kept_as_written(tmp_path):
    # The first campaigns recorded no fresh seeds and no previous best.
    first = {"metric": "val_acc", "direction": "max", "night": "001-2026-12-02", "mean": 0.9, "stderr": 0.01,
             "ci95": [0.88, 0.92], "n": 4, "baseline_mean": 0.8, "test": "Welch's t-test (two-sided)",
             "p_value": 0.001, "difference": 0.1, "alpha": 0.05, "p_value_holm": 0.002, "verdict": "better"}
    store = Store(tmp_path / "s.sqlite")
    records.save_confirmation(store, campaign="c", session_id=1, idea="a", search_run_id=1, run_id=2, baseline_run_id=3,
                            result=ConfirmationResult.from_json(first), new_best=True)
    [row] = records.confirmations(store, "c")
    r = row["result"]
    assert (r.mean, r.verdict, r.previous, r.train_seed) == (0.9, "better", None, None)
    assert r.to_json() == first
    assert json.loads(store.db.execute("SELECT result FROM confirmations").fetchone()[0]) == first
