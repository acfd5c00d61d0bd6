"""Resource limits and the supervised launch that every backend shares.

The launch puts the child in its own session (so the whole process group can be
killed), applies rlimits before exec, kills the child if its parent dies,
enforces the wall-clock limit from outside and watches the resident memory of
the whole process tree, killing it past the limit. An address-space rlimit is a
backstop only: JAX reserves about a gigabyte of virtual memory at import, so the
tree's resident memory is the limit that means what users expect.

Process count: RLIMIT_NPROC binds ordinary users only (the kernel exempts root),
so when we may create one (root, cgroup v1 or v2) the run also goes into a pids
cgroup of its own, which caps its tasks and lets every member be killed at the
end however it detached. The watched folder's disk use is polled too: a
per-file size rlimit alone lets a candidate fill the disk with many files.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import psutil
from annotated_types import Ge, Gt

from sandbox.logs import BoundedLog, MiB, Pump
from sandbox.usage import DiskWatch

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_VA_HEADROOM_MB = 8192
_POLL_S = 0.05
CGROUP_ROOTS = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))  # cgroup v1 pids, then v2


@dataclass(frozen=True)
class Limits:
    """Per-run limits, as template.toml's [limits] states them (validated there, this very class).

    Processes counts tasks (threads too), as the kernel's pids limit does. The annotations carry the
    bounds pydantic checks when a template is loaded; here they are plain numbers.
    """

    __pydantic_config__ = {"extra": "forbid"}  # an unknown key in [limits] is a one-line error, not ignored

    time_s: Annotated[float, Gt(0)] = 600.0          # wall time of the sandboxed run
    memory_mb: Annotated[int, Gt(0)] = 4096         # resident memory of the run's whole process tree
    eval_time_s: Annotated[float, Gt(0)] = 300.0    # wall time of the trusted evaluator process
    # The tracer (the only process that runs the candidate's Python) gets far less time than the run: import-time
    # code must not have the run's budget to optimise an artifact offline and bake it into the exports.
    trace_time_s: Annotated[float, Gt(0)] = 120.0
    processes: Annotated[int, Ge(16)] = 1024        # tasks, threads included (JAX starts several per core)
    disk_mb: Annotated[int, Gt(0)] = 4096           # what the run may write in its folder, in all
    tmp_mb: Annotated[int, Gt(0)] = 256             # the private /tmp (docker: a tmpfs of this size)
    cpus: Annotated[float, Gt(0)] | None = None     # docker only: CPU share; None = all the machine's
    output_mb: Annotated[int, Gt(0)] = 256          # stdout and stderr together, in all; more stops the run
    log_head_mb: Annotated[int, Gt(0)] = 1          # the log file keeps the output's first log_head_mb...
    log_tail_mb: Annotated[int, Gt(0)] = 3          # ...and its last log_tail_mb, a line between saying what is cut

    def for_evaluator(self) -> Limits:
        """The same limits with the evaluator's time limit: the trusted process that scores a run."""
        return replace(self, time_s=self.eval_time_s)

    def for_tracer(self) -> Limits:
        """The limits of the tracer, the sandbox that imports the candidate and exports it: trace_time_s (at most
        the run's time_s)."""
        return replace(self, time_s=min(self.trace_time_s, self.time_s))

    def bounded_log(self, path: Path) -> BoundedLog:
        """A log at path that keeps the head and tail of the output these limits allow."""
        return BoundedLog(path, self.log_head_mb * MiB, self.log_tail_mb * MiB)

    def output_over(self, log: BoundedLog) -> bool:
        """Whether the run has written more than output_mb to its log."""
        return log.total > self.output_mb * MiB


@dataclass
class Outcome:
    """How a sandboxed command ended."""

    returncode: int | None
    timed_out: bool
    out_of_memory: bool
    wall_s: float
    started_at: float
    peak_memory_mb: float
    log_tail: str
    exceeded: str | None = None    # another limit that stopped it: "processes", "disk" or "output"

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.out_of_memory and not self.exceeded


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def become_subreaper() -> None:
    """Adopt orphaned descendants, so a child that detaches is still found and killed."""
    _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _preexec(limits: Limits, cgroup: Path | None, cpus: tuple[int, ...] | None):
    parent = os.getpid()

    def apply() -> None:
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))
        if cpus:  # a worker slot's share of the cores, inherited by everything the run starts
            os.sched_setaffinity(0, cpus)
        _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died between fork and prctl: no signal will come
            os._exit(1)
        va = (limits.memory_mb + _VA_HEADROOM_MB) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (va, va))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        fsize = limits.disk_mb * 2**20
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def pids_cgroup(max_tasks: int) -> Path | None:
    """A new pids cgroup capped at max_tasks, where this process may make one; else None."""
    for root in CGROUP_ROOTS:
        if not (root / "cgroup.procs").exists() or not os.access(root, os.W_OK):
            continue
        if root == Path("/sys/fs/cgroup") and "pids" not in _read(root / "cgroup.subtree_control"):
            continue  # v2 without the pids controller delegated here; v1 mounts it on its own
        _remove_stale_cgroups(root)
        path = root / f"scientist-{os.getpid()}-{time.monotonic_ns()}"
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(max_tasks))
            return path
        except OSError:
            _remove_cgroup(path)
    return None


def _at_process_limit(cgroup: Path | None, procs: list[psutil.Process], limit: int) -> bool:
    """Whether the run has reached its task limit: a fork the kernel refused, or as many tasks as allowed.

    The kernel's count of refused forks (pids.events) is what makes this reliable: a fork bomb's
    task count hovers just under the limit as its members die and respawn, and a poll may miss it.
    """
    if cgroup is None:
        return len(procs) >= limit
    return int(_read(cgroup / "pids.current") or 0) >= limit or forks_refused(cgroup)


def forks_refused(cgroup: Path) -> bool:
    """Whether the kernel refused a fork in this pids cgroup at its limit (pids.events' "max" count);
    False when the cgroup is gone."""
    refused = _read(cgroup / "pids.events").split()
    return refused[:1] == ["max"] and refused[1] != "0"


def _remove_stale_cgroups(root: Path) -> None:
    """Remove the cgroups of runs whose supervisor was killed (kill -9) before it could remove them."""
    for path in root.glob("scientist-*-*"):
        try:
            owner = int(path.name.split("-")[1])
        except ValueError:
            continue
        if not psutil.pid_exists(owner):
            _remove_cgroup(path)  # kills whatever of that run is still in it


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _cgroup_pids(cgroup: Path | None) -> list[int]:
    return [int(x) for x in _read(cgroup / "cgroup.procs").split()] if cgroup else []


def _remove_cgroup(cgroup: Path) -> None:
    for _ in range(50):  # the kernel frees a cgroup only once its last task is reaped
        for pid in _cgroup_pids(cgroup):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            cgroup.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _tree_rss_mb(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def _kill_tree(proc: subprocess.Popen, procs: list[psutil.Process]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for p in procs:  # descendants that left the process group
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


PIPE_BYTES = 65536  # Linux's default pipe buffer


def _feed(proc: subprocess.Popen, data: bytes) -> None:
    """Write data to the process's stdin and close it; a pipe's buffer holds it, so this never waits for the reader."""
    try:
        proc.stdin.write(data)
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the process ended already: its outcome says why


def supervise(argv: list[str], *, env: dict[str, str], cwd: Path, limits: Limits, log_path: Path,
              watch_dir: Path | None = None, tail_chars: int = 4000, cpus: tuple[int, ...] | None = None,
              cancel: threading.Event | None = None, stdin: bytes | None = None) -> Outcome:
    """Run argv under the limits, stdout and stderr to a bounded log at log_path; return how it ended.

    watch_dir: the folder the run may write, held to limits.disk_mb in all. cpus: the cores it may use.
    cancel: set by another thread to stop the run (its tree is killed and KeyboardInterrupt raised here).
    stdin: bytes the run reads on its standard input (a pipe; at most a pipe's buffer, 64 KiB), else nothing.
    Several runs may be supervised at once by threads of one process: each kills and reaps only its own.
    """
    if stdin is not None and len(stdin) > PIPE_BYTES:
        raise ValueError(f"stdin of {len(stdin)} bytes is more than a pipe holds ({PIPE_BYTES} bytes)")
    become_subreaper()
    cgroup = pids_cgroup(limits.processes)
    disk = DiskWatch(watch_dir, limits.disk_mb) if watch_dir is not None else None
    log = limits.bounded_log(log_path)
    started = time.time()
    try:
        read_end, write_end = os.pipe()
        try:
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                    stdout=write_end, stderr=write_end, start_new_session=True,
                                    preexec_fn=_preexec(limits, cgroup, cpus))
            if stdin:
                _feed(proc, stdin)
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)  # the child's copy is the only one: end of file when the run's tree is gone
        pump = Pump(read_end, log, stop_after=limits.output_mb * MiB)
        ps = psutil.Process(proc.pid)
        timed_out = oom = False
        exceeded = None
        peak = 0.0
        procs: list[psutil.Process] = [ps]
        try:
            while proc.poll() is None:
                if cancel is not None and cancel.is_set():
                    raise KeyboardInterrupt  # the finally below kills the run's tree
                procs = _tree(ps) or procs
                peak = max(peak, _tree_rss_mb(procs))
                if peak > limits.memory_mb:
                    oom = True
                elif time.time() - started > limits.time_s:
                    timed_out = True
                elif _at_process_limit(cgroup, procs, limits.processes):
                    exceeded = "processes"
                elif disk is not None and disk.over():
                    exceeded = "disk"
                elif limits.output_over(log):
                    exceeded = "output"
                if oom or timed_out or exceeded:
                    _kill_tree(proc, procs)
                    break
                time.sleep(_POLL_S)
        finally:
            # Runs on success, on a limit, and when the parent is interrupted (Ctrl-C).
            _kill_tree(proc, _tree(ps) + procs)
            proc.wait()
            _reap_session(proc.pid)
            pump.finish()
    finally:
        log.close()
        if cgroup is not None:
            _remove_cgroup(cgroup)
    if exceeded is None and disk is not None and disk.over(force=True):
        exceeded = "disk"
    if exceeded is None and limits.output_over(log):
        exceeded = "output"
    return Outcome(proc.returncode, timed_out, oom, time.time() - started, started, peak,
                   log.tail(tail_chars), exceeded)


def _reap_session(sid: int) -> None:
    """Kill and reap the run's orphans: adopted by the subreaper, found by the session the run started.

    Each run leads a session of its own (start_new_session), which its descendants keep unless
    they call setsid; those that do are still caught by the pids cgroup (root), the PID namespace
    (bubblewrap) or the container (Docker). Other runs of this process lead other sessions, so
    they are never touched here.
    """
    for child in psutil.Process().children(recursive=True):
        try:
            if os.getsid(child.pid) != sid:
                continue
            child.kill()
            child.wait(timeout=2)
        except (ProcessLookupError, psutil.NoSuchProcess, psutil.TimeoutExpired, ChildProcessError):
            pass
