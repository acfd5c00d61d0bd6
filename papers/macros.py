"""The model's own macros, expanded before the claim check reads the prose, or refused.

A number hidden in a macro (\\newcommand{\\gain}{2.5} ... reaches \\gain{}) would slip past a check that reads
the source, so every definition the model writes (\\def and its kin, \\let, \\newcommand, \\renewcommand,
\\providecommand, \\DeclareRobustCommand, \\DeclareMathOperator) is removed and its uses, in the rest of its section
and in the sections after it, are replaced by its body with the arguments put in, as TeX would. What cannot be
expanded that way is refused: the definition is removed and every sentence that uses the name is struck, with
the reason. So is what prints a computed number (\\arabic{c}, \\the\\c, \\numexpr), and a model-defined environment
loses its \\begin/\\end (its content stays, as prose that is checked). Nothing defined by the model is left, so
no struck sentence can leave a macro undefined.

    expand(sections)  -> (sections, [Struck])   sections in paper order
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from papers import lexer
from papers.sentences import sentence_spans, strike_spans

MAX_EXPANSIONS = 2000  # more means a macro that expands forever (\def\x{\x}): refused
_LATEX_DEFINERS = frozenset({"newcommand", "renewcommand", "providecommand", "DeclareRobustCommand"})
_ENVIRONMENT_DEFINERS = frozenset({"newenvironment", "renewenvironment", "newtheorem"})
_COUNTERS = frozenset({"newcounter", "setcounter", "addtocounter", "stepcounter", "refstepcounter", "newlength",
                       "setlength", "addtolength", "newif"})
# Commands that print a number computed in TeX: the check cannot read it.
_COMPUTED = frozenset({"arabic", "roman", "Roman", "alph", "Alph", "fnsymbol", "value", "the", "number",
                       "numexpr", "dimexpr", "fpeval", "inteval", "pgfmathparse", "pgfmathresult", "romannumeral",
                       "csname", "expandafter", "edef", "xdef", "uppercase", "lowercase", "input", "include"})
_PARAMETER = re.compile(r"#+(\d)")


@dataclass(frozen=True)
class Struck:
    """A sentence (or definition) removed from a section, and why."""

    section: str
    sentence: str
    reason: str


@dataclass
class _Macro:
    nargs: int
    default: str | None  # the optional first argument's default (\newcommand\x[2][d]{...})
    body: str


class _Refused(Exception):
    pass


def _end(text: str, name: str, j: int) -> int:
    """Where the definition whose command name ends at j ends."""
    if name == "let":
        m = re.match(r"\s*\\(?:[A-Za-z@]+|.)\s*=?\s*(?:\\[A-Za-z@]+|\\.|\S)?", text[j:])
        return j + m.end() if m else j
    return lexer.definition_end(text, name, j) if name in lexer.DEFINITIONS else lexer.arguments_end(text, j)


def _defined_name(text: str, j: int) -> str:
    m = re.match(r"\s*\*?\s*\{?\s*\\?([A-Za-z@]+)", text[j:])
    return m.group(1) if m else ""


def _parse(text: str, name: str, j: int, end: int) -> tuple[str, _Macro | None]:
    """The defined control sequence and its macro (None for an environment or a counter)."""
    rest = text[j:end]
    if name in _COUNTERS or name in _ENVIRONMENT_DEFINERS:
        m = re.match(r"\s*\*?\s*\{\s*\\?([A-Za-z@]+)", rest)
        return (m.group(1) if m else ""), None
    if name == "let":  # read here: lexer.definition_end takes the rest of the line
        m = re.match(r"\s*\\([A-Za-z@]+|.)\s*=?\s*(\\[A-Za-z@]+|\\.|\S)", rest)
        if not m:
            raise _Refused("a \\let the check cannot read")
        return m.group(1), _Macro(0, None, m.group(2))
    if name in lexer.TEX_DEFINITIONS:
        m = re.match(r"\s*\\([A-Za-z@]+)((?:#\d)*)\s*\{", rest)
        if not m:
            raise _Refused("a \\def with delimited parameters")
        brace = j + m.end() - 1
        return m.group(1), _Macro(len(m.group(2)) // 2, None, text[brace + 1:lexer.group_end(text, brace) - 1])
    if name == "DeclareMathOperator":
        m = re.match(r"\s*\*?\s*(?:\{\s*\\([A-Za-z@]+)\s*\}|\\([A-Za-z@]+))\s*\{", rest)
        if not m:
            raise _Refused("a \\DeclareMathOperator the check cannot read")
        brace = j + m.end() - 1
        body = text[brace + 1:lexer.group_end(text, brace) - 1]
        return m.group(1) or m.group(2), _Macro(0, None, f"\\operatorname{{{body}}}")
    m = re.match(r"\s*\*?\s*(?:\{\s*\\([A-Za-z@]+)\s*\}|\\([A-Za-z@]+))", rest)
    if not m:
        raise _Refused(f"a \\{name} the check cannot read")
    k = j + m.end()
    nargs, default = 0, None
    opt = re.match(r"\s*\[\s*(\d)\s*\]", text[k:end])
    if opt:
        nargs, k = int(opt.group(1)), k + opt.end()
        if re.match(r"\s*\[", text[k:end]):
            start = text.index("[", k)
            close = lexer.group_end(text, start)
            default, k = text[start + 1:close - 1], close
    brace = re.match(r"\s*\{", text[k:end])
    if not brace:
        raise _Refused(f"a \\{name} without a body")
    start = k + brace.end() - 1
    return m.group(1) or m.group(2), _Macro(nargs, default, text[start + 1:lexer.group_end(text, start) - 1])


def _arguments(text: str, j: int, macro: _Macro) -> tuple[list[str], int]:
    """The arguments of a use whose name ends at j, and where they end (TeX: a group, or one token)."""
    args: list[str] = []
    if macro.default is not None:
        k = len(text[j:]) - len(text[j:].lstrip())
        if j + k < len(text) and text[j + k] == "[":
            close = lexer.group_end(text, j + k)
            args.append(text[j + k + 1:close - 1])
            j = close
        else:
            args.append(macro.default)
    while len(args) < macro.nargs:
        while j < len(text) and text[j] in " \t\n":
            j += 1
        if j >= len(text):
            raise _Refused("a use without its arguments")
        if text[j] == "{":
            close = lexer.group_end(text, j)
            args.append(text[j + 1:close - 1])
            j = close
        elif text[j] == "\\":
            _, e = lexer.control_sequence(text, j)
            args.append(text[j:e])
            j = e
        else:
            args.append(text[j])
            j += 1
    return args, j


def _substitute(body: str, args: list[str]) -> str:
    """The body with #1, #2, ... replaced by the arguments (## is a # of a nested definition: kept)."""
    return _PARAMETER.sub(lambda m: args[int(m.group(1)) - 1] if m.group(0) == f"#{m.group(1)}" else m.group(0),
                          body) if args else body


def _expand_one(text: str, macros: dict[str, _Macro], refused: dict[str, str],
                environments: set[str]) -> tuple[str, list[tuple[str, str]], list[str]]:
    """One section: (text with definitions removed and macros expanded, [(removed definition, reason)],
    [names of refused macros used here])."""
    removed: list[tuple[str, str]] = []
    used_refused: list[str] = []
    i, count = 0, 0
    while i < len(text):
        ch = text[i]
        if ch == "%":
            i = lexer.comment_end(text, i)
            continue
        if ch != "\\":
            i += 1
            continue
        name, j = lexer.control_sequence(text, i)
        if name in lexer.VERB_COMMANDS:
            i = lexer.verb_end(text, name, j)
            continue
        if name == "begin":
            env = re.match(r"\s*\{([^{}]*)\}", text[j:])
            if env and env.group(1) in lexer.VERBATIM_ENVIRONMENTS:
                i = lexer.environment_end(text, env.group(1), j)
                continue
        if name in ("begin", "end"):
            env = re.match(r"\s*\{([^{}]*)\}", text[j:])
            if env and env.group(1) in environments:  # a model-defined environment: its content is prose
                text = text[:i] + text[j + env.end():]
                continue
        definer = name in lexer.DEFINITIONS or name in _COUNTERS or name in _ENVIRONMENT_DEFINERS
        if definer:
            end = _end(text, name, j)
            source = " ".join(text[i:end].split())
            defined = _defined_name(text, j)
            try:
                defined, macro = _parse(text, name, j, end)
                if name in _ENVIRONMENT_DEFINERS:
                    environments.add(defined)
                    raise _Refused("an environment defined in the prose")
                if macro is None:
                    raise _Refused("a counter or length set in the prose")
                if any(int(d) > macro.nargs for d in _PARAMETER.findall(macro.body)):
                    raise _Refused("a body that uses more parameters than it declares")
                if name == "providecommand" and defined in macros:
                    macro = macros[defined]
                macros[defined] = macro
                refused.pop(defined, None)
                removed.append((source, f"definition of \\{defined} expanded into its uses before the check"))
            except _Refused as e:
                if defined and name not in _ENVIRONMENT_DEFINERS:
                    refused[defined] = str(e)
                    macros.pop(defined, None)
                removed.append((source, f"refused: {e}; the check cannot read what it prints"))
            text = text[:i] + text[end:]
            continue
        if name in macros:
            count += 1
            if count > MAX_EXPANSIONS:
                refused[name] = "it expands without end"
                used_refused.append(name)
                i = j
                continue
            macro = macros[name]
            try:
                args, k = _arguments(text, j, macro)
            except _Refused:
                used_refused.append(name)
                i = j
                continue
            body = _substitute(macro.body, args)
            if not macro.nargs:  # TeX eats the spaces after a control word; keep what follows apart from the body
                while k < len(text) and text[k] in " \t" and name[:1].isalpha():
                    k += 1
                if body[-1:].isalnum() and text[k:k + 1].isalnum():
                    body += "{}"
            text = text[:i] + body + text[k:]
            continue  # read the body again: it may use other macros
        if name in refused or name in _COMPUTED:
            used_refused.append(name)
        i = j
    return text, removed, used_refused


def expand(sections: dict[str, str]) -> tuple[dict[str, str], list[Struck]]:
    """Expand the model's macros across the sections (in the order given) and remove their definitions.

    Returns the new sections and what was removed, with the reason: the definitions, and every sentence that
    uses a refused macro or prints a computed number. Sections without definitions or such uses come back as
    they were.
    """
    macros: dict[str, _Macro] = {}
    refused: dict[str, str] = {}
    environments: set[str] = set()
    out: dict[str, str] = {}
    struck: list[Struck] = []
    for section, latex in sections.items():
        text, removed, used = _expand_one(latex, macros, refused, environments)
        struck += [Struck(section, source, reason) for source, reason in removed
                   if not reason.startswith("definition")]
        if used:
            pattern = re.compile(r"\\(?:" + "|".join(map(re.escape, sorted(set(used)))) + r")(?![A-Za-z@])")
            spans = sentence_spans(text, [m.span() for m in pattern.finditer(lexer.mask_comments(text))])
            text, sentences = strike_spans(text, spans)
            for sentence in sentences:
                names = sorted({n for n in used if f"\\{n}" in sentence})
                why = "; ".join(f"\\{n}: " + refused.get(n, "prints a number computed in TeX") for n in names)
                struck.append(Struck(section, sentence, f"uses a macro the check cannot read ({why})"))
        out[section] = text
    return out, struck
