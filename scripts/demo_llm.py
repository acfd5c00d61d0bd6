"""`make demo-llm`: the whole pipeline with a real small model on CPU, offline.

Starts llama-cpp-python's server on loopback with SmolLM2-135M-Instruct (from .venv-llm, which the Makefile
fills) and runs three `scientist run --template discopop --model openai/smollm2 --api-base
http://127.0.0.1:PORT/v1` sessions: one where the model proposes the ideas and writes the code and papers, one
where the evolve proposer's idea runs and the model writes its paper, and one where the model reviews the
template's paper of that run. Then it stops the server and prints, per session, how many answers of each
stage were valid (each recorded answer parsed again with the stage's parser), how the run attempts ended and
where the papers and reviews are. A 135M model answers badly; the
point is that every stage meets it, and that every failure is recorded and explained.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from llama_server import free_port, start_server  # noqa: E402

from base.formats import (  # noqa: E402
    FormatError,
    edits_done,
    is_done,
    parse_edit_answer,
    parse_idea,
    parse_json_block,
    parse_latex_block,
)
from reviewer.form import parse_review  # noqa: E402


def _verdict(text: str) -> None:
    if not isinstance(parse_json_block(text).get("novel"), bool):
        raise FormatError("no novel: true/false")


def _edit(text: str) -> None:
    if not edits_done(text):
        parse_edit_answer(text)


def _reflection(text: str) -> None:
    try:
        parse_idea(text)
    except FormatError:
        if not is_done(text):
            raise


# The parser of each stage's answers (the stage names of base.llm's call records).
PARSERS = {"idea": parse_idea, "reflection": _reflection, "novelty": _verdict, "experiment": _edit,
           "review": parse_review, "review:meta": parse_review, "review:reflection": parse_review}


def valid(stage: str, text: str) -> bool | None:
    """Whether a recorded answer parses for its stage; None for a stage without a known parser."""
    parse = PARSERS.get(stage) or (parse_latex_block if stage.startswith(("section", "writeup", "paper")) else None)
    if parse is None:
        return None
    try:
        parse(text)
        return True
    except (FormatError, ValueError):
        return False


def report(home: Path, out: Path) -> int:
    """Print valid answers per stage, runs and papers of the session in `out`; 0 when every stage ran."""
    con = sqlite3.connect(home / "store.sqlite")
    (session_id,) = con.execute("SELECT id FROM sessions WHERE out_dir=?", (str(out.resolve()),)).fetchone()
    rows = con.execute("SELECT stage, response, response_format, completion_tokens, latency_s FROM llm_calls "
                       "WHERE session_id=? ORDER BY created", (session_id,)).fetchall()
    per_stage: dict[str, Counter] = {}
    tokens = seconds = 0.0
    for stage, text, form, completion, latency in rows:
        c = per_stage.setdefault(stage, Counter())
        c["calls"] += 1
        c[f"form {form or 'none'}"] += 1
        ok = valid(stage, text)
        c["valid" if ok else ("unknown" if ok is None else "invalid")] += 1
        tokens += completion or 0
        seconds += latency or 0
    print("\nanswers per stage (each recorded answer parsed again; an experiment answer counts when it is "
          "well-formed, and whether its edit applied shows in the attempts below):")
    for stage, c in per_stage.items():
        forms = ", ".join(f"{k[5:]} {v}" for k, v in c.items() if k.startswith("form "))
        shown = f"{c['valid']}/{c['calls']} valid" if not c["unknown"] else f"{c['calls']} calls"
        print(f"  {stage:18} {shown:14} (response_format: {forms})")
    if seconds:
        print(f"  {int(tokens)} completion tokens in {seconds:.0f} s of calls: {tokens / seconds:.1f} tokens/s")
    summary_path = out / "summary.json"
    if not summary_path.is_file():
        print(f"no summary.json in {out}")
        return 1
    summary = json.loads(summary_path.read_text())
    runs = [r for idea in summary["ideas"] for r in idea.get("runs", [])]
    tally = Counter(r["status"] for r in runs)
    print(f"\nsession {summary['status']}" + (f": {summary.get('reason')}" if summary.get("reason") else ""))
    print(f"ideas: {len(summary['ideas'])}; run attempts: {len(runs)} ({tally['ok']} succeeded, {tally['failed']} "
          f"failed in the sandbox, {tally['no_edit']} without a usable edit)")
    for idea in summary["ideas"]:
        paper = idea.get("paper") or {}
        review = idea.get("review") or {}
        where = paper.get("pdf") or (f"{paper['status']} ({paper.get('reason')})" if paper else "no paper")
        verdict = (f"Overall {review['Overall']}, {review['Decision']}" if review.get("Overall") is not None
                   else review.get("error") or "not reviewed")
        print(f"  {idea['name']}: {idea['status']}; paper: {where}; review: {verdict}")
    return 0


# Three sessions, so that every stage meets the model: in the first the model proposes the ideas, writes the
# code and the papers (a 135M model's edits rarely apply); in the second the LLM-free evolve proposer supplies an
# idea whose run succeeds and the model writes its paper; in the third the same run (reused) gets the template's
# own paper, which compiles, and the model reviews it.
SESSIONS = {
    "ideas-and-code": lambda a: ["--ideas", str(a.ideas), "--runs", str(a.runs), "--attempts", "2",
                                 "--reflections", "1"],
    "papers": lambda a: ["--proposer", "evolve", "--writer", "llm", "--ideas", "1", "--runs", "1"],
    "reviews": lambda a: ["--proposer", "evolve", "--writer", "template", "--ideas", "1", "--runs", "1"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ideas", type=int, default=2, help="ideas of the model's own session")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--structured", default="auto")
    ap.add_argument("--max-tokens", type=int, default=768, help="per answer (the server's default is its context)")
    ap.add_argument("--home", type=Path, default=ROOT / ".scientist")
    ap.add_argument("--out", type=Path, default=ROOT / ".scientist" / "demo-llm")
    ap.add_argument("--server-python", default=str(ROOT / ".venv-llm" / "bin" / "python"))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    port = free_port()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"starting llama-cpp-python's server with SmolLM2-135M-Instruct on 127.0.0.1:{port}", flush=True)
    server = start_server(args.server_python, port, args.threads, 8192, log=args.out / "llama_server.log")
    codes = {}
    try:
        for name, extra in SESSIONS.items():
            argv = [str(ROOT / ".venv" / "bin" / "scientist"), "run", "--template", "discopop", "--model",
                    "openai/smollm2", "--api-base", f"http://127.0.0.1:{port}/v1", *extra(args),
                    "--review-ensemble", "1", "--review-reflections", "1", "--retries", "1",
                    "--structured", args.structured, "--max-tokens", str(args.max_tokens),
                    "--home", str(args.home), "--out", str(args.out / name)]
            print(f"\n== {name}: " + " ".join(argv), flush=True)
            codes[name] = subprocess.run(argv).returncode
    finally:
        server.terminate()
        server.wait(timeout=30)
    print("\nserver stopped; " + "; ".join(f"{name} exited {code}" for name, code in codes.items()))
    failed = 0
    for name in codes:
        print(f"\n== {name}")
        failed |= report(args.home, args.out / name)
    raise SystemExit(failed or max((c for c in codes.values() if c not in (0, 1)), default=0))


if __name__ == "__main__":
    main()
