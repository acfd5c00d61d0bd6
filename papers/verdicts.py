"""The verdict check: the prose must state the verdict the results table states, and no other.

    stances(sentence)          what a sentence claims about the result: "better", "worse", "no significant
                               difference", "significant", or denies: "not better", "not worse"
    check(sections, verdict)   the sentences whose claim contradicts the logged verdict -> [Contradiction]
    feedback(found, section)   one message for the model, like claims.Report.feedback
    strike(latex, verdict)     last resort: remove the contradicting sentences

The idea's verdict is the Holm-adjusted verdict of its best run (papers.writers.best_verdict), or None when no
run produced a result. Every section is read, with the usual words (outperforms, improves, higher, lower, exceeds,
better, best, surpasses, beats, significant). A sentence that cites other work, or that states a hypothesis, a
condition or a definition before its claim ("we hypothesise that", "we test whether", "if", "we call a run
better when"), is not a claim about this idea's result. The hedge rule is narrow: only a real negation ("does not
outperform", "no significant difference") hedges; a concession ("even if only by a small margin", "although")
does not, and a claim made before a condition ("outperforms DPO when ...") is still a claim. "Higher" and
"lower" are read by the metric's direction, and only in a sentence that names the metric (or a score).
These are a few regexes, not a parser; a negated phrase ("not significantly better") denies a verdict, it never
claims it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from papers.claims import SENTENCE_CHARS
from papers.sentences import sentence_spans, strike_spans

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no significant difference"
SIGNIFICANT = "significant"  # a significant difference, in no direction the sentence says

_W = r"(?:[\w'-]+\s+)"  # one word and the space after it
# "best" claims a rank, but "the best run" (and its kin) only names a run.
_BEST = (r"best(?![\s-]+(?:run|attempt|version|candidate|seed|of|known|practice|configuration|setting|genome|"
         r"performing\s+run)s?\b)")
_UP_WORDS = r"better|improv\w*|outperform\w*|beats?|surpass\w*|superior|" + _BEST
_DOWN_WORDS = r"worse|degrad\w*|underperform\w*|inferior|hurts?|harm\w*"
_HIGHER, _LOWER = r"higher|exceed\w*", r"lower"
_NOT = r"(?:\bnot|\bno|n't|\bnever|\bneither|\bnor|\bfail(?:s|ed)?\s+to|\bwithout)\s+"
_NO_DIFFERENCE = re.compile(
    r"\bno\s+(?:statistically\s+)?significant\w*|\bnot\s+" + _W + r"?(?:statistically\s+)?significant\w*|"
    r"\b(?:did\s+)?not\s+differ\w*(?:\s+(?:statistically\s+)?significantly)?|\bindistinguishable\b|\bn\.\s?s\.|"
    r"\bon\s+par\s+with\b|\bcomparable\s+to\b|"
    r"\bwithin\s+" + _W + r"{0,4}?(?:the\s+)?(?:noise|seed-to-seed|variation|variance|error)", re.I)
# A concession keeps the claim it follows ("significantly outperforms DPO, even if only by a small margin").
_CONCESSION = re.compile(r"\beven\s+(?:if|when|though)\b|\bif\s+only\b|\balthough\b|\bthough\b|\balbeit\b", re.I)
# What comes before a claim and makes it no claim: a hypothesis, a condition, a question, a definition.
_NOT_A_CLAIM = re.compile(r"\bhypothes\w*|\bwhether\b|\bif\b|\bwhen\b(?!\s+compared)|\bunless\b|\bexpect\w*|"
                          r"\bwould\b|\bcould\b|\bmight\b|\bmay\b|\baims?\b|\bhope\w*|\bpredict\w*|\bcall(?:s|ed)?\b|"
                          r"\bdefin\w*|\bdeem\w*|\bconsider\w*|\bregard\w*|\bjudg\w*", re.I)
_DEFINITION = re.compile(r"\b(?:higher|lower)\s+is\s+better\b", re.I)
_SIGNIFICANT = re.compile(r"\b(?:statistically\s+)?significant(?:ly)?\b", re.I)
# A sentence with a citation is about other work, unless it names this one.
_OURS = re.compile(r"\b(?:we|our|us|idea|baseline|best run|this (?:work|paper|study|loss|method))\b", re.I)
_TRIGGER = re.compile(_UP_WORDS + "|" + _DOWN_WORDS + "|" + _HIGHER + "|" + _LOWER + r"|significan|differ|"
                      r"indistinguishable|n\.\s?s\.|\bon par\b|comparable|\bwithin\b", re.I)
_SCORE = re.compile(r"\b(?:score|performance|metric|results?)\b", re.I)
# What each verdict rules out.
_CONTRARY = {BETTER: {WORSE, NO_DIFFERENCE, "not better"}, WORSE: {BETTER, NO_DIFFERENCE, "not worse"},
             NO_DIFFERENCE: {BETTER, WORSE, SIGNIFICANT}, None: {BETTER, WORSE, SIGNIFICANT}}


@cache
def _patterns(direction: str, compares: bool) -> tuple[list, list]:
    """(denials, claims) for a metric's direction; `compares`: "higher"/"lower" speak of the metric here."""
    up, down = _UP_WORDS, _DOWN_WORDS
    if compares:
        higher, lower = (_HIGHER, _LOWER) if direction == "max" else (_LOWER, _HIGHER)
        up, down = f"{up}|{higher}", f"{down}|{lower}"
    up, down = f"(?:{up})", f"(?:{down})"
    # Denials first: their words are then blanked, so "not significantly better" never reads as "better".
    denials = [(re.compile(_NOT + _W + r"{0,3}?" + up + r"\b", re.I), "not better"),
               (re.compile(_NOT + _W + r"{0,3}?" + down + r"\b", re.I), "not worse")]
    # (pattern, verdict it claims, strong): a weak claim ("better than") is read as hedged when the same sentence
    # also says the difference is not significant ("higher than the baseline's, but not significantly").
    claims = [
        (re.compile(r"\bsignificant(?:ly)?\s+" + _W + r"{0,2}?" + up + r"|\b" + up + r"\s+" + _W + r"{0,6}?"
                    r"(?:statistically\s+)?significant", re.I), BETTER, True),
        (re.compile(r"\b" + up + r"\b", re.I), BETTER, False),
        (re.compile(r"\bsignificant(?:ly)?\s+" + _W + r"{0,2}?" + down + r"|\b" + down + r"\s+" + _W + r"{0,6}?"
                    r"(?:statistically\s+)?significant", re.I), WORSE, True),
        (re.compile(r"\b" + down + r"\b", re.I), WORSE, False),
    ]
    return denials, claims


@dataclass
class Contradiction:
    """A sentence whose claim about the result contradicts the logged verdict."""

    section: str
    sentence: str      # on one line, trimmed to about SENTENCE_CHARS
    stance: str        # what it claims: "better", "worse", "no significant difference", "not better", ...
    verdict: str | None  # the logged verdict (None: no run produced a result)


def stances(sentence: str, direction: str = "max", metric: str = "") -> set[str]:
    """What one sentence claims about the idea's result (empty for hypotheses, conditions and cited work).

    `direction` is the metric's ("max": higher is better); "higher" and "lower" count only in a sentence that
    names the metric (a word of `metric`, or "score", "performance", "result"), or always when `metric` is "".
    """
    if "\\cite" in sentence and not _OURS.search(sentence):
        return set()
    text = " ".join(re.sub(r"[{}~$]|\\(?:emph|textbf|textit)\b", " ", sentence).split())
    text = _DEFINITION.sub(" ", _CONCESSION.sub(" ", text))
    words = [w for w in re.split(r"[^a-z]+", metric.lower()) if len(w) >= 3]
    compares = not words or bool(_SCORE.search(text)) or any(re.search(rf"\b{w}", text, re.I) for w in words)
    denials, claims = _patterns(direction, compares)
    first_claim = min((m.start() for m in (p.search(text) for p, _, _ in claims) if m), default=None)
    first_significant = _SIGNIFICANT.search(text)
    first = min((k for k in (first_claim, first_significant.start() if first_significant else None)
                 if k is not None), default=None)
    condition = _NOT_A_CLAIM.search(text)
    if condition and (first is None or condition.start() < first):
        return set()
    found: set[str] = set()
    for pattern, stance in denials:
        if pattern.search(text):
            found.add(stance)
            text = pattern.sub(" ", text)
    if _NO_DIFFERENCE.search(text):
        found.add(NO_DIFFERENCE)
        text = _NO_DIFFERENCE.sub(" ", text)
    hedged = bool(found)
    found |= {verdict for pattern, verdict, strong in claims if (strong or not hedged) and pattern.search(text)}
    # "The difference is significant" claims a verdict too, unless a condition follows ("significant if p < 0.05").
    if not found and _SIGNIFICANT.search(text) and not condition:
        found.add(SIGNIFICANT)
    return found


def _contradicting(latex: str, verdict: str | None, direction: str = "max",
                   metric: str = "") -> list[tuple[tuple[int, int], str, str]]:
    """(span, one-line sentence, stance) of each sentence of the text that contradicts the verdict."""
    out = []
    for span in sentence_spans(latex, [m.span() for m in _TRIGGER.finditer(latex)]):
        sentence = " ".join(latex[span[0]:span[1]].split())
        contrary = sorted(stances(sentence, direction, metric) & _CONTRARY[verdict])
        if contrary:
            out.append((span, sentence, contrary[0]))
    return out


def check(sections: dict[str, str], verdict: str | None, direction: str = "max",
          metric: str = "") -> list[Contradiction]:
    """The sentences of every section whose claim contradicts the logged verdict."""
    return [Contradiction(name, sentence[:SENTENCE_CHARS], stance, verdict)
            for name, latex in sections.items()
            for _, sentence, stance in _contradicting(latex, verdict, direction, metric)]


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


def strike(latex: str, verdict: str | None, direction: str = "max", metric: str = "") -> tuple[str, list[str]]:
    """Remove the sentences that contradict the verdict; returns the new text and the removed sentences."""
    return strike_spans(latex, [span for span, _, _ in _contradicting(latex, verdict, direction, metric)])
