"""The campaign's pages: each night's digest (Markdown and one HTML file), the campaign's index, the on_written hook.

Built from the store (nights, confirmations, runs) and each night's summary.json; scientist.campaign
decides what a night is and what it confirmed, this module only shows it.
"""

from __future__ import annotations

import difflib
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from base.store import Run, Store
from scientist.campaign import (
    CampaignConfig,
    CampaignError,
    Night,
    campaign_dir,
    leaderboard,
    older_results,
)
from scientist.digest import (
    Digest,
    DigestError,
    LeaderRow,
    Link,
    NewBest,
    SeriesPoint,
    digest_from_run,
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
    nights = store.campaign_nights(campaign.name)
    version = next(n["template_hash"] for n in nights if n["id"] == session["id"])
    first_of_version = not any(n["template_hash"] == version for n in nights if n["id"] < session["id"])
    bests = [c for c in store.confirmations(campaign.name) if c["new_best"] and c["template_hash"] == version]
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
    pages = []
    for i, n in enumerate(store.campaign_nights(campaign.name), start=1):
        folder = Path(n["out_dir"])
        page = (campaign.digest.dir / folder.name if campaign.digest.dir else folder) / "digest.html"
        if page.is_file():
            pages.append((f"night {i}: {folder.name}", n["status"] + (f" ({n['reason']})" if n["reason"] else ""),
                          page))
    index = write_index(pages, root / "index.html", title=f"{campaign.name}: nights")
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
