"""Proposers: where ideas and candidate code come from.

Both proposers answer the same two questions, so the experiment loop does not
care which one runs:

- `next_idea(idx, previous)`: the idea number idx (an `Idea`), given every earlier
  idea of the template (this session's and the archive's) with its best metric;
- `propose(ctx)`: the editable files for the next attempt of a run of an idea,
  given what the earlier attempts produced, or `done` to stop the idea.

Both must be deterministic given the same inputs and the same recorded model
answers: that is what makes a killed run resume exactly where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from base.records import ArchiveEntry, Idea


class NoValidAnswer(Exception):
    """The model never produced a usable answer within the bounded re-asks; one-line message."""


@dataclass
class Attempt:
    """One attempt of one run of an idea, as the proposer sees it afterwards."""

    run_idx: int
    attempt: int
    status: str                  # 'ok', 'failed', 'no_edit' or 'screened_out' (the cascade's screen kept it out)
    sources: dict[str, str] | None
    reason: str | None = None    # why it failed
    summary: str = ""            # the result in words, for the model
    metric: float | None = None  # the main metric's mean, when ok
    log_tail: str = ""
    meta: dict = field(default_factory=dict)


@dataclass
class IdeaContext:
    """What a proposer needs to propose the next attempt of an idea."""

    idx: int
    idea: Idea
    run_idx: int
    runs: int
    attempt: int
    attempts: int
    files: dict[str, str]        # the current editable files (the last successful version)
    history: list[Attempt]
    baseline: str                # the baseline's result in words
    direction: str


@dataclass
class Proposal:
    """Files to run, or done=True (the proposer ends the idea), or a failure to produce an edit (`final`: one
    that every later attempt would repeat, so the idea ends with it)."""

    sources: dict[str, str] | None = None
    note: str = ""
    done: bool = False
    failure: str | None = None
    final: bool = False
    meta: dict = field(default_factory=dict)


class Proposer(Protocol):
    """Where ideas and candidate code come from (see the module's docstring)."""

    name: str
    may_repeat: bool  # whether it may propose an earlier idea again in other words (checked by similarity)

    def next_idea(self, idx: int, previous: list[ArchiveEntry]) -> Idea: ...

    def propose(self, ctx: IdeaContext) -> Proposal: ...
