"""The prompts of the LLM proposer, in one place so they can be read and changed together.

They follow The AI Scientist's, and ask explicitly for the response formats that
base.formats parses: a fenced json block for ideas, SEARCH/REPLACE blocks
for code edits, "I am done" to stop early.
"""

from __future__ import annotations

import json

from base.records import Idea

IDEA_SYSTEM = (
    "You are an ambitious AI researcher who is looking to publish a paper that will contribute "
    "significantly to the field. You design small, decisive experiments."
)

ANSWER_SHAPE = """THOUGHT:
<THOUGHT>

NEW IDEA JSON:
```json
<JSON>
```"""

IDEA_FORMAT = f"""Respond in the following format:

{ANSWER_SHAPE}

In <THOUGHT>, first briefly discuss your intuitions and motivations for the idea. Detail your high-level plan, \
necessary design choices and ideal outcomes of the experiments. Justify how the idea is different from the \
existing ones.

In <JSON>, provide the new idea as one JSON object with the following fields:
- "name": a shortened descriptor of the idea, lowercase, no spaces, underscores allowed.
- "title": a title for the idea, used for the report writing.
- "hypothesis": what you expect to happen and why.
- "experiment": an outline of the implementation, in terms of the editable file(s).
- "interestingness": a rating from 1 to 10 (lowest to highest).
- "feasibility": a rating from 1 to 10 (lowest to highest).
- "novelty": a rating from 1 to 10 (lowest to highest).

Be cautious and realistic on your ratings. This JSON will be automatically parsed, so ensure the format is precise."""


def idea_prompt(task: str, code: dict[str, str], previous: list[dict], reflections: int,
                best: tuple[str, dict[str, str]] | None = None) -> str:
    """Ask for the next idea, showing the task, the editable code, every earlier idea with its sealed result
    and, in a campaign, the best code found so far (`best`: what it is, and its files)."""
    files = "\n\n".join(f"{path}:\n```python\n{src}\n```" for path, src in code.items())
    best_block = ""
    if best is not None:
        label, sources = best
        shown = "\n\n".join(f"{path}:\n```python\n{src}\n```" for path, src in sources.items())
        best_block = f"""
The best version found so far ({label}); your idea may build on it:

{shown}
"""
    return f"""{task}

The code you will be able to change:

{files}
{best_block}
Here are the ideas that have already been generated (do not repeat them):

'''
{json.dumps(previous, indent=1) if previous else "(none yet)"}
'''

Come up with the next impactful and creative idea for research experiments and directions you can feasibly \
investigate with the code provided. Note that you will not have access to any additional resources or datasets, \
and that only the editable file(s) can change.

{IDEA_FORMAT}

You will have {reflections} rounds to iterate on the idea, but do not need to use them all."""


def reflection_prompt(round_: int, total: int) -> str:
    """Ask the model to criticise and refine its idea, or say it is done."""
    return f"""Round {round_}/{total}.
In your thoughts, first carefully consider the quality, novelty, and feasibility of the idea you just created.
Include any other factors that you think are important in evaluating the idea.
Ensure the idea is clear and concise, and the JSON is the correct format.
Do not make things overly complicated.
In the next attempt, try and refine and improve your idea.
Stick to the spirit of the original idea unless there are glaring issues.

Respond in the same format as before:
{ANSWER_SHAPE}

If there is nothing to improve, simply repeat the previous JSON EXACTLY after the thought and include \
"I am done" at the end of the thoughts but before the JSON.
ONLY INCLUDE "I am done" IF YOU ARE MAKING NO MORE CHANGES."""


CODER_SYSTEM = (
    "You are an expert machine learning engineer. You change research code with small, correct edits "
    "and you read experimental results critically."
)

EDIT_FORMAT = """Reply with your reasoning, then one or more SEARCH/REPLACE blocks. Put the file's path alone on \
the line before each block:

loss.py
<<<<<<< SEARCH
exact lines from the current file
=======
the lines that replace them
>>>>>>> REPLACE

The SEARCH part must match the current file exactly (copy it), or be empty to replace the whole file. Keep \
the function signature(s) unchanged. Use jax.numpy; the code must be differentiable and return finite values."""


def coder_prompt(idea: Idea, task: str, editable: list[str], runs: int, baseline: str) -> str:
    """The first message of an idea's experiment conversation."""
    return f"""{task}

Your goal is to implement the following idea: {idea.title}.
Hypothesis: {idea.hypothesis}
The proposed experiment is as follows: {idea.experiment}

You are given up to {runs} runs to complete the necessary experiments; each run is a full training and a \
sealed evaluation over several seeds of the code as you leave it. You may only edit: {", ".join(editable)}. \
Everything else (the training harness and the evaluator) is fixed and out of your reach.

The baseline (the files as shipped) scores: {baseline}

{EDIT_FORMAT}"""


def files_block(files: dict[str, str]) -> str:
    """The current editable files, shown to the model each turn."""
    return "\n\n".join(f"Current {path}:\n```python\n{src}\n```" for path, src in files.items())


def run_request(run_idx: int, runs: int, files: dict[str, str]) -> str:
    """Ask for the edit of the next run."""
    return f"""{files_block(files)}

Plan and implement run {run_idx} of {runs}. {EDIT_FORMAT}
If the experiments for this idea are complete, reply with just "I am done"."""


def run_result(run_idx: int, summary: str) -> str:
    """Report a finished run to the model."""
    return f"Run {run_idx} finished. Result: {summary}\nDecide what to try next."


def run_failure(run_idx: int, attempt: int, attempts: int, reason: str, tail: str) -> str:
    """Report a failed attempt with its error tail, and ask for a fix."""
    tail_block = f"\nThe end of the log:\n```\n{tail.strip()[-1500:]}\n```" if tail.strip() else ""
    return (f"Run {run_idx}, attempt {attempt} of {attempts} failed: {reason}{tail_block}\n"
            "Fix the code and reply with SEARCH/REPLACE blocks.")


def run_screened_out(run_idx: int, attempt: int, attempts: int, screen: str) -> str:
    """Report an attempt the evaluation cascade's cheap screen kept from the full evaluation."""
    return (f"Run {run_idx}, attempt {attempt} of {attempts} was screened out: a short run on few seeds "
            f"(the template's screen) found it clearly worse than the best so far, so it was not fully evaluated. "
            f"{screen}\nTry a different change and reply with SEARCH/REPLACE blocks.")


def bad_answer(error: str) -> str:
    """Send a parse or edit error back, to get a corrected answer."""
    return f"Your answer could not be used: {error}\nReply again, in exactly the requested format."


def novelty_prompt(idea: Idea, papers: list[dict]) -> str:
    """Ask whether the idea is novel given the closest papers the literature search found."""
    listed = "\n".join(
        f"{i + 1}. {p['title']} ({p.get('year') or 'n.d.'}, {p.get('venue') or 'unknown venue'}, "
        f"{p.get('citations') if p.get('citations') is not None else '?'} citations)"
        + (f"\n   {p['abstract']}" if p.get("abstract") else "")
        for i, p in enumerate(papers)) or "(the search found nothing)"
    return f"""You have this idea:

```json
{json.dumps(idea.model_dump(include={"name", "title", "hypothesis", "experiment"}), indent=1)}
```

A literature search for its title found these papers:

{listed}

Decide whether the idea is novel: it is not novel if one of these papers (or a well-known result you know)
already does substantially the same thing. Answer with one JSON object in a fenced json block:

```json
{{"novel": true, "reason": "one sentence"}}
```"""
