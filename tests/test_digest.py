"""The digest pages: a real `scientist run` folder rendered to Markdown and HTML, the HTML opened in real Chromium."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import scientist

from base.records import PaperStatus, ReviewSummary, RunEntry, SessionSummary
from scientist.digest import (
    CampaignIndex,
    ChartPoint,
    Cost,
    Digest,
    DigestError,
    FailureGroup,
    LeaderRow,
    Link,
    NewBest,
    NightConfirmation,
    NightRow,
    SeriesPoint,
    candidate_diff,
    digest_from_run,
    fmt_number,
    render_html,
    render_markdown,
    write_index,
    write_report,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Skipped only off CI: `make test` (CI=true) installs chromium, and there its absence is a failure.
needs_chromium = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                    reason="chromium is not installed (scripts/setup-system.sh --test installs it)")


@pytest.fixture(scope="module")
def run_dir(tiny_templates, home, tmp_path_factory) -> Path:
    """A real, finished `scientist run` folder: 2 evolved ideas of 2 runs each on the tiny DiscoPOP, made once."""
    out = tmp_path_factory.mktemp("digest") / "run"
    r = scientist("run", "--template", "discopop", "--templates-dir", str(tiny_templates), "--home", str(home),
                  "--proposer", "evolve", "--ideas", "2", "--runs", "2", "--out", str(out), "--no-writeup",
                  "--sandbox", "bwrap", timeout=600)
    assert r.code == 0, r.text
    return out


@pytest.fixture(scope="module")
def report(run_dir) -> tuple[Path, Path]:
    return write_report(run_dir)


def _chromium(*args: str, tmp: Path) -> str:
    """Run headless Chromium with its own profile folder (another test or a user's browser may be running)."""
    p = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp / 'profile'}",
                        "--window-size=1200,1600", *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


class _Tables(HTMLParser):
    """Each <tr data-name=...> of the table with id `table_id`: {name: {td class: data-value}}."""

    def __init__(self, table_id: str):
        super().__init__()
        self.table_id, self.inside, self.row, self.rows = table_id, False, None, {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.inside = a.get("id") == self.table_id
        elif self.inside and tag == "tr" and "data-name" in a:
            self.row = self.rows.setdefault(a["data-name"], {})
        elif self.inside and tag == "td" and self.row is not None and "data-value" in a:
            for cls in (a.get("class") or "").split():
                if cls != "num":
                    self.row[cls] = a["data-value"]

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False
        elif tag == "tr":
            self.row = None


def _leaderboard(html: str) -> dict[str, dict[str, str]]:
    parser = _Tables("leaderboard")
    parser.feed(html)
    return parser.rows


def _expected(summary: SessionSummary) -> dict[str, dict[str, float]]:
    """What the leaderboard must show, straight from summary.json: each idea's best run, and the baseline."""
    rows = {}
    for idea in summary.ideas:
        m = idea.best.metric
        rows[idea.name] = {"mean": m.mean, "stderr": m.stderr, "ci-low": m.ci95[0], "ci-high": m.ci95[1], "n": m.n}
    b = summary.baseline
    rows["baseline"] = {"mean": b.mean, "stderr": b.stderr, "ci-low": b.ci95[0], "ci-high": b.ci95[1], "n": b.n}
    return rows


@needs_chromium
def test_html_in_chromium_shows_the_summary_numbers(run_dir, report, tmp_path):
    md, html = report
    assert (md, html) == (run_dir / "report.md", run_dir / "report.html")
    summary = SessionSummary.read(run_dir)

    # Rendered for real: the screenshot has text, a table and a figure, not a blank page.
    shot = tmp_path / "shot.png"
    _chromium(f"--screenshot={shot}", html.resolve().as_uri(), tmp=tmp_path)
    import matplotlib.image

    img = matplotlib.image.imread(str(shot))[..., :3]
    assert img.shape[:2] == (1600, 1200)
    ink = (img < 0.9).any(axis=-1).mean()
    colours = len(np.unique((img * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    assert ink > 0.02 and colours > 50, (ink, colours)

    # The DOM Chromium built holds the leaderboard's numbers, exactly the summary's.
    rows = _leaderboard(_chromium("--dump-dom", html.resolve().as_uri(), tmp=tmp_path))
    expected = _expected(summary)
    assert set(rows) == set(expected)
    for name, want in expected.items():
        for key, value in want.items():
            assert math.isclose(float(rows[name][key]), value, rel_tol=0, abs_tol=1e-12), (name, key)
    assert float(rows["baseline"]["mean"]) == json.loads((run_dir / "summary.json").read_text())["baseline"]["mean"]


def test_leaderboard_order_best_and_links(run_dir, report):
    html = report[1].read_text()
    summary = SessionSummary.read(run_dir)
    names = re.findall(r'<tr class="idea[^"]*" data-name="([^"]+)"', html)
    means = {i.name: i.best.metric.mean for i in summary.ideas}
    assert names == sorted(means, key=means.get, reverse=summary.metric.direction == "max")
    assert f'<tr class="idea best" data-name="{summary.best.idea}"' in html
    # Links are relative to the page and point at the run folders that exist.
    for href in re.findall(r'href="([^"]+)"', html):
        assert not href.startswith(("/", "http:", "https:", "file:")), href
        assert (run_dir / href).exists(), href


def test_html_is_self_contained(report):
    html = report[1].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert not re.search(r"<link\b|<script\b|@import|url\(", html, re.I)
    images = re.findall(r'<img src="([^"]+)"', html)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)


def test_new_best_diff_against_the_baseline(run_dir, report):
    summary = SessionSummary.read(run_dir)
    idea = next(i for i in summary.ideas if i.name == summary.best.idea)
    diff = candidate_diff(run_dir / "baseline", run_dir / idea.folder / summary.best.folder, "baseline", idea.name)
    assert diff.startswith("--- baseline/loss.py\n+++ ")
    assert "\n-    return -jax.nn.log_sigmoid(beta * rho)\n" in diff   # the baseline is DPO
    md, html = (p.read_text() for p in report)
    assert f"```diff\n{diff}```" in md
    assert '<span class="del">-    return -jax.nn.log_sigmoid(beta * rho)</span>' in html
    assert candidate_diff(run_dir / "baseline", run_dir / "baseline") == ""


def test_markdown_holds_the_leaderboard(run_dir, report):
    md = report[0].read_text()
    summary = SessionSummary.read(run_dir)
    table = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("|")]
    for name, want in _expected(summary).items():
        cells = next(c for c in table if c[1].removesuffix(" ★") == name)
        assert cells[2:6] == [fmt_number(want["mean"]), fmt_number(want["stderr"]),
                              f"[{fmt_number(want['ci-low'])}, {fmt_number(want['ci-high'])}]", str(want["n"])]
    assert "No run failed." in md


def test_cost_counts_the_runs_compute(run_dir):
    d = digest_from_run(run_dir)
    assert d.cost.device == "cpu" and d.cost.compute_label == "CPU hours"
    # Sandbox and evaluation time of 4 runs and the baseline, from the store: seconds, not hours or nothing.
    assert 1 / 3600 < d.cost.compute_hours < 1
    assert d.cost.usd == 0 and d.cost.llm_calls == 0
    assert digest_from_run(run_dir, home=run_dir / "no-such-home").cost.compute_hours is None


def test_failed_runs_are_grouped_by_reason(run_dir, tmp_path):
    """A session whose attempts failed: its failures are counted per reason, in Markdown and HTML."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("work"))
    summary = SessionSummary.read(copy)
    timeout = "sandbox: time limit of 40 s exceeded"
    summary.ideas[0].runs += [RunEntry(run=3, attempt=1, status="failed", reason=timeout),
                              RunEntry(run=3, attempt=2, status="failed", reason=timeout)]
    summary.ideas[1].runs += [RunEntry(run=3, attempt=1, status="failed", reason="loss returned NaN")]
    summary.write(copy)
    d = digest_from_run(copy)
    assert [(g.reason, g.count) for g in d.failures] == [(timeout, 2), ("loss returned NaN", 1)]
    assert d.failures[0].runs == [f"{summary.ideas[0].name}/run_3", f"{summary.ideas[0].name}/run_3_attempt_2"]
    md, html = render_markdown(d), render_html(d)
    assert f"| {timeout} | 2 |" in md
    assert f'<td class="reason">{timeout}</td><td class="num count" data-value="2">2</td>' in html


@pytest.mark.parametrize("case", ["no folder", "no summary", "not json", "not a summary"])
def test_not_a_run_folder_is_one_line_error(tmp_path, case):
    folder = tmp_path / "run"
    if case != "no folder":
        folder.mkdir()
    if case == "not json":
        (folder / "summary.json").write_text('{"template": "discopop", "metr')
    if case == "not a summary":
        (folder / "summary.json").write_text('{"template": "discopop"}')
    with pytest.raises(DigestError) as e:
        write_report(folder)
    message = str(e.value)
    assert "\n" not in message and str(folder) in message
    assert {"no folder": "is not a folder", "no summary": "has no summary.json", "not json": "corrupt",
            "not a summary": "not a summary written by scientist run"}[case] in message
    assert not (folder / "report.html").exists()


def _campaign_digest() -> Digest:
    """A night of a campaign as the campaign builds it: escaping-prone names, a failure, a best-by-night series."""
    return Digest(
        title="discopop campaign: night 3", subtitle="2025-01-03", template="discopop", metric="reward_gain_at_kl",
        direction="max",
        baseline=LeaderRow(name="baseline", mean=1.0, stderr=0.05, ci_low=0.9, ci_high=1.1, n=8, status="baseline"),
        leaderboard=[LeaderRow(name="<b>bold</b>", mean=1.3, stderr=0.04, ci_low=1.2, ci_high=1.4, n=8,
                               verdict="better", p_value_holm=0.003, is_best=True, status="confirmed"),
                     LeaderRow(name="lucky", mean=1.05, stderr=0.04, ci_low=0.95, ci_high=1.15, n=8,
                               verdict="no significant difference", p_value_holm=0.4, status="re-evaluated, n.s."),
                     LeaderRow(name="broke", status="failed")],
        new_bests=[NewBest(name="<b>bold</b>", mean=1.3, ci_low=1.2, ci_high=1.4, n=8,
                           previous="the previous best, old (002), re-run on the same seeds", previous_mean=1.2,
                           previous_verdict="better", previous_p_value_holm=0.02, verdict="better", diff="")],
        notes=["The template changed: the leaderboard starts over."],
        older=[LeaderRow(name="stale (001)", title="0123abcd", mean=1.9, ci_low=1.8, ci_high=2.0, n=8,
                         verdict="better", p_value_holm=0.001, status="confirmed")],
        series=[SeriesPoint(label="night 1", mean=1.1, ci_low=1.0, ci_high=1.2),
                SeriesPoint(label="night 2", mean=1.2, ci_low=1.1, ci_high=1.3),
                SeriesPoint(label="night 3", mean=1.3, ci_low=1.2, ci_high=1.4)],
        cost=Cost(usd=1.25, llm_calls=40, prompt_tokens=120000, completion_tokens=8000, compute_hours=2.5,
                  device="gpu"),
        failures=[FailureGroup(reason="time limit", count=1, runs=["broke/run_1"])])


def test_campaign_night_renders_series_escaped(tmp_path):
    d = _campaign_digest()
    html = render_html(d)
    assert html.count('<img src="data:image/png;base64,') == 2          # leaderboard and best by night
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "GPU hours" in html and 'id="compute-hours" data-value="2.5"' in html
    assert 'class="verdict verdict-better"' in html and "p_Holm=0.003" in html
    # Only what was confirmed says so; the previous best is judged on the same seeds; older versions stand apart.
    assert '<td class="status status-re-evaluated-n-s">re-evaluated, n.s.</td>' in html
    assert '<p class="notice">The template changed: the leaderboard starts over.</p>' in html
    assert 'id="older-table"' in html and "stale (001)" not in html.split('id="older"')[0]
    md = render_markdown(d)
    assert "| night 2 | 1.2000 | [1.1000, 1.3000] |" in md
    assert "| n.s. (p_Holm=0.4) | re-evaluated, n.s. |" in md and "| better (p_Holm=0.003) | confirmed |" in md
    assert "re-run on the same seeds: 1.2000, against it: better (p_Holm=0.02)" in md
    assert "**Note:** The template changed: the leaderboard starts over." in md
    assert "stale (001)" in md.split("## Earlier template versions (not ranked)")[1]
    assert "2.500 GPU hours" in md and "$1.2500 in 40 calls" in md


INDEX_COLUMNS = ("name", "status", "usd", "llm-calls", "failures", "new-best")  # data attributes of a night's row


def _index(html: str) -> dict[str, list]:
    """What a campaign index shows: the chart's best and baseline points (night, mean), its rows' data attributes."""
    def points(kind: str) -> list[tuple[str, float]]:
        return [(night, float(mean)) for night, mean in
                re.findall(rf'<g class="{kind}-point" data-night="([^"]+)" data-mean="([^"]+)"', html)]

    rows = [dict(re.findall(r'data-([a-z-]+)="([^"]*)"', tr)) for tr in re.findall(r'<tr class="night[^>]*>', html)]
    return {"best": points("best"), "baseline": points("baseline"), "rows": rows}


def _campaign_index(tmp_path: Path) -> CampaignIndex:
    """Three nights: a first confirmed best, a night that carries it, then a template change on a deleted night."""
    links = []
    for k in (1, 2):
        page = tmp_path / f"night_{k}" / "digest.html"
        page.parent.mkdir()
        page.write_text(render_html(_campaign_digest()))
        links.append(Link(text="digest", href=f"night_{k}/digest.html"))
    points = [ChartPoint(label="001-2025-01-01", best="<b>bold</b> (001)", best_mean=1.3, best_ci_low=1.2,
                         best_ci_high=1.4, best_new=True, baseline_mean=1.0, baseline_ci_low=0.9, baseline_ci_high=1.1),
              ChartPoint(label="002-2025-01-02", best="<b>bold</b> (001)", best_mean=1.3, best_ci_low=1.2,
                         best_ci_high=1.4),
              ChartPoint(label="003-2025-01-03", version=2)]
    nights = [NightRow(index=1, label="001-2025-01-01", status="complete", ideas=3, runs_computed=5, runs_reused=1,
                       failures=[FailureGroup(reason="time limit", count=2)], usd=0.5, llm_calls=12, wall_hours=1.5,
                       confirmations=[NightConfirmation(idea="<b>bold</b>", status="confirmed", verdict="better",
                                                        p_value_holm=0.003, new_best=True)],
                       new_best=True, digest=links[0]),
              NightRow(index=2, label="002-2025-01-02", status="stopped", reason="budget", ideas=2, runs_computed=2,
                       usd=0.25, llm_calls=6, digest=links[1]),
              NightRow(index=3, label="003-2025-01-03", status="complete", version=2, version_changed=True,
                       runs_note="no summary.json", digest=Link(text="folder deleted"))]
    return CampaignIndex(title="discopop campaign", campaign="discopop", template="discopop",
                         metric="reward_gain_at_kl", direction="max", best="none confirmed", points=points,
                         nights=nights, notes=["The template changed 1 time(s)."])


@needs_chromium
def test_index_shows_the_campaign_at_a_glance(tmp_path):
    ix = _campaign_index(tmp_path)
    index = write_index(ix, tmp_path / "index.html")
    html = index.read_text()
    # Self-contained: no URL, stylesheet or script; the links are the nights' pages, relative and there.
    assert not re.search(r"https?://(?!www\.w3\.org)|<link\b|<script\b|<img\b", html)
    hrefs = re.findall(r'href="([^"]+)"', html)
    assert hrefs == ["night_1/digest.html", "night_2/digest.html"]
    assert all((tmp_path / h).is_file() for h in hrefs)
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    # The chart: a point per night with a confirmed best (new, then carried), the baseline where measured,
    # and the template change marked; the deleted night has its row, without a link.
    shown = _index(html)
    assert shown["best"] == [("001-2025-01-01", 1.3), ("002-2025-01-02", 1.3)]
    assert html.count('<circle class="best carried"') == 2  # night 2's point, and the legend's
    assert shown["baseline"] == [("001-2025-01-01", 1.0)]
    assert html.count('<line class="change"') == 1 and "template v2: leaderboard starts over" in html
    assert [tuple(r[k] for k in INDEX_COLUMNS) for r in shown["rows"]] == [
        ("001-2025-01-01", "complete", "0.5", "12", "2", "yes"), ("002-2025-01-02", "stopped", "0.25", "6", "0", "no"),
        ("003-2025-01-03", "complete", "0.0", "0", "0", "no")]
    assert '<span class="deleted">folder deleted</span>' in html and 'id="total-usd" data-value="0.75"' in html
    dom = _chromium("--dump-dom", index.as_uri(), tmp=tmp_path)
    assert "discopop campaign" in dom and re.search(r">2</span> × time limit<", dom)
    _chromium(f"--screenshot={tmp_path / 'index.png'}", index.as_uri(), tmp=tmp_path)
    assert (tmp_path / "index.png").stat().st_size > 10_000  # drawn, not blank


def test_papers_and_reviews_are_linked_relative_to_the_page(run_dir, tmp_path):
    """Papers and reviews as the paper stage records them, in a run folder that has moved since; a page elsewhere."""
    copy = tmp_path / "moved" / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("work"))
    summary = SessionSummary.read(copy)
    ok, failed = summary.ideas
    for idea in summary.ideas:
        (copy / idea.folder / "paper").mkdir()
    (copy / ok.folder / "paper" / "paper.pdf").write_bytes(b"%PDF-1.5\n")
    (copy / ok.folder / "paper" / "review.json").write_text("{}")
    (copy / failed.folder / "paper" / "paper.log").write_text("! Undefined control sequence.\n")
    old = run_dir / ok.folder / "paper"   # where the session wrote them: not there any more
    ok.paper = PaperStatus(status="ok", pdf=str(old / "paper.pdf"), tex="paper.tex", claim_check="ok",
                           unverified_numbers=0, figures=2)
    ok.review = ReviewSummary(Overall=6, Decision="Accept", path=str(old / "review.json"))
    failed.paper = PaperStatus(status="writeup_failed", reason="Undefined control sequence", log=str(
        run_dir / failed.folder / "paper" / "paper.log"), tex="paper.tex", claim_check="", unverified_numbers=0,
        figures=0)
    summary.write(copy)

    page_dir = tmp_path / "site" / "night_1"
    page_dir.mkdir(parents=True)
    d = digest_from_run(copy, page_dir=page_dir)
    links = {link.text: link.href for link in d.papers + d.reviews}
    assert links == {f"{ok.name}: paper": f"../../moved/run/{ok.folder}/paper/paper.pdf",
                     f"{ok.name}: review: Accept (6/10)": f"../../moved/run/{ok.folder}/paper/review.json",
                     f"{failed.name}: paper failed: Undefined control sequence":
                         f"../../moved/run/{failed.folder}/paper/paper.log"}
    assert all((page_dir / href).exists() for href in links.values())
    html, md = render_html(d), render_markdown(d)
    assert f'<a href="../../moved/run/{ok.folder}/paper/paper.pdf">' in html
    assert f"[{ok.name}: paper](../../moved/run/{ok.folder}/paper/paper.pdf)" in md
