"""The Docker backend: one throwaway container per run, through the docker SDK.

The container gets no network, a read-only root, the run's work folder as its
only writable bind mount (plus its own compilation cache and a size-limited
tmpfs at /tmp), memory, CPU and process-count limits, no capabilities, a
non-root user and an environment of only what the run needs. The time limit is
enforced from outside, and once more inside by `timeout`, so a container whose
parent was killed outright still ends at its deadline; every container carries
its owner's identity in a label and is removed when the run ends, however it
ends, or by the next run when its owner died without cleaning up.

Output is streamed from the daemon into the same bounded log as the other backends
(sandbox/logs.py), and the daemon's own copy (the json-file driver keeps a
container's output on its disk until the container is removed) is capped too.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from sandbox.errors import SandboxUnavailable
from sandbox.limits import CGROUP_ROOTS, Limits, Outcome, forks_refused
from sandbox.logs import BoundedLog
from sandbox.usage import DiskWatch

if TYPE_CHECKING:
    import docker

DEFAULT_HOST = "unix:///var/run/docker.sock"
OWNER_LABEL = "org.scientist.owner"
NOBODY = (65534, 65534)
_GRACE_S = 5        # the inner deadline trails the outer one: the outer kill is the normal path
_POLL_S = 0.1
_STATS_EVERY_S = 0.5


class DockerUnavailable(SandboxUnavailable):
    """The daemon does not answer, or the image is missing; the message says what to do."""


def connect(host: str | None, timeout: float | None = 60) -> docker.DockerClient:
    """A client for the daemon at host (default: the local socket); raises DockerUnavailable.

    timeout: for each request, in seconds; None: none (a stream that may be silent for long).
    """
    import docker

    try:
        client = docker.DockerClient(base_url=host or DEFAULT_HOST, timeout=timeout)
        client.ping()
    except Exception as e:  # the SDK raises several types for "nobody there"
        raise DockerUnavailable(f"no Docker daemon answers at {host or DEFAULT_HOST} ({type(e).__name__})") from None
    return client


def daemon_answers(host: str | None) -> bool:
    """Whether a Docker daemon answers at host, within a couple of seconds."""
    try:
        connect(host, timeout=3).close()
        return True
    except DockerUnavailable:
        return False


def image_present(host: str | None, image: str) -> bool:
    """Whether the daemon at host has the image locally."""
    import docker

    client = connect(host, timeout=10)
    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()


def owner_id(pid: int | None = None) -> str:
    """This process as a label value: pid plus start time, so a reused pid is not mistaken for us."""
    p = psutil.Process(pid or os.getpid())
    return f"{p.pid}:{p.create_time():.3f}"


def _owner_alive(label: str) -> bool:
    try:
        pid, started = label.split(":")
        return owner_id(int(pid)) == label and float(started) > 0
    except (ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def reap_orphans(client: docker.DockerClient) -> int:
    """Remove containers whose owning process is gone (killed before it could clean up); return how many."""
    n = 0
    for c in client.containers.list(all=True, filters={"label": OWNER_LABEL}):
        if not _owner_alive(c.labels.get(OWNER_LABEL, "")):
            c.remove(force=True)
            n += 1
    return n


def run_user() -> tuple[int, int]:
    """The container's user: ours when we are not root, else nobody (never root in the container)."""
    return NOBODY if os.getuid() == 0 else (os.getuid(), os.getgid())


def _give(path: Path, uid: int, gid: int) -> None:
    """Let the container's user write path (we are root; the container's user is nobody)."""
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def _device_requests(gpus: str | None) -> list:
    import docker

    if not gpus:
        return []
    if gpus == "all":
        return [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    return [docker.types.DeviceRequest(device_ids=gpus.split(","), capabilities=[["gpu"]])]


def run(command: list[str], *, image: str, host: str | None, gpus: str | None, env: dict[str, str],
        mounts: dict[str, tuple[Path, bool]], workdir: str, watch_dir: Path, limits: Limits,
        log_path: Path, cpus: tuple[int, ...] | None = None, cancel: threading.Event | None = None) -> Outcome:
    """Run command in a fresh container of image and return how it ended; the container is always removed.

    mounts: container path -> (host path, writable); watch_dir: the host folder held to limits.disk_mb.
    Raises DockerUnavailable (one line) when the daemon or the image fails us.
    """
    import docker
    import requests

    client = connect(host)
    try:
        reap_orphans(client)
        container = _create(client, command, image=image, gpus=gpus, env=env, mounts=mounts, workdir=workdir,
                            limits=limits, cpus=cpus)
        try:
            return _supervise(container, limits, log_path, watch_dir, host, cancel)
        finally:
            # Success, a limit, an exception or Ctrl-C: the container goes in every case.
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
    except docker.errors.ImageNotFound:
        raise DockerUnavailable(f"image {image} not found: build it with `scientist sandbox build`") from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
        raise DockerUnavailable(f"Docker failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
    finally:
        client.close()


def _create(client, command: list[str], *, image: str, gpus: str | None, env: dict[str, str],
            mounts: dict[str, tuple[Path, bool]], workdir: str, limits: Limits, cpus: tuple[int, ...] | None):
    from docker.types import LogConfig, Mount, Ulimit

    uid, gid = run_user()
    if os.getuid() == 0:
        for source, writable in mounts.values():
            if writable:
                _give(source, uid, gid)
    fsize = limits.disk_mb * 2**20
    # We read the output as it is written (attached); the json-file driver would also keep all of it on the
    # daemon's disk until the container is removed. One file, truncated at twice what our log keeps (8 MiB).
    daemon_log = LogConfig(type=LogConfig.types.JSON,
                           config={"max-size": f"{2 * (limits.log_head_mb + limits.log_tail_mb)}m", "max-file": "1"})
    return client.containers.create(
        image, ["timeout", "-s", "KILL", f"{limits.time_s + _GRACE_S:g}", *command],
        user=f"{uid}:{gid}", working_dir=workdir, environment=env, detach=True,
        network_mode="none", read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"],
        mounts=[Mount(target, str(src), type="bind", read_only=not rw) for target, (src, rw) in mounts.items()],
        tmpfs={"/tmp": f"size={limits.tmp_mb}m,mode=1777"}, shm_size=f"{limits.tmp_mb}m",
        mem_limit=f"{limits.memory_mb}m", memswap_limit=f"{limits.memory_mb}m",
        pids_limit=limits.processes, nano_cpus=int(limits.cpus * 1e9) if limits.cpus else None,
        cpuset_cpus=",".join(map(str, cpus)) if cpus else None,
        ulimits=[Ulimit(name="fsize", soft=fsize, hard=fsize), Ulimit(name="core", soft=0, hard=0)],
        device_requests=_device_requests(gpus), labels={OWNER_LABEL: owner_id()}, log_config=daemon_log,
    )


def _supervise(container, limits: Limits, log_path: Path, work: Path, host: str | None,
               cancel: threading.Event | None) -> Outcome:
    # The output is attached to before the start, so not a byte is missed, rather than followed in the
    # daemon's log file: a follower of a file the daemon rotates repeats and skips pieces (Docker 20.10),
    # while an attached reader is exact and slows a flooding container down to its own pace. Its client
    # has no read timeout: a run may be silent for longer than any timeout.
    disk = DiskWatch(work, limits.disk_mb)
    with (closing(connect(host, timeout=None)) as reader, closing(limits.bounded_log(log_path)) as log,
          closing(reader.api.attach(container.id, stdout=True, stderr=True, stream=True, logs=False)) as stream):
        started = time.time()
        container.start()
        logger = threading.Thread(target=_copy_output, args=(stream, log), daemon=True)
        logger.start()
        try:
            state, timed_out, exceeded, peak = _watch(container, limits, log, disk, started, cancel)
        except BaseException:
            container.kill()
            raise
        finally:
            logger.join(timeout=10)  # the stream ends with the container's output
            log.close()  # a reader still streaming after that writes no more
    if exceeded is None and disk.over(force=True):
        exceeded = "disk"
    if exceeded is None and limits.output_over(log):
        exceeded = "output"
    code = state.get("ExitCode")
    # The inner deadline (SIGKILL, status 137) struck first: still the time limit.
    timed_out = timed_out or (code == 137 and time.time() - started >= limits.time_s)
    if code is not None and code > 128:
        code = -(code - 128)  # killed by a signal, as subprocess reports it
    return Outcome(returncode=code, timed_out=timed_out, out_of_memory=bool(state.get("OOMKilled")),
                   wall_s=time.time() - started, started_at=started, peak_memory_mb=peak,
                   log_tail=log.tail(4000), exceeded=exceeded)


def _pids_cgroup(pid: int, container_id: str) -> Path | None:
    """The container's pids cgroup, when it can be read from here (a daemon on this machine).

    The file counts the forks the kernel refused at the limit: a fork bomb's task count hovers
    just under the limit as its members die and respawn, and the daemon's stats, sampled twice a
    second, may never see it there. A daemon elsewhere, or a cgroup not found, leaves the stats.
    """
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if container_id not in path or controllers not in ("", "pids"):
            continue  # another process with that pid (a remote daemon's), or another v1 controller
        for root in CGROUP_ROOTS:
            if (root / path.lstrip("/") / "pids.events").is_file():
                return root / path.lstrip("/")
    return None


def _watch(container, limits: Limits, log: BoundedLog, disk: DiskWatch, started: float,
           cancel: threading.Event | None):
    """Poll the running container against the limits, killing it past one: (state, timed_out, exceeded, peak).

    A set `cancel` raises KeyboardInterrupt (the caller kills and removes the container).
    """
    timed_out = False
    exceeded = None
    peak = 0.0
    last_stats = 0.0
    cgroup, looked = None, False
    while True:
        state = container.client.api.inspect_container(container.id)["State"]
        if state["Status"] not in ("created", "running"):
            break
        if not looked and state.get("Pid"):
            cgroup, looked = _pids_cgroup(state["Pid"], container.id), True
        if cancel is not None and cancel.is_set():
            raise KeyboardInterrupt
        now = time.time()
        if now - started > limits.time_s:
            timed_out = True
        elif disk.over():
            exceeded = "disk"
        elif limits.output_over(log):
            exceeded = "output"
        elif cgroup is not None and forks_refused(cgroup):
            exceeded = "processes"
        elif now - last_stats > _STATS_EVERY_S:
            last_stats = now
            stats = container.stats(stream=False, one_shot=True)
            peak = max(peak, stats.get("memory_stats", {}).get("usage", 0) / 2**20)
            if stats.get("pids_stats", {}).get("current", 0) >= limits.processes:
                exceeded = "processes"
        if timed_out or exceeded:
            container.kill()
            state = container.client.api.inspect_container(container.id)["State"]
            break
        time.sleep(_POLL_S)
    return state, timed_out, exceeded, peak


def _copy_output(stream, log: BoundedLog) -> None:
    # It reads on past the output limit: a reader that stops blocks the daemon's handling of the container.
    try:
        for chunk in stream:
            log.write(chunk)
    except Exception:  # noqa: BLE001 - the stream was closed under us: the run is over, its log is closed
        pass
