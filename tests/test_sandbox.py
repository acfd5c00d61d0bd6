"""Choosing a sandbox (`--sandbox auto` and friends) and building the Docker image: real engine, real CLI."""

import io
import tarfile

from conftest import scientist
from docker_engine import TEST_IMAGE

DEAD = "unix:///tmp/no-docker-here.sock"


def test_auto_takes_docker_when_the_daemon_answers_with_the_image(docker_host):
    r = scientist("sandbox", "check", "--docker-host", docker_host, "--image", TEST_IMAGE)
    assert r.code == 0 and f"sandbox: docker (image {TEST_IMAGE})" in r.out, r.text


def test_auto_falls_back_to_bubblewrap_and_says_why(docker_host):
    r = scientist("sandbox", "check", "--docker-host", DEAD)
    assert r.code == 0 and "sandbox: bwrap" in r.out and "note" not in r.err, r.text
    r = scientist("sandbox", "check", "--docker-host", docker_host, "--image", "scientist-sandbox:never-built")
    assert r.code == 0 and "sandbox: bwrap" in r.out
    assert "Docker answers but has no image scientist-sandbox:never-built" in r.err


def test_docker_asked_for_but_unavailable_is_one_line_and_exit_2(docker_host):
    r = scientist("sandbox", "check", "--sandbox", "docker", "--docker-host", DEAD)
    assert r.code == 2 and "no Docker daemon answers at unix:///tmp/no-docker-here.sock" in r.err
    r = scientist("sandbox", "check", "--sandbox", "docker", "--docker-host", docker_host,
                  "--image", "scientist-sandbox:never-built")
    assert r.code == 2 and "scientist sandbox build" in r.err and "Traceback" not in r.text
    r = scientist("sandbox", "check", "--sandbox", "podman")
    assert r.code == 2 and "unknown sandbox 'podman'" in r.err
    r = scientist("sandbox", "check", "--sandbox", "process")
    assert r.code == 0 and "without isolation" in r.err


def test_build_refuses_a_base_it_cannot_use(docker_host):
    import docker

    # No registry is reachable: a base that is not here cannot be pulled.
    r = scientist("sandbox", "build", "--base", "no-such-base:1", "--tag", "scientist-sandbox:x",
                  "--docker-host", docker_host)
    assert r.code == 1 and "cannot pull the base image no-such-base:1" in r.err and "--base" in r.err, r.text
    # A base without python3 (an empty file system).
    empty = io.BytesIO()
    with tarfile.open(fileobj=empty, mode="w") as tar:
        info = tarfile.TarInfo("etc/hostname")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"box\n"))
    client = docker.DockerClient(base_url=docker_host)
    client.api.import_image_from_data(empty.getvalue(), repository="scientist-test-empty", tag="1")
    r = scientist("sandbox", "build", "--base", "scientist-test-empty:1", "--tag", "scientist-sandbox:x",
                  "--docker-host", docker_host)
    assert r.code == 1 and "has no working python3" in r.err and "Traceback" not in r.text, r.text
    assert client.containers.list(all=True, filters={"ancestor": "scientist-test-empty:1"}) == []
    client.images.remove("scientist-test-empty:1", force=True)


def test_build_without_a_daemon_is_one_line():
    r = scientist("sandbox", "build", "--docker-host", DEAD)
    assert r.code == 2 and "no Docker daemon answers" in r.err and "Traceback" not in r.text


def test_a_local_containers_refused_forks_are_read_from_its_cgroup(docker_host):
    """The Docker backend's process limit reads the kernel's count of refused forks, as bwrap's does: the task
    count of a fork bomb hovers under the limit, where the daemon's stats, sampled, may never see it."""
    import time

    import docker

    from sandbox.container import _pids_cgroup
    from sandbox.limits import forks_refused

    client = docker.DockerClient(base_url=docker_host)
    container = client.containers.run(TEST_IMAGE, ["sleep", "60"], detach=True, pids_limit=16, network_mode="none")
    try:
        pid = client.api.inspect_container(container.id)["State"]["Pid"]
        # 40 sleepers against a limit of 16, beside the container's own process, which keeps its cgroup when the
        # shell dies of a refused fork
        container.exec_run(["sh", "-c", "for i in $(seq 40); do sleep 30 & done"], detach=True)
        cgroup = _pids_cgroup(pid, container.id)
        assert cgroup is not None and (cgroup / "pids.events").is_file()
        assert _pids_cgroup(pid, "0" * 64) is None  # a process that is not this container's
        deadline = time.time() + 30
        while not forks_refused(cgroup) and time.time() < deadline:
            time.sleep(0.1)
        assert forks_refused(cgroup), (cgroup / "pids.events").read_text()
    finally:
        container.remove(force=True)
    assert not forks_refused(cgroup)  # its cgroup went with it
