"""Sandbox backends: how a harness command is wrapped before `limits.supervise` runs it.

- bwrap: bubblewrap namespaces (network, PID, IPC, UTS, user), a read-only view
  of only the interpreter, its libraries and the shared workload code, the run's
  work folder as the only writable mount besides a private /tmp, killed with
  its parent.
- process: a plain subprocess with the same rlimits and cleanup but no
  isolation; only when asked for by name, never by `auto`.

The Docker backend comes in sandbox/docker (see issue 6); `auto` will prefer it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sandbox.limits import Limits, Outcome, supervise

BACKENDS = ("auto", "bwrap", "process")
# Inside bwrap, paths are fixed so nothing about the host's layout leaks into a run.
WORK = "/sandbox/work"
CACHE = "/sandbox/jax-cache"
LIBS = "/opt/scientist"


class SandboxUnavailable(Exception):
    """The requested backend cannot run on this machine; the message says what to install."""


@dataclass(frozen=True)
class Job:
    """What to run in the sandbox: a script in the work folder, with its read-only libraries."""

    script: str               # file name inside work
    work: Path                # the only writable folder the job sees
    libs_parent: Path         # folder whose packages (jax_workloads) go on PYTHONPATH, read-only
    packages: tuple[str, ...] = ("jax_workloads",)
    jax_cache: Path | None = None


def bwrap_available() -> bool:
    """Whether bubblewrap is installed and can create namespaces here."""
    exe = shutil.which("bwrap")
    if exe is None:
        return False
    probe = subprocess.run([exe, "--unshare-all", "--ro-bind", "/", "/", "true"], capture_output=True)
    return probe.returncode == 0


def resolve(name: str) -> str:
    """Turn a --sandbox choice into a concrete backend, or explain what is missing."""
    if name not in BACKENDS:
        raise SandboxUnavailable(f"unknown sandbox {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "process":
        return name
    if bwrap_available():
        return "bwrap"
    raise SandboxUnavailable(
        "no sandbox available: install bubblewrap (apt-get install bubblewrap) and make sure user "
        "namespaces are allowed, or pass --sandbox process to run candidates unisolated"
    )


def _base_env(pythonpath: str, home: str, cache: str | None) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "PYTHONPATH": pythonpath,
        "PYTHONHASHSEED": "0",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "JAX_PLATFORMS": "cpu",
        "LANG": "C.UTF-8",
    }
    if cache is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = cache
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    return env


def _python() -> str:
    return sys.executable


def _bwrap_argv(job: Job) -> tuple[list[str], dict[str, str]]:
    # The private /tmp comes first: a later mount of it would hide binds below /tmp
    # (a checkout or virtual environment under /tmp, as CI's clones are).
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--tmpfs", "/tmp",
            "--ro-bind", "/usr", "/usr"]
    for link in ("bin", "lib", "lib64", "sbin"):
        target = Path("/") / link
        if target.is_symlink():
            args += ["--symlink", str(target.readlink()), str(target)]
        elif target.is_dir():
            args += ["--ro-bind", str(target), str(target)]
    # The interpreter: the virtual environment and the Python it was made from.
    for prefix in sorted({Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}):
        args += ["--ro-bind", str(prefix), str(prefix)]
    for pkg in job.packages:
        args += ["--ro-bind", str(job.libs_parent / pkg), f"{LIBS}/{pkg}"]
    args += ["--bind", str(job.work), WORK, "--proc", "/proc", "--dev", "/dev"]
    cache = None
    if job.jax_cache is not None:
        args += ["--bind", str(job.jax_cache), CACHE]
        cache = CACHE
    args += ["--chdir", WORK, "--clearenv"]
    env = _base_env(LIBS, "/tmp", cache)
    for key, value in env.items():
        args += ["--setenv", key, value]
    args += [_python(), "-s", f"{WORK}/{job.script}"]
    return args, {}


def run(backend: str, job: Job, limits: Limits, log_path: Path) -> Outcome:
    """Run the job's script under the chosen backend and limits."""
    if job.jax_cache is not None:
        job.jax_cache.mkdir(parents=True, exist_ok=True)
    if backend == "bwrap":
        argv, env = _bwrap_argv(job)
    elif backend == "process":
        home = job.work / ".home"
        home.mkdir(exist_ok=True)
        env = _base_env(str(job.libs_parent), str(home), str(job.jax_cache) if job.jax_cache else None)
        argv = [_python(), "-s", str(job.work / job.script)]
    else:
        raise SandboxUnavailable(f"unknown sandbox backend {backend!r}")
    return supervise(argv, env=env, cwd=job.work, limits=limits, log_path=log_path)
