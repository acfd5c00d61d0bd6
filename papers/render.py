"""Render the paper's .tex from its parts with Jinja2, and find which section a line belongs to."""

from __future__ import annotations

import re
from pathlib import Path

import jinja2

PAPERS_DIR = Path(__file__).resolve().parent
SECTIONS = ["abstract", "introduction", "background", "method", "experimental_setup", "results", "related_work",
            "conclusion"]
HEADINGS = {"introduction": "Introduction", "background": "Background", "method": "Method",
            "experimental_setup": "Experimental Setup", "results": "Results", "related_work": "Related Work",
            "conclusion": "Conclusion"}
_MARK = re.compile(r"^%%% (BEGIN|END) (\w+)$")


def environment(template_root: Path | None) -> jinja2.Environment:
    """Jinja2 with LaTeX-friendly delimiters; a template's latex/ folder overrides the framework's files."""
    search = [str(template_root / "latex")] if template_root and (template_root / "latex").is_dir() else []
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([*search, str(PAPERS_DIR)]),
        block_start_string="((*", block_end_string="*))", variable_start_string="(((",
        variable_end_string=")))", comment_start_string="((#", comment_end_string="#))",
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
        autoescape=False)


def render(template_root: Path | None, context: dict) -> str:
    """The full .tex: `paper.tex.j2` (the template's own if it has one) filled with the context."""
    env = environment(template_root)
    headings = [(name, HEADINGS[name]) for name in SECTIONS if name != "abstract"]
    return env.get_template("paper.tex.j2").render(headings=headings, **context)


def section_at(tex: str, line: int | None) -> str | None:
    """The prose section containing a line of the rendered .tex (1-based), if any."""
    if line is None:
        return None
    current = None
    for i, text in enumerate(tex.splitlines(), start=1):
        m = _MARK.match(text)
        if m:
            current = m.group(2) if m.group(1) == "BEGIN" else None
        if i == line:
            return current
    return None


def bibliography(template_root: Path | None) -> str:
    """The framework's references followed by the template's (latex/references.bib)."""
    parts = [(PAPERS_DIR / "references.bib").read_text()]
    if template_root is not None and (template_root / "latex" / "references.bib").is_file():
        parts.append((template_root / "latex" / "references.bib").read_text())
    return "\n".join(parts)


def literature_bib(papers: list[dict]) -> str:
    """BibTeX entries for the papers a literature search found for the idea (keys lit1, lit2, ...)."""
    entries = []
    for i, p in enumerate(papers, start=1):
        fields = {"title": _bib_text(p.get("title", "")), "year": str(p.get("year") or ""),
                  "howpublished": _bib_text(p.get("venue") or ""), "url": p.get("url") or ""}
        body = ",\n".join(f"  {k} = {{{v}}}" for k, v in fields.items() if v)
        entries.append(f"@misc{{lit{i},\n{body}\n}}")
    return "\n\n".join(entries)


def _bib_text(text: str) -> str:
    # Braces and backslashes from an API's titles would break BibTeX; keep the words.
    return " ".join(str(text).replace("{", "").replace("}", "").replace("\\", " ").split())


def bib_keys(bib: str) -> set[str]:
    """The citation keys a .bib defines."""
    return set(re.findall(r"@\w+\s*\{\s*([^,\s]+)\s*,", bib))


_CITE = re.compile(r"\\(cite[tp]?|citeauthor|citeyear)(\[[^\]]*\])?\{([^}]*)\}")


def fix_citations(text: str, keys: set[str]) -> tuple[str, list[str]]:
    """Drop citation keys the bibliography lacks (and a \\cite left empty); returns text and dropped keys."""
    dropped: list[str] = []

    def repl(m: re.Match) -> str:
        cited = [k.strip() for k in m.group(3).split(",") if k.strip()]
        kept = [k for k in cited if k in keys]
        dropped.extend(k for k in cited if k not in keys)
        return f"\\{m.group(1)}{m.group(2) or ''}{{{','.join(kept)}}}" if kept else ""

    fixed = _CITE.sub(repl, text)
    return re.sub(r"[ ~]+([.,;])", r"\1", fixed) if dropped else fixed, dropped
