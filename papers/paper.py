"""Write one idea's paper: figures, tables, sections, citation and claim checks, LaTeX compiled to PDF.

    figures + tables from logged results
      -> sections (template writer, or LLM: draft + one refinement each)
      -> \\cite keys not in the bibliography removed
      -> the model's macros expanded (a refused one's definition and uses struck), so none hides a number
      -> claim check: unverified numbers go back to the model, then any left are struck out
      -> verdict check (LLM only, every section): sentences contradicting the logged verdict likewise
      -> render paper.tex, compile with latexmk; the first error goes back to the model (bounded rounds)
      -> paper.pdf, paper.tex, references.bib, figures/, claim_check.json

write_paper runs these as steps: gather (figures, tables, facts, bibliography), first_draft (sections written,
cleaned, macros expanded), settle_claims (the model's repair rounds), the strikes, compile_paper and
claim_report. Materials holds what is gathered once; Draft holds the sections as the steps change them, with a
Changes log of everything they did, which claim_check.json reports.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from base.records import PaperStatus
from papers import latex, macros, verdicts
from papers.claims import Claim, Fact, Report, check, strip_unverified
from papers.facts import PaperInput, best_run, collect, failures_table, quotes, results_table
from papers.figures import FigureError, metric_per_run, template_figures
from papers.latex import CompileResult
from papers.render import SECTIONS, bib_keys, bibliography, fix_citations, literature_bib, render, section_at
from papers.tex import tex_escape
from papers.writers import LLMWriter, best_verdict, template_sections, write_sections

CLAIM_ROUNDS = 2
_TABLE = re.compile(r"\\begin\{(table\*?|tabular\*?|tabularx)\}.*?\\end\{\1\}", re.S)
COMPILE_ROUNDS = 3


@dataclass
class Materials:
    """What the prose is written around and checked against; gathered before the first section is written."""

    figures: list[dict]
    tables: list[dict]
    facts: list[Fact]
    bib: str
    overridden: list[str]  # template .bib entries that replaced the framework's
    keys: set[str]         # the citation keys the bibliography defines
    verdict: str | None
    figure_problems: list[str]


@dataclass
class Changes:
    """Everything the checks did to the text, as claim_check.json reports it."""

    fixes: list[str] = field(default_factory=list)            # cheap LaTeX fixes and removed tables
    dropped_cites: list[str] = field(default_factory=list)
    struck: list[dict] = field(default_factory=list)          # every struck sentence with its reason
    struck_sentences: list[str] = field(default_factory=list)  # struck as unverified
    struck_verdicts: list[str] = field(default_factory=list)   # struck as contradicting the verdict
    compile_errors: list[str] = field(default_factory=list)


@dataclass
class Draft:
    """The paper's sections as the checks and the model's repairs change them."""

    inp: PaperInput
    writer: LLMWriter | None
    materials: Materials
    sections: dict[str, str] = field(default_factory=dict)
    changes: Changes = field(default_factory=Changes)


@dataclass
class Review:
    """One pass of the claim check and the verdict check over all sections."""

    claims: Report
    contradictions: list[verdicts.Contradiction]

    def bad_sections(self) -> list[str]:
        """The sections with an unverified number or a sentence contradicting the verdict, in the paper's order
        (so claim_check.json lists its strikes in one order, whatever the interpreter's hash seed)."""
        bad = {c.section for c in self.claims.unverified} | {c.section for c in self.contradictions}
        return [name for name in SECTIONS if name in bad] + sorted(bad - set(SECTIONS))


def write_paper(inp: PaperInput, paper_dir: Path, *, llm=None, compile_timeout_s: float = 120.0) -> PaperStatus:
    """Write and compile the paper of one idea into paper_dir; returns its status for summary.json."""
    started = time.time()
    paper_dir.mkdir(parents=True, exist_ok=True)
    materials = gather(inp, paper_dir)
    draft = first_draft(inp, LLMWriter(llm) if llm is not None else None, materials)
    first, settled = settle_claims(draft)
    for name in settled.bad_sections():
        _strike(draft, name, settled)
    result = compile_paper(draft, paper_dir, compile_timeout_s)
    # Checked once, on the text as last rendered: every change above is followed by a render.
    final_claims = _claim_check(draft)
    check_report = claim_report(draft, first, settled, final_claims, seconds=time.time() - started)
    (paper_dir / "claim_check.json").write_text(json.dumps(check_report, indent=1))
    return _status(paper_dir, result, final_claims, draft)


# --------------------------------------------------------------------------------------------------
# Materials


def gather(inp: PaperInput, paper_dir: Path) -> Materials:
    """Figures (written under paper_dir/figures), tables, facts, bibliography and verdict of one idea."""
    problems: list[str] = []
    figures = _figures(inp, paper_dir / "figures", problems)
    tables = [t for t in (results_table(inp) if inp.ok_runs else None, failures_table(inp)) if t]
    facts = collect(inp)
    # What --literature found for this idea can be cited too.
    found = [("the literature search", literature_bib(inp.idea.literature))] if inp.idea.literature else []
    bib, overridden = bibliography(inp.template.root, found)
    return Materials(figures=figures, tables=tables, facts=facts, bib=bib, overridden=overridden,
                     keys=bib_keys(bib), verdict=best_verdict(inp), figure_problems=problems)


def _figures(inp: PaperInput, fig_dir: Path, problems: list[str]) -> list[dict]:
    figs = []
    runs = [{"label": r.folder.replace("_", " "), "status": "ok" if r.metric else "failed",
             **({"mean": r.metric.mean, "ci95": r.metric.ci95, "n": r.metric.n} if r.metric else {})}
            for r in inp.entry.runs if r.status != "screened_out"]  # no full run: the failures table says why
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


# --------------------------------------------------------------------------------------------------
# Sections and their checks


def first_draft(inp: PaperInput, writer: LLMWriter | None, materials: Materials) -> Draft:
    """Every section written (by the model, or the template writer when writer is None), cleaned and expanded."""
    sections = (write_sections(writer, inp, _facts_text(materials.facts), sorted(materials.keys)) if writer
                else template_sections(inp))
    draft = Draft(inp=inp, writer=writer, materials=materials)
    draft.sections = {name: _clean(draft, name, sections.get(name, "")) for name in SECTIONS}
    _expand(draft)
    return draft


def _clean(draft: Draft, name: str, text: str) -> str:
    # Tables come from the logs; a table the model typed into its prose would escape the claim check.
    text, n_tables = _TABLE.subn("", text)
    if n_tables:
        draft.changes.fixes.append(f"{name}: removed {n_tables} model-written table(s)")
    text, dropped = fix_citations(text, draft.materials.keys)
    draft.changes.dropped_cites.extend(dropped)
    text, applied = latex.cheap_fixes(text)
    draft.changes.fixes.extend(f"{name}: {a}" for a in applied)
    return text


def _expand(draft: Draft) -> None:
    # The model's macros are expanded (or refused and struck) before anything is checked.
    draft.sections, removed = macros.expand(draft.sections)
    draft.changes.struck.extend(asdict(r) for r in removed)


def _revise(draft: Draft, name: str, problem: str) -> None:
    # A model's repair is cleaned like its first draft; expanding is left to the caller, once per round.
    draft.sections[name] = _clean(draft, name, draft.writer.fix(name, draft.sections[name], problem))


def _claim_check(draft: Draft) -> Report:
    inp = draft.inp
    return check(draft.sections, draft.materials.facts, metric=inp.metric, best=best_run(inp), quotes=quotes(inp))


def _review(draft: Draft) -> Review:
    # The template writer states the logged verdict by construction; the model's prose is checked for it.
    inp = draft.inp
    contradictions = (verdicts.check(draft.sections, draft.materials.verdict, inp.direction, inp.metric)
                      if draft.writer else [])
    return Review(_claim_check(draft), contradictions)


def settle_claims(draft: Draft) -> tuple[Review, Review]:
    """Send each section's unverified numbers and verdict contradictions back to the model (bounded rounds).

    Returns the first review (what the model wrote) and the last (what is left to strike).
    """
    first = review = _review(draft)
    for _ in range(CLAIM_ROUNDS if draft.writer else 0):
        bad = review.bad_sections()
        if not bad:
            break
        for name in bad:
            problem = "\n\n".join(t for t in (review.claims.feedback(name),
                                              verdicts.feedback(review.contradictions, name)) if t)
            _revise(draft, name, problem)
        _expand(draft)
        review = _review(draft)
    return first, review


def _strike(draft: Draft, name: str, review: Review) -> None:
    # Last resort: the sentences still unverified or contradicting the verdict go, with their reasons.
    bad = [c for c in review.claims.unverified if c.section == name]
    if bad:
        _strike_unverified(draft, name, bad)
    if any(c.section == name for c in review.contradictions):
        _strike_contradictions(draft, name)


def _strike_unverified(draft: Draft, name: str, bad: list[Claim]) -> None:
    draft.sections[name], removed = strip_unverified(draft.sections[name], bad)
    draft.changes.struck_sentences.extend(removed)
    for sentence in removed:
        why = [f"{c.written} ({c.context}) matches no logged fact of its run" for c in bad
               if " ".join(c.written.split()) in sentence]
        draft.changes.struck.append({"section": name, "sentence": sentence,
                                     "reason": "unverified: " + ("; ".join(why) or "an unverified number")})


def _strike_contradictions(draft: Draft, name: str) -> None:
    inp, verdict = draft.inp, draft.materials.verdict
    draft.sections[name], removed = verdicts.strike(draft.sections[name], verdict, inp.direction, inp.metric)
    draft.changes.struck_verdicts.extend(removed)
    draft.changes.struck.extend({"section": name, "sentence": sentence,
                                 "reason": f"contradicts the logged verdict ({verdicts.describe(verdict)})"}
                                for sentence in removed)


# --------------------------------------------------------------------------------------------------
# LaTeX


def compile_paper(draft: Draft, paper_dir: Path, timeout_s: float) -> CompileResult:
    """Render paper.tex and references.bib into paper_dir and compile them.

    A LaTeX error in a section goes back to the model (COMPILE_ROUNDS at most), whose repair is checked like
    any other text; every error is logged in draft.changes.compile_errors.
    """
    context = _context(draft)
    (paper_dir / "references.bib").write_text(draft.materials.bib)
    tex_path = paper_dir / "paper.tex"
    for attempt in range(COMPILE_ROUNDS + 1):
        context["sections"] = draft.sections
        tex = render(draft.inp.template.root, context)
        tex_path.write_text(tex)
        result = latex.compile_pdf(tex_path, timeout_s=timeout_s)
        if result.ok:
            break
        draft.changes.compile_errors.append(result.first_error or "unknown LaTeX error")
        name = section_at(tex, result.error_line)
        if draft.writer is None or name is None or attempt == COMPILE_ROUNDS:
            break
        _revise(draft, name, f"The paper failed to compile with this LaTeX error in this section: "
                             f"{result.first_error}")
        _expand(draft)
        _strike(draft, name, _review(draft))
    return result


def _context(draft: Draft) -> dict:
    inp, m = draft.inp, draft.materials
    listing, listing_caption = _listing(inp)
    return {"title": _title(inp), "author": "jax-scientist (automated research pipeline)",
            "date": time.strftime("%Y-%m-%d"), "sections": draft.sections, "tables": m.tables,
            "figures": m.figures, "listing": listing, "listing_caption": listing_caption}


def _listing(inp: PaperInput) -> tuple[str, str]:
    if not inp.sources:
        return "", ""
    if len(inp.sources) == 1:
        (path, src), = inp.sources.items()
        return src.rstrip(), f"The best run's {path.replace('_', chr(92) + '_')}."
    body = "\n\n".join(f"# --- {p} ---\n{s.rstrip()}" for p, s in inp.sources.items())
    return body, "The best run's editable files."


def _title(inp: PaperInput) -> str:
    return tex_escape(inp.idea.title or inp.entry.name)


# --------------------------------------------------------------------------------------------------
# Reports


def claim_report(draft: Draft, first: Review, settled: Review, final_claims: Report, seconds: float) -> dict:
    """claim_check.json: the final claim check, what the model wrote before the strikes, and every change."""
    changes, m = draft.changes, draft.materials
    return {
        "claims": final_claims.to_json(),
        "claims_before_fixes": settled.claims.to_json() if settled.claims.unverified else None,
        "struck_sentences": changes.struck_sentences,
        "struck": changes.struck,
        "verdict_check": {"verdict": m.verdict, "checked": draft.writer is not None,
                          "contradictions_found": [asdict(c) for c in first.contradictions],
                          "struck_sentences": changes.struck_verdicts},
        "bibliography": {"overridden": m.overridden},
        "dropped_citations": sorted(set(changes.dropped_cites)),
        "cheap_latex_fixes": changes.fixes,
        "figure_problems": m.figure_problems,
        "compile_errors": changes.compile_errors,
        "writer": "llm" if draft.writer else "template",
        "seconds": seconds,
    }


def _status(paper_dir: Path, result: CompileResult, final_claims: Report, draft: Draft) -> PaperStatus:
    status = {"tex": str(paper_dir / "paper.tex"), "claim_check": str(paper_dir / "claim_check.json"),
              "unverified_numbers": len(final_claims.unverified),
              "struck_sentences": len(draft.changes.struck), "figures": len(draft.materials.figures)}
    if result.ok:
        return PaperStatus(status="ok", pdf=str(result.pdf), **status)
    return PaperStatus(status="writeup_failed", reason=result.first_error, log=str(result.log_path), **status)
