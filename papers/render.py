"""Render the paper's .tex from its parts with Jinja2, and find which section a line belongs to."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import jinja2

# paper.tex.j2 and references.bib, shipped as package data.
PAPERS_DIR = Path(resources.files("papers"))
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


def bibliography(template_root: Path | None, more: list[tuple[str, str]] | None = None) -> tuple[str, list[str]]:
    """The framework's references merged with the template's (latex/references.bib) and `more` (source, bib).

    Entries are merged by key (case-insensitive, as BibTeX compares them): identical entries collapse, and on
    a clash the later source wins, so the template's entry replaces the framework's. A `%` line before each
    entry names the file it came from. Returns the merged text and the keys whose earlier entry was replaced.
    """
    parts = [("papers/references.bib", (PAPERS_DIR / "references.bib").read_text())]
    if template_root is not None and (template_root / "latex" / "references.bib").is_file():
        parts.append((f"{template_root.name}/latex/references.bib",
                      (template_root / "latex" / "references.bib").read_text()))
    merged: dict[str, tuple[str, str]] = {}  # lower-case key (or a running number) -> (source note, entry)
    overridden: list[str] = []
    for source, bib in parts + (more or []):
        for key, entry in _bib_entries(bib):
            if key is None:  # @string, @preamble: kept as they are
                merged[str(len(merged))] = (source, entry)
                continue
            old = merged.get(key.lower())
            if old is not None and " ".join(old[1].split()) == " ".join(entry.split()):
                merged[key.lower()] = (f"{old[0]} and {source} (identical)", old[1])
            elif old is not None:  # moved to its source's place, after any @string it may use
                del merged[key.lower()]
                merged[key.lower()] = (f"{source}, replacing the entry of {old[0]}", entry)
                overridden.append(key)
            else:
                merged[key.lower()] = (source, entry)
    text = "\n\n".join(f"% from {source}\n{entry}" for source, entry in merged.values())
    return text + "\n", overridden


def _bib_entries(bib: str) -> list[tuple[str | None, str]]:
    """(key, text) of each @entry of a .bib; key None for @string/@preamble. Text between entries is dropped."""
    out: list[tuple[str | None, str, int]] = []  # key, text, end
    for m in re.finditer(r"@\s*(\w+)\s*([{(])", bib):
        if out and m.start() < out[-1][2]:
            continue  # an "@" inside the previous entry (an e-mail address, say)
        close = {"{": "}", "(": ")"}[m.group(2)]
        depth, i = 0, m.end() - 1
        while i < len(bib):
            depth += (bib[i] == m.group(2)) - (bib[i] == close)
            i += 1
            if depth == 0:
                break
        body = bib[m.end():i]
        key = None if m.group(1).lower() in ("string", "preamble", "comment") else body.split(",", 1)[0].strip()
        out.append((key, bib[m.start():i], i))
    return [(key, text) for key, text, _ in out]


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
