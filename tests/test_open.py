"""The OPEN template: features are right, shipped rules train, bad rules fail in one line, the pipeline runs sealed."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import shutil
import tomllib
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import ROOT, scientist, unoptimized

from base.store import Store
from base.template import load_template
from jax_workloads import open_features as of
from jax_workloads import ppo
from scientist.proposers.evolve import EvolveProposer

OPEN = ROOT / "templates" / "open"
CANDIDATES = ["adam", "sgd_momentum", "rmsprop", "hand_open"]


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


harness = load_module(OPEN / "harness.py", "open_harness")
evaluator = load_module(OPEN / "evaluate.py", "open_evaluate")
ss = load_module(OPEN / "search_space.py", "open_search_space")


def rule_from_source(source: str):
    namespace: dict = {}
    exec(compile(source, "optimizer.py", "exec"), namespace)
    return namespace["update"]


def candidate(name: str):
    return load_module(OPEN / "candidates" / f"{name}.py", f"open_candidate_{name}").update


# ---------------------------------------------------------------- features

CARTPOLE = ppo.gymnax_env("CartPole-v1")
SMALL = ppo.PPOConfig(hidden=8, layers=2, activation="relu")


def small_params(env: ppo.Env = CARTPOLE, config: ppo.PPOConfig = SMALL):
    net = ppo.default_network(config, env)
    return net, net.init(jax.random.key(0), jnp.zeros((env.obs_size,)))


def fake_grads(params, i: int):
    return jax.tree.map(lambda p: jax.random.normal(jax.random.key(i), p.shape), params)


def seen(feature: str, batch=None, steps: int = 1, **extra):
    """Run the optimizer with a rule that returns one feature as the update: what the rule saw, per tensor."""
    net, params = small_params()
    tx = of.open_optimizer(lambda f: getattr(f, feature), net, layers=SMALL.layers, activation=SMALL.activation)
    state, update = tx.init(params), jax.jit(tx.update)
    for i in range(steps):
        updates, state = update(fake_grads(params, i), state, params, batch=batch, **extra)
    return updates["params"], state


def test_momenta_match_optax_ema():
    net, params = small_params()
    tx = of.open_optimizer(lambda f: jnp.zeros_like(f.param), net, layers=2, activation="relu")
    state = tx.init(params)
    emas = [(optax.ema(d, debias=False), optax.ema(d, debias=False)) for d in of.DECAYS]
    ema_states = [(m.init(params), v.init(params)) for m, v in emas]
    for i in range(5):
        grads = fake_grads(params, i)
        _, state = tx.update(grads, state, params)
        ema_states = [(m.update(grads, sm)[1], v.update(jax.tree.map(jnp.square, grads), sv)[1])
                      for (m, v), (sm, sv) in zip(emas, ema_states, strict=True)]
    for i, (sm, sv) in enumerate(ema_states):
        for ours, theirs in ((state.momentum, sm.ema), (state.sq_momentum, sv.ema)):
            for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
                np.testing.assert_allclose(a[..., i], b, rtol=1e-5, atol=1e-7)
    assert int(state.step) == 5


def test_layer_proportion_and_actor_flag():
    layer, _ = seen("layer_frac")
    actor, _ = seen("is_actor")
    # ActorCritic builds the critic first: Dense_0..2 value network, Dense_3..5 policy network.
    for i, (frac, is_actor) in enumerate([(0.0, 0), (0.5, 0), (1.0, 0), (0.0, 1), (0.5, 1), (1.0, 1)]):
        for kind in ("kernel", "bias"):
            assert np.all(layer[f"Dense_{i}"][kind] == frac), (i, kind)
            assert np.all(actor[f"Dense_{i}"][kind] == is_actor), (i, kind)
    assert layer["Dense_2"]["kernel"].shape == (8, 1) and layer["Dense_5"]["kernel"].shape == (8, 2)


def test_layout_of_a_continuous_actor_critic():
    env = ppo.gymnax_env("Pendulum-v1")
    _, params = small_params(env)
    layout = of.actor_critic_layout(params, layers=2)
    assert layout["params"]["log_std"] == of.LeafInfo(1.0, 1.0, None)
    assert layout["params"]["Dense_4"]["kernel"] == of.LeafInfo(0.5, 1.0, "Dense_4")


def test_dormancy_of_a_dead_neuron():
    net, params = small_params()
    # Kill hidden unit 3 of the policy's first layer: zero weights and a negative bias, so ReLU outputs 0.
    dense = params["params"]["Dense_3"]
    dense["kernel"] = dense["kernel"].at[:, 3].set(0.0)
    dense["bias"] = dense["bias"].at[3].set(-1.0)
    obs = jax.random.normal(jax.random.key(1), (32, CARTPOLE.obs_size))
    d = of.dormancy(net, params, obs, layers=2, activation="relu")
    assert d["Dense_3"][3] == 0.0
    assert np.all(np.asarray(d["Dense_3"][np.arange(8) != 3]) > 0)
    for name in d:  # relative to the layer's mean
        np.testing.assert_allclose(float(d[name].mean()), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(d["Dense_2"]), [1.0])  # the value head has one neuron
    # What the rule sees: the neuron's value on every weight feeding it, and on its bias.
    tx = of.open_optimizer(lambda f: f.dormancy, net, layers=2, activation="relu")
    updates, _ = tx.update(fake_grads(params, 0), tx.init(params), params, batch=ppo.Batch(obs, *[None] * 5))
    kernel = np.asarray(updates["params"]["Dense_3"]["kernel"])
    assert np.all(kernel[:, 3] == 0.0) and np.allclose(kernel[0], d["Dense_3"])
    assert updates["params"]["Dense_3"]["bias"][3] == 0.0
    no_batch, _ = seen("dormancy")  # without a minibatch every dormancy is 1
    assert all(np.all(leaf == 1.0) for leaf in jax.tree.leaves(no_batch))


def test_proportions_step_and_noise():
    train, _ = seen("train_frac", train_frac=0.25, batch_frac=0.75)
    batch, _ = seen("batch_frac", train_frac=0.25, batch_frac=0.75)
    step, state = seen("step", steps=3)
    assert all(np.all(x == 0.25) for x in jax.tree.leaves(train))
    assert all(np.all(x == 0.75) for x in jax.tree.leaves(batch))
    assert all(np.all(x == 3.0) for x in jax.tree.leaves(step)) and int(state.step) == 3
    first, _ = seen("noise", steps=1)
    second, _ = seen("noise", steps=2)
    kernel = np.asarray(first["Dense_3"]["kernel"])
    assert not np.allclose(kernel, second["Dense_3"]["kernel"])  # fresh every step
    assert not np.allclose(kernel[:, :2], first["Dense_0"]["kernel"][:, :2])  # and per tensor
    assert abs(kernel.mean()) < 0.5 and 0.5 < kernel.std() < 1.5


def test_wrong_shape_during_training_is_a_clear_error():
    net, params = small_params()
    tx = of.open_optimizer(lambda f: f.grad[:1] if f.param.shape == (4, 8) else f.grad, net, layers=2)
    with pytest.raises(ValueError, match=r"returned shape \(1, 8\) for parameter Dense_0/kernel of shape \(4, 8\)"):
        tx.update(fake_grads(params, 0), tx.init(params), params)


def test_shipped_adam_matches_optax_adam():
    net, params = small_params()
    ours = optax.chain(optax.clip_by_global_norm(0.5), of.open_optimizer(candidate("adam"), net, layers=2))
    lr = optax.linear_schedule(candidate_lr("adam"), 0.0, 10)  # annealed over 10 steps, as train_frac = i / 10 below
    theirs = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(lr, eps=1e-5))
    p1, s1, p2, s2 = params, ours.init(params), params, theirs.init(params)
    for i in range(6):
        grads = fake_grads(params, i)
        u1, s1 = ours.update(grads, s1, p1, train_frac=i / 10, batch_frac=0.0)
        u2, s2 = theirs.update(grads, s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert (OPEN / "optimizer.py").read_text() == (OPEN / "candidates" / "adam.py").read_text()


# ---------------------------------------------------------------- the rule as the tracer exports it


def random_gru_weights(seed: int = 3):
    rule = load_module(OPEN / "learned_rule.py", "open_gru_rule")
    leaves, tree = jax.tree.flatten(rule.zero_weights())
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return rule, tree.unflatten([0.5 * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves, strict=True)])


def test_exported_rule_computes_what_the_module_does(tmp_path, monkeypatch):
    """Exports made as trace.py makes them, loaded as the harness loads them, give the module's updates (and
    carries) inside vmap, as training calls them."""
    from jax_workloads import exported

    gru, weights = random_gru_weights()
    monkeypatch.chdir(tmp_path)
    shapes = harness.GATE_SHAPES  # the gate calls these
    for rule, carry in ((candidate("adam"), 0), (lambda f: gru.learned_update(weights, f), 8)):
        for shape in shapes:
            specs = (harness.feature_specs(shape, carry),)
            exported.export_function(lambda d, rule=rule: rule(of.Features(**d)), specs, harness.export_path(shape),
                                     name="update", vjp=False)
        loaded = harness.load_rule(shapes)
        harness.gate(loaded, carry)
        for shape in shapes:
            keys = jax.random.split(jax.random.key(1), 2)
            f = jax.vmap(partial(of.example_features, shape, step=7, carry_size=carry))(keys)
            ours, theirs = jax.jit(jax.vmap(loaded))(f), jax.jit(jax.vmap(rule))(f)
            assert jax.tree.structure(ours) == jax.tree.structure(theirs)
            for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_declared_settings_are_checked_as_data(capsys):
    assert harness.rule_options({}) == (0, False)
    assert harness.rule_options({"CARRY": 8, "ZERO_MEAN": True}) == (8, True)
    for bad, message in (({"CARRY": 65}, "CARRY must be an int from 0 to 64"), ({"CARRY": True}, "not True"),
                         ({"CARRY": "8"}, "not '8'"), ({"ZERO_MEAN": 1}, "ZERO_MEAN must be True or False, not 1")):
        with pytest.raises(SystemExit):
            harness.rule_options(bad)
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


# ---------------------------------------------------------------- the shipped rules learn


def greedy_return(rule, seeds: int = 2) -> np.ndarray:
    """Train PPO on CartPole (3e4 steps) with the rule as the harness wires it, and play greedy episodes."""
    config = ppo.PPOConfig(total_timesteps=30_000)
    train = ppo.make_train(config, CARTPOLE, optimizer=harness.make_optimizer(rule, config, CARTPOLE),
                           optimizer_sees_batch=True)
    params = jax.jit(jax.vmap(train))(jax.random.split(jax.random.key(0), seeds))["params"]
    rollout = ppo.make_rollout(CARTPOLE, ppo.default_network(config, CARTPOLE).apply, num_envs=8, max_steps=500)
    returns, _ = jax.jit(jax.vmap(rollout))(params, jax.random.split(jax.random.key(1), seeds))
    return np.asarray(returns).mean(axis=1)


# Adam also trains in test_scientist_eval_through_the_sandbox, so its own check here is in the slow tier.
@pytest.mark.parametrize("name", [pytest.param("adam", marks=pytest.mark.slow), "hand_open"])
def test_shipped_rules_train_cartpole(name):
    returns = greedy_return(candidate(name))
    assert returns.shape == (2,)
    assert returns.mean() >= 200, returns  # a random policy scores about 20, the cap is 500


# ---------------------------------------------------------------- the search space


def test_known_members_match_candidates():
    for name in CANDIDATES:
        rendered = rule_from_source(ss.render(ss.known()[name])["optimizer.py"])
        for shape, step in (((5, 3), 1), ((4,), 50)):
            f = of.example_features(shape, jax.random.key(step), step=step)
            np.testing.assert_allclose(rendered(f), candidate(name)(f), rtol=1e-6, atol=1e-12, err_msg=name)
    assert ss.BASELINE == "adam" and ss.known()["adam"]["lr"] == candidate_lr("adam")


def candidate_lr(name: str) -> float:
    return load_module(OPEN / "candidates" / f"{name}.py", f"lr_{name}").LR


def test_random_members_render_to_safe_rules():
    rng = random.Random(0)
    pool = list(ss.known().values())
    for i in range(45):
        g = [ss.sample, lambda r: ss.mutate(r.choice(pool), r), lambda r: ss.crossover(r.choice(pool), r.choice(pool),
                                                                                       r)][i % 3](rng)
        pool.append(g)
        ss.validate(g)
        assert json.loads(json.dumps(g)) == g and "\n" not in ss.describe(g)
        rule = rule_from_source(ss.render(g)["optimizer.py"])
        for shape in ((6, 4), (1,)):
            out = rule(of.example_features(shape, jax.random.key(i), step=1 + i))
            assert out.shape == shape and bool(jnp.all(jnp.isfinite(out))), ss.describe(g)


def test_validate_rejects_malformed_genomes():
    good = ss.known()["adam"]
    for bad in ({**good, "direction": "lbfgs"}, {**good, "b1": 6}, {**good, "lr": 5.0}, {**good, "noise": float("nan")},
                {k: v for k, v in good.items() if k != "schedule"}):
        with pytest.raises(ValueError):
            ss.validate(bad)


def test_evolve_proposer_uses_the_space():
    proposer = EvolveProposer(ss, "max", seed=1, baseline_metric=1.0)
    idea = proposer.next_idea(0, [])
    ss.validate(idea.genome)
    assert idea.genome != ss.known()["adam"] and idea.title.startswith("Evolved")


# ---------------------------------------------------------------- the evaluator's reference, and figures


def test_reference_must_match_the_configuration():
    spec = tomllib.loads((OPEN / "template.toml").read_text())
    config, private = spec["config"], spec["private"]
    assert evaluator.adam_reference(config, private) == private["adam_reference"]["return"]
    changed = {**config, "ppo": {**config["ppo"], "total_timesteps": 10_000_000}}
    with pytest.raises(ValueError, match="measure it again") as e:
        evaluator.adam_reference(changed, private)
    assert "\n" not in str(e.value)
    # The gpu profile is that configuration (1e7 steps): refused until its reference is measured (README.md).
    gpu = load_template(str(OPEN)).with_profile("gpu").spec
    assert gpu.config == changed and gpu.private == private


def test_figures_from_final_info(tmp_path):
    figures = load_module(OPEN / "figures.py", "open_figures")

    def info(shift: float) -> dict:
        rng = np.random.default_rng(int(shift * 10))
        curve = np.linspace(0, 6 + shift, 20)[None] + rng.normal(0, 0.3, (3, 20))
        values = list(6 + shift + rng.normal(0, 0.5, 3))
        return {"metrics": {"return": {"values": values}},
                "extra": {"env": "Breakout-MinAtar", "curve_timesteps": list(range(8192, 8192 * 21, 8192)),
                          "train_return": curve.tolist()}}

    out = figures.figures(info(1.0), info(0.0), tmp_path)
    assert [f.path.name for f in out] == ["learning_curves.pdf", "final_returns.pdf"]
    assert all(f.path.stat().st_size > 1000 and "95\\%" in f.caption for f in out)
    assert not re.search(r"(?<!\\)[%_&#]", " ".join(f.caption for f in out))


# ---------------------------------------------------------------- meta-ES and the sealed pipeline


@pytest.mark.slow
def test_meta_es_writes_a_working_candidate(tmp_path, capsys):
    meta = load_module(OPEN / "meta_es.py", "open_meta_es")
    out = tmp_path / "learned.py"
    assert meta.main(["--out", str(out), "--env", "CartPole-v1", "--timesteps", "16384", "--popsize", "2",
                      "--generations", "1", "--seeds", "1", "--hidden", "4", "--rule", "adam_mlp"]) == 0
    assert "generation 1/1: ES mean" in capsys.readouterr().out
    learned = load_module(out, "open_learned")
    assert learned.WEIGHTS is not None and np.asarray(learned.WEIGHTS["w0"]).shape == (20, 4)
    f = of.example_features((6, 4), jax.random.key(0), step=3)
    u = jax.jit(learned.update)(f)
    assert u.shape == (6, 4) and bool(jnp.all(jnp.isfinite(u)))
    # Before meta-training (WEIGHTS = None) the MLP rule is exactly the tuned Adam (OPEN's GRU: test_open_fidelity.py).
    np.testing.assert_allclose(load_module(OPEN / "learned_mlp_rule.py", "open_rule").update(f), candidate("adam")(f),
                               rtol=1e-6)


def test_meta_es_bad_flags_are_one_line(tmp_path, capsys):
    meta = load_module(OPEN / "meta_es.py", "open_meta_es_flags")
    for args, message in ((["--popsize", "3"], "--popsize must be even"), (["--timesteps", "100"], "less than one PPO"),
                          (["--env", "NoSuchEnv-v0"], "cannot make environment")):
        with pytest.raises(SystemExit) as e:
            meta.main(["--out", str(tmp_path / "x.py"), *args])
        # argparse prints its line and exits 2; the setup checks exit with their line as the message.
        text = capsys.readouterr().err if e.value.code == 2 else str(e.value.code)
        assert message in text and "\n" not in text.strip(), text
    assert not (tmp_path / "x.py").exists()


TINY = {"seeds": "2", "time_s": "240", "env": '"CartPole-v1"', "total_timesteps": "8192", "num_envs": "4",
        "num_minibatches": "4", "activation": '"tanh"', "episodes": "8", "max_steps": "500"}
TINY_REFERENCE = 100.0


def write_tiny_open(dest: Path) -> Path:
    """Copy the OPEN template to dest/open on a tiny CartPole configuration, with a reference for it."""
    root = dest / "open"
    shutil.copytree(OPEN, root, ignore=shutil.ignore_patterns("__pycache__"))
    path = root / "template.toml"
    text = path.read_text()
    for key, value in TINY.items():
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert n == 1, key
    spec = tomllib.loads(text)
    fingerprint = evaluator.reference_fingerprint(spec["config"])
    text = re.sub(r'(?m)^fingerprint = .*$', f'fingerprint = "{fingerprint}"', text)
    text = re.sub(r"(?m)^return = .*$", f"return = {TINY_REFERENCE}", text)
    path.write_text(unoptimized(text))  # as conftest.copy_template
    return root


BAD = {
    "wrong_shape": "def update(f):\n    return f.grad.sum(axis=-1)\n",
    "nan": "def update(f):\n    return f.grad * float('nan')\n",
    "late_nan": "import jax.numpy as jnp\n\n\ndef update(f):\n"
                "    return jnp.where(f.train_frac > 0.4, jnp.nan, -1e-3 * f.grad)\n",
    "bad_carry": "CARRY = 2.5\n\n\ndef update(f):\n    return -1e-3 * f.grad, f.carry\n",  # refused by the tracer
}


def test_scientist_eval_through_the_sandbox(open_eval, tmp_path):
    """Tiny CartPole through the real CLI and bwrap: Adam is scored, bad rules fail with one-line reasons."""
    root, home, out, r = open_eval
    assert load_template(str(root)).spec.metric.name == "normalized_return"
    assert r.code == 1, r.text  # some candidates failed
    assert "Traceback" not in r.text
    info = json.loads((out / "adam" / "final_info.json").read_text())
    raw, norm = info["metrics"]["return"], info["metrics"]["normalized_return"]
    assert info["n"] == 2 and len(raw["values"]) == 2
    np.testing.assert_allclose(norm["values"], np.asarray(raw["values"]) / TINY_REFERENCE)
    assert raw["mean"] > 30  # 8k steps of PPO: better than a random policy (about 20)
    assert len(info["extra"]["train_return"]) == 2 and info["extra"]["adam_reference_return"] == TINY_REFERENCE
    # The template's figures read exactly what the evaluator wrote.
    figures = load_module(OPEN / "figures.py", "open_figures_real").figures(info, info, tmp_path / "figures")
    assert [f.path.is_file() for f in figures] == [True, True]
    reasons = {Path(run.out_dir).name: run.reason for run in Store(home / "store.sqlite").runs("open")}
    assert reasons["adam"] is None
    assert reasons["wrong_shape"] == ("update rule must return an update of the parameter's shape (6, 4); "
                                      "it returned shape (6,)")
    assert reasons["nan"] == "update rule returned NaN or infinite values on tiny inputs (shape (6, 4), step 1)"
    assert reasons["late_nan"] == "training diverged: non-finite policy parameters in seed(s) [0, 1]"
    assert reasons["bad_carry"] == ("CARRY must be an int from 0 to 64 (floats of recurrent state per parameter), "
                                    "not 2.5")
    assert "wrong_shape: failed: update rule must return" in r.err


def test_templates_command_lists_open(tmp_path):
    r = scientist("templates", "--home", str(tmp_path))
    assert r.code == 0 and re.search(r"open\s.*normalized_return\s.*max", r.out), r.out
