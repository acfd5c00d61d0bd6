"""Resource limits and the supervised launch that every backend shares.

The launch puts the child in its own session (so the whole process group can be
killed), applies rlimits before exec, kills the child if its parent dies,
enforces the wall-clock limit from outside and watches the resident memory of
the whole process tree, killing it past the limit. An address-space rlimit is a
backstop only: JAX reserves about a gigabyte of virtual memory at import, so the
tree's resident memory is the limit that means what users expect.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_VA_HEADROOM_MB = 8192
_POLL_S = 0.05


@dataclass(frozen=True)
class Limits:
    """Per-run limits: wall time, resident memory of the process tree, process count."""

    time_s: float
    memory_mb: int
    max_processes: int = 4096
    max_file_mb: int = 2048


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

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.out_of_memory


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def become_subreaper() -> None:
    """Adopt orphaned descendants, so a child that detaches is still found and killed."""
    _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _preexec(limits: Limits):
    def apply() -> None:
        _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        va = (limits.memory_mb + _VA_HEADROOM_MB) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (va, va))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
        fsize = limits.max_file_mb * 2**20
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


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


def supervise(argv: list[str], *, env: dict[str, str], cwd: Path, limits: Limits, log_path: Path,
              tail_chars: int = 4000) -> Outcome:
    """Run argv under the limits, stdout and stderr to log_path; return how it ended."""
    become_subreaper()
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    started = time.time()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_preexec(limits))
        ps = psutil.Process(proc.pid)
        timed_out = oom = False
        peak = 0.0
        procs: list[psutil.Process] = [ps]
        try:
            while proc.poll() is None:
                procs = _tree(ps) or procs
                peak = max(peak, _tree_rss_mb(procs))
                if peak > limits.memory_mb:
                    oom = True
                elif time.time() - started > limits.time_s:
                    timed_out = True
                if oom or timed_out:
                    _kill_tree(proc, procs)
                    break
                time.sleep(_POLL_S)
        finally:
            # Runs on success, on a limit, and when the parent is interrupted (Ctrl-C).
            _kill_tree(proc, _tree(ps) + procs)
            proc.wait()
            _reap_new_children(before)
    return Outcome(proc.returncode, timed_out, oom, time.time() - started, started, peak,
                   _tail(log_path, tail_chars))


def _reap_new_children(before: set[int]) -> None:
    """Kill and reap descendants that appeared during the run: orphans the subreaper adopted.

    Runs are supervised one at a time per process; parallel runs use one worker
    process each, so a child that was not there before the launch is this run's.
    """
    for child in psutil.Process().children(recursive=True):
        if child.pid in before:
            continue
        try:
            child.kill()
            child.wait(timeout=2)
        except (psutil.NoSuchProcess, psutil.TimeoutExpired, ChildProcessError):
            pass


def _tail(path: Path, chars: int) -> str:
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - chars))
        return f.read().decode("utf-8", "replace")
