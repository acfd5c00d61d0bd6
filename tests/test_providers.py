"""Anthropic's Messages API through the real client stack: litellm's anthropic/... route against the scripted
server (tests/llm_server.py), with Anthropic's faults: overloaded 529, rate limit 429 with Retry-After, a body
that is not JSON, and an answer whose JSON is malformed. A `scientist run` and a `scientist review` go through it."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from conftest import scientist
from llm_server import ScriptedServer
from test_llm import MemoryRecorder
from test_review import BODY, make_pdf, review_json

from base.llm import LLM, Budget, LLMError, MemoryForms, Schema

MODEL = "anthropic/claude-test"
SCHEMA = Schema("thing", {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
                          "additionalProperties": False})
FAULTS = [{"status": 529}, {"status": 429, "retry_after": 1}, {"raw": "{not json"}]
IDEA = {"name": "smooth_dpo", "title": "Label-smoothed DPO", "hypothesis": "Smoothing resists noisy labels.",
        "experiment": "Add label smoothing eps=0.1 to DPO.", "interestingness": 6, "feasibility": 9, "novelty": 4}
SMOOTHED = "    return -0.9 * jax.nn.log_sigmoid(beta * rho) - 0.1 * jax.nn.log_sigmoid(-beta * rho)"


def anthropic(server: ScriptedServer, rec=None, **kw) -> LLM:
    kw = {"max_retries": 4, "backoff_s": 0.01, "timeout_s": 20.0, **kw}
    return LLM(MODEL, recorder=rec or MemoryRecorder(), budget=Budget(), api_base=server.anthropic_url, **kw)


def test_messages_api_with_overload_rate_limit_and_a_body_that_is_not_json(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    rec = MemoryRecorder()
    with ScriptedServer([*FAULTS, "hello from claude"]) as server:
        llm = anthropic(server, rec)
        llm.check()  # an api base needs no key
        start = time.monotonic()
        assert llm.chat("s", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."}],
                        temperature=0.3) == "hello from claude"
        waited = time.monotonic() - start
    assert len(server.requests) == 4 and waited >= 1.0  # three retries, one of them after Retry-After: 1
    sent = server.requests[-1]
    assert sent["model"] == "claude-test" and sent["system"][0]["text"] == "Be brief." and sent["max_tokens"] > 0
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi."}]}]
    (call,) = rec.calls.values()
    assert call["model"] == MODEL and call["prompt_tokens"] == 3 and call["completion_tokens"] == 3


def test_a_schema_goes_as_a_forced_tool_and_comes_back_as_json():
    forms = MemoryForms()
    with ScriptedServer(['{"a": 7}', '{"a": 8}']) as server:
        assert anthropic(server, forms=forms).chat("s", [{"role": "user", "content": "JSON"}], schema=SCHEMA) \
            == '{"a": 7}'
        assert anthropic(server, forms=forms).form() == "json_schema"
        anthropic(server, forms=forms).chat("s", [{"role": "user", "content": "more"}], schema=SCHEMA)
    for body in server.requests:
        (tool,) = body["tools"]
        assert tool["input_schema"] == SCHEMA.schema and body["tool_choice"] == {"type": "tool", "name": tool["name"]}


def test_overload_that_lasts_fails_with_one_line():
    with ScriptedServer([{"status": 529}] * 3) as server:
        with pytest.raises(LLMError) as err:
            anthropic(server, max_retries=2).chat("s", [{"role": "user", "content": "Hi."}])
    assert len(server.requests) == 3 and "\n" not in str(err.value)
    assert str(err.value).startswith(f"model {MODEL} at {server.anthropic_url} failed after 2 retries:")
    assert "overloaded" in str(err.value)


@pytest.fixture(scope="module")
def run_home(tmp_path_factory, tiny_templates):
    home = tmp_path_factory.mktemp("anthropic_home")
    r = scientist("baseline", "--template", "discopop", "--templates-dir", str(tiny_templates), "--home", str(home))
    assert r.code == 0, r.text
    return home


def test_scientist_run_through_the_messages_api(tiny_templates, run_home, tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    edit = json.dumps({"thought": "Smooth the labels.", "done": False, "edits": [
        {"path": "loss.py", "search": "    return -jax.nn.log_sigmoid(beta * rho)", "replace": SMOOTHED}]})
    done = json.dumps({"thought": "One run says enough.", "done": True, "edits": []})
    malformed = '{"name": "smooth_dpo", "title": "Label-smoothed DPO",'  # cut short: not a JSON object
    script = [*FAULTS, malformed, json.dumps(IDEA), {"status": 529}, edit, done]
    out = tmp_path / "out"
    with ScriptedServer(script) as server:
        r = scientist("run", "--template", "discopop", "--templates-dir", str(tiny_templates), "--home",
                      str(run_home), "--out", str(out), "--no-writeup", "--no-review", "--model", MODEL,
                      "--api-base", server.anthropic_url, "--ideas", "1", "--runs", "2", "--reflections", "0",
                      "--retries", "4", timeout=400)
        requests = server.requests
    assert r.code == 0, r.text
    assert "Traceback" not in r.text and "Provider List" not in r.text
    assert len(requests) == len(script)  # every fault was answered by a retry or a re-ask
    assert all(body["tools"] and body["tool_choice"]["type"] == "tool" for body in requests)  # json_schema via tools
    summary = json.loads((out / "summary.json").read_text())
    (idea,) = summary["ideas"]
    assert idea["name"] == "smooth_dpo" and idea["status"] == "done" and summary["llm_calls"] == 4
    assert [(e["run"], e["status"]) for e in idea["runs"]] == [(1, "ok")]
    assert SMOOTHED in (out / "00_smooth_dpo" / "run_1" / "candidate" / "loss.py").read_text()
    reask = requests[4]["messages"][-1]["content"][0]["text"]
    assert "could not be used" in reask and "JSON" in reask  # the malformed JSON went back with its error
    with sqlite3.connect(run_home / "store.sqlite") as con:
        calls = con.execute("SELECT stage, model, response_format, prompt_tokens FROM llm_calls ORDER BY created")
        calls = calls.fetchall()
        form = con.execute("SELECT form FROM response_formats WHERE model=?", (MODEL,)).fetchone()
    assert [c[0] for c in calls] == ["idea", "idea", "experiment", "experiment"]
    assert all(c[1] == MODEL and c[2] == "json_schema" and c[3] > 0 for c in calls) and form == ("json_schema",)


def test_scientist_review_through_the_messages_api(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    pdf = make_pdf(tmp_path / "pdfs", "clean", BODY)
    good = json.dumps({"thought": "Modest.", **review_json(4)})
    script = [*FAULTS, '{"thought": "oops", "Overall": 4,,}', good]
    with ScriptedServer(script) as server:
        r = scientist("review", pdf, "--model", MODEL, "--api-base", server.anthropic_url, "--protocol", "ensemble",
                      "--ensemble", "1", "--reflections", "0", "--home", str(tmp_path / "home"), "--out",
                      str(tmp_path / "reviews.jsonl"), "--max-tokens", "700", timeout=300)
        requests = server.requests
    assert r.code == 0, r.text
    assert "Traceback" not in r.text and len(requests) == len(script)
    assert {body["max_tokens"] for body in requests} == {700}  # --max-tokens reaches the wire
    (res,) = [json.loads(line) for line in (tmp_path / "reviews.jsonl").read_text().splitlines()]
    assert res["status"] == "ok" and res["model"] == MODEL and res["review"]["Overall"] == 4
    assert res["usage"]["calls"] == 2 and "thought" not in res["review"]
    assert "could not be used" in requests[-1]["messages"][-1]["content"][0]["text"]
    with sqlite3.connect(tmp_path / "home" / "store.sqlite") as con:
        stages = con.execute("SELECT stage, model, response_format FROM llm_calls").fetchall()
    assert stages == [("review", MODEL, "json_schema")] * 2
