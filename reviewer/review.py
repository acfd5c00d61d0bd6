"""Review one paper by the `ensemble` protocol, and what both protocols share (settings, usage, few-shot files).

The ensemble protocol: each of E reviewers writes a review and refines it over reflection rounds (stopping
on "I am done"), all at one temperature above 0, a malformed answer being sent back with the error; then
an area chair's meta-review. The numeric scores of the result are the means of the ensemble's valid
scores rounded half up to the form's scale; the Decision is the area chair's. The default protocol,
The AI Scientist's own, is reviewer/ai_scientist.py; reviewer.batch.review_with_protocol picks by the
settings. The model sees only the text a human reader would see (reviewer.injection_guard).
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from base.formats import FormatError, is_done
from base.llm import LLM, InvalidAnswer, ask_parsed
from reviewer.form import FORM_TEXT, REVIEW_SCHEMA, REVIEW_SHAPE, Review, aggregate, parse_review
from reviewer.pdf import Paper, load_paper

FEWSHOT_DIR = Path(resources.files("reviewer")) / "fewshot"  # shipped as package data

REVIEWER_SYSTEM = ("You are an AI researcher who is reviewing a paper that was submitted to a prestigious ML venue. "
                   "Be critical and cautious in your decision. If a paper is bad or you are unsure, give it bad "
                   "scores and reject it.")

AREA_CHAIR_SYSTEM = ("You are an Area Chair at a machine learning conference. You are in charge of meta-reviewing a "
                     "paper that was reviewed by {n} reviewers. Your job is to aggregate the reviews into a single "
                     "meta-review in the same format. Be critical and cautious in your decision, find consensus, and "
                     "respect the opinion of all the reviewers.")


def reflection_prompt(round_: int, total: int) -> str:
    """Ask the reviewer to check and refine its review, or say it is done."""
    return f"""Round {round_}/{total}.
In your thoughts, first carefully consider the accuracy and soundness of the review you just created.
Include any other factors that you think are important in evaluating the paper.
Ensure the review is clear and concise, and the JSON is in the correct format.
Do not make things overly complicated.
In the next attempt, try and refine and improve your review.
Stick to the spirit of the original review unless there are glaring issues.

Respond in the same format as before:
{REVIEW_SHAPE}

If there is nothing to improve, simply repeat the previous JSON EXACTLY after the thought and include "I am done" \
at the end of the thoughts but before the JSON.
ONLY INCLUDE "I am done" IF YOU ARE MAKING NO MORE CHANGES."""


PROTOCOLS = ("ai-scientist", "ensemble")

# Per protocol: reflection rounds and the temperature of the calls the protocol samples at that temperature.
# ai-scientist: The AI Scientist's launch_scientist.py (num_reflections=5, i.e. 4 rounds after the first answer;
# temperature=0.1 for the meta-review and the reflections, its ensemble being drawn at a fixed 0.75).
# ensemble: every call at 0.75, 5 rounds per member.
PROTOCOL_DEFAULTS: dict[str, dict[str, float | int]] = {
    "ai-scientist": {"reflections": 4, "temperature": 0.1},
    "ensemble": {"reflections": 5, "temperature": 0.75},
}

# Characters of paper text shown to the model: The AI Scientist shows the whole paper (its calibration read all
# pages; most ICLR papers are longer than 60,000 characters), the ensemble protocol cuts at a page boundary.
PROTOCOL_MAX_CHARS = {"ai-scientist": sys.maxsize, "ensemble": 60_000}


@dataclass(frozen=True)
class ReviewSettings:
    """The reviewer's knobs. `reflections` and `temperature` left None take the protocol's defaults
    (PROTOCOL_DEFAULTS); the default protocol is The AI Scientist's procedure (docs/reviewer.md says why)."""

    ensemble: int = 5
    reflections: int | None = None
    temperature: float | None = None
    fewshot: tuple[Path, ...] = ()   # example papers (.pdf or .txt), each with its review as a .json beside it
    max_reasks: int = 2              # ensemble protocol only: The AI Scientist does not re-ask
    protocol: str = "ai-scientist"

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        for name, value in PROTOCOL_DEFAULTS[self.protocol].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.ensemble < 1 or self.reflections < 0 or not self.temperature > 0:
            raise ValueError("--ensemble must be at least 1, --reflections 0 or more, --temperature above 0")
        for shot in self.fewshot:
            if not shot.is_file() or not shot.with_suffix(".json").is_file():
                raise ValueError(f"few-shot example {shot} needs the file itself and its review "
                                 f"{shot.with_suffix('.json')}")


class ReviewFailed(Exception):
    """No valid review could be obtained for a paper; one-line message."""


@dataclass
class Usage:
    """Tokens and dollars of the model calls a review used (replayed calls count what they cost when made)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, call: dict) -> None:
        with self.lock:
            self.prompt_tokens += int(call.get("prompt_tokens") or 0)
            self.completion_tokens += int(call.get("completion_tokens") or 0)
            self.cost_usd += float(call.get("cost_usd") or 0.0)
            self.calls += 1

    def to_json(self) -> dict:
        return {"calls": self.calls, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost_usd": self.cost_usd}


@dataclass
class CountingRecorder:
    """Wraps the store's call log to count what one paper's review used."""

    inner: object
    usage: Usage

    def lookup(self, key: str) -> dict | None:
        call = self.inner.lookup(key)
        if call is not None:
            self.usage.add(call)
        return call

    def record(self, key: str, call: dict) -> None:
        self.inner.record(key, call)
        self.usage.add(call)


def fewshot_review_text(path: Path) -> str:
    """The review of a few-shot example as shown to the model, from the .json beside the example.

    The file holds either the review itself (a JSON object in the form) or, as The AI Scientist's
    fewshot_examples/*.json do, {"review": "<the review as text>"}; both work.
    """
    data = json.loads(path.with_suffix(".json").read_text())
    if isinstance(data, dict) and set(data) == {"review"}:
        data = data["review"]
    return data if isinstance(data, str) else json.dumps(data, indent=1)


def fewshot_paper_text(path: Path, max_chars: int = 20_000) -> str:
    """The text of a few-shot example: a .txt as it is, a PDF through the loader (and its injection guard)."""
    return path.read_text() if path.suffix == ".txt" else load_paper(path, max_chars=max_chars).text


def fewshot_block(paths: tuple[Path, ...]) -> str:
    """Example papers with their reviews, shown before the paper to review."""
    if not paths:
        return ""
    parts = []
    for i, path in enumerate(paths, start=1):
        text, shown = fewshot_paper_text(path), fewshot_review_text(path)
        parts.append(f"Example {i}:\n```\n{text}\n```\n\nExample review {i}:\n```json\n{shown}\n```")
    return "Below are example papers with example reviews in the required format.\n\n" + "\n\n".join(parts)


def default_fewshot() -> tuple[Path, ...]:
    """The shipped example (one, as in The AI Scientist's best setting)."""
    return tuple(sorted(FEWSHOT_DIR.glob("*.txt")))[:1]


def _ask(llm: LLM, messages: list[dict], key: str, settings: ReviewSettings, stage: str) -> tuple[Review, str]:
    try:
        return ask_parsed(llm, stage, messages, parse_review, tries=settings.max_reasks + 1,
                          temperature=settings.temperature, errors=(FormatError,), key=key, schema=REVIEW_SCHEMA,
                          reask=lambda error: f"Your review could not be used: {error}\nReply again in exactly "
                                              "the requested format.")
    except InvalidAnswer as e:
        raise ReviewFailed(f"model {llm.model} gave no valid review in {e.tries} tries: {e.error}") from None


def one_review(llm: LLM, paper_text: str, settings: ReviewSettings, index: int, context: str = "") -> Review:
    """One reviewer of the ensemble: a review, then up to `reflections` refinements."""
    prompt = "\n\n".join(p for p in (FORM_TEXT, fewshot_block(settings.fewshot),
                                     f"Here is the paper you are asked to review:\n```\n{paper_text}\n```",
                                     context) if p)
    messages = [{"role": "system", "content": REVIEWER_SYSTEM}, {"role": "user", "content": prompt}]
    review, _ = _ask(llm, messages, f"reviewer{index}", settings, "review")
    for r in range(settings.reflections):
        messages.append({"role": "user", "content": reflection_prompt(r + 2, settings.reflections + 1)})
        text = llm.chat("review:reflection", messages, temperature=settings.temperature, key=f"reviewer{index}",
                        schema=REVIEW_SCHEMA)
        messages.append({"role": "assistant", "content": text})
        try:
            review = parse_review(text)
        except FormatError:
            if not is_done(text):
                messages.append({"role": "user", "content": "That reflection could not be parsed; your previous "
                                                            "review stands."})
        if is_done(text):
            break
    return review


def meta_review(llm: LLM, reviews: list[Review], settings: ReviewSettings) -> Review:
    """The area chair's review of the ensemble; its Decision is final."""
    listed = "\n\n".join(f"Review {i + 1}/{len(reviews)}:\n```json\n{json.dumps(r.to_json(), indent=1)}\n```"
                         for i, r in enumerate(reviews))
    messages = [{"role": "system", "content": AREA_CHAIR_SYSTEM.format(n=len(reviews))},
                {"role": "user", "content": f"{FORM_TEXT}\n\n{listed}"}]
    review, _ = _ask(llm, messages, "area_chair", settings, "review:meta")
    return review


def review(llm: LLM, paper: Paper, settings: ReviewSettings, context: str = "",
           force_reject: str | None = None) -> dict:
    """The full review of one paper by the ensemble protocol: final form fields, the ensemble, the meta-review."""
    if settings.protocol != "ensemble":
        raise ValueError(f"reviewer.review.review runs the ensemble protocol, not {settings.protocol}; "
                         "use reviewer.batch.review_with_protocol")
    reviews, errors = [], []
    for i in range(settings.ensemble):
        try:
            reviews.append(one_review(llm, paper.text, settings, i, context))
        except ReviewFailed as e:
            errors.append(str(e))
    if not reviews:
        raise ReviewFailed(errors[0] if errors else "no review was requested (--ensemble 0)")
    meta = meta_review(llm, reviews, settings) if len(reviews) > 1 else reviews[0]
    final = {**meta.to_json(), **{k: v for k, v in aggregate(reviews).items()}}
    final["Decision"] = meta.to_json()["Decision"]
    if force_reject is not None and final["Decision"] == "Accept":
        final["Decision"] = "Reject"
        final["decision_note"] = force_reject
    return {"review": final, "ensemble": [r.to_json() for r in reviews], "meta_review": meta.to_json(),
            "ensemble_errors": errors, "protocol": "ensemble"}
