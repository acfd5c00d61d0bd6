"""Sandbox backends: choosing one (`resolve`) and running a job in it (`run`).

- docker: a throwaway container of the project's image (sandbox/container.py).
- bwrap: bubblewrap namespaces (network, PID, IPC, UTS, user), a read-only view
  of only the interpreter, its libraries and the shared workload code, the run's
  work folder as the only writable mount besides a private /tmp, killed with
  its parent; supervised by `limits.supervise`.
- process: a plain subprocess with the same rlimits and cleanup but no
  isolation; only when asked for by name, never by `auto`.

All three see the same paths (/sandbox/work, /sandbox/jax-cache, /opt/scientist),
so a harness cannot tell them apart and nothing of the host's layout leaks in.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from sandbox.errors import SandboxUnavailable
from sandbox.limits import Limits, Outcome, supervise

BACKENDS = ("auto", "docker", "bwrap", "process")
CPU_IMAGE = "scientist-sandbox:cpu"
CUDA_IMAGE = "scientist-sandbox:cuda"
# Inside bwrap, paths are fixed so nothing about the host's layout leaks into a run.
WORK = "/sandbox/work"
CACHE = "/sandbox/jax-cache"
LIBS = "/opt/scientist"


@dataclass(frozen=True)
class Job:
    """What to run in the sandbox: a script in the work folder, with its read-only libraries."""

    script: str               # file name inside work
    work: Path                # the only writable folder the job sees
    libs_parent: Path         # folder whose packages (jax_workloads) go on PYTHONPATH, read-only
    packages: tuple[str, ...] = ("jax_workloads",)
    jax_cache: Path | None = None
    cpus: tuple[int, ...] | None = None   # the cores it may use (a worker slot's share); None: all
    xla_optimize: bool = True             # False: compile without XLA's optimisations ([compile] optimize)


@dataclass(frozen=True)
class Sandbox:
    """A resolved backend and its settings, from the command line."""

    backend: str                      # 'docker', 'bwrap' or 'process'
    image: str = CPU_IMAGE            # docker only
    docker_host: str | None = None    # docker only; None: the local daemon's socket
    gpus: str | None = None           # None: CPU only; 'all' or '0,1': those GPUs
    note: str = ""                    # why auto chose what it chose, when worth saying


def bwrap_available() -> bool:
    """Whether bubblewrap is installed and can create namespaces here."""
    exe = shutil.which("bwrap")
    if exe is None:
        return False
    probe = subprocess.run([exe, "--unshare-all", "--ro-bind", "/", "/", "true"], capture_output=True)
    return probe.returncode == 0


def resolve(name: str, *, image: str | None = None, docker_host: str | None = None,
            gpus: str | None = None) -> Sandbox:
    """Turn a --sandbox choice into a concrete backend, or explain what is missing.

    auto: docker when a daemon answers and has the image, else bubblewrap, else a refusal
    naming what to install. A daemon without the image is not an error for auto (the image
    is built once, on purpose, with `scientist sandbox build`); it is said in `note`.
    """
    from sandbox import container

    if name not in BACKENDS:
        raise SandboxUnavailable(f"unknown sandbox {name!r}; choose one of {', '.join(BACKENDS)}")
    image = image or (CUDA_IMAGE if gpus else CPU_IMAGE)
    build = "scientist sandbox build" + (" --cuda" if gpus else "")
    if name == "process":
        return Sandbox("process", gpus=gpus)
    if name == "bwrap":
        if bwrap_available():
            return Sandbox("bwrap", gpus=gpus)
        raise SandboxUnavailable("bubblewrap cannot run here: install it (apt-get install bubblewrap) and "
                                 "allow user namespaces, or use --sandbox docker")
    answers = container.daemon_answers(docker_host)
    if name == "docker":
        if not answers:
            raise SandboxUnavailable(f"no Docker daemon answers at {docker_host or container.DEFAULT_HOST}: start "
                                     "it (or set DOCKER_HOST / --docker-host), or use --sandbox bwrap")
        if not container.image_present(docker_host, image):
            raise SandboxUnavailable(f"the Docker image {image} is missing: build it with `{build}`")
        return Sandbox("docker", image, docker_host, gpus)
    if answers and container.image_present(docker_host, image):
        return Sandbox("docker", image, docker_host, gpus)
    note = f"Docker answers but has no image {image} (`{build}` makes it); using bubblewrap" if answers else ""
    if bwrap_available():
        return Sandbox("bwrap", gpus=gpus, note=note)
    raise SandboxUnavailable(
        "no sandbox available: install Docker (apt-get install docker.io) and run `" + build + "`, or install "
        "bubblewrap (apt-get install bubblewrap); --sandbox process runs candidates unisolated"
    )


def _base_env(pythonpath: str, home: str, cache: str | None, gpus: str | None = None,
              path: str = "/usr/local/bin:/usr/bin:/bin", xla_optimize: bool = True) -> dict[str, str]:
    env = {
        "PATH": path,
        "HOME": home,
        "PYTHONPATH": pythonpath,
        "PYTHONHASHSEED": "0",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "JAX_PLATFORMS": "cuda,cpu" if gpus else "cpu",
        "LANG": "C.UTF-8",
    }
    if gpus and gpus != "all":
        env["CUDA_VISIBLE_DEVICES"] = gpus
    if cache is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = cache
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    env.update(xla_env(xla_optimize))
    return env


def xla_env(optimize: bool) -> dict[str, str]:
    """The environment that makes JAX compile without XLA's optimisations when optimize is False ([compile])."""
    return {} if optimize else {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}


def _python() -> str:
    return sys.executable


def _bwrap_argv(job: Job, gpus: str | None, tmp_mb: int) -> list[str]:
    # The private /tmp comes first: a later mount of it would hide binds below /tmp
    # (a checkout or virtual environment under /tmp, as CI's clones are).
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--size", str(tmp_mb * 2**20),
            "--tmpfs", "/tmp",
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
    # /dev read-only but for a small /dev/shm: bwrap's /dev and root are tmpfs, RAM that a
    # candidate could otherwise fill without it showing in any process's resident memory.
    args += ["--bind", str(job.work), WORK, "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
             "--size", str(tmp_mb * 2**20), "--tmpfs", "/dev/shm"]
    if gpus:  # the NVIDIA device nodes; the driver's libraries are under /usr already
        args += [a for dev in sorted(Path("/dev").glob("nvidia*")) for a in ("--dev-bind", str(dev), str(dev))]
    cache = None
    if job.jax_cache is not None:
        args += ["--bind", str(job.jax_cache), CACHE]
        cache = CACHE
    args += ["--remount-ro", "/", "--chdir", WORK, "--clearenv"]
    env = _base_env(LIBS, "/tmp", cache, gpus, xla_optimize=job.xla_optimize)
    for key, value in env.items():
        args += ["--setenv", key, value]
    args += [_python(), "-s", f"{WORK}/{job.script}"]
    return args


def run(sandbox: Sandbox, job: Job, limits: Limits, log_path: Path, cancel: threading.Event | None = None) -> Outcome:
    """Run the job's script under the chosen backend and limits; a set `cancel` stops it (KeyboardInterrupt)."""
    # Mount sources must be absolute, whatever folder the caller runs in.
    job = replace(job, work=job.work.resolve(), libs_parent=job.libs_parent.resolve(),
                       jax_cache=job.jax_cache.resolve() if job.jax_cache is not None else None)
    if job.jax_cache is not None:
        job.jax_cache.mkdir(parents=True, exist_ok=True)
    if sandbox.backend == "docker":
        from sandbox import container

        mounts = {WORK: (job.work, True), **{f"{LIBS}/{p}": (job.libs_parent / p, False) for p in job.packages}}
        if job.jax_cache is not None:
            mounts[CACHE] = (job.jax_cache, True)
        env = _base_env(LIBS, "/tmp", CACHE if job.jax_cache else None, sandbox.gpus,
                        path="/opt/venv/bin:/usr/local/bin:/usr/bin:/bin", xla_optimize=job.xla_optimize)
        return container.run(["python", "-s", f"{WORK}/{job.script}"], image=sandbox.image,
                             host=sandbox.docker_host, gpus=sandbox.gpus, env=env, mounts=mounts, workdir=WORK,
                             watch_dir=job.work, limits=limits, log_path=log_path, cpus=job.cpus, cancel=cancel)
    if sandbox.backend == "bwrap":
        argv, env = _bwrap_argv(job, sandbox.gpus, limits.tmp_mb), {}
    elif sandbox.backend == "process":
        home = job.work / ".home"
        home.mkdir(exist_ok=True)
        env = _base_env(str(job.libs_parent), str(home), str(job.jax_cache) if job.jax_cache else None,
                        sandbox.gpus, xla_optimize=job.xla_optimize)
        argv = [_python(), "-s", str(job.work / job.script)]
    else:
        raise SandboxUnavailable(f"unknown sandbox backend {sandbox.backend!r}")
    return supervise(argv, env=env, cwd=job.work, limits=limits, log_path=log_path, watch_dir=job.work,
                     cpus=job.cpus, cancel=cancel)
