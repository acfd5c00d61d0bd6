"""Compiling papers with latexmk, reading pdflatex's first error, and cheap deterministic fixes of LaTeX body text.

The model that writes a paper sees at most one LaTeX error per round, so `first_error` turns a pdflatex log into
one line that names the file, the line and the offending source. `compile_pdf` runs latexmk in its own process
group so that a macro that loops forever costs a timeout, not a hung session. `check_installation` runs before any
model call is paid for, so a machine without a working TeX fails at once with the command that fixes it.
The cheap fixes find math, verbatim, comments and command arguments with papers.lexer.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from papers import lexer

INSTALL_HINT = ("sudo apt-get install -y texlive-latex-base texlive-latex-recommended texlive-fonts-recommended "
                "texlive-latex-extra latexmk chktex lmodern")

REQUIRED_TOOLS = ("latexmk", "pdflatex", "bibtex")

# The packages of the framework's paper template (papers/paper.tex.j2): a missing one is found before any model call.
PAPER_PACKAGES = ("lmodern", "geometry", "amsmath", "amssymb", "graphicx", "booktabs", "listings", "xcolor", "natbib",
                  "hyperref")

# What a previous build leaves behind: removed first, so that a failing build cannot be reported with an old PDF,
# and so that a broken .aux/.toc/.out from a failed run cannot break the next one.
STALE_SUFFIXES = (".aux", ".bbl", ".blg", ".fdb_latexmk", ".fls", ".pdf", ".log", ".out", ".toc", ".lof", ".lot")

MAX_ERROR_CHARS = 200


class LatexMissing(Exception):
    """LaTeX cannot compile a paper on this machine; one-line message naming what is missing and how to install it."""


@dataclass
class CompileResult:
    ok: bool
    pdf: Path | None
    log_path: Path  # latexmk's combined output (<name>.compile.log); pdflatex's <name>.log stays beside it
    first_error: str | None  # one line, e.g. "paper.tex:57: Undefined control sequence. \foo"
    error_line: int | None  # line in the main .tex file, when the log says so
    seconds: float
    timed_out: bool = False


# ---------------------------------------------------------------------------------------------------------------
# Installation


def check_installation(packages: Iterable[str] = PAPER_PACKAGES) -> None:
    """Raise LatexMissing unless latexmk, pdflatex and bibtex are on PATH and a tiny document using `packages` compiles.

    The test compile runs once per process and package set (cached), so calling this often is free.
    chktex is optional: only the cheap fixes' report uses it.
    """
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise LatexMissing(f"{', '.join(missing)} not found on PATH; install TeX Live with: {INSTALL_HINT}")
    problem = _smoke_test(tuple(sorted(set(packages))))
    if problem:
        raise LatexMissing(f"a one-line test document does not compile ({problem}); "
                           f"the TeX installation is incomplete, install with: {INSTALL_HINT}")


@functools.cache
def _smoke_test(packages: tuple[str, ...]) -> str | None:
    """Compile a one-line document in a temporary folder; None if it worked, else the reason (one line)."""
    uses = "".join(f"\\usepackage{{{p}}}" for p in packages)
    fontenc = "\\usepackage[T1]{fontenc}" if "lmodern" in packages else ""
    with tempfile.TemporaryDirectory(prefix="latex-check-") as tmp:
        tex = Path(tmp) / "check.tex"
        tex.write_text(f"\\documentclass{{article}}{fontenc}{uses}\\begin{{document}}ok\\end{{document}}\n")
        result = compile_pdf(tex, timeout_s=60.0)
        if result.ok:
            return None
        return result.first_error or "no PDF was produced"


# ---------------------------------------------------------------------------------------------------------------
# Compilation


def compile_pdf(tex_path: Path, timeout_s: float = 120.0) -> CompileResult:
    """Build tex_path's PDF with latexmk (pdflatex + bibtex) in the tex's folder; never raises for LaTeX errors.

    latexmk runs in its own process group, killed as a whole at the timeout. The result is ok only when latexmk
    succeeded and a non-empty PDF exists; otherwise first_error says why in one line. Missing bibliography entries
    and undefined citations are warnings, not failures.
    """
    tex_path = Path(tex_path).resolve()
    folder, stem = tex_path.parent, tex_path.stem
    for suffix in STALE_SUFFIXES:
        (folder / f"{stem}{suffix}").unlink(missing_ok=True)
    pdf = folder / f"{stem}.pdf"
    log_path = folder / f"{stem}.compile.log"
    # -norc: a user's latexmkrc could switch on previewers or continuous mode, which would never return.
    cmd = ["latexmk", "-norc", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error", "-bibtex",
           tex_path.name]
    # Unwrapped log lines (TeX wraps at 79 characters by default) keep each error message on one line.
    env = {**os.environ, "max_print_line": "1000"}
    started = time.monotonic()
    timed_out = False
    with open(log_path, "wb") as out:
        try:
            proc = subprocess.Popen(cmd, cwd=folder, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        except OSError as e:
            return CompileResult(False, None, log_path, f"could not run latexmk: {e}", None,
                                 time.monotonic() - started)
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            returncode = proc.returncode
    seconds = time.monotonic() - started

    if timed_out:
        error: str | None = (f"{tex_path.name}: compilation timed out after {timeout_s:g}s and was killed "
                             "(a macro that expands forever?)")
        return CompileResult(False, None, log_path, error, None, seconds, timed_out=True)
    ok = returncode == 0 and pdf.is_file() and pdf.stat().st_size > 0
    if ok:
        return CompileResult(True, pdf, log_path, None, None, seconds)
    error, line = first_error(_read(folder / f"{stem}.log"), main_file=tex_path.name)
    if error is None:
        error = _bibtex_error(_read(folder / f"{stem}.blg"))
    if error is None:
        error = _latexmk_summary(_read(log_path)) or f"latexmk exited with code {returncode} and produced no PDF"
    return CompileResult(False, pdf if pdf.is_file() else None, log_path, error, line, seconds)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL latexmk's whole process group (pdflatex, bibtex) and wait until none of it is still running."""
    try:
        members = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        members = []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    # latexmk's children are reparented when it dies and finish a moment later; zombies no longer run, so they count
    # as gone (an init that never reaps must not make every timeout cost more).
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(_running(p) for p in members):
        time.sleep(0.05)


def _running(process: psutil.Process) -> bool:
    """Whether a process still exists and is not a zombie."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _read(path: Path) -> str:
    """A log's text, or "" if it does not exist; TeX logs are not always valid UTF-8."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------------------------
# Reading logs

# "./paper.tex:57: Undefined control sequence." (pdflatex -file-line-error); TeX starts each error on a new line.
_FILE_LINE_ERROR = re.compile(r"^(?P<file>[\w./-][^\s:]*\.\w+):(?P<line>\d+): (?P<msg>.*\S)\s*$")
_CONTEXT_LINE = re.compile(r"^l\.(?P<line>\d+) ?(?P<text>.*)$")
_FATAL = "==> Fatal error occurred"
_LOOKAHEAD = 40  # lines after an error in which its "l.NN" context is searched


def first_error(log_text: str, main_file: str = "") -> tuple[str | None, int | None]:
    """The first error of a pdflatex log as (one-line message, line in main_file), or (None, None) if there is none.

    Understands both "./paper.tex:57: msg" (-file-line-error) and classic "! msg" errors, and adds the offending
    source from TeX's "l.57 ..." context line, e.g. "paper.tex:57: Undefined control sequence. \\foo".
    The line is returned only for an error in main_file (any file when main_file is ""); a classic error without a
    file name is taken to be in main_file.
    """
    lines = log_text.splitlines()
    for i, raw in enumerate(lines):
        file: str | None = None
        line: int | None = None
        if raw.startswith("! "):
            msg = raw[2:].strip()
        else:
            m = _FILE_LINE_ERROR.match(raw)
            if not m or _FATAL in m["msg"]:
                continue
            file, line, msg = m["file"], int(m["line"]), m["msg"].strip()
        if msg.startswith(_FATAL):
            continue
        msg = _join_continuations(raw, msg, lines[i + 1:i + 6])
        after = lines[i + 1:i + 1 + _LOOKAHEAD]
        context_line, context_text = _context(after)
        if file is None:
            # A classic error: the location comes from the "file:NN: Emergency stop." or fatal line that follows.
            for follow in after:
                if follow.startswith("! "):
                    break
                m = _FILE_LINE_ERROR.match(follow)
                if m and (m["msg"] == "Emergency stop." or _FATAL in m["msg"]):
                    file, line = m["file"], int(m["line"])
                    break
            if context_line is not None:
                line = context_line
        top = _top_context(msg, after)
        if msg == "Emergency stop." and after and after[0].startswith("<*>"):  # reading the main file ran out
            msg, top, context_text = "Emergency stop: the input ended before \\end{document}.", "", ""
        in_main = file is None or not main_file or _same_file(file, main_file)
        where = _display_name(file) if file else (_display_name(main_file) if main_file else "")
        if line is None:
            location = f"{where}: " if where else ""
        else:
            location = f"{where}:{line}: " if where else f"line {line}: "
        return _one_line(location, msg, top, context_text), (line if in_main else None)
    return None, None


def _join_continuations(raw: str, msg: str, following: list[str]) -> str:
    """Append to msg (from the log line raw) a package error's "(pkg)  more text" lines and lines TeX wrapped."""
    joined = msg
    previous = raw
    for nxt in following:
        package = re.match(r"^\([\w@.-]+\)\s+", nxt)
        if package:
            joined += " " + nxt[package.end():].strip()
        elif len(previous) == 79 and nxt.strip() and not _is_context(nxt):
            joined += nxt.rstrip()  # TeX broke the line at max_print_line (79), possibly mid-word
        else:
            break
        previous = nxt
    return joined


def _is_context(text: str) -> bool:
    """Whether a log line is part of TeX's error context or help rather than an error message."""
    return bool(_CONTEXT_LINE.match(text)) or text.startswith(("<", "See the LaTeX manual", "Type  H <return>"))


def _context(after: list[str]) -> tuple[int | None, str]:
    """TeX's "l.NN text" context after an error: the line number and the source up to the error point."""
    for text in after:
        error = _FILE_LINE_ERROR.match(text)
        if text.startswith("! ") or _FATAL in text or (error and error["msg"] != "Emergency stop."):
            break
        m = _CONTEXT_LINE.match(text)
        if m:
            return int(m["line"]), m["text"].strip()
    return None, ""


def _top_context(msg: str, after: list[str]) -> str:
    """For a TeX primitive error inside a macro, the first context line, which ends with the offending token.

    LaTeX's own errors ("LaTeX Error:", "Package x Error:") are followed by help text instead, so they get none.
    """
    if "Error:" in msg or not after:
        return ""
    first = after[0].strip()
    # "<to be read again>" and "<inserted text>" carry their tokens on the next line; alone they say nothing.
    if not first or re.fullmatch(r"<[^>]*>", first) or _is_context(after[0]) or _FILE_LINE_ERROR.match(after[0]):
        return ""
    return first


def _one_line(location: str, msg: str, top: str, context_text: str) -> str:
    """Location, message and source context on one line of at most ~MAX_ERROR_CHARS characters."""
    head = re.sub(r"\s+", " ", f"{location}{msg}").strip()[:MAX_ERROR_CHARS]
    top = re.sub(r"\s+", " ", top).strip()
    context = re.sub(r"\s+", " ", context_text).strip()
    if top and top in context:
        top = ""
    room = MAX_ERROR_CHARS - len(head) - 1
    if top:
        top = top if len(top) <= 60 else "..." + top[-57:]
        room -= len(top) + len(" (at: )")
    if context and room < 20:
        context = ""
    elif len(context) > room:
        # The error point is at the end of TeX's context, so keep the end.
        context = "..." + context[-(room - 3):]
    if top:
        context = f"{top} (at: {context})" if context else top
    return f"{head} {context}" if context else head


def _display_name(file: str) -> str:
    """"./paper.tex" -> "paper.tex"; other paths are kept as they are."""
    return file[2:] if file.startswith("./") else file


def _same_file(file: str, main_file: str) -> bool:
    """Whether a log's file name is main_file (given as a name or path)."""
    shown = _display_name(file)
    return shown == _display_name(main_file) or shown == Path(main_file).name


def _bibtex_error(blg_text: str) -> str | None:
    """The first real error of a BibTeX .blg (missing database entries are only warnings), on one line."""
    lines = blg_text.splitlines()
    for i, text in enumerate(lines):
        m = re.match(r"^(?P<msg>.*)---line (?P<line>\d+) of file (?P<file>.*)$", text)
        if m:
            # The offending source follows as " : text" lines.
            source = " ".join(s.lstrip(" :").strip() for s in lines[i + 1:i + 3] if s.startswith(" :")).strip()
            return _one_line(f"{m['file']}:{m['line']}: ", f"BibTeX: {m['msg'].strip()}", "", source)
        if re.match(r"^(I couldn't open|I found no|Illegal, |Sorry---you've exceeded|I'm skipping)", text):
            return _one_line("", f"BibTeX: {text.strip()}", "", "")
    return None


def _latexmk_summary(output: str) -> str | None:
    """The first line of latexmk's "Collected error summary", when the logs themselves name no error."""
    lines = output.splitlines()
    for i, text in enumerate(lines):
        if text.startswith("Collected error summary") and i + 1 < len(lines):
            return "latexmk: " + lines[i + 1].strip()
    for text in lines:
        if text.startswith("Latexmk: ") and ("error" in text.lower() or "missing" in text.lower()):
            return text.strip()[:MAX_ERROR_CHARS]
    return None


# ---------------------------------------------------------------------------------------------------------------
# chktex


def chktex_warnings(tex_path: Path) -> list[str]:
    """chktex's warnings about tex_path as one-line strings ("paper.tex:3:5: Warning 2: ..."); [] without chktex."""
    if shutil.which("chktex") is None:
        return []
    tex_path = Path(tex_path)
    # -I0: included files are checked where they are compiled, not here; -q: no banner.
    cmd = ["chktex", "-q", "-I0", "-f", "%f:%l:%c: %k %n: %m\n", tex_path.name]
    try:
        proc = subprocess.run(cmd, cwd=tex_path.parent, capture_output=True, text=True, errors="replace",
                              timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [text.strip() for text in proc.stdout.splitlines() if text.strip()]


# ---------------------------------------------------------------------------------------------------------------
# Cheap fixes

# Environments whose content is math, code or drawing: never edited.
_RAW_ENVIRONMENTS = lexer.MATH_ENVIRONMENTS | lexer.VERBATIM_ENVIRONMENTS | {"tikzpicture"}
# Commands whose arguments are keys, labels, file names, URLs, options or definitions: never edited.
_ARGUMENT_COMMANDS = {
    "label", "ref", "eqref", "pageref", "autoref", "cref", "Cref", "nameref", "hyperref",
    "cite", "citep", "citet", "citealp", "citealt", "citeauthor", "citeyear", "citenum", "nocite",
    "url", "href", "nolinkurl", "path", "includegraphics", "input", "include", "includeonly",
    "usepackage", "RequirePackage", "documentclass", "bibliography", "bibliographystyle", "addbibresource",
    "hypersetup", "lstset", "captionsetup", "setlength", "addtolength", "setcounter", "addtocounter",
    "definecolor", "color", "textcolor", "colorbox", "graphicspath", "newtheorem", "begin", "end", "multicolumn",
    "vspace", "hspace", "ensuremath", "SI", "si", "num", "qty", "tikzset", "pgfplotsset", "usetikzlibrary",
}
_LINK_COMMANDS = ("cite", "citep", "ref", "eqref", "pageref")  # chktex wants "~" before these (warning 2)


def cheap_fixes(text: str) -> tuple[str, list[str]]:
    """Fix common chktex warnings in LaTeX body text; return the new text and short descriptions of what changed.

    Outside math, verbatim, comments and the arguments of commands like \\cite or \\label: "..." becomes \\ldots{},
    a space before \\cite/\\ref/\\eqref becomes "~", "word" becomes ``word'', and a space before "." or "," is removed.
    Anything before \\begin{document} or after \\end{document} is left alone. The fixes only ever touch plain text,
    so they cannot break compilation.
    """
    protected = _protected_mask(text)

    def free(start: int, end: int) -> bool:
        return not any(protected[start:end])

    edits: list[tuple[int, int, str, str]] = []  # (start, end, replacement, description)
    for m in re.finditer(r"\.\.\.", text):
        if free(m.start(), m.end()):
            edits.append((m.start(), m.end(), "\\ldots{}", "ellipsis -> \\ldots{}"))

    link = "|".join(_LINK_COMMANDS)
    # One line break at most: a blank line is a paragraph break, which "~" would remove.
    for m in re.finditer(rf"([ \t]+(?:\n[ \t]*)?|\n[ \t]*)\\({link})(?![A-Za-z@])", text):
        start, end = m.span(1)
        before = start - 1
        if (before >= 0 and free(before, end) and re.match(r"[A-Za-z0-9.,;:)\]}']", text[before])):
            edits.append((start, end, "~", f"space before \\{m[2]} -> ~"))

    # " ." or " ," (but not " .5" or " ...") after a word, on the same line.
    for m in re.finditer(r"(?<=\S)[ \t]+(?=[.,](?:\s|\Z|[)\]}~]))", text):
        if free(m.start(), m.end() + 1):
            edits.append((m.start(), m.end(), "", "space before punctuation removed"))

    edits += _quote_edits(text, protected)

    edits.sort()
    result: list[str] = []
    applied: Counter[str] = Counter()
    position = 0
    for start, end, replacement, description in edits:
        if start < position:  # overlapping edits cannot happen by construction; skip rather than corrupt
            continue
        result.append(text[position:start])
        result.append(replacement)
        position = end
        applied[description] += 1
    result.append(text[position:])
    return "".join(result), [f"{n}x {description}" for description, n in applied.items()]


def _quote_edits(text: str, protected: bytearray) -> list[tuple[int, int, str, str]]:
    """Straight double quotes -> ``...'', per paragraph, only where every quote pairs up as an opening and closing one.

    A paragraph with an odd count or an ambiguous quote (inches, babel shorthands) is left as it is.
    """
    edits: list[tuple[int, int, str, str]] = []
    for paragraph in re.finditer(r"(?:[^\n]|\n(?![ \t]*\n))+", text):
        quotes = [i for i in range(paragraph.start(), paragraph.end()) if text[i] == '"' and not protected[i]]
        if not quotes or len(quotes) % 2:
            continue
        pairs = list(zip(quotes[::2], quotes[1::2], strict=True))
        if all(_opens(text, a) and _closes(text, b) for a, b in pairs):
            for a, b in pairs:
                edits.append((a, a + 1, "``", "straight quotes -> ``...''"))
                edits.append((b, b + 1, "''", "straight quotes -> ``...''"))
    return edits


def _opens(text: str, i: int) -> bool:
    """Whether the quote at i can open: after a space or bracket, before a non-space."""
    before = text[i - 1] if i > 0 else " "
    after = text[i + 1] if i + 1 < len(text) else " "
    return (before.isspace() or before in "([{~") and not after.isspace() and after != '"'


def _closes(text: str, i: int) -> bool:
    """Whether the quote at i can close: after a non-space, before a space, punctuation or closing bracket."""
    before = text[i - 1]
    after = text[i + 1] if i + 1 < len(text) else " "
    return not before.isspace() and (after.isspace() or after in ".,;:!?)]}'~-")


def _protected_mask(text: str) -> bytearray:
    """1 for every character that cheap_fixes must not touch: math, verbatim, comments, command names, key arguments."""
    n = len(text)
    mask = bytearray(n)

    def protect(start: int, end: int) -> None:
        mask[start:min(end, n)] = b"\x01" * (min(end, n) - start)

    body_start = text.find("\\begin{document}")
    if body_start >= 0:
        protect(0, body_start + len("\\begin{document}"))
    body_end = text.find("\\end{document}")
    if body_end >= 0:
        protect(body_end, n)

    i = 0
    while i < n:
        c = text[i]
        if c == "%":
            end = min(lexer.comment_end(text, i) + 1, n)  # the comment eats its line break too
        elif c == "$":
            end = lexer.math_end(text, i, first_closer=True)
        elif c == "\\":
            end = _command_end(text, i)
        else:
            i += 1
            continue
        protect(i, end)
        i = end
    return mask


def _command_end(text: str, i: int) -> int:
    """The end of the protected stretch starting at the backslash at i.

    A command name alone, or with its arguments for the commands in _ARGUMENT_COMMANDS; a whole \\verb, \\(...\\),
    \\[...\\], definition or raw environment; two characters for a control symbol such as \\% or \\".
    """
    if text.startswith(("\\(", "\\["), i):
        return lexer.math_end(text, i, first_closer=True)
    name, j = lexer.control_sequence(text, i)
    if not lexer.NAME.fullmatch(name):  # a control symbol, or a backslash ending the text
        return j
    if name in lexer.VERB_COMMANDS:
        return lexer.verb_end(text, name, j)
    if name == "begin":
        env = lexer.ENVIRONMENT.match(text, i)
        if env and env[2].strip() in _RAW_ENVIRONMENTS:
            return lexer.environment_end(text, env[2].strip(), env.end())
        return lexer.arguments_end(text, j)
    if name in lexer.DEFINITIONS:
        return lexer.definition_end(text, name, j)
    if name in _ARGUMENT_COMMANDS:
        return lexer.arguments_end(text, j)
    return j
