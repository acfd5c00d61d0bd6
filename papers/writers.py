"""Who writes the prose: the template writer (no model, a factual report) or an LLM, section by section.

Both return LaTeX bodies for the sections of papers.render.SECTIONS. Numbers in
the template writer's text come straight from the logged facts; the LLM's text
goes through the claim check afterwards.
"""

from __future__ import annotations

from base.formats import FormatError, parse_latex_block
from base.llm import LLM, InvalidAnswer, ask_parsed
from base.stats import format_p
from papers import verdicts
from papers.facts import TEST_TEX, PaperInput, fmt, fmt_p, template_text, test_text
from papers.render import HEADINGS, SECTIONS
from papers.tex import tex_escape


def _p_text(p: float) -> str:
    bound = fmt_p(p).replace("$", "")
    return f"$p{bound}$" if bound.startswith("<") else f"$p = {bound}$"


# The idea's verdict in words: every section states this one (the results table's Holm-adjusted verdict).
VERDICT_TEXT = {verdicts.BETTER: "the idea is significantly better than the baseline",
                verdicts.WORSE: "the idea is significantly worse than the baseline",
                verdicts.NO_DIFFERENCE: "there is no significant difference between the idea and the baseline"}


def _verdict_sentence(inp: PaperInput) -> str:
    best = inp.entry.best
    verdict = best_verdict(inp)
    if not best or verdict is None:
        return ""
    m, c = best.metric, best.metric.comparison
    b = inp.baseline.summary(inp.metric)
    # The unadjusted p is a number here, never a verdict of its own: the verdict is the adjusted one.
    name = TEST_TEX.get(c.test, (tex_escape(c.test), ""))[0]
    tests = f"{name[0].upper()}{name[1:]} gives {_p_text(c.p_value)}"
    if c.p_value_holm is not None:
        tests += (" and, after Holm's adjustment for all runs of the session compared with the baseline "
                  f"\\cite{{holm1979simple}}, {_p_text(c.p_value_holm)}")
    return (f"The best run reached {fmt(m.mean)} $\\pm$ {fmt(m.stderr)} (mean $\\pm$ standard error; 95\\% "
            f"interval [{fmt(m.ci95[0])}, {fmt(m.ci95[1])}], $n = {m.n}$ seeds) against the baseline's "
            f"{fmt(b.mean)} $\\pm$ {fmt(b.stderr)}. {tests}: {VERDICT_TEXT.get(verdict, verdict)}.")


CONCLUSIONS = {
    verdicts.BETTER: "The idea improved on the baseline with a significant difference, also after adjusting for the "
                     "number of comparisons. The best run is still the maximum of several, so a confirmation on "
                     "fresh seeds should precede any stronger claim.",
    verdicts.WORSE: "The idea made the metric significantly worse than the baseline, also after adjusting for the "
                    "number of comparisons. This is a negative result: the change it makes hurts on this benchmark, "
                    "and the recorded runs show by how much.",
    verdicts.NO_DIFFERENCE: "The idea and the baseline did not differ significantly once the number of comparisons "
                            "is accounted for. Differences of this size are within what seed-to-seed variation and "
                            "the selection of the best run can produce.",
    None: "The idea did not yield a working experiment within the attempts allowed. The failure reasons above are the "
          "useful outcome: they show what the implementation must avoid.",
}


def template_sections(inp: PaperInput) -> dict[str, str]:
    """A complete, factual report rendered from the template's text and the logged results."""
    spec, root = inp.template.spec, inp.template.root
    metric = tex_escape(inp.metric)
    better = "higher" if inp.direction == "max" else "lower"
    title = tex_escape(inp.idea.title or inp.entry.name)
    hypothesis = tex_escape(inp.idea.hypothesis)
    experiment = tex_escape(inp.idea.experiment)
    runs = inp.entry.runs
    ok = inp.ok_runs
    n_runs = len({r.run for r in runs})
    verdict = _verdict_sentence(inp)
    if ok:
        abstract = (f"We study the idea \\emph{{{title}}} on the \\texttt{{{tex_escape(spec.name)}}} template: "
                    f"{tex_escape(spec.description)}. {hypothesis} We ran {n_runs} runs of the idea, each trained "
                    f"and scored by a sealed evaluator on held-out data over several seeds. {verdict}")
    else:
        reasons = sorted({tex_escape((r.reason or "unknown")[:160]) for r in runs})
        abstract = (f"We study the idea \\emph{{{title}}} on the \\texttt{{{tex_escape(spec.name)}}} template. "
                    f"{hypothesis} No attempt of this idea produced a result, so this is a negative report: it "
                    f"records what was tried and why it failed ({'; '.join(reasons) or 'no attempt was made'}).")
    background = template_text(root, "background") or tex_escape(spec.description) + "."
    setup = template_text(root, "setup") or tex_escape(spec.metric.description)
    setup += (f"\n\nEvery run is evaluated over $n = {inp.baseline.n}$ seeds; we report the mean, its standard "
              f"error and a 95\\% interval of the metric \\texttt{{{metric}}} ({better} is better): "
              f"{tex_escape(inp.interval)}. We call "
              f"a run better or worse than the baseline only when the difference is significant at the 0.05 level "
              f"by {test_text(inp.comparisons)}, adjusted with Holm's method "
              f"\\cite{{holm1979simple}} for all runs of the session compared with the baseline; the verdict of the "
              f"idea is that of its best run.")
    method = (f"{experiment}\n\nThe code that may change is the template's editable file "
              f"({tex_escape(', '.join(spec.editable))}); the training harness and the evaluator are fixed, and "
              f"the evaluator never imports the edited code.")
    if inp.sources:
        method += " Listing~\\ref{lst:candidate} shows the best run's version."
    if ok:
        results = ("Table~\\ref{tab:results} lists every successful run against the baseline. " + verdict)
        if inp.entry.reason:
            results += f" The idea stopped early: {tex_escape(inp.entry.reason)}."
    else:
        results = "No run of this idea succeeded; Table~\\ref{tab:failures} gives each attempt's recorded reason."
    if any(r.status != "ok" for r in runs) and ok:
        results += " Table~\\ref{tab:failures} lists the attempts that failed and why."
    related = ("The experiments were proposed, implemented, run and reported by an automated research pipeline in "
               "the style of The AI Scientist \\cite{lu2024aiscientist}; every number in this report is read from "
               "the logged results of the sealed evaluator. " + template_text(root, "related"))
    conclusion = CONCLUSIONS.get(best_verdict(inp) if ok else None, CONCLUSIONS[None])
    return {"abstract": abstract, "introduction": f"{hypothesis} {verdict}".strip(), "background": background,
            "method": method, "experimental_setup": setup, "results": results, "related_work": related.strip(),
            "conclusion": conclusion}


def best_verdict(inp: PaperInput) -> str | None:
    """The idea's verdict: the Holm-adjusted verdict of its best run (None when no run produced a result)."""
    return inp.entry.verdict


WRITER_SYSTEM = ("You are an expert machine learning researcher writing a paper for a top venue. You write "
                 "precise, honest LaTeX and never state a number that is not in the results you are given.")


def results_brief(inp: PaperInput) -> str:
    """The logged results in words, with exact values, for the model."""
    lines = [f"Template: {inp.template.name}: {inp.template.spec.description}",
             f"Metric: {inp.metric} ({'higher' if inp.direction == 'max' else 'lower'} is better). "
             f"{inp.template.spec.metric.description}",
             f"Significance: {inp.significance}",
             f"95% intervals: {inp.interval}"]
    b = inp.baseline.summary(inp.metric)
    lines.append(f"Baseline: mean {b.mean:.4f}, s.e. {b.stderr:.4f}, 95% CI [{b.ci95[0]:.4f}, "
                 f"{b.ci95[1]:.4f}], n {b.n}")
    for r in inp.entry.runs:
        if r.status == "ok" and r.metric and r.metric.comparison:
            m, c = r.metric, r.metric.comparison
            holm = c.p_value_holm if c.p_value_holm is not None else float("nan")
            lines.append(f"{r.folder}: mean {m.mean:.4f}, s.e. {m.stderr:.4f}, 95% CI [{m.ci95[0]:.4f}, "
                         f"{m.ci95[1]:.4f}], n {m.n}, difference {c.difference:+.4f}, {c.test} "
                         f"{format_p(c.p_value, digits=4)} ({c.verdict}), Holm-adjusted "
                         f"{format_p(holm, digits=4)}"
                         f" ({c.verdict_holm or ''}). What was tried: {r.note}")
        else:
            lines.append(f"{r.folder}: {r.status}: {r.reason}")
    lines.append(f"Verdict of the idea (its best run after Holm's adjustment, as in the results table): "
                 f"{verdicts.describe(best_verdict(inp))}. Every section states this verdict and no other; the "
                 f"unadjusted p is a number, not a verdict of its own.")
    return "\n".join(lines)


def _literature_note(inp: PaperInput) -> str:
    found = inp.idea.literature or []
    if not found:
        return ""
    listed = "; ".join(f"lit{i} = {p.get('title')} ({p.get('year') or 'n.d.'})" for i, p in enumerate(found, 1))
    return f"Papers the literature search found for this idea (cite them as keys lit1, lit2, ...): {listed}"


class LLMWriter:
    """Each section from the idea, the notes and the logged results, then one refinement pass."""

    def __init__(self, llm: LLM, max_reasks: int = 2):
        self.llm = llm
        self.max_reasks = max_reasks

    def _latex(self, stage: str, messages: list[dict]) -> str:
        try:
            latex, _ = ask_parsed(self.llm, stage, messages, parse_latex_block, tries=self.max_reasks + 1,
                                  temperature=0.5, errors=(FormatError,),
                                  reask=lambda error: f"{error} Reply with the section in one ```latex block.")
        except InvalidAnswer as e:
            raise FormatError(f"no LaTeX block after {e.tries} tries: {e.error}") from None
        return latex.strip()

    def section(self, name: str, inp: PaperInput, facts_text: str, cite_keys: list[str], context: dict) -> str:
        """Write and refine one section; returns its LaTeX body."""
        heading = HEADINGS.get(name, "Abstract")
        already = "\n\n".join(f"[{HEADINGS.get(k, 'Abstract')}]\n{v}" for k, v in context.items() if v)
        prompt = f"""Write the {heading} section of a paper about this idea.

Idea: {inp.idea.title}
Hypothesis: {inp.idea.hypothesis}
Experiment: {inp.idea.experiment}

Notes of what was tried:
{inp.notes}

Logged results (the only source of numbers):
{results_brief(inp)}

Numbers you may use, exactly or rounded (name = value):
{facts_text}

Citation keys you may use with \\cite{{...}}: {", ".join(cite_keys)}
{_literature_note(inp)}
The paper has Table~\\ref{{tab:results}} (all runs against the baseline), Figure~\\ref{{fig:metric_per_run}} and,
where the template has them, more figures; Listing~\\ref{{lst:candidate}} shows the best run's code.

Sections written so far:
{already or "(none)"}

Rules: no \\section command (it is added for you); no numbers that are not in the list above; state the idea's
verdict as given above and say plainly when a difference is not significant; LaTeX only (escape %, &, _). Reply
with the section body in one ```latex block."""
        messages = [{"role": "system", "content": WRITER_SYSTEM}, {"role": "user", "content": prompt}]
        draft = self._latex(f"writeup:{name}", messages)
        messages.append({"role": "user", "content": (
            "Criticise this section: is every claim supported by the logged results, is anything unclear, "
            "redundant or overstated, are the rules followed? Then reply with the improved section in one "
            "```latex block.")})
        return self._latex(f"writeup:{name}:refine", messages) or draft

    def fix(self, name: str, text: str, problem: str) -> str:
        """Ask for a corrected section given a problem (unverified numbers or a LaTeX error)."""
        messages = [{"role": "system", "content": WRITER_SYSTEM},
                    {"role": "user", "content": f"This is the {HEADINGS.get(name, 'Abstract')} section of a paper:"
                                                f"\n\n```latex\n{text}\n```\n\n{problem}\n\nReply with the corrected "
                                                "section in one ```latex block."}]
        return self._latex(f"writeup:{name}:fix", messages)


def write_sections(writer: LLMWriter, inp: PaperInput, facts_text: str, cite_keys: list[str]) -> dict[str, str]:
    """All sections in order, each seeing the ones before it."""
    done: dict[str, str] = {}
    for name in SECTIONS:
        done[name] = writer.section(name, inp, facts_text, cite_keys, done)
    return done
