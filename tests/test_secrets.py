"""Secrets per home (base.secrets): drawn on first use, kept in the store, seen only by the trusted evaluator.

Cheap checks on a real store, the rule checked on every template, and one real session (tiny
DiscoPOP, the real CLI and sandbox, secrets drawn) whose every written file is searched for them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, own_caches, scientist

from base.secrets import BITS, SecretsError, home_secrets, resolve_private, secret_keys
from base.store import Store, run_key, source_hash
from base.template import load_template
from sandbox import backends
from scientist import runner

TEMPLATES = {**{p.parent.name: p.parent for p in (ROOT / "templates").glob("*/template.toml")},
             "grokking": ROOT / "tests" / "fixtures" / "grokking"}
# What the rule (an integer whose key ends in _seed) makes secret in each template, and what stays as configured.
SECRET = {
    "discopop": {"world_seed", "train_prompts_seed", "pairs_seed", "eval_seed"},
    "diffusion": {"data_seed", "heldout_seed", "sample_seed"},
    "kinetix": {"eval_seed"},
    "navix": {"eval_seed"},
    "open": {"eval_seed"},
    "transformer": {"split_seed", "eval_seed"},
    "grokking": {"split_seed"},
}
PUBLIC = {"eval_prompts", "episodes_per_level", "episodes_per_env", "val_fraction", "eval_windows", "adam_reference"}


@pytest.mark.parametrize("name", sorted(SECRET))
def test_every_templates_private_fits_the_rule(name):
    spec = load_template(str(TEMPLATES[name])).spec
    assert set(secret_keys(spec.private)) == SECRET[name]
    # Whatever else [private] holds is a size, a fraction or a measured reference, never a seed by another name.
    assert set(spec.private) - SECRET[name] <= PUBLIC
    for profile in spec.profiles:  # a profile may change a value, never what is secret
        assert set(secret_keys(load_template(str(TEMPLATES[name])).with_profile(profile).spec.private)) == SECRET[name]


def test_resolve_private_replaces_only_the_secrets_and_each_draw_is_fresh():
    private = {"world_seed": 1, "eval_prompts": 512, "ref": {"inner_seed": 3, "return": 2.5}, "flag_seed": True}
    assert set(secret_keys(private)) == {"world_seed", "ref.inner_seed"}  # a bool is not a seed
    secrets = {"world_seed": 2**62 + 5, "ref.inner_seed": 99}
    home = resolve_private(private, secrets)
    assert home == {"world_seed": 2**62 + 5, "eval_prompts": 512, "ref": {"inner_seed": 99, "return": 2.5},
                    "flag_seed": True}
    assert private["world_seed"] == 1  # the template's table is left as it was
    draws = [resolve_private(private, secrets, k) for k in (1, 2)]
    for d in draws:
        assert d["eval_prompts"] == 512 and d["ref"]["return"] == 2.5
        assert 0 <= d["world_seed"] < 2**BITS and d["world_seed"] not in (secrets["world_seed"], 1)
        assert d["ref"]["inner_seed"] != 99
    assert draws[0]["world_seed"] != draws[1]["world_seed"]
    assert draws[0] == resolve_private(private, secrets, 1)  # a draw is a function of (secret, k): reproducible
    # The draw is sha256 of "secret:k", so a draw's value says nothing of the secret without it.
    digest = hashlib.sha256(f"{2**62 + 5}:1".encode()).digest()[:8]
    assert draws[0]["world_seed"] == int.from_bytes(digest, "big") >> 1
    with pytest.raises(SecretsError, match="no secret for \\[private\\] ref.inner_seed"):
        resolve_private(private, {"world_seed": 1})


def test_fresh_homes_draw_their_own_secrets_and_keep_them(tmp_path, drawn_secrets):
    template = load_template(str(TEMPLATES["discopop"]))
    first, second = Store(tmp_path / "a.sqlite"), Store(tmp_path / "b.sqlite")
    a, b = home_secrets(first, template), home_secrets(second, template)
    assert set(a) == SECRET["discopop"] and set(a.values()).isdisjoint(b.values())
    assert all(2**32 <= v < 2**BITS for v in [*a.values(), *b.values()])  # (2**-31 odds of a false failure)
    shipped = secret_keys(template.spec.private)
    assert set(a.values()).isdisjoint(shipped.values())
    first.close()
    assert home_secrets(Store(tmp_path / "a.sqlite"), template) == a  # the same home, later: its own again


def test_shipped_values_are_a_fixture_the_home_then_keeps(tmp_path, monkeypatch):
    template = load_template(str(TEMPLATES["transformer"]))
    monkeypatch.setenv("SCIENTIST_SECRETS", "shipped")
    store = Store(tmp_path / "store.sqlite")
    assert home_secrets(store, template) == {"split_seed": 20241125, "eval_seed": 7}
    monkeypatch.setenv("SCIENTIST_SECRETS", "drawn")  # the store decides from now on
    assert home_secrets(store, template) == {"split_seed": 20241125, "eval_seed": 7}
    monkeypatch.setenv("SCIENTIST_SECRETS", "fixed")
    with pytest.raises(SecretsError, match="SCIENTIST_SECRETS='fixed': expected 'drawn' or 'shipped'"):
        home_secrets(store, load_template(str(TEMPLATES["open"])))


def test_a_homes_first_draw_retires_runs_made_with_the_shipped_values(tmp_path, drawn_secrets):
    template = load_template(str(TEMPLATES["grokking"]))
    store = Store(tmp_path / "store.sqlite")
    sources = template.editable_sources()
    key = run_key(template.content_hash(), source_hash(sources), 2)
    old = store.start_run(kind="baseline", template="grokking", template_hash=template.content_hash(),
                          sources=sources, seeds=2, sandbox="bwrap", out_dir=tmp_path)
    store.finish_run(old, status="ok")
    assert store.find_ok(key).id == old
    home_secrets(store, template)
    assert store.find_ok(key) is None and store.get(old).status == "ok"  # kept, never reused
    new = store.start_run(kind="baseline", template="grokking", template_hash=template.content_hash(),
                          sources=sources, seeds=2, sandbox="bwrap", out_dir=tmp_path)
    store.finish_run(new, status="ok")
    home_secrets(store, template)  # not a first draw: nothing more is retired
    assert store.find_ok(key).id == new


def test_the_draw_is_in_the_run_key_and_recorded(tmp_path):
    store = Store(tmp_path / "store.sqlite")
    # Draw 0 keeps the keys of stores made before draws existed.
    assert run_key("t", "c", 8) == hashlib.sha256(b"t:c:8").hexdigest()[:16] == run_key("t", "c", 8, 0)
    assert run_key("t", "c", 8, 1) not in (run_key("t", "c", 8), run_key("t", "c", 8, 2))
    ids = [store.start_run(kind="candidate", template="t", template_hash="t", sources={"a.py": "x"}, seeds=8,
                           sandbox="bwrap", out_dir=tmp_path, draw=d) for d in (0, 3)]
    runs = [store.get(i) for i in ids]
    assert [r.draw for r in runs] == [None, 3]
    assert [r.run_key for r in runs] == [run_key("t", source_hash({"a.py": "x"}), 8, d) for d in (0, 3)]


DRAWER = """
import json, sys, time
from base.secrets import home_secrets
from base.store import Store
from base.template import load_template
template = load_template(sys.argv[2])
store = Store(__import__("pathlib").Path(sys.argv[1]))
time.sleep(max(0.0, float(sys.argv[3]) - time.time()))
print(json.dumps(home_secrets(store, template)))
"""


def test_concurrent_first_draws_agree(tmp_path):
    env = {**os.environ, "SCIENTIST_SECRETS": "drawn"}
    start = time.time() + 4  # every process imports first, then all draw at once
    procs = [subprocess.Popen([sys.executable, "-c", DRAWER, str(tmp_path / "store.sqlite"),
                               str(TEMPLATES["discopop"]), str(start)], stdout=subprocess.PIPE, text=True, env=env,
                              cwd=ROOT) for _ in range(4)]
    answers = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(a == answers[0] for a in answers) and set(answers[0]) == SECRET["discopop"]
    assert Store(tmp_path / "store.sqlite").secrets("discopop") == answers[0]


# ------------------------------------------------------------------ one real session, its files searched


@pytest.fixture(scope="module")
def session(tmp_path_factory, tiny_templates):
    """A tiny `scientist run` (baseline and one evolved candidate) on a home that drew its secrets."""
    tmp = tmp_path_factory.mktemp("secrets")
    home, out = tmp / "home", tmp / "out"
    own_caches(home)  # its own, not the run's shared caches: its files are searched
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCIENTIST_SECRETS", "drawn")
        r = scientist("run", "--template", "discopop", "--templates-dir", str(tiny_templates), "--home", str(home),
                      "--proposer", "evolve", "--ideas", "1", "--runs", "1", "--out", str(out), "--no-writeup",
                      "--no-review", "--sandbox", "bwrap", timeout=900)
    assert r.code == 0, r.text
    store = Store(home / "store.sqlite")
    return home, out, store, store.secrets("discopop")


def test_secrets_are_written_nowhere_but_the_store(session):
    home, out, store, secrets = session
    assert set(secrets) == SECRET["discopop"]
    needles = [str(v).encode() for v in secrets.values()]
    files = [p for root in (home, out) for p in root.rglob("*") if p.is_file() and not p.name.startswith("store.")]
    names = {p.name for p in files}
    # What a user, a paper or a digest reads, and the sandbox's own folder, were all written and searched.
    assert {"final_info.json", "summary.json", "train.log", "eval.log", "config.json", "train.npz"} <= names, names
    assert any(p.parent.name == "work" for p in files)
    for path in files:
        data = path.read_bytes()
        found = [n.decode() for n in needles if n in data or n in str(path).encode()]
        assert not found, f"{path} holds the secret {found[0]}"
    # The store is where they are, and each run is one of this home's draw 0.
    assert all(r.draw is None for r in store.runs()) and len(store.runs()) >= 2


def test_the_draw_changes_training_and_held_out_data(session, tiny_templates, tmp_path):
    home, _, store, secrets = session
    [baseline] = [r for r in store.runs() if r.kind == "baseline"]
    template = load_template(str(tiny_templates / "discopop"))  # the tiny copy the session ran
    jobs = [runner.Job(template=template, sources=baseline.candidate_source, seeds=baseline.seeds,
                       sandbox=backends.Sandbox("bwrap"), home=home, secrets=secrets, draw=d) for d in (0, 1)]
    data = [runner._prepared_data(job) for job in jobs]  # draw 0's was made by the session, draw 1's now
    assert data[0] != data[1]
    train = [np.load(d / "train.npz") for d in data]
    assert not np.array_equal(train[0]["features"], train[1]["features"])
    # The held-out prompts and the hidden reward change too: the same trained policies score otherwise.
    work = Path(baseline.out_dir) / "work"
    scores = []
    for job in jobs:
        folder = tmp_path / f"draw{job.draw}"
        folder.mkdir()
        outcome = runner._run_evaluator(job, work, folder, None)
        assert outcome.ok, outcome.log_tail
        scores.append(json.loads((folder / "final_info.json").read_text())["metrics"]["reward_gain_at_kl"]["values"])
    assert scores[0] == baseline.final_info["metrics"]["reward_gain_at_kl"]["values"]
    assert scores[1] != scores[0]
