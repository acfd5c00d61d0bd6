"""Shared fixtures: a tiny copy of the DiscoPOP template, and running the real CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DISCOPOP = ROOT / "templates" / "discopop"

# The tests' homes keep the [private] values template.toml ships (base.secrets): the pinned metrics
# (DPO's 1.3824, ...) and the held-out splits the tests rebuild are theirs. Set SCIENTIST_SECRETS=drawn
# to run the suite on drawn secrets; a test of the drawing itself asks for the `drawn_secrets` fixture.
os.environ.setdefault("SCIENTIST_SECRETS", "shipped")


@pytest.fixture
def drawn_secrets(monkeypatch):
    """Homes first used in this test draw their secrets at random, as a user's do."""
    monkeypatch.setenv("SCIENTIST_SECRETS", "drawn")

# Small enough that a sandboxed run takes seconds on 2 cores, big enough to learn something.
TINY = {
    "seeds": "2",
    "time_s": "40",
    "memory_mb": "1500",
    "betas": "[0.1, 1.0]",
    "train_prompts": "16",
    "pairs": "256",
    "steps": "40",
    "batch_size": "128",
    "eval_prompts": "64",
}


def copy_template(dest: Path, name: str, settings: dict[str, str]) -> Path:
    """Copy templates/<name> to dest/<name>, setting each `key = value` line of its toml (each must exist once)."""
    root = dest / name
    shutil.copytree(ROOT / "templates" / name, root, ignore=shutil.ignore_patterns("__pycache__"))
    toml = (root / "template.toml").read_text()
    for key, value in settings.items():
        toml, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", toml)
        assert n == 1, key
    (root / "template.toml").write_text(toml)
    return root


def write_tiny_template(dest: Path, **overrides: str) -> Path:
    """Copy the DiscoPOP template to dest/discopop with TINY settings (and overrides) in its toml."""
    return copy_template(dest, "discopop", {**TINY, **overrides})


@pytest.fixture(scope="session")
def tiny_templates(tmp_path_factory) -> Path:
    """A templates folder holding a tiny DiscoPOP, shared by the whole session."""
    dest = tmp_path_factory.mktemp("templates")
    write_tiny_template(dest)
    return dest


@pytest.fixture(scope="session")
def home(tmp_path_factory) -> Path:
    """A scientist home shared by the session, so data and compilation caches are reused."""
    return tmp_path_factory.mktemp("home")


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def scientist(*args: str, timeout: float = 300) -> Result:
    """Run the real `scientist` command line in a subprocess, as a user would."""
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}
    p = subprocess.run([sys.executable, "-m", "scientist", *args], capture_output=True, text=True,
                       timeout=timeout, env=env, cwd=ROOT)
    return Result(p.returncode, p.stdout, p.stderr)


@pytest.fixture
def candidate(tmp_path):
    """Write a candidate loss file: candidate(name, source) -> path."""

    def make(name: str, source: str) -> Path:
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        return path

    return make


DPO_SOURCE = (DISCOPOP / "loss.py").read_text()


@pytest.fixture
def echo_template(tmp_path) -> Path:
    """The grokking fixture with an evaluator that returns what result.json in the work folder says."""
    root = tmp_path / "grokking"
    shutil.copytree(ROOT / "tests" / "fixtures" / "grokking", root)
    (root / "evaluate.py").write_text(
        "import json\n\n"
        "def prepare(data_dir, config, private, seeds):\n    pass\n\n"
        "def evaluate(work, config, private, seeds):\n"
        "    return json.loads((work / 'result.json').read_text())\n")
    return root


@pytest.fixture(scope="session")
def docker_host():
    """A real Docker engine with the sandbox image built by `scientist sandbox build` (see docker_engine.py).

    Where no engine can be had, the Docker cases are skipped with the reason, except in CI
    (CI=true), where `make test` installs what they need and a missing engine is a failure.
    Under pytest-xdist the workers share one engine: the first starts it (under a file lock) and
    none stops it, since another worker may still be using it; a later session reuses it.
    """
    import docker_engine
    from filelock import FileLock

    shared = "PYTEST_XDIST_WORKER" in os.environ
    with FileLock("/tmp/scientist-test-docker.start.lock"):
        try:
            host, proc = docker_engine.start_engine()
        except docker_engine.EngineUnavailable as e:
            (pytest.fail if os.environ.get("CI") else pytest.skip)(str(e))
        try:
            docker_engine.ensure_base_image(host)
            docker_engine.build_test_image(host)
        except docker_engine.EngineUnavailable as e:
            docker_engine.stop_engine(proc)
            pytest.fail(str(e))
    yield host
    if not shared:
        docker_engine.stop_engine(proc)


@pytest.fixture
def sandbox_args(request) -> list[str]:
    """The CLI flags that select a sandbox backend; parametrize indirectly with its name."""
    if request.param == "docker":
        from docker_engine import TEST_IMAGE

        host = request.getfixturevalue("docker_host")
        return ["--sandbox", "docker", "--image", TEST_IMAGE, "--docker-host", host]
    return ["--sandbox", request.param]


@pytest.fixture(scope="session")
def open_eval(tmp_path_factory):
    """One `scientist eval --sandbox bwrap` of OPEN's tiny config (test_open): Adam, test_open's bad rules, and
    test_sealed_open's hostile rule (Adam's update with attacks in its import). Both modules read it, so in one
    process the tiny OPEN baseline is trained once (under xdist, once per worker that runs either module).
    """
    from test_open import BAD, OPEN, write_tiny_open
    from test_sealed_open import ATTACKS

    tmp = tmp_path_factory.mktemp("open_eval")
    root = write_tiny_open(tmp)
    sources = {"adam": (OPEN / "candidates" / "adam.py").read_text(), **BAD}
    sources["hostile"] = sources["adam"] + ATTACKS
    paths = []
    for name, source in sources.items():
        paths.append(tmp / f"{name}.py")
        paths[-1].write_text(source)
    home, out = tmp / "home", tmp / "runs"
    r = scientist("eval", "--template", str(root), "--sandbox", "bwrap", "--home", str(home), "--out", str(out),
                  *[a for p in paths for a in ("-c", str(p))], timeout=900)
    return root, home, out, r
