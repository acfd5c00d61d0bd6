"""`--protocol ai-scientist`: The AI Scientist's review procedure, call for call.

Reproduces perform_review and get_meta_review of SakanaAI/AI-Scientist, ai_scientist/perform_review.py, as
launch_scientist.py calls them (num_reflections=5, num_fs_examples=1, num_reviews_ensemble=5, temperature=0.1),
read at commit 9dffdc445c2596ffa871b5588377e9f12558febc. The published calibration (500 ICLR papers, GPT-4o:
balanced accuracy 0.65) was measured with these settings (review_iclr_bench/llm_reviews/
gpt-4o-2024-05-13_temp_0_1_fewshot_1_reflect_5_ensemble_5_pages_all.csv at that commit). The procedure:

1. E reviews of one prompt (the form, the few-shot examples, the paper) at temperature 0.75, fixed whatever the
   `temperature` setting; with E == 1, one review at `temperature` and no meta-review (steps 2-4 are skipped).
2. The area chair's meta-review of the reviews that gave a JSON object, at `temperature`. Its JSON is the
   aggregated review; when it gives none, the first parsed review stands in.
3. Each score of the aggregated review is replaced by int(round(mean)) of the ensemble's values that lie on the
   field's scale (numpy's mean and Python's round: halves go to the even integer, 4.5 -> 4, 5.5 -> 6).
4. The conversation is rewritten as if the reviewer had written the aggregated review itself.
5. R reflection rounds (upstream: num_reflections - 1) on that aggregated review at `temperature`, with the
   reviewer's system prompt and the whole conversation; each answer is the review from then on. The rounds stop
   after an answer containing "I am done" (case-sensitive, as upstream); an answer without JSON fails the review.

So E + 1 + R calls at most (10 with the defaults), against E * (1 + R) + 1 for `--protocol ensemble` (31).
What differs, deliberately: the review form is the project's wording of the same NeurIPS form
(reviewer/form.py: the same fields, scales and answer format); the E reviews are E requests, as upstream makes
them for every model but OpenAI's, for which it asks once with n=E (this client has no n); no seed and no
max_tokens are sent; with --run-dir the run's sealed results follow the paper; a failure is a one-line error
where upstream would crash (no valid review, a score with no valid value).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from base.formats import FormatError, parse_json_block
from base.llm import LLM
from reviewer.form import FORM_TEXT, REVIEW_SCHEMA, SCORES, parse_review
from reviewer.pdf import Paper
from reviewer.review import ReviewFailed, ReviewSettings, fewshot_paper_text, fewshot_review_text

ENSEMBLE_TEMPERATURE = 0.75  # hard-coded in upstream's perform_review ("Higher temperature to encourage diversity")

# Upstream joins the two sentences of its base prompt and the "negative" addition without spaces; kept as sent.
SYSTEM = ("You are an AI researcher who is reviewing a paper that was submitted to a prestigious ML venue."
          "Be critical and cautious in your decision."
          "If a paper is bad or you are unsure, give it bad scores and reject it.")

AREA_CHAIR_SYSTEM = ("You are an Area Chair at a machine learning conference.\n"
                     "You are in charge of meta-reviewing a paper that was reviewed by {n} reviewers.\n"
                     "Your job is to aggregate the reviews into a single meta-review in the same format.\n"
                     "Be critical and cautious in your decision, find consensus, and respect the opinion of all "
                     "the reviewers.")

# Upstream never fills in {current_round}/{num_reflections}: the model sees the braces, and so does ours.
REFLECTION = """Round {current_round}/{num_reflections}.
In your thoughts, first carefully consider the accuracy and soundness of the review you just created.
Include any other factors that you think are important in evaluating the paper.
Ensure the review is clear and concise, and the JSON is in the correct format.
Do not make things overly complicated.
In the next attempt, try and refine and improve your review.
Stick to the spirit of the original review unless there are glaring issues.

Respond in the same format as before:
THOUGHT:
<THOUGHT>

REVIEW JSON:
```json
<JSON>
```

If there is nothing to improve, simply repeat the previous JSON EXACTLY after the thought and include "I am done" \
at the end of the thoughts but before the JSON.
ONLY INCLUDE "I am done" IF YOU ARE MAKING NO MORE CHANGES."""

DONE = "I am done"

FEWSHOT_INTRO = """
Below are some sample reviews, copied from previous machine learning conferences.
Note that while each review is formatted differently according to each reviewer's style, the reviews are \
well-structured and therefore easy to navigate.
"""


def fewshot_prompt(paths: tuple[Path, ...]) -> str:
    """The examples as upstream shows them: the paper's full text and its review as text (no cut)."""
    if not paths:
        return ""
    parts = [FEWSHOT_INTRO]
    for path in paths:
        paper, review = fewshot_paper_text(path, max_chars=10**9), fewshot_review_text(path)
        parts.append(f"\nPaper:\n\n```\n{paper}\n```\n\nReview:\n\n```\n{review}\n```\n")
    return "".join(parts)


def base_prompt(paper_text: str, settings: ReviewSettings, context: str = "") -> str:
    """The reviewers' prompt: the form, the examples, the paper (and a run's sealed results with --run-dir)."""
    prompt = (FORM_TEXT + fewshot_prompt(settings.fewshot)
              + f"\nHere is the paper you are asked to review:\n```\n{paper_text}\n```")
    return prompt + (f"\n\n{context}" if context else "")


def aggregated_answer(review: dict, ensemble: int) -> str:
    """The assistant turn upstream writes in place of the first reviewer's answer (E as asked, not as parsed)."""
    return (f"\nTHOUGHT:\nI will start by aggregating the opinions of {ensemble} reviewers that I previously "
            f"obtained.\n\nREVIEW JSON:\n```json\n{json.dumps(review)}\n```\n")


def _json(text: str) -> dict | None:
    """The JSON object of an answer, or None (upstream's extract_json_between_markers returns None).

    The "thought" a schema-following answer carries (base.formats.answer_schema) is the THOUGHT of the text
    format, not part of the review, so it is left out."""
    try:
        data = parse_json_block(text)
    except FormatError:
        return None
    data.pop("thought", None)
    return data


def _value(value: object) -> float | None:
    """A score as upstream compares it: numbers as they are (bool is an int there too); a string, which upstream
    cannot compare (TypeError), is read as a number when it is one; anything else counts as no score."""
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def ensemble_scores(reviews: list[dict]) -> dict[str, tuple[int, float]]:
    """For every score field: (int(round(mean)), mean) over the reviews' values within the field's scale.

    Keys are matched exactly, as upstream does. Raises ReviewFailed naming a field no review scored validly
    (upstream takes the mean of nothing, NaN, and crashes on int(NaN)).
    """
    result = {}
    for field, (low, high) in SCORES.items():
        values = [v for r in reviews if field in r and (v := _value(r[field])) is not None and high >= v >= low]
        if not values:
            raise ReviewFailed(f"no review of the ensemble gave a valid {field} ({low}-{high})")
        mean = np.mean(values)
        result[field] = (int(round(mean)), float(mean))
    return result


def meta_review(llm: LLM, reviews: list[dict], temperature: float) -> dict | None:
    """The area chair's review of the parsed ensemble (upstream's get_meta_review), or None without JSON."""
    listed = "".join(f"\nReview {i + 1}/{len(reviews)}:\n```\n{json.dumps(r)}\n```\n" for i, r in enumerate(reviews))
    messages = [{"role": "system", "content": AREA_CHAIR_SYSTEM.format(n=len(reviews))},
                {"role": "user", "content": FORM_TEXT + listed}]
    return _json(llm.chat("review:meta", messages, temperature=temperature, key="area_chair", schema=REVIEW_SCHEMA))


def review(llm: LLM, paper: Paper, settings: ReviewSettings, context: str = "",
           force_reject: str | None = None) -> dict:
    """The AI Scientist's review of one paper: the final form fields, the ensemble, the meta-review, the rounds."""
    prompt = base_prompt(paper.text, settings, context)
    system = {"role": "system", "content": SYSTEM}
    user = {"role": "user", "content": prompt}
    ensemble: list[dict] = []
    errors: list[str] = []
    meta: dict | None = None
    means: dict[str, tuple[int, float]] = {}
    if settings.ensemble > 1:
        for i in range(settings.ensemble):
            answer = llm.chat("review", [system, user], temperature=ENSEMBLE_TEMPERATURE, key=f"reviewer{i}",
                              schema=REVIEW_SCHEMA)
            parsed = _json(answer)
            if parsed is None:
                errors.append(f"ensemble review {i} gave no JSON")
            else:
                ensemble.append(parsed)
        if not ensemble:
            raise ReviewFailed(f"model {llm.model}: none of the {settings.ensemble} reviews gave a JSON review")
        meta = meta_review(llm, ensemble, settings.temperature)
        current = dict(meta) if meta is not None else dict(ensemble[0])  # the first valid one if the chair fails
        means = ensemble_scores(ensemble)
        for field, (rounded, _) in means.items():
            current[field] = rounded
        aggregated: dict | None = current
        answer = aggregated_answer(current, settings.ensemble)
    else:
        answer = llm.chat("review", [system, user], temperature=settings.temperature, key="reviewer0",
                          schema=REVIEW_SCHEMA)
        aggregated = None
    history = [user, {"role": "assistant", "content": answer}]
    rounds = 0
    for _ in range(settings.reflections):
        ask = {"role": "user", "content": REFLECTION}
        answer = llm.chat("review:reflection", [system, *history, ask], temperature=settings.temperature,
                          key="reflection", schema=REVIEW_SCHEMA)
        history += [ask, {"role": "assistant", "content": answer}]
        rounds += 1
        if _json(answer) is None:
            raise ReviewFailed(f"model {llm.model}: reflection round {rounds} gave no JSON review")
        if DONE in answer:
            break
    try:
        final = parse_review(answer).to_json()
    except FormatError as e:
        raise ReviewFailed(f"model {llm.model}: the final review is not a complete form: {e}") from None
    final.update({f"{field}_mean": mean for field, (_, mean) in means.items()})
    final["n_reviews"] = len(ensemble) or 1
    if force_reject is not None and final["Decision"] == "Accept":
        final["Decision"] = "Reject"
        final["decision_note"] = force_reject
    return {"review": final, "ensemble": ensemble, "meta_review": meta, "aggregated_review": aggregated,
            "reflection_rounds": rounds, "ensemble_errors": errors, "protocol": "ai-scientist"}
