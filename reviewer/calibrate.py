"""Calibrating the reviewer against papers with known decisions: labels, metrics and the Overall threshold.

True means accept throughout. Ratios that are undefined on the data (a recall with no positive papers,
say) are NaN rather than an error, because small calibration sets often lack one of the classes.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

_LABELS = {"accept": True, "accepted": True, "1": True, "true": True,
           "reject": False, "rejected": False, "0": False, "false": False}


def _label(text: str) -> bool | None:
    """True/False for an accept/reject label, None for anything else. OpenReview's decisions count as The AI
    Scientist's calibration counts them: "Accept (Oral)", "Accept (Spotlight)" and "Accept (Poster)" accept."""
    word = text.strip().lower()
    if word in _LABELS:
        return _LABELS[word]
    if word.startswith("accept (") and word.endswith(")"):
        return True
    return None


@dataclass(frozen=True)
class Metrics:
    """How well predicted accept/reject decisions match the true ones."""

    n: int
    accuracy: float
    balanced_accuracy: float  # mean of the true positive and true negative rates
    f1: float  # of the accept class
    fpr: float  # rejected papers predicted accept, over rejected papers
    fnr: float  # accepted papers predicted reject, over accepted papers
    tp: int
    fp: int
    tn: int
    fn: int


def _ratio(numerator: int, denominator: int) -> float:
    """numerator / denominator, or NaN when the denominator is zero."""
    return numerator / denominator if denominator else math.nan


def metrics(truth: list[bool], predicted: list[bool]) -> Metrics:
    """Accuracy, balanced accuracy, F1, FPR and FNR of `predicted` against `truth` (True = accept).

    Undefined ratios are NaN; balanced accuracy is NaN unless both classes occur in `truth`.
    """
    if len(truth) != len(predicted):
        raise ValueError(f"truth has {len(truth)} labels but predicted has {len(predicted)}")
    pairs = [(bool(t), bool(p)) for t, p in zip(truth, predicted, strict=True)]
    tp = sum(t and p for t, p in pairs)
    fp = sum(not t and p for t, p in pairs)
    tn = sum(not t and not p for t, p in pairs)
    fn = sum(t and not p for t, p in pairs)
    tpr, tnr = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    return Metrics(
        n=len(pairs),
        accuracy=_ratio(tp + tn, len(pairs)),
        balanced_accuracy=(tpr + tnr) / 2,  # NaN propagates when a class is absent
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        fpr=_ratio(fp, fp + tn),
        fnr=_ratio(fn, fn + tp),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
    )


def load_labels(path: Path) -> list[tuple[Path, bool]]:
    """The (paper, accepted) pairs in a CSV with a header holding the columns `paper` and `label`.

    Paper paths (PDFs, or papers as text: .txt, .md, .mmd) are relative to the CSV's folder unless absolute; labels
    are accept/reject, 1/0, true/false or OpenReview's "Accept (Poster|Spotlight|Oral)", in any case. Other
    columns are ignored. A bad row raises ValueError with one line naming its row (the file's line number,
    header = 1); the caller adds the file name.
    """
    path = Path(path)
    # utf-8-sig: spreadsheets often save a byte order mark, which would otherwise stick to the first column name.
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
        if "paper" not in columns or "label" not in columns:
            found = ", ".join(repr(name) for name in reader.fieldnames or []) or "none"
            raise ValueError(f"the header must name the columns 'paper' and 'label', found {found}")
        labels: list[tuple[Path, bool]] = []
        for row in reader:
            # line_num is the file line the row ended on, the number people see in an editor (header = line 1).
            where = f"row {reader.line_num}"
            paper = (row.get(columns["paper"]) or "").strip()
            label = (row.get(columns["label"]) or "").strip()
            if not paper:
                raise ValueError(f"{where}: the paper path is empty")
            accepted = _label(label)
            if accepted is None:
                raise ValueError(f"{where}: label {label!r} is not accept/reject, 1/0, true/false or "
                                 "an OpenReview decision such as 'Accept (Poster)'")
            paper_path = Path(paper) if Path(paper).is_absolute() else path.parent / paper
            labels.append((paper_path, accepted))
    if not labels:
        raise ValueError("no labelled papers after the header")
    return labels


def best_threshold(truth: list[bool], overall: list[float]) -> tuple[float, Metrics]:
    """The Overall threshold t (accept when overall >= t) with the best balanced accuracy, and its metrics.

    Candidates are the observed Overall values; ties go to the lower threshold. When balanced accuracy is
    undefined for every candidate (one class only), the lowest value is returned.
    """
    if len(truth) != len(overall):
        raise ValueError(f"truth has {len(truth)} labels but overall has {len(overall)} scores")
    if not overall:
        raise ValueError("best_threshold needs at least one paper")
    best: tuple[float, Metrics] | None = None
    best_score = -math.inf
    for threshold in sorted(set(overall)):
        result = metrics(truth, [score >= threshold for score in overall])
        # An undefined balanced accuracy ranks below every defined one; strictly greater keeps the lower on ties.
        score = -math.inf if math.isnan(result.balanced_accuracy) else result.balanced_accuracy
        if best is None or score > best_score:
            best, best_score = (threshold, result), score
    assert best is not None  # overall is not empty
    return best


# Published, for comparison with one's own calibration (The AI Scientist, its reviewer with GPT-4o). These are the
# figures of the rule Overall >= 6: recomputed from upstream's stored reviews (SakanaAI/AI-Scientist at commit
# 9dffdc445c2596ffa871b5588377e9f12558febc, review_iclr_bench/llm_reviews/gpt-4o-2024-05-13_temp_0_1_fewshot_1_
# reflect_5_ensemble_5_pages_all.csv against ratings_subset.tsv) they match exactly, while the Decision field of the
# same reviews gives balanced accuracy 0.60, FPR 0.04, FNR 0.76.
AI_SCIENTIST_REPORTED = ("The AI Scientist's reviewer (GPT-4o) on 500 ICLR papers, Overall >= 6: balanced accuracy "
                         "0.65 (humans 0.66), FPR 0.31, FNR 0.39; its Decision field: "
                         "balanced accuracy 0.60, FPR 0.04, FNR 0.76.")


def calibrate(labels: list[tuple[Path, bool]], results: list[dict], threshold: float) -> dict[str, Metrics]:
    """The reviews' agreement with the labels, by three rules: the Decision, Overall >= threshold, and
    Overall >= the best threshold in-sample. Papers that could not be reviewed are left out ({} if none was)."""
    pairs = [(truth, r["review"]) for (_, truth), r in zip(labels, results, strict=True) if r["status"] == "ok"]
    if not pairs:
        return {}
    truth = [t for t, _ in pairs]
    overall = [float(rev["Overall"]) for _, rev in pairs]
    best_t, best = best_threshold(truth, overall)
    return {"Decision": metrics(truth, [rev["Decision"] == "Accept" for _, rev in pairs]),
            f"Overall >= {threshold:g}": metrics(truth, [o >= threshold for o in overall]),
            f"Overall >= {best_t:g} (best, in-sample)": best}


def calibration_json(rows: dict[str, Metrics]) -> dict:
    """The calibration as JSON: undefined ratios (NaN, which JSON has not) are written as null."""
    return {name: {k: (None if isinstance(v, float) and v != v else v) for k, v in vars(m).items()}
            for name, m in rows.items()}
