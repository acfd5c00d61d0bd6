"""Where sandboxed runs compute: this machine's worker slots, or the nodes of a Ray cluster.

    local   N slots, each owning its share of the hardware: its GPU(s) (CUDA_VISIBLE_DEVICES for
            bubblewrap and process, device requests for Docker) or, on CPU, its share of the cores
            (an affinity set; Docker's cpuset), so that parallel runs do not fight over cores.
    ray     each run (training and sealed evaluation) is a Ray task with the resources the template
            declares; the node runs the same sandbox code path on its own caches; the template's
            files, the candidate and the home's secrets travel with the task (the secrets only to the node's
            trusted evaluator, on its stdin) and the results come back by value. The driver prepares
            the training data once, in its own home as the local executor does, and sends it to the
            nodes (one object per data set), which install it in their caches instead of preparing their
            own. The store stays with the driver, so resuming works as with the local executor. A run
            whose worker is lost is retried once, then recorded as failed with the reason.

A Ray run's timings add where its time outside the computation went (bench/ray_overhead.py):
ray_submit (the driver, until the task is submitted: its resource check, reading the template's files,
the data), ray_queue (from submission until the task starts on its node: scheduling, a worker process,
importing this module there; the node's clock against the driver's), ray_unpack (the node: the template
unpacked, loaded and checked, the data installed) and ray_return (from the end of the computation until
the driver holds its result: the node's clean-up, serialising, the transfer).

Both implement scientist.runner.Executor. Scheduling across ideas is the session's (a pool of
idea threads); an executor only says where one computation runs.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from base.template import Template, load_template
from sandbox.backends import Sandbox
from scientist.runner import (
    Computed,
    DataPreparationFailed,
    Job,
    compute,
    data_cache,
    data_files,
    install_data,
    write_run_files,
)

# A node's caches (templates, prepared data, compiled programs), kept across tasks: this variable of the
# node's environment (as `ray start` had it), else /tmp/scientist-node-<uid>.
NODE_HOME_ENV = "SCIENTIST_NODE_HOME"


@dataclass(frozen=True)
class Slot:
    """One worker's share of this machine."""

    index: int
    cpus: tuple[int, ...] | None = None   # cores it may use (None: all)
    gpus: str | None = None               # GPU ids for CUDA_VISIBLE_DEVICES / device requests (None: CPU only)


def visible_gpus(gpus: str | None) -> list[str]:
    """The GPU ids a --gpus value names: `all` asks nvidia-smi; a list such as 0,1 is taken as given."""
    if not gpus:
        return []
    if gpus != "all":
        return [g.strip() for g in gpus.split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def default_workers(gpus: str | None) -> int:
    """One worker per GPU when GPUs are given, else one."""
    return max(1, len(visible_gpus(gpus)))


def local_slots(workers: int, gpus: str | None, cores: list[int] | None = None) -> list[Slot]:
    """Split the machine into `workers` slots: GPUs dealt round-robin, cores in contiguous shares.

    More workers than GPUs share GPUs (several runs on one GPU); more workers than cores share cores,
    which helps nothing on CPU-bound runs (BENCHMARKS.md measures it) but is allowed.
    """
    cores = sorted(os.sched_getaffinity(0)) if cores is None else cores
    ids = visible_gpus(gpus)
    slots = []
    for i in range(workers):
        share = cores[i * len(cores) // workers:(i + 1) * len(cores) // workers] or [cores[i % len(cores)]]
        gpu = ids[i % len(ids)] if ids else None
        # With GPUs the cores are not split: the host side of a GPU run is light, and JAX wants threads.
        slots.append(Slot(i, cpus=None if gpu else tuple(share), gpus=gpu))
    return slots


class LocalExecutor:
    """N slots on this machine; a computation waits for a free slot, then runs in the calling thread."""

    def __init__(self, slots: list[Slot]):
        self.slots = slots
        self._free: queue.Queue[Slot] = queue.Queue()
        for slot in slots:
            self._free.put(slot)

    @property
    def workers(self) -> int:
        return len(self.slots)

    def describe(self) -> str:
        """How the machine is shared, in words."""
        parts = [f"slot {s.index}: " + (f"GPU {s.gpus}" if s.gpus else f"cores {','.join(map(str, s.cpus))}")
                 for s in self.slots]
        return f"{self.workers} local worker(s) ({'; '.join(parts)})"

    def compute(self, job: Job, run_dir: Path, cancel: threading.Event | None = None) -> Computed:
        slot = self._free.get()
        try:
            sandbox = replace(job.sandbox, gpus=slot.gpus) if slot.gpus else job.sandbox
            done = compute(replace(job, sandbox=sandbox, cpus=slot.cpus), run_dir, cancel)
        finally:
            self._free.put(slot)
        done.node = f"local slot {slot.index}"
        return done


class RayUnavailable(Exception):
    """Ray is not installed or the cluster does not answer; one line for the user."""


class RayExecutor:
    """Each computation is a Ray task on whichever node has the template's resources free."""

    def __init__(self, workers: int, address: str | None = None, ship_data: bool = True):
        """ship_data: the driver prepares the data and sends it (False: each node prepares its own, as before
        issue 26; bench/ray_overhead.py compares the two)."""
        try:
            import ray
        except ImportError:
            raise RayUnavailable("--executor ray needs Ray: pip install 'ray>=2.40'") from None
        self.workers = workers
        self.address = address
        # Ray announces on stderr that the local instance it starts uses token authentication (its
        # safe default): noise in a user's output, and in cron's mail.
        logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
        check_reachable(address)
        try:
            if not ray.is_initialized():
                # No address: a local Ray instance of this machine, as `ray.init()` starts one.
                ray.init(address=address, logging_level="ERROR", log_to_driver=False,
                         include_dashboard=False, configure_logging=False)
        except Exception as e:  # ray raises ConnectionError, RuntimeError, ValueError... for "nobody there"
            raise RayUnavailable(f"no Ray cluster answers at {address or 'a local instance'} "
                                 f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
        self._ray = ray
        self._task = ray.remote(_compute_on_node)
        self.ship_data = ship_data
        self._data: dict[Path, object] = {}  # the driver's data folder -> the object holding its files
        self._data_lock = threading.Lock()

    def describe(self) -> str:
        nodes = [n for n in self._ray.nodes() if n.get("Alive")]
        cpus = sum(n["Resources"].get("CPU", 0) for n in nodes)
        gpus = sum(n["Resources"].get("GPU", 0) for n in nodes)
        return (f"Ray at {self.address or 'a local instance'}: {len(nodes)} node(s), {cpus:g} CPUs, {gpus:g} GPUs; "
                f"{self.workers} run(s) at once")

    def compute(self, job: Job, run_dir: Path, cancel: threading.Event | None = None) -> Computed:
        ray = self._ray
        t0 = time.time()
        resources = job.template.spec.resources
        # A run given GPUs (--gpus) under a profile that asks for none still needs one of the node's.
        gpus = resources.gpus or (1.0 if job.template.device == "gpu" else 0.0)
        wanted = {"CPU": resources.cpus, "GPU": gpus, "memory": resources.memory_mb * 2**20}
        if not any(all(n["Resources"].get(k, 0) >= v for k, v in wanted.items() if v)
                   for n in ray.nodes() if n.get("Alive")):
            # Ray would wait for such a node for ever; say so instead.
            return Computed("failed", reason=f"no node of the Ray cluster has what a run of {job.template.name} "
                                             f"asks ([resources]: {resources.cpus:g} CPUs, {gpus:g} GPUs, "
                                             f"{resources.memory_mb} MB)")
        task = self._task.options(
            num_cpus=resources.cpus, num_gpus=gpus, memory=resources.memory_mb * 2**20,
            max_retries=1, retry_exceptions=False)  # a lost worker or node: once more, elsewhere if need be
        files = {name: path.read_bytes() for name, path in job.template.computing_files().items()
                 if not name.startswith("jax_workloads/")}
        files["template.toml"] = (job.template.root / "template.toml").read_bytes()
        try:
            data = self._data_ref(job) if self.ship_data else None
        except DataPreparationFailed as e:
            return Computed("failed", reason=str(e), timings={"total": time.time() - t0})
        # The home's secrets travel by value in the task's arguments, to the node's trusted side only
        # (_compute_on_node hands them to its evaluator process on stdin), never in a file.
        submitted = time.time()
        ref = task.remote(files, job.template.spec.profile, job.template.device, job.template.content_hash(),
                          job.sources, job.seeds, job.sandbox, job.secrets, job.draw, data, submitted)
        try:
            while True:
                ready, _ = ray.wait([ref], timeout=0.5)
                if ready:
                    break
                if cancel is not None and cancel.is_set():
                    raise KeyboardInterrupt
            done = ray.get(ref)
        except KeyboardInterrupt:
            ray.cancel(ref, force=True)
            raise
        except ray.exceptions.RayTaskError as e:  # the computation itself raised on the node
            cause = e.cause if isinstance(e.cause, BaseException) else e
            return Computed("failed", reason=f"the run failed on its Ray node: {type(cause).__name__}: "
                                             f"{' '.join(str(cause).split())[:300]}")
        except ray.exceptions.RayError as e:  # a worker or node lost, also on the one retry
            reason = f"lost the Ray worker running it, also on its one retry ({type(e).__name__})"
            return Computed("failed", reason=reason, error_tail=" ".join(str(e).split())[-2000:])
        received = time.time()
        node_s = sum(done.timings.get(k, 0.0) for k in ("ray_queue", "ray_unpack", "total"))
        done.timings.update(ray_submit=submitted - t0, ray_return=max(0.0, received - submitted - node_s))
        write_run_files(run_dir, job.sources, done.logs, done.final_info)
        return done

    def _data_ref(self, job: Job) -> list:
        """The job's prepared data as a Ray object (made in the driver's home first if need be), once per data set.

        In a list: Ray resolves an object given as an argument before the task starts, one in a list only when
        the node asks for it (_compute_on_node does when its cache lacks the data).
        """
        with self._data_lock:  # one thread of the driver puts a data set; the others wait for its object
            key = data_cache(job)
            if key not in self._data:
                self._data[key] = self._ray.put(data_files(job))
            return [self._data[key]]


def check_reachable(address: str | None) -> None:
    """A HOST:PORT nobody listens on is one line now; ray.init would retry for minutes, logging as it goes."""
    if not address or "://" in address or address == "auto" or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except ValueError:
        raise RayUnavailable(f"--ray-address {address}: expected HOST:PORT, e.g. 10.0.0.1:6379") from None
    except OSError as e:
        raise RayUnavailable(f"no Ray cluster answers at {address} ({e.strerror or type(e).__name__}); "
                             f"start one with `ray start --head --port {port}` there") from None


def _compute_on_node(files: dict[str, bytes], profile: str | None, device: str, template_hash: str,
                     sources: dict[str, str], seeds: int, sandbox: Sandbox, secrets: dict[str, int],
                     draw: int, data: list | None = None, submitted: float | None = None) -> Computed:
    """A Ray task: the driver's computation on this node, in a folder of its own, returned by value.

    The template arrives as its files, with the profile and device the driver runs it with; the
    shared code (jax_workloads) is this node's own install, so the template's content hash, which
    covers both, must equal the driver's: a node with another version of the code would compute
    something else under the same key. A GPU run gets the GPUs Ray assigned to the task. The driver
    home's secrets come as arguments: the node's caches of prepared data are named by their digest. The
    driver's prepared data comes as an object in `data` (None: the node prepares its own); `submitted`
    is the driver's clock when it submitted the task.
    """
    import ray

    started = time.time()
    node = ray.get_runtime_context().get_node_id()
    home = node_home()
    root = home / "templates" / template_hash
    if not (root / "template.toml").is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root.parent))
        for name, content in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(content)
        try:
            tmp.rename(root)
        except OSError:  # another task of this node unpacked it first
            shutil.rmtree(tmp, ignore_errors=True)
    template: Template = load_template(str(root))
    template = replace(template.with_profile(profile), device=device) if profile else template
    if device == "gpu":
        sandbox = replace(sandbox, gpus=",".join(str(g) for g in ray.get_gpu_ids()) or sandbox.gpus)
    if template.content_hash() != template_hash:
        return Computed("failed", node=node, reason=f"Ray node {node[:12]} computes another version of the template "
                        f"or of jax_workloads (content hash {template.content_hash()} against the driver's "
                        f"{template_hash}): install the same jax-scientist on every node")
    job = Job(template=template, sources=sources, seeds=seeds, sandbox=sandbox, home=home, secrets=secrets, draw=draw)
    if data and not data_cache(job).is_dir():
        install_data(job, ray.get(data[0]))
    _remove_orphaned_run_dirs(home)
    run_dir = Path(tempfile.mkdtemp(dir=home, prefix=f"run-{os.getpid()}-"))
    unpacked = time.time()
    try:
        done = compute(job, run_dir)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    done.node = node
    if submitted is not None:
        done.timings["ray_queue"] = started - submitted
    done.timings["ray_unpack"] = unpacked - started
    return done


def node_home() -> Path:
    """This node's caches, kept across tasks: $SCIENTIST_NODE_HOME, else /tmp/scientist-node-<uid>.

    One folder per machine by default; two Ray nodes on one machine (bench/ray_overhead.py's loopback
    cluster) get one each when `ray start` has the variable set, so that each has caches of its own.
    """
    return Path(os.environ.get(NODE_HOME_ENV) or Path(tempfile.gettempdir()) / f"scientist-node-{os.getuid()}")


def _remove_orphaned_run_dirs(home: Path) -> None:
    """Remove the folders of tasks whose worker process is gone (a cancelled or lost task leaves its folder)."""
    import psutil

    for folder in home.glob("run-*-*"):
        try:
            pid = int(folder.name.split("-")[1])
        except ValueError:
            continue
        if not psutil.pid_exists(pid):
            shutil.rmtree(folder, ignore_errors=True)


def make_executor(kind: str, workers: int, gpus: str | None, ray_address: str | None = None
                  ) -> LocalExecutor | RayExecutor:
    """The executor a run asks for: `local` (this machine's worker slots) or `ray` (a Ray cluster)."""
    if kind == "ray":
        return RayExecutor(workers, ray_address)
    return LocalExecutor(local_slots(workers, gpus))
