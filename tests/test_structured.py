"""Structured outputs through the real litellm stack against the scripted server playing each kind of server:
one that takes OpenAI's json_schema, llama-cpp-python's (json_object + schema only; 500 on json_schema), and one
that takes no response_format (400). The form found is remembered in the SQLite store; answers are validated."""

from __future__ import annotations

import json
import re

import pytest
from llm_server import ScriptedServer
from test_llm import MODEL, MemoryRecorder, make_llm

from base.formats import (
    EDITS_SCHEMA,
    IDEA_SCHEMA,
    Edit,
    FormatError,
    edits_done,
    edits_schema,
    parse_edit_answer,
)
from base.llm import LLMError, Schema
from base.records import ArchiveEntry
from base.store import Store
from base.template import load_template
from reviewer import ai_scientist
from reviewer.form import REVIEW_SCHEMA
from reviewer.pdf import Paper
from reviewer.review import ReviewSettings
from scientist.proposers.llm import LLMProposer

ASK = [{"role": "user", "content": "Give a JSON object."}]
SCHEMA = Schema("thing", {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
                          "additionalProperties": False})
IDEA = {"thought": "worth a try", "name": "smooth_dpo", "title": "Label-smoothed DPO",
        "hypothesis": "Smoothing helps.", "experiment": "Add eps=0.1.", "interestingness": 6, "feasibility": 9,
        "novelty": 4}


def forms(tmp_path):
    return Store(tmp_path / "store.sqlite").response_forms()


def sent_forms(server) -> list[str | None]:
    return [(r.get("response_format") or {}).get("type") for r in server.requests]


@pytest.mark.parametrize("kind,form,probed", [
    ("openai", "json_schema", ["json_schema"]),
    ("llama-cpp", "json_object", ["json_schema", "json_object"]),
    ("plain", "none", ["json_schema", "json_object", None]),
])
def test_the_form_a_server_takes_is_found_once_and_remembered_in_the_store(tmp_path, kind, form, probed):
    with ScriptedServer(['{"a": 1}', '{"a": 2}', '{"a": 3}'], kind=kind) as server:
        llm = make_llm(server.url, forms=forms(tmp_path))
        assert llm.chat("s", ASK, schema=SCHEMA) == '{"a": 1}'
        assert sent_forms(server) == probed and server.refused == len(probed) - 1  # refusals are not retried
        # Another process (a new store connection, a new LLM) asks straight in the remembered form.
        again = make_llm(server.url, forms=forms(tmp_path))
        assert again.form() == form
        assert again.chat("s", [{"role": "user", "content": "again"}], schema=SCHEMA) == '{"a": 2}'
        assert sent_forms(server)[len(probed):] == [None if form == "none" else form]
        # A call without a schema never sends a response_format, whatever the server takes.
        assert again.chat("s", [{"role": "user", "content": "text"}]) == '{"a": 3}'
        assert "response_format" not in server.requests[-1]
    if form == "json_schema":
        sent = server.requests[0]["response_format"]["json_schema"]
        assert sent == {"name": "thing", "schema": SCHEMA.schema, "strict": True}
    if form == "json_object":
        assert server.requests[1]["response_format"] == {"type": "json_object", "schema": SCHEMA.schema}
    row = Store(tmp_path / "store.sqlite").db.execute("SELECT model, api_base, form, detail FROM response_formats")
    (model, api_base, stored, detail) = row.fetchone()
    assert (model, api_base, stored) == (MODEL, server.url, form)
    assert ("HTTP 500" in detail) == (kind == "llama-cpp") and ("HTTP 400" in detail) == (kind == "plain")


def test_calls_record_the_form_they_were_asked_in(tmp_path):
    rec = MemoryRecorder()
    with ScriptedServer(['{"a": 1}', "plain"], kind="llama-cpp") as server:
        llm = make_llm(server.url, rec)
        llm.chat("s", ASK, schema=SCHEMA)
        llm.chat("s", [{"role": "user", "content": "no schema"}])
    assert sorted(str(c["response_format"]) for c in rec.calls.values()) == ["None", "json_object"]


def test_structured_on_refuses_a_server_without_structured_outputs(tmp_path):
    store_forms = forms(tmp_path)
    with ScriptedServer(['{"a": 1}'], kind="plain") as server:
        with pytest.raises(LLMError) as err:
            make_llm(server.url, structured="on", forms=store_forms).chat("s", ASK, schema=SCHEMA)
    message = str(err.value)
    assert "\n" not in message and "takes no structured output" in message and "HTTP 400" in message
    assert "--structured auto or off" in message
    assert store_forms.get(MODEL, server.url) is None and server.refused == 2


def test_structured_off_never_sends_a_schema(tmp_path):
    store_forms = forms(tmp_path)
    with ScriptedServer(['{"a": 1}']) as server:
        make_llm(server.url, structured="off", forms=store_forms).chat("s", ASK, schema=SCHEMA)
    assert sent_forms(server) == [None] and store_forms.get(MODEL, server.url) is None


def test_a_rate_limit_while_probing_is_retried_not_taken_for_a_refusal(tmp_path):
    with ScriptedServer([{"status": 429}, {"status": 503}, '{"a": 1}'], kind="llama-cpp") as server:
        llm = make_llm(server.url)
        assert llm.chat("s", ASK, schema=SCHEMA) == '{"a": 1}'
    # json_schema refused (500, once), then json_object: 429 and 503 retried on the same form.
    assert sent_forms(server) == ["json_schema", "json_object", "json_object", "json_object"]
    assert llm.form() == "json_object"


def test_bad_flag_value_is_one_line():
    with pytest.raises(ValueError, match="--structured must be one of auto, on, off"):
        make_llm("http://127.0.0.1:9/v1", structured="always")


def test_schema_answers_are_still_validated_and_re_asked(tiny_templates):
    # The server takes the schema, and the model follows its shape, but a novelty of 123 is off the scale:
    # the error goes back, and the second answer is used.
    bad = {**IDEA, "novelty": 123}
    with ScriptedServer([json.dumps(bad), json.dumps(IDEA)]) as server:
        proposer = LLMProposer(make_llm(server.url), load_template(tiny_templates / "discopop"), reflections=0)
        idea = proposer.next_idea(0, [ArchiveEntry(idea={"name": "dpo", "title": "DPO"})])
    assert idea.name == "smooth_dpo" and idea.novelty == 4
    assert sent_forms(server) == ["json_schema", "json_schema"]
    schema = server.requests[0]["response_format"]["json_schema"]["schema"]
    assert schema == IDEA_SCHEMA.schema and schema["properties"]["novelty"]["enum"] == list(range(1, 11))
    reask = server.requests[1]["messages"][-1]["content"]
    assert "novelty" in reask and "from 1 to 10" in reask and "123" in reask


def test_reflection_in_json_ends_on_i_am_done_in_the_thought(tiny_templates):
    done = {**IDEA, "thought": "Nothing to change. I am done"}
    with ScriptedServer([json.dumps(IDEA), json.dumps(done)], kind="llama-cpp") as server:
        proposer = LLMProposer(make_llm(server.url), load_template(tiny_templates / "discopop"), reflections=3)
        assert proposer.next_idea(0, []).name == "smooth_dpo"
    assert sent_forms(server) == ["json_schema", "json_object", "json_object"]  # two ideas asked, no third


def test_json_edits_and_text_edits_give_the_same_edits():
    text = "Smooth.\n\nloss.py\n<<<<<<< SEARCH\n    return a\n=======\n    return b\n>>>>>>> REPLACE\n"
    as_json = json.dumps({"thought": "Smooth.", "done": False,
                          "edits": [{"path": "`loss.py`", "search": "    return a\n", "replace": "    return b"}]})
    assert parse_edit_answer(text) == parse_edit_answer(as_json) == [Edit("loss.py", "    return a", "    return b")]
    assert edits_done(json.dumps({"thought": "ok", "done": True, "edits": []})) and edits_done("I am done")
    with pytest.raises(FormatError, match="has no edits"):
        parse_edit_answer(json.dumps({"thought": "ok", "done": False, "edits": []}))
    with pytest.raises(FormatError, match="edit 1 of the JSON answer"):
        parse_edit_answer(json.dumps({"done": False, "edits": [{"path": "loss.py"}]}))
    assert EDITS_SCHEMA.schema["required"] == ["thought", "done", "edits"]


def test_what_a_small_constrained_model_writes_is_read_or_named():
    """What SmolLM2 wrote under llama-cpp-python's grammar (BENCHMARKS 13): raw newlines inside strings are read;
    an edit answer cut at the token limit says where its JSON broke, not "no SEARCH/REPLACE blocks"; the schemas
    carry what such a grammar can enforce (integer ranges as enums, the name's pattern, the editable paths)."""
    raw = ('{"thought": "line one\nline two", "done": false, "edits": [{"path": "loss.py", '  # a raw newline
           '"search": "    return a", "replace": "    return b"}]}')
    assert "\n" in raw and parse_edit_answer(raw) == [Edit("loss.py", "    return a", "    return b")]
    with pytest.raises(FormatError, match="invalid JSON in the JSON edits"):
        parse_edit_answer('{"thought": "cut", "done": false, "edits": [{"path": "loss.py", "search": "  ret')
    assert not edits_done('{"thought": "cut", "done": tr')
    props = IDEA_SCHEMA.schema["properties"]
    assert props["feasibility"]["enum"] == list(range(1, 11)) and "maximum" not in props["feasibility"]
    assert re.fullmatch(props["name"]["pattern"], "margin_dpo") and not re.fullmatch(props["name"]["pattern"], "_")
    path = edits_schema(("loss.py",)).schema["properties"]["edits"]["items"]["properties"]["path"]
    assert path["enum"] == ["loss.py"] and "enum" not in EDITS_SCHEMA.schema["properties"]["edits"]["items"][
        "properties"]["path"]
    assert edits_schema(must_edit=True).schema["properties"]["edits"]["minItems"] == 1
    assert "minItems" not in EDITS_SCHEMA.schema["properties"]["edits"]


def review_answer(overall: int, thought: str = "fine") -> str:
    form = {"thought": thought, "Summary": "A study.", "Strengths": ["clear"], "Weaknesses": ["small"],
            "Originality": 2, "Quality": 2, "Clarity": 3, "Significance": 2, "Questions": [], "Limitations": ["toy"],
            "Ethical Concerns": False, "Soundness": 2, "Presentation": 3, "Contribution": 2, "Overall": overall,
            "Confidence": 4, "Decision": "Reject"}
    return json.dumps(form)


def test_ai_scientist_review_with_json_schema_answers(tmp_path):
    # Two reviews, the chair, one reflection that is done: all pure JSON in llama-cpp-python's form.
    script = [review_answer(3), review_answer(5), review_answer(4), review_answer(4, "I am done")]
    with ScriptedServer(script, kind="llama-cpp") as server:
        llm = make_llm(server.url, forms=forms(tmp_path))
        settings = ReviewSettings(ensemble=2, reflections=2, protocol="ai-scientist")
        paper = Paper(path=tmp_path / "p.txt", pages=["A paper."], captions=[], truncated=False, note="",
                      page_markers=False)
        res = ai_scientist.review(llm, paper, settings)
    assert res["review"]["Overall"] == 4 and res["reflection_rounds"] == 1
    assert all("thought" not in r for r in res["ensemble"])  # the thought is not part of the review
    assert sent_forms(server) == ["json_schema"] + ["json_object"] * 4
    assert server.requests[-1]["response_format"]["schema"] == REVIEW_SCHEMA.schema
    assert REVIEW_SCHEMA.schema["properties"]["Decision"]["enum"] == ["Accept", "Reject"]


def test_flag_values_are_one_line_errors(tmp_path, tiny_templates):
    from conftest import scientist

    r = scientist("run", "--template", "discopop", "--templates-dir", str(tiny_templates), "--home", str(tmp_path),
                  "--no-writeup", "--model", "openai/test-model", "--api-base", "http://127.0.0.1:9/v1",
                  "--structured", "always")
    assert r.code == 2 and "--structured must be 'auto', 'on' or 'off', not 'always'" in r.err
    assert "Traceback" not in r.text
    r = scientist("run", "--template", "discopop", "--templates-dir", str(tiny_templates), "--home", str(tmp_path),
                  "--no-writeup", "--model", "openai/test-model", "--api-base", "http://127.0.0.1:9/v1",
                  "--max-tokens", "0")
    assert r.code == 2 and r.err.strip().endswith("--max-tokens must be at least 1") and "Traceback" not in r.text


def test_the_campaign_key_reaches_the_nights_config(tmp_path):
    from scientist.campaign import load_campaign

    path = tmp_path / "c.toml"
    path.write_text('name = "c"\ntemplate = "discopop"\nmodel = "openai/x"\nstructured = "off"\nmax_tokens = 900\n')
    assert load_campaign(path).structured == "off" and load_campaign(path).max_tokens == 900
    path.write_text('name = "c"\ntemplate = "discopop"\nmodel = "openai/x"\nreview_protocol = "ensemble"\n')
    assert load_campaign(path).review_protocol == "ensemble"
    path.write_text('name = "c"\ntemplate = "discopop"\nreview_protocol = "fast"\n')
    with pytest.raises(Exception, match="field 'review_protocol'"):
        load_campaign(path)
    path.write_text('name = "c"\ntemplate = "discopop"\nstructured = "sometimes"\n')
    with pytest.raises(Exception, match="field 'structured'"):
        load_campaign(path)


def test_max_tokens_goes_to_the_server_only_when_set():
    with ScriptedServer(['{"a": 1}', '{"a": 2}']) as server:
        make_llm(server.url, max_tokens=64).chat("s", ASK, schema=SCHEMA)
        make_llm(server.url).chat("s", [{"role": "user", "content": "b"}])
    assert server.requests[0]["max_tokens"] == 64 and "max_tokens" not in server.requests[1]
