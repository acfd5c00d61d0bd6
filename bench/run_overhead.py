"""Benchmark: framework overhead of an offline `scientist run --proposer evolve` session.

Runs the real CLI twice on one fresh home folder:

  1. cold   --seed S     empty store, data cache and JAX compilation caches
  2. warm   --seed S+1   same home, new --out: data and compilation caches are warm, and the
                         other proposer seed proposes other candidates, so they are computed
                         rather than reused from the store (the baseline is reused)

    scientist run --template T --proposer evolve --ideas N --runs R --seed S --out O --home H
                  --no-writeup --no-review

For each session:
  cmd       wall time of the whole command, measured here (Python start-up, imports, exit included)
  session   summary.json's wall_s, measured by the session itself
  work      sum over the runs computed during the command (rows of `runs` in <home>/store.sqlite
            created within its time window) of the timings sandbox (the sandboxed process's wall
            time: start, imports, compile, train, export) + evaluate (the sealed evaluator
            process) + prepare (data preparation, once per template hash)
  overhead  cmd - work; fraction = overhead / cmd (target: under 5%)

The overhead is split into: outside the session (cmd - session: start-up, imports, template
loading, store, exit), per run in the runner (total - sandbox - evaluate - prepare: copying
files and data into the work folder, store writes) and the rest of the loop (session - the
runs' totals: proposer, reused runs, summary). The harness's phases (sandbox_start, setup,
compile, train, export) are listed too, as parts of sandbox. For reference, `scientist --help`
and `python -c "import scientist.session"` are timed on their own (median of 3).

Run:  .venv/bin/python bench/run_overhead.py [--ideas 3] [--runs 2] [--template discopop] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORK = ("sandbox", "evaluate", "prepare")
HARNESS = ("sandbox_start", "setup", "compile", "train", "export")  # parts of sandbox, for reference
SCIENTIST = str(Path(sys.executable).with_name("scientist"))


def timed(argv: list[str]) -> tuple[float, float, float]:
    """Run a command to completion; return (wall seconds, start epoch, end epoch)."""
    start, t = time.time(), time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, start, time.time()


def median_wall(argv: list[str], repeats: int = 3) -> float:
    return statistics.median(timed(argv)[0] for _ in range(repeats))


def session(args: argparse.Namespace, home: Path, out: Path, seed: int) -> dict[str, float]:
    """Run one `scientist run` session and split its wall time into sandboxed work and overhead."""
    argv = [SCIENTIST, "run", "--template", args.template, "--proposer", "evolve", "--ideas", str(args.ideas),
            "--runs", str(args.runs), "--seed", str(seed), "--out", str(out), "--home", str(home),
            "--no-writeup", "--no-review"]
    cmd, start, end = timed(argv)
    summary = json.loads((out / "summary.json").read_text())
    listed = [summary["baseline"]["run_id"], *(r["run_id"] for i in summary["ideas"] for r in i["runs"]
                                                if r.get("run_id") is not None)]
    with sqlite3.connect(home / "store.sqlite") as db:
        rows = db.execute("SELECT timings FROM runs WHERE created BETWEEN ? AND ?", (start, end)).fetchall()
    timings = [json.loads(t or "{}") for (t,) in rows]
    work = sum(t.get(k, 0.0) for t in timings for k in WORK)
    runs_total = sum(t.get("total", 0.0) for t in timings)
    overhead = cmd - work
    return {
        "runs_listed": len(listed), "runs_computed": len(timings), "cmd": cmd, "session": summary["wall_s"],
        **{k: sum(t.get(k, 0.0) for t in timings) for k in (*WORK[:1], *HARNESS, *WORK[1:])}, "work": work,
        "overhead": overhead, "fraction": overhead / cmd, "per_run": overhead / max(len(timings), 1),
        "outside_session": cmd - summary["wall_s"], "runner_per_run": runs_total - work,
        "loop_rest": summary["wall_s"] - runs_total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", default="discopop")
    parser.add_argument("--ideas", type=int, default=3)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="evolve seed of the cold session; the warm one uses +1")
    args = parser.parse_args()

    startup = {"scientist --help": median_wall([SCIENTIST, "--help"]),
               "import scientist.session": median_wall([sys.executable, "-c", "import scientist.session"])}
    with tempfile.TemporaryDirectory(prefix="run-overhead-") as tmp:
        home = Path(tmp) / "home"
        rows = {"cold": session(args, home, Path(tmp) / "cold", args.seed),
                "warm": session(args, home, Path(tmp) / "warm", args.seed + 1)}

    print(f"scientist run --template {args.template} --proposer evolve --ideas {args.ideas} --runs {args.runs}")
    print(f"{'':<18}" + "".join(f"{name:>10}" for name in rows))
    for key in rows["cold"]:
        fmt = ">10.1%" if key == "fraction" else (">10d" if key.startswith("runs_") else ">10.2f")
        print(f"{key:<18}" + "".join(f"{row[key]:{fmt}}" for row in rows.values()))
    for name, wall in startup.items():
        print(f"{name:<26} {wall:.2f} s (median of 3)")
    print(json.dumps({"bench": "run_overhead", "template": args.template, "ideas": args.ideas, "runs": args.runs,
                      "startup": startup, "sessions": {n: {k: round(v, 3) for k, v in r.items()} for n, r in
                                                      rows.items()}}))


if __name__ == "__main__":
    main()
