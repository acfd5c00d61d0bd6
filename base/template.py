"""Experiment templates: `templates/<name>/template.toml`, validated, and their content hash.

A template folder holds the editable module(s) the agent may change, the fixed
harness that trains with them inside the sandbox, and a trusted evaluator that
never runs inside the sandbox. The contract is written down in docs/templates.md.
"""

from __future__ import annotations

import ast
import hashlib
import json
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from base.records import Idea
from sandbox.limits import Limits

# Found as installed packages: the checkout's folders in an editable install, site-packages' from a wheel.
# The bundled templates: templates/ in the repository, installed as the package scientist_templates.
DEFAULT_TEMPLATES_DIR = Path(resources.files("scientist_templates"))
# Shared library code that the harness imports inside the sandbox; part of every template's hash.
WORKLOADS_DIR = Path(resources.files("jax_workloads"))
# The folder holding jax_workloads, which the sandbox puts on its PYTHONPATH.
PROJECT_ROOT = WORKLOADS_DIR.parent
# Part of every template's content hash: raise it when the framework's scoring changes what a run's
# final_info.json holds (2: intervals of bounded metrics), so no run scored the old way is reused.
SCORING_VERSION = 2


class TemplateError(Exception):
    """A template is missing or malformed; the message is one line for the user."""


class Metric(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    direction: Literal["max", "min"]
    description: str = ""
    # The range the metric cannot leave (an accuracy: 0 and 1); intervals are then reported within it.
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Metric:
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        return self


class TemplateSpec(BaseModel):
    """The validated contents of a template.toml."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    metric: Metric
    editable: list[str] = Field(min_length=1)
    harness: list[str] = Field(min_length=1)
    entrypoint: str
    evaluator: str
    seeds: int = Field(gt=0)
    limits: Limits = Limits()
    config: dict[str, Any] = {}
    # Settings only the trusted evaluator sees; never written into the sandbox.
    private: dict[str, Any] = {}

    @field_validator("editable", "harness")
    @classmethod
    def _relative(cls, files: list[str]) -> list[str]:
        for f in files:
            if Path(f).is_absolute() or ".." in Path(f).parts:
                raise ValueError(f"{f!r} must be a path inside the template folder")
        return files


@dataclass(frozen=True)
class Template:
    """A loaded template: its folder and validated spec."""

    root: Path
    spec: TemplateSpec

    @property
    def name(self) -> str:
        return self.spec.name

    def editable_sources(self) -> dict[str, str]:
        """The shipped editable files (the baseline candidate), by relative path."""
        return {f: (self.root / f).read_text() for f in self.spec.editable}

    def seed_ideas(self) -> list[Idea]:
        """The template's example ideas (seed_ideas.json), which start every session's archive of ideas."""
        path = self.root / "seed_ideas.json"
        if not path.is_file():
            return []
        try:
            return [Idea.model_validate(i) for i in json.loads(path.read_text())]
        except (ValueError, TypeError) as e:
            raise TemplateError(f"{path}: not a list of ideas ({' '.join(str(e).split())[:200]})") from None

    def read_candidate(self, path: Path) -> dict[str, str]:
        """A user's candidate: a file replacing the one editable file, or a folder holding every editable file."""
        editable = self.spec.editable
        if not path.exists():
            raise TemplateError(f"candidate {path} does not exist")
        if path.is_dir():
            missing = [f for f in editable if not (path / f).is_file()]
            if missing:
                raise TemplateError(f"candidate folder {path} lacks the editable file(s) {', '.join(missing)}")
            return {f: (path / f).read_text() for f in editable}
        if len(editable) != 1:
            raise TemplateError(f"template {self.name} has several editable files ({', '.join(editable)}); "
                                "pass a folder holding them as --candidate")
        try:
            return {editable[0]: path.read_text()}
        except UnicodeDecodeError:
            raise TemplateError(f"candidate {path} is not a text file") from None

    def content_hash(self) -> str:
        """Hash of what computes the template's results (see computing_files()), and of its settings.

        Papers-only files (latex/, README.md, prompt.md, figures.py, search_space.py, candidates/)
        and shared code the template does not import leave it unchanged, so editing them reuses runs.
        """
        settings = self.spec.model_dump(mode="json", include={"metric", "editable", "harness", "entrypoint",
                                                               "evaluator", "limits", "config", "private"})
        settings["metric"].pop("description", None)
        h = hashlib.sha256(f"scoring-{SCORING_VERSION}".encode())
        h.update(json.dumps(settings, sort_keys=True).encode())
        for name, digest in sorted(self.file_hashes().items()):
            h.update(f"{name}:{digest}".encode())
        return h.hexdigest()[:16]

    def file_hashes(self) -> dict[str, str]:
        """The files that compute the template's results, each with the hash of its contents."""
        return {name: hashlib.sha256(path.read_bytes()).hexdigest()[:16]
                for name, path in self.computing_files().items()}

    def computing_files(self) -> dict[str, Path]:
        """The editable, harness and evaluator files, and every module they import, transitively.

        Imports are read from the source (never executed): modules of the template's own folder
        (`import confine`) and of the shared jax_workloads package. Keys are the names shown to
        users: paths inside the template, or jax_workloads/<module>.py.
        """
        found: dict[str, Path] = {}
        todo = [self.root / f for f in (*self.spec.editable, *self.spec.harness, self.spec.evaluator)]
        while todo:
            path = todo.pop()
            name = (str(path.relative_to(self.root)) if path.is_relative_to(self.root)
                    else str(path.relative_to(PROJECT_ROOT)))
            if name in found or not path.is_file():
                continue
            found[name] = path
            if path.suffix == ".py":
                todo += self._imported_files(path)
        return found

    def _imported_files(self, path: Path) -> list[Path]:
        try:
            tree = ast.parse(path.read_text())
        except SyntaxError:  # an editable file may not parse (a candidate's problem, found when it runs)
            return []
        modules: list[str] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.append(node.module)
                modules += [f"{node.module}.{a.name}" for a in node.names]  # from package import module
        files = []
        for module in modules:
            parts = module.split(".")
            if parts[0] == WORKLOADS_DIR.name:
                candidates = [WORKLOADS_DIR.joinpath(*parts[1:]).with_suffix(".py"), WORKLOADS_DIR / "__init__.py"]
            else:
                candidates = [self.root.joinpath(*parts).with_suffix(".py")]
            files += [c for c in candidates if c.is_file()]
        return files


def _field_path(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)


def load_template(name_or_path: str, templates_dir: Path = DEFAULT_TEMPLATES_DIR) -> Template:
    """Load and validate a template by name (under templates_dir) or by folder path."""
    root = Path(name_or_path)
    if not (root / "template.toml").is_file():
        root = templates_dir / name_or_path
    toml_path = root / "template.toml"
    if not toml_path.is_file():
        known = ", ".join(list_template_names(templates_dir)) or "none"
        raise TemplateError(f"unknown template {name_or_path!r} (known: {known})")
    try:
        raw = tomllib.loads(toml_path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise TemplateError(f"{toml_path}: not valid TOML: {e}") from None
    try:
        spec = TemplateSpec.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = _field_path(err["loc"]) or "(top level)"
        problem = "missing" if err["type"] == "missing" else err["msg"]
        raise TemplateError(f"{toml_path}: field '{field}': {problem}") from None
    for f in [*spec.editable, *spec.harness, spec.evaluator]:
        if not (root / f).is_file():
            raise TemplateError(f"{toml_path}: file {f!r} named in the template does not exist")
    if spec.entrypoint not in spec.harness:
        raise TemplateError(f"{toml_path}: field 'entrypoint': {spec.entrypoint!r} is not among 'harness'")
    template = Template(root=root.resolve(), spec=spec)
    template.seed_ideas()  # a malformed seed_ideas.json is the template's error, said when it is loaded
    return template


def list_template_names(templates_dir: Path = DEFAULT_TEMPLATES_DIR) -> list[str]:
    """Names of the folders under templates_dir that hold a template.toml."""
    if not templates_dir.is_dir():
        return []
    return sorted(p.parent.name for p in templates_dir.glob("*/template.toml"))
