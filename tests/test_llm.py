"""Model calls through real litellm against a local scripted OpenAI-compatible server: no mocks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest
from llm_server import ScriptedServer

from base.llm import LLM, Budget, BudgetExceeded, LLMError

MODEL = "openai/test-model"
HELLO = [{"role": "user", "content": "Say hello."}]


class MemoryRecorder:
    """The Recorder protocol over a dict, standing in for the SQLite store."""

    def __init__(self) -> None:
        self.calls: dict[str, dict] = {}

    def lookup(self, key: str) -> dict | None:
        return self.calls.get(key)

    def record(self, key: str, call: dict) -> None:
        self.calls[key] = call


def make_llm(url: str, recorder: MemoryRecorder | None = None, budget: Budget | None = None, **kw) -> LLM:
    """An LLM on the test model with fast retries."""
    kw = {"max_retries": 3, "backoff_s": 0.01, "timeout_s": 10.0, **kw}
    return LLM(MODEL, recorder=recorder or MemoryRecorder(), budget=budget or Budget(), api_base=url, **kw)


def closed_port_url() -> str:
    """An api base on a local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_plain_answer_is_returned_and_recorded():
    rec = MemoryRecorder()
    with ScriptedServer(["hello there friend"]) as server:
        llm = make_llm(server.url, rec)
        assert llm.chat("ideas", HELLO, temperature=0.2) == "hello there friend"
    assert len(server.requests) == 1
    sent = server.requests[0]
    assert sent["model"] == "test-model" and sent["messages"] == HELLO and sent["temperature"] == 0.2
    (call,) = rec.calls.values()
    assert call["stage"] == "ideas" and call["model"] == MODEL and call["messages"] == HELLO
    assert call["response"] == "hello there friend"
    assert call["prompt_tokens"] == 2 and call["completion_tokens"] == 3
    assert call["cost_usd"] >= 0 and call["latency_s"] > 0 and call["created"] <= time.time()
    assert set(call) == {"stage", "model", "messages", "response", "prompt_tokens", "completion_tokens",
                         "cost_usd", "latency_s", "created", "response_format"}
    assert call["response_format"] is None and "response_format" not in sent  # no schema, no response_format


def test_null_content_becomes_empty_string():
    with ScriptedServer([{"content": None}]) as server:
        assert make_llm(server.url).chat("s", HELLO) == ""


def test_rate_limit_and_server_error_are_retried():
    with ScriptedServer([{"status": 429}, {"status": 500}, "finally"]) as server:
        assert make_llm(server.url).chat("s", HELLO) == "finally"
    assert len(server.requests) == 3


def test_retries_exhausted_raise_one_line_error():
    with ScriptedServer([{"status": 500}] * 3) as server:
        with pytest.raises(LLMError) as err:
            make_llm(server.url, max_retries=2).chat("s", HELLO)
    assert len(server.requests) == 3
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"model {MODEL} at {server.url} failed after 2 retries: HTTP 500")


def test_client_errors_are_not_retried():
    with ScriptedServer([{"status": 401}, {"status": 400}]) as server:
        llm = make_llm(server.url)
        for status in (401, 400):
            with pytest.raises(LLMError, match=f"failed: HTTP {status}"):
                llm.chat("s", HELLO)
    assert len(server.requests) == 2


def test_unreachable_api_base_fails_quickly():
    url = closed_port_url()
    start = time.monotonic()
    with pytest.raises(LLMError) as err:
        make_llm(url, max_retries=1).chat("s", HELLO)
    assert time.monotonic() - start < 5
    assert str(err.value) == f"model {MODEL} at {url} unreachable after 1 retries: connection refused"


def test_recorded_call_is_replayed_without_request_or_cost():
    rec, budget = MemoryRecorder(), Budget()
    with ScriptedServer(["first answer"]) as server:
        assert make_llm(server.url, rec, budget).chat("s", HELLO) == "first answer"
        # A new LLM over the same recorder, as after a restart; the script is exhausted, so a request would fail.
        spent = budget.spent_usd
        assert make_llm(server.url, rec, budget).chat("s", HELLO) == "first answer"
    assert len(server.requests) == 1 and len(rec.calls) == 1 and budget.spent_usd == spent


def test_replay_needs_no_budget():
    rec = MemoryRecorder()
    with ScriptedServer(["kept"]) as server:
        make_llm(server.url, rec).chat("s", HELLO)
        assert make_llm(server.url, rec, Budget(usd=0)).chat("s", HELLO) == "kept"
    assert len(server.requests) == 1


def test_key_makes_identical_prompts_distinct():
    rec = MemoryRecorder()
    with ScriptedServer(["a", "b"]) as server:
        llm = make_llm(server.url, rec)
        answers = [llm.chat("s", HELLO, key="0"), llm.chat("s", HELLO, key="1"), llm.chat("s", HELLO, key="0")]
    assert answers == ["a", "b", "a"] and len(server.requests) == 2 and len(rec.calls) == 2


def test_zero_dollar_budget_stops_before_any_request():
    with ScriptedServer(["never"]) as server:
        with pytest.raises(BudgetExceeded, match=r"dollar budget of \$0.00 reached"):
            make_llm(server.url, budget=Budget(usd=0)).chat("s", HELLO)
    assert server.requests == []


def test_exhausted_minutes_stop_before_any_request():
    budget = Budget(minutes=1, started=time.time() - 61)
    with ScriptedServer(["never"]) as server:
        with pytest.raises(BudgetExceeded, match="time budget of 1 min reached"):
            make_llm(server.url, budget=budget).chat("s", HELLO)
    assert server.requests == []


def test_time_budget_stops_a_retry_wait_instead_of_sleeping_past_it():
    # 15 s of budget left; after the 500 the policy would wait 20 s: it stops at once instead.
    with ScriptedServer([{"status": 500}, "never"]) as server:
        start = time.monotonic()
        with pytest.raises(BudgetExceeded, match=r"time budget of 0.25 min would run out in a \d+ s wait to retry"):
            make_llm(server.url, budget=Budget(minutes=0.25), backoff_s=20).chat("s", HELLO)
    assert time.monotonic() - start < 5 and len(server.requests) == 1


FIRST_CALL = """
import os, sys
before = dict(os.environ)
from base.llm import LLM, Budget
assert dict(os.environ) == before, "importing base.llm changed os.environ"
assert "litellm" not in sys.modules
class Forgetful:
    def lookup(self, key): return None
    def record(self, key, call): pass
llm = LLM("openai/test-model", recorder=Forgetful(), budget=Budget(), api_base=sys.argv[1], max_retries=0)
print(llm.chat("s", [{"role": "user", "content": "hi"}]))
"""


def test_import_leaves_the_environment_alone_and_the_first_call_fetches_no_price_map():
    # litellm fetches its price map from LITELLM_MODEL_COST_MAP_URL when imported without
    # LITELLM_LOCAL_MODEL_COST_MAP; point that URL at a local server and check nothing asks it.
    asked: list[str] = []

    class PriceMap(BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    prices = ThreadingHTTPServer(("127.0.0.1", 0), PriceMap)
    Thread(target=prices.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    env["LITELLM_MODEL_COST_MAP_URL"] = f"http://127.0.0.1:{prices.server_address[1]}/prices.json"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    try:
        with ScriptedServer(["priced locally"]) as server:
            p = subprocess.run([sys.executable, "-c", FIRST_CALL, server.url], capture_output=True, text=True,
                               env=env, timeout=120)
    finally:
        prices.shutdown()
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "priced locally" and asked == []


def test_budget_accumulates_spending():
    budget = Budget(usd=1.0)
    budget.add(0.4)
    budget.check()
    budget.add(0.6)
    with pytest.raises(BudgetExceeded, match=r"\$1.0000 spent"):
        budget.check()


def test_check_names_missing_key(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    llm = LLM("anthropic/claude-x", recorder=MemoryRecorder(), budget=Budget())
    with pytest.raises(LLMError, match="model anthropic/claude-x needs ANTHROPIC_API_KEY in the environment"):
        llm.check()


def test_check_passes_with_key_or_api_base(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    LLM("anthropic/claude-x", recorder=MemoryRecorder(), budget=Budget()).check()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    make_llm("http://127.0.0.1:1/v1").check()


def test_check_rejects_model_without_provider():
    with pytest.raises(LLMError, match="cannot tell its provider"):
        LLM("no-provider-model", recorder=MemoryRecorder(), budget=Budget()).check()


def test_slow_answer_still_works():
    with ScriptedServer([{"delay": 0.5, "content": "slowly"}]) as server:
        rec = MemoryRecorder()
        assert make_llm(server.url, rec).chat("s", HELLO) == "slowly"
    assert next(iter(rec.calls.values()))["latency_s"] >= 0.5


def test_timeout_is_retried_then_reported():
    with ScriptedServer([{"delay": 1.0, "content": "late"}, {"delay": 1.0, "content": "late"}]) as server:
        with pytest.raises(LLMError, match=r"failed after 1 retries: timed out after 0.3 s"):
            make_llm(server.url, max_retries=1, timeout_s=0.3).chat("s", HELLO)
    assert len(server.requests) == 2


def test_script_can_answer_by_prompt():
    def script(body: dict) -> str:
        return body["messages"][-1]["content"].upper()

    with ScriptedServer(script) as server:
        llm = make_llm(server.url)
        assert llm.chat("s", [{"role": "user", "content": "abc"}]) == "ABC"
        assert llm.chat("s", [{"role": "user", "content": "xyz"}]) == "XYZ"


def test_api_key_is_never_recorded(monkeypatch):
    marker = "sk-MARKER-5f3a9c"
    monkeypatch.setenv("OPENAI_API_KEY", marker)
    rec = MemoryRecorder()
    with ScriptedServer(["one", {"status": 429}, "two"]) as server:
        llm = make_llm(server.url, rec)
        llm.chat("s", HELLO)
        llm.chat("s", [{"role": "user", "content": "again"}])
    assert len(rec.calls) == 2
    for key, call in rec.calls.items():
        assert marker not in key and marker not in json.dumps(call)


def test_placeholder_key_without_environment_key(monkeypatch):
    # A local server without OPENAI_API_KEY set still gets called (with a placeholder key).
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with ScriptedServer(["ok"]) as server:
        assert make_llm(server.url).chat("s", HELLO) == "ok"
