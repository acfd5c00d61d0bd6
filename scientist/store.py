"""The SQLite store: every run, as it happens, so nothing is lost and nothing is recomputed.

A run is identified by its key: the hash of the template's content, the
candidate's source and the number of seeds. A finished run with the same key is
reused instead of being computed again.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_key TEXT NOT NULL,
    kind TEXT NOT NULL,              -- 'baseline' or 'candidate'
    template TEXT NOT NULL,
    template_hash TEXT NOT NULL,
    candidate_hash TEXT NOT NULL,
    candidate_source TEXT NOT NULL,  -- JSON {path: source}
    seeds INTEGER NOT NULL,
    sandbox TEXT NOT NULL,
    status TEXT NOT NULL,            -- 'running', 'ok' or 'failed'
    reason TEXT,                     -- one line, for failed runs
    metric_name TEXT,
    metric_mean REAL,
    metric_stderr REAL,
    final_info TEXT,                 -- JSON written by the sealed evaluator
    timings TEXT,                    -- JSON: sandbox_start, compile, train, evaluate, total (seconds)
    error_tail TEXT,
    out_dir TEXT,
    created REAL NOT NULL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS runs_key ON runs(run_key, status);
"""


def source_hash(sources: dict[str, str]) -> str:
    """Hash of a candidate: its editable files' paths and contents."""
    h = hashlib.sha256()
    for path in sorted(sources):
        h.update(path.encode() + b"\0" + sources[path].encode() + b"\0")
    return h.hexdigest()[:16]


def run_key(template_hash: str, candidate_hash: str, seeds: int) -> str:
    """What makes two runs the same computation."""
    return hashlib.sha256(f"{template_hash}:{candidate_hash}:{seeds}".encode()).hexdigest()[:16]


@dataclass
class Run:
    """One row of the runs table, with its JSON columns decoded."""

    id: int
    run_key: str
    kind: str
    template: str
    template_hash: str
    candidate_hash: str
    candidate_source: dict[str, str]
    seeds: int
    sandbox: str
    status: str
    reason: str | None
    metric_name: str | None
    metric_mean: float | None
    metric_stderr: float | None
    final_info: dict | None
    timings: dict | None
    error_tail: str | None
    out_dir: str | None
    created: float
    finished: float | None


_JSON_COLUMNS = ("candidate_source", "final_info", "timings")


class Store:
    """A thin wrapper over one SQLite file; safe to open from several processes."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def start_run(self, *, kind: str, template: str, template_hash: str, sources: dict[str, str],
                  seeds: int, sandbox: str, out_dir: Path) -> int:
        """Record a run as started; returns its id."""
        cand = source_hash(sources)
        cur = self.db.execute(
            "INSERT INTO runs (run_key, kind, template, template_hash, candidate_hash, candidate_source,"
            " seeds, sandbox, status, out_dir, created) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (run_key(template_hash, cand, seeds), kind, template, template_hash, cand,
             json.dumps(sources), seeds, sandbox, "running", str(out_dir), time.time()),
        )
        return int(cur.lastrowid)

    def finish_run(self, run_id: int, *, status: str, reason: str | None = None,
                   final_info: dict | None = None, metric: str | None = None,
                   timings: dict | None = None, error_tail: str | None = None) -> None:
        """Record the outcome of a run."""
        mean = stderr = None
        if final_info is not None and metric is not None:
            mean = final_info["metrics"][metric]["mean"]
            stderr = final_info["metrics"][metric]["stderr"]
        self.db.execute(
            "UPDATE runs SET status=?, reason=?, metric_name=?, metric_mean=?, metric_stderr=?,"
            " final_info=?, timings=?, error_tail=?, finished=? WHERE id=?",
            (status, reason, metric, mean, stderr, _dumps(final_info), _dumps(timings), error_tail,
             time.time(), run_id),
        )

    def get(self, run_id: int) -> Run:
        row = self.db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return _to_run(row)

    def find_ok(self, key: str) -> Run | None:
        """The latest finished, successful run with this key, if any."""
        row = self.db.execute(
            "SELECT * FROM runs WHERE run_key=? AND status='ok' ORDER BY id DESC LIMIT 1", (key,)
        ).fetchone()
        return _to_run(row) if row else None

    def runs(self, template: str | None = None) -> list[Run]:
        """All runs, oldest first, optionally of one template."""
        if template is None:
            rows = self.db.execute("SELECT * FROM runs ORDER BY id").fetchall()
        else:
            rows = self.db.execute("SELECT * FROM runs WHERE template=? ORDER BY id", (template,)).fetchall()
        return [_to_run(r) for r in rows]


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _to_run(row: sqlite3.Row) -> Run:
    data = dict(row)
    for col in _JSON_COLUMNS:
        if data[col] is not None:
            data[col] = json.loads(data[col])
    return Run(**data)
