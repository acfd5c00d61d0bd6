"""papers.latex with the real pdflatex, latexmk, bibtex and chktex: compiling, first errors, timeouts, fixes."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import psutil
import pytest
from pypdf import PdfReader

from papers import latex
from papers.latex import INSTALL_HINT, LatexMissing, cheap_fixes, check_installation, chktex_warnings, compile_pdf

BIB = """@article{kingma2015adam,
  title = {Adam: A Method for Stochastic Optimization},
  author = {Kingma, Diederik P. and Ba, Jimmy},
  journal = {International Conference on Learning Representations},
  year = {2015}
}
"""

GOOD = r"""\documentclass{article}
\begin{document}
Our optimizer beats the baseline by a wide margin \cite{kingma2015adam}.
Nobody wrote \cite{nosuchkey} yet.
\bibliographystyle{plain}
\bibliography{references}
\end{document}
"""


def _document(body: str) -> str:
    return "\\documentclass{article}\n\\begin{document}\n" + body + "\n\\end{document}\n"


def _write(folder: Path, text: str, name: str = "paper.tex") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).lower()


def _processes_using(tex: Path) -> list[psutil.Process]:
    """Live processes whose command line names the tex file (latexmk passes only its name, run in its folder)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if str(tex) in cmdline or (tex.name in cmdline and proc.info["cwd"] == str(tex.parent)):
            found.append(proc)
    return found


def test_compiles_with_bibliography(tmp_path):
    (tmp_path / "references.bib").write_text(BIB)
    result = compile_pdf(_write(tmp_path, GOOD))
    assert result.ok, result.first_error
    assert result.pdf == tmp_path / "paper.pdf" and result.pdf.stat().st_size > 0
    assert result.first_error is None and result.error_line is None and not result.timed_out
    assert result.log_path.is_file() and "Latexmk" in result.log_path.read_text()
    assert (tmp_path / "paper.log").is_file()
    text = _squash(" ".join(page.extract_text() for page in PdfReader(result.pdf).pages))
    assert "our optimizer beats the baseline by a wide margin" in text
    assert "adam: a method for stochastic optimization" in text.replace("- ", "")  # the title may be hyphenated


def test_undefined_macro_names_macro_and_line(tmp_path):
    tex = _write(tmp_path, _document("Fine text.\n\nMore text \\undefinedmacro{x} here.\n"))
    result = compile_pdf(tex)
    assert not result.ok and result.pdf is None
    assert "Undefined control sequence" in result.first_error and "\\undefinedmacro" in result.first_error
    assert result.first_error.startswith("paper.tex:5:")
    assert result.error_line == 5
    assert "\n" not in result.first_error


def test_missing_package_names_the_file(tmp_path):
    tex = _write(tmp_path, "\\documentclass{article}\n\\usepackage{nosuchpackagexyz}\n\\begin{document}\nx\n"
                           "\\end{document}\n")
    result = compile_pdf(tex)
    assert not result.ok
    assert "nosuchpackagexyz.sty" in result.first_error and "not found" in result.first_error


def test_broken_bib_file_is_reported(tmp_path):
    (tmp_path / "references.bib").write_text("@article{kingma2015adam,\n  title = {x}\n  author = {y},\n}\n")
    result = compile_pdf(_write(tmp_path, GOOD))
    assert not result.ok
    assert "references.bib" in result.first_error and "BibTeX" in result.first_error


def test_infinite_loop_times_out_and_leaves_no_process(tmp_path):
    tex = _write(tmp_path, _document("\\def\\x{\\x}\\x"), name="loop.tex")
    result = compile_pdf(tex, timeout_s=3)
    assert result.timed_out and not result.ok and result.pdf is None
    assert "timed out" in result.first_error
    assert 3 <= result.seconds < 15
    assert _processes_using(tex) == []


def test_stale_pdf_is_not_reported_after_a_failed_build(tmp_path):
    tex = _write(tmp_path, _document("All good."))
    assert compile_pdf(tex).ok
    tex.write_text(_document("Now broken \\nosuchmacro."))
    result = compile_pdf(tex)
    assert not result.ok and result.pdf is None
    assert not (tmp_path / "paper.pdf").exists()
    assert "\\nosuchmacro" in result.first_error


def test_first_error_file_line_style():
    log = ("(./paper.tex\nLaTeX Font Info: ... okay on input line 3.\n"
           "./paper.tex:57: Undefined control sequence.\nl.57 We use \\foo\n                {} here.\n"
           "./paper.tex:57:  ==> Fatal error occurred, no output PDF file produced!\n")
    assert latex.first_error(log, "paper.tex") == ("paper.tex:57: Undefined control sequence. We use \\foo", 57)


def test_first_error_classic_style_assumes_main_file():
    log = "! Undefined control sequence.\nl.12 \\foo\n           bar\n"
    assert latex.first_error(log, "paper.tex") == ("paper.tex:12: Undefined control sequence. \\foo", 12)
    assert latex.first_error(log) == ("line 12: Undefined control sequence. \\foo", 12)


def test_first_error_latex_error_located_by_emergency_stop():
    log = ("! LaTeX Error: File `nosuch.sty' not found.\n\nType X to quit or <RETURN> to proceed,\n"
           "or enter new name. (Default extension: sty)\n\nEnter file name: \n./paper.tex:12: Emergency stop.\n"
           "<read *> \n         \nl.12 \\begin\n          {document}\n")
    message, line = latex.first_error(log, "paper.tex")
    assert message.startswith("paper.tex:12: LaTeX Error: File `nosuch.sty' not found.")
    assert line == 12


def test_first_error_in_another_file_has_no_main_line():
    log = "./sections/method.tex:8: Missing $ inserted.\n<inserted text> \n                $\nl.8 x^\n     2\n"
    message, line = latex.first_error(log, "paper.tex")
    assert message == "sections/method.tex:8: Missing $ inserted. x^"
    assert line is None


def test_first_error_joins_package_continuation_and_wrapped_lines():
    log = ("./paper.tex:20: Package natbib Error: Bibliography not compatible with author-year\n"
           "(natbib)                citations.\n\nSee the natbib package documentation for explanation.\n"
           "l.20 \\bibliography{references}\n")
    message, line = latex.first_error(log, "paper.tex")
    assert "author-year citations." in message and line == 20
    wrapped = "./paper.tex:3: LaTeX Error: " + "x" * (79 - len("./paper.tex:3: LaTeX Error: "))
    message, _ = latex.first_error(wrapped + "\nyz continues.\n\nl.3 \\foo\n", "paper.tex")
    assert "xyz continues." in message and message.endswith("\\foo")


def test_first_error_macro_context_and_trimming():
    log = ("./paper.tex:4: Undefined control sequence.\n\\mybar ->\\foo \n              \n"
           f"l.4 {'word ' * 80}\\mybar\n")
    message, line = latex.first_error(log, "paper.tex")
    assert "\\mybar ->\\foo" in message and message.endswith("\\mybar)") and len(message) <= 200
    assert line == 4


def test_first_error_none_and_missing_end_document():
    assert latex.first_error("This is pdfTeX\nLaTeX Warning: Citation `x' undefined on input line 3.\n") == (None, None)
    message, line = latex.first_error("(./paper.tex)\n! Emergency stop.\n<*> paper.tex\n", "paper.tex")
    assert "\\end{document}" in message and line is None


def test_cheap_fixes_examples():
    text, applied = cheap_fixes('Adam \\cite{kingma} works... See Table \\ref{tab:a} and \\eqref{eq:b} , "fast" .')
    assert text == "Adam~\\cite{kingma} works\\ldots{} See Table~\\ref{tab:a} and~\\eqref{eq:b}, ``fast''."
    assert sorted(applied) == sorted(["1x space before \\cite -> ~", "1x ellipsis -> \\ldots{}",
                                      "1x space before \\ref -> ~", "1x space before \\eqref -> ~",
                                      "2x space before punctuation removed", "2x straight quotes -> ``...''"])
    assert cheap_fixes("Nothing to fix here.") == ("Nothing to fix here.", [])


@pytest.mark.parametrize("kept", [
    "Math $a...b$ and $$ x , y $$ and \\(c ... d\\) and \\[ e , f \\].",
    'Code \\verb|x..."q" , z| and \\lstinline|a...b|.',
    "% a comment... with \"quotes\" , and \\cite\n",
    "\\begin{equation}a ... b , c\\end{equation}",
    "\\url{http://example.org/a...b} \\label{sec:a...b} \\cite{a , b}",
    'A 5" screen and an "unbalanced quote.',
    "Value .5 stays, as does\n\n\\cite{x} after a blank line.",
    'M\\"uller.',
])
def test_cheap_fixes_leave_protected_text_alone(kept):
    assert cheap_fixes(kept) == (kept, [])


@pytest.mark.parametrize("broken", [
    "Open math $a ... b , c", "Open \\(a ... b , c", "Open \\verb|x ... y , z", "\\begin{equation} a ... b , c",
    '% an open comment ... "x" , y',
])
def test_cheap_fixes_leave_unclosed_protected_text_alone_to_the_end(broken):
    # Broken LaTeX from a model: what is never closed stays protected up to the end of the text.
    assert cheap_fixes(broken) == (broken, [])


def test_cheap_fixes_leave_the_preamble_alone():
    doc = '\\documentclass{article}\n\\newcommand{\\x}{a...b}\n\\begin{document}\nSee... "it"\n\\end{document}\n'
    text, _ = cheap_fixes(doc)
    assert text == doc.replace("See...", "See\\ldots{}").replace('"it"', "``it''")


def test_cheap_fixes_output_compiles_and_quiets_chktex(tmp_path):
    body = ('We study "fast" methods... as in \\cite{kingma2015adam} and Table \\ref{tab:a} , '
            'with math $a...b$ and code \\verb|x..."y" , z|.\n\n'
            '\\begin{table}[h]\\centering\\begin{tabular}{l}"q" ...\\\\\\end{tabular}'
            '\\caption{Results...}\\label{tab:a}\\end{table}\n'
            'Eq. \\eqref{eq:a} , see\n\\begin{equation}x ... y\\label{eq:a}\\end{equation}\n'
            '\\bibliographystyle{plain}\n\\bibliography{references}\n')
    (tmp_path / "references.bib").write_text(BIB)
    before = _write(tmp_path, "\\documentclass{article}\n\\usepackage{amsmath}\n\\begin{document}\n" + body
                    + "\\end{document}\n", name="before.tex")
    fixed, applied = cheap_fixes(before.read_text())
    assert applied
    assert "$a...b$" in fixed and '\\verb|x..."y" , z|' in fixed and "x ... y" in fixed
    after = _write(tmp_path, fixed, name="after.tex")
    result = compile_pdf(after)
    assert result.ok, result.first_error
    if shutil.which("chktex"):
        warned = chktex_warnings(before)
        assert any("Warning 11" in w for w in warned)  # the ellipsis warning
        assert all(re.match(r"^before\.tex:\d+:\d+: ", w) for w in warned)
        assert len(chktex_warnings(after)) < len(warned)


def test_check_installation(monkeypatch, tmp_path):
    latex._smoke_test.cache_clear()
    check_installation()
    with pytest.raises(LatexMissing, match="nosuchpackagexyz.sty") as caught:
        check_installation(packages=["nosuchpackagexyz"])
    assert INSTALL_HINT in str(caught.value)
    monkeypatch.setenv("PATH", str(tmp_path))
    latex._smoke_test.cache_clear()
    with pytest.raises(LatexMissing) as caught:
        check_installation()
    assert "latexmk" in str(caught.value) and INSTALL_HINT in str(caught.value)
    assert "\n" not in str(caught.value)
    assert chktex_warnings(tmp_path / "none.tex") == []  # chktex is not on this PATH either
    latex._smoke_test.cache_clear()
