"""What the commands print: tables and summaries, rendered with rich from records.

Nothing here computes a result; it only shows what the runner, the session, the paper stage
and the reviewer returned. Without a terminal (cron, CI, a pipe) lines are written whole.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from base.cascade import ScreenDecision
from base.records import PaperStatus, SessionSummary
from base.results import ConfirmationResult
from base.stats import format_p, holm_adjust
from base.store import Run
from base.template import Template
from reviewer.calibrate import AI_SCIENTIST_REPORTED, Metrics
from scientist.experiment import compare_runs
from scientist.runner import EvalResult

_SHORT = {"no significant difference": "n.s."}


def make_console(stderr: bool = False) -> Console:
    """Rich output; without a terminal (cron, CI, a pipe, a file) lines and tables are written whole.

    Rich assumes 80 columns when it cannot ask a terminal, and cuts table cells to fit ("candid…").
    """
    c = Console(stderr=stderr, highlight=False, emoji=False)  # ":x:" in a path or message is text
    return c if c.is_terminal else Console(stderr=stderr, highlight=False, emoji=False, width=100_000)


def _fmt(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}f}"


def eval_line(label: str, res: EvalResult, template: Template) -> tuple[bool, str]:
    """One line on an evaluation as it finishes: (ok, text); failures go to stderr."""
    run = res.run
    if not res.ok:
        return False, (f"[red]✗[/red] {label}: failed: {escape(run.reason or '')} "
                       f"(run {run.id}, log {res.out_dir}/train.log)")
    m = run.result.summary(template.spec.metric.name)
    how = f"cached from run {run.id}" if res.cached else f"run {run.id}"
    return True, (f"[green]✓[/green] {label}: {template.spec.metric.name} = {m.mean:.4f} "
                  f"(95% CI {m.ci95[0]:.4f} to {m.ci95[1]:.4f}, n={m.n}; {how}) "
                  f"{res.out_dir}/final_info.json")


def results_table(template: Template, results: list[tuple[str, EvalResult]], baseline: Run | None,
                  test: str = "welch", screened_out: list[str] = ()) -> tuple[Table, str]:
    """Evaluated candidates against the cached baseline (mean, interval, n, test, time), and a line naming the test.

    Several candidates are one family of comparisons with one baseline: their p-values are adjusted with
    Holm's method and the verdict shown is the adjusted one (one lucky candidate in twenty is no finding).
    screened_out: candidates the cascade's screen kept from the full evaluation, listed with no number (a
    screen is no result).
    """
    metric = template.spec.metric
    arrow = "higher" if metric.direction == "max" else "lower"
    compared = {i: compare_runs(res.run, baseline, metric.name, metric.direction, test)  # by position: labels repeat
                for i, (_, res) in enumerate(results) if res.ok and baseline is not None and baseline.id != res.run.id}
    holm_adjust(list(compared.values()), metric.direction)
    several = len(compared) > 1
    names = dict.fromkeys(c.test for c in compared.values())
    whys = dict.fromkeys(w for c in compared.values() for w in c.why.split("; ") if w)
    line = ("vs baseline: " + ", ".join(names) + (f" ({'; '.join(whys)})" if whys else "")
            + (f"; Holm-adjusted over the {len(compared)} candidates" if several else "")) if compared else ""
    table = Table(title=f"{template.name}: {metric.name} ({arrow} is better)")
    for col in ("candidate", "status", "mean ± s.e.", "95% CI", "n", "vs baseline", "time"):
        numeric = col not in ("candidate", "status", "vs baseline")
        table.add_column(col, justify="right" if numeric else "left", no_wrap=numeric)
    for i, (label, res) in enumerate(results):
        run = res.run
        time_s = "cached" if res.cached else f"{res.timings.get('total', 0):.1f}s"
        if not res.ok:
            table.add_row(label, "[red]failed[/red]", "", "", "", "", time_s)
            continue
        m = run.result.summary(metric.name)
        versus = ""
        if baseline is not None and baseline.id == run.id:
            versus = "(baseline)"
        elif i in compared:
            c = compared[i]
            p = format_p(c.p_value) + (f", {format_p(c.p_value_holm, 'Holm p')}" if several else "")
            verdict = c.final_verdict if several else c.verdict
            color = {"better": "green", "worse": "red"}.get(verdict, "yellow")
            versus = f"[{color}]{c.difference:+.4f}, {p}, {verdict}[/{color}]"
        table.add_row(label, "[green]ok[/green]", f"{_fmt(m.mean)} ± {_fmt(m.stderr)}",
                      f"[{_fmt(m.ci95[0])}, {_fmt(m.ci95[1])}]", str(m.n), versus, time_s)
    for label in screened_out:
        table.add_row(label, "[yellow]screened out[/yellow]", "", "", "", "not fully evaluated", "")
    return table, escape(line)


def screen_line(label: str, screen: EvalResult, decision: ScreenDecision | None,
                template: Template) -> tuple[bool, str]:
    """One line on a candidate's screen (`scientist eval --cascade`): (ok, text); a failed screen goes to stderr."""
    run = screen.run
    if decision is None:
        return False, (f"[red]✗[/red] {escape(label)}: its screen failed: {escape(run.reason or '')} "
                       f"(run {run.id}, log {screen.out_dir}/train.log)")
    how = f"cached screen {run.id}" if screen.cached else f"screen {run.id}"
    mark = "[green]↑[/green]" if decision.promoted else "[yellow]–[/yellow]"
    return True, f"{mark} {escape(label)}: {escape(decision.line(template.spec.metric.name))} ({how})"


def templates_table(rows: list[tuple[Template, Run | None]]) -> Table:
    """The templates with their metric, direction, seeds and cached baseline."""
    table = Table(title="templates")
    for col in ("name", "metric", "direction", "seeds", "baseline", "description"):
        table.add_column(col)
    for t, base in rows:
        cached = f"cached ({base.metric_mean:.4f})" if base else "not computed"
        table.add_row(t.name, t.spec.metric.name, t.spec.metric.direction, str(t.spec.seeds), cached,
                      t.spec.description)
    return table


def runs_table(runs: list[Run], where: Path) -> Table:
    """The runs of the store."""
    table = Table(title=f"runs in {where}")
    for col in ("id", "template", "kind", "candidate", "seeds", "status", "metric", "reason"):
        table.add_column(col)
    for r in runs:
        metric = f"{r.metric_mean:.4f} ± {r.metric_stderr:.4f}" if r.metric_mean is not None else ""
        if metric and r.kind == "screen":  # a cascade's screen (fewer seeds, a shorter run): never a result
            metric = f"(screen) {metric}"
        table.add_row(str(r.id), r.template, r.kind, r.candidate_hash[:8], str(r.seeds), r.status, metric,
                      (r.reason or "")[:80])
    return table


def papers_table(run_dir: Path, papers: list[tuple[str, PaperStatus]]) -> Table:
    """The papers `scientist writeup` wrote: status, PDF or first error, the claim check's counts."""
    table = Table(title=f"papers in {run_dir}")
    for col in ("idea", "status", "pdf or first error", "unverified numbers", "struck sentences"):
        table.add_column(col)
    for name, p in papers:
        table.add_row(escape(name), p.status, escape(p.pdf or p.reason or ""), str(p.unverified_numbers),
                      str(p.struck_sentences))
    return table


def reviews_table(results: list[dict], out: Path) -> Table:
    """One row per reviewed paper: Overall, Decision, injection flags, cost."""
    table = Table(title=f"reviews ({out})")
    for col in ("paper", "status", "Overall", "Decision", "injection flags", "cost"):
        table.add_column(col)
    for r in results:
        rev = r.get("review") or {}
        table.add_row(escape(Path(r["paper"]).name), r["status"] if r["status"] == "ok" else "[red]error[/red]",
                      str(rev.get("Overall", "")), rev.get("Decision", ""), str(len(r.get("injection_flags") or [])),
                      f"${r['usage']['cost_usd']:.4f}")
    return table


def calibration_table(rows: dict[str, Metrics], reviewed: int, labelled: int) -> Table:
    """Accuracy of each decision rule against the labels, as The AI Scientist reports it."""
    table = Table(title=f"calibration on {reviewed} of {labelled} labelled papers",
                  caption=AI_SCIENTIST_REPORTED)
    for col in ("rule", "accuracy", "balanced accuracy", "F1", "FPR", "FNR"):
        table.add_column(col)
    for name, m in rows.items():
        table.add_row(name, *(f"{getattr(m, k):.3f}" for k in ("accuracy", "balanced_accuracy", "f1", "fpr", "fnr")))
    return table


def print_session(console: Console, summary: SessionSummary, out_dir: Path) -> None:
    """The end of `scientist run`: each idea's best result against the baseline, cost, papers, reviews."""
    table = Table(title=f"{summary.template}: {summary.metric.name} per idea ({summary.status})")
    for col in ("idea", "status", "best mean ± s.e.", "95% CI", "vs baseline (Holm)", "runs"):
        table.add_column(col, no_wrap=col in ("best mean ± s.e.", "95% CI"))
    base = summary.baseline
    if base:
        table.add_row("baseline", "", f"{base.mean:.4f} ± {base.stderr:.4f}",
                      f"[{base.ci95[0]:.4f}, {base.ci95[1]:.4f}]", "", "")
    for i in summary.ideas:
        if i.best is None:
            table.add_row(escape(i.name), "[red]failed[/red]", "", "", escape(i.reason or ""), str(len(i.runs)))
            continue
        m, c = i.best.metric, i.best.metric.comparison
        verdict = f"{_SHORT.get(c.final_verdict, c.final_verdict)} ({format_p(c.p_value_holm, digits=2)})"
        table.add_row(escape(i.name), i.status, f"{m.mean:.4f} ± {m.stderr:.4f}", f"[{m.ci95[0]:.4f}, {m.ci95[1]:.4f}]",
                      verdict, str(len(i.runs)))
    console.print(table)
    if summary.significance_test:
        console.print(f"test: {summary.significance_test}")
    if summary.cascade is not None:
        c = summary.cascade
        console.print(f"cascade: {c.screened} candidates screened ({c.seeds} seeds, {c.cost:g} of an evaluation each), "
                      f"{c.promoted} promoted to the full evaluation, {c.screened_out} screened out; {c.rule}")
    console.print(f"cost ${summary.cost_usd:.4f} in {summary.llm_calls} model calls; wall time {summary.wall_s:.0f} s")
    console.print(f"results: {out_dir}/summary.json (per idea: {out_dir}/<idea>/run_*/final_info.json)")
    for i in summary.ideas:
        paper = i.paper
        if paper and paper.status == "ok":
            console.print(f"paper: {paper.pdf} ({paper.struck_sentences} struck sentences)")
            if i.review is not None and i.review.Overall is not None:
                console.print(f"review: {i.review.path} (Overall {i.review.Overall}, {i.review.Decision})")
        elif paper:
            see = f"see {paper.tex}; " if Path(paper.tex).is_file() else ""  # none when no section was written
            console.print(f"paper of {escape(i.name)}: [red]{paper.status}[/red]: {escape(paper.reason or '')} "
                          f"({see}{paper.struck_sentences} struck sentences)")
    if summary.review.startswith("skipped"):
        console.print(f"reviews: {summary.review}; review a paper any time with `scientist review PAPER.pdf "
                      "--model ...`")
    if summary.status != "complete":
        console.print(f"[yellow]{summary.status}:[/yellow] {escape(summary.reason or '')}; "
                      "run the same command again to resume")


def _result_cells(r: ConfirmationResult) -> tuple[str, str, str]:
    lo, hi = r.ci95
    verdict = f"{_SHORT.get(r.verdict, r.verdict)} ({format_p(r.p_value_holm, 'Holm p')})"
    return f"{_fmt(r.mean)} ± {_fmt(r.stderr)}", f"[{_fmt(lo)}, {_fmt(hi)}]", verdict


def confirmation_line(c, template: Template) -> str:
    """One confirmation of a night (scientist.campaign.Confirmed), in words."""
    search = c.search_run.metric_mean
    if c.result is None:
        return f"confirm {escape(c.idea)}: search {_fmt(search)}; [red]{escape(c.reason or 'failed')}[/red]"
    mean, ci, verdict = _result_cells(c.result)
    star = " [green]new best[/green]" if c.new_best else ""
    return (f"confirm {escape(c.idea)}: search {_fmt(search)} -> {mean} on {c.result.n} fresh seeds, 95% CI {ci}, "
            f"vs baseline {_fmt(c.result.baseline_mean)}: {verdict}{star}")


def campaigns_table(rows: list[tuple[dict, dict | None]]) -> Table:
    """Every campaign of a home with its confirmed best."""
    table = Table(title="campaigns")
    for col in ("name", "template", "nights", "last night", "confirmed best"):
        table.add_column(col)
    for row, best in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["last"])) if row["last"] else ""
        shown = f"{best['idea']}: {_fmt(best['result'].mean)} ± {_fmt(best['result'].stderr)}" if best else "none"
        table.add_row(row["name"], row["template"], str(row["nights"]), when, shown)
    return table


def leaderboard_table(name: str, rows: list[dict]) -> Table:
    """A campaign's re-evaluated results (of its current template version), best first, with intervals, the test
    against the baseline, and whether each was confirmed."""
    metric = rows[0]["result"].metric if rows else "metric"
    table = Table(title=f"{name}: re-evaluated {metric}, best first (each on its night's fresh seeds; vs the baseline "
                        "on the same seeds, Holm over each night; the current template version)")
    for col in ("rank", "idea", "night", "mean ± s.e.", "95% CI", "n", "vs baseline", "status"):
        table.add_column(col)
    for i, c in enumerate(rows, start=1):
        r = c["result"]
        mean, ci, verdict = _result_cells(r)
        status = "confirmed" if r.verdict == "better" else f"re-evaluated, {_SHORT.get(r.verdict, r.verdict)}"
        table.add_row(str(i), c["idea"], r.night or "", mean, ci, str(r.n), verdict,
                      status + (", new best" if c["new_best"] else ""))
    return table


def nights_table(nights: list[dict]) -> Table:
    """A campaign's nights: folder, status, when."""
    table = Table(title="nights")
    for col in ("night", "status", "started", "folder", "reason"):
        table.add_column(col)
    for i, n in enumerate(nights, start=1):
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(n["created"]))
        table.add_row(str(i), n["status"], started, n["out_dir"], n["reason"] or "")
    return table
