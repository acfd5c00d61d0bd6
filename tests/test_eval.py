"""`scientist eval` and `scientist baseline` end to end, through the real sandboxes and evaluator."""

import json
import sqlite3

import psutil
import pytest
from conftest import DPO_SOURCE, scientist

from base.store import Store
from base.template import load_template
from scientist.runner import sandbox_cache


def run_eval(templates, home, *args):
    return scientist("eval", "--template", "discopop", "--templates-dir", str(templates), "--home", str(home),
                     *args)


def rows(home, **where):
    db = sqlite3.connect(home / "store.sqlite")
    db.row_factory = sqlite3.Row
    sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(f"{k}=?" for k in where) if where else "")
    return [dict(r) for r in db.execute(sql + " ORDER BY id", tuple(where.values()))]


@pytest.fixture(scope="module")
def baseline(tiny_templates, home):
    r = scientist("baseline", "--template", "discopop", "--templates-dir", str(tiny_templates),
                  "--home", str(home))
    assert r.code == 0, r.text
    # The home is the session's: other modules' runs are in it too, so take the baseline by kind.
    return [x for x in Store(home / "store.sqlite").runs("discopop") if x.kind == "baseline"][-1]


def test_baseline_is_computed_recorded_and_cached(baseline, tiny_templates, home):
    assert baseline.status == "ok" and baseline.kind == "baseline"
    info = baseline.final_info
    m = info["metrics"]["reward_gain_at_kl"]
    assert info["n"] == 2 and len(m["values"]) == 2 and m["ci95"][0] <= m["mean"] <= m["ci95"][1]
    assert m["mean"] > 0.0  # DPO improves on the reference even in the tiny setting
    assert {"sandbox_start", "compile", "train", "evaluate", "total"} <= set(baseline.timings)
    assert "HARNESS-FAIL" not in (baseline.error_tail or "")
    again = scientist("baseline", "--template", "discopop", "--templates-dir", str(tiny_templates),
                      "--home", str(home))
    assert again.code == 0 and "cached from run" in again.out
    assert len(rows(home, kind="baseline")) == 1
    listed = scientist("templates", "--templates-dir", str(tiny_templates), "--home", str(home))
    assert f"cached ({m['mean']:.4f})" in listed.out


FORGER = DPO_SOURCE + '''
import json, os
FORGED = {"metrics": {"reward_gain_at_kl": {"mean": 999.0, "values": [999.0, 999.0]}}}
for path in ("final_info.json", "../final_info.json", "artifacts/final_info.json"):
    try:
        with open(path, "w") as f:
            json.dump(FORGED, f)
    except OSError:
        pass
'''
IPO = "def loss(pc, pr, rc, rr, beta):\n    return ((pc - pr) - (rc - rr) - 1 / (2 * beta)) ** 2\n"


def test_forged_final_info_changes_nothing(baseline, tiny_templates, home, candidate, tmp_path):
    forger = candidate("forger", FORGER)
    out = tmp_path / "run"
    r = run_eval(tiny_templates, home, "--candidate", str(forger), "--out", str(out))
    assert r.code == 0, r.text
    info = json.loads((out / "final_info.json").read_text())
    got = info["metrics"]["reward_gain_at_kl"]["values"]
    want = baseline.final_info["metrics"]["reward_gain_at_kl"]["values"]
    assert got == pytest.approx(want, rel=1e-5)  # same training as DPO, scored by the evaluator alone
    assert "no significant difference" in r.out


BAD = {
    "syntax": ("def loss(a, b, c, d, beta)\n    return a\n", "syntax error at line 1"),
    "signature": ("def loss(a, b, beta):\n    return a\n", "must accept 5 positional arguments"),
    "no_function": ("LOSS = 1\n", "does not define a function 'loss'"),
    "nan": ("import jax.numpy as jnp\ndef loss(a, b, c, d, beta):\n    return a * jnp.nan\n",
            "NaN or infinite values"),
    "shape": ("import jax.numpy as jnp\ndef loss(a, b, c, d, beta):\n    return jnp.sum(a)\n",
              "one value per example"),
    "raises": ("def loss(a, b, c, d, beta):\n    raise ValueError('boom')\n",
               "loss raised while being traced: ValueError: boom"),
    "import_error": ("import not_a_module\n", "failed to import: ModuleNotFoundError"),
    # A loss shaped offline and baked into the export as a 2 x 4096-point table: values computed before the run
    # must be arguments the harness computed, never constants of an export.
    "baked": ("import jax, jax.numpy as jnp, numpy as np\nXS = np.linspace(-20, 20, 4096)\n"
              "YS = -np.log(1 / (1 + np.exp(-XS)))\ndef loss(a, b, c, d, beta):\n"
              "    return jnp.interp(beta * ((a - b) - (c - d)), XS, YS)\n",
              "bytes of constants, more than the limit of 16,384"),
    # Finite on the gate's tiny batch (log-probs in [-4, -1]), NaN once training meets log-probs below -6.
    "diverges": ("import jax.numpy as jnp\ndef loss(a, b, c, d, beta):\n    return -(a - b) + 0 * jnp.sqrt(b + 6)\n",
                 "training diverged"),
}


@pytest.mark.parametrize("sandbox", ["bwrap", "process"])
@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_candidate_is_a_failed_run_with_one_line_reason(name, sandbox, tiny_templates, home, candidate):
    source, reason = BAD[name]
    r = run_eval(tiny_templates, home, "--candidate", str(candidate(name, source)), "--sandbox", sandbox)
    assert r.code == 1, r.text
    assert reason in r.err and "Traceback" not in r.text
    failed = [line for line in r.err.splitlines() if "failed:" in line]
    assert len(failed) == 1
    row = rows(home)[-1]
    assert row["status"] == "failed" and reason in row["reason"] and "\n" not in row["reason"]
    assert row["candidate_source"] and json.loads(row["candidate_source"])["loss.py"] == source


def _leftovers(marker: str) -> list:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if marker in " ".join(p.info["cmdline"] or []):
            found.append(p)
    return found


@pytest.mark.parametrize("sandbox_args", ["bwrap", "process", "docker"], indirect=True)
def test_sleeper_is_killed_at_the_time_limit_with_its_children(sandbox_args, tmp_path, candidate):
    from conftest import write_tiny_template

    templates = tmp_path / "t"
    root = write_tiny_template(templates)  # the run may take 40 s, the tracer (which imports the candidate) 6
    toml = (root / "template.toml").read_text()
    (root / "template.toml").write_text(toml.replace("[limits]\n", "[limits]\ntrace_time_s = 6\n", 1))
    marker = f"98765{len(sandbox_args[1])}"
    sleeper = candidate("sleeper", f'''
import subprocess, time
subprocess.Popen(["sleep", "{marker}"])
subprocess.Popen(["sleep", "{marker}"], start_new_session=True)  # tries to escape the process group
time.sleep(10**6)
''')
    r = run_eval(templates, tmp_path / "h", "--candidate", str(sleeper), *sandbox_args)
    assert r.code == 1 and "timed out: the run's tracer (importing and exporting the candidate) exceeded its time " \
        "limit of 6 s ([limits] trace_time_s)" in r.err
    assert _leftovers(marker) == []


@pytest.mark.parametrize("sandbox_args", ["bwrap", "process", "docker"], indirect=True)
def test_memory_bomb_is_stopped(sandbox_args, tiny_templates, home, candidate):
    bomb = candidate("bomb", "chunks = []\nwhile True:\n    chunks.append(b'x' * (64 * 2**20))\n")
    r = run_eval(tiny_templates, home, "--candidate", str(bomb), *sandbox_args)
    assert r.code == 1 and "out of memory" in r.err and "1500 MB" in r.err
    assert rows(home)[-1]["status"] == "failed"


def test_next_run_works_after_failures(baseline, tiny_templates, home, candidate, tmp_path):
    ipo = candidate("ipo", IPO)
    r = run_eval(tiny_templates, home, "--candidate", str(ipo), "--out", str(tmp_path / "ipo"))
    assert r.code == 0, r.text
    assert (tmp_path / "ipo" / "final_info.json").is_file()
    assert (tmp_path / "ipo" / "candidate" / "loss.py").read_text().startswith("def loss")
    assert "p=" in r.out and "vs baseline: Welch's t-test (two-sided)" in r.out  # with the cached baseline


def test_several_candidates_are_one_holm_family_and_paired_on_request(baseline, tiny_templates, home, candidate):
    from base.stats import PAIRED, PAIRED_WHY, format_p, holm
    from scientist.experiment import compare_runs

    # Computed again (--force), both at once on two worker slots.
    r = run_eval(tiny_templates, home, "--candidate", str(candidate("ipo", IPO)), "--candidate",
                 str(candidate("forger", FORGER)), "--test", "paired", "--workers", "2", "--force")
    assert r.code == 0, r.text
    store = Store(home / "store.sqlite")
    runs = [[x for x in store.runs("discopop") if x.status == "ok" and x.candidate_source["loss.py"] == src][-1]
            for src in (IPO, FORGER)]
    spans = [(row["created"], row["finished"]) for row in rows(home) if row["id"] in {x.id for x in runs}]
    assert max(a for a, _ in spans) < min(b for _, b in spans), spans  # they ran at the same time
    cs = [compare_runs(x, baseline, "reward_gain_at_kl", "max", "paired") for x in runs]
    assert all(c.test == PAIRED for c in cs)  # same template and seeds as the baseline: seed s pairs with seed s
    for c, p_holm in zip(cs, holm([c.p_value for c in cs]), strict=True):
        assert f"{c.difference:+.4f}, {format_p(c.p_value)}, {format_p(p_holm, 'Holm p')}," in r.out
    assert f"vs baseline: {PAIRED} ({PAIRED_WHY}" in r.out and "; Holm-adjusted over the 2 candidates" in r.out
    r = run_eval(tiny_templates, home, "--test", "student")
    assert r.code == 2 and "--test must be welch or paired, not 'student'" in r.err


def test_same_candidate_is_not_recomputed(baseline, tiny_templates, home, candidate):
    dpo = candidate("dpo_copy", DPO_SOURCE)
    r = run_eval(tiny_templates, home, "--candidate", str(dpo))
    assert r.code == 0 and f"cached from run {baseline.id}" in r.out
    forced = run_eval(tiny_templates, home, "--candidate", str(dpo), "--force", "--seeds", "2")
    assert forced.code == 0 and "cached" not in forced.out


def test_a_new_candidates_compilation_cache_starts_as_a_copy_of_the_shipped_ones(baseline, tiny_templates, home,
                                                                                candidate, tmp_path):
    """Programs of the harness that the candidate does not change are compiled once per template version: a new
    candidate's cache is a copy of the shipped candidate's (a copy: the shipped cache stays as it was)."""
    caches = home / "cache" / "jax-sandbox"
    pointer = caches / f"discopop-{load_template('discopop', tiny_templates).content_hash()[:16]}.shipped"
    shipped = caches / pointer.read_text()

    def entries(folder):
        return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.endswith(("-atime", ".lockfile"))}

    before = entries(shipped)
    assert before  # the baseline's run compiled something
    scaled = candidate("scaled_beta", DPO_SOURCE.replace("beta * rho", "1.0123 * beta * rho"))
    r = run_eval(tiny_templates, home, "--candidate", str(scaled), "--out", str(tmp_path / "run"))
    assert r.code == 0, r.text
    own = sandbox_cache(home, "discopop", tmp_path / "run" / "work" / "exports")
    assert own != shipped and set(before) <= set(entries(own))
    assert entries(shipped) == before


def test_missing_candidate_file_and_bad_seeds(tiny_templates, home, tmp_path):
    r = run_eval(tiny_templates, home, "--candidate", str(tmp_path / "nope.py"))
    assert r.code == 2 and "does not exist" in r.err and "Traceback" not in r.text
    r = run_eval(tiny_templates, home, "--seeds", "1")
    assert r.code == 2 and "--seeds must be at least 2" in r.err
    r = run_eval(tiny_templates, home, "--sandbox", "docker-ish")
    assert r.code == 2 and "unknown sandbox" in r.err


def test_out_folder_keeps_what_the_user_had_there(tiny_templates, home, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "my_notes.txt").write_text("precious")
    r = run_eval(tiny_templates, home, "--out", str(out), "--force")
    assert r.code == 0, r.text
    assert (out / "my_notes.txt").read_text() == "precious" and (out / "final_info.json").is_file()


def test_relative_home_works_from_any_folder(tiny_templates, tmp_path):
    # The default --home is relative (.scientist); sandboxes mount folders under it, so it must be made absolute.
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-m", "scientist", "eval", "--template", "discopop", "--templates-dir",
                        str(tiny_templates), "--home", "rel-home", "--sandbox", "bwrap"],
                       cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (tmp_path / "rel-home" / "store.sqlite").is_file() and not (tmp_path / "rel-home" / "rel-home").exists()
