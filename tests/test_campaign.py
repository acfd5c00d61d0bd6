"""Nightly campaigns through the real CLI: the campaign file, nights that accumulate, one night at a time,
kill -9 mid-night, confirmation on fresh seeds, the digest, a scripted-model night."""

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, scientist, warm_home

from base.llm import Budget, BudgetExceeded
from base.records import SessionSummary
from base.stats import holm
from base.store import Run, Store
from base.template import load_template
from sandbox.backends import resolve
from scientist import campaign as cp
from scientist import campaign_store as records
from scientist.campaign_digest import write_digest
from scientist.progress import JsonReporter


def write_campaign(path: Path, templates: Path, extra: str = "", **keys) -> Path:
    settings = {"name": '"tiny-nightly"', "template": '"discopop"', "templates_dir": f'"{templates}"',
                "proposer": '"evolve"', "seeds": "2", "confirm_seeds": "3", "ideas": "2", "runs": "1",
                "sandbox": '"bwrap"', "writeup": "false", **keys}
    body = "\n".join(f"{k} = {v}" for k, v in settings.items() if v is not None)
    path.write_text(body + "\n\n[budget]\nevaluations = 4\nminutes = 20\n\n[digest]\n"
                    "on_written = \"cp {markdown} {html} $(dirname {index})/..\"\n" + extra)
    return path


def plt_image(path: Path):
    import matplotlib.image

    return matplotlib.image.imread(path)[..., :3].mean(-1)


def nights(home: Path) -> list[dict]:
    if not (home / "store.sqlite").is_file():
        return []
    with sqlite3.connect(home / "store.sqlite") as db:
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute("SELECT id, out_dir, status, args FROM sessions"
                                                " WHERE campaign IS NOT NULL ORDER BY id")]
        except sqlite3.OperationalError:  # the store is being created
            return []


def idea_ids(home: Path, session_id: int) -> list[int]:
    with sqlite3.connect(home / "store.sqlite") as db:
        return [i for (i,) in db.execute("SELECT id FROM ideas WHERE session_id=? AND status != 'duplicate'",
                                         (session_id,))]


@pytest.mark.parametrize("body,message", [
    ('template = "discopop"\n', "field 'name': Field required"),
    ('name = "x y"\ntemplate = "discopop"\n', "field 'name': String should match pattern"),
    ('name = "x"\ntemplate = "discopop"\nworkers = 0\n', "field 'workers': Input should be greater than or equal to 1"),
    ('name = "x"\ntemplate = "discopop"\ntest = "student"\n', "field 'test': Input should be 'welch' or 'paired'"),
    ('name = "x"\ntemplate = "discopop"\n[budget]\nminutes = 0\n', "field 'budget.minutes': Input should be greater"),
    ('name = "x"\ntemplate = "discopop"\n[budget]\nhours = 1\n', "field 'budget.hours': unknown key"),
    ('name = "x"\ntemplate = "discopop"\n[budget]\nusd = -1\n', "field 'budget.usd': Input should be greater than or"),
    ('name = "x"\ntemplate = "discopop"\nproposer = "llm"\n', "proposer llm needs model (any litellm model string"),
    ('name = "x"\ntemplate = "nope"\n', "field 'template': unknown template 'nope'"),
    ('name = "x"\ntemplate = \n', "not valid TOML"),
])
def test_a_bad_campaign_file_is_one_line_and_exit_2(tmp_path, body, message):
    path = tmp_path / "c.toml"
    path.write_text(body)
    r = scientist("nightly", str(path), "--home", str(tmp_path / "home"))
    assert r.code == 2, r.text
    assert message in r.err and "Traceback" not in r.text and len(r.err.strip().splitlines()) == 1, r.err


def test_a_zero_dollar_budget_means_spend_nothing(tmp_path):
    """An evolve campaign calls no model: usd = 0 is its honest budget, not an error."""
    path = tmp_path / "c.toml"
    path.write_text('name = "x"\ntemplate = "discopop"\nproposer = "evolve"\n[budget]\nusd = 0.0\n')
    assert cp.load_campaign(path).budget.usd == 0.0
    with pytest.raises(BudgetExceeded):  # and it holds: a model would not get a single call
        Budget(usd=0.0).check()


def test_a_missing_campaign_file_is_one_line(tmp_path):
    r = scientist("nightly", str(tmp_path / "none.toml"), "--home", str(tmp_path / "home"))
    assert r.code == 2 and "no such campaign file" in r.err and "Traceback" not in r.text


def test_one_night_at_a_time_a_killed_night_is_resumed_and_the_next_builds_on_it(tiny_templates, tmp_path):
    home = warm_home(tmp_path / "home")
    campaign = write_campaign(tmp_path / "campaign.toml", tiny_templates)
    proc = subprocess.Popen([sys.executable, "-m", "scientist", "nightly", str(campaign), "--home", str(home)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = home / "campaigns" / "tiny-nightly" / "nightly.lock"
    deadline = time.time() + 300
    while time.time() < deadline and not (nights(home) and _runs_ok(home) >= 2):
        time.sleep(0.3)  # the baseline and a first candidate are recorded: mid-night
    holder = json.loads(lock.read_text())
    assert holder["pid"] == proc.pid
    refused = scientist("nightly", str(campaign), "--home", str(home))
    assert refused.code == cp.EXIT_LOCKED, refused.text
    assert f"pid {proc.pid}" in refused.err and "another night of this campaign is running" in refused.err
    recorded = _runs_ok(home)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (killed,) = nights(home)
    assert killed["status"] == "running"
    again = scientist("nightly", str(campaign), "--home", str(home), timeout=900)
    assert again.code == 0, again.text
    assert "night 1 (resuming the night a killed process left unfinished)" in again.out
    (finished,) = nights(home)
    assert finished["status"] == "complete" and finished["out_dir"] == killed["out_dir"]
    assert _runs_ok(home) >= recorded  # nothing recorded was lost; finished runs were reused
    then = scientist("nightly", str(campaign), "--home", str(home), timeout=900)
    assert then.code == 0 and "night 2 " in then.out, then.text
    _two_nights_accumulated(home, tmp_path)


def _two_nights_accumulated(home: Path, tmp_path: Path) -> None:
    """Night 2 built on night 1, each wrote its digest, and the campaign commands show both."""
    one, two = nights(home)
    assert Path(one["out_dir"]).name.startswith("001-") and Path(two["out_dir"]).name.startswith("002-")
    # Night 2 proposed from night 1's archive: its frozen archive holds every idea night 1 had.
    archive = json.loads(two["args"])["archive_ids"]
    assert idea_ids(home, one["id"]) and set(idea_ids(home, one["id"])) <= set(archive)
    # The evolve proposer drew another seed: night 2's ideas are not night 1's again.
    s1, s2 = (SessionSummary.read(Path(n["out_dir"])) for n in (one, two))
    assert s1.config["seed"] == 1 and s2.config["seed"] == 2
    # The night's evaluation budget held: at most 4 sandboxed runs per night.
    assert sum(1 for i in s2.ideas for r in i.runs if r.run_id) <= 4
    for night in (one, two):
        folder = Path(night["out_dir"])
        assert (folder / "digest.md").is_file() and (folder / "digest.html").is_file()
        assert "data:image/png;base64," in (folder / "digest.html").read_text()
    # The night's page in a real browser: the leaderboard it shows is the store's confirmed results.
    from test_digest import _chromium, _leaderboard

    page = Path(two["out_dir"]) / "digest.html"
    dom = _chromium("--dump-dom", page.as_uri(), tmp=tmp_path)
    shown = {name: {k: float(v) for k, v in cells.items()} for name, cells in _leaderboard(dom).items()}
    confirmed = cp.leaderboard(Store(home / "store.sqlite"), "tiny-nightly")
    if confirmed:  # the confirmed leaderboard, every row as the store has it
        expected = {f"{c['idea']} ({c['result'].night})": c["result"] for c in confirmed}
        assert set(expected) <= set(shown), (expected, shown)
        for name, r in expected.items():
            assert shown[name]["mean"] == pytest.approx(r.mean, abs=1e-12)
            assert (shown[name]["ci-low"], shown[name]["ci-high"]) == pytest.approx(tuple(r.ci95), abs=1e-12)
            assert shown[name]["n"] == r.n
    else:  # none beat the baseline in the search: the page shows the night's search, as summary.json has it
        for idea in s2.ideas:
            if idea.best is not None:
                assert shown[idea.name]["mean"] == pytest.approx(idea.best.metric.mean, abs=1e-12)
    _chromium(f"--screenshot={tmp_path / 'night.png'}", page.as_uri(), tmp=tmp_path)
    image = plt_image(tmp_path / "night.png")
    assert (image < 0.95).mean() > 0.02  # ink on the page, not a blank screenshot
    index = (home / "campaigns" / "tiny-nightly" / "index.html").read_text()
    assert Path(one["out_dir"]).name in index and Path(two["out_dir"]).name in index
    # on_written ran with the night's files: the second night's Markdown was copied where the command said.
    assert (home / "campaigns" / "digest.md").read_text() == (Path(two["out_dir"]) / "digest.md").read_text()
    listed = scientist("campaign", "list", "--home", str(home))
    assert listed.code == 0 and "tiny-nightly" in listed.out and "│ 2 " in listed.out, listed.text
    shown = scientist("campaign", "show", "tiny-nightly", "--home", str(home))
    assert shown.code == 0 and "002-" in shown.out, shown.text
    missing = scientist("campaign", "show", "other", "--home", str(home))
    assert missing.code == 2 and "no campaign 'other'" in missing.err


def _runs_ok(home: Path) -> int:
    try:
        with sqlite3.connect(home / "store.sqlite") as db:
            return db.execute("SELECT COUNT(*) FROM runs WHERE status='ok'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


GROKKING = ROOT / "tests" / "fixtures" / "grokking"
OPTIMIZER = "import optax\n\n\ndef optimizer(learning_rate, steps):\n    return optax.{}\n"


def _grokking(templates: Path, time_s: int = 120) -> Path:
    """The grokking fixture (its seeds split from [config] train_seed) with a slow baseline and 4 checkpoints."""
    root = shutil.copytree(GROKKING, templates / "grokking", ignore=shutil.ignore_patterns("__pycache__"),
                           dirs_exist_ok=True)
    assert 'jax.random.PRNGKey(config["train_seed"])' in (root / "harness.py").read_text()
    toml = (root / "template.toml").read_text()
    toml, n = re.subn(r"(?m)^checkpoints = \d+$", "checkpoints = 4", toml)
    toml, m = re.subn(r"(?m)^time_s = \d+$", f"time_s = {time_s}", toml)
    assert n == m == 1
    (root / "template.toml").write_text(toml)
    (root / "optimizer.py").write_text(OPTIMIZER.format("adamw(3e-4, b1=0.9, b2=0.98, weight_decay=1.0)"))
    return root


def _night(c: cp.CampaignConfig, store: Store, template, home: Path, folder: Path, index: int,
           ideas: list[tuple[str, Run, float]]) -> tuple[cp.Night, list[cp.Confirmed]]:
    """A campaign night whose search found these ideas (name, best run, its mean as the search saw it), confirmed."""
    night = cp.Night(index, folder, resumed=False)
    cfg = cp.night_config(c, template, resolve("bwrap"), home, night)
    session_id, _, _ = store.open_session(out_dir=folder, template="grokking", proposer="evolve", model=None,
                                          args={"template_hash": template.content_hash()}, campaign=c.name)
    summary = SessionSummary.model_validate({
        "template": "grokking", "template_hash": template.content_hash(),
        "metric": {"name": "val_acc", "direction": "max"}, "proposer": "evolve", "status": "complete",
        "baseline": {"run_id": 0, "mean": 0.05, "stderr": 0.01, "ci95": [0.03, 0.07], "n": 2, "run_dir": "x"},
        "ideas": [{"idx": i, "name": name, "title": name, "folder": name, "status": "done", "runs": [],
                   "best": {"run": 1, "attempt": 1, "run_id": run.id,
                            "metric": {"name": "val_acc", "mean": mean, "stderr": 0.01, "ci95": [0, 1], "n": 2,
                                       "values": [mean, mean]}}}
                  for i, (name, run, mean) in enumerate(ideas)]})
    confirmed = cp.confirm_night(cfg, c, store, session_id, summary, JsonReporter(open(os.devnull, "w")))
    summary.write(folder)
    store.close_session(session_id, "complete")
    return night, confirmed


def test_two_nights_confirm_on_fresh_seeds_the_winner_rule_and_the_previous_best(tmp_path):
    # Night 1: two candidates beat the baseline on fresh seeds; the better one is the new best. Night 2 draws
    # other seeds, re-runs night 1's best on them beside the baseline, and a candidate equal to that best is
    # no new best, nor is one whose search lead was the winner's curse. Then the template changes: the
    # leaderboard starts over. Real runs of the grokking fixture throughout.
    home, templates = tmp_path / "home", tmp_path / "templates"
    _grokking(templates)
    template = load_template("grokking", templates)
    store = Store(home / "store.sqlite")
    c = cp.CampaignConfig(name="fresh", template="grokking", templates_dir=templates, proposer="evolve",
                          confirm_seeds=3, sandbox="bwrap")
    from scientist import runner

    def search(name: str, recipe: str) -> Run:
        res = runner.evaluate(runner.EvalRequest(
            template=template, sources={"optimizer.py": OPTIMIZER.format(recipe)}, seeds=2,
            sandbox=resolve("bwrap"), home=home, out_dir=tmp_path / "search" / name), store)
        assert res.ok, res.run.reason
        return res.run

    fast, faster = search("fast", "adamw(0.003, b1=0.9, b2=0.98, weight_decay=1.0)"), \
        search("faster", "adamw(0.01, b1=0.9, b2=0.98, weight_decay=1.0)")
    night1, (a, b) = _night(c, store, template, home, tmp_path / "001-night", 1,
                            [("fast", fast, fast.metric_mean), ("faster", faster, faster.metric_mean)])
    # The winner rule: both are significantly better than the baseline (one Holm family); the better mean wins.
    assert a.result.verdict == b.result.verdict == "better", (a.result, b.result)
    best, other = sorted((a, b), key=lambda c: c.result.mean, reverse=True)
    assert best.new_best and not other.new_best
    assert [a.result.p_value_holm, b.result.p_value_holm] == pytest.approx(
        holm([a.result.p_value, b.result.p_value]))
    assert a.result.previous is None and cp.current_best(store, "fresh")["idea"] == best.idea
    assert cp.best_known(store, "fresh", template.content_hash())[1] == best.search_run.candidate_source

    # Night 2's search: one idea with exactly the best's code, one with the shipped code, both leading the search.
    bar = best.search_run.metric_mean
    second = [("same_as_best", best.run, bar + 0.2), ("cursed", a.baseline, bar + 0.1)]
    night2, (same, cursed) = _night(c, store, template, home, tmp_path / "002-night", 2, second)
    rows = records.confirmations(store, "fresh")
    seeds = {(r["night"], r["train_seed"], r["draw"]) for r in rows}
    assert len(seeds) == 2, seeds  # one train_seed and one draw per night
    (n1, seed1, draw1), (n2, seed2, draw2) = sorted(seeds)
    assert (n1, n2) == (1, 2) and len({0, seed1, seed2}) == 3 and len({0, draw1, draw2}) == 3

    def train_seed(run: Run) -> int:  # as the harness was given it
        return json.loads((Path(run.out_dir) / "work" / "config.json").read_text())["config"]["train_seed"]

    for r in rows:  # every confirmation, baseline and previous best ran on its night's train_seed and draw
        for run_id in (r["run_id"], r["baseline_run_id"], r["previous_run_id"]):
            if run_id is not None:
                run = store.get(run_id)
                assert (run.draw, train_seed(run)) == (r["draw"], r["train_seed"]), (r, run)
        # A night resumed after a kill would draw its own seeds again (and reuse its finished runs).
        assert cp.fresh_seeds(store, "fresh", r["session_id"], template) == cp.FreshSeeds(
            r["night"], r["train_seed"], r["draw"])
    # The search's runs: the template's own train_seed (0) and the home's own secrets (draw 0).
    assert {fast.draw or 0, faster.draw or 0} == {0} and {train_seed(fast), train_seed(faster)} == {0}
    # Night 2 re-ran night 1's best on its own seeds: another baseline, the best's code, fresh numbers.
    previous = same.previous
    assert previous is not None and previous.candidate_source == best.search_run.candidate_source
    assert same.baseline.id != a.baseline.id and previous.id not in (best.run.id, best.search_run.id)
    assert same.result.previous.mean == pytest.approx(previous.metric_mean)
    # Equal to the previous best: better than the baseline, not than the best; no new best.
    assert same.result.verdict == "better" and same.result.previous.verdict != "better"
    assert not same.new_best and not cursed.new_best
    # The search's lead of the baseline's own code does not survive fresh seeds: re-evaluated, not significant.
    assert cursed.result.verdict == "no significant difference"
    assert cp.current_best(store, "fresh")["idea"] == best.idea
    md = write_digest(c, store, night2, home).markdown.read_text()
    assert "| re-evaluated, n.s. |" in md.split("| cursed (002-night) |")[1].split("\n")[0]
    assert "| confirmed |" in md.split("| same_as_best (002-night) |")[1].split("\n")[0]
    assert [same.result.p_value_holm, cursed.result.p_value_holm] == pytest.approx(
        holm([same.result.p_value, cursed.result.p_value]))  # equal means: not tested against the best
    assert "starts over" not in md

    # Night 1's page shows its new best's code against the baseline's, and the best by night.
    pages = write_digest(c, store, night1, home)
    md, html = pages.markdown.read_text(), pages.html.read_text()
    assert f"+    return optax.adamw(0.0{'1' if best.idea == 'faster' else '03'}" in md
    assert "baseline/optimizer.py" in md and f"{best.idea}/optimizer.py" in md
    assert html.count("data:image/png;base64,") == 2  # the leaderboard and the best by night

    # The template changes: its results are not compared with the earlier version's; the leaderboard starts over.
    _grokking(templates, time_s=121)
    changed = load_template("grokking", templates)
    assert changed.content_hash() != template.content_hash()
    night3, none = _night(c, store, changed, home, tmp_path / "003-night", 3, [])
    assert none == [] and cp.current_best(store, "fresh") is None and cp.leaderboard(store, "fresh") == []
    assert cp.best_known(store, "fresh", changed.content_hash()) is None
    pages = write_digest(c, store, night3, home)
    md = pages.markdown.read_text()
    assert "the leaderboard starts over" in md and "## Earlier template versions (not ranked)" in md
    assert md.split("## Leaderboard")[1].split("##")[0].count("(00") == 0  # no earlier result is ranked
    _index_page(c, store, home, pages.index, tmp_path, best, {1: [a, b], 2: [same, cursed], 3: []})


def _index_page(c: cp.CampaignConfig, store: Store, home: Path, index: Path, tmp_path: Path, best: cp.Confirmed,
                confirmed: dict[int, list[cp.Confirmed]]) -> None:
    """The campaign's index after the three nights: the confirmed best by night against the baseline on each
    night's fresh seeds, the template change marked, a row per night as the store has it, links that resolve."""
    from test_digest import INDEX_COLUMNS, _chromium, _index

    html = index.read_text()
    shown = _index(html)
    # Nights 1 and 2 have a confirmed best (night 1's, carried to night 2); night 3's version has none yet.
    assert shown["best"] == [("001-night", best.result.mean), ("002-night", best.result.mean)]
    assert shown["baseline"] == [(f"00{k}-night", cs[0].baseline.result.summary("val_acc").mean)
                                 for k, cs in confirmed.items() if cs]
    assert html.count('<line class="change"') == 1 and "template v2: leaderboard starts over" in html
    # One row per night: evolve nights call no model, every confirmation ran; night 1 found the best.
    assert [tuple(r[k] for k in INDEX_COLUMNS) for r in shown["rows"]] == [
        ("001-night", "complete", "0.0", "0", "0", "yes"), ("002-night", "complete", "0.0", "0", "0", "no"),
        ("003-night", "complete", "0.0", "0", "0", "no")]
    # Its runs: the confirmations', each computed that night (equal computations within a night are one run).
    for row, cs in zip(shown["rows"], confirmed.values(), strict=True):
        runs = {r.id for c in cs for r in (c.run, c.baseline, c.previous) if r is not None}
        assert row["runs"] == f"{len(runs)}/0", (row, runs)
    verdicts = re.findall(r'<td class="confirmations">(.*?)</td>', html)
    assert "confirmed" in verdicts[0] and "re-evaluated, n.s." in verdicts[1] and "none" in verdicts[2]
    hrefs = re.findall(r'href="([^"]+)"', html)
    assert len(hrefs) == 3 and all((index.parent / h).resolve().is_file() for h in hrefs), hrefs
    assert not re.search(r"https?://(?!www\.w3\.org)|<link\b|<script\b", html)  # self-contained
    _chromium(f"--screenshot={tmp_path / 'index.png'}", index.as_uri(), tmp=tmp_path)
    assert (plt_image(tmp_path / "index.png") < 0.95).mean() > 0.02  # ink on the page, not a blank screenshot
    # A night whose folder was deleted keeps its row and its point, from the store; no link.
    shutil.rmtree(tmp_path / "002-night")
    after = write_digest(c, store, cp.Night(3, tmp_path / "003-night", resumed=False), home)
    html = after.index.read_text()
    again = _index(html)
    assert [r["name"] for r in again["rows"]] == ["001-night", "002-night", "003-night"]
    assert again["best"] == shown["best"] and '<span class="deleted">folder deleted</span>' in html
    assert len(re.findall(r'href="([^"]+)"', html)) == 2


def test_a_scripted_model_night_through_litellm_then_a_night_that_sees_it(tiny_templates, tmp_path):
    from llm_server import ScriptedServer
    from test_run import IDEA, IDEA_ANSWER, SMOOTHED, edit

    other = {**IDEA, "name": "hinge_margin", "title": "A squared hinge on the margin",
             "hypothesis": "A hinge ignores comparisons already won by a margin.",
             "experiment": "Replace the logistic loss by a squared hinge with margin one."}

    def answer(body):
        last = body["messages"][-1]["content"]
        if "Come up with the next impactful" in last:
            night_two = '"smooth_dpo"' in last
            return IDEA_ANSWER if not night_two else IDEA_ANSWER.replace(json.dumps(IDEA), json.dumps(other))
        if last.startswith("Round "):  # a reflection: the idea just proposed, unchanged
            previous = [m["content"] for m in body["messages"] if m["role"] == "assistant"][-1]
            return "I am done\n\n" + previous.split("\n\n", 1)[1]
        if "Plan and implement run 1 " in last:
            return edit("    return -jax.nn.log_sigmoid(beta * rho)", SMOOTHED)
        return "I am done"

    home = tmp_path / "home"
    with ScriptedServer(answer) as server:
        campaign = write_campaign(tmp_path / "campaign.toml", tiny_templates, proposer=None,
                                  model='"openai/gpt-4o-mini"', api_base=f'"{server.url}"', ideas="1",
                                  reflections="1", review="false")
        first = scientist("nightly", str(campaign), "--home", str(home), timeout=900)
        assert first.code == 0, first.text
        second = scientist("nightly", str(campaign), "--home", str(home), timeout=900)
        assert second.code == 0, second.text
        requests = server.requests
    one, two = (SessionSummary.read(Path(n["out_dir"])) for n in nights(home))
    assert one.proposer == "llm" and one.llm_calls > 0 and one.cost_usd > 0
    assert one.ideas[0].name == "smooth_dpo" and one.ideas[0].best is not None
    # Night 2's model saw night 1's idea with its sealed result.
    prompts = [text for r in requests if "Come up with the next" in (text := r["messages"][-1]["content"])]
    assert len(prompts) == 2 and '"smooth_dpo"' not in prompts[0]
    result = f'"result": "best reward_gain_at_kl = {one.ideas[0].best.metric.mean:.4f}"'
    assert '"smooth_dpo"' in prompts[1] and result in prompts[1]
    assert two.ideas[0].name == "hinge_margin"
    digest = (Path(nights(home)[0]["out_dir"]) / "digest.md").read_text()
    assert f"${one.cost_usd:.4f}" in digest and f"in {one.llm_calls} calls" in digest, digest


def test_relative_paths_in_a_campaign_file_are_the_files_not_the_working_folders(tmp_path, monkeypatch):
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "c.toml").write_text('name = "x"\ntemplate = "./mine/discopop"\ntemplates_dir = "templates"\n'
                                '[digest]\ndir = "digests"\n')
    monkeypatch.chdir(tmp_path)  # cron starts elsewhere
    c = cp.load_campaign(Path("lab/c.toml"))
    assert c.templates_dir == lab / "templates" and c.digest.dir == lab / "digests"
    assert c.template == str(lab / "mine" / "discopop")
