"""Building the image the Docker backend runs: `scientist sandbox build`.

The build context is made here: the Dockerfile, a lock of sandbox/requirements.txt
pinned to the versions installed next to this tool, and the wheels for exactly
the base image's Python, C library and machine, fetched by the host's own pip
(with its index, mirrors and certificates). The Docker build itself then needs
no network at all; `--base` swaps the registry image for any local one with python3.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import docker

# The Dockerfiles and requirements.txt, shipped as package data.
SANDBOX_DIR = Path(resources.files("sandbox"))
DEFAULT_BASE = "python:3.11-slim"
LOCK_LABEL = "org.scientist.lock"
_PROBE = ("import json, platform, sys; "
          "print(json.dumps([sys.version_info[0], sys.version_info[1], platform.libc_ver()[1], platform.machine()]))")


class ImageError(Exception):
    """The image cannot be built; the message says why and what to do."""


@dataclass(frozen=True)
class BasePython:
    """What the base image's python3 is, which decides the wheels to fetch."""

    major: int
    minor: int
    glibc: str
    machine: str

    def platforms(self) -> list[str]:
        """pip --platform tags this interpreter accepts: every manylinux up to its glibc."""
        top = int(self.glibc.split(".")[1])
        return [f"manylinux_2_{i}_{self.machine}" for i in range(top, 4, -1)] + [f"manylinux2014_{self.machine}"]


NO_DEPS = "no-deps"  # a requirements.txt line whose comment starts with this is installed without its dependencies


def requirements(cuda: bool, no_deps: bool = False) -> list[str]:
    """sandbox/requirements.txt, each pinned to the version installed here when it is.

    no_deps: the lines marked `# no-deps` instead (packages whose declared dependencies are tools the sandbox does
    not need, navix's linters and trackers: their real runtime dependencies are listed on lines of their own).
    """
    lines = []
    for line in (SANDBOX_DIR / "requirements.txt").read_text().splitlines():
        name = line.split("#")[0].strip()
        if not name or (line.partition("#")[2].strip().startswith(NO_DEPS)) != no_deps:
            continue
        extra = "[cuda12]" if cuda and name == "jax" else ""
        try:
            lines.append(f"{name}{extra}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{name}{extra}")
    return lines


def constraints() -> list[str]:
    """Every distribution installed here, pinned: the image's dependencies resolve as ours did."""
    pins = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() != "scientist":
            pins[name.lower()] = f"{name}=={dist.version}"
    return sorted(pins.values())


def probe_base(client: docker.DockerClient, base: str, say: Callable[[str], None]) -> BasePython:
    """Make sure the base image is here (pulling it if not) and read its python3."""
    import docker

    try:
        client.images.get(base)
    except docker.errors.ImageNotFound:
        say(f"pulling {base}")
        try:
            client.images.pull(base)
        except docker.errors.APIError as e:
            raise ImageError(f"cannot pull the base image {base} ({e.explanation or e}); on a site without "
                             "registry access pass --base with a local image that has python3") from None
    probe = client.containers.create(base, ["python3", "-c", _PROBE], network_disabled=True)
    try:  # created, then started: a base without python3 fails at start, and is removed all the same
        probe.start()
        if probe.wait(timeout=120)["StatusCode"] != 0:
            raise ValueError("python3 failed")
        major, minor, glibc, machine = json.loads(probe.logs(stderr=False).decode().strip().splitlines()[-1])
    except (docker.errors.APIError, ValueError, IndexError) as e:
        raise ImageError(f"the base image {base} has no working python3 ({type(e).__name__}); "
                         "choose a base with python3 and its venv module") from None
    finally:
        probe.remove(force=True)
    if not glibc.startswith("2."):
        raise ImageError(f"the base image {base} has no glibc (musl-based images cannot run jaxlib's wheels)")
    return BasePython(major, minor, glibc, machine)


def fetch_wheels(py: BasePython, lock: list[str], dest: Path, say: Callable[[str], None],
                 no_deps: list[str] = ()) -> None:
    """Download the locked wheels (and pip's own) for the base's interpreter into dest, and the no_deps pins'
    own wheels, without their dependencies, into dest's sibling nodeps/ (the Dockerfile installs them so).

    A dependency published only as a source archive (kinetix-env's moviepy, say) has no
    wheel to download for another interpreter: it is built into a wheel here, which is
    right for the pure-Python packages such archives hold, and the download is retried.
    """
    dest.mkdir(parents=True, exist_ok=True)
    lock_file, constraints_file = dest.parent / "requirements.lock", dest.parent / "constraints.txt"
    lock_file.write_text("\n".join(lock) + "\n")
    pins = constraints()
    constraints_file.write_text("\n".join(pins) + "\n")
    platforms = [a for tag in py.platforms() for a in ("--platform", tag)]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    argv = [*pip, "download", "--progress-bar", "off", "--dest", str(dest), "--find-links", str(dest),
            "--only-binary=:all:", "--implementation", "cp", "--python-version", f"{py.major}.{py.minor}",
            *platforms, "-r", str(lock_file), "-c", str(constraints_file), f"pip=={metadata.version('pip')}"]
    say(f"fetching wheels for Python {py.major}.{py.minor}, glibc {py.glibc}, {py.machine}")
    built: set[str] = set()
    while True:
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode == 0:
            break
        missing = _without_wheels(proc.stdout + proc.stderr) - built
        if not missing:
            last = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")][:1] or ["(no output)"]
            raise ImageError(f"pip could not fetch the sandbox's wheels: {last[0].strip()}")
        for name in sorted(missing):
            pin = next((p for p in pins if p.lower().startswith(name.lower() + "==")), name)
            say(f"building a wheel for {pin} (published as source only)")
            wheel = subprocess.run([*pip, "wheel", "--no-deps", "--wheel-dir", str(dest), pin],
                                   capture_output=True, text=True)
            if wheel.returncode != 0:
                raise ImageError(f"pip could not build a wheel for {pin}: {wheel.stderr.strip()[-200:]}")
        built |= missing
    nodeps = dest.parent / "nodeps"
    nodeps.mkdir(exist_ok=True)
    if no_deps:
        proc = subprocess.run([*argv[:argv.index("-r")], "--dest", str(nodeps), "--no-deps", *no_deps],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            last = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")][:1] or ["(no output)"]
            raise ImageError(f"pip could not fetch the sandbox's wheels: {last[0].strip()}")
    say(f"{len(list(dest.glob('*.whl'))) + len(list(nodeps.glob('*.whl')))} wheels ready")


def _without_wheels(output: str) -> set[str]:
    """Names pip found no wheel of, from its resolution error (pip splits it over stdout and stderr)."""
    names = set()
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if "no matching distributions available for your environment" in line:
            names |= {ln.strip() for ln in lines[i + 1:] if ln.startswith("    ") and ln.strip()}
        elif line.startswith("ERROR: Could not find a version that satisfies the requirement "):
            names.add(line.split()[-1].split("==")[0].split("(")[0])
    return {n for n in names if n.replace("-", "").replace("_", "").replace(".", "").isalnum()}


def build(client: docker.DockerClient, *, tag: str, cuda: bool = False, base: str = DEFAULT_BASE,
          force: bool = False, say: Callable[[str], None] = print) -> str:
    """Build the sandbox image as tag from base; return its id. Progress lines go to say.

    An image already tagged from the same base, Dockerfile and locked versions is up to
    date and kept (force rebuilds it): the build's inputs, not its bytes, decide.
    """
    import docker

    try:
        previous = client.images.get(tag)
    except docker.errors.ImageNotFound:
        previous = None
    py = probe_base(client, base, say)
    lock, no_deps = requirements(cuda), requirements(cuda, no_deps=True)
    dockerfile = (SANDBOX_DIR / ("Dockerfile.cuda" if cuda else "Dockerfile")).read_text()
    key = hashlib.sha256(json.dumps([dockerfile, lock, no_deps, constraints(), client.images.get(base).id,
                                     [py.major, py.minor, py.glibc, py.machine]]).encode()).hexdigest()
    if previous is not None and previous.labels.get(LOCK_LABEL) == key and not force:
        say(f"{tag} is up to date (same base, Dockerfile and versions); --force rebuilds it")
        return previous.id
    with tempfile.TemporaryDirectory(prefix="scientist-image-") as tmp:
        ctx = Path(tmp)
        (ctx / "Dockerfile").write_text(dockerfile)
        fetch_wheels(py, lock, ctx / "wheels", say, no_deps)
        image_id = None
        try:
            for event in client.api.build(path=str(ctx), tag=tag, buildargs={"BASE": base}, network_mode="none",
                                          rm=True, forcerm=True, decode=True, pull=False, labels={LOCK_LABEL: key}):
                if "error" in event:
                    raise ImageError(f"docker build failed: {event['error'].strip().splitlines()[-1]}")
                line = event.get("stream", "").rstrip()
                if line.startswith("Step ") or line.startswith("Successfully"):
                    say(line)
                image_id = event.get("aux", {}).get("ID", image_id)
        except docker.errors.APIError as e:
            raise ImageError(f"docker build failed: {e.explanation or e}") from None
    if image_id is None:
        raise ImageError("docker build ended without an image")
    if previous is not None and previous.id != image_id:
        try:  # the tag moved on: drop the image it named, unless a container still uses it
            client.images.remove(previous.id)
        except docker.errors.APIError:
            pass
    return image_id
