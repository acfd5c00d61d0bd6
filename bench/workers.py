"""Benchmark: candidates per hour of `scientist run --proposer evolve` by executor and worker count.

One home folder; a warm-up session first computes the data set and the baseline, so that the
sessions measured pay only for their candidates. Each measured session has its own proposer
seed, so its candidates are computed, not reused from the store. Configurations are
interleaved over --rounds rounds (shared machines drift), each round in a new order:

    scientist run --template T --proposer evolve --ideas N --runs R --seed S --out O --home H
                  --no-writeup --no-review --sandbox B --workers W [--executor ray]

For each session: the command's wall time (measured here, start-up included), the candidate runs
it computed (store rows created in its time window) and candidates per hour = computed / wall.
`--executor ray` without --ray-address starts a local Ray instance inside the command, so its
wall time includes Ray's start-up.

Run:  .venv/bin/python bench/workers.py [--ideas 4] [--runs 1] [--rounds 2] [--sandbox bwrap]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCIENTIST = str(Path(sys.executable).with_name("scientist"))
CONFIGS = {"local x1": ("--workers", "1"), "local x2": ("--workers", "2"),
           "ray x1": ("--workers", "1", "--executor", "ray"), "ray x2": ("--workers", "2", "--executor", "ray")}


def session(args: argparse.Namespace, home: Path, out: Path, seed: int, extra: tuple[str, ...]) -> dict:
    """One `scientist run` session: its wall time, the candidate runs it computed, candidates per hour."""
    argv = [SCIENTIST, "run", "--template", args.template, "--proposer", "evolve", "--ideas", str(args.ideas),
            "--runs", str(args.runs), "--seed", str(seed), "--out", str(out), "--home", str(home),
            "--no-writeup", "--no-review", "--sandbox", args.sandbox, *extra]
    start, t = time.time(), time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    with sqlite3.connect(home / "store.sqlite") as db:
        rows = db.execute("SELECT status FROM runs WHERE kind='candidate' AND created BETWEEN ? AND ?",
                          (start, time.time())).fetchall()
    computed = len(rows)
    return {"wall": wall, "computed": computed, "failed": sum(s != "ok" for (s,) in rows),
            "per_hour": 3600 * computed / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", default="discopop")
    parser.add_argument("--ideas", type=int, default=4)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sandbox", default="bwrap")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of: " + ", ".join(CONFIGS))
    args = parser.parse_args()
    names = args.configs.split(",")

    results: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        home = Path(tmp) / "home"
        session(args, home, Path(tmp) / "warmup", 1000, CONFIGS["local x1"])  # data set and baseline, once
        seed = 0
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                seed += 1
                results[name].append(session(args, home, Path(tmp) / f"{name.replace(' ', '')}-{seed}", seed,
                                             CONFIGS[name]))
                print(f"round {r}: {name}: {results[name][-1]}", flush=True)

    print(f"\nscientist run --template {args.template} --proposer evolve --ideas {args.ideas} --runs {args.runs} "
          f"--sandbox {args.sandbox}; {os.cpu_count()} cores; median of {args.rounds}")
    base = statistics.median(x["per_hour"] for x in results[names[0]])
    print(f"{'config':<10}{'wall s':>9}{'computed':>10}{'cand/h':>9}{'vs ' + names[0]:>14}")
    for name, xs in results.items():
        per_hour = statistics.median(x["per_hour"] for x in xs)
        print(f"{name:<10}{statistics.median(x['wall'] for x in xs):>9.1f}"
              f"{statistics.median(x['computed'] for x in xs):>10.0f}{per_hour:>9.0f}{per_hour / base:>13.2f}x")
    print(json.dumps({"bench": "workers", "template": args.template, "ideas": args.ideas, "runs": args.runs,
                      "sandbox": args.sandbox, "results": results}))


if __name__ == "__main__":
    main()
