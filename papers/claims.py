"""The claim check: every number in the paper's prose must match a logged value within its rounding.

    numbers(latex)          every number of the body text, with how it was written (rounding) and where
    ratios(latex)           every ratio word ("doubles", "3 times higher", "2-fold"): a claim with a value too
    check(sections, facts)  each number matched against the logged facts of the run its sentence is about
                            -> Report (saved next to the paper)
    Report.feedback(name)   one message for the model: the unverified numbers of a section, to fix or remove
    strip_unverified(...)   last resort: strike the sentences that still carry an unverified number

Tables are generated from the logs by the framework and are trusted, so they are not checked. Citation keys,
references, labels, lengths and identifiers such as GPT-4 are not claims and are skipped. The check errs on the
side of flagging: a number it cannot place is reported, never silently passed. A number is checked against the
facts of the run its sentence names (the best run, the baseline, "run 2"), never against any run's; the model's
own macros are expanded (papers.macros) before anything is checked, so no number hides in one.
LaTeX's comments, groups, math spans and command arguments are found with papers.lexer; sentences are delimited
and struck by papers.sentences.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum

from papers import lexer
from papers.sentences import layout_of, one_line, sentence_span, strike_spans

SENTENCE_CHARS = 200  # how much of a claim's sentence the report and the feedback show


class Kind(StrEnum):
    """What a fact is, so that a number matches only a fact of the kind its words state (see _context())."""

    MEAN = "mean"
    STDERR = "stderr"
    INTERVAL = "interval"        # a bound of a 95% interval
    P_VALUE = "p_value"
    P_THRESHOLD = "p_threshold"  # 0.05, 0.01, 0.001: only when a logged p-value is below it ("p < 0.001")
    LEVEL = "level"              # the significance level 0.05, the confidence 95%
    DIFFERENCE = "difference"
    NORMALIZED = "normalized"    # normalised score and percent change
    CONFIG = "config"
    COUNT = "count"
    TEMPLATE = "template"        # a number of the template's own LaTeX text
    CONSTANT = "constant"        # a number of the best run's code: a setting, never a result
    IDEA = "idea"                # a number of the idea's own text (its title, hypothesis, experiment)
    RATIO = "ratio"              # a run's mean (or evaluator scalar) over the baseline's, for "doubles", "3x"
    EXTRA = "extra"              # a scalar the evaluator logged in final_info.json's `extra`
    ANY = "any"                  # a hand-made fact without a kind: matches in every context


# Kinds a number may state when no word around it says otherwise (COUNT only for integers). Not the constants of
# the code or the idea: a 1.45 in `-logsigmoid(1.45*z)` is no reward, so those match only a number the words
# present as a setting (SETTING_KINDS: "weight 0.3", "w=0.5", "1.45*z").
VALUE_KINDS = frozenset({Kind.MEAN, Kind.DIFFERENCE, Kind.NORMALIZED, Kind.CONFIG, Kind.EXTRA, Kind.COUNT})
SETTING_KINDS = frozenset({Kind.CONFIG, Kind.CONSTANT, Kind.IDEA})
# What a run's comparison with the baseline logged: a sentence about the baseline may state these too.
COMPARISON_KINDS = frozenset({Kind.DIFFERENCE, Kind.P_VALUE, Kind.P_THRESHOLD, Kind.NORMALIZED, Kind.RATIO})
# A template's own text is trusted input, pasted verbatim: its numbers match whatever the words around them say.
EVERYWHERE = frozenset({Kind.TEMPLATE, Kind.ANY})


@dataclass(frozen=True)
class Fact:
    """A logged value the paper may state, with where it comes from (e.g. "run_2.reward.mean") and its kind.

    `run` is the run folder it belongs to ("baseline", "run_2", "run_2_attempt_2"), None for what no run owns
    (the configuration, counts, the template's text): a number is matched only with the facts of its run.
    """

    name: str
    value: float
    kind: str = Kind.ANY
    run: str | None = None


@dataclass
class Claim:
    """One number found in a section, and what backs it."""

    section: str          # the section the number is in
    written: str          # the number exactly as in the LaTeX source, e.g. "1.36", "3.2\\%", "1{,}000", "-0.012"
    value: float          # as parsed; a percent keeps the number written (3.2\% -> 3.2)
    decimals: int         # digits after the decimal point as written (2.5e-3 -> 4: the rounding position)
    sentence: str         # the sentence it occurs in, on one line, trimmed to about SENTENCE_CHARS
    fact: str | None      # name of the matching fact; None when unverified
    exempt: str | None = None  # why it needs no fact: "small integer", "year in a citation", "cross-reference"
    kind: str | None = None    # the kind of the matching fact
    context: str = "value"     # what the words around the number say it is: "value", "p-value", "stderr", ...


@dataclass
class Report:
    """The result of check(): every number of every section."""

    claims: list[Claim]

    @property
    def unverified(self) -> list[Claim]:
        """Numbers that match no fact and are not exempt."""
        return [c for c in self.claims if c.fact is None and c.exempt is None]

    @property
    def ok(self) -> bool:
        """True when every number is verified or exempt."""
        return not self.unverified

    def to_json(self) -> dict:
        """A JSON-serialisable summary with every claim, for claim_check.json next to the paper."""
        return {
            "checked": len(self.claims),
            "verified": sum(c.fact is not None for c in self.claims),
            "exempt": sum(c.exempt is not None for c in self.claims),
            "unverified": [asdict(c) for c in self.unverified],
            "claims": [asdict(c) for c in self.claims],
        }

    @classmethod
    def from_json(cls, data: dict) -> Report:
        """The inverse of to_json()."""
        return cls([Claim(**c) for c in data["claims"]])

    def feedback(self, section: str) -> str:
        """One message for the model: the unverified numbers of this section with their sentences ("" if none)."""
        bad = [c for c in self.unverified if c.section == section]
        if not bad:
            return ""
        lines = [f'In the section "{section}", these numbers match none of the logged values you were given '
                 f"(not even after rounding):"]
        lines += [f'- {c.written} (stated as a {c.context}) in: "{c.sentence}"' for c in bad]
        lines.append("Every number in the text must be one of the logged values, possibly rounded (1.3604 may be "
                     "written 1.36 or 1.4; a fraction 0.3604 may be written 36.0\\%), and of the kind the words "
                     "around it say: a number after \"p =\" must be a logged p-value, one after \\pm a standard "
                     "error, a configuration value must be named in its sentence. A number is checked against the "
                     "run its sentence names (the best run, the baseline, run 2), a ratio word (doubles, 3 times "
                     "higher) against the logged ratio of the quantity it names, and a constant of the code only "
                     "as a setting, never as a result. Replace each number above "
                     "with the logged value it should be, or remove the claim. Do not compute, estimate or "
                     "invent numbers, and keep the rest of the section unchanged.")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Finding numbers


@dataclass
class _Number:
    written: str
    value: float
    decimals: int
    start: int
    end: int
    percent: bool
    plain_int: bool  # written as digits only (optionally signed): the kind that may be a count or a year


# Commands whose arguments are not prose: name -> number of mandatory arguments to skip (optional [..] too).
_SKIP_ARGS = {
    "ref": 1, "eqref": 1, "autoref": 1, "cref": 1, "Cref": 1, "pageref": 1, "nameref": 1, "vref": 1,
    "label": 1, "includegraphics": 1, "input": 1, "include": 1, "begin": 1, "end": 1, "url": 1, "href": 1,
    "hspace": 1, "vspace": 1, "setlength": 2, "addtolength": 2, "setcounter": 2, "addtocounter": 2,
    "usepackage": 1, "documentclass": 1, "bibliography": 1, "bibliographystyle": 1, "resizebox": 2,
    "scalebox": 1, "fontsize": 2, "linespread": 1,
    "definecolor": 3, "graphicspath": 1, "nocite": 1,
}
_CITE = re.compile(r"[cC]ite[a-zA-Z]*\*?")  # \cite, \citep, \citet, \citealp, \citeauthor, \Citet, ...
_TABLE_ENV = re.compile(r"(?:table|tabular|tabularx|tabulary|longtable)\*?")
_LENGTH_AFTER = re.compile(r"\s*\\(?:linewidth|textwidth|columnwidth|textheight|hsize|vsize|paperwidth|"
                           r"paperheight|baselineskip|parindent|parskip)\b")
_LENGTH_BEFORE = re.compile(r"(?:width|height|totalheight|scale|angle)\s*=\s*$")

_SEP = r"(?:,|\{,\}|\\,)"  # thousands separators: 1,000 and 1{,}000 and 1\,000
_EXP = r"(?:\{\s*[-+−]?\d+\s*\}|[0-9])"  # the exponent of 10^{-3} or 10^3
_NUMBER = re.compile(
    r"(?<![0-9.])"
    r"(?:(?P<pow>10\^(?P<powexp>" + _EXP + r"))"
    r"|(?P<mant>\d{1,3}(?:" + _SEP + r"\d{3}(?!\d))+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:[eE](?P<eexp>[-+]?\d+)"
    r"|(?:\s*(?P<tmath>\$))?(?:\s|\\[,;!])*\\(?:times|cdot)(?:\s|\\[,;!])*10\^(?P<texp>" + _EXP + r")\s*(?(tmath)\$)"
    r")?)"
    r"(?P<pct>(?:\s*\\,|~)?\s*\\%|\s+percent\b)?"
)
_SIGN_BEFORE = re.compile(r"(?:\$-\$|\\textminus\s*(?:\{\})?\s*)$")


def _mask_nonprose(text: str) -> str:
    """Blank tables and the arguments of commands that are not prose (citations, refs, labels, lengths...)."""
    chars = list(text)
    # Tables (and tabulars anywhere) come from the logs via the framework: trusted, so not checked.
    stack: list[tuple[str, int]] = []
    for m in lexer.ENVIRONMENT.finditer(text):
        kind, env = m.group(1), m.group(2)
        if not _TABLE_ENV.fullmatch(env):
            continue
        if kind == "begin":
            stack.append((env, m.start()))
        elif stack and stack[-1][0] == env:
            _, a = stack.pop()
            if not stack:
                lexer.blank(chars, a, m.end())
    # An unclosed table is left unmasked: its numbers are checked rather than trusted.
    masked = "".join(chars)
    for m in re.finditer(r"\\([A-Za-z]+\*?)", masked):
        name = m.group(1)
        n_args = 1 if _CITE.fullmatch(name) else _SKIP_ARGS.get(name.rstrip("*"), 0)
        if n_args:
            lexer.blank(chars, m.start(), lexer.skip_arguments(masked, m.end(), n_args))
    return "".join(chars)


def _glued_before(text: str, start: int) -> bool:
    """Whether the number starting here is part of a word or identifier (GPT-4, L2, x_1, x^{2}, t-1)."""
    if start == 0:
        return False
    prev = text[start - 1]
    if prev in "_^":
        return True
    if prev == "{" and start >= 2 and text[start - 2] in "_^":
        return True
    if prev in "-+" and start >= 2 and (text[start - 2].isalpha() or text[start - 2] in "_"):
        return _letters_are_word(text, start - 2)
    if prev.isalpha():
        return _letters_are_word(text, start - 1)
    return False


def _letters_are_word(text: str, last: int) -> bool:
    # A letter run ending at `last` glues the number to it, unless the run is a command name: \pm0.003.
    k = last
    while k >= 0 and text[k].isalpha():
        k -= 1
    return not (k >= 0 and text[k] == "\\")


def _scan(latex: str) -> list[_Number]:
    text = _mask_nonprose(lexer.mask_comments(latex))
    out: list[_Number] = []
    for m in _NUMBER.finditer(text):
        start, end = m.start(), m.end()
        nxt = text[end:end + 2]
        # Glued to letters after (2pt, 3rd, 7B), or a dotted identifier (1.2.3): not a claim.
        if nxt[:1].isalpha() or nxt[:1] == "_" or (nxt[:1] == "." and nxt[1:2].isdigit()):
            continue
        if _LENGTH_AFTER.match(text, end) or _LENGTH_BEFORE.search(text[max(0, start - 20):start]):
            continue
        negative = False
        sign = _SIGN_BEFORE.search(text[max(0, start - 20):start])
        if sign:
            negative, start = True, start - len(sign.group(0))
        elif start > 0 and text[start - 1] in "-−":
            before = text[start - 2] if start >= 2 else ""
            # A hyphen after a digit or closing bracket is a range or a subtraction (10-20, 0.1--0.5).
            if not (before.isalnum() or before in ")]}-−_"):
                negative, start = True, start - 1
        if _glued_before(text, start):
            continue
        if m.group("pow"):
            exp = int(m.group("powexp").strip("{} ").replace("−", "-"))
            mant, mant_decimals = Decimal(1), 0
        else:
            digits = re.sub(_SEP, "", m.group("mant"))
            mant = Decimal(digits)
            mant_decimals = len(digits.split(".")[1]) if "." in digits else 0
            raw = m.group("eexp") or m.group("texp")
            exp = int(raw.strip("{} ").replace("−", "-")) if raw else 0
        value = float(mant.scaleb(exp))
        value = -value if negative else value  # -0.0 stays signed, so "-0.0" never matches a positive fact
        plain = bool(m.group("mant")) and not (m.group("eexp") or m.group("texp") or m.group("pct")) \
            and mant_decimals == 0 and re.fullmatch(r"\d+", m.group("mant")) is not None
        out.append(_Number(written=latex[start:end], value=value, decimals=mant_decimals - exp, start=start,
                           end=end, percent=bool(m.group("pct")), plain_int=plain))
    return out


def numbers(latex: str) -> list[tuple[str, float, int, int, int]]:
    """(written, value, decimals, start, end) of every number in LaTeX body text.

    Skipped: comments, the arguments of \\cite-like commands, \\ref, \\eqref, \\label, \\includegraphics,
    \\input, \\begin/\\end, \\url, \\href (first argument), lengths (\\hspace, width=0.8\\linewidth), numbers
    glued to letters, "_" or "^" (GPT-4, L2, x_1), and everything inside table/tabular environments.
    Recognised: 12, 1.36, -0.012, .5, 1,000, 1{,}000, 3.2\\%, 2.5e-3, 2.5\\times10^{-3}, 10^{-3}, numbers in
    inline math ($1.36 \\pm 0.003$ gives two). `decimals` is the position of the last written digit, so for
    scientific notation it is the mantissa's digits minus the exponent (2.5e-3 -> 4, 1.2e5 -> -4).
    """
    return [(n.written, n.value, n.decimals, n.start, n.end) for n in _scan(latex)]


# Ratio words: "doubles", "halved", "twice as", "3 times higher", "3x faster", "3$\times$ more", "2-fold", "by a
# factor of 2". Each is a claim with a value, checked against a logged ratio like a number (Kind.RATIO).
_WORD_NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_N = r"(?P<n{}>\d+(?:\.\d+)?|" + "|".join(_WORD_NUMBERS) + r")"  # a group per alternative: n1, n2, n3
_LESS = r"(?:less|lower|smaller|slower|fewer|cheaper|shorter)"
_MORE = r"(?:more|higher|larger|greater|bigger|faster|longer|better|worse|as|the|that)"
_RATIO = re.compile(
    r"\b(?P<verb>doubl(?:es|ed|ing|e)|tripl(?:es|ed|ing|e)|quadrupl(?:es|ed|ing|e)|halv(?:es|ed|ing|e))\b"
    r"(?![\s-]+(?:precision|descent|check\w*|blind|sided|counting|float|buffer|loop|integral|well)\b)"
    r"|\b(?P<twice>twice)\s+(?:as|the|that|more|higher|larger|faster)\b"
    r"|(?<![\w.])" + _N.format(1) + r"(?:[\s~]*-?[\s~]*)fold\b"
    r"|(?<![\w.])" + _N.format(2) + r"[\s~]*(?:times|x|×|\$?\s*\\times\s*\$?)[\s~]+(?P<cmp>" + _LESS + "|" + _MORE
    + r")\b"
    r"|\bby\s+a\s+factor\s+of\s+" + _N.format(3) + r"(?![\w.])",
    re.I)
_VERB_RATIO = {"doubl": 2.0, "tripl": 3.0, "quadrupl": 4.0, "halv": 0.5}
# Before "doubles", "triples", "quadruples" as nouns: a closing bracket, a determiner or a preposition.
_NOUN_BEFORE = r"(?:\)|\b(?:as|of|the|these|those|into|in|and|or|with|are|such|its|their))\s*$"


@dataclass
class _Ratio(_Number):
    inverse_too: bool = False  # "3 times better", "by a factor of 2": a ratio of 3 or 1/3, by the direction


def _ratios(latex: str) -> list[_Ratio]:
    text = _mask_nonprose(lexer.mask_comments(latex))
    out = []
    for m in _RATIO.finditer(text):
        if m.group("verb"):
            verb = m.group("verb").lower()
            before, after = text[max(0, m.start() - 8):m.start()], text[m.end():m.end() + 4]
            if verb.startswith("halv") and re.search(r"(?:two|both|the|into|in)\s*$", before, re.I):
                continue  # "the two halves of the data": a noun
            if verb.endswith("les") and (re.search(_NOUN_BEFORE, before, re.I) or re.match(r"\s+of\b", after)):
                continue  # "(object, colour, state) triples", "as triples", "triples of ints": a noun
            value, decimals, inverse = next(v for k, v in _VERB_RATIO.items() if verb.startswith(k)), 0, False
        elif m.group("twice"):
            value, decimals, inverse = 2.0, 0, False
        else:
            n = (m.group("n1") or m.group("n2") or m.group("n3")).lower()
            value = float(_WORD_NUMBERS.get(n, 0) or n)
            decimals = len(n.split(".")[1]) if "." in n else 0
            cmp = (m.group("cmp") or "").lower()
            if re.fullmatch(_LESS, cmp):
                value = 1.0 / value if value else value
            inverse = cmp in ("better", "worse") or m.group(0).lower().startswith("by")
        if value <= 0:
            continue
        out.append(_Ratio(written=latex[m.start():m.end()], value=value, decimals=decimals, start=m.start(),
                          end=m.end(), percent=False, plain_int=False, inverse_too=inverse))
    return out


def ratios(latex: str) -> list[tuple[str, float, int, int]]:
    """(written, value, start, end) of every ratio word of LaTeX body text ("halves" -> 0.5, "3x lower" -> 1/3)."""
    return [(r.written, r.value, r.start, r.end) for r in _ratios(latex)]


def _items(latex: str) -> list[_Number]:
    """What the check reads: the numbers and the ratio words, a number inside a ratio ("3 times") read as the ratio."""
    found = _ratios(latex)
    inside = [(r.start, r.end) for r in found]
    found += [n for n in _scan(latex) if not any(a <= n.start < b for a, b in inside)]
    return sorted(found, key=lambda n: n.start)


# --------------------------------------------------------------------------------------------------
# Matching


def _round(x: float, decimals: int, mode: str) -> Decimal | None:
    try:
        return Decimal(repr(x)).quantize(Decimal(1).scaleb(-decimals), rounding=mode)
    except InvalidOperation:  # more digits than the decimal context holds: fall back to the tolerance alone
        return None


def matches(written_value: float, decimals: int, fact_value: float, percent: bool = False) -> bool:
    """Whether a number written with `decimals` digits states `fact_value` within its rounding.

    |fact - written| <= half a unit of the last written digit (1.36 matches 1.3604, not 1.3654; 1.4 matches
    1.3604), or the fact rounded half-up or half-even equals what is written. A percent is compared with
    fact * 100 and with the fact itself (some facts are percentages already). The sign must match.
    """
    if not (math.isfinite(written_value) and math.isfinite(fact_value)):
        return False
    candidates = [fact_value * 100.0, fact_value] if percent else [fact_value]
    tol = 0.5 * 10.0 ** -decimals * (1 + 1e-9)
    for fact in candidates:
        # Strict sign: "-0.0" does not state a positive value even though it is within rounding of it.
        if math.copysign(1.0, written_value) < 0 and fact >= 0:
            continue
        if abs(fact - written_value) <= tol:
            return True
        target = _round(written_value, decimals, ROUND_HALF_EVEN)
        if target is not None and target in (_round(fact, decimals, ROUND_HALF_UP),
                                             _round(fact, decimals, ROUND_HALF_EVEN)):
            return True
    return False


# --------------------------------------------------------------------------------------------------
# Sentences


def _sentence_text(latex: str, span: tuple[int, int], number: _Number) -> str:
    s, e = span
    head = re.sub(r"\s+", " ", latex[s:number.start]).lstrip()
    tail = re.sub(r"\s+", " ", latex[number.end:e]).rstrip()
    written = one_line(number.written)
    if len(head) + len(written) + len(tail) > SENTENCE_CHARS:
        room = (SENTENCE_CHARS - len(written)) // 2
        head = head if len(head) <= room else "…" + head[-room:]
        tail = tail if len(tail) <= room else tail[:room] + "…"
    return head + written + tail


# --------------------------------------------------------------------------------------------------
# The check


_CITATION_BEFORE = [
    re.compile(r"et[\s~]*al\.?(?:\\\s)?[\s~,]*\(?\s*$"),          # Smith et al. 2020, Smith et al. (2020)
    re.compile(r"[A-Z][A-Za-z'’\-]+[\s~]*\(\s*$"),               # Smith (2020)
]
_IN_PARENS_AUTHOR = re.compile(r"\([^()]*[A-Z][A-Za-z'’\-]+[^()]*[\s~,]\s*$")  # (Smith, 2020) (Lee and Kim 2021
_CROSS_REF = re.compile(r"(?:Sections?|Sec\.|Figures?|Fig\.|Tables?|Tab\.|Appendix|App\.|Equations?|Eqs?\.|"
                        r"Algorithms?|Alg\.|Lemmas?|Theorems?|Chapters?|Definitions?|Propositions?|Corollary)"
                        r"(?:\\\s)?[\s~]*\(?$", re.IGNORECASE)


def _exemption(text: str, n: _Number, small_int_limit: int) -> str | None:
    before = " ".join(text[max(0, n.start - 80):n.start].split("\n"))
    if re.fullmatch(r"\d+(?:\.\d+)*", n.written) and _CROSS_REF.search(before):
        return "cross-reference"  # "Section 3.2", "Figure 12": hand-written references, not results
    if not n.plain_int:
        return None
    if abs(n.value) <= small_int_limit:
        return "small integer"
    if 1900 <= n.value <= 2100:
        after = text[n.end:n.end + 4]
        if any(p.search(before) for p in _CITATION_BEFORE) or (
                _IN_PARENS_AUTHOR.search(before) and re.match(r"\s*[);,]", after)):
            return "year in a citation"
    return None


# --------------------------------------------------------------------------------------------------
# What a number states: the words right around it


def _plain(latex: str) -> str:
    """LaTeX around a number as plain words: math shifts, braces, ties and thin spaces dropped."""
    latex = re.sub(r"\\(?:left|right|big|Big|mathrm|mathit|emph|text[a-z]*|[,;!\s])", " ", latex)
    return " ".join(re.sub(r"[{}~]", " ", latex.replace("$", "")).split())  # "$t$-interval" -> "t-interval"


# (what the number is, the words right before it, the kinds of fact it may then state); the first that fits wins.
_BEFORE = [
    ("standard error", re.compile(r"(?:\\pm|±|\bstandard errors?(?: of| is| was)?|\bs\.\s?e\.(?: of)?)\s*[=:]?\s*$",
                                  re.I), {Kind.STDERR}),
    ("p-value bound", re.compile(r"\bp\s*(?:<|≤|\\le(?:q)?|\\lt)\s*$"), {Kind.P_VALUE, Kind.P_THRESHOLD}),
    ("p-value", re.compile(r"(?:\bp\s*(?:=|≈|\\approx)|\bp-values?(?: of| is| was| were)?\s*[=:]?|"
                           r"\bHolm\b[\w\s'’-]{0,25})\s*$", re.I), {Kind.P_VALUE}),
    ("significance level", re.compile(r"(?:\\alpha|\balpha|\blevel|\bsignifican\w*\s+at(?:\s+the)?(?:\s+level)?|"
                                      r"\bconfidence(?:\s+level)?)(?:\s+of)?\s*=?\s*$", re.I), {Kind.LEVEL}),
    ("interval bound", re.compile(r"(?:\b[Ii]nterval|\bCI)(?:\s+(?:of|is|was|from|between))?\s*[=:]?\s*\[?\s*$|\[\s*$"),
     {Kind.INTERVAL}),
    # A setting: a hyperparameter's name or an identifier's "=" before it, or a formula's operator next to it.
    ("setting", re.compile(r"(?:\b(?:weights?|coefficients?|scales?|scaling|temperatures?|margins?|constants?|"
                           r"hyper-?parameters?|slopes?|offsets?|exponents?|thresholds?|mixing|clip\w*|"
                           r"learning\s+rates?|lr|(?:weight\s+)?decay|momentum|eps(?:ilon)?|"
                           r"(?![pn]\d)[A-Za-z]{1,5}\d\w*|"  # an optimizer's b2, beta1, a network's d64
                           r"set\s+to|fixed\s+(?:at|to))(?:\s+(?:of|is|was|to|at))?\s*[=:]?"
                           r"|(?P<ident>\\(?!Delta\b)[A-Za-z]+|\b(?![np]\s*=)[A-Za-z]\w*)\s*="
                           r"|\*|/|\\cdot|\^)\s*\(?\s*$", re.I), SETTING_KINDS),
    ("difference", re.compile(r"(?:\b(?P<word>differences?|improv\w*|gains?|increase[sd]?|decrease[sd]?|reduc\w*|"
                              r"drops?|changes?|by)|\\Delta)(?:\s+(?:of|is|was|were|by|than))?\s*[=:]?\s*"
                              r"(?:about|only|roughly|approximately|just|≈|\\approx)?\s*\+?\s*$", re.I),
     {Kind.DIFFERENCE, Kind.NORMALIZED}),
    ("count", re.compile(r"\bn\s*=\s*$"), {Kind.COUNT}),
]
_AFTER = [
    ("significance level", re.compile(r"^\s*(?:significance\s+level|level|(?:t-)?(?:confidence|interval)|CI)\b", re.I),
     {Kind.LEVEL}),
    ("count", re.compile(r"^\s*(?:[a-z]+\s+)?(?:seeds?|runs?|attempts?)\b", re.I), {Kind.COUNT}),  # integers only
    ("setting", re.compile(r"^\s*\)?\s*(?:\*|/|\^|\\cdot\b|\\(?:rho|beta|z|x|sigma|log|exp)\b)"), SETTING_KINDS),
]
_RESULT_NAME = re.compile(r"mean|mu|avg|average|score|reward|gain|return|accuracy|acc|loss|mmd|bpc|result|value|"
                          r"metric|solve|rate|difference|delta|diff", re.I)
_NEXT_BOUND = re.compile(r"^\s*(?:,|;|--|–|to|and)\s*$")  # the second bound of "[1.2, 1.3]" or "1.2--1.3"
_BEFORE_CHARS, _AFTER_CHARS = 60, 40


def _context(before: str, after: str, n: _Number, previous: str | None,
             metric_words: set[str]) -> tuple[str, frozenset[str]]:
    """What the words around a number say it is, and the kinds of fact it may match.

    `before` runs back to the previous number (or the sentence start), `after` on to the next one, so a cue
    belongs to the number it is next to. Without a cue a number is a "value": a mean, difference, normalised
    score, configuration value, constant or evaluator extra (a count too, if an integer) -- never a standard
    error, interval bound, p-value or level, which are only stated with the words that say so.
    """
    if previous == "interval bound" and _NEXT_BOUND.match(before):
        return "interval bound", frozenset({Kind.INTERVAL})
    for label, pattern, kinds in _AFTER:
        if pattern.match(after) and (label != "count" or n.plain_int):
            return label, frozenset(kinds)
    values = VALUE_KINDS if n.plain_int else VALUE_KINDS - {Kind.COUNT}
    for label, pattern, kinds in _BEFORE:
        m = pattern.search(before)
        # "reward gain of 1.36" names the metric reward_gain_at_kl: a value, not a difference.
        if m and (m.groupdict().get("word") or "").lower().removesuffix("s") not in metric_words:
            ident = (m.groupdict().get("ident") or "").lower().lstrip("\\")
            if ident and (ident in metric_words or _RESULT_NAME.fullmatch(ident)):
                return "value", values  # "mean = 0.73", "\mu = 0.73": a result, whatever the "=" looks like
            return label, frozenset(kinds)
    return "value", values


def _named(fact: Fact, sentence: str) -> bool:
    """Whether a configuration value's sentence names it: a word (3+ letters) of its key, singular or plural."""
    leaf = re.sub(r"\[\d+\]", "", fact.name.rsplit(".", 1)[-1]).lower()
    return any(w.removesuffix("s") in sentence for w in re.split(r"[^a-z]+", leaf) if len(w) >= 3)


# --------------------------------------------------------------------------------------------------
# Which run a number is about: the words of its sentence


BASELINE, BEST = "baseline", "best"
_SUBJECT = re.compile(
    r"(?P<baseline>\bbaselines?\b)"
    r"|\bruns?(?:\\_|_|[\s~])*(?P<run>\d+)(?:\s*(?:,|\(|\\_|_)?\s*attempt(?:\\_|_|[\s~])*(?P<attempt>\d+))?"
    r"|(?P<best>\bbest[\s-]+run\b|\bour\b|\bours\b|\bwe\b|\bidea\b|\bcandidates?\b|\bproposed\b|"
    r"\bthis\s+(?:loss|method|recipe|optimi[sz]er|agent|variant|change|idea|rule)\b)", re.I)
_CONTRAST = re.compile(r"\b(?:against|versus|vs\.?|compared\s+(?:to|with)|than|relative\s+to)\b", re.I)
_FOR_SUBJECT = re.compile(r"^\W{0,3}\s*(?:for|of|by|from)\s+(?:the\s+)?(?=\S)", re.I)
# A sentence that states a hypothesis or an expectation: the idea's own numbers may be restated in it.
_HYPOTHESIS = re.compile(r"\bhypothes\w*|\bexpect\w*|\bpredict\w*|\bconjectur\w*|\bwill\b|\bwould\b", re.I)


def _subject_of(m: re.Match) -> str:
    if m.group("baseline"):
        return BASELINE
    if m.group("run"):
        attempt = m.group("attempt")
        return f"run_{m.group('run')}" + (f"_attempt_{attempt}" if attempt and attempt != "1" else "")
    return BEST


def _subject(text: str, sentence_start: int, segment_start: int, n: _Number, after_end: int,
             previous: str | None) -> str | None:
    """The run a number is about: named right after it ("0.61 for the baseline"), named before it since the
    previous number, the other side after a contrast ("ours reaches 0.73 against DPO's 0.61"), or the last one
    its sentence named before it; None when the sentence names none (the best run or the baseline)."""
    after = text[n.end:after_end]
    lead = _FOR_SUBJECT.match(after)
    if lead:
        m = _SUBJECT.match(after, lead.end())
        if m:
            return _subject_of(m)
    segment = list(_SUBJECT.finditer(text, segment_start, n.start))
    if segment:
        return _subject_of(segment[-1])
    earlier = list(_SUBJECT.finditer(text, sentence_start, segment_start))
    last = previous or (_subject_of(earlier[-1]) if earlier else None)
    if last is not None and _CONTRAST.search(text, segment_start, n.start):
        return BASELINE if last != BASELINE else BEST
    return last


def _owners(subject: str | None, best: str | None, named: set[str]) -> tuple[set[str | None], set[str | None]]:
    """The runs whose facts a number about `subject` may state: (all kinds, comparison kinds only).

    `named` are the runs other than the baseline that its sentence names."""
    best_runs = {best} if best else set()
    if subject == BASELINE:  # a comparison with the baseline is that of the run the sentence names, or the best
        return {None, BASELINE}, {best if r == BEST else r for r in named} - {None} or best_runs
    if subject is None:
        return {None, BASELINE} | best_runs, set()
    return {None, best if subject == BEST else subject}, set()


def _ratio_matches(claim: _Number, fact: Fact, tolerance: float = 0.1) -> bool:
    """A ratio word states a logged ratio within 10% (or the rounding of its number, if wider)."""
    targets = [claim.value, 1 / claim.value] if getattr(claim, "inverse_too", False) else [claim.value]
    half_unit = 0.5 * 10.0 ** -claim.decimals
    return fact.value > 0 and any(abs(fact.value - t) <= max(tolerance * t, half_unit) for t in targets)


@dataclass
class _Reading:
    """What the words around one number (or ratio word) say: what it is, of which run, in what sentence."""

    number: _Number
    label: str                   # the context: "value", "p-value", "setting", "ratio", ...
    kinds: frozenset[str]        # the kinds of fact it may state
    sentence: str                # its sentence, in plain lower-case words
    owners: set[str | None]      # the runs whose facts of any kind it may state
    compared: set[str | None]    # the runs whose comparison with the baseline it may state
    hypothesis: bool             # its sentence states a hypothesis before it

    def fits(self, f: Fact) -> bool:
        """Whether the fact verifies this number."""
        n = self.number
        if not (f.run in self.owners or (f.run in self.compared and f.kind in COMPARISON_KINDS)):
            return False
        restated = f.kind == Kind.IDEA and self.hypothesis and self.label == "value"
        if not (restated or f.kind in EVERYWHERE or f.kind in self.kinds):
            return False
        if f.kind in (Kind.CONFIG, Kind.RATIO) and not _named(f, self.sentence):
            return False
        if self.label == "ratio":
            return f.kind == Kind.RATIO and _ratio_matches(n, f)
        if self.label == "p-value bound" and f.kind == Kind.P_VALUE:
            return f.value < n.value
        return matches(n.value, n.decimals, f.value, n.percent)


# --------------------------------------------------------------------------------------------------
# The check


def check(sections: dict[str, str], facts: list[Fact], small_int_limit: int = 10, metric: str = "",
          best: str | None = None, quotes: tuple[str, ...] = ()) -> Report:
    """Match every number of every section against the logged facts of its run, of the kind its words state.

    Exempt: plain integers with |v| <= small_int_limit (counts, low risk), years 1900-2100 in a prose citation
    (after "et al.", or in parentheses with an author name), numbers of hand-written cross-references
    ("Section 3"), and numbers inside a verbatim copy of one of `quotes` (the idea's own text, as the template
    writer pastes it). Every other number must match a fact within its rounding (see matches()) whose kind fits
    its context (see _context(); facts of kind "template" or "any" fit every context), of the run its sentence
    is about (see _subject(): the best run `best`, the baseline, a named run; both the best run and the
    baseline when the sentence names neither; facts without a run fit every sentence). A configuration value
    or a ratio must be named in its sentence. A bound ("p < 0.01") is verified by a logged p-value below it, of
    that run. A ratio word ("doubles", "3 times higher") is verified by a logged ratio within 10%. The code's
    constants and the idea's numbers state only settings ("weight 0.3", "1.45*z"), the idea's also in a
    hypothesis. `metric` is the metric's name, whose words are not cues. When `best` is None, the one run other
    than the baseline that facts name is the best. The first matching fact in list order is recorded.
    """
    if best is None:
        runs = {f.run for f in facts} - {None, BASELINE}
        best = runs.pop() if len(runs) == 1 else None
    metric_words = set(re.split(r"[^a-z]+", metric.lower())) - {""}
    quoted = [re.compile(r"\s+".join(map(re.escape, q.split()))) for q in quotes if len(q.strip()) >= 12]
    claims: list[Claim] = []
    for section, latex in sections.items():
        layout = layout_of(latex)
        masked = _mask_nonprose(layout.text)
        found = _items(latex)
        in_quotes = [m.span() for q in quoted for m in q.finditer(latex)]
        previous, prev_end, prev_subject, prev_span = None, 0, None, None
        for i, n in enumerate(found):
            span = sentence_span(layout, n.start, n.end)
            if span != prev_span:
                prev_subject = None
            start = max(prev_end, span[0], n.start - _BEFORE_CHARS)
            stop = min(found[i + 1].start if i + 1 < len(found) else len(latex), span[1], n.end + _AFTER_CHARS)
            ratio = isinstance(n, _Ratio)
            if ratio:
                label, kinds = "ratio", frozenset({Kind.RATIO})
            else:
                label, kinds = _context(_plain(masked[start:n.start]), _plain(masked[n.end:stop]), n,
                                        previous if start == prev_end else None, metric_words)
            sentence = _plain(masked[span[0]:span[1]].replace("\\", " ").replace("_", " ")).lower()
            subject = _subject(masked, span[0], max(prev_end, span[0]), n, stop, prev_subject)
            named = {_subject_of(m) for m in _SUBJECT.finditer(masked, span[0], span[1])} - {BASELINE}
            owners, compared = _owners(subject, best, named)
            hypothesis = _HYPOTHESIS.search(masked, span[0], n.start) is not None
            exempt = None if ratio else _exemption(layout.text, n, small_int_limit)
            if exempt is None and any(a <= n.start and n.end <= b for a, b in in_quotes):
                exempt = "the idea's own text"
            if exempt is None and ratio and hypothesis:
                exempt = "a hypothesis"

            reading = _Reading(n, label, kinds, sentence, owners, compared, hypothesis)
            fact = next((f for f in facts if reading.fits(f)), None) if exempt is None else None
            claims.append(Claim(section=section, written=n.written, value=n.value, decimals=n.decimals,
                                sentence=_sentence_text(latex, span, n), fact=fact.name if fact else None,
                                exempt=exempt, kind=fact.kind if fact else None, context=label))
            previous, prev_end, prev_span = label, n.end, span
            prev_subject = subject if subject is not None else prev_subject
    return Report(claims)


def strip_unverified(latex: str, claims: list[Claim]) -> tuple[str, list[str]]:
    """Remove every sentence of this section's text that contains one of the given unverified numbers.

    A sentence ends at ". ", "? " or "! " (not after abbreviations such as "et al."), at a paragraph break,
    or where a LaTeX environment, a section heading, a label or an item begins or ends; it never leaves a
    brace group or inline math unbalanced. Claims are located by their written number and sentence, so pass
    the claims check() found for this very text. Returns the new text and the removed sentences (one line each).
    """
    wanted = {(c.written, c.sentence) for c in claims if c.fact is None and c.exempt is None}
    if not wanted:
        return latex, []
    layout = layout_of(latex)
    spans = []
    for n in _items(latex):
        span = sentence_span(layout, n.start, n.end)
        if (n.written, _sentence_text(latex, span, n)) in wanted:
            spans.append(span)
    return strike_spans(latex, spans)
