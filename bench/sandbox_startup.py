"""Benchmark: sandbox start-up, from the launch call to the candidate's first line, per backend.

Each repeat calls `sandbox.backends.run` (the code path every run takes: for docker,
reaping orphans, handing the folders to the container's user, create, start,
supervision and removal) on a script whose first line records time.time(); the
start-up is that time minus the time just before the call. The remaining lines
are the whole run's wall time as the caller sees it (start-up + the script +
tear-down). Backends are interleaved, so machine noise hits them alike; medians
and 90th percentiles are reported, and each median as a ratio to `process` (a
plain subprocess: the interpreter's own start-up is in every figure).

Docker: the engine and image of tests/docker_engine.py (started here when none
answers; needs root, dockerd and debootstrap) unless --docker-host and --image
name your own.

Run:  .venv/bin/python bench/sandbox_startup.py [--repeats 20] [--docker-host URL --image NAME]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from sandbox.backends import Job, Sandbox, bwrap_available  # noqa: E402
from sandbox.backends import run as run_in_sandbox  # noqa: E402
from sandbox.limits import Limits  # noqa: E402

SCRIPT = "import time; open('first-line', 'w').write(repr(time.time()))\n"


def once(sandbox: Sandbox, work: Path) -> tuple[float, float]:
    """(start-up, whole run) in seconds for one run of SCRIPT."""
    (work / "first-line").unlink(missing_ok=True)
    (work / "probe.py").write_text(SCRIPT)
    t0 = time.time()
    outcome = run_in_sandbox(sandbox, Job("probe.py", work, ROOT), Limits(time_s=60, memory_mb=512),
                             work.parent / f"{sandbox.backend}.log")
    total = time.time() - t0
    if not outcome.ok:
        raise SystemExit(f"{sandbox.backend}: the probe failed: {outcome.log_tail.strip()[-300:]}")
    return float((work / "first-line").read_text()) - t0, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--docker-host")
    ap.add_argument("--image")
    args = ap.parse_args()
    sandboxes = [Sandbox("process")]
    if bwrap_available():
        sandboxes.append(Sandbox("bwrap"))
    engine = None
    if args.docker_host and args.image:
        sandboxes.append(Sandbox("docker", args.image, args.docker_host))
    else:
        import docker_engine

        try:
            host, engine = docker_engine.start_engine()
            docker_engine.ensure_base_image(host)
            docker_engine.build_test_image(host)
            sandboxes.append(Sandbox("docker", docker_engine.TEST_IMAGE, host))
        except docker_engine.EngineUnavailable as e:
            print(f"docker: not measured ({e})")
    results: dict[str, list[tuple[float, float]]] = {sb.backend: [] for sb in sandboxes}
    try:
        with tempfile.TemporaryDirectory(prefix="scientist-bench-") as tmp:
            works = {sb.backend: Path(tmp) / sb.backend / "work" for sb in sandboxes}
            for w in works.values():
                w.mkdir(parents=True)
            for sb in sandboxes:  # one warm-up each: page cache, image layers
                once(sb, works[sb.backend])
            for _ in range(args.repeats):
                for sb in sandboxes:
                    results[sb.backend].append(once(sb, works[sb.backend]))
    finally:
        if engine is not None:
            docker_engine.stop_engine(engine)
    base = statistics.median(s for s, _ in results["process"])
    print(f"{'backend':8} {'start median':>13} {'start p90':>10} {'vs process':>11} {'whole run median':>17}")
    for name, rows in results.items():
        starts = sorted(s for s, _ in rows)
        p90 = starts[min(len(starts) - 1, int(0.9 * len(starts)))]
        med = statistics.median(starts)
        whole = statistics.median(t for _, t in rows)
        print(f"{name:8} {med * 1000:11.0f}ms {p90 * 1000:8.0f}ms {med / base:10.2f}x {whole * 1000:15.0f}ms")


if __name__ == "__main__":
    main()
