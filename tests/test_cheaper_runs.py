"""Cheaper DiscoPOP runs (issue 14, item 5) compute what the slower code computed.

The harness gate's written-out batch is the PRNG batch it replaces and still rejects bad losses;
the evaluator's one fused program scores as the op-by-op computation did; a second evaluator
process on the same cache folder compiles nothing new.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_workloads import preference as pf

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "templates" / "discopop"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"discopop_{name}", TEMPLATE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


harness = _load("harness")
evaluator = _load("evaluate")


def dpo(pc, pr, rc, rr, beta):
    return -jax.nn.log_sigmoid(beta * ((pc - pr) - (rc - rr)))


def test_gate_batch_is_the_batch_jax_random_drew():
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    drawn = [np.asarray(-1.0 - jax.random.uniform(k, (8,)) * 3.0) for k in keys]
    written = [np.asarray(row, np.float32) for row in harness.GATE_LOGPS]
    for d, w in zip(drawn, written, strict=True):
        np.testing.assert_array_equal(d, w)  # bit for bit, not approximately


@pytest.mark.parametrize(("loss", "reason"), [
    (lambda pc, pr, rc, rr, beta: jnp.mean(pc - pr), "one value per example"),
    (lambda pc, pr, rc, rr, beta: jnp.log(pc - pr), "NaN or infinite values"),
    (lambda pc, pr, rc, rr, beta: jnp.sqrt(jnp.abs(pc - pc)), "NaN or infinite gradients"),
    (lambda pc, pr, rc, rr, beta: pc[100:] + undefined_name, "loss raised"),  # noqa: F821
])
def test_jitted_gate_still_rejects(loss, reason, capsys):
    with pytest.raises(SystemExit):
        harness.gate(loss, 8)  # the tracer's export takes a minibatch; here, the gate's 8 examples
    assert reason in capsys.readouterr().err


def test_jitted_gate_passes_a_good_loss():
    harness.gate(dpo, 8)  # returns without sys.exit
    harness.gate(dpo, 512)  # the gate's values repeated to a training minibatch


def test_fused_score_equals_the_op_by_op_computation():
    world, ws, seed, n = pf.WorldConfig(), 11, 3, 24
    train = pf.make_prompts(world, ws, jax.random.PRNGKey(0), 16)
    prefs = jax.vmap(lambda k: pf.sample_preferences(world, ws, train, k, 256))(
        jax.random.split(jax.random.PRNGKey(1), 2))
    params, _ = pf.make_sweep(pf.TrainConfig(hidden=8, steps=20, batch_size=64), dpo)(
        jax.random.split(jax.random.PRNGKey(2), 2), train, prefs, jnp.array([0.1, 1.0, 5.0]))
    assert float(jnp.abs(params["w2"]).max()) > 0  # trained away from the reference

    rewards, kls, ref, oracle, *_mixtures = evaluator._score(params, world, ws, seed, n)

    # The evaluator before it was fused: op by op, the test set closed over as constants.
    test = pf.make_prompts(world, ws, jax.random.PRNGKey(seed), n)
    reward = pf.true_reward(world, ws, test.features)
    old_ref = float(jnp.mean(jnp.sum(jnp.exp(test.ref_logps) * reward, axis=-1)))
    old_oracle = float(jnp.mean(jnp.max(reward, axis=-1)))
    old_rewards, old_kls = jax.jit(jax.vmap(jax.vmap(lambda p: pf.reward_and_kl(p, test, reward))))(params)

    assert rewards.shape == kls.shape == (2, 3)
    np.testing.assert_allclose(rewards, old_rewards, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kls, old_kls, rtol=1e-5, atol=1e-6)
    assert float(ref) == pytest.approx(old_ref, rel=1e-6)
    assert float(oracle) == pytest.approx(old_oracle, rel=1e-6)


def _evaluate(work: Path, cache: Path) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-I", "-m", "scientist.evaluator", "evaluate", "--dir", str(work),
            "--template", str(TEMPLATE), "--seeds", "1", "--out", str(work / "final_info.json"),
            "--jax-cache", str(cache)]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu", "HOME": str(work)})


def test_a_second_evaluator_process_compiles_nothing_new(tmp_path):
    # The reference policy (zero correction) for one seed: a valid artifact the evaluator scores.
    shapes = evaluator.expected_arrays(_config(), 1)
    work, cache = tmp_path / "work", tmp_path / "jax-eval"
    (work / "artifacts").mkdir(parents=True)
    np.savez(work / "artifacts" / "policy.npz", **{k: np.zeros(s, dt) for k, (s, dt) in shapes.items()})

    first = _evaluate(work, cache)
    assert first.returncode == 0, first.stderr[-2000:]
    entries = {p.name for p in cache.glob("*-cache")}
    assert any(name.startswith("jit__score") for name in entries), entries  # the small compiles are kept

    second = _evaluate(work, cache)
    assert second.returncode == 0, second.stderr[-2000:]
    assert {p.name for p in cache.glob("*-cache")} == entries  # every compile was found in the cache


def _config() -> dict:
    from base.template import load_template

    return load_template(str(TEMPLATE)).spec.config


def test_the_shipped_template_scores_what_it_scored_before_the_cheaper_runs(tmp_path):
    # The values the template printed before item 5 (and in BENCHMARKS.md): the same to the printed precision,
    # through the real CLI and sandbox, on a fresh home (no cached run stands in). The metric has since been
    # read off the beta path (issue 16) and now off the trained policies and their exact mixtures (issue 23; the
    # template README), so the trained policies are checked with the trained points' hull, the chords' reading that
    # printed 1.3604 then, and the printed value with today's reading (the beta path printed 1.3824).
    from conftest import scientist

    r = scientist("baseline", "--template", "discopop", "--home", str(tmp_path / "home"), "--sandbox", "bwrap",
                  timeout=600)
    assert r.code == 0, r.text
    [info] = (tmp_path / "home" / "runs" / "discopop").glob("*-baseline/final_info.json")
    extra = json.loads(info.read_text())["extra"]
    chords = [pf.frontier_value(np.array(k), np.array(g), extra["kl_budget"])
              for k, g in zip(extra["kl"], extra["reward_gain"], strict=True)]
    assert f"{np.mean(chords):.4f}" == "1.3604", chords
    assert "reward_gain_at_kl = 1.3832 (95% CI 1.3754 to 1.3910, n=8" in r.out, r.out
