"""Benchmark: a tiny run with and without XLA's optimisations (`[compile] optimize`), per template.

For each template, the test suite's tiny copy (tests/: the same writer the tests use, which sets
`[compile] optimize = false`) and the same copy with the default (optimised) compile each run
`scientist baseline --sandbox bwrap` once, on a fresh home (cold data and compilation caches), one
after the other. Prints the run's phases from the store (the harness's compile, the trusted
evaluator, the whole run) and the metric's mean, since the two compile to other floating-point
results.

Run:  .venv/bin/python bench/compile_optimize.py [discopop synthenv hades ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

# template -> (test module, its tiny writer): the tests' own tiny settings.
WRITERS = {"discopop": ("conftest", "write_tiny_template"), "synthenv": ("test_synthenv", "write_tiny_synthenv"),
           "hades": ("test_hades", "write_tiny_hades"), "navix": ("test_navix", "write_tiny_navix"),
           "open": ("test_open", "write_tiny_open"), "kinetix": ("test_kinetix", "write_tiny_kinetix"),
           "transformer": ("test_transformer", "write_tiny_transformer"),
           "diffusion": ("test_diffusion", "write_tiny_diffusion")}
UNOPTIMIZED = "[compile]\noptimize = false\n"


def tiny_copy(name: str, dest: Path, optimize: bool) -> Path:
    """The tests' tiny copy of the template under dest, with or without XLA's optimisations."""
    from conftest import unoptimized

    module, writer = WRITERS[name]
    root = getattr(__import__(module), writer)(dest)
    toml = root / "template.toml"
    text = toml.read_text().replace(UNOPTIMIZED + "\n", "")  # as the tests' writers put it (conftest.unoptimized)
    toml.write_text(text if optimize else unoptimized(text))
    return root


def baseline(root: Path, home: Path) -> dict:
    """One `scientist baseline` on a fresh home: its phases, metric mean and wall time."""
    argv = [str(Path(sys.executable).with_name("scientist")), "baseline", "--template", str(root),
            "--home", str(home), "--sandbox", "bwrap"]
    t = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "SCIENTIST_SECRETS": "shipped"})
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    with sqlite3.connect(home / "store.sqlite") as db:
        timings, info = db.execute("SELECT timings, final_info FROM runs ORDER BY id DESC").fetchone()
    timings, info = json.loads(timings), json.loads(info)
    compiled = sum(v for k, v in timings.items() if k.startswith("compile"))
    metric = next(iter(info["metrics"].values()))["mean"]
    return {"compile": compiled, "evaluate": timings["evaluate"], "total": timings["total"], "cli": wall,
            "metric": metric}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("templates", nargs="*", default=list(WRITERS), choices=list(WRITERS), metavar="TEMPLATE")
    args = parser.parse_args()
    print(f"{'template':12s} {'optimize':>8s} {'compile':>8s} {'evaluate':>9s} {'run':>7s} {'command':>8s} "
          f"{'metric':>10s}")
    for name in args.templates:
        rows = {}
        for optimize in (True, False):
            with tempfile.TemporaryDirectory(prefix="compile-optimize-") as tmp:
                rows[optimize] = r = baseline(tiny_copy(name, Path(tmp) / "t", optimize), Path(tmp) / "home")
            print(f"{name:12s} {str(optimize).lower():>8s} {r['compile']:8.1f} {r['evaluate']:9.1f} "
                  f"{r['total']:7.1f} {r['cli']:8.1f} {r['metric']:10.4f}", flush=True)
        on, off = rows[True], rows[False]
        print(f"{name:12s} {'ratio':>8s} {on['compile'] / off['compile']:7.2f}x "
              f"{on['evaluate'] / off['evaluate']:8.2f}x {on['total'] / off['total']:6.2f}x "
              f"{on['cli'] / off['cli']:7.2f}x", flush=True)


if __name__ == "__main__":
    main()
