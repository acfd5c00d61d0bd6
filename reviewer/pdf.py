"""Load a paper for review: a PDF's visible text page by page (pypdf), or a paper already converted to text.

What a human reader would not see, and sentences addressed to the reviewer, are removed and flagged by the
prompt-injection guard (reviewer.injection_guard) before the text is kept; this module opens the file, turns every
way it can fail into a one-line PaperError, finds the figure and table captions and cuts long papers at a page
boundary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from pypdf import PdfReader

from reviewer.injection_guard import guard_page, remove_instructions

CAPTION = re.compile(r"^\s*((Figure|Table)\s+\d+\s*[:.]|Fig\.\s*\d+)")


class PaperError(Exception):
    """A paper that cannot be reviewed; the message is one line naming the file."""


@dataclass
class Paper:
    """A paper's visible text, page by page, after the injection guard."""

    path: Path
    pages: list[str]             # visible text per page (only the pages kept after truncation)
    captions: list[str]          # "Figure N: ..." / "Table N: ..." / "Fig. N" lines of the visible text, all pages
    truncated: bool
    note: str                    # what was cut or unreadable, "" when nothing was
    injection_flags: list[dict] = field(default_factory=list)  # {"page", "kind", "text"}
    page_markers: bool = True    # False for a text file: its text is shown as it is

    @property
    def text(self) -> str:
        """The kept pages, each after a "[page N]" marker line, separated by a blank line (a text file: as is)."""
        if not self.page_markers:
            return "\f".join(self.pages)
        return "\n\n".join(f"[page {number}]\n{page}" for number, page in enumerate(self.pages, 1))


TEXT_SUFFIXES = (".txt", ".md", ".mmd")


def load_text_paper(path: Path, max_chars: int = 60_000) -> Paper:
    """A paper already converted to text (.txt, .md, .mmd), e.g. the parsed ICLR papers The AI Scientist's
    calibration used. Form feeds separate pages; instructions aimed at the reviewer are removed and flagged
    (there is no hidden text to find in a text file). Raises PaperError for a missing, unreadable or empty file."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError as exc:
        raise PaperError(f"{path.name}: no such file") from exc
    except OSError as exc:
        raise PaperError(f"{path.name}: cannot be read ({_one_line(exc)})") from exc
    if not raw.strip():
        raise PaperError(f"{path.name}: the text file is empty")
    texts, flags = [], []
    for number, page in enumerate(raw.split("\f"), 1):
        text, page_flags = remove_instructions(page, number)
        texts.append(text)
        flags.extend(page_flags)
    captions = [line.strip() for text in texts for line in text.splitlines() if CAPTION.match(line)]
    kept, truncated, note = _truncate(texts, max_chars)
    return Paper(path=path, pages=kept, captions=captions, truncated=truncated, note=note, injection_flags=flags,
                 page_markers=False)


def load_paper(path: Path, max_chars: int = 60_000) -> Paper:
    """Read a PDF's visible text, removing (and flagging) hidden text and instructions aimed at the reviewer.

    A .txt, .md or .mmd file is read as text instead (load_text_paper).

    Raises PaperError for a missing file, a file that is not a PDF, an encrypted PDF (unless it opens with an empty
    password), or a PDF without extractable text. Text beyond max_chars is cut at a page boundary (the first page is
    always kept, cut if need be) and `note` says so.
    """
    path = Path(path)
    if path.suffix.lower() in TEXT_SUFFIXES:
        return load_text_paper(path, max_chars)
    reader = _open(path)
    try:
        pages = list(reader.pages)
    except Exception as exc:  # pypdf raises many kinds of errors on a broken page tree
        raise PaperError(f"{path.name}: unreadable PDF ({_one_line(exc)})") from exc

    texts: list[str] = []
    flags: list[dict] = []
    unreadable: list[int] = []
    for number, page in enumerate(pages, 1):
        try:
            text, page_flags = guard_page(page, reader, number)
        except Exception:  # one broken page should not cost the review of the other pages
            text, page_flags = "", []
            unreadable.append(number)
        texts.append(text)
        flags.extend(page_flags)

    if pages and len(unreadable) == len(pages):
        raise PaperError(f"{path.name}: unreadable PDF (no page could be read)")
    if not any(text.strip() for text in texts) and not flags:
        raise PaperError(f"{path.name}: no extractable text (scanned images?); run OCR first")

    captions = [line.strip() for text in texts for line in text.splitlines() if CAPTION.match(line)]
    kept, truncated, note = _truncate(texts, max_chars)
    if unreadable:
        listed = ", ".join(str(n) for n in unreadable)
        note = "; ".join(part for part in (note, f"unreadable page(s) skipped: {listed}") if part)
    return Paper(path=path, pages=kept, captions=captions, truncated=truncated, note=note, injection_flags=flags)


def _open(path: Path) -> PdfReader:
    """A PdfReader for path, or the PaperError a user should see."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise PaperError(f"{path.name}: no such file") from exc
    except OSError as exc:
        raise PaperError(f"{path.name}: cannot read file ({_one_line(exc)})") from exc
    # The PDF standard lets the header start anywhere in the first 1024 bytes.
    if b"%PDF-" not in data[:1024]:
        raise PaperError(f"{path.name}: not a PDF file")
    try:
        reader = PdfReader(BytesIO(data))
    except Exception as exc:
        raise PaperError(f"{path.name}: not a PDF file") from exc
    if reader.is_encrypted:
        try:
            opened = bool(reader.decrypt(""))  # PasswordType.NOT_DECRYPTED is 0
        except Exception:  # e.g. AES without the cryptography package
            opened = False
        if not opened:
            raise PaperError(f"{path.name}: encrypted PDF; decrypt it first")
    return reader


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _truncate(pages: list[str], max_chars: int) -> tuple[list[str], bool, str]:
    """Whole pages up to max_chars characters (at least the first page, cut if need be), and the note saying so."""
    total = sum(len(page) for page in pages)
    if total <= max_chars:
        return pages, False, ""
    kept: list[str] = []
    used = 0
    for page in pages:
        if used + len(page) > max_chars:
            break
        kept.append(page)
        used += len(page)
    if not kept:
        kept, used = [pages[0][:max_chars]], max_chars
        where = f"page 1 of {len(pages)}, cut"
    elif len(kept) == 1:
        where = f"page 1 of {len(pages)}"
    else:
        where = f"pages 1-{len(kept)} of {len(pages)}"
    return kept, True, f"truncated to {used} characters of {total} ({where})"
