"""`scientist run` end to end: the real litellm stack against a scripted local server, the real sandbox.

Each test reads what a user would read: the exit code, the one-line messages,
summary.json and ideas.json, and the SQLite store.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import ROOT, scientist
from llm_server import ScriptedServer

IDEA = {"name": "smooth_dpo", "title": "Label-smoothed DPO", "hypothesis": "Flipped labels hurt; smoothing helps.",
        "experiment": "Add label smoothing eps=0.1 to DPO.", "interestingness": 6, "feasibility": 9, "novelty": 4}
IDEA_ANSWER = "THOUGHT: worth a try.\n\nNEW IDEA JSON:\n```json\n" + json.dumps(IDEA) + "\n```"
DONE_ANSWER = "I am done\n\nNEW IDEA JSON:\n```json\n" + json.dumps(IDEA) + "\n```"
SMOOTHED = "    return -0.9 * jax.nn.log_sigmoid(beta * rho) - 0.1 * jax.nn.log_sigmoid(-beta * rho)"


def edit(old: str, new: str, path: str = "loss.py", why: str = "An edit.") -> str:
    return f"{why}\n\n{path}\n<<<<<<< SEARCH\n{old}\n=======\n{new}\n>>>>>>> REPLACE\n"


EDIT_SMOOTH = edit("    return -jax.nn.log_sigmoid(beta * rho)", SMOOTHED, why="Smooth the labels.")
EDIT_NO_MATCH = edit("    return something_else", "    return 1", why="A wrong edit.")
EDIT_CRASH = edit(SMOOTHED, '    raise RuntimeError("oops")', why="Break it.")
EDIT_FIX = edit(SMOOTHED, SMOOTHED.replace("0.9", "0.95").replace("0.1 *", "0.05 *"), why="Smaller eps.")


@pytest.fixture(scope="module")
def run_home(tmp_path_factory, tiny_templates):
    """A home whose baseline is already computed, shared by this module's runs."""
    home = tmp_path_factory.mktemp("run_home")
    r = scientist("baseline", "--template", "discopop", "--templates-dir", str(tiny_templates), "--home", str(home))
    assert r.code == 0, r.text
    return home


def run(tiny_templates, home, out, *args, timeout=400):
    return scientist("run", "--template", "discopop", "--templates-dir", str(tiny_templates), "--home", str(home),
                     "--out", str(out), "--no-writeup", "--no-review", *args, timeout=timeout)


def llm_args(url: str, *extra: str) -> tuple:
    return ("--model", "openai/test-model", "--api-base", url, *extra)


def db(home):
    return sqlite3.connect(home / "store.sqlite")


def test_llm_run_recovers_from_bad_answers_and_resumes_without_paying(tiny_templates, run_home, tmp_path):
    out = tmp_path / "out"
    script = ["not json at all", {"status": 429}, IDEA_ANSWER, DONE_ANSWER,
              EDIT_NO_MATCH, {"status": 500}, EDIT_SMOOTH, EDIT_CRASH, EDIT_FIX, "I am done"]
    with ScriptedServer(script) as server:
        r = run(tiny_templates, run_home, out, *llm_args(server.url, "--ideas", "1", "--runs", "3",
                                                          "--reflections", "2"))
        requests = server.requests
    assert r.code == 0, r.text
    assert "Traceback" not in r.text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["proposer"] == "llm" and summary["model"] == "openai/test-model"
    (idea,) = summary["ideas"]
    assert idea["name"] == "smooth_dpo" and idea["status"] == "done"
    assert [(e["run"], e["attempt"], e["status"]) for e in idea["runs"]] == [(1, 1, "ok"), (2, 1, "failed"),
                                                                             (2, 2, "ok")]
    assert "loss raised while being traced: RuntimeError: oops" in idea["runs"][1]["reason"]
    best = idea["best"]["metric"]
    assert best["comparison"]["test"].startswith("Welch") and best["n"] == 2 and "normalized" in best
    assert best["comparison"]["p_value_holm"] >= best["comparison"]["p_value"]
    assert summary["baseline"]["n"] == 2 and summary["llm_calls"] == 8
    assert (out / "00_smooth_dpo" / "run_1" / "final_info.json").is_file()
    assert SMOOTHED in (out / "00_smooth_dpo" / "run_1" / "candidate" / "loss.py").read_text()
    assert "Failed: loss raised" in (out / "00_smooth_dpo" / "notes.md").read_text()
    assert json.loads((out / "ideas.json").read_text())[0]["title"] == "Label-smoothed DPO"

    # What went back to the model: the parse error, the failed match with the file's nearest lines,
    # and the crash with its reason.
    sent = [m["content"] for req in requests for m in req["messages"] if m["role"] == "user"]
    assert any("could not be used" in s and "JSON" in s for s in sent)
    assert any("SEARCH" in s and "log_sigmoid(beta * rho)" in s and "could not be used" in s for s in sent)
    assert any("attempt 1 of 4 failed: loss raised" in s for s in sent)

    with db(run_home) as con:
        calls = con.execute("SELECT stage, prompt_tokens, cost_usd FROM llm_calls WHERE response != ''").fetchall()
        steps = con.execute("SELECT run_idx, attempt, status FROM steps ORDER BY id").fetchall()
        session = con.execute("SELECT status FROM sessions WHERE out_dir=?", (str(out.resolve()),)).fetchone()
    assert {c[0] for c in calls} >= {"idea", "reflection", "experiment"} and all(c[1] > 0 for c in calls)
    assert steps == [(1, 1, "ok"), (2, 1, "failed"), (2, 2, "ok")] and session == ("complete",)

    # The same command again: everything is replayed from the store; no request reaches the model.
    with ScriptedServer([]) as server:
        again = run(tiny_templates, run_home, out, *llm_args(server.url, "--ideas", "1", "--runs", "3",
                                                              "--reflections", "2"))
        assert server.requests == []
    assert again.code == 0, again.text
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["ideas"][0]["best"] == idea["best"] and resumed["llm_calls"] == 8


def test_edit_to_a_fixed_file_is_refused_and_explained(tiny_templates, run_home, tmp_path):
    harness_edit = edit("import time", "import time, os", path="harness.py", why="Speed up the harness.")
    other = {**IDEA, "name": "faster_training", "title": "Train with fewer steps",
             "hypothesis": "Most of the benefit arrives early in training.", "experiment": "Halve the steps."}
    script = ["```json\n" + json.dumps(other) + "\n```", harness_edit, "I am done"]
    with ScriptedServer(script) as server:
        r = run(tiny_templates, run_home, tmp_path / "out",
                *llm_args(server.url, "--ideas", "1", "--runs", "2", "--reflections", "0"))
        sent = [m["content"] for req in server.requests for m in req["messages"] if m["role"] == "user"]
    assert r.code == 0, r.text
    assert any("harness.py" in s and "loss.py" in s and "could not be used" in s for s in sent)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["ideas"][0]["status"] == "failed" and summary["ideas"][0]["best"] is None


def test_seed_ideas_start_the_archive_and_a_repeat_of_one_is_dropped(tiny_templates, run_home, tmp_path):
    seeds = json.loads((tiny_templates / "discopop" / "seed_ideas.json").read_text())
    repeat = "```json\n" + json.dumps(seeds[1]) + "\n```"  # the model proposes a seed idea again
    with ScriptedServer([repeat, repeat]) as server:
        r = run(tiny_templates, run_home, tmp_path / "out", *llm_args(server.url, "--ideas", "1", "--reflections", "0"))
        first = [m["content"] for m in server.requests[0]["messages"] if m["role"] == "user"][0]
    # Shown to the model as ideas already had, as The AI Scientist seeds its archive.
    assert all(seed["title"] in first for seed in seeds)
    assert r.code == 0, r.text
    assert f"near-duplicate of {seeds[1]['name']}" in r.out
    ideas = json.loads((tmp_path / "out" / "ideas.json").read_text())
    assert [(i["name"], i["status"]) for i in ideas] == [(seeds[1]["name"], "duplicate")] * 2


def test_unreachable_api_base_stops_cleanly_and_keeps_the_baseline(tiny_templates, run_home, tmp_path):
    out = tmp_path / "out"
    r = run(tiny_templates, run_home, out, "--model", "openai/test-model", "--api-base", "http://127.0.0.1:9/v1",
            "--retries", "1")
    assert r.code == 1 and "unreachable" in r.text and "Traceback" not in r.text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped" and "unreachable" in summary["reason"]
    assert summary["baseline"]["mean"] > 0 and summary["ideas"] == []


def test_model_that_never_answers_validly_stops_with_a_reason(tiny_templates, run_home, tmp_path):
    with ScriptedServer(["no idea here"] * 4) as server:
        r = run(tiny_templates, run_home, tmp_path / "out", *llm_args(server.url, "--reflections", "0"))
    assert r.code == 1 and "gave no valid idea in 4 tries" in r.text and "Traceback" not in r.text
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["status"] == "stopped"


def test_dollar_budget_stops_cleanly_and_says_so(tiny_templates, run_home, tmp_path):
    # gpt-4o-mini is in litellm's bundled price map, so the scripted answer has a real cost.
    with ScriptedServer([IDEA_ANSWER] * 3) as server:
        r = run(tiny_templates, run_home, tmp_path / "out", "--model", "openai/gpt-4o-mini", "--api-base",
                server.url, "--budget-usd", "0.000001", "--reflections", "2")
    assert r.code == 3, r.text
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "stopped" and "budget" in summary["reason"] and summary["cost_usd"] > 0
    assert "stopped" in r.out and "budget" in r.out


@pytest.mark.parametrize("args,message", [
    (("--budget-usd", "-1"), "--budget-usd must be at least 0"),
    (("--budget-minutes", "0"), "--budget-minutes must be greater than 0"),
    (("--model", "anthropic/claude-3-5-sonnet-20241022"), "ANTHROPIC_API_KEY"),
    (("--proposer", "llm"), "--proposer llm needs --model"),
    (("--ideas", "0"), "--ideas must be at least 1"),
    (("--workers", "0"), "--workers must be at least 1"),
    (("--executor", "slurm"), "--executor must be 'local' or 'ray', not 'slurm'"),
    (("--ray-address", "127.0.0.1:9"), "--ray-address needs --executor ray"),
    (("--executor", "ray", "--ray-address", "127.0.0.1:9"), "no Ray cluster answers at 127.0.0.1:9"),
    (("--executor", "ray", "--ray-address", "head:port"), "--ray-address head:port: expected HOST:PORT"),
    (("--profile", "tpu"), "unknown profile 'tpu' (known: cpu, gpu)"),
])
def test_bad_run_flags_give_one_line(tiny_templates, tmp_path, monkeypatch, args, message):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    r = run(tiny_templates, tmp_path / "h", tmp_path / "out", *args)
    assert r.code == 2 and message in r.err and "Traceback" not in r.text
    assert len(r.err.strip().splitlines()) == 1


def test_evolve_run_killed_midway_resumes_without_redoing_runs(tiny_templates, run_home, tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "scientist", "run", "--template", "discopop", "--templates-dir",
            str(tiny_templates), "--home", str(run_home), "--out", str(out), "--proposer", "evolve",
            "--ideas", "2", "--runs", "2", "--no-writeup", "--no-review"]
    cli = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**os.environ, "COLUMNS": "200"})
    first = out / "00_evolve_000" / "run_1" / "final_info.json"

    def first_recorded() -> bool:
        with db(run_home) as con:
            return con.execute("SELECT 1 FROM runs WHERE out_dir=? AND status='ok'",
                               (str(first.parent),)).fetchone() is not None

    deadline = time.time() + 180
    while time.time() < deadline and not first_recorded():
        time.sleep(0.2)
    assert first_recorded()
    cli.send_signal(signal.SIGKILL)
    cli.wait()

    r = scientist("run", "--template", "discopop", "--templates-dir", str(tiny_templates), "--home",
                  str(run_home), "--out", str(out), "--proposer", "evolve", "--ideas", "2", "--runs", "2",
                  "--no-writeup", "--no-review", "--log-json", timeout=400)
    assert r.code == 0, r.text
    events = [json.loads(line) for line in r.out.splitlines()]
    assert events[0]["event"] == "session" and events[0]["resumed"] is True
    done = [e for e in events if e["event"] == "run_done"]
    assert len(done) == 4 and done[0]["cached"] is True and all(e["status"] == "ok" for e in done)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and [i["status"] for i in summary["ideas"]] == ["done", "done"]
    key = json.loads(first.read_text())  # the killed session's first result is the resumed one's
    assert summary["ideas"][0]["runs"][0]["metric"]["values"] == key["metrics"]["reward_gain_at_kl"]["values"]
    with db(run_home) as con:
        ok_runs = con.execute("SELECT run_key, COUNT(*) FROM runs WHERE status='ok' GROUP BY run_key").fetchall()
        running = con.execute("SELECT COUNT(*) FROM runs WHERE status='running'").fetchone()[0]
    assert all(n == 1 for _, n in ok_runs)  # no finished run was computed twice
    assert running == 0  # the run the kill cut short is marked interrupted, not left running


def test_two_llm_ideas_in_flight_share_one_exact_budget(tiny_templates, tmp_path):
    # Two ideas' conversations call the model from two threads at once; every call is counted once.
    # A home of its own: the module's shared home holds other tests' ideas, which would make these repeats.
    run_home = tmp_path / "home"
    ideas = iter([dict(IDEA), {**IDEA, "name": "margin_sweep", "title": "Hinge margins over temperature",
                               "hypothesis": "A margin hinge resists overfitting to noisy comparisons.",
                               "experiment": "Replace the logistic by a squared hinge with margin one."}])

    def answer(body):
        last = body["messages"][-1]["content"]
        if "Come up with the next impactful" in last:
            return "THOUGHT: new.\n\nNEW IDEA JSON:\n```json\n" + json.dumps(next(ideas)) + "\n```"
        if last.startswith("Round "):  # a reflection: repeat the idea just proposed
            previous = [m["content"] for m in body["messages"] if m["role"] == "assistant"][-1]
            return "I am done\n\n" + previous.split("\n\n", 1)[1]
        if "Plan and implement run 1 " in last:
            time.sleep(0.5)  # both ideas' first edits are asked for before either is answered
            eps = "0.1" if "Label-smoothed" in json.dumps(body["messages"]) else "0.2"
            return edit("    return -jax.nn.log_sigmoid(beta * rho)",
                        SMOOTHED.replace("0.9", str(1 - float(eps))).replace("0.1 *", f"{eps} *"))
        return "I am done"

    out = tmp_path / "out"
    with ScriptedServer(answer) as server:
        r = run(tiny_templates, run_home, out, "--model", "openai/gpt-4o-mini", "--api-base", server.url,
                "--ideas", "2", "--runs", "2", "--reflections", "2", "--workers", "2", "--log-json")
    assert r.code == 0, r.text
    events = [json.loads(line) for line in r.out.splitlines() if line.startswith("{")]
    summary = json.loads((out / "summary.json").read_text())
    assert [i["status"] for i in summary["ideas"]] == ["done", "done"]
    with db(run_home) as con:
        (session_id,) = con.execute("SELECT id FROM sessions WHERE out_dir=?", (str(out.resolve()),)).fetchone()
        costs = [c for (c,) in con.execute("SELECT cost_usd FROM llm_calls WHERE session_id=?", (session_id,))]
    assert summary["llm_calls"] == len(costs) == len(server.requests) and sum(costs) > 0
    assert summary["cost_usd"] == pytest.approx(sum(costs), rel=1e-12)
    spend = max(e.get("spend_usd", 0) for e in events)  # the shared budget's tally, as reported
    assert spend == pytest.approx(sum(costs), rel=1e-9)
    # The two ideas' runs computed at the same time.
    starts = {e["idea"]: e["time"] for e in events if e["event"] == "run_computing"}
    done = {e["idea"]: e["time"] for e in events if e["event"] == "run_done"}
    (a, b) = sorted(starts)
    assert starts[a] < done[b] and starts[b] < done[a], events


CONTEXT_400 = {"status": 400, "message": "This model's maximum context length is 8192 tokens. However, you "
                                         "requested 9059 tokens (8291 in the messages, 768 in the completion)."}


def test_a_full_context_ends_its_idea_and_a_later_stop_keeps_the_ideas_that_ended(tiny_templates, run_home,
                                                                                    tmp_path):
    # Idea 1's edit request no longer fits the model's context (what SmolLM2's 8k context did in make demo-llm):
    # that idea fails at once, with the server's words, and the session goes on to idea 2, whose run succeeds;
    # idea 3's request is refused (401), which stops the session, and summary.json still lists ideas 1 and 2.
    # (ideas unlike those of the module's other sessions, which the shared home's archive holds)
    talk = {**IDEA, "name": "long_talk", "title": "Curriculum over prompt lengths",
             "hypothesis": "Ordering training prompts by length stabilises the reward margin early on.",
             "experiment": "Sort the batches by prompt length for the first half of training."}
    clip = {**IDEA, "name": "margin_clip", "title": "Clipped preference margins",
             "hypothesis": "Capping the log-ratio margin at 5 keeps outlier pairs from dominating.",
             "experiment": "Clip rho to [-5, 5] before the sigmoid."}
    script = [IDEA_ANSWER.replace(json.dumps(IDEA), json.dumps(talk)), CONTEXT_400,
              IDEA_ANSWER.replace(json.dumps(IDEA), json.dumps(clip)), EDIT_SMOOTH,
              {"status": 401, "message": "invalid api key"}]
    out = tmp_path / "out"
    with ScriptedServer(script) as server:
        r = run(tiny_templates, run_home, out, *llm_args(server.url, "--reflections", "0", "--ideas", "3",
                                                          "--runs", "1", "--attempts", "4"))
        requests = len(server.requests)
    assert r.code == 1 and "Traceback" not in r.text and requests == len(script)  # no attempt re-sent the 400
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped" and "HTTP 401" in summary["reason"]
    first, second = summary["ideas"]
    assert (first["name"], first["status"], second["name"], second["status"]) == (
        "long_talk", "failed", "margin_clip", "done")
    assert first["reason"].startswith("run 1, attempt 1: the idea's conversation no longer fits the model's context")
    assert "maximum context length is 8192 tokens" in first["reason"]
    assert [e["status"] for e in first["runs"]] == ["no_edit"] and second["runs"][0]["status"] == "ok"
