"""The SQLite store: every run, as it happens, so nothing is lost and nothing is recomputed.

A run is identified by its key: the hash of the template's content, the
candidate's source and the number of seeds. A finished run with the same key is
reused instead of being computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import zlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import psutil
from filelock import FileLock

from base.results import FinalInfo

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_key TEXT NOT NULL,
    kind TEXT NOT NULL,              -- 'baseline', 'candidate' or 'screen' (a cascade's cheap first look at a
                                     -- candidate, under the template's [screen]: never a result)
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
    pid INTEGER,                     -- the process running it, to recognise runs whose process died
    created REAL NOT NULL,
    finished REAL,
    logs BLOB,                       -- zlib(JSON {name: text}): the run's bounded logs, so a deleted folder is
                                     -- rebuilt from the store alone
    node TEXT,                       -- where it was computed: "local" or a Ray node id
    draw INTEGER                     -- the secrets' draw it used (base.secrets); NULL: the home's own (draw 0)
);
CREATE INDEX IF NOT EXISTS runs_key ON runs(run_key, status);

-- One `scientist run`, identified by its output folder: re-running the same command resumes it.
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    out_dir TEXT NOT NULL UNIQUE,
    template TEXT NOT NULL,
    proposer TEXT NOT NULL,
    model TEXT,
    args TEXT NOT NULL,              -- JSON of the run's configuration
    status TEXT NOT NULL,            -- 'running', 'complete', 'stopped'
    reason TEXT,
    created REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS ideas (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id INTEGER NOT NULL REFERENCES sessions(id),
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    idea TEXT NOT NULL,              -- JSON in the idea format
    status TEXT NOT NULL,            -- 'running', 'done', 'failed', 'duplicate'
    reason TEXT,
    notes TEXT,                      -- Markdown: what was tried, what came out
    best_run_id INTEGER,
    review TEXT,                     -- JSON: the paper's review (Overall, Decision, ...)
    UNIQUE (session_id, idx)
);
-- Each attempt of each run of an idea, linked to the sandboxed run it made (if it got that far).
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    idea_id INTEGER NOT NULL REFERENCES ideas(id),
    run_idx INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    run_id INTEGER REFERENCES runs(id),
    status TEXT NOT NULL,            -- 'ok', 'failed', 'no_edit', 'screened_out'
    reason TEXT,
    screen_run_id INTEGER REFERENCES runs(id),  -- its screen, with the cascade on (run_id: the full run, if promoted)
    UNIQUE (idea_id, run_idx, attempt)
);
-- The home's secrets (base.secrets): [private] values drawn at random on a template's first use, never
-- written anywhere else. The first value recorded for a key wins (INSERT OR IGNORE), so processes agree.
CREATE TABLE IF NOT EXISTS secrets (
    template TEXT NOT NULL,
    key TEXT NOT NULL,               -- dotted [private] key, e.g. world_seed
    value INTEGER NOT NULL,          -- 63 bits
    created REAL NOT NULL,
    PRIMARY KEY (template, key)
);
-- Literature searches by (source, query), so a resumed session sees the same papers.
CREATE TABLE IF NOT EXISTS literature (
    key TEXT PRIMARY KEY,
    response TEXT NOT NULL,
    created REAL NOT NULL
);
-- Every model call, keyed by a hash of the request: a replayed request is never paid twice.
CREATE TABLE IF NOT EXISTS llm_calls (
    key TEXT PRIMARY KEY,
    session_id INTEGER,
    stage TEXT NOT NULL,
    model TEXT NOT NULL,
    messages TEXT NOT NULL,
    response TEXT NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cost_usd REAL,
    latency_s REAL,
    created REAL NOT NULL,
    response_format TEXT             -- the form it was asked in (json_schema, json_object, none); NULL: no schema
);
-- Which response_format form a model at an api base takes (base.llm.FORMS), found on its first JSON call.
CREATE TABLE IF NOT EXISTS response_formats (
    model TEXT NOT NULL,
    api_base TEXT NOT NULL,          -- '' for the provider's own
    form TEXT NOT NULL,              -- 'json_schema', 'json_object' or 'none'
    detail TEXT,                     -- what the better forms answered, one line
    created REAL NOT NULL,
    PRIMARY KEY (model, api_base)
);
"""


# Columns added after the first release: (table, column, type), added to older stores when opened.
_ADDED_COLUMNS = (("runs", "pid", "INTEGER"), ("ideas", "review", "TEXT"), ("runs", "logs", "BLOB"),
                  ("runs", "node", "TEXT"), ("sessions", "campaign", "TEXT"),
                  ("llm_calls", "response_format", "TEXT"), ("runs", "draw", "INTEGER"),
                  ("steps", "screen_run_id", "INTEGER"))


def source_hash(sources: dict[str, str]) -> str:
    """Hash of a candidate: its editable files' paths and contents."""
    h = hashlib.sha256()
    for path in sorted(sources):
        h.update(path.encode() + b"\0" + sources[path].encode() + b"\0")
    return h.hexdigest()[:16]


def run_key(template_hash: str, candidate_hash: str, seeds: int, draw: int = 0) -> str:
    """What makes two runs the same computation (draw: base.secrets; keys of draw 0 are those of old stores)."""
    draw_part = f":draw{draw}" if draw else ""
    return hashlib.sha256(f"{template_hash}:{candidate_hash}:{seeds}{draw_part}".encode()).hexdigest()[:16]


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
    pid: int | None
    created: float
    finished: float | None
    node: str | None = None
    draw: int | None = None   # the secrets' draw (base.secrets); None: draw 0

    @property
    def result(self) -> FinalInfo:
        """The sealed result as a record; ValueError for a run that has none (it failed, or is running)."""
        if self.final_info is None:
            raise ValueError(f"run {self.id} has no sealed result ({self.status}"
                             + (f": {self.reason})" if self.reason else ")"))
        return FinalInfo.from_json(self.final_info)


_JSON_COLUMNS = ("candidate_source", "final_info", "timings")
# Every column but the logs, which are read only when a run's folder is made again.
_RUN_COLUMNS = ", ".join(f.name for f in fields(Run))
INTERRUPTED = "interrupted by the user"
ABANDONED = "interrupted: the process running it ended"


class Store:
    """A thin wrapper over one SQLite file; safe to open from several processes at once.

    Every statement commits on its own (autocommit) and waits up to BUSY_TIMEOUT_S for a
    writer in another process, so concurrent sessions on one home never see "database is locked".
    """

    BUSY_TIMEOUT_S = 120.0

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Shared by the reviewer's threads: the sqlite3 module serialises access to one connection.
        self.db = sqlite3.connect(path, timeout=self.BUSY_TIMEOUT_S, isolation_level=None,
                                  check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self._tx = threading.Lock()  # one explicit transaction at a time on the shared connection
        # One process at a time creates or upgrades the file; the others wait for it here.
        self._schemas: set[str] = set()
        self.ensure_schema(SCHEMA, _ADDED_COLUMNS)
        self.reap_abandoned()

    def ensure_schema(self, schema: str, added_columns: tuple[tuple[str, str, str], ...] = ()) -> None:
        """Create the tables of `schema` (CREATE ... IF NOT EXISTS) and add the columns a store made by an earlier
        version lacks, once per Store. The layers above keep their own tables here (scientist/campaign_store.py)."""
        if schema in self._schemas:
            return
        # One process at a time creates or upgrades the file; the others wait for it here.
        with FileLock(f"{self.path}.lock", timeout=self.BUSY_TIMEOUT_S):
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(schema)
            for table, column, kind in added_columns:  # stores made by earlier versions
                if column not in {r["name"] for r in self.db.execute(f"PRAGMA table_info({table})")}:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        self._schemas.add(schema)

    def close(self) -> None:
        self.db.close()

    def start_run(self, *, kind: str, template: str, template_hash: str, sources: dict[str, str],
                  seeds: int, sandbox: str, out_dir: Path, draw: int = 0) -> int:
        """Record a run as started; returns its id."""
        cand = source_hash(sources)
        cur = self.db.execute(
            "INSERT INTO runs (run_key, kind, template, template_hash, candidate_hash, candidate_source,"
            " seeds, sandbox, status, out_dir, pid, created, draw) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
            (run_key(template_hash, cand, seeds, draw), kind, template, template_hash, cand,
             json.dumps(sources), seeds, sandbox, "running", str(out_dir), os.getpid(), time.time(), draw or None),
        )
        # RETURNING, not cursor.lastrowid: the connection is shared by threads, and lastrowid is the
        # connection's latest insert, which may be another thread's.
        return int(cur.fetchone()[0])

    def finish_run(self, run_id: int, *, status: str, reason: str | None = None,
                   final_info: dict | None = None, metric: str | None = None,
                   timings: dict | None = None, error_tail: str | None = None,
                   logs: dict[str, str] | None = None, node: str | None = None) -> None:
        """Record the outcome of a run, with its (bounded) logs by file name."""
        mean = stderr = None
        if final_info is not None and metric is not None:
            m = FinalInfo.from_json(final_info).summary(metric)
            mean, stderr = m.mean, m.stderr
        packed = zlib.compress(json.dumps(logs).encode(), 6) if logs else None
        self.db.execute(
            "UPDATE runs SET status=?, reason=?, metric_name=?, metric_mean=?, metric_stderr=?,"
            " final_info=?, timings=?, error_tail=?, finished=?, logs=?, node=? WHERE id=?",
            (status, reason, metric, mean, stderr, _dumps(final_info), _dumps(timings), error_tail,
             time.time(), packed, node or "local", run_id),
        )

    def run_logs(self, run_id: int) -> dict[str, str]:
        """The logs recorded with a run, by file name ({} for runs recorded before logs were kept)."""
        row = self.db.execute("SELECT logs FROM runs WHERE id=?", (run_id,)).fetchone()
        return json.loads(zlib.decompress(row["logs"])) if row and row["logs"] else {}

    def reap_abandoned(self) -> int:
        """Mark runs left 'running' by a process that no longer exists as interrupted; returns how many."""
        rows = self.db.execute("SELECT id, pid FROM runs WHERE status='running'").fetchall()
        dead = [r["id"] for r in rows if r["pid"] is None or not psutil.pid_exists(r["pid"])]
        for run_id in dead:
            self.finish_run(run_id, status="failed", reason=ABANDONED)
        return len(dead)

    def get(self, run_id: int) -> Run | None:
        """The run with this id, or None when the store has no such run."""
        row = self.db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id=?", (run_id,)).fetchone()
        return _to_run(row) if row else None

    def find_ok(self, key: str) -> Run | None:
        """The latest finished, successful run with this key, if any."""
        row = self.db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_key=? AND status='ok' ORDER BY id DESC LIMIT 1", (key,)
        ).fetchone()
        return _to_run(row) if row else None

    def find_finished(self, key: str) -> Run | None:
        """The latest run with this key that ended by itself, successful or not (not interrupted)."""
        row = self.db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_key=? AND status IN ('ok', 'failed')"
            " AND COALESCE(reason, '') NOT IN (?, ?) ORDER BY id DESC LIMIT 1", (key, INTERRUPTED, ABANDONED)
        ).fetchone()
        return _to_run(row) if row else None

    # --- the home's secrets (base.secrets decides what they are) ---

    def secrets(self, template: str) -> dict[str, int]:
        """The secrets recorded for a template, by [private] key."""
        rows = self.db.execute("SELECT key, value FROM secrets WHERE template=?", (template,)).fetchall()
        return {r["key"]: int(r["value"]) for r in rows}

    def add_secrets(self, template: str, values: dict[str, int], retire_runs: bool = False) -> dict[str, int]:
        """Record values for keys that have none yet (a concurrent writer's earlier values win); all its secrets.

        retire_runs: when these are the template's first secrets, its earlier runs (made with other
        [private] values) get keys no lookup matches, in the same transaction, so none is reused.
        """
        with self._tx:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                first = not self.db.execute("SELECT 1 FROM secrets WHERE template=? LIMIT 1", (template,)).fetchone()
                self.db.executemany("INSERT OR IGNORE INTO secrets (template, key, value, created) VALUES (?,?,?,?)",
                                    [(template, k, int(v), time.time()) for k, v in values.items()])
                if first and retire_runs:
                    self.db.execute("UPDATE runs SET run_key = 'retired:' || run_key WHERE template=?"
                                    " AND run_key NOT LIKE 'retired:%'", (template,))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return self.secrets(template)

    # --- sessions, ideas and steps of `scientist run` ---

    def open_session(self, *, out_dir: Path, template: str, proposer: str, model: str | None,
                     args: dict, campaign: str | None = None) -> tuple[int, bool, dict]:
        """The session for this output folder, created if new; returns (id, resumed, its stored args)."""
        row = self.db.execute("SELECT id, args FROM sessions WHERE out_dir=?", (str(out_dir),)).fetchone()
        if row is not None:
            self.db.execute("UPDATE sessions SET status='running', reason=NULL WHERE id=?", (row["id"],))
            return int(row["id"]), True, json.loads(row["args"])
        cur = self.db.execute(
            "INSERT INTO sessions (out_dir, template, proposer, model, args, status, created, campaign)"
            " VALUES (?,?,?,?,?,?,?,?) RETURNING id",
            (str(out_dir), template, proposer, model, json.dumps(args), "running", time.time(), campaign))
        return int(cur.fetchone()[0]), False, args

    def session_at(self, out_dir: Path) -> dict | None:
        """The session recorded for this output folder (id, template, proposer, model, status), if any."""
        row = self.db.execute("SELECT id, template, proposer, model, status FROM sessions WHERE out_dir=?",
                              (str(out_dir),)).fetchone()
        return dict(row) if row else None

    def release_out_dir(self, session_id: int) -> None:
        """Let go of a session's output folder (deleted by the user) so a new session may start there."""
        self.db.execute("UPDATE sessions SET out_dir = out_dir || '#released-' || id WHERE id=?", (session_id,))

    def set_session_args(self, session_id: int, args: dict) -> None:
        self.db.execute("UPDATE sessions SET args=? WHERE id=?", (json.dumps(args), session_id))

    def close_session(self, session_id: int, status: str, reason: str | None = None) -> None:
        self.db.execute("UPDATE sessions SET status=?, reason=?, finished=? WHERE id=?",
                        (status, reason, time.time(), session_id))

    def save_idea(self, session_id: int, idx: int, idea: dict, *, status: str, reason: str | None = None,
                  notes: str | None = None, best_run_id: int | None = None) -> int:
        """Insert or update idea `idx` of a session; returns its id."""
        self.db.execute(
            "INSERT INTO ideas (session_id, idx, name, idea, status, reason, notes, best_run_id)"
            " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(session_id, idx) DO UPDATE SET name=excluded.name,"
            " idea=excluded.idea, status=excluded.status, reason=excluded.reason, notes=excluded.notes,"
            " best_run_id=excluded.best_run_id",
            (session_id, idx, idea["name"], json.dumps(idea), status, reason, notes, best_run_id))
        row = self.db.execute("SELECT id FROM ideas WHERE session_id=? AND idx=?", (session_id, idx)).fetchone()
        return int(row["id"])

    def save_review(self, session_id: int, idx: int, review: dict) -> None:
        """Store the review of an idea's paper."""
        self.db.execute("UPDATE ideas SET review=? WHERE session_id=? AND idx=?", (json.dumps(review), session_id, idx))

    def ideas(self, session_id: int | None = None, template: str | None = None) -> list[dict]:
        """Ideas of one session, or of every session of a template (the archive), oldest first."""
        sql = ("SELECT ideas.*, sessions.template, sessions.campaign FROM ideas"
               " JOIN sessions ON sessions.id = ideas.session_id"
               " WHERE (? IS NULL OR session_id=?) AND (? IS NULL OR sessions.template=?) ORDER BY ideas.id")
        rows = self.db.execute(sql, (session_id, session_id, template, template)).fetchall()
        return [{**dict(r), "idea": json.loads(r["idea"])} for r in rows]

    def save_step(self, idea_id: int, run_idx: int, attempt: int, *, status: str, run_id: int | None = None,
                  reason: str | None = None, screen_run_id: int | None = None) -> None:
        self.db.execute(
            "INSERT INTO steps (idea_id, run_idx, attempt, run_id, status, reason, screen_run_id)"
            " VALUES (?,?,?,?,?,?,?)"
            " ON CONFLICT(idea_id, run_idx, attempt) DO UPDATE SET run_id=excluded.run_id,"
            " status=excluded.status, reason=excluded.reason, screen_run_id=excluded.screen_run_id",
            (idea_id, run_idx, attempt, run_id, status, reason, screen_run_id))

    def steps(self, idea_id: int) -> list[dict]:
        rows = self.db.execute("SELECT * FROM steps WHERE idea_id=? ORDER BY run_idx, attempt", (idea_id,))
        return [dict(r) for r in rows.fetchall()]

    # --- the LLM call log (implements base.llm.Recorder for one session) ---

    def recorder(self, session_id: int | None) -> CallLog:
        return CallLog(self, session_id)

    def response_forms(self) -> FormTable:
        """The store as base.llm.FormMemory: which response_format each model and api base takes."""
        return FormTable(self)

    def session_cost(self, session_id: int) -> tuple[float, int, int, int]:
        """(dollars, calls, prompt tokens, completion tokens) recorded for a session."""
        row = self.db.execute(
            "SELECT COALESCE(SUM(cost_usd), 0), COUNT(*), COALESCE(SUM(prompt_tokens), 0),"
            " COALESCE(SUM(completion_tokens), 0) FROM llm_calls WHERE session_id=?", (session_id,)).fetchone()
        return float(row[0]), int(row[1]), int(row[2]), int(row[3])

    def typical_seconds(self, template: str, seeds: int, screen: bool = False) -> float | None:
        """The median wall time of the template's last successful runs with this many seeds (for an ETA): of its
        screens, or of its full evaluations (a screen is shorter, and would make every estimate too short)."""
        kind = "kind = 'screen'" if screen else "kind != 'screen'"
        rows = self.db.execute(f"SELECT timings FROM runs WHERE template=? AND seeds=? AND status='ok' AND {kind}"
                               " AND timings IS NOT NULL ORDER BY id DESC LIMIT 20", (template, seeds)).fetchall()
        totals = sorted(t for r in rows if isinstance(t := json.loads(r["timings"]).get("total"), int | float))
        return float(totals[len(totals) // 2]) if totals else None

    def runs(self, template: str | None = None) -> list[Run]:
        """All runs, oldest first, optionally of one template."""
        if template is None:
            rows = self.db.execute(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY id").fetchall()
        else:
            rows = self.db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE template=? ORDER BY id",
                                   (template,)).fetchall()
        return [_to_run(r) for r in rows]


@dataclass
class CallLog:
    """The store seen as an LLM call recorder: look up and record calls by request key."""

    store: Store
    session_id: int | None

    def lookup(self, key: str) -> dict | None:
        row = self.store.db.execute("SELECT * FROM llm_calls WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        return {**dict(row), "messages": json.loads(row["messages"])}

    def record(self, key: str, call: dict) -> None:
        self.store.db.execute(
            "INSERT OR REPLACE INTO llm_calls (key, session_id, stage, model, messages, response, prompt_tokens,"
            " completion_tokens, cost_usd, latency_s, created, response_format) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (key, self.session_id, call["stage"], call["model"], json.dumps(call["messages"]), call["response"],
             call.get("prompt_tokens"), call.get("completion_tokens"), call.get("cost_usd"),
             call.get("latency_s"), call.get("created", time.time()), call.get("response_format")))


@dataclass
class FormTable:
    """The store seen as base.llm.FormMemory: the response_format form of each (model, api base)."""

    store: Store

    def get(self, model: str, api_base: str) -> str | None:
        row = self.store.db.execute("SELECT form FROM response_formats WHERE model=? AND api_base=?",
                                    (model, api_base)).fetchone()
        return None if row is None else str(row[0])

    def put(self, model: str, api_base: str, form: str, detail: str = "") -> None:
        self.store.db.execute("INSERT OR REPLACE INTO response_formats (model, api_base, form, detail, created)"
                              " VALUES (?,?,?,?,?)", (model, api_base, form, detail, time.time()))


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _to_run(row: sqlite3.Row) -> Run:
    data = dict(row)
    for col in _JSON_COLUMNS:
        if data[col] is not None:
            data[col] = json.loads(data[col])
    return Run(**data)
