"""Papers from a recorded run: real latexmk, the claim check, citation and LaTeX-error repair via the scripted LLM.

The recorded run is a real `scientist run --proposer evolve` on the tiny template
(with --no-writeup); the papers are then written by `scientist writeup`, as a user
would after a finished run.
"""

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import once_per_run, scientist, write_tiny_template
from llm_server import ScriptedServer
from pypdf import PdfReader


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """(templates dir, home, run folder) of a finished offline run with one idea of two runs, made once per pytest
    run (under xdist both workers' tests read the run folder and share the home, as two users of one home do)."""

    def make(root: Path):
        write_tiny_template(root / "templates")
        return scientist("run", "--template", "discopop", "--templates-dir", str(root / "templates"), "--home",
                         str(root / "home"), "--out", str(root / "run"), "--proposer", "evolve", "--ideas", "1",
                         "--runs", "2", "--no-writeup", "--no-review", timeout=400)

    root, r = once_per_run(tmp_path_factory, "papers_recorded", make)
    assert r.code == 0, r.text
    return root / "templates", root / "home", root / "run"


def copy_run(recorded, tmp_path):
    templates, home, out = recorded
    dest = tmp_path / "run"
    shutil.copytree(out, dest, ignore=shutil.ignore_patterns("work"))
    # summary.json's run_dir paths point into the original folder; the writer reads relative to the run folder.
    return templates, home, dest


def writeup(templates, home, run_dir, *args):
    return scientist("writeup", "--run-dir", str(run_dir), "--templates-dir", str(templates), "--home", str(home),
                     *args, timeout=400)


def pdf_text(path) -> str:
    return " ".join(" ".join((page.extract_text() or "").split()) for page in PdfReader(path).pages)


def test_template_writer_compiles_a_complete_paper_with_the_logged_numbers(recorded, tmp_path):
    templates, home, run = copy_run(recorded, tmp_path)
    r = writeup(templates, home, run)
    assert r.code == 0, r.text
    summary = json.loads((run / "summary.json").read_text())
    idea = summary["ideas"][0]
    paper = idea["paper"]
    assert paper["status"] == "ok" and paper["unverified_numbers"] == 0 and paper["struck_sentences"] == 0
    assert "struck sentences" in r.out  # a column of the writeup's table
    folder = run / idea["folder"] / "paper"
    for name in ("paper.pdf", "paper.tex", "references.bib", "claim_check.json", "figures/metric_per_run.pdf",
                 "figures/reward_kl_frontier.pdf"):
        assert (folder / name).is_file(), name
    text = pdf_text(folder / "paper.pdf")
    assert idea["title"].split(":")[0] in text
    base = summary["baseline"]
    assert f"{base['mean']:.4f}" in text and f"{base['stderr']:.4f}" in text  # the results table
    best = idea["best"]["metric"]
    assert f"{best['mean']:.4f}" in text and "Welch" in text and "References" in text
    report = json.loads((folder / "claim_check.json").read_text())
    assert report["claims"]["checked"] > 10 and report["claims"]["unverified"] == []
    assert report["writer"] == "template" and report["compile_errors"] == []
    assert report["bibliography"] == {"overridden": []} and report["verdict_check"]["checked"] is False


SECTION_TEXT = {
    "abstract": "We evaluate an evolved preference loss on a contextual bandit.",
    "introduction": "Preference optimisation matters \\cite{rafailov2023direct}.",
    "background": "DPO minimises a logistic loss \\cite{rafailov2023direct}.",
    "method": "We mutate the loss and keep the best version \\undefinedmacro{} of it.",
    "experimental_setup": "Each run is scored by a sealed evaluator \\cite{lu2024aiscientist}.",
    "results": "Our loss reaches a reward gain of 9.8765, far above the baseline. The difference is small.",
    "related_work": "Automated discovery was proposed before \\cite{lu2024aiscientist, nosuchpaper2099}.",
    "conclusion": "The loss is not significantly better than DPO.",
}


def answer(body: dict) -> str:
    """Scripted writer: a draft per section, the same text when asked to refine, and repairs on request."""
    last = body["messages"][-1]["content"]
    if last.startswith("Criticise"):
        draft = body["messages"][-2]["content"]
        return draft
    if "failed to compile" in last:
        return "```latex\nWe mutate the loss and keep the best version of it.\n```"
    if "match none of the logged values" in last:
        # A stubborn model: the repair keeps the wrong number, so the check must strike the sentence.
        return f"```latex\n{SECTION_TEXT['results']}\n```"
    match = re.search(r"Write the (.+?) section", last)
    name = {"Abstract": "abstract", "Introduction": "introduction", "Background": "background", "Method": "method",
            "Experimental Setup": "experimental_setup", "Results": "results", "Related Work": "related_work",
            "Conclusion": "conclusion"}[match.group(1)]
    return f"Here it is.\n\n```latex\n{SECTION_TEXT[name]}\n```"


def test_llm_writer_strikes_a_wrong_number_drops_a_bad_citation_and_repairs_latex(recorded, tmp_path):
    templates, home, run = copy_run(recorded, tmp_path)
    with ScriptedServer(answer) as server:
        r = writeup(templates, home, run, "--writer", "llm", "--model", "openai/test-model", "--api-base", server.url)
        asked = [m["content"] for req in server.requests for m in req["messages"] if m["role"] == "user"]
    assert r.code == 0, r.text
    idea = json.loads((run / "summary.json").read_text())["ideas"][0]
    folder = run / idea["folder"] / "paper"
    report = json.loads((folder / "claim_check.json").read_text())
    # The planted wrong number went back to the model, then was struck out of the final paper.
    assert any("9.8765" in a for a in asked if "failed to compile" not in a and "Write the" not in a)
    assert [c["written"] for c in report["claims_before_fixes"]["unverified"]] == ["9.8765"]
    assert any("9.8765" in s for s in report["struck_sentences"])
    assert idea["paper"]["struck_sentences"] >= 1
    assert report["claims"]["unverified"] == []
    tex = (folder / "paper.tex").read_text()
    assert "9.8765" not in tex and "The difference is small." in tex
    # The citation key that is not in the bibliography was removed, the real one kept.
    assert report["dropped_citations"] == ["nosuchpaper2099"] and "nosuchpaper2099" not in tex
    assert "\\cite{lu2024aiscientist}" in tex
    # The LaTeX error was fed back once and fixed by the model.
    assert len(report["compile_errors"]) == 1 and "Undefined control sequence" in report["compile_errors"][0]
    assert "\\undefinedmacro" not in tex and idea["paper"]["status"] == "ok"
    text = pdf_text(folder / "paper.pdf")
    assert "9.8765" not in text and "evolved preference loss" in text


def test_a_figure_that_cannot_be_made_leaves_a_paper_without_it(recorded, tmp_path):
    templates, home, run = copy_run(recorded, tmp_path)
    broken = tmp_path / "templates"
    shutil.copytree(templates, broken)
    (broken / "discopop" / "figures.py").write_text("def figures(best, baseline, out_dir):\n    raise KeyError('kl')\n")
    r = writeup(broken, home, run)
    assert r.code == 0, r.text
    idea = json.loads((run / "summary.json").read_text())["ideas"][0]
    report = json.loads((run / idea["folder"] / "paper" / "claim_check.json").read_text())
    assert any("figures.py failed: KeyError" in p for p in report["figure_problems"])
    assert idea["paper"]["status"] == "ok" and idea["paper"]["figures"] == 1


def test_a_broken_harness_stops_the_run_before_any_idea_with_a_clear_message(tmp_path):
    templates = tmp_path / "t"
    write_tiny_template(templates)
    harness = templates / "discopop" / "harness.py"
    source = harness.read_text()
    assert source.count("    gate(loss, ") == 1
    harness.write_text(source.replace("    gate(loss, ", "    sealed.fail('planted')\n    gate(loss, "))
    out = tmp_path / "run"
    r = scientist("run", "--template", "discopop", "--templates-dir", str(templates), "--home", str(tmp_path / "h"),
                  "--out", str(out), "--proposer", "evolve", "--ideas", "1", "--runs", "1", "--attempts", "1",
                  "--no-review", timeout=400)
    # The baseline itself fails with this harness, so the session stops before any idea: a clear message.
    assert r.code == 1 and "the baseline of discopop failed: planted" in r.text
    assert json.loads((out / "summary.json").read_text())["status"] == "stopped"


def test_scientist_run_writes_a_paper_per_idea_by_default(recorded, tmp_path):
    templates, home, _ = recorded
    out = tmp_path / "run"
    r = scientist("run", "--template", "discopop", "--templates-dir", str(templates), "--home", str(home), "--out",
                  str(out), "--proposer", "evolve", "--seed", "7", "--ideas", "1", "--runs", "1", "--no-review",
                  timeout=400)
    assert r.code == 0, r.text
    idea = json.loads((out / "summary.json").read_text())["ideas"][0]
    assert idea["paper"]["status"] == "ok" and (out / idea["folder"] / "paper" / "paper.pdf").is_file()
    assert f"paper: {idea['paper']['pdf']} ({idea['paper']['struck_sentences']} struck sentences)" in " ".join(
        r.out.split())


def test_negative_report_from_a_recorded_failed_idea(recorded, tmp_path):
    templates, home, run = copy_run(recorded, tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    idea = summary["ideas"][0]
    for entry in idea["runs"]:  # rewrite the record as if every attempt had failed
        entry.update(status="failed", reason="loss raised on a tiny batch: ValueError: boom")
        entry.pop("metric", None)
    idea.update(status="failed", reason="run 1 failed in all 4 attempts", best=None)
    (run / "summary.json").write_text(json.dumps(summary))
    r = writeup(templates, home, run)
    assert r.code == 0, r.text
    folder = run / idea["folder"] / "paper"
    text = pdf_text(folder / "paper.pdf")
    assert "negative report" in text and "ValueError: boom" in text and "Reason" in text


def test_latex_that_never_compiles_is_writeup_failed_with_the_first_error(recorded, tmp_path):
    templates, home, run = copy_run(recorded, tmp_path)

    def stubborn(body):
        last = body["messages"][-1]["content"]
        if "failed to compile" in last:
            return "```latex\nStill broken \\alsoundefined{} here.\n```"
        if last.startswith("Criticise"):
            return body["messages"][-2]["content"]
        return "```latex\nText with \\undefinedmacro{} inside.\n```"

    with ScriptedServer(stubborn) as server:  # a home of its own: the same prompts were answered before
        r = writeup(templates, tmp_path / "home", run, "--writer", "llm", "--model", "openai/test-model",
                    "--api-base", server.url)
    assert r.code == 1
    idea = json.loads((run / "summary.json").read_text())["ideas"][0]
    paper = idea["paper"]
    assert paper["status"] == "writeup_failed" and "Undefined control sequence" in paper["reason"]
    assert os.path.isfile(paper["tex"]) and os.path.isfile(paper["log"])
    report = json.loads((run / idea["folder"] / "paper" / "claim_check.json").read_text())
    assert len(report["compile_errors"]) == 4  # the first try and three fix rounds


def test_missing_latex_is_detected_before_any_model_call(tiny_templates, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("python3", "bwrap"):  # everything but LaTeX
        if shutil.which(tool):
            os.symlink(shutil.which(tool), bin_dir / tool)
    with ScriptedServer([]) as server:
        env_path = os.environ["PATH"]
        os.environ["PATH"] = str(bin_dir)
        try:
            r = scientist("run", "--template", "discopop", "--templates-dir", str(tiny_templates), "--home",
                          str(tmp_path / "h"), "--model", "openai/test-model", "--api-base", server.url)
        finally:
            os.environ["PATH"] = env_path
        assert server.requests == []
    assert r.code == 2 and "apt-get install" in r.err and "latexmk" in r.err and "Traceback" not in r.text


def test_writeup_bad_inputs(tmp_path, recorded):
    templates, home, run = recorded
    r = writeup(templates, home, tmp_path)
    assert r.code == 2 and "holds no summary.json" in r.err
    r = writeup(templates, home, run, "--idea", "nope")
    assert r.code == 2 and "no idea 'nope'" in r.err
    r = writeup(templates, home, run, "--writer", "llm")
    assert r.code == 2 and "--writer must be template, or llm together with --model" in r.err


def test_papers_found_by_the_literature_search_are_citable(recorded, tmp_path):
    from papers.render import bib_keys, fix_citations, literature_bib

    found = [{"title": "Direct Preference {Optimization}", "year": 2023, "venue": "NeurIPS", "url": "https://x.org/1"},
             {"title": "KTO", "year": None, "venue": "", "url": ""}]
    bib = literature_bib(found)
    assert bib_keys(bib) == {"lit1", "lit2"} and "{Optimization}" not in bib
    text, dropped = fix_citations("As shown \\cite{lit1,lit9}.", bib_keys(bib))
    assert text == "As shown \\cite{lit1}." and dropped == ["lit9"]
    # And through the whole writer: the idea's literature ends up in references.bib and compiles.
    templates, home, run = copy_run(recorded, tmp_path)
    ideas = json.loads((run / "ideas.json").read_text())
    ideas[0]["literature"] = found
    (run / "ideas.json").write_text(json.dumps(ideas))
    r = writeup(templates, home, run)
    assert r.code == 0, r.text
    idea = json.loads((run / "summary.json").read_text())["ideas"][0]
    assert "@misc{lit1," in (run / idea["folder"] / "paper" / "references.bib").read_text()


def test_a_paper_the_model_writes_no_latex_for_fails_alone_and_the_next_is_written(tiny_templates, tmp_path):
    # What SmolLM2 did in make demo-llm: no ```latex block in 3 tries. Before, that stopped the whole paper
    # stage; now that paper is writeup_failed with the reason, the next idea's paper is written, and
    # summary.json counts the writer's calls.
    asked = []

    def model(body):
        asked.append(body)
        if len(asked) <= 3:  # the first paper's abstract, asked and re-asked twice
            return "I would write an abstract here, but no LaTeX block."
        return answer(body)

    out = tmp_path / "run"
    with ScriptedServer(model) as server:
        r = scientist("run", "--template", "discopop", "--templates-dir", str(tiny_templates), "--home",
                      str(tmp_path / "home"), "--out", str(out), "--proposer", "evolve", "--ideas", "2", "--runs",
                      "1", "--writer", "llm", "--model", "openai/test-model", "--api-base", server.url,
                      "--no-review", timeout=600)
    assert r.code == 0 and "Traceback" not in r.text, r.text
    summary = json.loads((out / "summary.json").read_text())
    first, second = (i["paper"] for i in summary["ideas"])
    assert first["status"] == "writeup_failed" and first["reason"].startswith(
        "the model wrote no usable LaTeX: no LaTeX block after 3 tries: no ```latex fenced block found")
    assert second["status"] == "ok" and os.path.isfile(second["pdf"])
    assert summary["llm_calls"] == len(asked) > 3
