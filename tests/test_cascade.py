"""The evaluation cascade (--cascade): a template's [screen], the promotion rule, what a screen costs, and the
cascade end to end through `scientist eval` and `scientist run` (the real sandbox and sealed evaluator)."""

import json
import math
import sqlite3

import pytest
from conftest import DPO_SOURCE, ROOT, scientist, write_tiny_template

from base.cascade import SCREEN_ALPHA, decide, screen_cost
from base.llm import Budget, BudgetExceeded
from base.template import TemplateError, load_template
from scientist.digest import digest_from_run, render_markdown

GROKKING = ROOT / "tests" / "fixtures" / "grokking"  # a template that declares no [screen]
# The tiny DiscoPOP's screen: its 2 seeds, half its 40 steps.
TINY_SCREEN = {"screen.config.train": "{ steps = 20 }"}
# Learns nothing: zero gradients, so the policy stays the reference and gains nothing.
FLAT = """def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    return 0.0 * (policy_chosen_logps - policy_rejected_logps)
"""


# ---------------------------------------------------------------- the template's [screen]


def test_a_screen_leaves_the_full_runs_keys_as_they_were_and_gives_screens_keys_of_their_own(tmp_path):
    shipped = load_template("discopop")
    toml = (ROOT / "templates" / "discopop" / "template.toml").read_text()
    bare = write_tiny_template(tmp_path / "a")  # then the same settings without a [screen]
    (bare / "template.toml").write_text(toml.replace("screen.seeds = 4\n", "").replace(
        "screen.config.train = { steps = 100 }\n", ""))
    unscreened = load_template(str(bare))
    assert unscreened.spec.screen is None and shipped.spec.screen is not None
    assert unscreened.content_hash() == shipped.content_hash()  # declaring a screen invalidates no stored run
    screened = shipped.screened()
    assert screened.spec.screened and screened.spec.seeds == 4
    assert screened.spec.config["train"]["steps"] == 100 and shipped.spec.config["train"]["steps"] == 400
    assert screened.content_hash() != shipped.content_hash()
    # Laid over the profile as it is: the gpu profile's batch stays, its steps are the screen's.
    gpu = shipped.with_profile("gpu").screened()
    assert gpu.spec.config["train"] == {**shipped.spec.config["train"], "steps": 100, "batch_size": 1024}
    assert gpu.spec.profile == "gpu" and gpu.content_hash() not in (screened.content_hash(),
                                                                    shipped.with_profile("gpu").content_hash())
    with pytest.raises(TemplateError, match="declares no \\[screen\\]"):
        unscreened.screened()


@pytest.mark.parametrize("line,message", [
    ("screen.config.train = { stepz = 10 }", "field 'screen.config.train.stepz': [config.train] has no 'stepz'"),
    ("screen.seeds = 0", "field 'screen.seeds': Input should be greater than 0"),
    ("screen.budget = 3", "field 'screen.budget': Extra inputs are not permitted"),
    ("screen.margin = 2", "field 'screen.margin': Input should be less than 1"),
])
def test_a_screen_the_template_cannot_take_is_one_line_when_it_loads(tmp_path, line, message):
    root = write_tiny_template(tmp_path)
    toml = root / "template.toml"
    old = "screen.seeds = 4" if line.startswith("screen.seeds") else "screen.config.train = { steps = 100 }"
    toml.write_text(toml.read_text().replace(old, line))
    with pytest.raises(TemplateError) as e:
        load_template(str(root))
    assert message in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- the rules


def test_the_promotion_rule_screens_out_only_what_is_significantly_worse_than_the_bar():
    bar = [1.00, 1.02, 0.98, 1.01]
    assert decide([0.99, 1.01, 0.97, 1.02], bar, "max", "baseline").promoted  # as good: promoted
    assert decide([1.50, 1.60, 1.55, 1.52], bar, "max", "baseline").promoted  # better: promoted
    out = decide([0.10, 0.12, 0.09, 0.11], bar, "max", "baseline")
    assert not out.promoted and out.p_value < SCREEN_ALPHA and "significantly worse than the screen of baseline" \
        in out.why and "0.1" not in out.why  # the reason carries no screen number: it is no result
    # A minimised metric: lower is better, so the mirror image.
    assert not decide([1.50, 1.60, 1.55, 1.52], bar, "min", "x").promoted
    assert decide([0.10, 0.12, 0.09, 0.11], bar, "min", "x").promoted
    # A slightly worse screen on 2 seeds is within reach: 2 seeds cannot tell it apart.
    assert decide([0.95, 0.99], [1.00, 1.02], "max", "x").promoted
    # 2% below the bar on precise screens: within the margin (5% of the bar), which a short run's ranking needs
    # (BENCHMARKS.md, "The evaluation cascade"); with no margin it would be screened out.
    close, precise = [0.980, 0.981, 0.979, 0.980], [1.000, 1.001, 0.999, 1.000]
    assert decide(close, precise, "max", "x").promoted and not decide(close, precise, "max", "x", margin=0).promoted
    assert decide(close, precise, "max", "x").margin == pytest.approx(0.05)
    one = decide([0.1], bar, "max", "x")  # untestable: promoted, never kept out on no evidence
    assert one.promoted and math.isnan(one.p_value)
    # A constant screen against a varying bar is tested on the bar's spread (Welch).
    assert not decide([0.0, 0.0], [0.8, 0.82], "max", "x").promoted


def test_a_screen_costs_the_fraction_of_a_run_the_baselines_screen_took():
    assert screen_cost({"total": 14.0, "prepare": 4.0}, {"total": 45.0, "prepare": 5.0}) == 0.25
    assert screen_cost({"total": 50.0}, {"total": 40.0}) == 1.0       # never more than a full evaluation
    assert screen_cost(None, {"total": 40.0}) == 1.0                 # unknown: a full evaluation's
    assert screen_cost({"total": 0.0001}, {"total": 40.0}) == 0.01   # never free


def test_the_evaluation_budget_counts_screens_at_their_cost():
    budget = Budget(evaluations=2)
    for _ in range(4):  # four screens at a quarter: one evaluation's worth
        budget.reserve_evaluation(0.25)
    budget.reserve_evaluation()  # and a full one: 2 used
    with pytest.raises(BudgetExceeded, match="evaluation budget of 2 reached"):
        budget.reserve_evaluation(0.25)
    budget.refund_evaluation(0.25)  # a screen reused from the store computed nothing
    budget.reserve_evaluation(0.25)
    assert budget.evaluated == pytest.approx(2.0)


# ---------------------------------------------------------------- end to end


def _runs(home, **where) -> list[dict]:
    con = sqlite3.connect(home / "store.sqlite")
    con.row_factory = sqlite3.Row
    sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(f"{k}=?" for k in where) if where else "")
    return [dict(r) for r in con.execute(sql + " ORDER BY id", tuple(where.values()))]


def test_eval_cascade_screens_promotes_and_screens_out_with_its_rule_shown(home, tmp_path):
    templates = tmp_path / "templates"
    write_tiny_template(templates, **TINY_SCREEN)
    # The shipped loss again (its screen is the baseline's, its full run the baseline's: reused, not recomputed),
    # and a loss that learns nothing.
    for name, source in (("dpo_copy", DPO_SOURCE), ("flat", FLAT)):
        (tmp_path / f"{name}.py").write_text(source)
    r = scientist("eval", "--template", "discopop", "--templates-dir", str(templates), "--home", str(home),
                  "--cascade", "-c", str(tmp_path / "dpo_copy.py"), "-c", str(tmp_path / "flat.py"),
                  "--out", str(tmp_path / "out"))
    assert r.code == 0, r.text
    assert "the template's [screen]: {" in r.out and '"config": {"train": {"steps": 20}}' in r.out
    assert ("promoted unless its screen is significantly worse than the bar's less a margin of 5% of it (one-sided "
            "Welch's t-test") in r.out
    lines = {ln.split(":")[0].split()[-1]: ln for ln in r.out.splitlines() if " screen reward_gain_at_kl " in ln}
    assert "(baseline's screen; margin " in lines["dpo_copy"] and "one-sided: promoted to the full" in lines["dpo_copy"]
    assert "(baseline's screen; margin " in lines["flat"] and "one-sided: screened out" in lines["flat"]
    assert "screens: 2, promoted: 1, screened out: 1" in r.out
    # The table lists the full result only; the screened-out candidate has a row with no number.
    (flat_row,) = [ln for ln in r.out.splitlines() if "not fully evaluated" in ln]
    assert "flat" in flat_row and "screened out" in flat_row and "0." not in flat_row
    screens = [x for x in _runs(home, kind="screen") if x["out_dir"].startswith(str(tmp_path))]
    assert len(screens) == 2  # the baseline's and flat's (dpo_copy's is the baseline's, reused)
    full_hashes = {x["template_hash"] for x in _runs(home) if x["kind"] != "screen"}
    assert len({x["template_hash"] for x in screens}) == 1 and screens[0]["template_hash"] not in full_hashes
    assert not [x for x in _runs(home) if x["out_dir"] == str(tmp_path / "out" / "flat")]  # no full run of it
    assert (tmp_path / "out" / "flat" / "screen" / "final_info.json").is_file()
    assert (tmp_path / "out" / "dpo_copy" / "final_info.json").is_file()
    # A template that declares no [screen] cannot cascade: one line, exit 2, nothing computed.
    for command in (("eval",), ("run", "--proposer", "evolve", "--no-writeup", "--sandbox", "bwrap")):
        bad = scientist(*command, "--template", str(GROKKING), "--home", str(tmp_path / "h"), "--cascade")
        assert bad.code == 2 and "declares no [screen], which --cascade needs" in bad.err, bad.text
        assert len(bad.err.strip().splitlines()) == 1 and "Traceback" not in bad.text


def test_evolve_run_with_the_cascade_budgets_screens_and_resumes_without_recomputing(home, tmp_path):
    templates = tmp_path / "templates"
    write_tiny_template(templates, **TINY_SCREEN)
    out = tmp_path / "out"

    def run(*extra: str):
        return scientist("run", "--template", "discopop", "--templates-dir", str(templates), "--home", str(home),
                         "--out", str(out), "--proposer", "evolve", "--ideas", "1", "--runs", "1", "--attempts", "2",
                         "--seed", "10", "--cascade",
                         "--no-writeup", "--no-review", "--log-json", *extra, timeout=400)

    def mine(kind: str) -> list[dict]:
        """The runs this session computed (a reused run keeps the folder it was computed in), the baseline's not."""
        return [x for x in _runs(home, kind=kind) if x["out_dir"].startswith(str(out))
                and not x["out_dir"].startswith(str(out / "baseline"))]

    first = run("--budget-evaluations", "1")
    assert first.code == 3, first.text  # stopped at the budget
    summary = json.loads((out / "summary.json").read_text())
    cost = summary["cascade"]["cost"]
    assert 0 < cost <= 1 and "evaluation budget of 1 reached" in summary["reason"]
    screens, full = mine("screen"), mine("candidate")
    used = len(screens) * cost + len(full)
    # Screens count at their cost: the budget stopped the session once one evaluation's worth was used, not before.
    last = 1.0 if full and (not screens or full[-1]["id"] > screens[-1]["id"]) else cost
    assert used >= 1 > used - last, (len(screens), len(full), cost)
    decided = sum(json.loads(line)["event"] == "run_screened" for line in first.out.splitlines())
    # The stop left the idea unfinished; its screens were spent all the same, and the summary counts them.
    assert summary["cascade"]["screened"] == decided >= 1, (summary["cascade"], decided)

    second = run()  # the same command again: it resumes
    assert second.code == 0, second.text
    events = [json.loads(line) for line in second.out.splitlines()]
    screened = [e for e in events if e["event"] == "run_screened"]
    assert all(e["cached"] for e in screened[:decided])  # the first session's screens, reused
    summary = json.loads((out / "summary.json").read_text())
    c = summary["cascade"]
    entries = summary["ideas"][0]["runs"]
    assert c["screened"] == sum(e["screen"] is not None for e in entries) >= len(screened)
    assert c["promoted"] + c["screened_out"] == len(screened) and c["rule"].startswith("promoted unless")
    assert c["screened_out"] >= 1  # --seed 10's first loss is a symmetric pull to z = 0: it learns nothing
    screen_ids = {x["id"] for x in _runs(home, kind="screen")}
    full_ids = {x["id"] for x in _runs(home) if x["kind"] != "screen"}
    for e in entries:  # a result is a full run's; a screen is recorded as a screen, with no number
        assert e["screen"]["run_id"] in screen_ids and "metric" not in e["screen"]
        if e["status"] == "screened_out":
            assert e["metric"] is None and e["run_id"] is None and e["reason"].startswith("screened out: ")
        if e["metric"] is not None:
            assert e["run_id"] in full_ids and e["screen"]["promoted"]
    assert summary["best"] is None or summary["best"]["run_id"] in full_ids
    keys = [x["run_key"] for x in mine("screen") + mine("candidate") if x["status"] == "ok"]
    assert len(keys) == len(set(keys))  # nothing computed twice
    counts = len(_runs(home))

    third = run()  # and again: everything reused, nothing computed
    assert third.code == 0, third.text
    assert len(_runs(home)) == counts
    md = render_markdown(digest_from_run(out, home=home))  # what `scientist report` writes
    assert f"{c['screened']} screened, {c['promoted']} promoted to the full evaluation" in md
    assert "screened out: its screen" not in md.split("## Failures")[1]  # a screened-out candidate did not fail


def test_a_nights_screens_are_counted_apart_from_its_runs_and_failures(tmp_path):
    from base.store import Store
    from scientist.campaign_digest import _night_failures, _night_runs, _night_screens
    from scientist.digest import CampaignIndex, Link, NightRow, render_index

    store = Store(tmp_path / "store.sqlite")
    sid, _, _ = store.open_session(out_dir=tmp_path / "night", template="discopop", proposer="evolve", model=None,
                                   args={}, campaign="c")
    idea = store.save_idea(sid, 0, {"name": "evolve_000"}, status="done")

    def run(kind: str, n: int) -> int:
        rid = store.start_run(kind=kind, template="discopop", template_hash=kind, sources={"loss.py": str(n)},
                              seeds=2, sandbox="process", out_dir=tmp_path / str(n))
        store.finish_run(rid, status="ok")
        return rid

    screened, full, out, failed = run("screen", 1), run("candidate", 2), run("screen", 3), run("screen", 4)
    store.save_step(idea, 1, 1, status="ok", run_id=full, screen_run_id=screened)
    store.save_step(idea, 2, 1, status="screened_out", reason="screened out: its screen is worse", screen_run_id=out)
    store.save_step(idea, 2, 2, status="failed", reason="its screen failed: nan", screen_run_id=failed)
    night = {"id": sid}
    assert _night_screens(store, night) == (3, 1)  # three attempts screened, one promoted to a full run
    # Screened out is no failure; a screen that failed is.
    assert [f.reason for f in _night_failures(store, night, [])] == ["its screen failed: nan"]
    assert _night_runs(store, night, None, []) == {full}  # the runs a night computed are full runs; screens apart
    html = render_index(CampaignIndex(title="c", campaign="c", template="discopop", metric="m", direction="max",
                                      nights=[NightRow(index=1, label="001", status="complete", screened=3,
                                                       promoted=1, digest=Link(text="digest"))]))
    assert 'data-screens="3/1"' in html and "3 screened, 1 promoted" in html
