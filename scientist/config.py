"""A session's settings, declared once: `scientist run`'s flags, a campaign file's keys, a night's run.

`Settings` is what a user chooses: one field per choice, with its default, its rule and its help.
The CLI builds `scientist run`'s options from these fields and a campaign file is validated by the
same model (`CampaignConfig` adds the campaign's own keys), so a setting added here is a flag and a
campaign key at once, and a night runs with exactly what its campaign file says. `RunConfig` is a
session as it runs: the settings resolved against the template and the machine (the sandbox chosen,
the seeds and workers counted) and where it writes. Every rule about settings lives here; a
violation is one line naming the flag (`--ideas must be at least 1`) or the campaign key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, model_validator

from base.llm import ModelSpec
from base.template import Template
from sandbox.backends import Sandbox

LITERATURE_SOURCES = ("semantic-scholar", "openalex")


class Limits(BaseModel):
    """When a session stops cleanly: at the first limit reached (`--budget-usd`, a campaign's [budget])."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    usd: float | None = Field(None, ge=0, description="Stop cleanly after spending this much (0: no model call; "
                                                      "an evolve run needs none).")
    minutes: float | None = Field(None, gt=0, description="Stop cleanly after this long.")
    evaluations: int | None = Field(None, ge=1, description="Stop cleanly after this many sandboxed runs (reused "
                                                            "ones are free).")


class Settings(BaseModel):
    """What a session does, as a user chooses it: `scientist run`'s flags, a campaign file's keys.

    `proposer` and `writer` left out are filled in from `model` (llm with one, else evolve and the
    template writer); `seeds` and `workers` left out are the template's and one per GPU given.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Filled in before validation (_defaults), so never None on a validated object.
    proposer: Literal["llm", "evolve", "random"] = Field(
        None, description="llm, evolve, or random (fresh samples of the search space: the control a search is "
                          "measured against; default: llm with --model, else evolve).")
    model: str | None = Field(None, description="Any litellm model string, e.g. openai/gpt-4o.")
    api_base: str | None = Field(None, description="OpenAI-compatible server URL (vLLM, Ollama, ...).")
    ideas: int = Field(3, ge=1, description="Number of ideas.")
    runs: int = Field(5, ge=1, description="Runs per idea.")
    attempts: int = Field(4, ge=1, description="Attempts per run before the idea fails.")
    reflections: int = Field(3, ge=0, description="Reflection rounds per idea (LLM proposer).")
    seeds: int | None = Field(None, ge=2, description="Seeds (default: the template's; an interval needs two).")
    test: Literal["welch", "paired"] = Field("welch", description="Test against the baseline: welch, or paired "
                                             "(runs share seeds and data, so seed-wise differences are tested).")
    seed: int = Field(0, description="Seed of the evolve proposer (a campaign's night n draws with seed + n).")
    retries: int = Field(5, ge=0, description="Retries of a model call on rate limits, timeouts and 5xx.")
    literature: Literal["semantic-scholar", "openalex"] | None = Field(
        None, description="Check each idea's novelty: semantic-scholar or openalex.")
    literature_url: str | None = Field(None, description="Base URL of the literature API.")
    writeup: bool = Field(True, description="Write a paper per idea (--no-writeup skips the paper stage).")
    writer: Literal["template", "llm"] = Field(None, description="template (no model) or llm (default: llm with "
                                                                 "the llm proposer).")
    review: bool = Field(True, description="Review each paper with the model (--no-review skips it).")
    review_ensemble: int = Field(5, ge=1, description="Reviews per paper.")
    review_reflections: int | None = Field(None, ge=0, description="Reflection rounds (default: the protocol's; "
                                                                   "see scientist review --reflections).")
    review_protocol: Literal["ai-scientist", "ensemble"] = Field(
        "ai-scientist", description="ai-scientist or ensemble (see scientist review --protocol).")
    # Structured outputs (base.llm): auto probes the server once and falls back to text; on requires them; off never.
    structured: Literal["auto", "on", "off"] = Field(
        "auto", description="JSON answers with the schema as response_format: auto (where the server takes one, "
                            "probed once and remembered in the store), on (required) or off.")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens per model answer (default: the server's; a "
                                                           "local server may otherwise write up to its context).")
    workers: int | None = Field(None, ge=1, description="Ideas in flight at once, each run on its own share of "
                                                        "the machine (default: one per GPU given, else 1).")
    executor: Literal["local", "ray"] = Field("local", description="local (this machine) or ray (a Ray cluster).")
    ray_address: str | None = Field(None, description="The Ray cluster to use with --executor ray, e.g. "
                                                      "10.0.0.1:6379 (default: a local Ray instance).")
    sandbox: Literal["auto", "docker", "bwrap", "process"] = Field(
        "auto", description="auto (docker if it answers with the image, else bwrap), docker, bwrap or process "
                            "(process: no isolation).")
    image: str | None = Field(None, description="Docker image (default scientist-sandbox:cpu; :cuda with --gpus).")
    gpus: str | None = Field(None, description="GPUs for the runs: all, or a list such as 0,1 (default: CPU only).")
    profile: str | None = Field(None, description="The template's [profiles.<name>] settings to run with (sizes, "
                                                  "seeds, limits; default: gpu with --gpus, else cpu).")
    cascade: bool = Field(False, description="Screen each candidate first with the template's [screen] (fewer "
                                             "seeds, a shorter run); only a screen within reach of the best so far "
                                             "gets the full evaluation (docs/agent.md).")
    budget: Limits = Limits()

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if v is not None or k not in ("proposer", "writer")}
            data.setdefault("proposer", "llm" if data.get("model") else "evolve")
            data.setdefault("writer", "llm" if data["proposer"] == "llm" else "template")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.proposer == "llm" and not self.model:
            raise ValueError("--proposer llm needs --model (any litellm model string, e.g. openai/gpt-4o)")
        if self.writer == "llm" and not self.model:
            raise ValueError("--writer must be template, or llm together with --model")
        if self.literature is not None and self.proposer != "llm":
            raise ValueError("--literature needs a model to judge novelty (--model)")
        if self.ray_address is not None and self.executor != "ray":
            raise ValueError("--ray-address needs --executor ray")
        return self

    def model_spec(self) -> ModelSpec | None:
        """The model every stage of the session talks to (proposer, writer, reviewer); None without one."""
        if not self.model:
            return None
        return ModelSpec(self.model, api_base=self.api_base, retries=self.retries, structured=self.structured,
                         max_tokens=self.max_tokens)


class RunConfig(Settings):
    """A session as it runs: the settings resolved against the template and the machine, and where it writes."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")

    template: Template
    sandbox: Sandbox                         # the backend chosen for the settings' sandbox, image and gpus
    seeds: int = Field(ge=2)                 # resolved: the template's when the settings left it out
    workers: int = Field(1, ge=1)            # resolved: one per GPU given when the settings left it out
    home: Path
    out_dir: Path
    campaign: str | None = None              # a night of this campaign: its archive is the campaign's
    literature_key: str | None = Field(None, exclude=True)  # from the environment; never written to disk
    # The campaign's confirmed best (what it is, its files), which the LLM proposer is shown; not in summary.json.
    best_known: tuple[str, dict[str, str]] | None = Field(None, exclude=True)

    @classmethod
    def of(cls, settings: Settings, **resolved: Any) -> RunConfig:
        """The settings with what was resolved for this session (template, sandbox, seeds, workers, folders)."""
        return cls(**{**settings.model_dump(include=set(Settings.model_fields)), **resolved})

    @model_validator(mode="after")
    def _has_search_space(self) -> RunConfig:
        if self.proposer != "llm" and not (self.template.root / "search_space.py").is_file():
            raise ValueError(f"template {self.template.name} has no search_space.py, which --proposer "
                             f"{self.proposer} needs")
        return self

    @model_validator(mode="after")
    def _has_screen(self) -> RunConfig:
        if self.cascade and self.template.spec.screen is None:
            raise ValueError(f"template {self.template.name} declares no [screen], which --cascade needs (a cheaper "
                             "overlay of its settings: seeds, config; docs/templates.md)")
        return self

    @field_serializer("template")
    def _template_name(self, template: Template) -> str:
        return template.name

    def to_json(self) -> dict:
        """The configuration as summary.json and the store record it (no secrets)."""
        return self.model_dump(mode="json")


def flag_error(err: ValidationError) -> str:
    """The first problem of a Settings or RunConfig as one line naming the flag, as the CLI reports it."""
    e = err.errors()[0]
    flag = "--" + "-".join(str(p) for p in e["loc"]).replace("_", "-") if e["loc"] else ""
    ctx = e.get("ctx") or {}
    if e["type"] == "greater_than_equal":
        return f"{flag} must be at least {ctx['ge']:g}"
    if e["type"] == "greater_than":
        return f"{flag} must be greater than {ctx['gt']:g}"
    if e["type"] == "literal_error":
        return f"{flag} must be {ctx['expected']}, not {e['input']!r}"
    return e["msg"].removeprefix("Value error, ")
