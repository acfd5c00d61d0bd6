"""Shared fixtures: a tiny copy of the DiscoPOP template, and running the real CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
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


def copy_template(dest: Path, name: str, settings: dict[str, str], optimize: bool = False) -> Path:
    """Copy templates/<name> to dest/<name>, setting each `key = value` line of its toml (each must exist once).

    The copy compiles without XLA's optimisations unless optimize ([compile] optimize = false, as a smoke profile
    would): its programs run for far less time than they take to compile, and compiling is most of a tiny run.
    """
    root = dest / name
    shutil.copytree(ROOT / "templates" / name, root, ignore=shutil.ignore_patterns("__pycache__"))
    toml = (root / "template.toml").read_text()
    for key, value in settings.items():
        toml, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", toml)
        assert n == 1, key
    (root / "template.toml").write_text(toml if optimize else unoptimized(toml))
    return root


def unoptimized(toml: str) -> str:
    """A template.toml's text with `[compile] optimize = false`, as the first table (the others keep their order)."""
    assert "[compile]" not in toml
    first = re.search(r"(?m)^\[", toml)
    assert first, "a template.toml has tables"
    return toml[:first.start()] + "[compile]\noptimize = false\n\n" + toml[first.start():]


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


# Test modules by their time in the last measured suite (BENCHMARKS.md 16), costliest first. Under
# `--dist loadscope` each module goes whole to the next free worker, so the long ones start early and the short
# ones fill the end, instead of a long module starting last while the other worker has nothing left. Modules not
# named keep their collection order after these. test_sealed_open reads what test_open's first test makes
# (open_eval), so it is not named: it comes late, when that is made.
COSTLIEST_FIRST = ("test_kinetix", "test_eval", "test_campaign", "test_open", "test_run",
                   "test_cascade", "test_scale", "test_papers", "test_sealed_recipes", "test_transformer",
                   "test_navix", "test_synthenv", "test_synthenv_fidelity", "test_hades", "test_hades_fidelity",
                   "test_reuse", "test_sealed_kinetix", "test_lab_templates", "test_hostile", "test_diffusion",
                   "test_ppo", "test_kinetix_fidelity")


# Last of all: the real model's llama.cpp server runs two threads, so beside another worker its session took 428 s,
# alone at the end 101 s (BENCHMARKS.md 16).
RUN_LAST = ("test_real_model",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the modules costliest first (COSTLIEST_FIRST), RUN_LAST last, each module's tests in their own order
    but its Docker tests last; start making the Docker engine in the background when a Docker test is among them.

    The engine's start and the images' build take minutes on a fresh machine (BENCHMARKS.md 16): with a module's
    Docker tests at its end, its other tests run meanwhile instead of waiting for them.
    """
    rank = {name: i for i, name in enumerate(COSTLIEST_FIRST)}
    rank |= {name: len(rank) + 1 for name in RUN_LAST}
    items.sort(key=lambda item: (rank.get(item.module.__name__ if item.module else "", len(COSTLIEST_FIRST)),
                                 _needs_docker(item)))
    if not config.option.collectonly and any(_needs_docker(item) for item in items):
        _prepare_docker_in_background(config)


def _needs_docker(item: pytest.Item) -> bool:
    params = getattr(item, "callspec", None)
    return "docker_host" in getattr(item, "fixturenames", ()) or (params is not None
                                                                  and "docker" in params.params.values())


def _prepare_docker_in_background(config: pytest.Config) -> None:
    """docker_engine.prepare() in a process of its own, once per pytest run (every xdist worker collects)."""
    if os.environ.get("SCIENTIST_TEST_DOCKER_HOST"):
        return  # an engine of the user's own: nothing to make
    root = session_root(config._tmp_path_factory)
    try:
        os.close(os.open(root / "docker-prepare.started", os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    with open(root / "docker-prepare.log", "wb") as log:
        subprocess.Popen([sys.executable, str(ROOT / "tests" / "docker_engine.py")], cwd=ROOT, stdout=log,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


# The caches every home of a pytest run shares (all xdist workers): what a fresh home would otherwise make again
# from the same inputs. Each entry is keyed by its inputs, as in any one home (runner.py), so sharing changes no
# result, only who computes it first:
# - jax-eval: the trusted evaluator's compiled programs (data preparation, scoring);
# - jax-sandbox: the training harness's compiled programs, one folder per (template, exports hash) as in any home,
#   so no candidate's training shares a cache with one that traced otherwise; the same candidate trained in many
#   homes compiles once;
# - data: the prepared data sets, named by the template's content hash, the [private] digest and the seeds.
SHARED_CACHES = ("jax-eval", "jax-sandbox", "data")
_SHARED_ROOT: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def shared_caches(tmp_path_factory) -> Path:
    """The run's shared caches, in the temporary folder all xdist workers of this run share."""
    shared = session_root(tmp_path_factory) / "shared-caches"
    for name in SHARED_CACHES:
        (shared / name).mkdir(parents=True, exist_ok=True)
    _SHARED_ROOT[:] = [shared]
    # The tests' own JAX (fixtures that trace, gate or train in process) compiles once per run too, not once per
    # worker: programs that take a second or more to compile are kept (JAX's default threshold).
    import jax

    jax.config.update("jax_compilation_cache_dir", str(shared / "jax-tests"))
    return shared


def warm_home(home: Path) -> Path:
    """Link a new home's caches to the run's shared ones (SHARED_CACHES); a cache the home has of its own stays."""
    if not _SHARED_ROOT or not home.is_absolute():
        return home
    for name in SHARED_CACHES:
        link = home / "cache" / name
        if not os.path.lexists(link):
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(_SHARED_ROOT[0] / name, target_is_directory=True)
    return home


def own_caches(home: Path, *names: str) -> Path:
    """Give a home caches of its own (all, or those named) for a test that searches, digests or races on them;
    warm_home keeps them and links the others."""
    for name in names or SHARED_CACHES:
        (home / "cache" / name).mkdir(parents=True, exist_ok=True)
    return home


def scientist(*args: str, timeout: float = 300) -> Result:
    """Run the real `scientist` command line in a subprocess, as a user would (its --home warmed, see warm_home)."""
    if "--home" in args:
        warm_home(Path(args[args.index("--home") + 1]))
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
    with FileLock(docker_engine.START_LOCK):  # held by the background preparation until it is done
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


def session_root(tmp_path_factory) -> Path:
    """The temporary folder of this pytest run that all its xdist workers share (each has its own below it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if "PYTEST_XDIST_WORKER" in os.environ else base


def once_per_run(tmp_path_factory, name: str, make: Callable[[Path], Result]) -> tuple[Path, Result]:
    """A folder that make(folder) fills by running a command, made once per pytest run and read by every worker.

    For what tests only read (or, like a home, may share as users share one): under xdist the first worker to ask
    makes it under a file lock while the other waits, then both get the folder and the command's Result.
    """
    from filelock import FileLock

    folder = session_root(tmp_path_factory) / name
    done = folder.with_name(f"{name}.result.json")
    with FileLock(f"{folder}.lock"):
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # left by a worker that died while making it
            folder.mkdir()
            done.write_text(json.dumps(make(folder).__dict__))
    return folder, Result(**json.loads(done.read_text()))


@pytest.fixture(scope="session")
def open_eval(tmp_path_factory):
    """One `scientist eval --sandbox bwrap` of OPEN's tiny config (test_open): Adam, test_open's bad rules, and
    test_sealed_open's hostile rule (Adam's update with attacks in its import). Both modules only read it, so the
    tiny OPEN baseline is trained once per pytest run (once_per_run).
    """
    from test_open import BAD, OPEN, write_tiny_open
    from test_sealed_open import ATTACKS

    def make(tmp: Path) -> Result:
        root = write_tiny_open(tmp)
        sources = {"adam": (OPEN / "candidates" / "adam.py").read_text(), **BAD}
        sources["hostile"] = sources["adam"] + ATTACKS
        paths = []
        for name, source in sources.items():
            paths.append(tmp / f"{name}.py")
            paths[-1].write_text(source)
        return scientist("eval", "--template", str(root), "--sandbox", "bwrap", "--home", str(tmp / "home"),
                         "--out", str(tmp / "runs"), *[a for p in paths for a in ("-c", str(p))], timeout=900)

    tmp, r = once_per_run(tmp_path_factory, "open_eval", make)
    return tmp / "open", tmp / "home", tmp / "runs", r


@pytest.fixture(scope="session")
def synthenv_eval(tmp_path_factory):
    """One `scientist eval --sandbox bwrap` of the synthenv template at test_synthenv's tiny size: the shipped bandit,
    a shipped candidate, the shipped bandit with test_synthenv's attacks in its import (hostile), and a candidate the
    tracer refuses; made once per pytest run (once_per_run)."""
    from test_synthenv import ATTACKS, BAD, CANDIDATE, SHIPPED, SYNTHENV, write_tiny_synthenv

    def make(tmp: Path) -> Result:
        root = write_tiny_synthenv(tmp)
        sources = {"baseline": SHIPPED, CANDIDATE: (SYNTHENV / "candidates" / f"{CANDIDATE}.py").read_text(),
                   "hostile": SHIPPED + ATTACKS, **BAD}
        paths = []
        for name, source in sources.items():
            paths.append(tmp / f"{name}.py")
            paths[-1].write_text(source)
        return scientist("eval", "--template", str(root), "--sandbox", "bwrap", "--home", str(tmp / "home"),
                         "--out", str(tmp / "runs"), *[a for p in paths for a in ("-c", str(p))], timeout=2400)

    tmp, r = once_per_run(tmp_path_factory, "synthenv_eval", make)
    return tmp / "synthenv", tmp / "home", tmp / "runs", r


@pytest.fixture(scope="session")
def navix_eval(tmp_path_factory):
    """One `scientist eval --sandbox bwrap` of the navix template at test_navix's tiny size: the shipped agent, the
    same agent with test_navix's attacks in its import (hostile), and a candidate the tracer refuses; made once per
    pytest run (once_per_run)."""
    from test_navix import ATTACKS, BAD, NAVIX, write_tiny_navix

    def make(tmp: Path) -> Result:
        root = write_tiny_navix(tmp)
        agent = (NAVIX / "agent.py").read_text()
        paths = []
        for name, source in {"baseline": agent, "hostile": agent + ATTACKS, **BAD}.items():
            paths.append(tmp / f"{name}.py")
            paths[-1].write_text(source)
        return scientist("eval", "--template", str(root), "--sandbox", "bwrap", "--home", str(tmp / "home"),
                         "--out", str(tmp / "runs"), *[a for p in paths for a in ("-c", str(p))], timeout=600)

    tmp, r = once_per_run(tmp_path_factory, "navix_eval", make)
    return tmp / "navix", tmp / "home", tmp / "runs", r


@pytest.fixture(scope="session")
def hades_eval(tmp_path_factory):
    """One `scientist eval --sandbox bwrap` of the hades template at test_hades's tiny size: the shipped distiller, a
    shipped candidate, the shipped distiller with test_hades's attacks in its import (hostile) and a candidate the
    tracer refuses; made once per pytest run (once_per_run)."""
    from test_hades import ATTACKS, BAD, BASELINE_SOURCE, CANDIDATE, HADES, write_tiny_hades

    def make(tmp: Path) -> Result:
        root = write_tiny_hades(tmp)
        sources = {"baseline": BASELINE_SOURCE, CANDIDATE: (HADES / "candidates" / f"{CANDIDATE}.py").read_text(),
                   "hostile": BASELINE_SOURCE + ATTACKS, **BAD}
        paths = []
        for name, source in sources.items():
            paths.append(tmp / f"{name}.py")
            paths[-1].write_text(source)
        return scientist("eval", "--template", str(root), "--sandbox", "bwrap", "--home", str(tmp / "home"),
                         "--out", str(tmp / "runs"), *[a for p in paths for a in ("-c", str(p))], timeout=1200)

    tmp, r = once_per_run(tmp_path_factory, "hades_eval", make)
    return tmp / "hades", tmp / "home", tmp / "runs", r
