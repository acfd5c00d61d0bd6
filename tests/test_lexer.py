"""papers.lexer: where LaTeX's comments, groups, math, verbatim and commands begin and end, on good and broken input."""

import random

import pytest

from papers import lexer


def test_comments_are_masked_but_escaped_percents_are_not():
    text = "a 50\\% rate % a 1.5 comment\nnext % more"
    assert lexer.comment_end(text, text.index("% a")) == text.index("\n")
    masked = lexer.mask_comments(text)
    assert masked == "a 50\\% rate" + " " * 16 + "\nnext" + " " * 7
    assert len(masked) == len(text)
    assert lexer.mask_comments("\\\\% after a line break") == "\\\\" + " " * 20


def test_groups_nest_skip_escapes_and_run_to_the_end_when_open():
    text = "{a {b} \\} c}d"
    assert lexer.balanced_end(text, 0) == len("{a {b} \\} c}")
    assert lexer.group_end(text, 0) == len("{a {b} \\} c}")
    assert lexer.balanced_end("{a {b", 0) == 5 and lexer.group_end("{a {b", 0) == 5


def test_optional_arguments_end_as_tex_reads_them_and_as_the_claim_check_does():
    assert lexer.group_end("[a[b]c]", 0) == len("[a[b]")  # TeX: brackets do not nest
    assert lexer.group_end("[{]}]x", 0) == len("[{]}]")  # a "]" in braces does not end it
    assert lexer.balanced_end("[a[b]c]", 0, "[", "]") == len("[a[b]c]")  # the claim check's reading


def test_control_sequences():
    assert lexer.control_sequence("\\section*{A}", 0) == ("section", 8)
    assert lexer.control_sequence("\\make@title x", 0) == ("make@title", 11)
    assert lexer.control_sequence("\\%5", 0) == ("%", 2)
    assert lexer.control_sequence("a\\", 1) == ("", 2)


def test_arguments_two_readings():
    text = "\\cite*[p.~3]{key}  {more} rest"
    assert lexer.arguments_end(text, len("\\cite")) == text.index(" rest")
    assert lexer.arguments_end("\\ref\n\n{x}", 4) == 4  # a blank line ends the arguments
    assert lexer.skip_arguments("\\ref\n\n{x} y", 4, 1) == len("\\ref\n\n{x}")
    assert lexer.skip_arguments("\\href{u}{text}", 5, 1) == len("\\href{u}")
    assert lexer.skip_arguments("\\cite{k}[p] x", 5, 1) == len("\\cite{k}[p]")
    assert lexer.skip_arguments("\\cite{k} [p] x", 5, 1) == len("\\cite{k}")


def test_command_before_a_group():
    text = "\\caption[short]{Long} and \\textbf {x} and {y}"
    assert lexer.command_before(text, text.index("{Long")) == "caption"
    assert lexer.command_before(text, text.index("{x")) == "textbf"
    assert lexer.command_before(text, text.index("{y")) == ""


def test_brace_depth_and_groups():
    depth, groups = lexer.brace_groups("a{b\\{c}d{e")
    assert depth == [0, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1]
    assert groups == [(1, 6), (8, 10)]
    assert lexer.brace_groups("}a") == ([0, 0, 0], [])


def test_math_spans_and_ends():
    text = "a $x$ b $$y$$ c \\(z\\) d \\[w\\] e \\$5"
    spans = lexer.math_spans(text)
    assert [text[a:b] for a, b in spans] == ["$x$", "$$y$$", "\\(z\\)", "\\[w\\]"]
    assert lexer.math_spans("$a$ and $b") == [(0, 3)]  # open math is no span, and nothing after it is math
    assert lexer.math_end("$b", 0) == 2


def test_math_two_readings():
    # The claim check: only the opener's own token closes; the cheap fixes: the first closer found.
    assert lexer.math_end("$a$$b$", 0) == 6 and lexer.math_end("$a$$b$", 0, first_closer=True) == 3
    text = "$$a\\$$ b$$"
    assert lexer.math_end(text, 0) == len(text) and lexer.math_end(text, 0, first_closer=True) == len("$$a\\$$")
    text = "\\(a\\\\) b\\)"
    assert lexer.math_end(text, 0) == len(text) and lexer.math_end(text, 0, first_closer=True) == len("\\(a\\\\)")


def test_verbatim_environments_and_definitions():
    assert lexer.verb_end("\\verb|a}{b| c", "verb", 5) == len("\\verb|a}{b|")
    assert lexer.verb_end("\\verb*+x+", "verb", 5) == len("\\verb*+x+")
    assert lexer.verb_end("\\verb|open\nnext", "verb", 5) == len("\\verb|open")
    assert lexer.verb_end("\\lstinline[style=x]{a{b}c} d", "lstinline", 10) == len("\\lstinline[style=x]{a{b}c}")
    assert lexer.verb_end("\\mintinline{py}|x| y", "mintinline", 11) == len("\\mintinline{py}|x|")
    text = "\\begin{verbatim}%$x\\end{verbatim} y"
    env = lexer.ENVIRONMENT.match(text)
    assert env and env.groups() == ("begin", "verbatim")
    assert lexer.environment_end(text, "verbatim", env.end()) == text.index(" y")
    assert lexer.environment_end("\\begin{equation} x", "equation", 16) == len("\\begin{equation} x")
    assert lexer.definition_end("\\def\\x#1{a{b}} y", "def", 4) == len("\\def\\x#1{a{b}}")
    assert lexer.definition_end("\\let\\a\\b c\nd", "let", 4) == len("\\let\\a\\b c")
    assert lexer.definition_end("\\newcommand\\x[1]{#1} y", "newcommand", 11) == len("\\newcommand\\x[1]{#1}")


@pytest.mark.parametrize("seed", range(3))
def test_broken_latex_never_raises_and_offsets_stay_in_range(seed):
    rng = random.Random(seed)
    pieces = ["{", "}", "[", "]", "$", "$$", "\\(", "\\)", "\\[", "\\]", "%", "\n", "\\", "\\verb|", "|", "a", " ",
              "\\begin{verbatim}", "\\end{verbatim}", "\\def", "\\let", "\\newcommand", "\\cite", "*", "@"]
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
        n = len(text)
        assert len(lexer.mask_comments(text)) == n
        depth, groups = lexer.brace_groups(text)
        assert len(depth) == n + 1 and all(0 <= a < b <= n for a, b in groups)
        assert all(0 <= a < b <= n for a, b in lexer.math_spans(text))
        for i, ch in enumerate(text):
            if ch in "{[":
                assert i < lexer.group_end(text, i) <= n
                assert i < lexer.balanced_end(text, i, ch, "}" if ch == "{" else "]") <= n
                assert lexer.command_before(text, i) is not None
            if ch == "$" or text.startswith(("\\(", "\\["), i):
                assert i < lexer.math_end(text, i) <= n and i < lexer.math_end(text, i, first_closer=True) <= n
            if ch == "\\":
                name, j = lexer.control_sequence(text, i)
                assert i < j <= n
                assert j <= lexer.arguments_end(text, j) <= n and j <= lexer.skip_arguments(text, j, 2) <= n
                if name in lexer.VERB_COMMANDS:
                    assert j <= lexer.verb_end(text, name, j) <= n
                if name in lexer.DEFINITIONS:
                    assert j <= lexer.definition_end(text, name, j) <= n
