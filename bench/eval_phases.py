"""Benchmark: where the wall time of `scientist eval --template discopop` goes.

Runs the real CLI four times, in this order, on one fresh home folder (--force, so each recomputes):

  1. cold bwrap       --sandbox bwrap    empty data cache and JAX compilation caches
  2. warm bwrap       --sandbox bwrap    data and compilation caches warm
  3. 1st process      --sandbox process  data warm; the harness's compilation cache misses, because
                                         its key differs between the bwrap and the process layouts
  4. warm process     --sandbox process  all caches warm: compare with 2 for the bwrap start-up cost

then reads each run's phase timings (the JSON column `timings` of table `runs`
in <home>/store.sqlite, written by scientist/runner.py) and prints the split:
prepare, trace (the tracing sandbox, start to exit), sandbox_start, setup, compile, train, export,
evaluate, total, and
other = total minus the named phases (framework overhead: copying harness, candidate
and data into the work folder, the harness process exiting, store writes). `cli` is the
wall time of the whole command, so cli - total is the CLI's own start-up (imports,
template hash, store).

Run:  .venv/bin/python bench/eval_phases.py [--template discopop] [--keep HOME]
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

PHASES = ("prepare", "trace", "sandbox_start", "setup", "compile", "train", "export", "evaluate")
RUNS = (("cold bwrap", "bwrap"), ("warm bwrap", "bwrap"), ("1st process", "process"),
        ("warm process", "process"))


def scientist_eval(template: str, sandbox: str, home: Path) -> float:
    """Run `scientist eval` once; return its wall time in seconds."""
    argv = [str(Path(sys.executable).with_name("scientist")), "eval", "--template", template,
            "--sandbox", sandbox, "--force", "--home", str(home)]
    t = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return wall


def stored_timings(home: Path) -> list[dict[str, float]]:
    """The timings of every run in the store, oldest first; each must have finished ok."""
    with sqlite3.connect(home / "store.sqlite") as db:
        rows = db.execute("SELECT status, timings FROM runs ORDER BY id").fetchall()
    assert all(status == "ok" for status, _ in rows), f"a run failed: {rows}"
    return [json.loads(timings) for _, timings in rows]


def split(timings: dict[str, float], cli_wall: float) -> dict[str, float]:
    """Named phases, the unaccounted rest of `total`, and the whole command's wall time."""
    row = {p: timings.get(p, 0.0) for p in PHASES}
    row["other"] = timings["total"] - sum(row.values())
    row["total"] = timings["total"]
    row["cli"] = cli_wall
    return {k: round(v, 3) for k, v in row.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", default="discopop")
    parser.add_argument("--keep", type=Path, help="use (and keep) this home folder instead of a temp one")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="eval-phases-") as tmp:
        home = args.keep or Path(tmp)
        if (home / "store.sqlite").exists():
            sys.exit(f"{home} already holds a store; the cold run needs a fresh home")
        walls = [scientist_eval(args.template, sandbox, home) for _, sandbox in RUNS]
        rows = {name: split(t, w) for (name, _), t, w in zip(RUNS, stored_timings(home), walls, strict=True)}

    cols = [*PHASES, "other", "total", "cli"]
    print(f"scientist eval --template {args.template} --force: seconds per phase")
    print(f"{'phase':<14}" + "".join(f"{name:>14}" for name in rows))
    for c in cols:
        print(f"{c:<14}" + "".join(f"{row[c]:>14.2f}" for row in rows.values()))
    print(json.dumps({"bench": "eval_phases", "template": args.template, "runs": rows}))


if __name__ == "__main__":
    main()
