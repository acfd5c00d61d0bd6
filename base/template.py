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
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

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


class Resources(BaseModel):
    """What one run needs reserved on the machine that runs it ([resources]), as an executor such as Ray asks.

    The sandbox enforces [limits]; these are what a scheduler sets aside, so runs packed onto one
    machine do not starve each other.
    """

    model_config = ConfigDict(extra="forbid")
    cpus: float = Field(1.0, gt=0)
    gpus: float = Field(0.0, ge=0)
    # None until the spec is validated, which fills in limits.memory_mb: what a run may use before it is stopped.
    memory_mb: int | None = Field(None, gt=0)

    @field_validator("cpus", "gpus")
    @classmethod
    def _schedulable(cls, n: float) -> float:
        # Schedulers share a device below 1 (Ray's num_gpus=0.5), but cannot hand out 1.5 of one.
        if n > 1 and n != int(n):
            raise ValueError(f"{n:g} is neither a share below 1 nor a whole number")
        return n


class Compile(BaseModel):
    """How XLA compiles a run's programs ([compile]), in the sandbox and in the sealed evaluator alike."""

    model_config = ConfigDict(extra="forbid")
    # false: without XLA's optimisations (JAX's jax_disable_most_optimizations): compiles about 2x faster and runs
    # slower, for settings whose programs run for less time than they take to compile (a smoke profile, the tests'
    # tiny copies). Floating-point results differ (other fusion and operation order), so it is part of the settings'
    # hash.
    optimize: bool = True


class Profile(BaseModel):
    """An overlay of a template's settings for one kind of machine ([profiles.<name>], e.g. cpu or gpu).

    Tables are merged key by key (config.train.steps changes one setting of [config.train]); any
    other value replaces the base's. [config] and [private] are free-form, so a profile may only
    change keys they already have: a typo is an error rather than a new, unread setting.
    """

    model_config = ConfigDict(extra="forbid")
    seeds: int | None = None
    limits: dict[str, Any] = {}
    resources: dict[str, Any] = {}
    compile: dict[str, Any] = {}
    config: dict[str, Any] = {}
    private: dict[str, Any] = {}


class Screen(Profile):
    """The evaluation cascade's screening stage ([screen]): an overlay like a profile's, laid over the settings as a
    run has them (Template.screened), and how far below the bar a screen may be and still be promoted
    (base.cascade.decide: a fraction of the bar's screen)."""

    margin: float = Field(0.05, ge=0, lt=1)


class TemplateSpec(BaseModel):
    """The validated contents of a template.toml (with a profile laid over it once one is applied)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    metric: Metric
    editable: list[str] = Field(min_length=1)
    harness: list[str] = Field(min_length=1)
    entrypoint: str
    # The trusted script that imports the candidate in a sandbox of its own and exports its functions
    # (jax_workloads.exported); the harness then trains with those exports and never imports the candidate.
    tracer: str  # imports the candidate and exports its functions; the only file that may (see _check_separation)
    evaluator: str
    seeds: int = Field(gt=0)
    limits: Limits = Limits()
    config: dict[str, Any] = {}
    # Settings only the trusted evaluator sees; never written into the sandbox.
    private: dict[str, Any] = {}
    resources: Resources = Field(Resources(), validate_default=True)  # validated: fills in memory_mb
    compile: Compile = Compile()
    profiles: dict[str, Profile] = {}
    # A cheap screening stage ([screen]: fewer seeds, a shorter run), laid over the settings as they are (after
    # the profile) by Template.screened(); the evaluation cascade (--cascade) runs it before a full evaluation.
    screen: Screen | None = None
    # The profile laid over the settings above (Template.with_profile); None: the file's own settings.
    profile: str | None = None
    # Whether [screen] is laid over them (Template.screened): these settings make screens, never results.
    screened: bool = False

    @field_validator("profile")
    @classmethod
    def _applied_not_written(cls, name: str | None) -> str | None:
        if name is not None:  # with_profile sets it without validation; a file claiming one would lie
            raise ValueError("is set by applying a profile (--profile), not written in template.toml")
        return name

    @field_validator("screened")
    @classmethod
    def _screened_not_written(cls, screened: bool) -> bool:
        if screened:  # screened() sets it without validation
            raise ValueError("is set by screening (--cascade), not written in template.toml")
        return screened

    @field_validator("resources")
    @classmethod
    def _memory_reserved(cls, res: Resources, info: ValidationInfo) -> Resources:
        """Reserve limits.memory_mb unless [resources] says otherwise, and never less than a run may use."""
        limits = info.data.get("limits")
        if limits is None:  # [limits] itself is wrong, which is the error reported
            return res
        if res.memory_mb is None:
            # Built with the fields the file set, so memory_mb stays unset in it: a profile that raises
            # limits.memory_mb then raises the reservation too.
            return Resources.model_construct(_fields_set=res.model_fields_set,
                                             **{**res.__dict__, "memory_mb": limits.memory_mb})
        if res.memory_mb < limits.memory_mb:
            raise ValueError(f"memory_mb ({res.memory_mb}) is below limits.memory_mb ({limits.memory_mb}), "
                             "which a run may use before it is stopped")
        return res

    @field_validator("editable", "harness", "tracer")
    @classmethod
    def _relative(cls, files: list[str] | str) -> list[str] | str:
        for f in [files] if isinstance(files, str) else files:
            if Path(f).is_absolute() or ".." in Path(f).parts:
                raise ValueError(f"{f!r} must be a path inside the template folder")
        return files


@dataclass(frozen=True)
class Template:
    """A loaded template: its folder and validated spec."""

    root: Path
    spec: TemplateSpec
    device: str = "cpu"  # what its runs compute on: "gpu" when the sandbox is given GPUs (--gpus)

    @property
    def name(self) -> str:
        return self.spec.name

    def for_hardware(self, profile: str | None, gpus: str | None) -> Template:
        """This template as a run on this hardware computes it: --profile, else the profile the GPUs given
        call for (default_profile), and the device its runs compute on."""
        return replace(self.with_profile(profile or default_profile(gpus)), device="gpu" if gpus else "cpu")

    def with_profile(self, name: str) -> Template:
        """This template with [profiles.<name>] laid over its settings; its spec.profile records the name.

        "cpu" needs no [profiles.cpu]: without one it is the template's own settings, which are sized
        for a CPU. An unknown profile, or an overlay the template's settings cannot take, is a
        TemplateError of one line naming the file and the field.
        """
        spec, toml_path = self.spec, self.root / "template.toml"
        if spec.profile is not None:
            if spec.profile == name:
                return self
            raise TemplateError(f"template {self.name} already carries profile {spec.profile!r}; "
                                f"load it again to apply {name!r}")
        if name not in spec.profiles and name != "cpu":
            known = ", ".join(sorted({*spec.profiles, "cpu"}))
            raise TemplateError(f"{toml_path}: unknown profile {name!r} (known: {known})")
        overlay = spec.profiles.get(name, Profile())
        return replace(self, spec=self._overlaid(overlay, f"profiles.{name}").model_copy(update={"profile": name}))

    def screened(self) -> Template:
        """This template as its screens compute it: [screen] laid over its settings as they are (after the profile).

        A screen is a cheap first look at a candidate (fewer seeds, a shorter run) that decides whether it
        gets the full evaluation (scientist.cascade); its spec.screened marks it, so its content hash, and
        with it every screen's run key, differs from the full evaluation's. A TemplateError of one line
        when the template declares no [screen], or its settings cannot take it.
        """
        spec = self.spec
        if spec.screened:
            return self
        if spec.screen is None:
            raise TemplateError(f"template {self.name} declares no [screen] (a cheaper overlay of its settings: "
                                "seeds, config), which --cascade needs; docs/templates.md says how to add one")
        screened = self._overlaid(spec.screen, "screen")
        return replace(self, spec=screened.model_copy(update={"profile": spec.profile, "screened": True}))

    def _overlaid(self, overlay: Profile, field: str) -> TemplateSpec:
        """The spec with an overlay ([profiles.<name>] or [screen]) laid over it, validated again."""
        spec, toml_path = self.spec, self.root / "template.toml"
        # The settings as the file wrote them, so defaults that follow others (resources.memory_mb) follow again.
        merged = spec.model_dump(exclude_unset=True, exclude={"profile", "screened"})
        if overlay.seeds is not None:
            merged["seeds"] = overlay.seeds
        try:
            for table, strict in (("limits", False), ("resources", False), ("compile", False), ("config", True),
                                  ("private", True)):
                merged[table] = _merge(merged.get(table, {}), getattr(overlay, table), table, strict)
        except _OverlayError as e:
            raise TemplateError(f"{toml_path}: field '{field}.{e.field}': {e.problem}") from None
        try:
            return TemplateSpec.model_validate(merged)
        except ValidationError as e:
            raise TemplateError(f"{toml_path}: {_problem(e, field)}") from None

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

        The settings are those of the applied profile, if any (its config, limits and private, and
        whether it asks for or is given a GPU); the profile's name is not hashed, so "cpu", whose overlay is
        empty, reuses the runs of the template's own settings. Seeds are in the run key instead. The
        [profiles] and [screen] tables are not hashed: declaring a screen leaves every full run's key as it
        was; a screened template (screened()) hashes its overlaid settings and a mark of its own, so a screen
        never stands in for a full evaluation, even of equal settings.

        Papers-only files (latex/, README.md, prompt.md, figures.py, search_space.py, candidates/)
        and shared code the template does not import leave it unchanged, so editing them reuses runs.
        """
        settings = self.spec.model_dump(mode="json", include={"metric", "editable", "harness", "entrypoint", "tracer",
                                                               "evaluator", "limits", "config", "private"})
        settings["metric"].pop("description", None)
        if self.device == "gpu" or self.spec.resources.gpus > 0:
            # A GPU computes other floating-point results than a CPU from the same settings: never the same runs.
            settings["device"] = "gpu"
        if not self.spec.compile.optimize:  # other floating-point results; the default leaves every hash as it was
            settings["compile"] = {"optimize": False}
        if self.spec.screened:
            settings["screen"] = True
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
        todo = [self.root / f for f in (*self.spec.editable, *self.spec.harness, self.spec.tracer, self.spec.evaluator)]
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


class _OverlayError(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def _merge(base: dict, overlay: dict, path: str, strict: bool) -> dict:
    """base with overlay laid over it: tables merged key by key, any other value replaced.

    strict (the free-form [config] and [private]): overlay may only change keys base has, each to
    a value of the same kind (an int where a float was is fine), so a typo cannot add a setting
    no code reads. Otherwise unknown keys are left to the spec's own validation.
    """
    merged = dict(base)
    for key, value in overlay.items():
        field = f"{path}.{key}"
        if key not in base:
            if strict:
                raise _OverlayError(field, f"[{path}] has no {key!r}: a profile changes settings, it adds none")
            merged[key] = value
        elif isinstance(base[key], dict) or isinstance(value, dict):
            if not isinstance(value, dict):
                raise _OverlayError(field, f"[{field}] is a table: give one holding the keys to change")
            if not isinstance(base[key], dict):
                raise _OverlayError(field, "a table where the base setting is a single value")
            merged[key] = _merge(base[key], value, field, strict)
        elif strict and type(value) is not type(base[key]) and (type(value), type(base[key])) != (int, float):
            got, want = type(value).__name__, type(base[key]).__name__
            raise _OverlayError(field, f"type {got}, but the base setting's is {want}")
        else:
            merged[key] = value
    return merged


def _problem(e: ValidationError, prefix: str = "") -> str:
    """The first error of a validation, as `field 'a.b': problem` (the field under prefix, if given)."""
    err = e.errors()[0]
    parts = ([prefix] if prefix else []) + [str(part) for part in err["loc"]]
    field = ".".join(parts) or "(top level)"
    problem = "missing" if err["type"] == "missing" else err["msg"].removeprefix("Value error, ")
    return f"field '{field}': {problem}"


def default_profile(gpus: str | None) -> str:
    """The profile that fits the hardware a run gets: "gpu" when GPUs are given (--gpus all, 0,1), else "cpu"."""
    return "gpu" if gpus else "cpu"


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
        raise TemplateError(f"{toml_path}: {_problem(e)}") from None
    for f in [*spec.editable, *spec.harness, spec.tracer, spec.evaluator]:
        if not (root / f).is_file():
            raise TemplateError(f"{toml_path}: file {f!r} named in the template does not exist")
    if spec.entrypoint not in spec.harness:
        raise TemplateError(f"{toml_path}: field 'entrypoint': {spec.entrypoint!r} is not among 'harness'")
    _check_separation(root, spec, toml_path)
    template = Template(root=root.resolve(), spec=spec)
    template.seed_ideas()  # a malformed seed_ideas.json is the template's error, said when it is loaded
    for name in spec.profiles:  # and so is a profile its settings cannot take, though no run asked for it yet
        profiled = template.with_profile(name)
        if spec.screen is not None:  # and a screen that one of them cannot take
            profiled.screened()
    if spec.screen is not None:
        template.screened()
    return template


def _check_separation(root: Path, spec: TemplateSpec, toml_path: Path) -> None:
    """The contract of sealed training: the candidate's Python runs only in the tracer's sandbox.

    The runner never puts the editable files where the harness runs, so a harness that imports one
    could not work; saying so when the template loads is kinder than a failed run. The tracer is the
    only file that imports them, and it is no editable file itself.
    """
    if spec.tracer in spec.editable or spec.tracer in spec.harness:
        raise TemplateError(f"{toml_path}: field 'tracer': {spec.tracer!r} must be neither editable nor a harness file")
    editable = {Path(f).with_suffix("").as_posix().replace("/", ".") for f in spec.editable}
    for f in spec.harness:
        if not f.endswith(".py"):
            continue
        try:
            tree = ast.parse((root / f).read_text())
        except SyntaxError as e:
            raise TemplateError(f"{toml_path}: harness file {f!r} has a syntax error at line {e.lineno}") from None
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            imported = editable.intersection(names)
            if imported:
                raise TemplateError(f"{toml_path}: harness file {f!r} imports the editable module "
                                    f"{sorted(imported)[0]!r}; only the tracer ({spec.tracer}) may import it")


def list_template_names(templates_dir: Path = DEFAULT_TEMPLATES_DIR) -> list[str]:
    """Names of the folders under templates_dir that hold a template.toml."""
    if not templates_dir.is_dir():
        return []
    return sorted(p.parent.name for p in templates_dir.glob("*/template.toml"))
