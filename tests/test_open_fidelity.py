"""The OPEN template against OPEN's own code, on the same inputs.

Upstream: github.com/AlexGoldie/rl-learned-optimization at commit b65037bd89c09f31e80c5d49f1d78cc9c6dc43e0,
files rl_optimizer/train.py (PPO: proportions, clipping, layer proportions, mask, meta-ES) and
rl_optimizer/network.py (GRU_Opt: inputs, GRU, MLP, the step, zero mean, dormancy); momenta from its submodule
google/learned_optimization at 4bcaeb06799bf68456cc61ffb36886d40d316e50, learned_optimizers/common.py
(vec_rolling_mom: m <- d m + (1 - d) g). Each test transcribes the upstream formula (flax's own GRUCell and
Sequential where upstream uses them) and compares it with the project's function. Real JAX, no mocks, seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import ROOT
from evosax.algorithms import Open_ES
from evosax.core.fitness_shaping import centered_rank_fitness_shaping_fn
from jax.flatten_util import ravel_pytree

from jax_workloads import open_features as of
from jax_workloads import ppo

OPEN = ROOT / "templates" / "open"


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


harness = load_module(OPEN / "harness.py", "fidelity_harness")
rule = load_module(OPEN / "learned_rule.py", "fidelity_rule")
meta = load_module(OPEN / "meta_es.py", "fidelity_meta_es")

CARTPOLE = ppo.gymnax_env("CartPole-v1")
CONFIG = ppo.PPOConfig(hidden=8, layers=2, activation="relu", num_envs=4, num_steps=16, num_minibatches=2)


# ---------------------------------------------------------------- upstream transcriptions

def upstream_modules(hidden: int = 16, gru_features: int = 8):
    """network.py GRU_Opt.__init__: the GRU cell and the per-parameter MLP, as flax modules."""
    gru = nn.GRUCell(features=gru_features)
    mod = nn.Sequential([nn.Dense(hidden), nn.LayerNorm(), nn.relu, nn.Dense(hidden), nn.LayerNorm(), nn.relu,
                         nn.Dense(3)])
    return gru, mod


def upstream_init(key, hidden: int = 16, gru_features: int = 8) -> dict:
    """network.py GRU_Opt.init (random, before train.py zeroes it; LayerNorm scale perturbed so it matters)."""
    gru, mod = upstream_modules(hidden, gru_features)
    key = jax.random.split(key, 5)
    proxy_carry = gru.initialize_carry(key[4], (1,))
    theta = {"params": mod.init(key[0], jnp.zeros([gru_features])),
             "gru_params": gru.init(key[2], proxy_carry, jnp.zeros([19]))}
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(key[3], len(leaves))
    return treedef.unflatten([x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)])


def upstream_update_tensor(theta, p, g, mom, noise, dorm, carry, training_prop, batch_prop, layer_prop, mask):
    """network.py _update_tensor for a non-scalar tensor, with the normal draw passed in as `noise`.
    Returns (OPEN's step, which upstream subtracts from the parameter, new GRU carry)."""
    gru, mod = upstream_modules(theta["params"]["params"]["layers_0"]["kernel"].shape[1],
                                theta["gru_params"]["params"]["hr"]["kernel"].shape[0])
    eps1 = 1e-13
    gsign, glog = jnp.sign(g), jnp.log(jnp.abs(g) + eps1)
    batch_p = jnp.expand_dims(p, axis=-1)
    inp_stack = jnp.concatenate([batch_p, jnp.sign(mom), jnp.log(jnp.abs(mom) + eps1)], axis=-1)
    axis = list(range(len(p.shape)))
    inp_stack_g = jnp.concatenate([inp_stack, gsign[..., None], glog[..., None]], axis=-1)
    inp_stack_g = inp_stack_g * jax.lax.rsqrt(1e-5 + jnp.mean(jnp.square(inp_stack_g), axis=axis, keepdims=True))
    tile = lambda x: jnp.tile(jnp.reshape(x, [1] * len(axis) + list(x.shape[-1:])), list(p.shape) + [1])  # noqa: E731
    inp = tile(jnp.asarray(training_prop))
    inp = jnp.concatenate([inp, tile(jnp.expand_dims(jnp.asarray(layer_prop), 0))], axis=-1)
    inp = jnp.concatenate([inp, tile(jnp.asarray(batch_prop))], axis=-1)
    batch_dorm = jnp.expand_dims(dorm, axis=-1)
    if p.shape != dorm.shape:
        batch_dorm = jnp.tile(batch_dorm, [p.shape[0]] + len(axis) * [1])
    inp = jnp.concatenate([inp, batch_dorm], axis=-1)
    inp_g = jnp.concatenate([inp_stack_g, inp], axis=-1)
    new_carry, gru_out = gru.apply(theta["gru_params"], carry, inp_g)
    output = mod.apply(theta["params"], gru_out)
    update_ = output[..., 0] * 0.001 * jnp.exp(output[..., 1] * 0.001)
    update = update_ + output[..., 2] * mask * noise * 0.001
    return update.reshape(p.shape), new_carry


upstream_update_tensor_jit = jax.jit(upstream_update_tensor)


def upstream_calc_dormancy(tensor_activations):
    """network.py calc_dormancy (tensor_activations: mean |activation| over the minibatch, per neuron)."""
    tensor_activations = tensor_activations + 1e-11
    total = jnp.abs(tensor_activations).sum(axis=-1)
    total = jnp.tile(jnp.expand_dims(total, -1), tensor_activations.shape[-1])
    return tensor_activations / total * tensor_activations.shape[-1]


def upstream_proportions(iteration, num_updates, epochs, minibatches):
    """train.py _update_minbatch: training_prop and batch_prop from the actor optimizer's iteration."""
    training_prop = (iteration // (minibatches * epochs)) / (num_updates - 1)
    batch_prop = ((iteration // minibatches) % epochs) / (epochs - 1)
    return training_prop, batch_prop


# ---------------------------------------------------------------- the learned optimizer


def features_for(shape, key, theta_carry_size=8):
    f = of.example_features(shape, key, step=5, carry_size=theta_carry_size)
    # OPEN's proportions are in [0, 1]; make them differ so that a swapped input would show
    return f._replace(train_frac=jnp.full(shape, 0.2), batch_frac=jnp.full(shape, 2 / 3),
                      layer_frac=jnp.full(shape, 0.5))


def test_weight_layout_is_openS_flat_vector():
    """learned_rule's weight tree is GRU_Opt.init's (names, shapes, order): OPEN's 1211-number vector ravels to it."""
    theta = upstream_init(jax.random.key(0))
    ours = rule.zero_weights()
    assert jax.tree.structure(theta) == jax.tree.structure(ours)
    assert [x.shape for x in jax.tree.leaves(theta)] == [x.shape for x in jax.tree.leaves(ours)]
    assert ravel_pytree(ours)[0].size == 1211  # the size of rl_optimizer/pretrained/breakout_OPEN.npy


def test_gru_update_matches_upstream_update_tensor():
    """One kernel, one bias: our update and carry against network.py's _update_tensor with flax's modules."""
    theta = upstream_init(jax.random.key(1))
    for shape, dorm_shape, is_actor in (((6, 4), (4,), 1.0), ((4,), (4,), 0.0)):
        f = features_for(shape, jax.random.key(len(shape)))
        f = f._replace(dormancy=jnp.broadcast_to(jax.random.uniform(jax.random.key(9), dorm_shape, maxval=2.0), shape),
                       is_actor=jnp.full(shape, is_actor))
        dorm = f.dormancy[0] if len(shape) == 2 else f.dormancy  # upstream holds one value per neuron
        theirs, their_carry = upstream_update_tensor_jit(theta, f.param, f.grad, f.momentum, f.noise, dorm, f.carry,
                                                     0.2, 2 / 3, 0.5, is_actor)
        ours, our_carry = jax.jit(rule.learned_update)(theta, f)
        np.testing.assert_allclose(our_carry, their_carry, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(-ours, theirs, rtol=1e-4, atol=1e-9)
        assert float(jnp.abs(theirs).max()) > 1e-5  # a real step, not zeros on both sides


def test_zero_weights_take_no_step():
    """OPEN starts meta-training from all-zero meta-parameters: a zero step (train.py zeroes GRU_Opt.init)."""
    ours, _ = rule.update(features_for((6, 4), jax.random.key(2)))
    assert np.all(np.asarray(ours) == 0.0)


def test_published_weights_render_to_the_same_rule(tmp_path):
    """meta_es.py --from-upstream: a flat vector saved as OPEN saves its ES mean becomes a candidate computing
    OPEN's update (6-decimal rounding aside)."""
    theta = upstream_init(jax.random.key(3))
    flat, _ = ravel_pytree(theta)
    np.save(tmp_path / "x_OPEN.npy", np.asarray(flat))
    out = tmp_path / "pretrained.py"
    assert meta.main(["--from-upstream", str(tmp_path / "x_OPEN.npy"), "--out", str(out)]) == 0
    candidate = load_module(out, "fidelity_pretrained")
    assert candidate.CARRY == 8 and candidate.ZERO_MEAN is True
    f = features_for((6, 4), jax.random.key(4))
    f = f._replace(dormancy=jnp.broadcast_to(f.dormancy[0], (6, 4)))  # one value per neuron, as upstream holds it
    theirs, _ = upstream_update_tensor(theta, f.param, f.grad, f.momentum, f.noise, f.dormancy[0], f.carry,
                                       0.2, 2 / 3, 0.5, 1.0)
    ours, _ = jax.jit(candidate.update)(f)
    np.testing.assert_allclose(-ours, theirs, rtol=2e-3, atol=1e-7)


# ---------------------------------------------------------------- one whole optimizer step, as the harness wires it


def test_one_harness_step_matches_upstream_opt_update():
    """harness.make_optimizer (separate clipping, OPEN proportions, GRU rule, zero mean) against train.py + network.py
    for two minibatch steps of a small actor-critic: momenta, dormancy, layer proportions, mask, carry, zero mean.
    The noise output is zeroed on both sides (the draws differ); the noise path is in the tests above."""
    theta = upstream_init(jax.random.key(5))
    theta["params"]["params"]["layers_6"]["kernel"] = theta["params"]["params"]["layers_6"]["kernel"].at[:, 2].set(0.0)
    theta["params"]["params"]["layers_6"]["bias"] = theta["params"]["params"]["layers_6"]["bias"].at[2].set(0.0)
    net = ppo.default_network(CONFIG, CARTPOLE)
    params = net.init(jax.random.key(0), jnp.zeros((CARTPOLE.obs_size,)))
    obs = jax.random.normal(jax.random.key(6), (32, CARTPOLE.obs_size))
    batch = ppo.Batch(obs, *(jnp.zeros(32),) * 5)
    tx = harness.make_optimizer(lambda f: rule.learned_update(theta, f), CONFIG, CARTPOLE, carry=8, zero_mean=True)
    state, tx_update = tx.init(params), jax.jit(tx.update)

    # Upstream's view: separate actor and critic trees (our Dense_0..2 are the critic, Dense_3..5 the actor).
    split = lambda tree: {"critic": {f"Dense_{i}": tree["params"][f"Dense_{i}"] for i in range(3)},  # noqa: E731
                          "actor": {f"Dense_{i}": tree["params"][f"Dense_{i + 3}"] for i in range(3)}}
    up_params = split(params)
    decays = jnp.asarray([0.1, 0.5, 0.9, 0.99, 0.999, 0.9999])
    up_mom = jax.tree.map(lambda p: jnp.zeros((*p.shape, 6)), up_params)
    up_carry = jax.tree.map(lambda p: jnp.zeros((*p.shape, 8)), up_params)
    clip_opt = optax.clip_by_global_norm(CONFIG.max_grad_norm)
    num_updates = CONFIG.num_updates
    for iteration in range(2):
        grads = jax.tree.map(lambda p, k=iteration: 3.0 * jax.random.normal(jax.random.key(10 + k), p.shape), params)
        updates, state = tx_update(grads, state, params, batch=batch)
        ours = optax.apply_updates(params, updates)

        up_grads = split(grads)
        up_grads = {net_: clip_opt.update(up_grads[net_], None)[0] for net_ in ("actor", "critic")}
        up_mom = jax.tree.map(lambda m, g: decays * m + (1 - decays) * g[..., None], up_mom, up_grads)
        training_prop, batch_prop = upstream_proportions(iteration, num_updates, CONFIG.update_epochs,
                                                         CONFIG.num_minibatches)
        steps, carries = {}, {}
        for net_ in ("critic", "actor"):
            h, acts = obs, {}
            for i in range(3):  # Actor/Critic.__call__: mean |activation| per neuron, hidden layers after relu
                h = h @ up_params[net_][f"Dense_{i}"]["kernel"] + up_params[net_][f"Dense_{i}"]["bias"]
                h = jax.nn.relu(h) if i < 2 else h
                acts[f"Dense_{i}"] = jnp.mean(jnp.abs(h), axis=0)
            steps[net_], carries[net_] = {}, {}
            for i in range(3):
                layer = f"Dense_{i}"
                dorm = upstream_calc_dormancy(acts[layer])
                for leaf in ("bias", "kernel"):
                    noise = jnp.zeros(up_params[net_][layer][leaf].shape)
                    s, c = upstream_update_tensor_jit(
                        theta, up_params[net_][layer][leaf], up_grads[net_][layer][leaf], up_mom[net_][layer][leaf],
                        noise, dorm, up_carry[net_][layer][leaf], training_prop, batch_prop, i / 2,
                        1.0 if net_ == "actor" else 0.0)
                    steps[net_].setdefault(layer, {})[leaf], carries[net_].setdefault(layer, {})[leaf] = s, c
        mean = ravel_pytree(steps)[0].mean()  # "Make update globally 0"
        up_params = jax.tree.map(lambda p, s, m=mean: p - (s - m), up_params, steps)
        up_carry = carries

        for a, b in zip(jax.tree.leaves(split(ours)), jax.tree.leaves(up_params), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-7)
        moved = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(params),
                                                                 strict=True))
        assert moved > 1e-4, moved  # the step is real
        assert abs(float(ravel_pytree(updates)[0].mean())) < 1e-9
        params = ours


# ---------------------------------------------------------------- PPO wiring: proportions and clipping


def test_proportions_match_upstream():
    """u/(U-1) and epoch/(E-1) from the step count, over every minibatch step of a run (U = 5, E = 4, 8 minibatches)."""
    schedule = of.Schedule(num_updates=5, update_epochs=4, num_minibatches=8)
    steps = jnp.arange(5 * 4 * 8)
    ours = jax.vmap(lambda s: of.open_proportions(s, schedule))(steps)
    theirs = upstream_proportions(np.arange(5 * 4 * 8), 5, 4, 8)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-6)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-6)
    assert sorted(set(np.round(np.asarray(ours[1]), 6))) == [0.0, 0.333333, 0.666667, 1.0]
    assert float(ours[0][-1]) == 1.0


def test_harness_feeds_the_rule_open_proportions():
    """Through a real PPO run, the rule sees OPEN's proportions (default) or ppo.py's (proportions="minibatch")."""
    config = ppo.PPOConfig(total_timesteps=3 * 4 * 16, num_envs=4, num_steps=16, update_epochs=3, num_minibatches=2,
                           hidden=8)
    seen = []

    def record(kind):
        def rule_(f):
            jax.debug.callback(lambda t, b: seen.append((kind, float(t), float(b))), f.train_frac.ravel()[0],
                               f.batch_frac.ravel()[0])
            return jnp.zeros_like(f.param)
        return rule_

    for kind in ("open", "minibatch"):
        train = ppo.make_train(config, CARTPOLE, optimizer=harness.make_optimizer(record(kind), config, CARTPOLE,
                                                                                  proportions=kind))
        jax.block_until_ready(jax.jit(train)(jax.random.key(0)))
    n_leaves = 12  # the rule is called once per tensor per step
    got = {k: [(t, b) for kind, t, b in seen if kind == k][::n_leaves] for k in ("open", "minibatch")}
    steps = range(3 * 3 * 2)
    want_open = [upstream_proportions(i, 3, 3, 2) for i in steps]
    want_old = [((i // 6) / 3, (i % 6) / 6) for i in steps]
    np.testing.assert_allclose(got["open"], want_open, rtol=1e-6)
    np.testing.assert_allclose(got["minibatch"], want_old, rtol=1e-6)


def test_clipping_is_per_network_as_upstream():
    """clip_actor_critic against optax.clip_by_global_norm applied to the actor's and the critic's trees separately
    (train.py); with a large critic gradient the joint clipping differs, so the test can tell them apart."""
    net = ppo.default_network(CONFIG, CARTPOLE)
    params = net.init(jax.random.key(0), jnp.zeros((CARTPOLE.obs_size,)))
    grads = jax.tree.map(lambda p: 0.01 * jax.random.normal(jax.random.key(1), p.shape), params)
    grads["params"]["Dense_0"]["kernel"] = grads["params"]["Dense_0"]["kernel"] * 100.0  # a critic layer
    ours, _ = of.clip_actor_critic(0.5, CONFIG.layers).update(grads, optax.EmptyState())
    clip = optax.clip_by_global_norm(0.5)
    for group in ((0, 1, 2), (3, 4, 5)):
        sub = {f"Dense_{i}": grads["params"][f"Dense_{i}"] for i in group}
        theirs, _ = clip.update(sub, None)
        for i in group:
            for leaf in ("kernel", "bias"):
                np.testing.assert_allclose(ours["params"][f"Dense_{i}"][leaf], theirs[f"Dense_{i}"][leaf], rtol=1e-6)
    joint, _ = clip.update(grads, None)
    actor_kernel = ours["params"]["Dense_3"]["kernel"]
    assert not np.allclose(actor_kernel, joint["params"]["Dense_3"]["kernel"])
    np.testing.assert_allclose(actor_kernel, grads["params"]["Dense_3"]["kernel"])  # small actor norm: untouched


def test_template_defaults_are_openS_wiring():
    import tomllib

    config = tomllib.loads((OPEN / "template.toml").read_text())["config"]
    assert config["open"] == {"grad_clip": "separate", "proportions": "open"}
    # OPEN's breakout config (configs.py): the same PPO sizes
    assert {k: config["ppo"][k] for k in ("total_timesteps", "num_envs", "num_steps", "update_epochs",
                                          "num_minibatches", "max_grad_norm", "hidden", "activation")} == {
        "total_timesteps": 500000, "num_envs": 64, "num_steps": 128, "update_epochs": 4, "num_minibatches": 8,
        "max_grad_norm": 0.5, "hidden": 64, "activation": "relu"}


# ---------------------------------------------------------------- meta-ES settings


def upstream_strategy(mean, popsize=64, lr=0.03, lr_decay=0.999, noise_level=0.03, sigma_decay=0.999):
    """train.py __main__: the Open_ES it builds (non-gridworld: centred ranks)."""
    return Open_ES(
        population_size=popsize,
        optimizer=optax.adam(optax.schedules.exponential_decay(lr, decay_rate=lr_decay, end_value=0,
                                                               transition_steps=1), b1=0.99),
        std_schedule=optax.schedules.exponential_decay(noise_level, decay_rate=sigma_decay, end_value=0,
                                                       transition_steps=1),
        solution=mean, fitness_shaping_fn=centered_rank_fitness_shaping_fn)


def test_meta_es_defaults_match_upstream():
    """meta_es.py's defaults and strategy give the same ES trajectory as train.py's, and differ from constant
    settings (so the decays and b1 are really in use)."""
    args = meta.parse_args(["--out", "/tmp/x.py"])
    assert (args.popsize, args.sigma, args.es_lr, args.sigma_decay, args.lr_decay, args.es_b1, args.generations,
            args.seeds, args.fitness, args.rule) == (64, 0.03, 0.03, 0.999, 0.999, 0.99, 512, 1, "final", "open")
    mean = {"a": jnp.zeros(5), "b": jnp.zeros((2, 3))}
    constant = argparse.Namespace(**{**vars(args), "sigma_decay": 1.0, "lr_decay": 1.0, "es_b1": 0.9})

    def run(es, generations=10):
        params = es.default_params
        state = es.init(jax.random.key(0), mean, params)
        target = jnp.arange(11.0) / 10
        for g in range(generations):
            pop, state = es.ask(jax.random.key(g + 1), state, params)
            flat = jax.vmap(lambda x: ravel_pytree(x)[0])(pop)
            state, _ = es.tell(jax.random.key(0), pop, jnp.sum((flat - target) ** 2, axis=1), state, params)
        return ravel_pytree(es.get_mean(state))[0], state.std

    ours, our_std = run(meta.make_strategy(args, mean))
    assert float(jnp.abs(ours).max()) > 0.01  # the mean moved
    theirs, their_std = run(upstream_strategy(mean))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(our_std, their_std, rtol=1e-6)
    np.testing.assert_allclose(our_std, 0.03 * 0.999**9, rtol=1e-5)  # evosax: after tell g, std_schedule(g - 1)
    other, other_std = run(meta.make_strategy(constant, mean))
    assert not np.allclose(other, ours, rtol=1e-3)
    np.testing.assert_allclose(other_std, 0.03, rtol=1e-6)


@pytest.mark.slow  # three small PPO compilations: about a minute on 2 cores
def test_meta_es_fitness_is_the_final_return():
    """OPEN's fitness is metrics["returned_episode_returns"][-1]: the last update's return (mean over seeds), on
    the harness's wiring of the rule; --fitness tail is the earlier mean over the last tenth of the updates."""
    config = ppo.PPOConfig(total_timesteps=20 * 4 * 16, num_envs=4, num_steps=16, num_minibatches=2, hidden=8)
    weights = rule.zero_weights()
    rngs = jax.random.split(jax.random.key(0), 2)
    tx = harness.make_optimizer(lambda f: rule.learned_update(weights, f), config, CARTPOLE, carry=8, zero_mean=True)
    returns = np.asarray(jax.jit(jax.vmap(ppo.make_train(config, CARTPOLE, optimizer=tx, optimizer_sees_batch=True)))(
        rngs)["metrics"]["return"])
    final = float(jax.jit(meta.make_fitness(config, CARTPOLE, rule, harness))(weights, rngs))
    tail = float(jax.jit(meta.make_fitness(config, CARTPOLE, rule, harness, "tail"))(weights, rngs))
    np.testing.assert_allclose(final, returns[:, -1].mean(), rtol=1e-5)
    np.testing.assert_allclose(tail, returns[:, -2:].mean(), rtol=1e-5)
    assert final != tail
