"""Plain text made safe for LaTeX."""

_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text (titles, captions, reasons)."""
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in str(text))


def texttt(text: str) -> str:
    r"""Plain text in typewriter type, escaped: a metric or file name, e.g. \texttt{val\_bpc}."""
    return f"\\texttt{{{tex_escape(text)}}}"
