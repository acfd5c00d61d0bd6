"""A real Docker engine and sandbox image for the tests and benchmarks, made on this machine.

No image registry is reachable here, so the base image is made with
`debootstrap --variant=minbase` (Debian with python3) and `docker import`; the
sandbox image is then built from it by the project's own `scientist sandbox build
--base`. The engine runs with the flags that work on these machines (no iptables,
no bridge); its data root persists, so later sessions reuse the images.

SCIENTIST_TEST_DOCKER_HOST points the tests at an engine of your own instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOCKET = "/tmp/scientist-test-docker.sock"
START_LOCK = "/tmp/scientist-test-docker.start.lock"  # held while the engine starts and the images are made
DATA_ROOT = Path("/var/lib/scientist-test-docker")
BASE_IMAGE = "scientist-test-base:bookworm"
TEST_IMAGE = "scientist-sandbox:test"
MIRROR = "http://deb.debian.org/debian"
ROOT = Path(__file__).resolve().parent.parent


class EngineUnavailable(Exception):
    """No Docker engine can be had on this machine; the message says why."""


def _answers(host: str) -> bool:
    from sandbox.container import daemon_answers

    return daemon_answers(host)


def start_engine() -> tuple[str, subprocess.Popen | None]:
    """(host, process): an engine answering at host; process is None when it was already running."""
    host = os.environ.get("SCIENTIST_TEST_DOCKER_HOST") or f"unix://{SOCKET}"
    if _answers(host):
        return host, None
    if os.environ.get("SCIENTIST_TEST_DOCKER_HOST"):
        raise EngineUnavailable(f"SCIENTIST_TEST_DOCKER_HOST={host} does not answer")
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.getuid() != 0:
        raise EngineUnavailable("the Docker tests need dockerd and root (apt-get install docker.io), "
                                "or SCIENTIST_TEST_DOCKER_HOST pointing at an engine")
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    log = open(DATA_ROOT.parent / "scientist-test-dockerd.log", "ab")
    proc = subprocess.Popen(
        [dockerd, "--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver=overlay2",
         "--data-root", str(DATA_ROOT), "--exec-root", "/tmp/scientist-test-docker-exec",
         "--pidfile", "/tmp/scientist-test-docker.pid", "--host", host],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise EngineUnavailable(f"dockerd exited with {proc.returncode}; see {log.name}")
        if _answers(host):
            return host, proc
        time.sleep(0.3)
    proc.kill()
    raise EngineUnavailable(f"dockerd did not answer within 60 s; see {log.name}")


def stop_engine(proc: subprocess.Popen | None) -> None:
    """Stop an engine that start_engine started (it unmounts its layers on the way out)."""
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ensure_base_image(host: str) -> None:
    """Make the Debian-with-python3 base image once (debootstrap + import), if the engine lacks it."""
    import docker

    client = docker.DockerClient(base_url=host, timeout=600)
    try:
        client.images.get(BASE_IMAGE)
        return
    except docker.errors.ImageNotFound:
        pass
    if shutil.which("debootstrap") is None:
        raise EngineUnavailable("making the test base image needs debootstrap (apt-get install debootstrap)")
    with tempfile.TemporaryDirectory(prefix="scientist-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        p = subprocess.run(["debootstrap", "--variant=minbase", "--include=python3", "bookworm", str(rootfs),
                            MIRROR], capture_output=True, text=True)
        if p.returncode != 0:
            raise EngineUnavailable(f"debootstrap failed: {(p.stdout + p.stderr).strip().splitlines()[-1:]}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        repo, tag = BASE_IMAGE.split(":")
        client.api.import_image_from_stream(tar.stdout, repository=repo, tag=tag)
        tar.wait()
    client.images.get(BASE_IMAGE)


def build_test_image(host: str) -> None:
    """Build the sandbox image from the base through the real `scientist sandbox build` (cached layers)."""
    p = subprocess.run([sys.executable, "-m", "scientist", "sandbox", "build", "--base", BASE_IMAGE,
                        "--tag", TEST_IMAGE, "--docker-host", host], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "COLUMNS": "200"})
    if p.returncode != 0:
        raise EngineUnavailable(f"scientist sandbox build failed: {(p.stdout + p.stderr).strip()[-500:]}")


def remaining_containers(host: str) -> list[str]:
    """Names of the containers the engine still has: after a test, there should be none of ours."""
    import docker

    from sandbox.container import OWNER_LABEL

    client = docker.DockerClient(base_url=host)
    return [c.name for c in client.containers.list(all=True, filters={"label": OWNER_LABEL})]


def prepare() -> None:
    """Start the engine and make both images, under START_LOCK: what the docker_host fixture does first.

    tests/conftest.py runs this in the background as soon as a pytest run has collected a Docker test, so the
    engine's start and the images' build (mostly waiting on the package mirror and the disk) overlap the tests
    that come before; the fixture then takes the same lock and finds everything made.
    """
    from filelock import FileLock

    with FileLock(START_LOCK):
        host, _ = start_engine()
        ensure_base_image(host)
        build_test_image(host)


if __name__ == "__main__":
    try:
        prepare()
    except EngineUnavailable as e:  # the fixture meets the same problem again and reports it
        sys.exit(f"docker_engine: {e}")
