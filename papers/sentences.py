"""Sentences of a section's LaTeX: where they start and end, and striking them out cleanly.

    layout_of(latex) + sentence_span(...)   the sentence around a span, never crossing a paragraph break, an
                                            environment, a heading, an unbalanced brace or inline math
    sentence_spans(latex, spans)            the sentences that contain the given spans
    strike_spans(latex, spans)              remove those sentences (a sentence that was a whole line takes its
                                            line, so no paragraph break appears)

The claim check (papers.claims), the verdict check (papers.verdicts) and macro expansion (papers.macros) each
strike sentences; they share these rules so that a struck sentence is the same sentence to all three.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from papers import lexer

_ABBREV = {"al", "e.g", "i.e", "eg", "ie", "vs", "cf", "fig", "figs", "eq", "eqs", "sec", "secs", "tab", "app",
           "alg", "approx", "resp", "no", "nos", "ref", "refs", "thm", "def", "ch", "dr", "mr", "ms", "st", "w.r.t"}
_WALLS = re.compile(
    r"\n[ \t]*\n\s*"                                      # a paragraph break
    r"|\\(?:begin|end)\s*\{[^{}]*\}(?:\[[^\]]*\])?"       # an environment boundary
    r"|\\(?:part|chapter|section|subsection|subsubsection|paragraph|subparagraph)\*?(?:\[[^\]]*\])?\s*(?=\{)"
    r"|\\label\s*\{[^{}]*\}|\\item\b(?:\[[^\]]*\])?|\\\\\*?(?:\[[^\]]*\])?|\\par\b"
    r"|\\(?:centering|noindent|maketitle|newpage|clearpage|bigskip|medskip|smallskip)\b"
    r"|\\includegraphics\*?(?:\[[^\]]*\])?\s*\{[^{}]*\}"
)
# Groups whose content is a sentence container of its own: a sentence inside never runs out of them.
_CONTAINERS = {"caption", "footnote", "part", "chapter", "section", "subsection", "subsubsection", "paragraph",
               "subparagraph", "title", "thanks", "parbox", "marginpar", "fbox", "item"}


@dataclass
class Layout:
    """Where sentences may start and end in one section's text."""

    text: str                     # comments blanked
    depth: list[int]              # brace depth before each index
    groups: list[tuple[int, int]]  # (index of "{", index of its "}") for every brace group
    math: list[tuple[int, int]]   # inline and display math spans, treated as atoms
    walls: list[tuple[int, int]]  # spans a sentence never crosses
    cuts: list[int]               # candidate sentence ends (just after the punctuation)


def layout_of(latex: str) -> Layout:
    """Where the sentences of one section's text may start and end."""
    text = lexer.mask_comments(latex)
    n = len(text)
    depth, groups = lexer.brace_groups(text)
    math = lexer.math_spans(text)
    walls = []
    for m in _WALLS.finditer(text):
        b = m.end()
        if b < n and text[b] == "{":  # a heading's title belongs to the wall
            b = lexer.balanced_end(text, b)
        walls.append((m.start(), b))
    cuts = []
    for m in re.finditer(r"[.?!]", text):
        j = m.end()
        if m.group(0) == ".":
            word = re.search(r"([A-Za-z.]+)$", text[max(0, m.start() - 8):m.start()])
            if word and word.group(1).lower().strip(".") in _ABBREV:
                continue
        closers = j
        while closers < n and text[closers] in "}'\")]":
            closers += 1
        if closers < n and not text[closers].isspace():
            continue  # 1.36 or e.g.,: not the end of a sentence
        # End after closing quotes and brackets, but also just before each "}", for a sentence inside a group.
        cuts += [k for k in range(j, closers + 1) if k == closers or text[k] == "}"]
    in_math = [False] * (n + 1)
    for a, b in math:
        for k in range(a + 1, b):
            in_math[k] = True
    cuts = [c for c in cuts if not in_math[c]]
    walls = [w for w in walls if not in_math[w[0]]]
    return Layout(text, depth, groups, math, walls, cuts)


def sentence_span(layout: Layout, start: int, end: int) -> tuple[int, int]:
    """The sentence around text[start:end]: never crossing a wall, an unbalanced brace or inline math."""
    text, depth = layout.text, layout.depth
    a, b = start, end
    for ma, mb in layout.math:
        if ma <= a < mb:
            a, b = ma, max(b, mb)
            break
    while True:
        enclosing = [g for g in layout.groups if g[0] < a and g[1] >= b]
        group = max(enclosing) if enclosing else None
        lo, hi = (group[0] + 1, group[1]) if group else (0, len(text))
        d = depth[a]
        s = max([lo] + [wb for wa, wb in layout.walls if lo <= wa and wb <= a and depth[wa] == d])
        e = min([hi] + [wa for wa, wb in layout.walls if b <= wa and wb <= hi and depth[wa] == d])
        s_cut = max([s] + [c for c in layout.cuts if s <= c <= a and depth[c] == d])
        e_cut = min([e] + [c for c in layout.cuts if b <= c <= e and depth[c] == d])
        # Inline formatting (\textbf{1.52}, {\bf ...}) holds part of a sentence: look outside it.
        if group and s_cut == lo and e_cut == hi and lexer.command_before(text, group[0]) not in _CONTAINERS:
            a, b = group[0], min(group[1] + 1, len(text))
            continue
        break
    while s_cut < e_cut and text[s_cut].isspace():
        s_cut += 1
    while e_cut > s_cut and text[e_cut - 1].isspace():
        e_cut -= 1
    return s_cut, e_cut


def one_line(text: str) -> str:
    """The text on one line, its whitespace runs as single spaces."""
    return " ".join(text.split())


def sentence_spans(latex: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The sentences (start, end) containing the given spans of the text, in order and without repeats.

    Each is the sentence_span() around a span, so strike_spans() can remove it cleanly.
    """
    layout = layout_of(latex)
    return sorted({sentence_span(layout, a, b) for a, b in spans})


def strike_spans(latex: str, spans: list[tuple[int, int]]) -> tuple[str, list[str]]:
    """Remove these sentence spans from the text; returns the new text and the removed sentences (one line each)."""
    merged: list[list[int]] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    removed = [one_line(latex[s:e]) for s, e in merged]
    out = latex
    for s, e in reversed(merged):
        while e < len(out) and out[e] in " \t":
            e += 1
        line_start = out.rfind("\n", 0, s) + 1
        if not out[line_start:s].strip() and out[e:e + 1] == "\n":
            e += 1  # the sentence was the whole line: take the line, so no paragraph break appears
        out = out[:s] + out[e:]
    return out, removed
