"""The verdict check: the prose must state the verdict the results table states, and no other.

    stances(sentence)          what a sentence claims about the result: "better", "worse", "no significant
                               difference", or denies: "not better", "not worse"
    check(sections, verdict)   the sentences whose claim contradicts the logged verdict -> [Contradiction]
    feedback(found, section)   one message for the model, like claims.Report.feedback
    strike(latex, verdict)     last resort: remove the contradicting sentences

The idea's verdict is the Holm-adjusted verdict of its best run (papers.writers.best_verdict), or None when no
run produced a result. Only the sections that report the outcome are read (CHECKED_SECTIONS); a sentence that
cites other work, or states a hypothesis or a condition ("whether", "if", "when", "we expect"), is not a claim
about this idea's result. These are a few regexes, not a parser: they err on the side of letting a sentence
through, and a negated phrase ("not significantly better") denies a verdict, it never claims it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from papers.claims import SENTENCE_CHARS, sentence_spans, strike_spans

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no significant difference"
CHECKED_SECTIONS = ("abstract", "introduction", "results", "conclusion")

_W = r"(?:[\w'-]+\s+)"  # one word and the space after it
_UP = r"(?:better|improv\w*|outperform\w*|beats?|surpass\w*|superior)"
_DOWN = r"(?:worse|degrad\w*|underperform\w*|inferior|hurts?|harm\w*)"
_NOT = r"(?:\bnot|\bno|n't|\bnever|\bneither|\bnor|\bfail(?:s|ed)?\s+to|\bwithout)\s+"
# Denials first: their words are then blanked, so "not significantly better" never reads as "better".
_DENIALS = [(re.compile(_NOT + _W + r"{0,3}?" + _UP + r"\b", re.I), "not better"),
            (re.compile(_NOT + _W + r"{0,3}?" + _DOWN + r"\b", re.I), "not worse")]
_NO_DIFFERENCE = re.compile(
    r"\bno\s+(?:statistically\s+)?significant\b|\bnot\s+" + _W + r"?(?:statistically\s+)?significant|"
    r"\bnot\s+differ|\bindistinguishable\b|\bn\.\s?s\.|\bon\s+par\s+with\b|\bcomparable\s+to\b|"
    r"\bwithin\s+" + _W + r"{0,4}?(?:the\s+)?(?:noise|seed-to-seed|variation|variance|error)", re.I)
# (pattern, verdict it claims, strong): a weak claim ("better than") is read as hedged when the same sentence
# also says the difference is not significant ("higher than the baseline's, but not significantly").
_CLAIMS = [
    (re.compile(r"\bsignificant(?:ly)?\s+" + _W + r"{0,2}?" + _UP + r"|\b" + _UP + r"\s+" + _W + r"{0,6}?"
                r"(?:statistically\s+)?significant", re.I), BETTER, True),
    (re.compile(r"\b(?:outperform(?:s|ed)?|surpass(?:es|ed)?|beats?|superior\s+to|better\s+than)\b", re.I),
     BETTER, False),
    (re.compile(r"\bsignificant(?:ly)?\s+" + _W + r"{0,2}?" + _DOWN + r"|\b" + _DOWN + r"\s+" + _W + r"{0,6}?"
                r"(?:statistically\s+)?significant", re.I), WORSE, True),
    (re.compile(r"\b(?:underperform(?:s|ed)?|inferior\s+to|worse\s+than)\b", re.I), WORSE, False),
]
_NOT_A_CLAIM = re.compile(r"\bhypothes\w*|\bwhether\b|\bif\b|\bwhen\b(?!\s+compared)|\bunless\b|\bexpect\w*|"
                          r"\bwould\b|\bcould\b|\bmight\b|\bmay\b|\baims?\b|\bhope\w*|\bpredict\w*", re.I)
# A sentence with a citation is about other work, unless it names this one.
_OURS = re.compile(r"\b(?:we|our|us|idea|baseline|best run|this (?:work|paper|study|loss|method))\b", re.I)
_TRIGGER = re.compile(_UP + "|" + _DOWN + r"|significan|differ|indistinguishable|n\.\s?s\.|\bon par\b|comparable|"
                      r"\bwithin\b", re.I)
# What each verdict rules out.
_CONTRARY = {BETTER: {WORSE, NO_DIFFERENCE, "not better"}, WORSE: {BETTER, NO_DIFFERENCE, "not worse"},
             NO_DIFFERENCE: {BETTER, WORSE}, None: {BETTER, WORSE}}


@dataclass
class Contradiction:
    """A sentence whose claim about the result contradicts the logged verdict."""

    section: str
    sentence: str      # on one line, trimmed to about SENTENCE_CHARS
    stance: str        # what it claims: "better", "worse", "no significant difference", "not better", ...
    verdict: str | None  # the logged verdict (None: no run produced a result)


def stances(sentence: str) -> set[str]:
    """What one sentence claims about the idea's result (empty for hypotheses, conditions and cited work)."""
    if _NOT_A_CLAIM.search(sentence) or ("\\cite" in sentence and not _OURS.search(sentence)):
        return set()
    text = " ".join(re.sub(r"[{}~$]|\\(?:emph|textbf|textit)\b", " ", sentence).split())
    found: set[str] = set()
    for pattern, stance in _DENIALS:
        if pattern.search(text):
            found.add(stance)
            text = pattern.sub(" ", text)
    if _NO_DIFFERENCE.search(text):
        found.add(NO_DIFFERENCE)
    hedged = bool(found)
    found |= {verdict for pattern, verdict, strong in _CLAIMS if (strong or not hedged) and pattern.search(text)}
    return found


def _contradicting(latex: str, verdict: str | None) -> list[tuple[tuple[int, int], str, str]]:
    """(span, one-line sentence, stance) of each sentence of the text that contradicts the verdict."""
    out = []
    for span in sentence_spans(latex, [m.span() for m in _TRIGGER.finditer(latex)]):
        sentence = " ".join(latex[span[0]:span[1]].split())
        contrary = sorted(stances(sentence) & _CONTRARY[verdict])
        if contrary:
            out.append((span, sentence, contrary[0]))
    return out


def check(sections: dict[str, str], verdict: str | None) -> list[Contradiction]:
    """The sentences of the checked sections whose claim contradicts the logged verdict."""
    return [Contradiction(name, sentence[:SENTENCE_CHARS], stance, verdict)
            for name, latex in sections.items() if name in CHECKED_SECTIONS
            for _, sentence, stance in _contradicting(latex, verdict)]


def describe(verdict: str | None) -> str:
    """The verdict in words, for the model."""
    return {BETTER: "significantly better than the baseline", WORSE: "significantly worse than the baseline",
            NO_DIFFERENCE: "no significant difference from the baseline"}.get(
        verdict or "", "no result: no run of this idea succeeded")


def feedback(found: list[Contradiction], section: str) -> str:
    """One message for the model: the sentences of this section that contradict the logged verdict ("" if none)."""
    bad = [c for c in found if c.section == section]
    if not bad:
        return ""
    lines = [f'In the section "{section}", these sentences contradict the logged verdict of this idea, which is: '
             f"{describe(bad[0].verdict)} (the best run against the baseline, after Holm's adjustment for all "
             "comparisons of the session, as in Table~\\ref{tab:results}):"]
    lines += [f'- "{c.sentence}" (reads as: {c.stance})' for c in bad]
    lines.append("State this verdict and no other. The unadjusted p-value may be given as a number, but not as "
                 "a verdict of its own. Rewrite or remove these sentences, and keep the rest of the section "
                 "unchanged.")
    return "\n".join(lines)


def strike(latex: str, verdict: str | None) -> tuple[str, list[str]]:
    """Remove the sentences that contradict the verdict; returns the new text and the removed sentences."""
    return strike_spans(latex, [span for span, _, _ in _contradicting(latex, verdict)])
