"""The NeurIPS review form as The AI Scientist uses it: the instructions, the parsed review, and aggregation.

A review is asked for as THOUGHT: ... then REVIEW JSON: in a ```json block. Local models get the details
slightly wrong ("3/4" for 3, a string where a list belongs, "accept." as the decision), so parsing tolerates
harmless variations; anything else raises FormatError with one line that can be sent back to the model.
"""

from __future__ import annotations

import math
import re

import pydantic

from base.formats import FormatError, answer_schema, parse_json_block, parse_score

# The numeric fields and their scales (inclusive), in the form's order.
SCORES: dict[str, tuple[int, int]] = {
    "Originality": (1, 4),
    "Quality": (1, 4),
    "Clarity": (1, 4),
    "Significance": (1, 4),
    "Soundness": (1, 4),
    "Presentation": (1, 4),
    "Contribution": (1, 4),
    "Overall": (1, 10),
    "Confidence": (1, 5),
}

LIST_FIELDS = ("Strengths", "Weaknesses", "Questions", "Limitations")
DECISIONS = ("Accept", "Reject")

# Every key of the answer, in the order the form asks for them.
FIELDS = ("Summary", "Strengths", "Weaknesses", "Originality", "Quality", "Clarity", "Significance", "Questions",
          "Limitations", "Ethical Concerns", "Soundness", "Presentation", "Contribution", "Overall", "Confidence",
          "Decision")

# The shape of every reviewer answer (the form and the reflection rounds ask for the same).
REVIEW_SHAPE = """THOUGHT:
<THOUGHT>

REVIEW JSON:
```json
<JSON>
```"""

FORM_TEXT = f"""\
Review the paper as a reviewer for NeurIPS would, using the form below.

Fields of the review:
- "Summary": a summary of the paper's content and contributions, which the authors should agree with.
- "Strengths": a list of the paper's strengths.
- "Weaknesses": a list of the paper's weaknesses; be specific and constructive.
- "Originality": an integer from 1 to 4 (1 low, 2 medium, 3 high, 4 very high). Are the tasks or methods new? \
Is it clear how the work differs from previous contributions, and is related work adequately cited?
- "Quality": an integer from 1 to 4 (1 low, 2 medium, 3 high, 4 very high). Is the submission technically sound? \
Are the claims well supported by theory or experiments?
- "Clarity": an integer from 1 to 4 (1 low, 2 medium, 3 high, 4 very high). Is the submission clearly written \
and well organised, with enough detail for an expert to reproduce its results?
- "Significance": an integer from 1 to 4 (1 low, 2 medium, 3 high, 4 very high). Are the results important? \
Are others likely to use the ideas or build on them?
- "Questions": a list of questions for the authors whose answers could change your opinion or clarify confusion.
- "Limitations": a list of the work's limitations and potential negative societal impacts.
- "Ethical Concerns": true or false, whether the paper raises ethical concerns.
- "Soundness": an integer from 1 to 4 (1 poor, 2 fair, 3 good, 4 excellent): the soundness of the technical \
claims, experimental and research methodology, and whether the evidence supports the central claims.
- "Presentation": an integer from 1 to 4 (1 poor, 2 fair, 3 good, 4 excellent): the quality of the writing and \
how well the work is placed in the context of prior work.
- "Contribution": an integer from 1 to 4 (1 poor, 2 fair, 3 good, 4 excellent): the quality of the overall \
contribution to the research area.
- "Overall": an integer from 1 to 10:
  10 award quality: technically flawless, with groundbreaking impact on one or more areas of AI, \
exceptionally strong evaluation, reproducibility and resources, and no unaddressed ethical considerations;
  9 very strong accept: technically flawless, with groundbreaking impact on at least one area of AI and \
excellent impact on several;
  8 strong accept: technically strong, with novel ideas, excellent impact on at least one area or high to \
excellent impact on several;
  7 accept: technically solid, with high impact on at least one sub-area or moderate to high impact on several;
  6 weak accept: technically solid, moderate to high impact, with no major concerns about evaluation, \
resources, reproducibility or ethics;
  5 borderline accept: technically solid, where reasons to accept outweigh reasons to reject, e.g. limited \
evaluation; use sparingly;
  4 borderline reject: technically solid, where reasons to reject, e.g. limited evaluation, outweigh reasons \
to accept, e.g. good evaluation; use sparingly;
  3 reject: for instance a paper with technical flaws, weak evaluation, inadequate reproducibility or \
incompletely addressed ethical considerations;
  2 strong reject: for instance a paper with major technical flaws, poor evaluation, limited impact or poor \
reproducibility;
  1 very strong reject: for instance a paper with trivial results or unaddressed ethical considerations.
- "Confidence": an integer from 1 to 5:
  5 you are absolutely certain about your assessment and very familiar with the related work, and checked \
the math and other details carefully;
  4 you are confident but not absolutely certain; it is unlikely, but not impossible, that you did not \
understand some parts of the submission or are unfamiliar with some related work;
  3 you are fairly confident; it is possible that you did not understand some parts or are unfamiliar with \
some related work, and math and other details were not carefully checked;
  2 you are willing to defend your assessment, but it is quite likely that you did not understand central \
parts of the submission or are unfamiliar with some related work;
  1 your assessment is an educated guess: the submission is not in your area or was difficult to understand.
- "Decision": exactly "Accept" or "Reject"; do not use Weak Accept, Borderline Accept, Borderline Reject or \
Strong Reject.

Respond in the following format:

{REVIEW_SHAPE}

In <THOUGHT>, first briefly discuss your intuitions and reasoning for the evaluation: your high-level \
arguments, the choices you made and the outcome you want from the review. Be specific to this paper rather \
than generic; treat it as the note-taking phase of your review.

In <JSON>, give the review as one JSON object with exactly these keys, in this order: "Summary", "Strengths", \
"Weaknesses", "Originality", "Quality", "Clarity", "Significance", "Questions", "Limitations", \
"Ethical Concerns", "Soundness", "Presentation", "Contribution", "Overall", "Confidence", "Decision". \
The JSON is parsed automatically, so make it precise: double quotes, no comments, no trailing commas.
"""

_FORMAT_HINT = ("reply with THOUGHT: then REVIEW JSON: and one JSON object in a ```json block with the keys "
                + ", ".join(FIELDS))

# "3", "3.0", "3/4", "3 / 4", "3 (good)", "3: good" or "3 - good"; group 2 is the scale after the slash.


def _key(name: str) -> str:
    """A key with case, spaces, hyphens and underscores folded, so "ethical_concerns" finds "Ethical Concerns"."""
    return re.sub(r"[\s_-]+", "_", str(name).strip().lower())


_KEYS = {_key(field): field for field in FIELDS}


def _score(value: object, field: str) -> int:
    """The integer a model meant by `value` for a score field, or ValueError naming the allowed range."""
    return parse_score(value, *SCORES[field])


class Review(pydantic.BaseModel):
    """One review in The AI Scientist's NeurIPS form; build it from the answer's keys (see FIELDS)."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)

    summary: str = pydantic.Field(alias="Summary")
    strengths: list[str] = pydantic.Field(alias="Strengths")
    weaknesses: list[str] = pydantic.Field(alias="Weaknesses")
    originality: int = pydantic.Field(alias="Originality")
    quality: int = pydantic.Field(alias="Quality")
    clarity: int = pydantic.Field(alias="Clarity")
    significance: int = pydantic.Field(alias="Significance")
    questions: list[str] = pydantic.Field(alias="Questions")
    limitations: list[str] = pydantic.Field(alias="Limitations")
    ethical_concerns: bool = pydantic.Field(alias="Ethical Concerns")
    soundness: int = pydantic.Field(alias="Soundness")
    presentation: int = pydantic.Field(alias="Presentation")
    contribution: int = pydantic.Field(alias="Contribution")
    overall: int = pydantic.Field(alias="Overall")
    confidence: int = pydantic.Field(alias="Confidence")
    decision: str = pydantic.Field(alias="Decision")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _fold_keys(cls, data: object) -> object:
        # Models write "overall", "ethical_concerns" or "Ethical-Concerns"; Python callers write field names.
        if isinstance(data, dict):
            return {_KEYS.get(_key(k), k): v for k, v in data.items()}
        return data

    @pydantic.field_validator("summary", mode="before")
    @classmethod
    def _text(cls, value: object) -> object:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = "\n".join(value)
        if isinstance(value, str):
            value = value.strip()
            if not value:
                raise ValueError("must not be empty")
        return value

    @pydantic.field_validator("strengths", "weaknesses", "questions", "limitations", mode="before")
    @classmethod
    def _items(cls, value: object) -> object:
        if value is None:
            return []  # "Questions": null means there are none
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [v.strip() for v in value if v.strip()]
        if isinstance(value, list):
            raise ValueError("must be a list of strings")
        return value

    @pydantic.field_validator(*(name.lower() for name in SCORES), mode="before")
    @classmethod
    def _scores(cls, value: object, info: pydantic.ValidationInfo) -> int:
        return _score(value, info.field_name.capitalize())

    @pydantic.field_validator("ethical_concerns", mode="before")
    @classmethod
    def _flag(cls, value: object) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            word = value.strip().strip("*\"'`.!").strip().lower()
            if word in ("true", "yes"):
                return True
            if word in ("false", "no"):
                return False
        raise ValueError(f"must be true or false, got {value!r}")

    @pydantic.field_validator("decision", mode="before")
    @classmethod
    def _decision(cls, value: object) -> str:
        if isinstance(value, str):
            word = value.strip().strip("*\"'`.!").strip().lower()  # "Accept.", "**Accept**"
            for decision in DECISIONS:
                if word == decision.lower():
                    return decision
        raise ValueError(f"must be exactly \"Accept\" or \"Reject\", got {value!r}")

    def score(self, field: str) -> int:
        """The score of a numeric field named as in the form, e.g. review.score("Overall")."""
        if field not in SCORES:
            raise KeyError(f"{field!r} is not a score; the scores are {', '.join(SCORES)}")
        return getattr(self, field.lower())

    def to_json(self) -> dict:
        """The review as a dict with the form's key names, in the form's order."""
        return self.model_dump(by_alias=True)


# The review's JSON schema, sent as response_format where the server takes one (base.llm): the form's keys, scales
# and decisions, after a "thought" (the THOUGHT of the text format).
REVIEW_SCHEMA = answer_schema("review", Review, fields=FIELDS, ranges=SCORES, enums={"Decision": list(DECISIONS)})


def _allowed(field: str) -> str:
    """What the form allows in a field, for error messages."""
    if field in SCORES:
        return "an integer from {} to {}".format(*SCORES[field])
    if field in LIST_FIELDS:
        return "a list of strings"
    if field == "Ethical Concerns":
        return "true or false"
    if field == "Decision":
        return '"Accept" or "Reject"'
    return "a string"


def _validation_message(err: pydantic.ValidationError) -> str:
    """One readable clause per problem in a review, joined on one line."""
    missing = [str(e["loc"][0]) for e in err.errors() if e["type"] == "missing"]
    parts = []
    if missing:
        parts.append("the review is missing " + ", ".join(f"'{m}' ({_allowed(m)})" for m in missing))
    for e in err.errors():
        if e["type"] == "missing":
            continue
        field = str(e["loc"][0]) if e["loc"] else "?"
        if e["type"] == "value_error":  # our own validators, whose messages already say what is allowed
            problem = e["msg"].removeprefix("Value error, ")
        else:  # pydantic's type errors ("Input should be a valid string") say less, so say it in the form's terms
            problem = f"must be {_allowed(field)}, got {e['input']!r}"
        parts.append(f"review field '{field}' {problem[:200]}")
    return "; ".join(parts) + f"; {_FORMAT_HINT}"


def parse_review(text: str) -> Review:
    """The review in a model's answer: a JSON object that is the review itself or {"review": {...}}.

    Raises FormatError with one line naming each bad or missing field and its allowed values.
    """
    data = parse_json_block(text)
    wrapped = [v for k, v in data.items() if _key(k) in ("review", "review_json")]
    if len(data) == 1 and wrapped and isinstance(wrapped[0], dict):
        data = wrapped[0]
    try:
        return Review.model_validate(data)
    except pydantic.ValidationError as err:
        raise FormatError(_validation_message(err)) from None


def aggregate(reviews: list[Review]) -> dict:
    """The area chair's numbers for several reviews of one paper.

    For every score field: "<field>" is the mean rounded half up to an integer and clipped to the field's
    scale, and "<field>_mean" the unrounded mean; "n_reviews" counts the reviews. Raises ValueError when
    there are no reviews.
    """
    if not reviews:
        raise ValueError("aggregate needs at least one review")
    result: dict = {}
    for field, (low, high) in SCORES.items():
        mean = sum(review.score(field) for review in reviews) / len(reviews)
        # Python's round() rounds half to even (2.5 -> 2); reviews are rounded half up, as people do.
        result[field] = min(high, max(low, math.floor(mean + 0.5)))
        result[f"{field}_mean"] = mean
    result["n_reviews"] = len(reviews)
    return result
