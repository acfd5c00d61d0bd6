"""Installed from a wheel, as pip, pipx or a git URL install it, the tool finds everything it ships.

The wheel is built offline from a copy of the checkout and installed into a fresh virtual
environment, which gets the project environment's dependencies as hard links (copies where
links cannot be made) but not this project's editable install. Links, not symlinks or .pth
files: the bubblewrap sandbox mounts only the running interpreter's environment, and links
out of it would not resolve in there. Every command then runs from an empty folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, write_tiny_template

SITE = Path(sysconfig.get_paths()["purelib"])  # the project environment's site-packages
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", ".scientist", "build", "*.egg-info", "__pycache__", "*.pyc",
                                     ".pytest_cache", ".ruff_cache", ".whl")


def _run(argv: list, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                       env={**env, "COLUMNS": "200", "TERM": "dumb"})
    assert p.returncode == 0, f"{argv} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built without network from a copy of the checkout (no build/ left in it)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCES)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "--disable-pip-version-check", "-w", tmp / "dist", src], cwd=tmp)
    (path,) = (tmp / "dist").glob("jax_scientist-*.whl")
    return path


def _editable_install(entry: Path) -> bool:
    """This project's editable install in site-packages, which the fresh environment must not see."""
    if entry.name.startswith(("__editable__", "jax_scientist")):
        return True
    return entry.suffix == ".pth" and str(ROOT) in entry.read_text(errors="replace")


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed; its bin folder."""
    env = tmp_path_factory.mktemp("venv")
    venv.create(env, symlinks=True, with_pip=False)
    site = env / SITE.relative_to(sys.prefix)
    entries = [str(p) for p in SITE.iterdir() if not _editable_install(p)]
    if subprocess.run(["cp", "-al", *entries, str(site)], capture_output=True).returncode != 0:
        for p in map(Path, entries):  # another file system: real copies
            if p.is_dir():
                shutil.copytree(p, site / p.name, symlinks=True, dirs_exist_ok=True)
            else:
                shutil.copy2(p, site / p.name)
    _run([env / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index",
          "--disable-pip-version-check", wheel], cwd=env)
    return env / "bin"


def test_the_wheel_holds_every_template_file_and_the_data_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"scientist_templates/{p.relative_to(ROOT / 'templates')}" for p in (ROOT / "templates").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert "scientist_templates/discopop/template.toml" in shipped
    assert shipped <= names, sorted(shipped - names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    for data in ("papers/paper.tex.j2", "papers/references.bib", "sandbox/Dockerfile", "sandbox/Dockerfile.cuda",
                 "sandbox/requirements.txt", "reviewer/fewshot/example_paper.txt",
                 "reviewer/fewshot/example_paper.json"):
        assert data in names
    # Every module of the packages: a new subpackage must be added to pyproject.toml's list.
    for pkg in ("base", "scientist", "sandbox", "jax_workloads", "reviewer", "papers"):
        modules = {str(p.relative_to(ROOT)) for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts}
        assert modules <= names, sorted(modules - names)


def test_the_installed_tool_finds_its_files_in_site_packages(installed, tmp_path):
    probe = """if True:
        import base, json, papers, reviewer, sandbox, scientist, scientist_templates
        from papers.render import PAPERS_DIR
        from reviewer.review import default_fewshot
        from sandbox.image import SANDBOX_DIR
        from base.template import DEFAULT_TEMPLATES_DIR, PROJECT_ROOT
        mods = [m.__file__ for m in (base, papers, reviewer, sandbox, scientist, scientist_templates)]
        files = [DEFAULT_TEMPLATES_DIR / "discopop" / "template.toml", PROJECT_ROOT / "jax_workloads" / "sealed.py",
                 PAPERS_DIR / "paper.tex.j2", PAPERS_DIR / "references.bib", SANDBOX_DIR / "Dockerfile",
                 SANDBOX_DIR / "Dockerfile.cuda", SANDBOX_DIR / "requirements.txt", *default_fewshot()]
        print(json.dumps({"modules": mods, "files": [str(f) for f in files if f.is_file()], "n": len(files)}))
    """
    found = json.loads(_run([installed / "python", "-c", probe], cwd=tmp_path).stdout)
    site = str(installed.parent / "lib")
    assert found["n"] == 8 and len(found["files"]) == 8, found
    for path in found["modules"] + found["files"]:
        assert path.startswith(site) and not path.startswith(str(ROOT)), path


def test_the_installed_command_lists_evaluates_and_runs_with_bwrap(installed, tmp_path):
    cwd, home, tiny = tmp_path / "cwd", tmp_path / "home", tmp_path / "tiny"
    cwd.mkdir()
    write_tiny_template(tiny)
    scientist = installed / "scientist"

    listed = _run([scientist, "templates", "--home", home], cwd=cwd).stdout
    assert all(name in listed for name in ("discopop", "diffusion", "open", "transformer", "kinetix", "navix"))
    assert "the bundled templates" in " ".join(_run([scientist, "eval", "--help"], cwd=cwd).stdout.split())  # wrapped

    evaluated = _run([scientist, "eval", "--template", "discopop", "--templates-dir", tiny, "--seeds", "2",
                      "--sandbox", "bwrap", "--home", home], cwd=cwd)
    assert "reward_gain" in evaluated.stdout and "n=2" in evaluated.stdout, evaluated.stdout

    out = tmp_path / "out"
    _run([scientist, "run", "--template", "discopop", "--templates-dir", tiny, "--proposer", "evolve", "--ideas", "1",
          "--runs", "1", "--sandbox", "bwrap", "--home", home, "--out", out], cwd=cwd, timeout=600)
    summary = json.loads((out / "summary.json").read_text())
    (idea,) = summary["ideas"]
    assert idea["paper"]["status"] == "ok" and Path(idea["paper"]["pdf"]).is_file(), idea
    assert list(cwd.iterdir()) == [], "nothing is written into the current folder"
