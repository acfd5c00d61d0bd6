"""LaTeX's lexical structure, in one place: where comments, groups, math, verbatim and commands begin and end.

The cheap fixes before compiling (papers.latex) and the claim check (papers.claims) both read LaTeX through this
module. It is a few scanners over the source string, not a parser: each takes the text and an offset and returns
an offset into the same text, so every position indexes the original source. Nothing raises on broken LaTeX,
which a model often writes: what is never closed runs to the end of the text (a \\verb to the end of its line;
math_spans lists closed math only). Throughout, a backslash and the character after it are one token: \\%, \\$,
\\{, \\} and \\\\ open and close nothing.

    comment_end(text, i)              % ... up to its line break
    mask_comments(text)               the text with its comments blanked (blank() keeps offsets and lines)
    balanced_end(text, i, "{", "}")   a group of one bracket pair, nested
    group_end(text, i)                a {...} argument, or a [...] optional argument as TeX reads it
    control_sequence(text, i)         a command's name and where it ends
    arguments_end(text, j)            a command's star and [...]/{...} arguments, as many as follow
    skip_arguments(text, j, count)    a command's first `count` {...} arguments and the [...] among them
    command_before(text, brace)       the command whose argument the group at `brace` is
    brace_groups(text)                the brace depth before each character, and every {...} group
    math_end(text, i)                 $...$, $$...$$, \\(...\\) or \\[...\\]
    math_spans(text)                  every closed math span
    verb_end(text, name, j)           \\verb|...|, \\lstinline{...}, \\mintinline{lang}|...|
    ENVIRONMENT, environment_end      \\begin{env} / \\end{env}; a verbatim or math environment's end
    definition_end(text, name, j)     \\def\\x{...}, \\let\\x\\y, \\newcommand{\\x}[1]{...}

Where the cheap fixes and the claim check have always read a construct differently, both readings are here, side
by side, so that their results stay what they were: math ends at the first closer for the fixes and at the
opener's own token for the check (math_end's first_closer); the fixes read arguments as TeX does (arguments_end,
group_end: brackets do not nest, at most one line break between arguments), the check skips a fixed number of
them across any whitespace, nesting brackets (skip_arguments). One reading for both would change results on
unusual input, so it is a decision of its own.
"""

from __future__ import annotations

import re

NAME = re.compile(r"[A-Za-z@]+")  # a control word's letters; @ is a letter in packages and preambles

# Commands whose argument is verbatim text, delimited by any character (\verb|x|) or by braces (\lstinline{x}).
VERB_COMMANDS = frozenset({"verb", "lstinline", "mintinline"})
# Environments whose content is not LaTeX prose: it runs to the matching \end{...} whatever it contains.
VERBATIM_ENVIRONMENTS = frozenset({"verbatim", "verbatim*", "Verbatim", "lstlisting", "minted", "comment",
                                   "filecontents", "filecontents*", "alltt"})
MATH_ENVIRONMENTS = frozenset({"equation", "equation*", "align", "align*", "alignat", "alignat*", "gather",
                               "gather*", "multline", "multline*", "flalign", "flalign*", "eqnarray", "eqnarray*",
                               "math", "displaymath"})
# Definitions, whose body is not text: TeX's (\def\x#1{...}, \let\x\y) and LaTeX's, which may take a bare control
# sequence as their first argument (\newcommand\x{...}).
TEX_DEFINITIONS = frozenset({"def", "gdef", "edef", "xdef", "let"})
LATEX_DEFINITIONS = frozenset({"newcommand", "renewcommand", "providecommand", "DeclareRobustCommand",
                               "DeclareMathOperator", "newenvironment", "renewenvironment"})
DEFINITIONS = TEX_DEFINITIONS | LATEX_DEFINITIONS

# \begin{name} or \end{name}; group 1 is "begin" or "end", group 2 the name as written.
ENVIRONMENT = re.compile(r"\\(begin|end)\s*\{([^{}]*)\}")

_MATH_CLOSERS = {"$": "$", "$$": "$$", "\\(": "\\)", "\\[": "\\]"}
_ARGUMENT_GAP = re.compile(r"[ \t]*(?:\n[ \t]*)?")  # spaces and at most one line break between arguments
_NAME_BEFORE = re.compile(r"\\([A-Za-z]+)\*?\s*$")
_DEFINED_NAME = re.compile(r"\s*\*?\s*\\[A-Za-z@]+")  # the \x of \newcommand*\x


# ---------------------------------------------------------------------------------------------------------------
# Comments


def comment_end(text: str, i: int) -> int:
    """The index of the line break that ends the comment whose % is at i (len(text) on the last line)."""
    end = text.find("\n", i)
    return len(text) if end < 0 else end


def blank(chars: list[str], start: int, end: int) -> None:
    """Overwrite chars[start:end] with spaces, in place, keeping line breaks, so that offsets and lines survive."""
    for k in range(start, min(end, len(chars))):
        if chars[k] != "\n":
            chars[k] = " "


def mask_comments(text: str) -> str:
    """The text with every comment (% to the end of its line, not \\%) blanked; offsets and line breaks kept."""
    chars = list(text)
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == "%":
            end = comment_end(text, i)
            blank(chars, i, end)
            i = end
        else:
            i += 1
    return "".join(chars)


# ---------------------------------------------------------------------------------------------------------------
# Groups and commands


def balanced_end(text: str, i: int, open_ch: str = "{", close_ch: str = "}") -> int:
    """The index after the group that open_ch opens at text[i], counting nested open_ch/close_ch pairs only.

    For braces this is TeX's group. len(text) if the group is never closed.
    """
    depth = 0
    j = i
    while j < len(text):
        ch = text[j]
        if ch == "\\":
            j += 2
            continue
        if ch == open_ch:
            depth += 1
        elif ch == close_ch:
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return len(text)


def group_end(text: str, i: int) -> int:
    """The index after the {...} or [...] argument opening at i; len(text) if it is never closed.

    An optional [...] argument ends at the first "]" outside braces, as TeX reads it: brackets do not nest, so
    [a[b]] ends after "b]", and a "]" inside braces ([{]}]) does not end it.
    """
    if text[i] == "{":
        return balanced_end(text, i)
    n = len(text)
    depth = 0
    j = i + 1
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth = max(depth - 1, 0)  # a stray "}" does not end an optional argument
        elif c == "]" and depth == 0:
            return j + 1
        j += 1
    return n


def control_sequence(text: str, i: int) -> tuple[str, int]:
    """The control sequence at the backslash at i: (name, index after it).

    The name is the letters (and @) of a control word (\\section -> "section"), the one character of a control
    symbol (\\% -> "%", \\\\ -> "\\\\"), or "" for a backslash that ends the text. Spaces after a control word
    are not part of it here.
    """
    m = NAME.match(text, i + 1)
    if m:
        return m.group(), m.end()
    if i + 1 >= len(text):
        return "", len(text)
    return text[i + 1], i + 2


def arguments_end(text: str, j: int) -> int:
    """The index after the star and all the [...]/{...} arguments that follow a command name ending at j.

    Arguments may be separated by spaces and one line break (a blank line ends a command's arguments in TeX).
    """
    n = len(text)
    if j < n and text[j] == "*":
        j += 1
    while True:
        gap = _ARGUMENT_GAP.match(text, j)
        k = gap.end() if gap else j
        if k < n and text[k] in "[{":
            j = group_end(text, k)
        else:
            return j


def skip_arguments(text: str, j: int, count: int) -> int:
    """The index after the first `count` {...} arguments of a command whose name ends at j, and any [...] among them.

    The claim check's reading: any whitespace (blank lines too) may come before each argument; [...] nest
    (balanced_end); an optional argument after the last mandatory one is taken only if it follows at once.
    Whitespace before something that is not an argument is taken too.
    """
    n = len(text)
    i = j
    while count > 0 or (i < n and text[i] == "["):
        while i < n and text[i] in " \t\n":
            i += 1
        if i < n and text[i] == "[":
            i = balanced_end(text, i, "[", "]")
        elif i < n and text[i] == "{" and count > 0:
            i = balanced_end(text, i)
            count -= 1
        else:
            break
    return i


def command_before(text: str, open_brace: int) -> str:
    """The name of the command whose argument the group opening at open_brace is, or "" (plain {...}).

    An optional argument in between is skipped (\\caption[short]{ -> "caption"); the name must end within the
    30 characters before it.
    """
    k = open_brace
    if k > 0 and text[k - 1] == "]":
        k = text.rfind("[", 0, k - 1)
    m = _NAME_BEFORE.search(text[max(0, k - 30):max(k, 0)])
    return m.group(1) if m else ""


def brace_groups(text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """The brace depth before each index (len(text) + 1 entries) and every {...} group as (index of "{", of "}").

    A "{" is outside its own group and a "}" still inside. Groups are listed as they close, then the unclosed
    ones, which run to len(text); a stray "}" closes nothing.
    """
    n = len(text)
    depth = [0] * (n + 1)
    groups: list[tuple[int, int]] = []
    stack: list[int] = []
    i = 0
    while i < n:
        ch = text[i]
        step = 1
        if ch == "\\" and i + 1 < n:
            step = 2
        elif ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            groups.append((stack.pop(), i))
        depth[i + 1:i + step + 1] = [len(stack)] * step
        i += step
    groups += [(o, n) for o in stack]
    return depth, groups


# ---------------------------------------------------------------------------------------------------------------
# Math


def _math_close(text: str, i: int, first_closer: bool) -> int | None:
    """The index after the math that opens at i, or None if it is never closed (see math_end)."""
    if text.startswith("$$", i):
        opener = "$$"
    elif text[i] == "$":
        opener = "$"
    else:
        opener = text[i:i + 2]
    closer = _MATH_CLOSERS[opener]
    j = i + len(opener)
    if first_closer and opener != "$":
        end = text.find(closer, j)
        return None if end < 0 else end + len(closer)
    while j < len(text):
        if text[j] == "\\":
            if text.startswith(closer, j):
                return j + 2
            j += 2
        elif text[j] == "$":
            token = "$$" if not first_closer and text.startswith("$$", j) else "$"
            if token == closer:
                return j + len(token)
            j += len(token)
        else:
            j += 1
    return None


def math_end(text: str, i: int, first_closer: bool = False) -> int:
    """The index after the math that opens at i ($, $$, \\( or \\[); len(text) if it is never closed.

    By default escaped characters are skipped and only the opener's own token closes: $$ inside $...$ is a token
    of its own and closes nothing, and \\$ never closes $$...$$ (the claim check's reading). With first_closer the
    first closer found ends the math: for $...$ the first unescaped $, for the others a plain search for $$, \\)
    or \\] (the cheap fixes' reading).
    """
    end = _math_close(text, i, first_closer)
    return len(text) if end is None else end


def math_spans(text: str) -> list[tuple[int, int]]:
    """Every closed inline or display math span ($, $$, \\(, \\[) as (start, end), in order.

    Math that is never closed is not a span, and nothing after it is math.
    """
    spans: list[tuple[int, int]] = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith(("\\(", "\\[", "$"), i):
            end = _math_close(text, i, first_closer=False)
            if end is None:
                break
            spans.append((i, end))
            i = end
        elif text[i] == "\\":
            i += 2
        else:
            i += 1
    return spans


# ---------------------------------------------------------------------------------------------------------------
# Verbatim, environments, definitions


def verb_end(text: str, name: str, j: int) -> int:
    """The index after \\verb|...| (also \\verb*), \\lstinline[..]{...} or \\mintinline{lang}|...|; name ends at j.

    A delimited argument left open ends with its line, the line break excluded.
    """
    n = len(text)
    if j < n and text[j] == "*":
        j += 1
    if j < n and text[j] == "[" and name != "verb":
        j = group_end(text, j)
    if name == "mintinline" and j < n and text[j] == "{":
        j = group_end(text, j)
    if j >= n:
        return n
    if text[j] == "{" and name != "verb":
        return group_end(text, j)
    close = text.find(text[j], j + 1)
    line_end = text.find("\n", j + 1)
    if close < 0 or (0 <= line_end < close):
        return n if line_end < 0 else line_end
    return close + 1


def environment_end(text: str, env: str, j: int) -> int:
    """The index after the first \\end{env} at or after j; len(text) if there is none.

    For environments whose content is not scanned (VERBATIM_ENVIRONMENTS, MATH_ENVIRONMENTS): they end at the
    first \\end{env}, whatever comes between.
    """
    close = text.find(f"\\end{{{env}}}", j)
    return len(text) if close < 0 else close + len(f"\\end{{{env}}}")


def definition_end(text: str, name: str, j: int) -> int:
    """The index after a definition (a name in DEFINITIONS, ending at j) and its body.

    \\def\\x#1{...}: through the body's closing brace; \\let\\x\\y: to the end of the line (the break excluded);
    \\newcommand\\x[1]{...} and its kin: the defined control sequence, then the arguments as arguments_end reads.
    """
    n = len(text)
    if name == "let":
        end = text.find("\n", j)
        return n if end < 0 else end
    if name in TEX_DEFINITIONS:
        brace = text.find("{", j)
        return n if brace < 0 else group_end(text, brace)
    cs = _DEFINED_NAME.match(text, j)
    return arguments_end(text, cs.end() if cs else j)
