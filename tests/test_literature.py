"""The literature check: a local scripted API standing in for Semantic Scholar and OpenAlex."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import scientist
from llm_server import ScriptedServer
from test_run import edit

from base.llm import Budget, BudgetExceeded
from scientist.literature import LiteratureError, search

S2_HIT = {"data": [{"title": "Direct Preference Optimization", "year": 2023, "venue": "NeurIPS",
                    "url": "https://example.org/dpo", "citationCount": 1000, "abstract": "DPO."}]}
OPENALEX_HIT = {"results": [{"display_name": "Discovering Preference Optimization Algorithms",
                             "publication_year": 2024, "id": "https://openalex.org/W1", "cited_by_count": 50,
                             "primary_location": {"source": {"display_name": "NeurIPS"}}}]}


class LiteratureServer:
    """Answers GET requests from a script of (status, json body); records the paths asked. 429s carry Retry-After."""

    def __init__(self, script, retry_after: str = "0"):
        self.script, self.paths = list(script), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.paths.append(self.path)
                status, body = outer.script.pop(0) if outer.script else (500, {"error": "script exhausted"})
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if status == 429:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()


def test_semantic_scholar_search_backs_off_on_429():
    with LiteratureServer([(429, {"message": "slow down"}), (200, S2_HIT)]) as api:
        papers = search("semantic-scholar", "preference losses", base_url=api.url, backoff_s=0.01)
    assert [p.title for p in papers] == ["Direct Preference Optimization"] and papers[0].year == 2023
    assert len(api.paths) == 2 and api.paths[0].startswith("/graph/v1/paper/search?query=preference+losses")


def test_retry_after_is_honoured():
    with LiteratureServer([(429, {}), (200, S2_HIT)], retry_after="1") as api:
        start = time.monotonic()
        papers = search("semantic-scholar", "q", base_url=api.url, backoff_s=0.01)
        waited = time.monotonic() - start
    assert len(papers) == 1 and len(api.paths) == 2
    assert 1.0 <= waited < 3  # the server's second, not the 0.01 s backoff


def test_time_budget_stops_a_retry_wait():
    # Retry-After asks for 2 minutes (capped at 60 s): more than the 15 s budget left, so no waiting at all.
    with LiteratureServer([(429, {}), (200, S2_HIT)], retry_after="120") as api:
        start = time.monotonic()
        with pytest.raises(BudgetExceeded, match=r"time budget of 0.25 min would run out in a \d+ s wait"):
            search("semantic-scholar", "q", base_url=api.url, backoff_s=0.01, budget=Budget(minutes=0.25))
    assert time.monotonic() - start < 5 and len(api.paths) == 1


def test_openalex_search_parses_works():
    with LiteratureServer([(200, OPENALEX_HIT)]) as api:
        (paper,) = search("openalex", "discovered losses", base_url=api.url)
    assert paper.title.startswith("Discovering") and paper.venue == "NeurIPS" and paper.citations == 50
    assert api.paths[0].startswith("/works?search=discovered+losses")


@pytest.mark.parametrize("script,message", [
    ([(503, {})] * 3, "failed after 2 retries: HTTP 503"),
    ([(403, {})], "refused the search: HTTP 403"),
])
def test_search_failures_are_one_line(script, message):
    with LiteratureServer(script) as api:
        with pytest.raises(LiteratureError, match=message) as e:
            search("semantic-scholar", "q", base_url=api.url, retries=2, backoff_s=0.01)
    assert "\n" not in str(e.value)


def test_run_drops_an_idea_the_literature_already_has(tiny_templates, tmp_path):
    known = {"name": "plain_dpo", "title": "Direct Preference Optimization", "hypothesis": "DPO works.",
             "experiment": "Run DPO.", "interestingness": 2, "feasibility": 10, "novelty": 1}
    fresh = {"name": "margin_gate", "title": "A margin-gated logistic loss", "hypothesis": "Gating helps.",
             "experiment": "Gate the logistic loss by the margin.", "interestingness": 7, "feasibility": 8,
             "novelty": 7}
    script = ["```json\n" + json.dumps(known) + "\n```",
              '```json\n{"novel": false, "reason": "This is DPO itself."}\n```',
              "```json\n" + json.dumps(fresh) + "\n```",
              '```json\n{"novel": true, "reason": "No paper gates the loss this way."}\n```',
              edit("    return -jax.nn.log_sigmoid(beta * rho)", "    return -jax.nn.log_sigmoid(beta * rho - 0.1)"),
              "I am done"]
    out = tmp_path / "out"
    with ScriptedServer(script) as llm, LiteratureServer([(429, {}), (200, S2_HIT), (200, {"data": []})]) as api:
        r = scientist("run", "--template", "discopop", "--templates-dir", str(tiny_templates), "--home",
                      str(tmp_path / "home"), "--out", str(out), "--model", "openai/test-model", "--api-base",
                      llm.url, "--ideas", "1", "--runs", "1", "--reflections", "0", "--literature",
                      "semantic-scholar", "--literature-url", api.url, "--no-writeup", "--no-review", timeout=400)
        sent = [m["content"] for req in llm.requests for m in req["messages"] if m["role"] == "user"]
    assert r.code == 0, r.text
    assert "not novel: This is DPO itself." in r.out
    assert any("Direct Preference Optimization (2023, NeurIPS, 1000 citations)" in s for s in sent)
    summary = json.loads((out / "summary.json").read_text())
    assert [i["name"] for i in summary["ideas"]] == ["margin_gate"] and summary["ideas"][0]["status"] == "done"
    ideas = {i["name"]: i for i in json.loads((out / "ideas.json").read_text())}
    assert ideas["plain_dpo"]["status"] == "not_novel" and ideas["plain_dpo"]["reason"] == "This is DPO itself."
    assert ideas["plain_dpo"]["literature"][0]["title"] == "Direct Preference Optimization"
    assert ideas["margin_gate"]["literature"] == []


def test_literature_needs_a_model(tiny_templates, tmp_path):
    r = scientist("run", "--template", "discopop", "--templates-dir", str(tiny_templates), "--home",
                  str(tmp_path), "--proposer", "evolve", "--literature", "openalex")
    assert r.code == 2 and "--literature needs a model" in r.err
