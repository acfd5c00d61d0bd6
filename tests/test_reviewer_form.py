"""The review form: parsing reviews, aggregating them, and the calibration metrics, labels and threshold."""

import json
import math
from pathlib import Path

import pytest

from base.formats import FormatError
from reviewer.calibrate import Metrics, best_threshold, load_labels, metrics
from reviewer.form import FIELDS, FORM_TEXT, SCORES, Review, aggregate, parse_review

REVIEW = {
    "Summary": "The paper adds a margin to DPO.",
    "Strengths": ["Simple idea", "Clear ablation"],
    "Weaknesses": ["One dataset"],
    "Originality": 2,
    "Quality": 3,
    "Clarity": 3,
    "Significance": 2,
    "Questions": ["How is the margin chosen?"],
    "Limitations": ["Small models only"],
    "Ethical Concerns": False,
    "Soundness": 3,
    "Presentation": 3,
    "Contribution": 2,
    "Overall": 5,
    "Confidence": 4,
    "Decision": "Reject",
}


def answer(review: dict) -> str:
    """A model's answer in the requested format."""
    return f"THOUGHT:\nThe idea is fine but thin.\n\nREVIEW JSON:\n```json\n{json.dumps(review, indent=2)}\n```\n"


def format_error(text: str) -> str:
    """The message of the FormatError parse_review raises, checked to be one line."""
    with pytest.raises(FormatError) as info:
        parse_review(text)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message and message
    return message


def review(**scores) -> Review:
    """A valid review with some scores replaced, e.g. review(Overall=7)."""
    return Review.model_validate({**REVIEW, **scores})


# --- the form ------------------------------------------------------------------------------------------------------


def test_form_text_names_every_field_and_the_answer_format():
    for field in FIELDS:
        assert f'"{field}"' in FORM_TEXT
    assert "THOUGHT:" in FORM_TEXT and "REVIEW JSON:" in FORM_TEXT and "```json" in FORM_TEXT
    assert "award quality" in FORM_TEXT and "absolutely certain" in FORM_TEXT
    assert set(SCORES) <= set(FIELDS)


def test_parse_review_reads_a_good_answer_and_round_trips_the_key_names():
    parsed = parse_review(answer(REVIEW))
    assert parsed.overall == 5 and parsed.score("Overall") == 5
    assert parsed.ethical_concerns is False
    assert parsed.strengths == ["Simple idea", "Clear ablation"]
    assert parsed.to_json() == REVIEW
    assert list(parsed.to_json()) == list(FIELDS)


def test_parse_review_accepts_a_review_wrapper():
    assert parse_review(answer({"review": REVIEW})).to_json() == REVIEW


def test_parse_review_coerces_harmless_variations():
    variant = {
        **REVIEW,
        "Originality": "3",
        "Quality": 3.0,
        "Clarity": "3/4",
        "Overall": "7/10",
        "Confidence": "4 (high)",
        "Strengths": "Simple idea",
        "Questions": None,
        "Ethical Concerns": "no",
    }
    variant["ethical_concerns"] = variant.pop("Ethical Concerns")  # a model's own spelling of the key
    parsed = parse_review(answer(variant))
    assert (parsed.originality, parsed.quality, parsed.clarity, parsed.overall, parsed.confidence) == (3, 3, 3, 7, 4)
    assert parsed.strengths == ["Simple idea"]
    assert parsed.questions == []
    assert parsed.ethical_concerns is False


@pytest.mark.parametrize("given", ["accept", "Accept.", " ACCEPT ", "**Accept**"])
def test_decision_is_normalised(given):
    assert parse_review(answer({**REVIEW, "Decision": given})).decision == "Accept"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("Overall", 11, "'Overall' must be an integer from 1 to 10"),
        ("Originality", 0, "'Originality' must be an integer from 1 to 4"),
        ("Confidence", "3.5", "'Confidence' must be an integer from 1 to 5"),
        ("Clarity", "3/10", "'Clarity' must be an integer from 1 to 4"),  # another scale, not a 3
        ("Soundness", True, "'Soundness' must be an integer from 1 to 4"),
        ("Decision", "Weak Accept", "'Decision' must be exactly \"Accept\" or \"Reject\""),
        ("Ethical Concerns", "maybe", "'Ethical Concerns' must be true or false"),
        ("Summary", 3, "'Summary' must be a string"),
        ("Weaknesses", [1, 2], "'Weaknesses' must be a list of strings"),
    ],
)
def test_bad_fields_raise_a_one_line_error_naming_the_field(field, value, expected):
    message = format_error(answer({**REVIEW, field: value}))
    assert expected in message
    assert "Ethical Concerns, Soundness" in message  # the hint lists the keys to use


def test_missing_fields_are_named_with_their_range():
    partial = {k: v for k, v in REVIEW.items() if k not in ("Overall", "Decision")}
    message = format_error(answer(partial))
    assert "missing 'Overall' (an integer from 1 to 10), 'Decision'" in message


def test_several_problems_are_reported_together():
    message = format_error(answer({**REVIEW, "Overall": 0, "Quality": 9}))
    assert "'Overall'" in message and "'Quality'" in message


def test_an_answer_without_json_is_a_format_error():
    assert "no JSON object" in format_error("THOUGHT: I liked it.")


# --- aggregation ---------------------------------------------------------------------------------------------------


def test_aggregate_rounds_the_mean_half_up():
    result = aggregate([review(Overall=4, Soundness=2), review(Overall=5, Soundness=3), review(Overall=7, Soundness=3)])
    assert result["Overall_mean"] == pytest.approx(16 / 3)
    assert result["Overall"] == 5
    assert result["Soundness"] == 3 and result["Soundness_mean"] == pytest.approx(8 / 3)
    assert result["n_reviews"] == 3
    assert set(result) == set(SCORES) | {f"{f}_mean" for f in SCORES} | {"n_reviews"}

    halves = aggregate([review(Soundness=2, Overall=4), review(Soundness=3, Overall=5)])
    assert halves["Soundness_mean"] == 2.5 and halves["Soundness"] == 3  # round() would give 2
    assert halves["Overall_mean"] == 4.5 and halves["Overall"] == 5  # round() would give 4


def test_aggregate_clips_to_the_scale():
    # Only unvalidated reviews can be out of range; aggregate still keeps the result on the form's scale.
    wild = Review.model_construct(**{**review().model_dump(), "confidence": 7, "overall": 0})
    result = aggregate([wild])
    assert result["Confidence"] == 5 and result["Confidence_mean"] == 7
    assert result["Overall"] == 1


def test_aggregate_needs_a_review():
    with pytest.raises(ValueError):
        aggregate([])


# --- metrics -------------------------------------------------------------------------------------------------------


def test_metrics_on_a_hand_computed_confusion_matrix():
    # tp=3, fn=1, fp=2, tn=4
    truth = [True] * 4 + [False] * 6
    predicted = [True, True, True, False] + [True, True, False, False, False, False]
    m = metrics(truth, predicted)
    assert (m.tp, m.fn, m.fp, m.tn, m.n) == (3, 1, 2, 4, 10)
    assert m.accuracy == pytest.approx(7 / 10)
    assert m.balanced_accuracy == pytest.approx((3 / 4 + 4 / 6) / 2)  # 0.7083
    assert m.f1 == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))  # 2/3
    assert m.fpr == pytest.approx(2 / 6)
    assert m.fnr == pytest.approx(1 / 4)


def test_metrics_on_degenerate_sets_give_nan_not_a_crash():
    only_rejects = metrics([False, False], [False, False])
    assert only_rejects.accuracy == 1 and only_rejects.fpr == 0
    assert math.isnan(only_rejects.fnr) and math.isnan(only_rejects.balanced_accuracy) and math.isnan(only_rejects.f1)

    only_accepts = metrics([True, True], [False, True])
    assert only_accepts.fnr == 0.5 and math.isnan(only_accepts.fpr) and math.isnan(only_accepts.balanced_accuracy)

    empty = metrics([], [])
    assert empty.n == 0 and all(math.isnan(x) for x in (empty.accuracy, empty.f1, empty.fpr, empty.fnr))

    with pytest.raises(ValueError):
        metrics([True], [True, False])


# --- labels --------------------------------------------------------------------------------------------------------


def test_load_labels_reads_paths_and_labels(tmp_path: Path):
    csv_path = tmp_path / "labels" / "labels.csv"
    csv_path.parent.mkdir()
    absolute = tmp_path / "elsewhere.pdf"
    csv_path.write_text(
        "\ufeffPaper,Label,venue\n"
        "a.pdf,accept,iclr\n"
        "sub/b.pdf,REJECT,iclr\n"
        f"{absolute},1,\n"
        "c.pdf, false ,\n"
        "\n"
        "d.pdf,True,\n",
        encoding="utf-8",
    )
    assert load_labels(csv_path) == [
        (csv_path.parent / "a.pdf", True),
        (csv_path.parent / "sub" / "b.pdf", False),
        (absolute, True),
        (csv_path.parent / "c.pdf", False),
        (csv_path.parent / "d.pdf", True),
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("paper,label\na.pdf,accept\nb.pdf,maybe\n", "row 3: label 'maybe' is not accept/reject"),
        ("paper,label\na.pdf,accept\n,reject\n", "row 3: the paper path is empty"),
        ("paper,label\na.pdf\n", "row 2: label '' is not"),
        ("file,decision\na.pdf,accept\n", "the header must name the columns 'paper' and 'label'"),
        ("paper,label\n", "no labelled papers"),
    ],
)
def test_load_labels_rejects_bad_rows_with_one_line(tmp_path: Path, content, expected):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as info:
        load_labels(csv_path)
    assert expected in str(info.value) and "\n" not in str(info.value)


# --- threshold -----------------------------------------------------------------------------------------------------


def test_best_threshold_maximises_balanced_accuracy():
    truth = [False, False, True, False, True, True]
    overall = [3.0, 4.0, 5.0, 5.5, 6.0, 7.0]
    # t=5: all three accepts predicted, one reject too: (1 + 2/3) / 2; t=6: tpr 2/3, tnr 1: the same. The lower wins.
    threshold, m = best_threshold(truth, overall)
    assert threshold == 5.0
    assert isinstance(m, Metrics)
    assert m.balanced_accuracy == pytest.approx((1 + 2 / 3) / 2)
    assert (m.tp, m.fp, m.tn, m.fn) == (3, 1, 2, 0)


def test_best_threshold_on_a_separable_set_and_on_one_class():
    threshold, m = best_threshold([False, True, False, True], [4, 6, 3, 8])
    assert threshold == 6 and m.balanced_accuracy == 1

    threshold, m = best_threshold([True, True], [5, 7])  # balanced accuracy undefined everywhere
    assert threshold == 5 and math.isnan(m.balanced_accuracy)

    with pytest.raises(ValueError):
        best_threshold([], [])
