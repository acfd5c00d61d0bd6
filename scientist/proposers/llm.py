"""The LLM proposer: ideas with reflection rounds, then experiments through SEARCH/REPLACE edits.

Every answer is parsed; a malformed one is sent back with the parse error, a
bounded number of times, before the attempt counts as failed. One conversation
per idea holds the whole experiment: requests, edits, results and errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from base.formats import (
    IDEA_SCHEMA,
    VERDICT_SCHEMA,
    FormatError,
    edits_done,
    edits_schema,
    edits_thought,
    is_done,
    parse_edit_answer,
    parse_idea,
    parse_json_block,
)
from base.llm import LLM, ContextTooLong, InvalidAnswer, Schema, ask_parsed
from base.records import ArchiveEntry, Idea
from base.template import Template
from scientist import prompts
from scientist.edits import EditError, apply_edits, static_check
from scientist.proposers import Attempt, IdeaContext, NoValidAnswer, Proposal

T = TypeVar("T")
_DONE = object()


class LLMProposer:
    """Ideas and code edits from a model through litellm."""

    name = "llm"
    may_repeat = True  # a model may propose an earlier idea again in other words

    def __init__(self, llm: LLM, template: Template, *, reflections: int = 3, max_reasks: int = 3,
                 temperature: float = 0.7, best: tuple[str, dict[str, str]] | None = None):
        self.llm = llm
        self.template = template
        self.best = best  # a campaign's confirmed best: (what it is, its files), shown with each new idea
        self.task = (template.root / "prompt.md").read_text() if (template.root / "prompt.md").is_file() else ""
        self.reflections = reflections
        self.max_reasks = max_reasks
        self.temperature = temperature
        self.conversations: dict[int, list[dict]] = {}

    def _ask(self, stage: str, messages: list[dict], parse: Callable[[str], T], what: str,
             schema: Schema | None) -> tuple[T, str]:
        """Ask, parse, and on a bad answer re-ask with the error; the exchange stays in `messages`.

        The schema goes as response_format where the server takes one (base.llm); the answer is validated anyway.
        """
        try:
            return ask_parsed(self.llm, stage, messages, parse, tries=self.max_reasks + 1,
                              temperature=self.temperature, reask=prompts.bad_answer, errors=(FormatError, EditError),
                              schema=schema)
        except InvalidAnswer as e:
            raise NoValidAnswer(f"model {self.llm.model} gave no valid {what} in {e.tries} tries: {e.error}") from None

    def next_idea(self, idx: int, previous: list[ArchiveEntry]) -> Idea:
        """Generate an idea, then refine it for up to `reflections` rounds (early stop on 'I am done')."""
        metric = self.template.spec.metric.name
        # Each earlier idea with its sealed result, so the model learns what worked (and what did not).
        shown = [{**p.idea.shown(), **({"result": f"best {metric} = {p.metric:.4f}"} if p.metric is not None else {})}
                 for p in previous]
        messages = [
            {"role": "system", "content": prompts.IDEA_SYSTEM},
            {"role": "user", "content": prompts.idea_prompt(self.task, self.template.editable_sources(), shown,
                                                           self.reflections + 1, self.best)},
        ]
        idea, _ = self._ask("idea", messages, parse_idea, "idea", IDEA_SCHEMA)
        for r in range(self.reflections):
            messages.append({"role": "user", "content": prompts.reflection_prompt(r + 2, self.reflections + 1)})
            refined, text = self._ask("reflection", messages, self._parse_reflection, "idea", IDEA_SCHEMA)
            if refined is not _DONE:
                idea = refined
            if is_done(text):
                break
        return Idea.model_validate(idea.model_dump())

    def judge_novelty(self, idea: Idea, papers: list[dict]) -> tuple[bool, str]:
        """The model's verdict on the idea against the closest papers: (novel, reason)."""
        messages = [{"role": "system", "content": prompts.IDEA_SYSTEM},
                    {"role": "user", "content": prompts.novelty_prompt(idea, papers)}]
        verdict, _ = self._ask("novelty", messages, _parse_verdict, "novelty verdict", VERDICT_SCHEMA)
        return verdict

    @staticmethod
    def _parse_reflection(text: str):
        # "I am done" may come with the repeated JSON or without it; without it, the idea stands.
        try:
            return parse_idea(text)
        except FormatError:
            if is_done(text):
                return _DONE
            raise

    def propose(self, ctx: IdeaContext) -> Proposal:
        """Ask for the edit of the next attempt, telling the model how the previous one went."""
        messages = self.conversations.get(ctx.idx)
        request = prompts.run_request(ctx.run_idx, ctx.runs, ctx.files)
        if messages is None:
            first = prompts.coder_prompt(ctx.idea, self.task, self.template.spec.editable, ctx.runs, ctx.baseline)
            messages = [{"role": "system", "content": prompts.CODER_SYSTEM},
                        {"role": "user", "content": f"{first}\n\n{request}"}]
            self.conversations[ctx.idx] = messages
        else:
            messages.append({"role": "user", "content": f"{_feedback(ctx.history[-1], ctx.attempts)}\n\n{request}"})

        def parse(text: str):
            # SEARCH/REPLACE text, or JSON edits from a server that took edits_schema
            try:
                edits = parse_edit_answer(text)
            except FormatError:
                if edits_done(text):
                    return _DONE
                raise
            edited = apply_edits(ctx.files, edits, self.template.spec.editable)
            static_check(ctx.files, edited)
            return edited

        try:
            schema = edits_schema(self.template.spec.editable, must_edit=ctx.run_idx == 1 and not ctx.history)
            edited, text = self._ask("experiment", messages, parse, "edit", schema)
        except NoValidAnswer as e:
            return Proposal(failure=str(e))
        except ContextTooLong as e:  # the idea's conversation is full: it ends, and the session goes on
            return Proposal(failure=f"the idea's conversation no longer fits the model's context ({e})", final=True)
        if edited is _DONE:
            return Proposal(done=True, note="the model judged the experiments complete")
        return Proposal(sources=edited, note=_reasoning(text))


def _parse_verdict(text: str) -> tuple[bool, str]:
    obj = parse_json_block(text)
    if not isinstance(obj.get("novel"), bool):
        raise FormatError('the JSON must have "novel": true or false')
    return obj["novel"], " ".join(str(obj.get("reason", "")).split())


def _feedback(last: Attempt, attempts: int) -> str:
    if last.status == "ok":
        return prompts.run_result(last.run_idx, last.summary)
    if last.status == "screened_out":
        return prompts.run_screened_out(last.run_idx, last.attempt, attempts, last.summary)
    return prompts.run_failure(last.run_idx, last.attempt, attempts, last.reason or "unknown", last.log_tail)


def _reasoning(text: str, limit: int = 600) -> str:
    """The model's words before its first edit block (or its JSON answer's thought): what it says it is trying."""
    thought = edits_thought(text)
    if thought is not None:
        lines = thought.strip().splitlines()
    else:
        lines = text.split("<<<<<<< SEARCH")[0].strip().splitlines()
        if lines and not lines[-1].strip().startswith(("#", "-")) and len(lines[-1].split()) == 1:
            lines = lines[:-1]  # the file-path line that precedes the block
    words = " ".join(" ".join(lines).split())
    return words[:limit] + ("..." if len(words) > limit else "")
