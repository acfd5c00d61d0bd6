"""Benchmark: Ray's cost per task against the local executor, on the same DiscoPOP runs (issue 26, item 4).

One driver home; the same candidate (the template's baseline, at its cpu settings) computed by
`scientist.executors.LocalExecutor` (one slot) and by `RayExecutor` on a loopback cluster of two
nodes on this machine, started as tests/test_scale.py starts its own: `ray start --head` and a second
`ray start --address`, two CPUs each, each node with caches of its own (SCIENTIST_NODE_HOME, empty
at the start). In order:

    local cold    the driver home's first run: data prepared, evaluator and harness programs compiled
    for each of  before (each node prepares its own data: the code before issue 26, ship_data=False)
                 after  (the driver's prepared data is sent to the node, ship_data=True):
        a fresh cluster; then
        ray cold      the cluster's first task: a fresh Ray worker and empty node caches
        --repeats x   (local warm, ray warm), alternating which goes first (a shared machine drifts);
                      local warm, data prepared and compiled programs cached, is the reference
                      "warm DiscoPOP run"
        the cluster stopped (only its own processes, by pid: other Ray instances of this machine live on)

Per run: the driver's wall time of executor.compute (perf_counter), the phase timings the run
returns (scientist.runner.compute's prepare, trace, setup, compile, train, evaluate, total) and a Ray
run's own: ray_submit, ray_queue (submission to the task's start on its node), ray_unpack and
ray_return (scientist/executors.py says what each covers). A Ray task's overhead is its wall time
minus that of a warm local run: for the warm runs, paired with the local run beside it; for the cold
one, against the phase's median local warm run. Also reported: Ray's start-up (both `ray start`
and the driver's connection) and the CPU its daemons (GCS, raylets, agents) used while the phase ran,
neither of them per task.

Run:  .venv/bin/python bench/ray_overhead.py [--repeats 3] [--sandbox bwrap] [--seeds N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Set before Ray is imported, here and for the nodes (tests/test_scale.py's cluster does the same): a
# ~/.ray/auth_token left by an earlier local ray.init() would otherwise make the nodes disagree about it.
os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")

from base.secrets import home_secrets  # noqa: E402
from base.store import Store  # noqa: E402
from base.template import load_template  # noqa: E402
from sandbox import backends  # noqa: E402
from scientist.executors import NODE_HOME_ENV, LocalExecutor, RayExecutor, local_slots  # noqa: E402
from scientist.runner import Job  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))
PHASES = ("prepare", "trace", "setup", "compile", "train", "evaluate", "total")
RAY_KEYS = ("ray_submit", "ray_queue", "ray_unpack", "ray_return")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A Ray head and a second node on loopback, two CPUs each, each with a node home of its own."""

    def __init__(self, tmp: Path, tag: str):
        self.temp = Path(tempfile.mkdtemp(prefix="rayo", dir="/tmp"))  # short: Ray's sockets live under it
        self.homes = {n: tmp / f"node-{n}-{tag}" for n in ("a", "b")}
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--object-store-memory", str(100 * 2**20),
                  "--disable-usage-stats", "--temp-dir", str(self.temp)]
        t = time.perf_counter()
        self._start(["--head", "--port", str(port), "--include-dashboard", "false", "--resources", '{"node_a": 1}',
                     *common], self.homes["a"])
        self.head_s = time.perf_counter() - t
        self._start(["--address", self.address, "--resources", '{"node_b": 1}', *common], self.homes["b"])
        self.start_s = time.perf_counter() - t

    def _start(self, args: list[str], home: Path) -> None:
        env = {**os.environ, NODE_HOME_ENV: str(home)}
        proc = subprocess.run([RAY, "start", *args], capture_output=True, text=True, env=env, timeout=180)
        if proc.returncode != 0:
            self.stop()
            sys.exit(f"ray start {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")

    def processes(self) -> list[psutil.Process]:
        """This cluster's processes: those whose command line names its temp folder (daemons and workers)."""
        mine = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(str(self.temp) in arg for arg in p.info["cmdline"] or ()):
                    mine.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return mine

    def daemon_cpu_s(self) -> float:
        """CPU seconds used so far by the cluster's daemons (not its workers, whose CPU is the runs')."""
        total = 0.0
        for p in self.processes():
            try:
                if not any("default_worker" in arg for arg in p.cmdline()):
                    total += sum(p.cpu_times()[:2])
            except psutil.NoSuchProcess:
                continue
        return total

    def stop(self) -> None:
        """End this cluster's processes, by pid (`ray stop` would end every Ray instance of this machine)."""
        procs = self.processes()
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=15)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=15)
        shutil.rmtree(self.temp, ignore_errors=True)


def run(executor, job: Job, tmp: Path, label: str, phase: str, log: list[dict], pair: int | None = None) -> dict:
    """One computation on the executor, timed by the driver's clock; its record goes to the log."""
    run_dir = tmp / "runs" / f"{len(log):02d}-{label.replace(' ', '-')}"
    t = time.perf_counter()
    done = executor.compute(job, run_dir)
    wall = time.perf_counter() - t
    if done.status != "ok":
        sys.exit(f"{label} ({phase}) failed: {done.reason}\n{(done.error_tail or '')[-2000:]}")
    row = {"label": label, "phase": phase, "pair": pair, "wall": wall, "node": done.node,
           **{k: float(v) for k, v in done.timings.items() if isinstance(v, int | float)}}
    log.append(row)
    print(f"{phase:>7} {label:<11} {(done.node or '')[:8]:<8} wall {wall:6.2f} s  "
          + " ".join(f"{k}={row.get(k, 0):.2f}" for k in (*PHASES, *RAY_KEYS) if k in row), flush=True)
    return row


def ray_phase(tmp: Path, job: Job, local: LocalExecutor, phase: str, ship: bool, repeats: int,
              log: list[dict]) -> dict:
    """A fresh loopback cluster; its cold task, then `repeats` pairs of warm local and Ray runs; the cluster stopped."""
    import ray

    cluster = Cluster(tmp, phase)
    try:
        t = time.perf_counter()
        executor = RayExecutor(1, cluster.address, ship_data=ship)
        connect_s = time.perf_counter() - t
        cpu0, t0 = cluster.daemon_cpu_s(), time.perf_counter()
        seen = {run(executor, job, tmp, "ray cold", phase, log)["node"]}
        for i in range(repeats):
            order = [("local warm", local), ("ray warm", executor)]
            for label, ex in (order if i % 2 == 0 else order[::-1]):
                row = run(ex, job, tmp, label, phase, log, pair=i)
                if label == "ray warm" and row["node"] not in seen:  # the other node's first task: cold too
                    row["label"] = "ray cold"
                    seen.add(row["node"])
        daemon_share = (cluster.daemon_cpu_s() - cpu0) / (time.perf_counter() - t0)
        nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n.get("Alive")}
        homes = {n: sorted(p.name for p in h.iterdir()) if h.is_dir() else [] for n, h in cluster.homes.items()}
    finally:
        ray.shutdown()
        cluster.stop()
    return {"phase": phase, "ship_data": ship, "head_start_s": cluster.head_s, "cluster_start_s": cluster.start_s,
            "connect_s": connect_s, "daemon_cpu_share": daemon_share, "nodes": len(nodes), "node_homes": homes}


def summarize(log: list[dict], phase: str) -> dict:
    """The phase's overheads: cold against the median warm local run, warm paired with the local run beside it."""
    rows = [r for r in log if r["phase"] == phase]
    local = [r for r in rows if r["label"] == "local warm"]
    warm = [r for r in rows if r["label"] == "ray warm"]
    cold = next(r for r in rows if r["label"] == "ray cold")  # the first; a second node's first is listed in runs
    ref = statistics.median(r["wall"] for r in local)

    def med(xs: list[dict], key: str) -> float:
        return statistics.median(x.get(key, 0.0) for x in xs)

    def split(r: list[dict]) -> dict:
        out = {k: med(r, k) for k in RAY_KEYS}
        # The node's first-use costs: its phases against the warm local runs' (data, compiled programs).
        out.update({f"d_{k}": med(r, k) - med(local, k) for k in PHASES})
        return out

    beside = {r["pair"]: r["wall"] for r in local}
    paired = [w["wall"] - beside[w["pair"]] for w in warm]
    return {"phase": phase, "local_warm_wall": ref, "local_warm_walls": [r["wall"] for r in local],
            "cold": {"wall": cold["wall"], "overhead": cold["wall"] - ref, "pct": 100 * (cold["wall"] - ref) / ref,
                     **split([cold])},
            "warm": {"wall": med(warm, "wall"), "overhead": statistics.median(paired),
                     "pct": 100 * statistics.median(paired) / ref, "paired": paired, **split(warm)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", default="discopop")
    parser.add_argument("--repeats", type=int, default=3, help="warm (local, ray) pairs per phase")
    parser.add_argument("--sandbox", default="bwrap")
    parser.add_argument("--seeds", type=int, help="default: the template's")
    parser.add_argument("--phases", default="before,after", help="comma-separated subset of: before, after")
    parser.add_argument("--keep", type=Path, help="keep the homes and runs in this (new) folder")
    args = parser.parse_args()

    template = load_template(args.template).for_hardware("cpu", None)
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="ray-overhead-")).resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    home = tmp / "home"
    home.mkdir()
    store = Store(home / "store.sqlite")
    job = Job(template=template, sources=template.editable_sources(), seeds=args.seeds or template.spec.seeds,
              sandbox=backends.resolve(args.sandbox), home=home, secrets=home_secrets(store, template))
    store.close()
    log: list[dict] = []
    clusters = []
    try:
        local = LocalExecutor(local_slots(1, None))
        run(local, job, tmp, "local cold", "-", log)  # the driver home's data and compiled programs
        for phase in args.phases.split(","):
            clusters.append(ray_phase(tmp, job, local, phase, phase == "after", args.repeats, log))
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"runs": log}), flush=True)  # the raw records first, whatever comes next
    summaries = [summarize(log, c["phase"]) for c in clusters]

    print(f"\n{template.name} at its cpu settings, {job.seeds} seeds, --sandbox {args.sandbox}; "
          f"{os.cpu_count()} cores; {args.repeats} warm pairs per phase")
    print(f"{'':<14}{'wall':>8}{'overhead':>10}{'% warm':>8}" + "".join(f"{k[4:]:>8}" for k in RAY_KEYS)
          + "".join(f"{'d_' + k:>11}" for k in ("prepare", "compile", "evaluate", "total")))
    for s in summaries:
        print(f"{s['phase']}: local warm {s['local_warm_wall']:.2f} s (median of {len(s['local_warm_walls'])})")
        for kind in ("cold", "warm"):
            r = s[kind]
            print(f"  ray {kind:<9}{r['wall']:>8.2f}{r['overhead']:>10.2f}{r['pct']:>7.1f}%"
                  + "".join(f"{r[k]:>8.2f}" for k in RAY_KEYS)
                  + "".join(f"{r['d_' + k]:>11.2f}" for k in ("prepare", "compile", "evaluate", "total")))
    for c in clusters:
        print(f"{c['phase']}: ray start head {c['head_start_s']:.1f} s, both nodes {c['cluster_start_s']:.1f} s, "
              f"driver connects {c['connect_s']:.1f} s; {c['nodes']} nodes; daemons used "
              f"{100 * c['daemon_cpu_share']:.0f}% of a core while the phase ran")
    print(json.dumps({"bench": "ray_overhead", "template": template.name, "seeds": job.seeds, "sandbox": args.sandbox,
                      "clusters": clusters, "summaries": summaries}))


if __name__ == "__main__":
    main()
