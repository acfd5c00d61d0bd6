"""What a paper may state: facts with kinds, numbers matched only to facts of the kind their words state, a
template's own text and bibliography taken as they are, and one verdict in every section.

The inputs are built by hand in the shape `scientist run` logs them (summary.json entries, final_info.json), for a
template that logs long learning curves in `extra`: the case where any two-decimal number used to match something.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ROOT
from llm_server import ScriptedServer
from test_llm import MemoryRecorder

from base.llm import LLM, Budget
from base.records import Idea, IdeaOutcome, SessionSummary
from base.results import FinalInfo, MetricSummary
from base.stats import normalized
from base.template import load_template
from papers import verdicts
from papers.claims import Kind, check
from papers.facts import PaperInput, best_run, collect, fmt_p, quotes
from papers.paper import write_paper
from papers.render import bib_keys, bibliography
from papers.writers import template_sections

METRIC = "reward_gain_at_kl"
SEEDS = 16


def _metric(mean: float, stderr: float, ci: tuple[float, float], rng: random.Random) -> dict:
    return {"values": [mean + rng.uniform(-0.05, 0.05) for _ in range(SEEDS)], "mean": mean, "stderr": stderr,
            "ci95": list(ci), "n": SEEDS}


def _final_info(metrics: dict[str, dict], extra: dict) -> FinalInfo:
    """A final_info.json as the sealed evaluator writes it, of the discopop template."""
    return FinalInfo.from_json({"template": "discopop", "metric": METRIC, "direction": "max", "n": SEEDS,
                                "metrics": metrics, "extra": extra})


def make_input(verdict_holm: str = "no significant difference", *, mean: float = 0.7345, p: float = 0.0312,
               p_holm: float = 0.0936, verdict: str | None = None, template_root: Path | None = None) -> PaperInput:
    """One idea of one successful and one failed run against a baseline; `extra` holds 4 curves x 340 steps."""
    rng = random.Random(0)
    template = load_template(str(template_root or ROOT / "templates" / "discopop"))
    curves = {f"curve_{k}": [round(rng.random(), 4) for _ in range(340)] for k in range(4)}
    extra = {**curves, "per_seed": [rng.random() for _ in range(SEEDS)], "kl_budget": 1.0}
    # A second logged metric has per-seed values too (the case that made "b2 0.98" match run_1.val_acc.seed_5).
    val_acc = _metric(0.8417, 0.0102, (0.8199, 0.8635), rng)
    base = _final_info({METRIC: _metric(0.6123, 0.0211, (0.5673, 0.6573), rng), "val_acc": val_acc}, extra)
    info = _final_info({METRIC: _metric(mean, 0.0188, (mean - 0.0401, mean + 0.0401), rng), "val_acc": val_acc},
                       extra)
    m = info.summary(METRIC)
    comparison = {"test": "Welch's t-test (two-sided)", "alpha": 0.05, "difference": mean - 0.6123, "p_value": p,
                  "verdict": verdict or verdict_holm, "p_value_holm": p_holm, "verdict_holm": verdict_holm}
    metric = {"name": METRIC, "mean": mean, "stderr": m.stderr, "ci95": m.ci95, "n": SEEDS,
              "values": m.values, "comparison": comparison, "normalized": normalized(mean, 0.6123, "max")}
    runs = [{"run": 1, "attempt": 1, "status": "ok", "run_id": 5, "note": "hinge mix", "metric": metric},
            {"run": 2, "attempt": 1, "status": "failed", "run_id": 6, "reason": "loss returned NaN"}]
    entry = {"idx": 0, "name": "hinge_mix", "title": "Hinge mix", "folder": "idea_0_hinge_mix", "status": "done",
             "reason": None, "best": {"run": 1, "attempt": 1, "run_id": 5, "metric": metric}, "runs": runs}
    idea = {"name": "hinge_mix", "title": "Hinge mix: a hinge blended into the logistic loss",
            "hypothesis": "Blending a hinge into DPO's logistic loss changes the reward gain.",
            "experiment": "Mix the two losses with weight 0.3."}
    return PaperInput(template=template, idea=Idea(**idea), entry=IdeaOutcome.model_validate(entry), baseline=base,
                      infos={"run_1": info},
                      significance="Welch's t-test (two-sided) over seeds, alpha 0.05; Holm-adjusted")


def checked(sections: dict[str, str], inp: PaperInput):
    """The claim check as the paper writer runs it: the idea's best run named, the idea's text quoted."""
    return check(sections, collect(inp), metric=METRIC, best=best_run(inp), quotes=quotes(inp))


def claim(text: str, inp: PaperInput):
    [c] = [c for c in checked({"results": text}, inp).claims if c.exempt is None]
    return c


# --------------------------------------------------------------------------------------------------
# Facts and their kinds


def test_per_seed_values_and_curves_are_not_facts_but_scalars_are():
    facts = collect(make_input())
    names = {f.name for f in facts}
    assert not any("curve_" in n or "per_seed" in n or ".seed_" in n or "values" in n for n in names)
    assert {f.kind for f in facts if f.name == "best.extra.kl_budget"} == {Kind.EXTRA}
    assert {f.kind for f in facts if f.name.endswith(".val_acc.mean")} == {Kind.MEAN}
    assert all(f.kind in set(Kind) - {Kind.ANY} for f in facts)
    assert len(facts) < 120  # it was over 1,400 with the curves


def with_worse_run(inp: PaperInput, mean: float = 0.5012, p: float = 0.0004, p_holm: float = 0.0012) -> PaperInput:
    """The input with a third, successful run that is not the best: significantly worse than the baseline."""
    rng = random.Random(1)
    info = _final_info({METRIC: _metric(mean, 0.0123, (mean - 0.0262, mean + 0.0262), rng),
                        "val_acc": _metric(0.7011, 0.0099, (0.6800, 0.7222), rng)}, {})
    m = info.summary(METRIC)
    comparison = {"test": "Welch's t-test (two-sided)", "alpha": 0.05, "difference": mean - 0.6123, "p_value": p,
                  "verdict": "worse", "p_value_holm": p_holm, "verdict_holm": "worse"}
    metric = {"name": METRIC, "mean": mean, "stderr": m.stderr, "ci95": m.ci95, "n": SEEDS,
              "values": m.values, "comparison": comparison, "normalized": normalized(mean, 0.6123, "max")}
    entry = inp.entry.model_dump()
    entry["runs"].append({"run": 3, "attempt": 1, "status": "ok", "run_id": 7, "note": "pure hinge", "metric": metric})
    return PaperInput(template=inp.template, idea=inp.idea, entry=IdeaOutcome.model_validate(entry),
                      baseline=inp.baseline, infos={**inp.infos, "run_3": info}, significance=inp.significance)


def test_a_p_threshold_is_a_fact_of_a_run_only_when_its_own_p_is_below_it():
    assert not [f for f in collect(make_input()) if f.kind == Kind.P_THRESHOLD and f.value < 0.05]
    small = collect(make_input("better", p=0.0004, p_holm=0.0008))
    assert sorted(f.value for f in small if f.kind == Kind.P_THRESHOLD) == [0.001, 0.01, 0.05]
    c = claim(r"Welch's test gives $p < 0.001$.", make_input("better", p=0.0004, p_holm=0.0008))
    assert (c.fact, c.kind, c.context) == ("run_1.p_threshold_0.001", Kind.P_THRESHOLD, "p-value bound")
    # A bound is checked as a bound: 0.0012 is not below 0.001, though it rounds to it.
    assert claim(r"Welch's test gives $p < 0.001$.", make_input("better", p=0.0012, p_holm=0.0036)).fact is None
    assert claim(r"Welch's test gives $p < 0.002$.", make_input("better", p=0.0012, p_holm=0.0036)).fact == \
        "run_1.comparison.p_value"
    # Another run's p-value says nothing of the best run's: a bound or a p is checked against the run it is about.
    inp = with_worse_run(make_input())  # the best run has p = 0.0312; run 3 (worse) has p = 0.0004
    assert {f.run for f in collect(inp) if f.kind == Kind.P_THRESHOLD and f.value < 0.05} == {"run_3"}
    assert claim(r"The best run beats the baseline with $p < 0.001$.", inp).fact is None
    assert claim(r"Our loss differs from the baseline with $p < 0.001$.", inp).fact is None
    assert claim(r"Welch's test gives $p = 0.0004$ for our loss.", inp).fact is None
    assert claim(r"Welch's test gives $p < 0.05$ for our loss.", inp).fact == "run_1.p_threshold_0.05"
    assert claim(r"Run 3 is worse than the baseline with $p < 0.001$.", inp).fact == "run_3.p_threshold_0.001"
    assert claim(r"Run 3 gives $p = 0.0004$.", inp).fact == "run_3.comparison.p_value"


def test_a_number_is_checked_against_the_run_its_sentence_is_about():
    inp = with_worse_run(make_input())  # best run_1: 0.7345; run_3: 0.5012; baseline: 0.6123
    assert claim("The best run reached 0.7345.", inp).fact == "run_1.reward_gain_at_kl.mean"
    assert claim("The best run reached 0.5012.", inp).fact is None  # run 3's mean
    assert claim("Our loss reaches 0.5012 on average.", inp).fact is None
    assert claim("The baseline reaches 0.7345.", inp).fact is None  # the best run's mean as the baseline's
    assert claim("Our loss reaches 0.6123.", inp).fact is None  # the baseline's mean as ours
    assert claim("Run 3 reached 0.5012.", inp).fact == "run_3.reward_gain_at_kl.mean"
    assert claim("The baseline reaches 0.6123.", inp).fact == "baseline.reward_gain_at_kl.mean"
    assert claim("It is 0.1222 above the baseline.", inp).fact == "run_1.comparison.difference"
    # A sentence about both: each number is read with the run named next to it.
    found = checked({"s": "Our loss reaches 0.7345 against the baseline's 0.6123."}, inp)
    assert [c.fact for c in found.claims] == ["run_1.reward_gain_at_kl.mean", "baseline.reward_gain_at_kl.mean"]
    found = checked({"s": "Our loss reaches 0.6123 against the baseline's 0.7345."}, inp)
    assert [c.fact for c in found.claims] == [None, None]
    found = checked({"s": "Our loss reaches 0.7345 (0.6123 for the baseline)."}, inp)
    assert [c.fact for c in found.claims] == ["run_1.reward_gain_at_kl.mean", "baseline.reward_gain_at_kl.mean"]


def test_code_constants_state_settings_never_results():
    inp = make_input()
    inp.sources = {"loss.py": "def loss(z):\n    return -jax.nn.log_sigmoid(1.45 * z) + 0.2071 * jax.nn.relu(-z)\n"}
    assert claim("Our loss reaches a reward gain of 1.45.", inp).fact is None
    assert claim("The best run reached 0.2071 on average.", inp).fact is None
    assert claim("It improves on the baseline by 0.2071.", inp).fact is None
    assert claim(r"The loss is $-\log\sigma(1.45 * z)$.", inp).fact == "candidate.loss.py"
    assert claim("The hinge term has weight 0.2071.", inp).fact == "candidate.loss.py"
    assert claim("It sets the temperature to 1.45.", inp).fact == "candidate.loss.py"
    # The idea's own numbers likewise: settings, or the hypothesis it states.
    assert claim("The two losses are mixed with weight 0.3.", inp).fact == "idea.experiment"
    [c] = checked({"s": "Mix the two losses with weight 0.3."}, inp).claims  # the idea's text, verbatim
    assert c.exempt == "the idea's own text"
    assert claim("The best run reached 0.3 on average.", inp).fact is None


@pytest.mark.parametrize("name", ["discopop", "diffusion", "open", "kinetix", "transformer", "navix"])
def test_the_template_writer_states_evolved_ideas_and_their_code_without_an_unverified_number(name):
    # The evolve proposer's ideas name their constants ("-logsigmoid(1.45*z)", "ent 0.01", "AdamW 0.003"): pasted
    # verbatim by the template writer, they are the idea's own text, not results.
    from scientist.proposers.evolve import EvolveProposer, load_search_space

    space = load_search_space(load_template(str(ROOT / "templates" / name)))
    proposer = EvolveProposer(space, "max", seed=0)
    for idx in range(5):
        inp = make_input()
        inp.idea = proposer.next_idea(idx, [])
        inp.sources = space.render(inp.idea.genome)
        report = checked(template_sections(inp), inp)
        assert report.ok, (inp.idea.hypothesis, report.unverified)


def test_ratio_words_are_claims_checked_against_the_logged_ratio():
    doubled = make_input("better", mean=1.2246, p=0.0001, p_holm=0.0003)  # 1.2246 / 0.6123 = 2
    same = make_input(mean=0.6123, p=1.0, p_holm=1.0)
    for text in ("Our loss doubles the reward gain of the baseline.", "It reaches twice the reward gain of DPO.",
                 r"Our loss reaches a 2-fold reward gain.", r"Our loss has a $2\times$ higher reward gain.",
                 "The reward gain is 2 times higher than the baseline's."):
        assert claim(text, doubled).fact == "run_1.ratio.reward_gain_at_kl", text
        assert claim(text, same).fact is None, text
    assert claim("Our loss halves the reward gain.", make_input(mean=0.3061)).fact == "run_1.ratio.reward_gain_at_kl"
    assert claim("Our loss triples the reward gain.", doubled).fact is None
    # The nouns are no ratio: nothing to check, so nothing struck (a navix paper's setup lost a sentence so).
    for text in ("Observations are the whole grid as (object, colour, state) triples, flattened.",
                 "The data are stored as triples of integers.", "We count the triples and the doubles."):
        assert checked({"s": text}, same).ok, text
    # The ratio must be of a logged quantity the sentence names.
    assert claim("Our loss is 2 times more sample-efficient.", doubled).fact is None
    assert claim("Our loss doubles the accuracy.", doubled).fact is None
    # Counting is no ratio, and a hypothesis is not a result.
    assert checked({"s": "We ran it 3 times."}, same).ok
    assert checked({"s": "We hypothesised that the loss doubles the reward gain."}, same).ok


def test_numbers_match_only_facts_of_the_kind_their_words_state():
    inp = make_input()
    # Not facts, whatever a curve point happens to be: an optimiser setting, and a p no run reached.
    assert claim("We use Adam with b2 0.98 throughout.", inp).fact is None
    assert claim(r"The improvement is significant ($p < 0.001$).", inp).fact is None
    c = claim("Significance is judged at the 0.05 level.", inp)
    assert (c.fact, c.kind, c.context) == ("alpha", Kind.LEVEL, "significance level")
    stated = {
        "The best run reached 0.7345 on average.": Kind.MEAN,
        r"Its 95\% interval is [0.6944, 0.7746].": None,  # two bounds, checked below
        r"Welch's test gives $p = 0.031$.": Kind.P_VALUE,
        r"After Holm's adjustment, $p = 0.094$.": Kind.P_VALUE,
        "The difference from the baseline is 0.1222.": Kind.DIFFERENCE,
        "It is 0.1222 above the baseline.": Kind.DIFFERENCE,  # no cue: a difference is a value
        r"It changes the metric by 20.0\%.": Kind.NORMALIZED,
        r"The best run reached $0.7345 \pm 0.0188$.": None,
        "Every run is evaluated over 16 seeds.": Kind.COUNT,
    }
    for text, kind in stated.items():
        found = [c for c in check({"s": text}, collect(inp), metric=METRIC).claims if c.exempt is None]
        assert all(c.fact for c in found), (text, found)
        if kind is not None:
            assert [c.kind for c in found] == [kind], text
    found = check({"s": r"Its 95\% interval is [0.6944, 0.7746]."}, collect(inp)).claims
    assert [(c.context, c.kind) for c in found] == [
        ("significance level", Kind.LEVEL), ("interval bound", Kind.INTERVAL), ("interval bound", Kind.INTERVAL)]
    found = check({"s": r"The best run reached $0.7345 \pm 0.0188$."}, collect(inp)).claims
    assert [c.kind for c in found] == [Kind.MEAN, Kind.STDERR]


def test_a_number_of_the_wrong_kind_is_unverified():
    inp = make_input()
    assert claim("The best run reached 0.0188 on average.", inp).fact is None  # a standard error as a value
    assert claim(r"Welch's test gives $p = 0.7345$.", inp).fact is None  # a mean as a p-value
    c = check({"s": r"The interval is [0.0312, 0.0936]."}, collect(inp)).claims
    assert [x.fact for x in c] == [None, None]  # p-values as interval bounds
    assert claim(r"The reward rose by 0.7345.", inp).fact is None  # a mean as a difference


def test_a_configuration_value_must_be_named_in_its_sentence():
    inp = make_input()
    assert claim("Training takes 400 steps.", inp).fact == "config.train.steps"
    assert claim("The policy is trained with a learning rate of 3e-3.", inp).fact == "config.train.learning_rate"
    assert claim(r"The sweep covers $\beta = 0.03$.", inp).fact == "config.betas[1]"
    assert claim("The score was 400 on the day.", inp).fact is None
    assert claim("Each prompt has 2048 candidates.", inp).fact is None  # 2048 is the number of pairs, not named


def test_the_metric_name_is_not_a_cue():
    # "reward gain" names the metric reward_gain_at_kl: its value is a mean, not a difference.
    assert claim("The best run reaches a reward gain of 0.7345.", make_input()).kind == Kind.MEAN


def coincidence_rate(inp: PaperInput) -> float:
    """The share of the two-decimal values 0.00 ... 1.00, written without a cue, that some fact verifies."""
    facts = collect(inp)
    texts = {f"v{i}": f"The value is {i / 100:.2f} here." for i in range(101)}
    return sum(c.fact is not None for c in check(texts, facts, metric=METRIC).claims) / 101


def test_random_two_decimal_numbers_rarely_verify():
    # Before kinds (every fact in every context, curves and seeds as facts) this input verified 101 of 101.
    assert coincidence_rate(make_input()) <= 0.1


# --------------------------------------------------------------------------------------------------
# A template's own text and bibliography


@pytest.fixture
def own_template(tmp_path) -> Path:
    """DiscoPOP with its own text holding numbers, and its own entry for a key the framework also defines."""
    root = tmp_path / "discopop"
    shutil.copytree(ROOT / "templates" / "discopop", root, ignore=shutil.ignore_patterns("__pycache__"))
    setup = root / "latex" / "setup.tex"
    setup.write_text(setup.read_text() + "\nThe evaluator scores the policy over all $47^2 = 2209$ pairs, 16 per "
                     "prompt, at the 0.01 level of its own test.\n")
    bib = root / "latex" / "references.bib"
    framework = (ROOT / "papers" / "references.bib").read_text()
    jax = framework[framework.index("@misc{jax2018github"):]
    bib.write_text(bib.read_text() + "\n@article{lu2024aiscientist,\n  title = {The AI Scientist (template's copy)},"
                   "\n  author = {Lu, Chris},\n  journal = {arXiv},\n  year = {2024}\n}\n\n" + jax)
    return root


def test_bibliographies_merge_by_key_and_the_template_wins(own_template):
    text, overridden = bibliography(own_template, [("the literature search", "@misc{lit1,\n  title = {A}\n}")])
    assert overridden == ["lu2024aiscientist"]
    assert text.count("@article{lu2024aiscientist") == 1 and "template's copy" in text
    assert text.count("@misc{jax2018github") == 1  # identical entries collapse
    assert "% from discopop/latex/references.bib, replacing the entry of papers/references.bib" in text
    assert "% from papers/references.bib and discopop/latex/references.bib (identical)" in text
    assert "% from the literature search\n@misc{lit1," in text
    assert {"lu2024aiscientist", "welch1947generalization", "rafailov2023direct", "lit1"} <= bib_keys(text)
    plain, none = bibliography(ROOT / "templates" / "discopop")
    assert none == [] and plain.count("@") == len(bib_keys(plain))


def test_a_template_text_number_is_a_fact_in_any_context(own_template):
    inp = make_input(template_root=own_template)
    facts = collect(inp)
    assert {f.value for f in facts if f.kind == Kind.TEMPLATE} >= {47.0, 2209.0, 0.01, 16.0}
    sections = template_sections(inp)
    assert "2209" in sections["experimental_setup"]
    report = check(sections, facts, metric=METRIC)
    assert report.ok, report.unverified
    assert [c.kind for c in report.claims if c.written == "2209"] == [Kind.TEMPLATE]


def test_a_paper_with_the_template_own_bibliography_and_text_compiles(own_template, tmp_path):
    paper = write_paper(make_input(template_root=own_template), tmp_path / "paper")
    assert paper.status == "ok", paper
    assert paper.struck_sentences == 0 and paper.unverified_numbers == 0
    report = json.loads((tmp_path / "paper" / "claim_check.json").read_text())
    assert report["bibliography"] == {"overridden": ["lu2024aiscientist"]} and report["struck_sentences"] == []
    assert "47^2 = 2209$ pairs" in (tmp_path / "paper" / "paper.tex").read_text()
    assert (tmp_path / "paper" / "references.bib").read_text().count("{lu2024aiscientist,") == 1


# --------------------------------------------------------------------------------------------------
# One verdict


@pytest.mark.parametrize("sentence, found", [
    ("The idea is significantly better than the baseline.", {"better"}),
    ("Our loss significantly outperforms DPO.", {"better"}),
    ("Our method yields a statistically significant improvement over DPO.", {"better"}),
    ("The idea improved on the baseline with a significant difference.", {"better"}),
    ("Our loss outperforms DPO.", {"better"}),
    ("The idea is significantly worse than the baseline.", {"worse"}),
    ("The change hurts the reward significantly.", {"worse"}),
    ("There is no significant difference between the idea and the baseline.", {"no significant difference"}),
    ("Differences of this size are within what seed-to-seed variation can produce.", {"no significant difference"}),
    ("The idea is not significantly better than the baseline.", {"not better"}),
    ("The idea did not improve significantly on the baseline.", {"not better"}),
    ("It fails to outperform DPO; it is significantly worse.", {"not better", "worse"}),
    ("The mean is better than the baseline's, but the difference is not significant.", {"no significant difference"}),
    ("We hypothesise that the loss outperforms DPO.", set()),
    ("We test whether the loss is significantly better.", set()),
    ("We call a run better or worse than the baseline only when the test finds it.", set()),
    ("LRML outperforms DPO on MT-Bench \\cite{lu2024discovering}.", set()),
    ("Higher is better.", set()),
    # A concession is no hedge: the claim stands (the measured failure).
    ("Our loss significantly outperforms the baseline, even if only by a small margin.", {"better"}),
    ("It beats DPO, although only slightly.", {"better"}),
    ("The loss outperforms DPO when trained for longer.", {"better"}),  # a claim before its condition
    ("Our loss does not outperform the baseline.", {"not better"}),
    ("The difference is statistically significant.", {"significant"}),
    ("A difference is deemed significant when p < 0.05.", set()),
    ("Our loss achieves the best reward gain of all.", {"better"}),
    ("The best run reached 0.73 against the baseline's 0.61.", set()),
    ("Our loss exceeds the baseline's reward gain.", {"better"}),
    ("Our loss reaches a higher reward gain than DPO.", {"better"}),
    ("Our loss reaches a lower reward gain than DPO.", {"worse"}),
    ("Our loss has a lower KL than DPO.", set()),  # not the metric: no verdict
])
def test_what_a_sentence_claims_about_the_result(sentence, found):
    assert verdicts.stances(sentence, "max", METRIC) == found


def test_higher_and_lower_follow_the_metric_direction():
    assert verdicts.stances("Our recipe reaches a lower MMD than the baseline.", "min", "mmd") == {"better"}
    assert verdicts.stances("Our recipe reaches a higher MMD than the baseline.", "min", "mmd") == {"worse"}


def test_contradictions_depend_on_the_logged_verdict():
    text = {"results": "The idea is not significantly better than the baseline.",
            "background": "Related losses are discussed by \\citet{rafailov2023direct}.",
            "method": "Our loss outperforms DPO."}
    [c] = verdicts.check(text, "worse")
    assert (c.section, c.stance) == ("method", "better")  # every section is read, not only the results
    assert [(c.section, c.stance) for c in verdicts.check(text, "no significant difference")] == [("method", "better")]
    [c] = verdicts.check({**text, "method": ""}, "better")
    assert (c.section, c.stance) == ("results", "not better")
    new, removed = verdicts.strike("First we ran it. The loss significantly outperforms DPO. Then we stopped.",
                                   "no significant difference")
    assert new == "First we ran it. Then we stopped." and removed == ["The loss significantly outperforms DPO."]
    message = verdicts.feedback(verdicts.check({"results": "It significantly outperforms DPO."}, None), "results")
    assert "no result" in message and "outperforms" in message and "Holm" in message


# Words that state another verdict than the table's, in the sections that report the outcome.
OTHER_VERDICTS = {"better": r"worse|hurt|no significant|not differ|seed-to-seed",
                  "worse": r"improv|better|no significant|not differ|seed-to-seed",
                  "no significant difference": r"improv|significantly (?:better|worse)|\bhurts?\b"}


@pytest.mark.parametrize("verdict_holm, mean, p, p_holm, unadjusted", [
    ("better", 0.7345, 0.0012, 0.0036, "better"),
    ("worse", 0.5012, 0.0008, 0.0048, "worse"),
    # Only the unadjusted test is significant: the verdict is still "no significant difference".
    ("no significant difference", 0.7345, 0.0312, 0.0936, "better"),
])
def test_every_section_of_the_template_writer_states_the_table_verdict(verdict_holm, mean, p, p_holm, unadjusted):
    inp = make_input(verdict_holm, mean=mean, p=p, p_holm=p_holm, verdict=unadjusted)
    sections = template_sections(inp)
    assert verdicts.check(sections, verdict_holm) == []
    for name in ("abstract", "introduction", "results", "conclusion"):  # where the template writer states it
        text = sections[name]
        stated = set().union(*(verdicts.stances(s) for s in re.split(r"(?<=\.) ", text)))
        assert stated & {"better", "worse", "no significant difference"} == {verdict_holm}, (name, text)
        assert not re.search(OTHER_VERDICTS[verdict_holm], text), (name, text)
    # The unadjusted p is stated as a number, not as a verdict of its own.
    bound = fmt_p(p).replace("$", "")
    assert (f"$p{bound}$" if bound.startswith("<") else f"$p = {bound}$") in sections["results"]
    assert check(sections, collect(inp), metric=METRIC).ok


def test_a_negative_report_concludes_no_result():
    inp = make_input()
    for r in inp.entry.runs:
        r.status, r.reason, r.metric = "failed", "boom", None
    inp.entry.best = None
    sections = template_sections(inp)
    assert "did not yield a working experiment" in sections["conclusion"]
    assert verdicts.check(sections, None) == []


OVERCLAIM = "Our loss is significantly better than DPO."
HEDGED = "The best run's mean is higher than the baseline's, but the difference is not significant."


def test_the_llm_writer_claiming_significance_for_a_non_significant_idea_is_told_then_struck(tmp_path):
    def answer(body: dict) -> str:
        last = body["messages"][-1]["content"]
        if last.startswith("Criticise"):
            return body["messages"][-2]["content"]
        if "contradict the logged verdict" in last:  # a stubborn model: the repair keeps the claim
            return f"```latex\n{OVERCLAIM} {HEDGED}\n```"
        if "Write the Results section" in last:
            return f"```latex\n{OVERCLAIM} {HEDGED}\n```"
        if "Write the Conclusion section" in last:
            return "```latex\nThe idea is not significantly better than DPO.\n```"
        return "```latex\nWe study a blended preference loss.\n```"

    with ScriptedServer(answer) as server:
        llm = LLM("openai/test-model", recorder=MemoryRecorder(), budget=Budget(), api_base=server.url,
                  max_retries=1, backoff_s=0.01)
        paper = write_paper(make_input(), tmp_path / "paper", llm=llm)
        asked = [m["content"] for req in server.requests for m in req["messages"] if m["role"] == "user"]
    fed_back = [a for a in asked if "contradict the logged verdict" in a]
    assert fed_back and all("no significant difference from the baseline" in a and OVERCLAIM in a for a in fed_back)
    assert paper.status == "ok" and paper.struck_sentences == 1
    report = json.loads((tmp_path / "paper" / "claim_check.json").read_text())
    check_ = report["verdict_check"]
    assert check_["verdict"] == "no significant difference" and check_["struck_sentences"] == [OVERCLAIM]
    assert [(c["section"], c["stance"]) for c in check_["contradictions_found"]] == [("results", "better")]
    tex = (tmp_path / "paper" / "paper.tex").read_text()
    assert OVERCLAIM not in tex and HEDGED in tex and "The idea is not significantly better than DPO." in tex


# --------------------------------------------------------------------------------------------------
# A run whose every paper failed


def test_a_run_whose_every_paper_failed_exits_with_an_error(tmp_path):
    from scientist.experiment import Session
    from scientist.session import EXIT_ERROR, EXIT_OK, _writeup

    run = tmp_path / "run"
    inp = make_input()
    (run / "baseline").mkdir(parents=True)
    (run / "baseline" / "final_info.json").write_text(json.dumps(inp.baseline.to_json()))
    (run / inp.entry.folder / "run_1").mkdir(parents=True)
    (run / inp.entry.folder / "run_1" / "final_info.json").write_text(json.dumps(inp.infos["run_1"].to_json()))
    (run / inp.entry.folder / "run_2").mkdir(parents=True)
    (run / inp.entry.folder / "run_2" / "candidate").mkdir()
    summary = SessionSummary(template="discopop", template_hash="h", metric={"name": METRIC, "direction": "max"},
                             proposer="evolve", status="complete", ideas=[inp.entry],
                             significance_test=inp.significance)
    (run / "ideas.json").write_text(json.dumps([{**inp.idea.model_dump(), "idx": 0}]))
    events = []
    report = SimpleNamespace(event=lambda kind, **kw: events.append(kind))
    broken = tmp_path / "templates" / "discopop"
    shutil.copytree(ROOT / "templates" / "discopop", broken, ignore=shutil.ignore_patterns("__pycache__"))

    def writeup() -> int:
        cfg = SimpleNamespace(writer="template", out_dir=run, template=load_template(str(broken)))
        return _writeup(Session(cfg, store=None, id=0, budget=Budget(), report=report), summary)

    assert writeup() == EXIT_OK
    tex = (ROOT / "papers" / "paper.tex.j2").read_text().replace("\\maketitle", "\\maketitle\\undefinedmacro")
    (broken / "latex" / "paper.tex.j2").write_text(tex)
    assert writeup() == EXIT_ERROR
    paper = json.loads((run / "summary.json").read_text())["ideas"][0]["paper"]
    assert paper["status"] == "writeup_failed" and "Undefined control sequence" in paper["reason"]


def test_a_bounded_metric_paper_names_its_interval_and_keeps_it_in_range(tmp_path):
    root = tmp_path / "discopop"
    shutil.copytree(ROOT / "templates" / "discopop", root, ignore=shutil.ignore_patterns("__pycache__"))
    toml = root / "template.toml"
    toml.write_text(toml.read_text().replace('direction = "max"\n', 'direction = "max"\nlow = 0.0\nhigh = 1.0\n', 1))
    inp = make_input(template_root=root)
    from base.stats import summarize

    near_zero = summarize([0.0] * 15 + [0.0024], low=0.0, high=1.0)
    inp.baseline = inp.baseline.model_copy(
        update={"metrics": {**inp.baseline.metrics, METRIC: MetricSummary.from_json(near_zero)}})
    sections = template_sections(inp)
    assert "logit scale" in sections["experimental_setup"] and "[0, 1]" in sections["experimental_setup"]
    from papers.facts import results_table

    table = results_table(inp)
    assert "logit scale" in table["caption"]
    low, high = near_zero["ci95"]
    assert 0 < low < high < 1 and f"[{low:.4f}, {high:.4f}]" in table["body"]
    report = check(sections, collect(inp), metric=METRIC)
    assert not report.unverified, report.unverified


# --------------------------------------------------------------------------------------------------
# The measured failure: a paper of an idea equal to DPO (p = 1) that says it beats DPO


OVERSTATED = {  # a stubborn model's sections: each repair gives the same text back
    "abstract": "We study a blended preference loss. Our loss doubles the reward gain of DPO.",
    "introduction": "Preference optimisation aligns models with what people want \\cite{rafailov2023direct}.",
    "background": "\\newcommand{\\gain}{2.4493}\\def\\bonus#1.{#1}DPO minimises a logistic loss.",
    "method": "We mix a hinge into the logistic loss.",
    "experimental_setup": "Our loss is 3 times more sample-efficient than DPO. Each run is scored on held-out "
                          "prompts.",
    "results": "Our loss significantly outperforms the baseline, even if only by a small margin. "
               "Table~\\ref{tab:results} lists every run. Our loss reaches a reward gain of \\gain{} on held-out "
               "prompts. The bonus is \\bonus 7.",
    "related_work": "Automated discovery was proposed before \\cite{lu2024aiscientist}.",
    "conclusion": "There is no significant difference between the idea and the baseline.",
}
HEADINGS = {"Abstract": "abstract", "Introduction": "introduction", "Background": "background", "Method": "method",
            "Experimental Setup": "experimental_setup", "Results": "results", "Related Work": "related_work",
            "Conclusion": "conclusion"}


def test_a_paper_overstating_a_null_result_compiles_without_the_overstatements(tmp_path):
    from pypdf import PdfReader

    def answer(body: dict) -> str:
        last = body["messages"][-1]["content"]
        if last.startswith("Criticise"):
            return body["messages"][-2]["content"]
        asked = re.search(r"Write the (.+?) section", last)
        if asked:
            return f"```latex\n{OVERSTATED[HEADINGS[asked.group(1)]]}\n```"
        return "```latex\n" + last.split("```latex\n", 1)[1].split("\n```", 1)[0] + "\n```"  # the same again

    inp = make_input(mean=0.6123, p=1.0, p_holm=1.0)  # the candidate is DPO: no significant difference, p = 1
    with ScriptedServer(answer) as server:
        llm = LLM("openai/test-model", recorder=MemoryRecorder(), budget=Budget(), api_base=server.url,
                  max_retries=1, backoff_s=0.01)
        paper = write_paper(inp, tmp_path / "paper", llm=llm)
    assert paper.status == "ok", paper
    text = " ".join(" ".join((page.extract_text() or "").split()) for page in PdfReader(paper.pdf).pages)
    for gone in ("doubles", "3 times", "sample-efficient", "significantly outperforms", "small margin", "2.4493",
                 "bonus"):
        assert gone not in text, gone
    assert "blended preference loss" in text and "no significant difference between the idea" in text
    assert "every run" in text and "held-out prompts" in text  # the sentences around them stay
    report = json.loads((tmp_path / "paper" / "claim_check.json").read_text())
    reasons = {s["sentence"]: s["reason"] for s in report["struck"]}
    assert "unverified: doubles (ratio)" in reasons["Our loss doubles the reward gain of DPO."]
    assert "3 times more (ratio)" in reasons["Our loss is 3 times more sample-efficient than DPO."]
    assert "contradicts the logged verdict" in reasons[
        "Our loss significantly outperforms the baseline, even if only by a small margin."]
    assert "2.4493 (value)" in reasons["Our loss reaches a reward gain of 2.4493{} on held-out prompts."]
    assert "delimited parameters" in reasons["\\def\\bonus#1.{#1}"]
    assert "\\bonus" in reasons["The bonus is \\bonus 7."]
    assert paper.struck_sentences == len(report["struck"]) == 6
    tex = (tmp_path / "paper" / "paper.tex").read_text()
    assert "\\newcommand{\\gain}" not in tex and "\\gain" not in tex and "\\bonus" not in tex
