"""The digest: one page (Markdown, and one self-contained HTML file) of what a session or a campaign night found.

A `Digest` is a typed record of everything a page shows: the leaderboard with intervals and
Holm-adjusted verdicts, the new bests with their code diff against the previous best, an
optional best-by-night series, what it cost, the failures grouped by reason, and links to the
papers and reviews. `digest_from_run` builds one from a `scientist run` folder (its summary.json,
its run folders and, for compute time, the store); a campaign builds its own per night. The
renderers only read the record, so both kinds of page look the same.

The HTML is a single file meant to be mailed or archived: inline CSS, figures as base64 PNG data
URIs, and only relative links (to run folders, papers and reviews next to it), never a URL.
"""

from __future__ import annotations

import base64
import difflib
import io
import math
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import jinja2

from base.records import IdeaOutcome, Record, RunEntry, SessionSummary, Verdict
from base.stats import format_p
from base.store import Store

__all__ = [
    "CampaignIndex", "ChartPoint", "Cost", "Digest", "DigestError", "FailureGroup", "LeaderRow", "Link", "NewBest",
    "NightConfirmation", "NightRow", "Screens", "SeriesPoint", "candidate_diff", "digest_from_run", "fmt_number",
    "index_chart", "leaderboard_figure", "render_html", "render_index", "render_markdown", "series_figure",
    "write_index", "write_report",
]

# The templates ship as package data (pyproject.toml), so an installed wheel renders too.
_ENV_HTML = jinja2.Environment(loader=jinja2.PackageLoader("scientist", "digest_templates"),
                               autoescape=True, trim_blocks=True, lstrip_blocks=True,
                               undefined=jinja2.StrictUndefined)
_ENV_MD = jinja2.Environment(loader=jinja2.PackageLoader("scientist", "digest_templates"),
                             autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)

# Candidate files are small source files; a diff past this many lines is cut, so one huge edit cannot
# make the page unreadable (the full files are in the run folder the row links to).
MAX_DIFF_LINES = 400


class DigestError(Exception):
    """A digest could not be made (no run folder, no or a corrupt summary.json); the message is one line."""


class Link(Record):
    """A link on the page: its text, and where it goes (relative to the page), or None when there is no file."""

    text: str
    href: str | None = None


class LeaderRow(Record):
    """One row of the leaderboard: an idea's best run (or the baseline), with its interval and verdict."""

    name: str
    title: str = ""
    mean: float | None = None
    stderr: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    verdict: Verdict | None = None        # against the baseline, Holm-adjusted when the session adjusted
    p_value_holm: float | None = None
    status: str = "ok"                     # "ok", "failed", the session's idea status, or a campaign's
                                           # "confirmed" / "re-evaluated, n.s." / "re-evaluated, worse"
    run: Link | None = None                # the run folder
    paper: Link | None = None
    review: Link | None = None
    is_best: bool = False


class NewBest(Record):
    """A best confirmed on this page, and its code against the best it replaces."""

    name: str
    title: str = ""
    mean: float
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    previous: str                          # what it is compared with: "baseline", or the previous best's name
    previous_mean: float | None = None     # a campaign's previous best: its re-run on the same fresh seeds
    previous_verdict: Verdict | None = None  # against the previous best (Holm-adjusted); None: the baseline's
    previous_p_value_holm: float | None = None
    verdict: Verdict | None = None         # against the baseline (Holm-adjusted), as the leaderboard says
    diff: str                              # unified diff of the candidate files, previous -> new
    run: Link | None = None


class SeriesPoint(Record):
    """One point of the best-by-night plot: the campaign's best after that night, with its 95% interval."""

    label: str
    mean: float
    ci_low: float | None = None
    ci_high: float | None = None


class Cost(Record):
    """What the page's work cost: model spend and tokens, and compute time of its sandboxed runs."""

    usd: float = 0.0
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    compute_hours: float | None = None     # sandbox + evaluate seconds of the runs, / 3600; None when unknown
    device: Literal["cpu", "gpu"] = "cpu"
    wall_hours: float | None = None

    @property
    def compute_label(self) -> str:
        """'CPU hours' or 'GPU hours', by what the runs computed on."""
        return f"{self.device.upper()} hours"


class FailureGroup(Record):
    """The failed runs that share one reason."""

    reason: str
    count: int
    runs: list[str] = []


class Screens(Record):
    """The evaluation cascade's screens of a page's work: how many, how many promoted to a full evaluation.

    Counted only: a screen (fewer seeds, a shorter run) is no result, so no screen's number is on a page.
    """

    screened: int = 0
    promoted: int = 0
    screened_out: int = 0
    rule: str = ""                         # the promotion rule in words, when the page's summary says it


class Digest(Record):
    """Everything one digest page shows; the renderers read nothing else."""

    title: str
    subtitle: str = ""                     # when, and what ran (status, proposer, model)
    generated: str = ""                    # when the page was made (UTC)
    generator: str = "scientist report"    # the command that made it
    template: str
    metric: str
    direction: Literal["max", "min"]
    status: str = ""                       # the session's status line ("complete", "stopped: budget")
    baseline: LeaderRow | None = None
    leaderboard: list[LeaderRow] = []      # best first; rows without a result last
    notes: list[str] = []                  # said above the leaderboard (a campaign's template changed: it starts over)
    older: list[LeaderRow] = []            # a campaign's results of earlier template versions, never ranked with these
    new_bests: list[NewBest] = []
    series: list[SeriesPoint] = []         # best by night; empty for a single run
    cost: Cost = Cost()
    failures: list[FailureGroup] = []      # most frequent first
    papers: list[Link] = []
    reviews: list[Link] = []
    screens: Screens | None = None         # with the cascade on (--cascade): its screens, counted


class NightConfirmation(Record):
    """One confirmation of a night, as the index lists it: the idea, and what its fresh seeds said."""

    idea: str
    status: str                            # "confirmed", "re-evaluated, n.s.", "re-evaluated, worse", "failed"
    verdict: Verdict | None = None         # against the baseline, Holm-adjusted; None when it failed
    p_value_holm: float | None = None
    reason: str | None = None              # why it failed
    new_best: bool = False


class NightRow(Record):
    """One night of a campaign on its index page: what it tried, what it cost, what failed, what it confirmed."""

    index: int                             # 1, 2, ... as the store numbers the campaign's sessions
    label: str                             # its folder's name: number and date
    started: str = ""                      # when it began (UTC), from the store
    status: str                            # the session's: "complete", "stopped", "running"
    reason: str | None = None
    version: int = 1                       # the template version it ran (1, 2, ... in order of first use)
    version_changed: bool = False          # its template differs from the night before: the leaderboard restarts
    ideas: int = 0                         # ideas tried (near-duplicates dropped before any run not counted)
    runs_computed: int = 0                 # sandboxed runs of the night computed during it (confirmations included)
    runs_reused: int = 0                   # runs it used that an earlier session had computed
    screened: int = 0                      # with the cascade on: candidates screened (screens are counted apart)
    promoted: int = 0                      # of them, promoted to the full evaluation
    runs_note: str = ""                    # what the counts leave out (no summary.json: the search's baseline)
    failures: list[FailureGroup] = []      # failed attempts and confirmations, by reason
    usd: float = 0.0                       # model spend, as the store recorded the night's calls
    llm_calls: int = 0
    wall_hours: float | None = None        # summary.json's wall time; None without one
    confirmations: list[NightConfirmation] = []
    new_best: bool = False
    digest: Link                           # the night's digest.html; href None: no page (text says why)


class ChartPoint(Record):
    """One night on the index's chart: the confirmed best after it, and the baseline on its fresh seeds."""

    label: str
    version: int = 1
    best: str | None = None                # the confirmed best's name, "idea (night)"; None: none yet
    best_mean: float | None = None         # as measured on the fresh seeds of the night that confirmed it
    best_ci_low: float | None = None
    best_ci_high: float | None = None
    best_new: bool = False                 # confirmed this night
    baseline_mean: float | None = None     # re-run on this night's fresh seeds; None: the night confirmed nothing
    baseline_ci_low: float | None = None
    baseline_ci_high: float | None = None


class CampaignIndex(Record):
    """Everything a campaign's index page shows; render_index reads nothing else."""

    title: str
    campaign: str
    template: str
    metric: str
    direction: Literal["max", "min"]
    generated: str = ""
    best: str = ""                         # one line: the current confirmed best against the baseline, or none
    notes: list[str] = []
    points: list[ChartPoint] = []          # one per night, oldest first
    nights: list[NightRow] = []            # oldest first

    @property
    def usd(self) -> float:
        return sum(n.usd for n in self.nights)

    @property
    def failed_runs(self) -> int:
        return sum(f.count for n in self.nights for f in n.failures)


# ------------------------------------------------------------------------------------------------ building


def fmt_number(x: float | None, digits: int = 4) -> str:
    """A metric as the pages print it: `digits` decimals, or 4 significant digits for tiny or huge values; '—' when
    there is none (no result, or NaN from too few seeds)."""
    if x is None or not math.isfinite(x):
        return "—"
    if x != 0 and (abs(x) < 10 ** -(digits - 1) or abs(x) >= 1e6):
        return f"{x:.{digits}g}"
    return f"{x:.{digits}f}"


def _rel(path: Path, page_dir: Path) -> str:
    """A link from the page to a local file: relative (the page and its folder move together), '/' separated."""
    return Path(os.path.relpath(path.resolve(), page_dir.resolve())).as_posix()


def _link(text: str, path: Path | None, page_dir: Path) -> Link:
    return Link(text=text, href=_rel(path, page_dir) if path is not None and path.exists() else None)


def _entry_dir(run_dir: Path, idea: IdeaOutcome, entry: RunEntry) -> Path:
    """An attempt's folder. The layout under the run folder first: a moved or copied folder still links
    to its own files (run_dir in summary.json is where the session wrote it, maybe relative to its cwd)."""
    own = run_dir / idea.folder / entry.folder
    if own.is_dir() or entry.run_dir is None:
        return own
    return Path(entry.run_dir)


def _idea_file(run_dir: Path, idea: IdeaOutcome, recorded: str | None) -> Path | None:
    """A file of an idea's paper stage (paper.pdf, review.json) as summary.json records it: the same name under
    the idea's paper/ folder in this run folder first (the folder may have moved), else the recorded path."""
    if not recorded:
        return None
    own = run_dir / idea.folder / "paper" / Path(recorded).name
    return own if own.exists() else Path(recorded)


def _read_candidate(folder: Path) -> dict[str, str]:
    """The candidate files of a run folder (folder/candidate/**), by path relative to candidate/."""
    root = folder / "candidate"
    if not root.is_dir():
        return {}
    return {p.relative_to(root).as_posix(): p.read_text(errors="replace")
            for p in sorted(root.rglob("*")) if p.is_file()}


def candidate_diff(old: Path, new: Path, old_label: str = "previous", new_label: str = "new") -> str:
    """The unified diff of two run folders' candidate files (old -> new), every file of either; '' when equal.

    old, new: run folders holding candidate/; the labels prefix the file names in the diff's headers.
    """
    a, b = _read_candidate(old), _read_candidate(new)
    lines: list[str] = []
    for name in sorted(a.keys() | b.keys()):
        lines += difflib.unified_diff(a.get(name, "").splitlines(keepends=True),
                                      b.get(name, "").splitlines(keepends=True),
                                      fromfile=f"{old_label}/{name}", tofile=f"{new_label}/{name}")
    lines = [line if line.endswith("\n") else line + "\n" for line in lines]
    if len(lines) > MAX_DIFF_LINES:
        lines = [*lines[:MAX_DIFF_LINES], f"... ({len(lines) - MAX_DIFF_LINES} more lines)\n"]
    return "".join(lines)


def _find_store(summary: SessionSummary, home: Path | None) -> Path | None:
    """The store the session recorded into: --home of its config (relative to where it ran, so maybe not here)."""
    if home is None and summary.config.get("home"):
        home = Path(summary.config["home"])
    path = home / "store.sqlite" if home is not None else None
    return path if path is not None and path.is_file() else None


def _compute_seconds(store_path: Path | None, run_ids: set[int]) -> float | None:
    """Sandbox + evaluation seconds of the runs, as the store recorded them; None without a store.

    A run reused from an earlier session counts the time it took when it was computed: the page
    says what its results took, not what this invocation spent.
    """
    if store_path is None:
        return None
    store = Store(store_path)
    try:
        total = 0.0
        for run_id in run_ids:
            run = store.get(run_id)
            timings = (run.timings or {}) if run is not None else {}
            total += sum(float(v) for k in ("sandbox", "evaluate")
                         if isinstance(v := timings.get(k), int | float) and math.isfinite(v))
        return total
    finally:
        store.close()


def _row(idea: IdeaOutcome, run_dir: Path, page_dir: Path) -> LeaderRow:
    """An idea's leaderboard row: its best run, or its status and no numbers when it has none."""
    paper = review = None
    if idea.paper is not None:
        p = idea.paper
        if p.status == "ok":
            paper = _link("paper", _idea_file(run_dir, idea, p.pdf), page_dir)
        else:  # no PDF: the LaTeX log says why
            paper = _link(f"paper failed: {p.reason or 'not compiled'}", _idea_file(run_dir, idea, p.log), page_dir)
    if idea.review is not None:
        r = idea.review
        text = f"review: {r.Decision or '?'} ({r.Overall}/10)" if r.status == "ok" else f"review failed: {r.error}"
        review = _link(text, _idea_file(run_dir, idea, r.path), page_dir)
    best = idea.best
    if best is None or best.metric is None:
        return LeaderRow(name=idea.name, title=idea.title, status=idea.status, paper=paper, review=review,
                         run=_link(idea.folder, run_dir / idea.folder, page_dir))
    m = best.metric
    lo, hi = (m.ci95 + [None, None])[:2]
    return LeaderRow(name=idea.name, title=idea.title, mean=m.mean, stderr=m.stderr, ci_low=lo, ci_high=hi, n=m.n,
                     verdict=idea.verdict, p_value_holm=m.comparison.p_value_holm if m.comparison else None,
                     status="ok", paper=paper, review=review,
                     run=_link(f"{idea.folder}/{best.folder}", _entry_dir(run_dir, idea, best), page_dir))


def _sort_key(direction: str):
    def key(row: LeaderRow) -> tuple[int, float]:
        if row.mean is None or not math.isfinite(row.mean):
            return (1, 0.0)
        return (0, -row.mean if direction == "max" else row.mean)
    return key


def _failures(summary: SessionSummary) -> list[FailureGroup]:
    """Failed attempts (and ideas that failed before any run) grouped by their one-line reason."""
    groups: dict[str, list[str]] = {}
    for idea in summary.ideas:
        for r in idea.runs:
            if r.status in ("ok", "screened_out"):  # a screened-out candidate did not fail: Digest.screens counts it
                continue
            reason = r.reason or ("no edit" if r.status == "no_edit" else "unknown reason")
            groups.setdefault(reason, []).append(f"{idea.name}/{r.folder}")
        if idea.status == "failed" and not idea.runs:
            groups.setdefault(idea.reason or "unknown reason", []).append(idea.name)
    return sorted((FailureGroup(reason=k, count=len(v), runs=v) for k, v in groups.items()),
                  key=lambda g: (-g.count, g.reason))


def digest_from_run(run_dir: Path, page_dir: Path | None = None, home: Path | None = None) -> Digest:
    """The digest of a `scientist run` folder: its summary.json, run folders, and the store's timings.

    page_dir: where the page will live, for relative links (default: run_dir).
    home: the scientist home whose store.sqlite holds the runs' timings (default: the session's --home);
    without a store the compute hours are unknown. Raises DigestError (one line) when run_dir is not a
    readable `scientist run` folder.
    """
    run_dir = Path(run_dir)
    page_dir = Path(page_dir) if page_dir is not None else run_dir
    if not run_dir.is_dir():
        raise DigestError(f"{run_dir} is not a folder")
    if not (run_dir / "summary.json").is_file():
        raise DigestError(f"{run_dir} has no summary.json: not a `scientist run` folder, or its session has "
                          "not finished its baseline yet")
    try:
        summary = SessionSummary.read(run_dir)
    except ValueError as e:  # json.JSONDecodeError is one too
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DigestError(first if "summary.json" in first else f"{run_dir / 'summary.json'} is corrupt: {first}")\
            from None
    except OSError as e:
        raise DigestError(f"cannot read {run_dir / 'summary.json'}: {e.strerror or e}") from None

    metric = summary.metric
    rows = sorted((_row(i, run_dir, page_dir) for i in summary.ideas), key=_sort_key(metric.direction))
    best_name = summary.best.idea if summary.best is not None else None
    for r in rows:
        r.is_best = r.name == best_name

    baseline = None
    base_dir = run_dir / "baseline"
    if summary.baseline is not None:
        b = summary.baseline
        if not base_dir.is_dir() and b.run_dir:
            base_dir = Path(b.run_dir)
        baseline = LeaderRow(name="baseline", title=f"{summary.template}'s shipped code", mean=b.mean,
                             stderr=b.stderr, ci_low=b.ci95[0] if b.ci95 else None,
                             ci_high=b.ci95[1] if len(b.ci95) > 1 else None, n=b.n, status="baseline",
                             run=_link("baseline", base_dir, page_dir))

    new_bests = []
    if summary.best is not None and summary.best.metric is not None:
        idea = next((i for i in summary.ideas if i.name == summary.best.idea), None)
        best_dir = _entry_dir(run_dir, idea, summary.best) if idea is not None else Path(summary.best.run_dir or "")
        m = summary.best.metric
        new_bests.append(NewBest(
            name=summary.best.idea, title=idea.title if idea else "", mean=m.mean,
            ci_low=m.ci95[0] if m.ci95 else None, ci_high=m.ci95[1] if len(m.ci95) > 1 else None, n=m.n,
            previous="baseline", previous_mean=summary.baseline.mean if summary.baseline else None,
            verdict=idea.verdict if idea is not None else None,
            diff=candidate_diff(base_dir, best_dir, "baseline", summary.best.idea),
            run=_link(best_dir.name if idea is None else f"{idea.folder}/{summary.best.folder}", best_dir, page_dir)))

    run_ids = {r.run_id for i in summary.ideas for r in i.runs if r.run_id is not None}
    if summary.baseline is not None:
        run_ids.add(summary.baseline.run_id)
    screens = None
    if summary.cascade is not None:  # screens cost compute too
        c = summary.cascade
        run_ids |= {r.screen.run_id for i in summary.ideas for r in i.runs if r.screen is not None}
        run_ids |= {c.baseline_screen_run_id} if c.baseline_screen_run_id is not None else set()
        screens = Screens(screened=c.screened, promoted=c.promoted, screened_out=c.screened_out, rule=c.rule)
    seconds = _compute_seconds(_find_store(summary, home), run_ids)
    cost = Cost(usd=summary.cost_usd, llm_calls=summary.llm_calls,
                prompt_tokens=int(summary.tokens.get("prompt", 0)),
                completion_tokens=int(summary.tokens.get("completion", 0)),
                compute_hours=None if seconds is None else seconds / 3600,
                device="gpu" if summary.device == "gpu" else "cpu",
                wall_hours=summary.wall_s / 3600 if summary.wall_s else None)

    status = summary.status + (f": {summary.reason}" if summary.reason else "")
    who = summary.model or summary.proposer
    try:
        when = datetime.fromtimestamp((run_dir / "summary.json").stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")
    except OSError:
        when = ""
    return Digest(
        title=f"{summary.template}: {who}", subtitle=f"{when} · {len(summary.ideas)} ideas · {status}".strip(" ·"),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), template=summary.template,
        metric=metric.name, direction=metric.direction, status=status, baseline=baseline, leaderboard=rows,
        new_bests=new_bests, cost=cost, failures=_failures(summary), screens=screens,
        papers=[r.paper.model_copy(update={"text": f"{r.name}: {r.paper.text}"}) for r in rows if r.paper],
        reviews=[r.review.model_copy(update={"text": f"{r.name}: {r.review.text}"}) for r in rows if r.review])


# ------------------------------------------------------------------------------------------------ figures


def _new_figure(size: tuple[float, float]):
    """A figure outside pyplot: no global registry to leak into, nothing to close, safe from any thread."""
    from matplotlib.figure import Figure  # lazily: only pages with figures pay for matplotlib

    fig = Figure(figsize=size)
    return fig, fig.subplots()


def _png_data_uri(fig) -> str:
    """A matplotlib figure as a data:image/png URI (no Software tag: the same page renders the same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _errs(mean: float, lo: float | None, hi: float | None) -> tuple[float, float]:
    """Error-bar lengths below and above; zero where the interval is unknown (one seed)."""
    return (max(mean - lo, 0.0) if _finite(lo) else 0.0), (max(hi - mean, 0.0) if _finite(hi) else 0.0)


def leaderboard_figure(d: Digest) -> str | None:
    """Means of the leaderboard with 95% intervals, the baseline as a band: a PNG data URI; None if nothing to plot."""
    rows = [r for r in d.leaderboard if _finite(r.mean)]
    base = d.baseline if d.baseline is not None and _finite(d.baseline.mean) else None
    if not rows and base is None:
        return None
    # papers.figures sets the Agg backend and the papers' style; imported here so that building a Digest
    # (and the Markdown) never loads matplotlib.
    from papers.figures import BASELINE_COLOR, RUN_COLOR, figure_style, legend_above, plain_text, point_axes

    with figure_style():
        fig, ax = _new_figure((7.0, 3.4))
        if base is not None:
            lo, hi = _errs(base.mean, base.ci_low, base.ci_high)
            ax.axhspan(base.mean - lo, base.mean + hi, color=BASELINE_COLOR, alpha=0.15, linewidth=0)
            ax.axhline(base.mean, color=BASELINE_COLOR, linestyle="--", linewidth=1.2,
                       label="baseline (mean, 95% CI band)")
        xs = list(range(1, len(rows) + 1))
        if rows:
            errs = [_errs(r.mean, r.ci_low, r.ci_high) for r in rows]
            ax.errorbar(xs, [r.mean for r in rows], yerr=[[e[0] for e in errs], [e[1] for e in errs]], fmt="o",
                        color=RUN_COLOR, ecolor=RUN_COLOR, elinewidth=1.2, label="best run per idea, 95% CI")
        point_axes(ax, [plain_text(r.name) for r in rows], d.metric, d.direction, max_chars=10)
        legend_above(ax, ncol=2)
        return _png_data_uri(fig)


def series_figure(d: Digest) -> str | None:
    """The campaign's best by night with its 95% interval as a band: a PNG data URI, or None without a series."""
    pts = [p for p in d.series if _finite(p.mean)]
    if not pts:
        return None
    from papers.figures import BASELINE_COLOR, RUN_COLOR, figure_style, legend_above, plain_text

    with figure_style():
        fig, ax = _new_figure((7.0, 3.0))
        xs = list(range(len(pts)))
        lo = [p.ci_low if _finite(p.ci_low) else p.mean for p in pts]
        hi = [p.ci_high if _finite(p.ci_high) else p.mean for p in pts]
        ax.fill_between(xs, lo, hi, color=RUN_COLOR, alpha=0.18, linewidth=0, label="95% CI")
        ax.plot(xs, [p.mean for p in pts], "o-", color=RUN_COLOR, label="best so far (mean)")
        if d.baseline is not None and _finite(d.baseline.mean):
            ax.axhline(d.baseline.mean, color=BASELINE_COLOR, linestyle="--", linewidth=1.2, label="baseline")
        ax.set_xticks(xs)
        ax.set_xticklabels([plain_text(p.label) for p in pts], rotation=30 if len(pts) > 6 else 0,
                           ha="right" if len(pts) > 6 else "center")
        ax.set_ylabel(plain_text(d.metric))
        legend_above(ax, ncol=3)
        return _png_data_uri(fig)


# ------------------------------------------------------------------------------------------------ rendering


def _verdict(row: LeaderRow) -> str:
    if row.verdict is None:
        return ""
    short = {"better": "better", "worse": "worse", "no significant difference": "n.s."}[row.verdict]
    return short + (f" ({format_p(row.p_value_holm, 'p_Holm')})" if _finite(row.p_value_holm) else "")


def _css_class(text: str) -> str:
    """Text as a CSS class name ("re-evaluated, n.s." -> "re-evaluated-n-s")."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _data_value(x: float | None) -> str:
    """The exact number for data-value attributes (repr round-trips), so a test or script reads back what was shown."""
    if x is None:
        return ""
    return repr(float(x))


def _md_cell(text: object) -> str:
    """Text in a Markdown table cell: no pipes or newlines to break the row."""
    return " ".join(str(text).split()).replace("|", "\\|")


for _env in (_ENV_HTML, _ENV_MD):
    _env.filters.update(num=fmt_number, verdict=_verdict, data_value=_data_value, md=_md_cell, css=_css_class,
                        p_holm=lambda p: format_p(p, "p_Holm") if p is not None else "")


def render_markdown(d: Digest) -> str:
    """The digest as Markdown (no figures; the numbers, diffs, cost, failures and links)."""
    return _ENV_MD.get_template("digest.md.j2").render(d=d)


def render_html(d: Digest) -> str:
    """The digest as one self-contained HTML page: inline CSS, figures as data URIs, only relative links."""
    return _ENV_HTML.get_template("digest.html.j2").render(d=d, leaderboard_png=leaderboard_figure(d),
                                                          series_png=series_figure(d))


def write_report(run_dir: Path, home: Path | None = None) -> tuple[Path, Path]:
    """Write run_dir/report.md and run_dir/report.html for a `scientist run` folder; returns their paths.

    Raises DigestError (one line) when run_dir is not a readable run folder.
    """
    run_dir = Path(run_dir)
    d = digest_from_run(run_dir, home=home)
    md, html = run_dir / "report.md", run_dir / "report.html"
    _write_atomic(md, render_markdown(d))
    _write_atomic(html, render_html(d))
    return md, html


def _nice_step(span: float) -> float:
    """A tick step of 1, 2 or 5 times a power of ten giving about five ticks over span."""
    raw = span / 5
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def index_chart(ix: CampaignIndex, width: int = 920, height: int = 320) -> dict | None:
    """The index's chart as SVG geometry (pixels): the confirmed best by night with its 95% interval, the baseline
    on each night's fresh seeds, and where the template changed; None when no night has a number to plot."""
    pts = ix.points
    values = [v for p in pts for v in (p.best_mean, p.best_ci_low, p.best_ci_high, p.baseline_mean,
                                       p.baseline_ci_low, p.baseline_ci_high) if _finite(v)]
    if not values:
        return None
    left, right, top, bottom = 72, 16, 34, 58 if len(pts) > 6 else 40
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad
    step = _nice_step(hi - lo)
    ticks = [k * step for k in range(math.ceil(lo / step), math.floor(hi / step) + 1)]
    plot_w, plot_h = width - left - right, height - top - bottom
    slot = plot_w / len(pts)

    def x(i: int) -> float:
        return round(left + (i + 0.5) * slot, 1)

    def y(v: float) -> float:
        return round(top + (hi - v) / (hi - lo) * plot_h, 1)

    def bar(i: int, dx: float, mean: float | None, lo_: float | None, hi_: float | None) -> dict | None:
        if not _finite(mean):
            return None
        return {"x": x(i) + dx, "y": y(mean), "y_lo": y(lo_) if _finite(lo_) else y(mean),
                "y_hi": y(hi_) if _finite(hi_) else y(mean)}

    best, baseline, lines = [], [], []
    segment: list[str] = []
    for i, p in enumerate(pts):
        if i and p.version != pts[i - 1].version:
            if len(segment) > 1:
                lines.append(" ".join(segment))
            segment = []
        b = bar(i, -5 if _finite(p.baseline_mean) else 0, p.best_mean, p.best_ci_low, p.best_ci_high)
        if b:
            best.append({**b, "p": p})
            segment.append(f"{b['x']},{b['y']}")
        else:
            if len(segment) > 1:
                lines.append(" ".join(segment))
            segment = []
        b = bar(i, 5 if _finite(p.best_mean) else 0, p.baseline_mean, p.baseline_ci_low, p.baseline_ci_high)
        if b:
            baseline.append({**b, "p": p})
    if len(segment) > 1:
        lines.append(" ".join(segment))
    changes = [round(left + i * slot, 1) for i in range(1, len(pts)) if pts[i].version != pts[i - 1].version]
    return {"width": width, "height": height, "left": left, "right": width - right, "top": top,
            "bottom": height - bottom, "ticks": [{"y": y(v), "text": fmt_number(v, 3)} for v in ticks],
            "labels": [{"x": x(i), "text": p.label} for i, p in enumerate(pts)], "rotate": len(pts) > 6,
            "best": best, "baseline": baseline, "lines": lines, "changes": changes}


def render_index(ix: CampaignIndex) -> str:
    """The campaign's index as one self-contained HTML page: inline CSS, the chart as inline SVG, relative links."""
    return _ENV_HTML.get_template("index.html.j2").render(ix=ix, chart=index_chart(ix))


def write_index(ix: CampaignIndex, dest: Path) -> Path:
    """Write the campaign's index page to dest (its night links are relative to dest's folder); returns dest."""
    dest = Path(dest)
    _write_atomic(dest, render_index(ix))
    return dest


def _write_atomic(path: Path, text: str) -> None:
    """A reader (a browser, a mail job) never sees half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
