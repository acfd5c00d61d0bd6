"""What `scientist run` is asked to do: flags and the template in one validated object, passed down.

The CLI builds a RunConfig from its flags; every rule about them lives here, next to the
field it is about, and a violation is one line naming the flag (`--ideas must be at least 1`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, model_validator

from base.template import Template
from sandbox.backends import Sandbox

LITERATURE_SOURCES = ("semantic-scholar", "openalex")


class RunConfig(BaseModel):
    """Everything `scientist run` was asked to do: CLI flags and the template, in one place."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")

    template: Template
    proposer: Literal["llm", "evolve"]
    model: str | None = None
    api_base: str | None = None
    ideas: int = Field(3, ge=1)
    runs: int = Field(5, ge=1)
    attempts: int = Field(4, ge=1)
    reflections: int = Field(3, ge=0)
    seeds: int = Field(ge=2)                # an interval needs two seeds
    test: Literal["welch", "paired"] = "welch"  # against the baseline: paired pairs seed s with seed s (base.stats)
    sandbox: Sandbox
    home: Path
    out_dir: Path
    budget_usd: float | None = Field(None, ge=0)  # 0: spend nothing (no model call; an evolve run needs none)
    budget_minutes: float | None = Field(None, gt=0)
    budget_evaluations: int | None = Field(None, ge=1)   # sandboxed runs computed (reused ones are free)
    seed: int = 0
    retries: int = Field(5, ge=0)
    literature: Literal["semantic-scholar", "openalex"] | None = None
    literature_url: str | None = None
    literature_key: str | None = Field(None, exclude=True)  # from the environment; never written to disk
    writeup: bool = True
    writer: Literal["template", "llm"] = "template"
    review: bool = True
    review_ensemble: int = Field(5, ge=1)
    review_reflections: int | None = Field(None, ge=0)   # None: the protocol's (reviewer.review)
    review_protocol: Literal["ai-scientist", "ensemble"] = "ai-scientist"
    # Structured outputs (base.llm): auto probes the server once and falls back to text; on requires them; off never.
    structured: Literal["auto", "on", "off"] = "auto"
    max_tokens: int | None = Field(None, ge=1)  # per answer; None: the server's default
    workers: int = Field(1, ge=1)            # ideas in flight at once, each with its own slot
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None           # None with --executor ray: a local Ray instance
    campaign: str | None = None              # a night of this campaign: its archive is the campaign's
    # The campaign's confirmed best (what it is, its files), which the LLM proposer is shown; not in summary.json.
    best_known: tuple[str, dict[str, str]] | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.proposer == "llm" and not self.model:
            raise ValueError("--proposer llm needs --model (any litellm model string, e.g. openai/gpt-4o)")
        if self.writer == "llm" and not self.model:
            raise ValueError("--writer must be template, or llm together with --model")
        if self.literature is not None and self.proposer != "llm":
            raise ValueError("--literature needs a model to judge novelty (--model)")
        if self.ray_address is not None and self.executor != "ray":
            raise ValueError("--ray-address needs --executor ray")
        if self.proposer == "evolve" and not (self.template.root / "search_space.py").is_file():
            raise ValueError(f"template {self.template.name} has no search_space.py, which --proposer evolve needs")
        return self

    @field_serializer("template")
    def _template_name(self, template: Template) -> str:
        return template.name

    def to_json(self) -> dict:
        """The configuration as summary.json and the store record it (no secrets)."""
        return self.model_dump(mode="json")


def flag_error(err: ValidationError) -> str:
    """The first problem of a RunConfig as one line naming the flag, as the CLI reports it."""
    e = err.errors()[0]
    flag = "--" + str(e["loc"][0]).replace("_", "-") if e["loc"] else ""
    ctx = e.get("ctx") or {}
    if e["type"] == "greater_than_equal":
        return f"{flag} must be at least {ctx['ge']:g}"
    if e["type"] == "greater_than":
        return f"{flag} must be greater than {ctx['gt']:g}"
    if e["type"] == "literal_error":
        return f"{flag} must be {ctx['expected']}, not {e['input']!r}"
    return e["msg"].removeprefix("Value error, ")
