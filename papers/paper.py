"""Write one idea's paper: figures, tables, sections, citation and claim checks, LaTeX compiled to PDF.

    figures + tables from logged results
      -> sections (template writer, or LLM: draft + one refinement each)
      -> \\cite keys not in the bibliography removed
      -> the model's macros expanded (a refused one's definition and uses struck), so none hides a number
      -> claim check: unverified numbers go back to the model, then any left are struck out
      -> verdict check (LLM only, every section): sentences contradicting the logged verdict likewise
      -> render paper.tex, compile with latexmk; the first error goes back to the model (bounded rounds)
      -> paper.pdf, paper.tex, references.bib, figures/, claim_check.json
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict
from pathlib import Path

from base.records import PaperStatus
from papers import latex, macros, verdicts
from papers.claims import Fact, Report, check, strip_unverified
from papers.facts import PaperInput, best_run, collect, failures_table, quotes, results_table
from papers.figures import FigureError, metric_per_run, template_figures
from papers.render import SECTIONS, bib_keys, bibliography, fix_citations, literature_bib, render, section_at
from papers.tex import tex_escape
from papers.writers import LLMWriter, best_verdict, template_sections, write_sections

CLAIM_ROUNDS = 2
_TABLE = re.compile(r"\\begin\{(table\*?|tabular\*?|tabularx)\}.*?\\end\{\1\}", re.S)
COMPILE_ROUNDS = 3


def _figures(inp: PaperInput, fig_dir: Path, problems: list[str]) -> list[dict]:
    figs = []
    runs = [{"label": r.folder.replace("_", " "), "status": "ok" if r.metric else "failed",
             **({"mean": r.metric.mean, "ci95": r.metric.ci95, "n": r.metric.n} if r.metric else {})}
            for r in inp.entry.runs]
    b = inp.baseline.summary(inp.metric)
    try:
        figs.append(metric_per_run(runs, {"mean": b.mean, "ci95": b.ci95, "n": b.n}, inp.metric,
                                   inp.direction, fig_dir))
    except FigureError as e:
        problems.append(f"figure metric_per_run: {e}")
    if inp.best_info is not None:
        try:
            # A template's figures.py takes final_info.json as the dicts the evaluator wrote.
            figs += template_figures(inp.template.root, inp.best_info.to_json(), inp.baseline.to_json(), fig_dir)
        except FigureError as e:
            problems.append(f"template figures: {e}")
    # Paths relative to the paper folder, so the .tex compiles wherever the folder is moved.
    return [{"path": f"figures/{f.path.name}", "caption": f.caption, "label": f.label} for f in figs
            if f.path.is_file()]


def _facts_text(facts: list[Fact]) -> str:
    return "\n".join(f"{f.name} = {f.value:.6g} ({f.kind})" for f in facts)


def _listing(inp: PaperInput) -> tuple[str, str]:
    if not inp.sources:
        return "", ""
    if len(inp.sources) == 1:
        (path, src), = inp.sources.items()
        return src.rstrip(), f"The best run's {path.replace('_', chr(92) + '_')}."
    body = "\n\n".join(f"# --- {p} ---\n{s.rstrip()}" for p, s in inp.sources.items())
    return body, "The best run's editable files."


def write_paper(inp: PaperInput, paper_dir: Path, *, llm=None, compile_timeout_s: float = 120.0,
                report=None) -> PaperStatus:
    """Write and compile the paper of one idea into paper_dir; returns its status for summary.json."""
    started = time.time()
    paper_dir.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    figures = _figures(inp, paper_dir / "figures", problems)
    tables = [t for t in (results_table(inp) if inp.ok_runs else None, failures_table(inp)) if t]
    facts = collect(inp)
    # What --literature found for this idea can be cited too.
    found = [("the literature search", literature_bib(inp.idea.literature))] if inp.idea.literature else []
    bib, overridden = bibliography(inp.template.root, found)
    keys = bib_keys(bib)
    verdict = best_verdict(inp)
    writer = LLMWriter(llm) if llm is not None else None
    sections = (write_sections(writer, inp, _facts_text(facts), sorted(keys)) if writer
                else template_sections(inp))

    dropped_cites: list[str] = []
    fixes: list[str] = []

    def clean(name: str, text: str) -> str:
        # Tables come from the logs; a table the model typed into its prose would escape the claim check.
        text, n_tables = _TABLE.subn("", text)
        if n_tables:
            fixes.append(f"{name}: removed {n_tables} model-written table(s)")
        text, dropped = fix_citations(text, keys)
        dropped_cites.extend(dropped)
        text, applied = latex.cheap_fixes(text)
        fixes.extend(f"{name}: {a}" for a in applied)
        return text

    # Every struck sentence with its reason, for claim_check.json.
    struck_all: list[dict] = []

    def expand(current: dict[str, str]) -> dict[str, str]:
        # The model's macros are expanded (or refused and struck) before anything is checked.
        current, removed = macros.expand(current)
        struck_all.extend(asdict(r) for r in removed)
        return current

    def claim_check(current: dict[str, str]) -> Report:
        return check(current, facts, metric=inp.metric, best=best_run(inp), quotes=quotes(inp))

    def review(current: dict[str, str]) -> tuple[Report, list[verdicts.Contradiction]]:
        # The template writer states the logged verdict by construction; the model's prose is checked for it.
        return claim_check(current), (verdicts.check(current, verdict, inp.direction, inp.metric) if writer
                                      else [])

    def strike(name: str, claims_: Report, contradictions_: list[verdicts.Contradiction]) -> None:
        # Last resort: the sentences still unverified or contradicting the verdict go, with their reasons.
        bad = [c for c in claims_.unverified if c.section == name]
        if bad:
            sections[name], removed = strip_unverified(sections[name], bad)
            struck.extend(removed)
            for sentence in removed:
                why = [f"{c.written} ({c.context}) matches no logged fact of its run" for c in bad
                       if " ".join(c.written.split()) in sentence]
                struck_all.append({"section": name, "sentence": sentence,
                                   "reason": "unverified: " + ("; ".join(why) or "an unverified number")})
        if any(c.section == name for c in contradictions_):
            sections[name], removed = verdicts.strike(sections[name], verdict, inp.direction, inp.metric)
            struck_verdicts.extend(removed)
            struck_all.extend({"section": name, "sentence": sentence,
                               "reason": f"contradicts the logged verdict ({verdicts.describe(verdict)})"}
                              for sentence in removed)

    sections = expand({name: clean(name, sections.get(name, "")) for name in SECTIONS})
    claims, contradictions = review(sections)
    first_contradictions = contradictions
    for _ in range(CLAIM_ROUNDS if writer else 0):
        bad = {c.section for c in claims.unverified} | {c.section for c in contradictions}
        if not bad:
            break
        for name in bad:
            problem = "\n\n".join(t for t in (claims.feedback(name), verdicts.feedback(contradictions, name)) if t)
            sections[name] = clean(name, writer.fix(name, sections[name], problem))
        sections = expand(sections)
        claims, contradictions = review(sections)
    struck: list[str] = []
    struck_verdicts: list[str] = []
    for name in {c.section for c in claims.unverified} | {c.section for c in contradictions}:
        strike(name, claims, contradictions)
    final_claims = claim_check(sections)

    listing, listing_caption = _listing(inp)
    context = {"title": _title(inp), "author": "jax-scientist (automated research pipeline)",
               "date": time.strftime("%Y-%m-%d"), "sections": sections, "tables": tables, "figures": figures,
               "listing": listing, "listing_caption": listing_caption}
    (paper_dir / "references.bib").write_text(bib)
    tex_path = paper_dir / "paper.tex"
    rounds: list[str] = []
    result = None
    for attempt in range(COMPILE_ROUNDS + 1):
        tex = render(inp.template.root, context)
        tex_path.write_text(tex)
        result = latex.compile_pdf(tex_path, timeout_s=compile_timeout_s)
        if result.ok:
            break
        rounds.append(result.first_error or "unknown LaTeX error")
        name = section_at(tex, result.error_line)
        if writer is None or name is None or attempt == COMPILE_ROUNDS:
            break
        sections[name] = clean(name, writer.fix(name, sections[name], f"The paper failed to compile with this "
                                                                     f"LaTeX error in this section: "
                                                                     f"{result.first_error}"))
        sections = expand(sections)
        fixed_claims, fixed_contradictions = review(sections)
        strike(name, fixed_claims, fixed_contradictions)
        final_claims = claim_check(sections)
        context["sections"] = sections

    check_report = {
        "claims": final_claims.to_json(),
        "claims_before_fixes": claims.to_json() if claims.unverified else None,
        "struck_sentences": struck,
        "struck": struck_all,
        "verdict_check": {"verdict": verdict, "checked": writer is not None,
                          "contradictions_found": [asdict(c) for c in first_contradictions],
                          "struck_sentences": struck_verdicts},
        "bibliography": {"overridden": overridden},
        "dropped_citations": sorted(set(dropped_cites)),
        "cheap_latex_fixes": fixes,
        "figure_problems": problems,
        "compile_errors": rounds,
        "writer": "llm" if writer else "template",
        "seconds": time.time() - started,
    }
    (paper_dir / "claim_check.json").write_text(json.dumps(check_report, indent=1))
    status = {"tex": str(tex_path), "claim_check": str(paper_dir / "claim_check.json"),
              "unverified_numbers": len(final_claims.unverified),
              "struck_sentences": len(struck_all), "figures": len(figures)}
    if result is not None and result.ok:
        return PaperStatus(status="ok", pdf=str(result.pdf), **status)
    return PaperStatus(status="writeup_failed", reason=(result.first_error if result else "not compiled"),
                       log=str(result.log_path) if result else None, **status)


def _title(inp: PaperInput) -> str:
    return tex_escape(inp.idea.title or inp.entry.name)
