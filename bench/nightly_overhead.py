"""Benchmark: the campaign machinery's share of a night's wall time (`scientist nightly`).

Runs the real CLI for --nights nights of one campaign on a fresh home (evolve proposer, no
model, so there are no model calls to subtract):

    scientist nightly CAMPAIGN.toml --home H        (CAMPAIGN.toml written here; see --help)

For each night:
  cmd        the command's wall time, measured here (Python start-up, imports and exit included)
  work       the sandboxed work of the runs computed during the night (rows of `runs` created in
             its time window): sandbox + evaluate + prepare, as the store's timings record them;
             confirmation runs included
  overhead   cmd - work: the campaign machinery (lock, store, archive, proposer, confirmation's
             bookkeeping, digest and index with their figures, the on_written hook) and the
             session's own overhead; share = overhead / cmd
  digest     the part of the overhead spent writing the digest, measured by timing
             scientist.campaign_digest.write_digest again on the finished night

Run:  .venv/bin/python bench/nightly_overhead.py [--nights 2] [--ideas 2] [--evaluations 3]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCIENTIST = str(Path(sys.executable).with_name("scientist"))
WORK = ("sandbox", "evaluate", "prepare")


def night(campaign: Path, home: Path) -> dict:
    start, t = time.time(), time.perf_counter()
    proc = subprocess.run([SCIENTIST, "nightly", str(campaign), "--home", str(home)], capture_output=True, text=True)
    cmd = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"nightly failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    with sqlite3.connect(home / "store.sqlite") as db:
        rows = db.execute("SELECT timings FROM runs WHERE created BETWEEN ? AND ?", (start, time.time())).fetchall()
    timings = [json.loads(t or "{}") for (t,) in rows]
    work = sum(t.get(k, 0.0) for t in timings for k in WORK)
    return {"runs": len(timings), "cmd": cmd, "work": work, "overhead": cmd - work, "share": (cmd - work) / cmd}


def digest_seconds(campaign: Path, home: Path) -> float:
    """Time write_digest on the last night, in this process (its imports paid first, as the CLI pays them)."""
    from base.store import Store
    from scientist import campaign as cp
    from scientist import campaign_store as records
    from scientist.campaign_digest import write_digest

    c = cp.load_campaign(campaign)
    store = Store(home / "store.sqlite")
    last = records.nights(store, c.name)[-1]
    n = cp.Night(len(records.nights(store, c.name)), Path(last["out_dir"]), resumed=False)
    write_digest(c, store, n, home)  # warm: matplotlib and jinja2 imported, fonts cached
    t = time.perf_counter()
    write_digest(c, store, n, home)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", default="discopop")
    parser.add_argument("--nights", type=int, default=2)
    parser.add_argument("--ideas", type=int, default=2)
    parser.add_argument("--evaluations", type=int, default=3)
    parser.add_argument("--sandbox", default="bwrap")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-nightly-") as tmp:
        home, campaign = Path(tmp) / "home", Path(tmp) / "bench.toml"
        campaign.write_text(f'name = "bench"\ntemplate = "{args.template}"\nproposer = "evolve"\n'
                            f'ideas = {args.ideas}\nruns = 1\nsandbox = "{args.sandbox}"\nwriteup = false\n'
                            f'[budget]\nevaluations = {args.evaluations}\n')
        rows = [night(campaign, home) for _ in range(args.nights)]
        digest = digest_seconds(campaign, home)
    print(f"scientist nightly: {args.template}, evolve, {args.ideas} ideas, {args.evaluations} evaluations a night, "
          f"--sandbox {args.sandbox}, no papers")
    print(f"{'night':<7}{'runs':>6}{'cmd s':>9}{'work s':>9}{'overhead s':>12}{'share':>8}")
    for i, r in enumerate(rows, start=1):
        print(f"{i:<7}{r['runs']:>6}{r['cmd']:>9.2f}{r['work']:>9.2f}{r['overhead']:>12.2f}{r['share']:>8.1%}")
    print(f"writing one night's digest (warm, in process): {digest:.2f} s")
    print(json.dumps({"bench": "nightly_overhead", "nights": rows, "digest_s": digest}))


if __name__ == "__main__":
    main()
