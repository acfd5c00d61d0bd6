"""Intervals, significance and normalised scores, including minimised metrics and negative baselines."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from base.stats import compare, normalized, summarize

ROOT = Path(__file__).resolve().parent.parent


def test_summarize_gives_t_interval():
    values = [1.0, 2.0, 3.0, 4.0]
    s = summarize(values)
    sem = np.std(values, ddof=1) / 2
    assert s["n"] == 4 and s["mean"] == 2.5
    assert s["stderr"] == pytest.approx(sem)
    half = sps.t.ppf(0.975, 3) * sem
    assert s["ci95"] == pytest.approx([2.5 - half, 2.5 + half])
    assert s["values"] == values


def test_summarize_single_seed_has_no_interval():
    s = summarize([3.0])
    assert math.isnan(s["stderr"]) and all(math.isnan(x) for x in s["ci95"])


@pytest.mark.parametrize("direction,candidate,verdict", [
    ("max", [2.0, 2.1, 2.2, 2.05], "better"),
    ("min", [2.0, 2.1, 2.2, 2.05], "worse"),
    ("max", [0.0, 0.1, 0.2, 0.05], "worse"),
    ("min", [0.0, 0.1, 0.2, 0.05], "better"),
])
def test_compare_respects_direction(direction, candidate, verdict):
    baseline = [1.0, 1.1, 0.9, 1.05]
    c = compare(candidate, baseline, direction)
    assert c.verdict == verdict and c.p_value < 0.05


def test_compare_overlapping_is_not_significant():
    c = compare([1.0, 1.2, 0.9, 1.1], [1.05, 1.15, 0.95, 1.0], "max")
    assert c.verdict == "no significant difference"
    assert c.p_value == pytest.approx(sps.ttest_ind([1.0, 1.2, 0.9, 1.1], [1.05, 1.15, 0.95, 1.0],
                                                        equal_var=False).pvalue)


@pytest.mark.parametrize("value,baseline,direction,expected", [
    (2.0, 1.0, "max", 2.0),     # twice the baseline
    (0.5, 1.0, "min", 1.5),     # half the loss is better
    (2.0, 1.0, "min", 0.0),
    (-5.0, -10.0, "max", 1.5),  # less negative return is better
    (-20.0, -10.0, "max", 0.0),
    (-4.0, -2.0, "min", 2.0),   # more negative is better for a min metric
])
def test_normalized_keeps_meaning(value, baseline, direction, expected):
    assert normalized(value, baseline, direction) == pytest.approx(expected)
    assert normalized(baseline, baseline, direction) == 1.0


def test_normalized_rejects_zero_baseline():
    with pytest.raises(ValueError):
        normalized(1.0, 0.0, "max")


def test_holm_adjustment_matches_the_definition():
    from base.stats import holm

    got = holm([0.01, 0.04, 0.03, float("nan"), 0.5])
    # sorted: 0.01 (x4) = 0.04, 0.03 (x3) = 0.09, 0.04 (x2) = 0.08 -> monotone 0.09, 0.5 (x1) = 0.5
    assert got[0] == pytest.approx(0.04) and got[2] == pytest.approx(0.09) and got[1] == pytest.approx(0.09)
    assert math.isnan(got[3]) and got[4] == pytest.approx(0.5)
    assert holm([]) == []


def test_bounded_metric_interval_stays_in_its_range():
    # An accuracy near 0 (issue: "95% CI -0.0000 to 0.0006"): the t-interval leaves [0, 1], the logit one cannot.
    values = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0024]
    plain = summarize(values)
    assert plain["ci95"][0] < 0 and plain["ci95_method"] == "t"
    s = summarize(values, low=0.0, high=1.0)
    assert s["ci95_method"] == "logit-t"
    assert 0.0 < s["ci95"][0] < s["mean"] < s["ci95"][1] < 1.0
    assert s["mean"] == plain["mean"] and s["stderr"] == plain["stderr"]  # only the interval changes
    near_one = summarize([1 - v for v in values], low=0.0, high=1.0)
    assert near_one["ci95"] == pytest.approx([1 - s["ci95"][1], 1 - s["ci95"][0]])
    # One bound: the log scale; a metric at least 0 (an MMD, bits per character) or at most 0.
    above = summarize([0.01, 0.002, 0.003, 0.0005], low=0.0)
    assert above["ci95_method"] == "log-t" and 0.0 < above["ci95"][0] < above["mean"] < above["ci95"][1]
    below = summarize([-0.01, -0.002, -0.003, -0.0005], high=0.0)
    assert below["ci95"] == pytest.approx([-above["ci95"][1], -above["ci95"][0]])
    # Every seed on a bound: no spread, the interval is the point.
    assert summarize([1.0, 1.0, 1.0], low=0.0, high=1.0)["ci95"] == [1.0, 1.0]


def test_bounded_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    a, b = 2.0, 30.0  # a rate near 0.06, 8 seeds, as a solve rate or an accuracy early in training
    truth = a / (a + b)
    hits = 0
    for _ in range(2000):
        lo, hi = summarize(rng.beta(a, b, size=8), low=0.0, high=1.0)["ci95"]
        hits += lo <= truth <= hi
    assert 0.90 <= hits / 2000 <= 0.98


# ------------------------------------------------------------------ zero variance, the paired test, p never 0


def test_zero_variance_never_gives_p_zero():
    from base.stats import PERMUTATION, SIGN_FLIP, WELCH

    # Identical constant samples: no difference at all, p = 1 (both tests).
    for test in ("welch", "paired"):
        c = compare([1.5] * 8, [1.5] * 8, "max", test=test)
        assert c.p_value == 1.0 and c.verdict == "no significant difference"
    # Different constants: Welch's t is x/0 (p was 0); the exact permutation test over the pooled seeds gives
    # the smallest p 8 + 8 seeds allow (the two all-one-side relabellings of C(16, 8)).
    c = compare([2.0] * 8, [1.0] * 8, "max")
    assert c.test == PERMUTATION and c.p_value == pytest.approx(2 / math.comb(16, 8)) and c.verdict == "better"
    assert "undefined" in c.why
    # 2 seeds a side can never be significant: p = 2 / C(4, 2).
    c = compare([2.0, 2.0], [1.0, 1.0], "max")
    assert c.p_value == pytest.approx(1 / 3) and c.verdict == "no significant difference"
    assert compare([2.0] * 2, [1.0] * 6, "min").p_value == pytest.approx(1 / math.comb(8, 2))
    # Paired, every seed moved by the same amount: the sign-flip test, 2 / 2^n.
    c = compare([2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0], "max", test="paired")
    assert c.test == SIGN_FLIP and c.p_value == pytest.approx(2 / 16) and c.verdict == "no significant difference"
    # One constant side and n >= 2 on the other: Welch's t is defined, a one-sample t-test of the other side.
    other = [1.1, 1.3, 0.9, 1.2]
    c = compare([1.0] * 3, other, "max")
    assert c.test == WELCH and c.p_value == pytest.approx(sps.ttest_1samp(other, 1.0).pvalue)
    # Too few seeds: not testable, said as such.
    c = compare([1.0], [2.0, 2.1], "max")
    assert math.isnan(c.p_value) and "not testable" in c.why and c.verdict == "no significant difference"


def test_paired_test_uses_seed_wise_differences():
    from base.stats import PAIRED, PAIRED_WHY, WELCH

    # Seed effects shared by both runs (same seeds, same data): the paired test sees the consistent +0.02,
    # Welch's test drowns it in the seed-to-seed spread.
    baseline = [1.0, 1.5, 0.7, 1.2, 0.9, 1.4]
    candidate = [b + 0.02 + e for b, e in zip(baseline, [0.001, -0.002, 0.0, 0.002, -0.001, 0.0], strict=True)]
    paired = compare(candidate, baseline, "max", test="paired")
    assert paired.test == PAIRED and paired.why == PAIRED_WHY
    assert paired.p_value == pytest.approx(sps.ttest_rel(candidate, baseline).pvalue) and paired.verdict == "better"
    welch = compare(candidate, baseline, "max")
    assert welch.test == WELCH and welch.why == "" and welch.verdict == "no significant difference"
    # Seeds that do not pair: Welch's test, and the comparison says why.
    c = compare(candidate[:4], baseline, "max", test="paired")
    assert c.test == WELCH and c.why == "not paired: the runs have 4 and 6 seeds"
    assert c.p_value == pytest.approx(sps.ttest_ind(candidate[:4], baseline, equal_var=False).pvalue)
    c = compare(candidate, baseline, "max", test="paired", shared_seeds=False)
    assert c.test == WELCH and c.p_value == welch.p_value and "do not share seeds" in c.why


def test_format_p_never_writes_zero():
    from base.stats import format_p

    assert format_p(0.0) == "p<0.0001" and format_p(3e-300, "p_Holm") == "p_Holm<0.0001"
    assert format_p(0.0312) == "p=0.0312" and format_p(1.0) == "p=1" and format_p(float("nan")) == "p=n/a"


# ------------------------------------------------------------------ the evaluator's contract: finite numbers only


@pytest.mark.parametrize("values,reason", [
    ({"val_acc": [0.5, float("nan")]}, "val_acc = nan for seed 1, not a finite number"),
    ({"val_acc": [0.5, 0.6], "val_loss": [float("inf"), 1.0]}, "val_loss = inf for seed 0, not a finite number"),
    ({"val_acc": [0.5, 0.6], "val_loss": [float("-inf"), 1.0]}, "val_loss = -inf for seed 0"),
    ({"val_acc": [0.5, "0.6"]}, "val_acc = '0.6' for seed 1, not a finite number"),
    ({"val_acc": [True, 0.6]}, "val_acc = True for seed 0, not a finite number"),
    ({"val_acc": [0.5, None]}, "val_acc = None for seed 1"),
    ({"val_acc": 0.5}, "float for 'val_acc', not a list of per-seed values"),
    ({"val_acc": [0.5, 1.5]}, "val_acc = 1.5, outside its declared range [0.0, 1.0]"),
])
def test_evaluator_rejects_values_that_are_not_finite_numbers(values, reason, echo_template, tmp_path, capsys):
    from scientist.evaluator import ARTIFACT_REJECTED, main

    work, out = tmp_path / "work", tmp_path / "final_info.json"
    work.mkdir()
    # NaN and Infinity as Python's json writes them.
    (work / "result.json").write_text(json.dumps({"per_seed": values}))
    args = ["evaluate", "--template", str(echo_template), "--dir", str(work), "--seeds", "2", "--out", str(out)]
    assert main(args) == ARTIFACT_REJECTED
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and reason in err and "evaluation failed: ValueError: evaluator returned" in err
    assert not out.exists()
    # The same evaluator with finite values in range writes final_info.json.
    (work / "result.json").write_text(json.dumps({"per_seed": {"val_acc": [0.5, 0.75], "val_loss": [1.0, 2]}}))
    assert main(args) == 0 and json.loads(out.read_text())["metrics"]["val_acc"]["mean"] == 0.625


def test_papers_name_the_test_that_ran_and_why():
    from test_paper_facts import make_input

    from base.stats import PAIRED, PAIRED_WHY
    from papers.facts import results_table
    from papers.writers import results_brief, template_sections

    welch = make_input()
    assert "Welch's two-sided $t$-test" in template_sections(welch)["experimental_setup"]
    assert "$p$ (Welch)" in results_table(welch)["body"]
    paired = make_input()
    for run in (paired.entry.runs[0], paired.entry.best):
        run.metric.comparison.test, run.metric.comparison.why = PAIRED, PAIRED_WHY
    sections, table = template_sections(paired), results_table(paired)
    assert f"the two-sided paired $t$-test over seeds ({PAIRED_WHY})" in sections["experimental_setup"]
    assert "The two-sided paired $t$-test over seeds gives $p = 0.031$" in sections["results"]
    assert "$p$ (paired)" in table["body"] and PAIRED_WHY in table["caption"]
    assert not any("Welch" in text for text in (*sections.values(), table["body"], table["caption"]))
    assert f"{PAIRED} p=0.0312" in results_brief(paired)
