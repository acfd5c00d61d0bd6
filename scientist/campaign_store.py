"""A campaign's records in the home's store: its nights and the confirmations of its candidates.

The store (base/store.py) knows runs, sessions and ideas; a night is a session tagged with the
campaign's name. What campaigns add lives here, beside the campaign code: the confirmations table,
created in a store on first use (and upgraded from earlier versions), and the queries over both.
"""

from __future__ import annotations

import json
import sqlite3
import time

from base.results import ConfirmationResult
from base.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS confirmations (   -- a campaign's candidate evaluated again on seeds the search never used
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign TEXT NOT NULL,
    session_id INTEGER NOT NULL REFERENCES sessions(id),   -- the night that found it
    idea TEXT NOT NULL,
    search_run_id INTEGER NOT NULL REFERENCES runs(id),     -- its best run in the search
    run_id INTEGER REFERENCES runs(id),                     -- the confirmation run
    baseline_run_id INTEGER REFERENCES runs(id),            -- the baseline on the same fresh seeds
    result TEXT,                     -- JSON: mean, stderr, ci95, n, p_value, p_value_holm, verdict, previous
    new_best INTEGER NOT NULL DEFAULT 0,
    reason TEXT,                     -- why it is not a result (the confirmation run failed)
    created REAL NOT NULL,
    template_hash TEXT,              -- the campaign template's content hash: results of one version compare
    night INTEGER,                   -- the night's index in the campaign (1, 2, ...)
    train_seed INTEGER,              -- the night's fresh [config] train_seed (NULL: the template has none)
    draw INTEGER,                    -- the night's fresh draw of the [private] secrets (base.secrets)
    previous_run_id INTEGER REFERENCES runs(id)             -- the previous best, re-run on the same fresh seeds
);
"""

# Columns added after the first release: added to older stores when first used.
_ADDED_COLUMNS = (("confirmations", "template_hash", "TEXT"), ("confirmations", "night", "INTEGER"),
                  ("confirmations", "train_seed", "INTEGER"), ("confirmations", "draw", "INTEGER"),
                  ("confirmations", "previous_run_id", "INTEGER"))


def _db(store: Store) -> sqlite3.Connection:
    store.ensure_schema(SCHEMA, _ADDED_COLUMNS)
    return store.db


def nights(store: Store, campaign: str) -> list[dict]:
    """The sessions (nights) of a campaign, oldest first, with the template content hash each ran."""
    rows = _db(store).execute("SELECT id, out_dir, status, reason, created, finished,"
                              " json_extract(args, '$.template_hash') AS template_hash FROM sessions"
                              " WHERE campaign=? ORDER BY id", (campaign,)).fetchall()
    return [dict(r) for r in rows]


def campaigns(store: Store) -> list[dict]:
    """Every campaign: its name, template, number of nights and when the last began."""
    rows = _db(store).execute("SELECT campaign AS name, template, COUNT(*) AS nights, MAX(created) AS last"
                              " FROM sessions WHERE campaign IS NOT NULL GROUP BY campaign ORDER BY campaign")
    return [dict(r) for r in rows.fetchall()]


def save_confirmation(store: Store, *, campaign: str, session_id: int, idea: str, search_run_id: int,
                      run_id: int | None, baseline_run_id: int | None, result: ConfirmationResult | None,
                      new_best: bool, reason: str | None = None, template_hash: str | None = None,
                      night: int | None = None, train_seed: int | None = None, draw: int | None = None,
                      previous_run_id: int | None = None) -> int:
    """Record a confirmation of a campaign's candidate, with the fresh seeds it ran on; returns its id."""
    cur = _db(store).execute(
        "INSERT INTO confirmations (campaign, session_id, idea, search_run_id, run_id, baseline_run_id, result,"
        " new_best, reason, created, template_hash, night, train_seed, draw, previous_run_id)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
        (campaign, session_id, idea, search_run_id, run_id, baseline_run_id,
         json.dumps(result.to_json()) if result else None, int(new_best),
         reason, time.time(), template_hash, night, train_seed, draw, previous_run_id))
    return int(cur.fetchone()[0])


def confirmations(store: Store, campaign: str) -> list[dict]:
    """A campaign's confirmations, oldest first, with their result as a record (None where it failed)."""
    rows = _db(store).execute("SELECT * FROM confirmations WHERE campaign=? ORDER BY id", (campaign,)).fetchall()
    return [{**dict(r), "result": ConfirmationResult.from_json(json.loads(r["result"])) if r["result"] else None}
            for r in rows]
