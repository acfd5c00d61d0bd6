"""The campaign's pages: each night's digest (Markdown and one HTML file), the campaign's index, the on_written hook.

Built from the store (nights, confirmations, runs) and each night's summary.json; scientist.campaign
decides what a night is and what it confirmed, this module only shows it.
"""

from __future__ import annotations

import difflib
import os
import shlex
import subprocess
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from base.records import SessionSummary
from base.stats import format_p
from base.store import Run, Store
from scientist import campaign_store as records
from scientist.campaign import (
    CampaignConfig,
    CampaignError,
    Night,
    campaign_dir,
    leaderboard,
    older_results,
)
from scientist.digest import (
    CampaignIndex,
    ChartPoint,
    Digest,
    DigestError,
    FailureGroup,
    LeaderRow,
    Link,
    NewBest,
    NightConfirmation,
    NightRow,
    SeriesPoint,
    digest_from_run,
    fmt_number,
    render_html,
    render_markdown,
    write_index,
)

# A confirmation's verdict against the baseline, as the digest's status column says it.
STATUS = {"better": "confirmed", "no significant difference": "re-evaluated, n.s.", "worse": "re-evaluated, worse"}


@dataclass(frozen=True)
class Pages:
    """A night's digest, as files: Markdown, the self-contained HTML page, and the campaign's index."""

    markdown: Path
    html: Path
    index: Path


def _diff(old: dict[str, str], new: dict[str, str], old_label: str, new_label: str) -> str:
    lines: list[str] = []
    for name in sorted(set(old) | set(new)):
        lines += difflib.unified_diff(old.get(name, "").splitlines(True), new.get(name, "").splitlines(True),
                                      f"{old_label}/{name}", f"{new_label}/{name}")
    return "".join(lines)


def _confirmed_row(store: Store, c: dict, page_dir: Path, best_id: int | None) -> LeaderRow:
    r, run = c["result"], store.get(c["run_id"])
    href = os.path.relpath(run.out_dir, page_dir) if run and run.out_dir else None
    # Idea names repeat across nights (evolve_000 every night): the night tells them apart.
    return LeaderRow(name=f"{c['idea']} ({r.night or '?'})", title=f"found on night {r.night or '?'}", mean=r.mean,
                     stderr=r.stderr, ci_low=r.ci95[0], ci_high=r.ci95[1], n=r.n, verdict=r.verdict,
                     p_value_holm=r.p_value_holm, status=STATUS[r.verdict], run=Link(text="run", href=href),
                     is_best=c["id"] == best_id)


def _metric_row(run: Run | None, metric: str, name: str, title: str) -> LeaderRow | None:
    m = run.result.summary(metric) if run and run.final_info else None
    return LeaderRow(name=name, title=title, mean=m.mean, stderr=m.stderr, ci_low=m.ci95[0],
                     ci_high=m.ci95[1], n=m.n) if m else None


def night_digest(campaign: CampaignConfig, store: Store, night: Night, page_dir: Path, home: Path) -> Digest:
    """The night's digest: the night's search (cost, failures, papers) and the campaign's re-evaluated results.

    Only the results of the night's template version are ranked; after a template change the page
    says that the leaderboard starts over, and lists the earlier versions' results apart.
    """
    d = digest_from_run(night.out_dir, page_dir=page_dir, home=home)
    session = store.session_at(night.out_dir)
    nights = records.nights(store, campaign.name)
    version = next(n["template_hash"] for n in nights if n["id"] == session["id"])
    first_of_version = not any(n["template_hash"] == version for n in nights if n["id"] < session["id"])
    bests = [c for c in records.confirmations(store, campaign.name) if c["new_best"] and c["template_hash"] == version]
    best = bests[-1] if bests else None
    rows = leaderboard(store, campaign.name, version)
    older = older_results(store, campaign.name, version)
    d.title = f"{campaign.name}: night {night.index}"
    d.generator = "scientist nightly"
    d.subtitle = f"{night.out_dir.name} · {d.subtitle}" if d.subtitle else night.out_dir.name
    if older and first_of_version:
        versions = ", ".join(sorted({c["template_hash"] or "unrecorded" for c in older}))
        d.notes.append(f"The template changed (version {version}; the campaign's {len(older)} earlier re-evaluated "
                       f"result(s) were of version {versions}): the leaderboard starts over, and no earlier "
                       "result is compared with this version's.")
    if older:
        d.older = [_confirmed_row(store, c, page_dir, None).model_copy(update={"title": c["template_hash"] or "?"})
                   for c in older]
    if rows:
        d.leaderboard = [_confirmed_row(store, c, page_dir, best["id"] if best else None) for c in rows]
        # The baseline on the seeds of this night's confirmations, else on those of the latest night that had some.
        shown = max(rows, key=lambda c: c["id"])
        d.baseline = _metric_row(store.get(shown["baseline_run_id"]), d.metric, "baseline",
                                 f"on the fresh seeds of {shown['result'].night or '?'}") or d.baseline
        d.subtitle += (" · leaderboard: the campaign's candidates re-evaluated on fresh seeds (each on its night's), "
                       "this template version only")
    else:
        d.subtitle += " · nothing re-evaluated on this template version yet: the leaderboard is this night's search"
    d.new_bests = []
    for i, c in enumerate(bests):
        if c["session_id"] != session["id"]:
            continue
        before = bests[i - 1] if i else None
        old = (store.get(before["run_id"]).candidate_source if before
               else store.get(c["baseline_run_id"]).candidate_source)
        new = store.get(c["run_id"]).candidate_source
        r = c["result"]
        prev = r.previous if before else None  # None too in results of early versions, which did not record it
        d.new_bests.append(NewBest(
            name=c["idea"], mean=r.mean, ci_low=r.ci95[0], ci_high=r.ci95[1], n=r.n,
            previous=(f"the previous best, {before['idea']} ({before['result'].night or '?'}), re-run on the "
                      "same seeds") if before else "baseline",
            previous_mean=(prev.mean if prev else None) if before else r.baseline_mean,
            previous_verdict=prev.verdict if prev else None,
            previous_p_value_holm=prev.p_value_holm if prev else None, verdict=r.verdict,
            diff=_diff(old, new, before["idea"] if before else "baseline", c["idea"])))
    d.series = []
    for n in nights:
        so_far = [c for c in bests if c["session_id"] <= n["id"]]
        if so_far and n["id"] <= session["id"]:
            r = so_far[-1]["result"]
            d.series.append(SeriesPoint(label=Path(n["out_dir"]).name, mean=r.mean, ci_low=r.ci95[0],
                                        ci_high=r.ci95[1]))
    return d


def _night_page(campaign: CampaignConfig, out_dir: Path) -> Path:
    """Where a night's digest.html is: in its folder, or in the [digest] dir under the folder's name."""
    return (campaign.digest.dir / out_dir.name if campaign.digest.dir else out_dir) / "digest.html"


def _night_runs(store: Store, night: dict, summary: SessionSummary | None, confirmations: list[dict]) -> set[int]:
    """The sandboxed runs a night used: every attempt's (the store's steps), the search's baseline (summary.json)
    and its confirmations' (each candidate, the baseline and the previous best on the fresh seeds)."""
    ids = {s["run_id"] for i in store.ideas(night["id"]) for s in store.steps(i["id"]) if s["run_id"] is not None}
    if summary is not None and summary.baseline is not None:
        ids.add(summary.baseline.run_id)
    ids |= {c[k] for c in confirmations for k in ("run_id", "baseline_run_id", "previous_run_id") if c[k] is not None}
    return ids


def _night_failures(store: Store, night: dict, confirmations: list[dict]) -> list[FailureGroup]:
    """The night's failed attempts (the store's steps), ideas that failed before any run, and failed
    confirmations, grouped by their one-line reason, most frequent first."""
    reasons: Counter[str] = Counter()
    for idea in store.ideas(night["id"]):
        steps = store.steps(idea["id"])
        for s in steps:
            # Screened out is no failure (NightRow counts screens); promoted is a full run the night did not reach.
            if s["status"] not in ("ok", "screened_out", "promoted"):
                reasons[s["reason"] or ("no edit" if s["status"] == "no_edit" else "unknown reason")] += 1
        if idea["status"] == "failed" and not steps:
            reasons[idea["reason"] or "unknown reason"] += 1
    for c in confirmations:
        if c["result"] is None:
            reasons[f"confirmation: {c['reason'] or 'unknown reason'}"] += 1
    return [FailureGroup(reason=r, count=k) for r, k in sorted(reasons.items(), key=lambda rk: (-rk[1], rk[0]))]


def _night_screens(store: Store, night: dict) -> tuple[int, int]:
    """(screened, promoted): the night's attempts the cascade screened, and those of them fully evaluated."""
    steps = [s for i in store.ideas(night["id"]) for s in store.steps(i["id"]) if s["screen_run_id"] is not None]
    return len(steps), sum(1 for s in steps if s["run_id"] is not None)


def _best_line(store: Store, best: dict | None, metric: str) -> str:
    """The current confirmed best against the baseline on the same fresh seeds, in one line."""
    if best is None:
        return "none confirmed on fresh seeds yet on the current template version"
    r = best["result"]
    base = _metric_row(store.get(best["baseline_run_id"]), metric, "baseline", "")
    base_ci = f" (95% CI {fmt_number(base.ci_low)} to {fmt_number(base.ci_high)})" if base else ""
    verdict = r.verdict or "no verdict"
    p = f", {format_p(r.p_value_holm, 'p_Holm')}" if r.p_value_holm is not None else ""
    return (f"{best['idea']}, confirmed on night {r.night or '?'}: {fmt_number(r.mean)} (95% CI "
            f"{fmt_number(r.ci95[0])} to {fmt_number(r.ci95[1])}, n = {r.n}) against the baseline's "
            f"{fmt_number(r.baseline_mean)}{base_ci} on the same fresh seeds ({verdict}{p})")


def campaign_index(campaign: CampaignConfig, store: Store, index_dir: Path, metric: str,
                   direction: str) -> CampaignIndex:
    """The campaign's index page: the confirmed best by night against the baseline, and one row per night.

    Every night has its row from the store (its session, ideas, steps, model calls and confirmations),
    a night whose folder was deleted too; its summary.json adds the search's baseline and wall time
    where it is still there. Links are relative to index_dir.
    """
    nights = records.nights(store, campaign.name)
    confirmations = records.confirmations(store, campaign.name)
    versions: dict[str | None, int] = {}
    rows, points = [], []
    for i, n in enumerate(nights, start=1):
        out_dir = Path(n["out_dir"])
        version = versions.setdefault(n["template_hash"], len(versions) + 1)
        changed = i > 1 and n["template_hash"] != nights[i - 2]["template_hash"]
        mine = [c for c in confirmations if c["session_id"] == n["id"]]
        try:
            summary = SessionSummary.read(out_dir)
        except (OSError, ValueError):
            summary = None
        used = _night_runs(store, n, summary, mine)
        runs = [r for r in (store.get(run_id) for run_id in sorted(used)) if r is not None]
        computed = sum(1 for r in runs if r.created >= n["created"])
        usd, calls, _, _ = store.session_cost(n["id"])
        screened, promoted = _night_screens(store, n)
        page = _night_page(campaign, out_dir)
        if page.is_file():
            link = Link(text="digest", href=os.path.relpath(page, index_dir))
        else:
            link = Link(text="folder deleted" if not out_dir.is_dir() else "no digest")
        rows.append(NightRow(
            index=i, label=out_dir.name, status=n["status"], reason=n["reason"], version=version,
            version_changed=changed,
            started=datetime.fromtimestamp(n["created"], UTC).strftime("%Y-%m-%d %H:%M UTC"),
            ideas=sum(1 for idea in store.ideas(n["id"]) if idea["status"] not in ("duplicate", "not_novel")),
            runs_computed=computed, runs_reused=len(runs) - computed, screened=screened, promoted=promoted,
            runs_note="" if summary is not None else "no summary.json: the search's baseline is not counted",
            failures=_night_failures(store, n, mine), usd=usd, llm_calls=calls,
            wall_hours=summary.wall_s / 3600 if summary is not None and summary.wall_s else None,
            confirmations=[NightConfirmation(
                idea=c["idea"], status=STATUS[c["result"].verdict] if c["result"] and c["result"].verdict else "failed",
                verdict=c["result"].verdict if c["result"] else None,
                p_value_holm=c["result"].p_value_holm if c["result"] else None,
                reason=c["reason"] if c["result"] is None else None, new_best=bool(c["new_best"])) for c in mine],
            new_best=any(c["new_best"] for c in mine), digest=link))
        # The chart: the latest new best of this night's template version so far, and the baseline on its seeds.
        bests = [c for c in confirmations if c["new_best"] and c["template_hash"] == n["template_hash"]
                 and c["session_id"] <= n["id"]]
        point = ChartPoint(label=out_dir.name, version=version)
        if bests:
            b = bests[-1]
            r = b["result"]
            point = point.model_copy(update={
                "best": f"{b['idea']} ({r.night or '?'})", "best_mean": r.mean, "best_ci_low": r.ci95[0],
                "best_ci_high": r.ci95[1], "best_new": b["session_id"] == n["id"]})
        base = next((m for c in mine if (m := _metric_row(store.get(c["baseline_run_id"]) if c["baseline_run_id"]
                                                          else None, metric, "baseline", ""))), None)
        if base is not None:
            point = point.model_copy(update={"baseline_mean": base.mean, "baseline_ci_low": base.ci_low,
                                             "baseline_ci_high": base.ci_high})
        points.append(point)
    current = nights[-1]["template_hash"] if nights else None
    best = next((c for c in reversed(confirmations) if c["new_best"] and c["template_hash"] == current), None)
    notes = []
    if len(versions) > 1:
        notes.append(f"The template changed {len(versions) - 1} time(s) (version {len(versions)} is current): each "
                     "change starts the leaderboard over, and no result of an earlier version is compared with it.")
    template = next((s for s in (store.session_at(Path(n["out_dir"])) for n in nights[::-1]) if s), None)
    return CampaignIndex(
        title=f"{campaign.name}: campaign", campaign=campaign.name,
        template=template["template"] if template else campaign.template, metric=metric, direction=direction,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), best=_best_line(store, best, metric),
        notes=notes, points=points, nights=rows)


def write_digest(campaign: CampaignConfig, store: Store, night: Night, home: Path) -> Pages:
    """Write the night's digest (Markdown and HTML) and the campaign's index.html; CampaignError if it cannot."""
    root = campaign.digest.dir or campaign_dir(home, campaign.name)
    page_dir = campaign.digest.dir / night.out_dir.name if campaign.digest.dir else night.out_dir
    try:
        d = night_digest(campaign, store, night, page_dir, home)
    except DigestError as e:
        raise CampaignError(f"the digest of night {night.index} cannot be written: {e}") from None
    page_dir.mkdir(parents=True, exist_ok=True)
    md, html = page_dir / "digest.md", page_dir / "digest.html"
    md.write_text(render_markdown(d))
    html.write_text(render_html(d))
    ix = campaign_index(campaign, store, root, d.metric, d.direction)
    index = write_index(ix, root / "index.html")
    return Pages(md, html, index)


def announce(campaign: CampaignConfig, night: Night, pages: Pages) -> str | None:
    """Run the campaign's on_written command for a written digest; returns a problem in one line, or None."""
    if not campaign.digest.on_written:
        return None
    command = campaign.digest.on_written
    for key, value in (("markdown", pages.markdown), ("html", pages.html), ("index", pages.index),
                       ("name", campaign.name), ("night", night.out_dir.name)):
        command = command.replace("{" + key + "}", shlex.quote(str(value)))
    try:
        done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return "the digest's on_written command did not finish in 300 s"
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).split())[-300:]
        return f"the digest's on_written command exited with {done.returncode}: {tail}"
    return None
