"""The lab's templates as a lab runs them: one night of a campaign each, at the template's TINY size.

Each night goes through the real CLI and bwrap: the evolve proposer's idea trained sealed against the baseline,
its paper written by the template writer from the template's own LaTeX and figures, the idea confirmed on fresh
seeds when it beat the baseline in the search, the digest written. The template and its sizes are those of the
template's `once_per_run` eval fixture (conftest; its test module's `TINY`), and the night's home starts as a copy
of that fixture's home, so the baseline the fixture computed is reused (its files copied from its run folder) and
each night trains only its own candidate and confirmation runs. Then `scientist run --proposer evolve` in the same
home: one idea and its run (the baseline reused), its files and paper written where asked.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import scientist
from pypdf import PdfReader

from base.stats import better
from base.store import Store, source_hash
from base.template import load_template
from scientist.campaign_store import confirmations

# The eval fixture (made here when its own module has not made it yet) and the night: minutes on a loaded machine.
pytestmark = pytest.mark.timeout(2700)

# template -> its eval fixture in conftest: (template folder at TINY, home with its baseline, runs, Result)
LAB = {"navix": "navix_eval", "hades": "hades_eval", "synthenv": "synthenv_eval"}


def night_file(path: Path, template: Path) -> Path:
    """A campaign of one idea of one run, confirmed on 2 fresh seeds, papers by the template writer, no review."""
    keys = {"name": f"lab-{template.name}", "template": template.name, "templates_dir": str(template.parent),
            "proposer": "evolve", "ideas": 1, "runs": 1, "confirm_seeds": 2, "confirm_top": 1, "sandbox": "bwrap",
            "writeup": True, "review": False}
    path.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in keys.items()) + "\n")
    return path


def shipped_runs(home: Path, root: Path) -> list[int]:
    """The ids of the runs of the template's shipped code on the search's seeds (draw 0; confirmations draw fresh
    ones): a baseline is a run of them, whichever command made it."""
    shipped = source_hash(load_template(str(root)).editable_sources())
    return [r.id for r in Store(home / "store.sqlite").runs() if r.candidate_hash == shipped and not r.draw]


def prose(tex: str) -> str:
    """The longest stretch of plain words on the first prose line of a LaTeX file (no command, no brace in it)."""
    for line in tex.splitlines():
        line = line.strip()
        if line and not line.startswith(("%", "\\")):
            stretch = max(re.split(r"[~\\{}$]", line), key=len).strip()
            if len(stretch) > 25:
                return stretch
    raise AssertionError("no prose line")


@pytest.mark.parametrize("name", LAB)
def test_a_night_runs_evolve_writes_the_templates_paper_and_confirms(name, request, tmp_path):
    root, fixture_home, _, _ = request.getfixturevalue(LAB[name])
    home = shutil.copytree(fixture_home, tmp_path / "home", symlinks=True)  # the caches stay links to shared ones
    baselines = shipped_runs(home, root)
    assert baselines, "the fixture evaluated the shipped code: the night's baseline"
    r = scientist("nightly", str(night_file(tmp_path / "night.toml", root)), "--home", str(home), timeout=900)
    assert r.code == 0 and "Traceback" not in r.text, r.text
    assert shipped_runs(home, root) == baselines  # the fixture's run was the baseline, not computed again
    check_night(name, root, home, tmp_path / "figures")
    check_run(name, root, home, tmp_path / "run")


def check_run(name: str, root: Path, home: Path, out: Path) -> None:
    """`scientist run --proposer evolve` in the night's home: one idea (the proposer skips the genome the night ran
    and proposes another), its one run trained sealed beside the home's baseline (reused, not trained again), its
    files and paper written into the folder asked for."""
    store = Store(home / "store.sqlite")
    before = {r.id for r in store.runs()}
    r = scientist("run", "--template", name, "--templates-dir", str(root.parent), "--home", str(home),
                  "--proposer", "evolve", "--ideas", "1", "--runs", "1", "--writer", "template", "--no-review",
                  "--sandbox", "bwrap", "--out", str(out), timeout=900)
    assert r.code == 0 and "Traceback" not in r.text, r.text
    # At most the idea's run is new (none if the proposer met a genome the home has run): the baseline came from
    # the store.
    new = [r for r in store.runs() if r.id not in before]
    shipped = source_hash(load_template(str(root)).editable_sources())
    assert len(new) <= 1 and all(r.status == "ok" and r.candidate_hash != shipped for r in new), new
    (idea,) = json.loads((out / "summary.json").read_text())["ideas"]
    assert idea["status"] == "done"
    assert (out / idea["folder"] / "run_1" / "final_info.json").is_file()  # the files, not only the record
    assert idea["paper"]["status"] == "ok" and idea["paper"]["struck_sentences"] == 0, idea["paper"]
    assert Path(idea["paper"]["pdf"]).is_file() and Path(idea["paper"]["pdf"]).is_relative_to(out)
    tex = Path(idea["paper"]["tex"]).read_text()
    assert prose((root / "latex" / "setup.tex").read_text()) in tex


def check_night(name: str, root: Path, home: Path, scratch: Path) -> None:
    """The night's idea, paper, confirmation and digest, as the night left them in its home."""
    night = next((home / "campaigns" / f"lab-{name}" / "nights").iterdir())
    summary = json.loads((night / "summary.json").read_text())
    assert summary["proposer"] == "evolve" and summary["template"] == name
    idea = summary["ideas"][0]
    assert idea["name"] == "evolve_000" and idea["status"] == "done", idea

    # The paper: compiled, nothing struck, the template's own text, bibliography and figures in it.
    paper = idea["paper"]
    assert paper["status"] == "ok" and paper["struck_sentences"] == 0, paper
    folder = night / idea["folder"] / "paper"
    tex = (folder / "paper.tex").read_text()
    for part in ("background", "setup"):
        assert prose((root / "latex" / f"{part}.tex").read_text()) in tex, part
    keys = set(re.findall(r"@\w+\{([^,]+),", (root / "latex" / "references.bib").read_text()))
    assert keys <= set(re.findall(r"@\w+\{([^,]+),", (folder / "references.bib").read_text()))
    figures = importlib.util.spec_from_file_location(f"lab_figures_{name}", root / "figures.py")
    module = importlib.util.module_from_spec(figures)
    figures.loader.exec_module(module)
    best = json.loads((night / idea["folder"] / "run_1" / "final_info.json").read_text())
    base = json.loads((night / "baseline" / "final_info.json").read_text())
    made = module.figures(best, base, scratch)
    assert made and all(f.path.stem in tex for f in made), [f.path.name for f in made]
    text = " ".join(page.extract_text() for page in PdfReader(paper["pdf"]).pages)
    assert summary["metric"]["name"].replace("_", " ") in text.replace("_", " ")

    # Confirmed on fresh seeds exactly when it beat the baseline in the search.
    search, baseline = idea["best"]["metric"]["mean"], summary["baseline"]["mean"]
    rows = confirmations(Store(home / "store.sqlite"), f"lab-{name}")
    assert len(rows) == int(better(search, baseline, summary["metric"]["direction"])), (search, baseline)
    for row in rows:
        assert row["result"] is not None and row["result"].n == 2 and row["draw"] not in (None, 0), row
    digest = (night / "digest.md").read_text()
    assert summary["metric"]["name"] in digest and "evolve_000" in digest
