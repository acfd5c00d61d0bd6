"""What a paper may state: the logged facts of an idea's runs, and the results tables made from them.

Everything here is read from final_info.json files written by the sealed
evaluator and from summary.json; nothing is computed that was not logged, apart
from rounding for display. The claim check compares every number in the prose
with these facts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from base.records import Comparison, Idea, IdeaOutcome, RunEntry, SessionSummary
from base.results import FinalInfo
from base.stats import PAIRED, PERMUTATION, SIGN_FLIP, WELCH, interval_method
from base.template import Template
from papers.claims import Fact, Kind, numbers
from papers.tex import tex_escape


@dataclass
class PaperInput:
    """One idea's results, as the paper writer needs them."""

    template: Template
    idea: Idea
    entry: IdeaOutcome            # the idea's outcome in summary.json (status, reason, best, runs)
    baseline: FinalInfo           # the baseline's final_info.json
    infos: dict[str, FinalInfo]   # final_info.json of each successful run, by "run_<j>[_attempt_<k>]"
    notes: str = ""
    significance: str = ""
    sources: dict[str, str] = field(default_factory=dict)  # the best run's candidate files

    @property
    def metric(self) -> str:
        return self.template.spec.metric.name

    @property
    def direction(self) -> str:
        return self.template.spec.metric.direction

    @property
    def ok_runs(self) -> list[RunEntry]:
        return self.entry.ok_runs

    @property
    def best_info(self) -> FinalInfo | None:
        best = self.entry.best
        return self.infos.get(best.folder) if best else None

    @property
    def comparisons(self) -> list[Comparison]:
        """The comparisons of the successful runs with the baseline."""
        return [r.metric.comparison for r in self.ok_runs if r.metric and r.metric.comparison]

    @property
    def interval(self) -> str:
        """How the 95% intervals were made, in words (a bounded metric's stay within its range)."""
        spec = self.template.spec.metric
        return interval_method(self.baseline.summary(self.metric).ci95_method, spec.low, spec.high)


def load_input(template: Template, out_dir: Path, entry: IdeaOutcome, summary: SessionSummary) -> PaperInput:
    """Read an idea's logged results from a finished run folder."""
    idea_dir = out_dir / entry.folder
    baseline = FinalInfo.from_json(json.loads((out_dir / "baseline" / "final_info.json").read_text()))
    infos = {}
    for r in entry.runs:
        path = idea_dir / r.folder / "final_info.json"
        if r.status == "ok" and path.is_file():
            infos[r.folder] = FinalInfo.from_json(json.loads(path.read_text()))
    sources = {}
    if entry.best:
        cand = idea_dir / entry.best.folder / "candidate"
        sources = {str(p.relative_to(cand)): p.read_text() for p in sorted(cand.rglob("*")) if p.is_file()}
    ideas_path = out_dir / "ideas.json"  # the idea's full text; its name and title are in summary.json too
    ideas = {i.get("idx"): i for i in json.loads(ideas_path.read_text())} if ideas_path.is_file() else {}
    idea = Idea.model_validate(ideas.get(entry.idx, {"name": entry.name, "title": entry.title}))
    notes = (idea_dir / "notes.md").read_text() if (idea_dir / "notes.md").is_file() else ""
    return PaperInput(template=template, idea=idea, entry=entry, baseline=baseline, infos=infos, notes=notes,
                      significance=summary.significance_test, sources=sources)


def _summary_facts(prefix: str, info: FinalInfo) -> list[Fact]:
    # Per-seed values are not facts: a paper states summaries, and hundreds of them would match anything.
    out = [Fact(f"{prefix}.n", float(info.n), Kind.COUNT, prefix)]
    for name, m in info.metrics.items():
        out += [Fact(f"{prefix}.{name}.mean", m.mean, Kind.MEAN, prefix),
                Fact(f"{prefix}.{name}.stderr", m.stderr, Kind.STDERR, prefix),
                Fact(f"{prefix}.{name}.ci95_low", m.ci95[0], Kind.INTERVAL, prefix),
                Fact(f"{prefix}.{name}.ci95_high", m.ci95[1], Kind.INTERVAL, prefix)]
    return out


def _flatten(prefix: str, value, kind: str, lists: bool = True, run: str | None = None) -> list[Fact]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [Fact(prefix, float(value), kind, run)]
    if isinstance(value, dict):
        return [f for k, v in value.items() for f in _flatten(f"{prefix}.{k}", v, kind, lists, run)]
    if isinstance(value, list) and lists:
        return [f for i, v in enumerate(value) for f in _flatten(f"{prefix}[{i}]", v, kind, lists, run)]
    return []


def _ratio_facts(run: str, info: FinalInfo, baseline: FinalInfo) -> list[Fact]:
    """A run's means and scalar extras over the baseline's, for "doubles" or "3 times higher" (positive only)."""
    pairs = {name: (m.mean, baseline.metrics[name].mean) for name, m in info.metrics.items()
             if name in baseline.metrics}
    extra, base_extra = info.extra, baseline.extra
    pairs |= {key: (v, base_extra[key]) for key, v in extra.items()
              if isinstance(v, int | float) and not isinstance(v, bool)
              and isinstance(base_extra.get(key), int | float) and not isinstance(base_extra.get(key), bool)}
    # The quantity's name is the last part of the fact's name: a ratio must be named in its sentence.
    return [Fact(f"{run}.ratio.{name}", a / b, Kind.RATIO, run) for name, (a, b) in pairs.items()
            if b != 0 and a / b > 0]


TEMPLATE_TEXTS = ("background", "setup", "related")  # the template's own latex/<name>.tex, pasted into papers
P_THRESHOLDS = (0.05, 0.01, 0.001)


def template_text(root: Path, name: str) -> str:
    """A template's own LaTeX text latex/<name>.tex ("" if it has none)."""
    path = root / "latex" / f"{name}.tex"
    return path.read_text().strip() if path.is_file() else ""


def collect(inp: PaperInput) -> list[Fact]:
    """Every number the paper may state, with where it was logged and what kind of number it is."""
    facts = _summary_facts("baseline", inp.baseline)
    # Lists in `extra` (learning curves, per-seed sweeps) may be figures, but are not facts for prose.
    facts += _flatten("baseline.extra", inp.baseline.extra, Kind.EXTRA, lists=False, run="baseline")
    thresholds = []
    for r in inp.ok_runs:
        name = r.folder
        facts += _summary_facts(name, inp.infos[name]) if name in inp.infos else []
        facts += _ratio_facts(name, inp.infos[name], inp.baseline) if name in inp.infos else []
        c = r.metric.comparison
        p_values = []
        for key, kind in (("difference", Kind.DIFFERENCE), ("p_value", Kind.P_VALUE), ("p_value_holm", Kind.P_VALUE)):
            value = getattr(c, key) if c is not None else None
            if value is not None:
                facts.append(Fact(f"{name}.comparison.{key}", value, kind, name))
                p_values += [value] if kind == Kind.P_VALUE else []
        # "p < 0.001" is a true statement about this run only when one of its own p-values is below 0.001.
        thresholds += [Fact(f"{name}.p_threshold_{t:g}", t, Kind.P_THRESHOLD, name) for t in P_THRESHOLDS
                       if any(p < t for p in p_values)]
        if r.metric.normalized is not None:
            facts.append(Fact(f"{name}.normalized", r.metric.normalized, Kind.NORMALIZED, name))
            facts.append(Fact(f"{name}.normalized_percent_change", (r.metric.normalized - 1.0) * 100,
                              Kind.NORMALIZED, name))
    best = inp.best_info
    if best is not None:
        facts += _flatten("best.extra", best.extra, Kind.EXTRA, lists=False, run=inp.entry.best.folder)
    facts += _flatten("config", inp.template.spec.config, Kind.CONFIG)
    runs = inp.entry.runs
    facts += [Fact("count.runs", float(len({r.run for r in runs})), Kind.COUNT),
              Fact("count.attempts", float(len(runs)), Kind.COUNT),
              Fact("count.successful_runs", float(len(inp.ok_runs)), Kind.COUNT),
              Fact("seeds", float(inp.baseline.n), Kind.COUNT)]
    facts += [Fact("alpha", 0.05, Kind.LEVEL), Fact("confidence_percent", 95.0, Kind.LEVEL)]
    metric = inp.template.spec.metric  # a declared range, named where the paper says how intervals were made
    facts += [Fact(f"metric.{k}", v, Kind.TEMPLATE) for k, v in (("low", metric.low), ("high", metric.high))
              if v is not None]
    facts[:0] = thresholds  # first: the name to record for a bound
    # The numbers that define the idea and its code (a loss's constants, say) may be stated as settings, never
    # as results (papers.claims.SETTING_KINDS): a 1.45 in the code is no reward gain of 1.45.
    for key in ("title", "hypothesis", "experiment"):
        facts += [Fact(f"idea.{key}", float(x), Kind.IDEA) for x in _NUMBER.findall(getattr(inp.idea, key))]
    for path, src in inp.sources.items():
        facts += [Fact(f"candidate.{path}", float(x), Kind.CONSTANT) for x in _NUMBER.findall(src)]
    # The template's own text is trusted input: its numbers ("all 47^2 = 2209 pairs") are facts as written.
    for name in TEMPLATE_TEXTS:
        facts += [Fact(f"template.{name}.tex", v, Kind.TEMPLATE)
                  for _, v, _, _, _ in numbers(template_text(inp.template.root, name))]
    return facts


_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:[eE]-?\d+)?")


def quotes(inp: PaperInput) -> tuple[str, ...]:
    """The idea's own text as a paper pastes it (papers.claims.check exempts the numbers of a verbatim copy)."""
    return tuple(tex_escape(t) for t in (inp.idea.title, inp.idea.hypothesis, inp.idea.experiment) if t)


def best_run(inp: PaperInput) -> str | None:
    """The folder of the idea's best run, whose facts a sentence about "the best run" or "our loss" may state."""
    return inp.entry.best.folder if inp.entry.best else None


def fmt(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}f}"


def fmt_p(p: float) -> str:
    """p-values as LaTeX: fixed digits, or an upper bound below 0.001 (also a true statement)."""
    if p != p:  # NaN
        return "--"
    return "$<0.001$" if p < 0.001 else f"{p:.3f}"


# The tests base.stats.compare runs, in a paper's words, and their short names for a table header.
TEST_TEX = {WELCH: ("Welch's two-sided $t$-test \\cite{welch1947generalization}", "Welch"),
            PAIRED: ("the two-sided paired $t$-test over seeds", "paired"),
            PERMUTATION: ("an exact two-sided permutation test over the pooled seeds", "permutation"),
            SIGN_FLIP: ("an exact two-sided sign-flip test over the paired seeds", "sign-flip")}


def test_text(comparisons: list[Comparison]) -> str:
    """Which tests compared the runs with the baseline, and why, in LaTeX (Welch's when there are none)."""
    used = dict.fromkeys((c.test, c.why) for c in comparisons) or {(WELCH, ""): None}
    parts = [TEST_TEX.get(test, (tex_escape(test), ""))[0] + (f" ({tex_escape(why)})" if why else "")
             for test, why in used]
    return "; for some runs ".join(parts)


def results_table(inp: PaperInput) -> dict:
    """The main results table (LaTeX body, caption, label): the baseline and every successful run."""
    metric = inp.metric
    rows = []
    b = inp.baseline.summary(metric)
    rows.append(f"Baseline & {fmt(b.mean)} $\\pm$ {fmt(b.stderr)} & [{fmt(b.ci95[0])}, "
                f"{fmt(b.ci95[1])}] & {b.n} & -- & -- & -- \\\\")
    for r in inp.ok_runs:
        m, c = r.metric, r.metric.comparison
        difference, p, p_holm = (c.difference, c.p_value, c.p_value_holm) if c else (0.0, float("nan"), None)
        label = r.folder.replace("_", " ")
        rows.append(f"{label.capitalize()} & {fmt(m.mean)} $\\pm$ {fmt(m.stderr)} & [{fmt(m.ci95[0])}, "
                    f"{fmt(m.ci95[1])}] & {m.n} & {difference:+.4f} & "
                    f"{fmt_p(p)} & {fmt_p(p_holm if p_holm is not None else float('nan'))} \\\\")
    names = {TEST_TEX.get(c.test, ("", "test"))[1] for c in inp.comparisons} or {"Welch"}
    short = names.pop() if len(names) == 1 else "test"
    body = "\n".join([
        "\\begin{tabular}{lcccccc}", "\\toprule",
        f"Run & Mean $\\pm$ s.e. & 95\\% CI & $n$ & $\\Delta$ vs.\\ baseline & $p$ ({short}) & $p$ (Holm) \\\\",
        "\\midrule", *rows, "\\bottomrule", "\\end{tabular}"])
    better = "higher" if inp.direction == "max" else "lower"
    caption = (f"Sealed evaluation of \\texttt{{{tex_escape(metric)}}} ({better} is better) for the baseline and "
               f"every successful run, over $n$ seeds. 95\\% CI: {tex_escape(inp.interval)}. "
               f"$p$: {test_text(inp.comparisons)}, against the baseline; Holm: adjusted for all comparisons of the "
               "session.")
    return {"body": body, "caption": caption, "label": "tab:results"}


def failures_table(inp: PaperInput) -> dict | None:
    """The runs that failed, with their one-line reasons (for negative results and honesty)."""
    failed = [r for r in inp.entry.runs if r.status != "ok"]
    if not failed:
        return None
    rows = [f"{r.run} & {r.attempt} & {tex_escape(r.status)} & "
            f"\\parbox[t]{{0.6\\linewidth}}{{{tex_escape((r.reason or '')[:300])}}} \\\\" for r in failed]
    body = "\n".join(["\\begin{tabular}{cclp{0.6\\linewidth}}", "\\toprule", "Run & Attempt & Status & Reason \\\\",
                      "\\midrule", *rows, "\\bottomrule", "\\end{tabular}"])
    return {"body": body, "caption": "Attempts that did not produce a result, with the recorded reason.",
            "label": "tab:failures"}
