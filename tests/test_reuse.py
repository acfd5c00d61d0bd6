"""What users do to a home and its folders: delete output folders, reuse a home, run two sessions at once.

Every case goes through the real CLI, the real sandbox and the real store, and reads what a user
reads: the exit code, the files asked for, and the output as cron or CI capture it (a pipe).
"""

import json
import os
import shutil
import subprocess
import sys

from conftest import ROOT, own_caches, scientist, warm_home

from base.store import Store


def run_args(templates, home, out, *extra):
    return ("run", "--template", "discopop", "--templates-dir", str(templates), "--home", str(home),
            "--proposer", "evolve", "--ideas", "1", "--runs", "1", "--out", str(out), *extra)


def idea_run_dir(out):
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["ideas"][0]
    return out / entry["folder"] / "run_1", summary


def test_a_deleted_output_folder_is_written_again_from_the_store(tiny_templates, tmp_path):
    home = tmp_path / "home"
    first = scientist(*run_args(tiny_templates, home, tmp_path / "A"))
    assert first.code == 0, first.text
    shutil.rmtree(tmp_path / "A")

    # The same session again in a new folder: every run is reused, and its files are there, not elsewhere.
    again = scientist(*run_args(tiny_templates, home, tmp_path / "B"))
    assert again.code == 0, again.text
    assert "internal error" not in again.text
    out = tmp_path / "B"
    run_dir, summary = idea_run_dir(out)
    store = Store(home / "store.sqlite")
    base = store.get(summary["baseline"]["run_id"])
    assert json.loads((out / "baseline" / "final_info.json").read_text()) == base.final_info
    assert (out / "baseline" / "candidate" / "loss.py").read_text() == base.candidate_source["loss.py"]
    assert (out / "baseline" / "train.log").is_file()
    run = store.get(summary["ideas"][0]["runs"][0]["run_id"])
    assert json.loads((run_dir / "final_info.json").read_text()) == run.final_info
    assert (run_dir / "candidate" / "loss.py").read_text() == run.candidate_source["loss.py"]
    assert (run_dir / "train.log").is_file() and (run_dir / "eval.log").is_file()
    paper = summary["ideas"][0]["paper"]
    assert paper["status"] == "ok" and os.path.isfile(paper["pdf"])

    # Papers of a run whose run folders were deleted since: written again from the store first.
    shutil.rmtree(run_dir)
    shutil.rmtree(out / "baseline")
    w = scientist("writeup", "--run-dir", str(out), "--home", str(home), "--templates-dir", str(tiny_templates))
    assert w.code == 0, w.text
    assert json.loads((run_dir / "final_info.json").read_text()) == run.final_info
    assert (out / "baseline" / "final_info.json").is_file()

    # With a home whose store never saw these runs: one line saying what is missing, not a crash.
    shutil.rmtree(out / "baseline")
    other = scientist("writeup", "--run-dir", str(out), "--home", str(tmp_path / "other"), "--templates-dir",
                      str(tiny_templates))
    assert other.code == 1, other.text
    assert "baseline is missing its files" in other.err and "internal error" not in other.text
    assert len(other.err.strip().splitlines()) == 1


def test_a_cached_evaluation_still_writes_the_folder_asked_for(tiny_templates, home, tmp_path):
    args = ("eval", "--template", "discopop", "--templates-dir", str(tiny_templates), "--home", str(home))
    first = scientist(*args, "--out", str(tmp_path / "one"))
    assert first.code == 0, first.text
    second = scientist(*args, "--out", str(tmp_path / "two"))
    assert second.code == 0 and "cached" in second.out, second.text
    one, two = tmp_path / "one", tmp_path / "two"
    assert json.loads((two / "final_info.json").read_text()) == json.loads((one / "final_info.json").read_text())
    assert (two / "candidate" / "loss.py").read_text() == (one / "candidate" / "loss.py").read_text()
    assert (two / "train.log").read_text() == (one / "train.log").read_text()
    assert f"{two}/final_info.json" in second.out  # the path printed is the folder asked for


def test_two_sessions_at_once_on_a_fresh_home(tiny_templates, tmp_path):
    home = warm_home(own_caches(tmp_path / "home", "data"))  # fresh: no store, data or baseline yet
    env = {**os.environ, "TERM": "dumb"}
    extra = ("--no-writeup", "--ideas", "2", "--workers", "2")
    procs = [subprocess.Popen([sys.executable, "-m", "scientist", *run_args(tiny_templates, home, tmp_path / name,
                                                                             *extra)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
             for name in ("one", "two")]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, text in zip(procs, outputs, strict=True):
        assert p.returncode == 0, text
        assert "internal error" not in text and "database is locked" not in text
    # The data set and the baseline were made once: the second session waited for the first's.
    data = list((home / "cache" / "data").iterdir())
    assert [d for d in data if d.is_dir()] and not [d for d in data if ".tmp" in d.name]
    baselines = [r for r in Store(home / "store.sqlite").runs("discopop") if r.kind == "baseline"]
    assert len(baselines) == 1 and baselines[0].status == "ok"
    means = [json.loads((tmp_path / n / "summary.json").read_text())["baseline"]["mean"] for n in ("one", "two")]
    assert means[0] == means[1] == baselines[0].metric_mean
    # Four writers at once (two sessions, two ideas each): every run recorded, none left running, none lost.
    runs = Store(home / "store.sqlite").runs("discopop")
    assert runs and not [r for r in runs if r.status == "running"]
    recorded = {r.id for r in runs}
    for name in ("one", "two"):
        for idea in json.loads((tmp_path / name / "summary.json").read_text())["ideas"]:
            assert idea["runs"] and {e["run_id"] for e in idea["runs"] if e["run_id"]} <= recorded


def test_tables_are_whole_when_output_is_piped(tiny_templates, home, tmp_path):
    cand = tmp_path / "a_rather_long_candidate_name_for_the_table.py"
    cand.write_text((tiny_templates / "discopop" / "loss.py").read_text())
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    p = subprocess.run([sys.executable, "-m", "scientist", "eval", "--template", "discopop", "--templates-dir",
                        str(tiny_templates), "--home", str(home), "--candidate", str(cand)],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "…" not in p.stdout
    assert "│ a_rather_long_candidate_name_for_the_table │" in p.stdout
    assert any("final_info.json" in line and "a_rather_long" in line for line in p.stdout.splitlines())


def test_an_output_folder_of_another_session_is_refused_until_deleted(tiny_templates, home, tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(tiny_templates, templates)
    shutil.copytree(templates / "discopop", templates / "other")
    toml = templates / "other" / "template.toml"
    toml.write_text(toml.read_text().replace('name = "discopop"', 'name = "other"', 1))
    out = tmp_path / "X"

    def run(name):
        return scientist("run", "--template", name, "--templates-dir", str(templates), "--home", str(home),
                         "--proposer", "evolve", "--ideas", "1", "--runs", "1", "--out", str(out), "--no-writeup")

    assert run("discopop").code == 0
    refused = run("other")
    assert refused.code == 2 and "holds a session of template discopop" in refused.err, refused.text
    assert len(refused.err.strip().splitlines()) == 1
    assert json.loads((out / "summary.json").read_text())["template"] == "discopop"  # untouched
    shutil.rmtree(out)
    fresh = run("other")
    assert fresh.code == 0, fresh.text
    assert "starting" in fresh.out and json.loads((out / "summary.json").read_text())["template"] == "other"


def test_a_resumed_session_says_which_template_files_changed(tiny_templates, home, tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(tiny_templates, templates)
    args = ("run", "--template", "discopop", "--templates-dir", str(templates), "--home", str(home), "--proposer",
            "evolve", "--ideas", "1", "--runs", "1", "--out", str(tmp_path / "out"), "--no-writeup")
    assert scientist(*args).code == 0
    (templates / "discopop" / "README.md").write_text("papers-only files change nothing\n")
    again = scientist(*args)
    assert again.code == 0 and "changed since this session started" not in again.out
    assert "(cached)" in again.out
    harness = templates / "discopop" / "harness.py"
    harness.write_text(harness.read_text() + "\n# a change that computes the same\n")
    changed = scientist(*args)
    assert changed.code == 0, changed.text
    assert "note: template discopop changed since this session started (harness.py)" in changed.out
    assert "(cached)" not in changed.out
