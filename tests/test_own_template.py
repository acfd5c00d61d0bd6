"""A template a user wrote from docs/templates.md alone (tests/fixtures/grokking), through the real CLI.

It is the case that broke papers: the template's own LaTeX has numbers ("all 23^2 = 529 pairs"), its
bibliography defines a key the framework defines too, its metric is an accuracy (bounded in [0, 1]), and
its evaluator logs long learning curves in `extra`, which once let almost any number "verify".
"""

import json
import re
import shutil

import pytest
from conftest import ROOT, scientist
from llm_server import ScriptedServer
from pypdf import PdfReader

FIXTURE = ROOT / "tests" / "fixtures" / "grokking"


@pytest.fixture(scope="module")
def grokking_run(tmp_path_factory):
    """One evolve session of the user's template, papers by the template writer."""
    tmp = tmp_path_factory.mktemp("own")
    template = shutil.copytree(FIXTURE, tmp / "grokking")
    home, out = tmp / "home", tmp / "out"
    r = scientist("run", "--template", str(template), "--home", str(home), "--proposer", "evolve", "--ideas", "1",
                  "--runs", "2", "--out", str(out), "--no-review")
    assert r.code == 0, r.text
    return template, home, out, r


def pdf_text(path) -> str:
    return " ".join(page.extract_text() for page in PdfReader(path).pages)


def test_the_papers_keep_the_template_text_and_bibliography(grokking_run):
    template, home, out, r = grokking_run
    summary = json.loads((out / "summary.json").read_text())
    idea = summary["ideas"][0]
    paper = idea["paper"]
    assert paper["status"] == "ok" and paper["struck_sentences"] == 0, paper
    text = pdf_text(paper["pdf"])
    # setup.tex's own numbers are in the paper, not struck.
    assert "529" in text and "264" in text
    report = json.loads((out / idea["folder"] / "paper" / "claim_check.json").read_text())
    assert report["struck_sentences"] == []
    assert {c["written"] for c in report["claims"]["claims"] if c["fact"] and c["fact"].startswith("template.")} \
        >= {"529", "264"}
    # The clashing key compiled once, with the template's entry.
    assert report["bibliography"]["overridden"] == ["lu2024aiscientist"]
    bib = (out / idea["folder"] / "paper" / "references.bib").read_text()
    assert len(re.findall(r"@\w+\{lu2024aiscientist,", bib)) == 1 and "as cited by this template" in bib
    assert f"paper: {paper['pdf']} (0 struck sentences)" in r.out


def test_an_accuracy_gets_intervals_within_its_range_and_the_paper_says_how(grokking_run):
    _, _, out, _ = grokking_run
    summary = json.loads((out / "summary.json").read_text())
    base = json.loads((out / "baseline" / "final_info.json").read_text())["metrics"]["val_acc"]
    assert base["ci95_method"] == "logit-t" and 0.0 <= base["ci95"][0] <= base["mean"] <= base["ci95"][1] <= 1.0
    tex = (out / summary["ideas"][0]["folder"] / "paper" / "paper.tex").read_text()
    assert "logit scale" in tex


def _curve_value_no_fact_states(out) -> str:
    """A learning-curve value, written to 3 decimals, that no summary number of the run rounds to."""
    info = json.loads(next(out.glob("*/run_1/final_info.json")).read_text())
    scalars = [v for m in info["metrics"].values() for k, v in m.items() if k in ("mean", "stderr")]
    scalars += [x for m in info["metrics"].values() for x in m["ci95"]]
    for row in info["extra"]["val_acc_curve"][5:]:
        for v in row:
            written = f"{v:.3f}"
            if all(f"{s:.3f}" != written for s in scalars) and written not in ("0.000", "1.000"):
                return written
    raise AssertionError("no usable curve value")


def test_numbers_from_curves_and_per_seed_values_do_not_verify(grokking_run, tmp_path):
    template, home, out, _ = grokking_run
    curve = _curve_value_no_fact_states(out)
    results = (f"Late in training the validation accuracy of one seed was {curve}, and AdamW with b2 0.98 was "
               "used. Significance is judged at the 0.05 level.")

    def answer(body):  # the Results section (its draft, refinement and repairs) states the numbers
        asked = " ".join(m["content"] for m in body["messages"] if m["role"] == "user")
        about_results = "Write the Results section" in asked or "This is the Results section" in asked
        return f"```latex\n{results if about_results else 'We study optimizers.'}\n```"

    with ScriptedServer(answer) as server:
        r = scientist("writeup", "--run-dir", str(out), "--home", str(home), "--templates-dir", str(template.parent),
                      "--writer", "llm", "--model", "openai/test-model", "--api-base", server.url)
    assert r.code == 0, r.text
    idea = json.loads((out / "summary.json").read_text())["ideas"][0]
    report = json.loads((out / idea["folder"] / "paper" / "claim_check.json").read_text())
    before = report["claims_before_fixes"]["unverified"]
    assert [c["written"] for c in before if c["section"] == "results"] == [curve]
    assert any(curve in s for s in report["struck_sentences"]) and idea["paper"]["struck_sentences"] >= 1
    claims = report["claims"]["claims"]
    assert not [c for c in claims if c["fact"] and ("seed_" in c["fact"] or "[" in c["fact"])]
    level = [c for c in claims if c["written"] == "0.05" and c["section"] == "results"]
    assert level and all(c["kind"] == "level" for c in level)
    row = next(line for line in r.out.splitlines() if idea["name"] in line)
    assert int(row.rstrip(" │").rsplit("│", 1)[1]) == idea["paper"]["struck_sentences"]  # the table's last column
