"""Experiment templates: `templates/<name>/template.toml`, validated, and their content hash.

A template folder holds the editable module(s) the agent may change, the fixed
harness that trains with them inside the sandbox, and a trusted evaluator that
never runs inside the sandbox. The contract is written down in docs/templates.md.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Found as installed packages: the checkout's folders in an editable install, site-packages' from a wheel.
# The bundled templates: templates/ in the repository, installed as the package scientist_templates.
DEFAULT_TEMPLATES_DIR = Path(resources.files("scientist_templates"))
# Shared library code that the harness imports inside the sandbox; part of every template's hash.
WORKLOADS_DIR = Path(resources.files("jax_workloads"))
# The folder holding jax_workloads, which the sandbox puts on its PYTHONPATH.
PROJECT_ROOT = WORKLOADS_DIR.parent


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


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    time_s: float = Field(600.0, gt=0)
    memory_mb: int = Field(4096, gt=0)
    eval_time_s: float = Field(300.0, gt=0)
    processes: int = Field(1024, ge=16)        # tasks, threads included (JAX starts one per core and more)
    disk_mb: int = Field(4096, gt=0)           # all the run may write in its folder
    tmp_mb: int = Field(256, gt=0)             # its private /tmp
    output_mb: int = Field(256, gt=0)          # its stdout and stderr, in all (the log keeps head and tail)
    cpus: float | None = Field(None, gt=0)     # docker: CPU share; default all


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

    def content_hash(self) -> str:
        """Hash of every file of the template and of the shared workload code."""
        h = hashlib.sha256()
        for base in (self.root, WORKLOADS_DIR):
            for path in sorted(p for p in base.rglob("*") if p.is_file()):
                if "__pycache__" in path.parts or path.suffix == ".pyc":
                    continue
                h.update(str(path.relative_to(base)).encode())
                h.update(path.read_bytes())
        return h.hexdigest()[:16]


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
    return Template(root=root.resolve(), spec=spec)


def list_template_names(templates_dir: Path = DEFAULT_TEMPLATES_DIR) -> list[str]:
    """Names of the folders under templates_dir that hold a template.toml."""
    if not templates_dir.is_dir():
        return []
    return sorted(p.parent.name for p in templates_dir.glob("*/template.toml"))
