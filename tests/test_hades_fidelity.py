"""The hades template against the upstream code it reproduces, in process (seconds).

Upstream: FLAIROx/behaviour-distillation @a600a5a (Apache-2.0), policy_distillation/distill_minatar.py, with the
evosax it was written for (0.1.x; RobertTLange/evosax v.0.1.5, evosax/strategies/snes.py, open_es.py,
core/optimizer.py, strategy.py). Each piece below is transcribed from that code (trimmed to what runs) and compared
with ours on the same inputs: the settings (argparse defaults), the fixed labels, the behaviour-cloning loss and
optimiser, the observation normalisation, SNES's and OpenES's update (run through evosax 0.3 in distiller.py), and
the fitness (purejaxrl's LogWrapper, gymnax's own here). SNES's and OpenES's updates are the harness's
(jax_workloads.hades: es_ask, es_tell), driven by the shipped distillers' fitness shaping; they are also checked
against evosax 0.3's SNES and Open_ES as the distillers built them before the harness owned the ES (the runs of
the README were made with those), so the measurements carry over.
"""

from __future__ import annotations

import hashlib
import importlib.util
import tomllib
from pathlib import Path

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jax_workloads import hades

ROOT = Path(__file__).resolve().parent.parent
HADES = ROOT / "templates" / "hades"

# distill_minatar.py's parse_arguments defaults (the paper's MinAtar settings), and make_configs' constants.
UPSTREAM = {"env": "SpaceInvaders-MinAtar", "dataset_size": 16, "popsize": 2048, "generations": 2000, "rollouts": 2,
            "sigma_init": 0.5, "temperature": 20.0, "lrate_init": 0.05, "learn_labels": False, "es_strategy": "SNES",
            "net": "mlp", "epochs": 32, "eval_envs": 8, "activation": "relu", "width": 512, "lr": 0.03,
            "const_normalize_obs": 1, "greedy_act": False, "num_steps": 1024, "overfit": False}
UPSTREAM_ADAM_EPS = 1e-5  # make_train: optax.adam(learning_rate=linear_schedule, eps=1e-5)
# sha256 of upstream's normalize_params/mean_SpaceInvaders-MinAtar.npy and var_...npy float32 data, concatenated.
NORM_DIGEST = "a9329e1a6ac2f6a9"


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def spec_of(module) -> hades.ESSpec:
    """The distiller's constants as the harness checks them."""
    return hades.es_spec(hades.module_constants(module), 64)


def test_settings_are_the_papers():
    toml = tomllib.loads((HADES / "template.toml").read_text())
    gpu = toml["profiles"]["gpu"]["config"]
    es = {**toml["config"]["es"], **gpu["es"]}
    bc = {**toml["config"]["bc"], **gpu["bc"]}
    assert toml["config"]["env"] == UPSTREAM["env"]
    assert (es["population"], es["generations"], es["rollouts"], es["eval_envs"], es["eval_steps"]) == (
        UPSTREAM["popsize"], UPSTREAM["generations"], UPSTREAM["rollouts"], UPSTREAM["eval_envs"],
        UPSTREAM["num_steps"])
    assert (bc["width"], bc["activation"], bc["lr"], bc["steps"], bc["adam_eps"], bc["layers"]) == (
        UPSTREAM["width"], UPSTREAM["activation"], UPSTREAM["lr"], UPSTREAM["epochs"], UPSTREAM_ADAM_EPS, 2)
    d = load(HADES / "distiller.py", "hades_distiller_settings")
    assert (d.DATASET_SIZE, d.LEARN_LABELS, d.STRATEGY, d.SIGMA_INIT, d.TEMPERATURE, d.OPENES_LR, d.FIXED_INIT) == (
        UPSTREAM["dataset_size"], UPSTREAM["learn_labels"], UPSTREAM["es_strategy"].lower(), UPSTREAM["sigma_init"],
        UPSTREAM["temperature"], UPSTREAM["lrate_init"], UPSTREAM["overfit"])
    assert hades.DistillConfig().bc == hades.BCConfig(**{k: bc[k] for k in ("width", "layers", "activation", "lr",
                                                                            "steps", "adam_eps")})


def test_fixed_labels_and_observation_statistics_are_upstreams():
    spec = spec_of(load(HADES / "distiller.py", "hades_distiller_labels"))
    # init_params: samples_per_action = D // A one-hots per action, in action order.
    y = []
    for target in range(4):
        y.extend([target] * (UPSTREAM["dataset_size"] // 4))
    _, labels = hades.decode(spec, jnp.zeros(spec.num_dims))
    np.testing.assert_array_equal(labels, jax.nn.one_hot(jnp.array(y), 4))
    mean, var = hades.obs_norm("SpaceInvaders-MinAtar")
    assert hashlib.sha256(mean.tobytes() + var.tobytes()).hexdigest()[:16] == NORM_DIGEST
    # TransformObservation(func=lambda x: (x - OBS_MEAN) / jnp.sqrt(OBS_VAR + 1e-8)) on the flattened grid.
    env, raw = hades.make_env("SpaceInvaders-MinAtar"), hades.ppo.gymnax_env("SpaceInvaders-MinAtar")
    key = jax.random.key(3)
    np.testing.assert_allclose(env.reset(key)[0], (raw.reset(key)[0] - mean) / jnp.sqrt(var + 1e-8), rtol=1e-6)


def test_behaviour_cloning_is_upstreams():
    """make_train's BC: distrax's Categorical logits (log-softmax), -mean(logits * targets), Adam with upstream's
    linear_schedule (frac = 1 - count // NUM_UPDATES: constant over its 32 steps) and eps 1e-5, BCAgent's init."""
    cfg = hades.BCConfig(width=32)
    policy, bc = hades.make_bc(cfg, 4, 600)
    states = jax.random.normal(jax.random.key(1), (16, 600))
    labels = jax.nn.softmax(jax.random.normal(jax.random.key(2), (16, 4)))
    init_key = jax.random.key(5)
    ours, _ = bc(init_key, states, labels)

    num_updates = cfg.steps

    def linear_schedule(count):
        frac = 1.0 - (count // num_updates)
        return cfg.lr * frac

    tx = optax.chain(optax.adam(learning_rate=linear_schedule, eps=1e-5))
    params = policy.init(init_key, jnp.zeros((1, 600)))
    opt_state = tx.init(params)

    @jax.jit
    def _bc_update_step(params, opt_state):
        def _loss(p):
            preds = distrax.Categorical(logits=policy.apply(p, states))
            return -jnp.mean(preds.logits.reshape(labels.shape) * labels)

        grads = jax.grad(_loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for _ in range(num_updates):
        params, opt_state = _bc_update_step(params, opt_state)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6), ours, params)
    # BCAgent: hidden kernels orthogonal(sqrt 2), head orthogonal(0.01), zero biases.
    p = policy.init(init_key, jnp.zeros((1, 600)))["params"]
    head = p["Dense_2"]["kernel"]
    np.testing.assert_allclose(head.T @ head, 1e-4 * np.eye(4), atol=1e-8)
    assert all(not np.any(layer["bias"]) for layer in p.values())


def _snes_v01(x, fitness, mean, sigma, popsize, num_dims, temperature):
    """evosax 0.1.5 SNES.tell (maximize=True: FitnessShaper negates; get_temp_weights; tell_strategy)."""
    fitness = -fitness
    ranks = jnp.arange(popsize)
    ranks = ranks / (ranks.size - 1)
    ranks = ranks - 0.5
    weights = jax.nn.softmax(-temperature * ranks).reshape(-1, 1)
    lrate_mean, lrate_sigma = 1.0, (3 + jnp.log(num_dims)) / (5 * jnp.sqrt(num_dims))
    s = (x - mean) / sigma
    order = fitness.argsort()
    sorted_noise = s[order]
    grad_mean = (weights * sorted_noise).sum(axis=0)
    grad_sigma = (weights * (sorted_noise**2 - 1)).sum(axis=0)
    return mean + lrate_mean * sigma * grad_mean, sigma * jnp.exp(lrate_sigma / 2 * grad_sigma)


def test_snes_update_is_evosax_01s_ties_included():
    """The harness's SNES driven by the shipped distiller's shaping (its rank weights) is evosax 0.1.5's."""
    d = load(HADES / "distiller.py", "hades_distiller_snes")
    spec = spec_of(d)
    state = hades.es_init(spec)
    assert not np.any(state.mean) and np.all(state.sigma == 0.5)  # init_params: zeros; sigma_init
    for gen in range(2):
        population = hades.es_ask(spec, jax.random.key(gen + 1), state, 16)
        fitness = jnp.round(jax.random.uniform(jax.random.key(10 + gen), (16,), maxval=4.0))  # returns tie often
        mean, sigma = _snes_v01(population, fitness, state.mean, state.sigma, 16, spec.num_dims, d.TEMPERATURE)
        state = hades.es_tell(spec, state, population, d.shape(fitness, gen))
        np.testing.assert_allclose(state.mean, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.sigma, sigma, rtol=1e-5)
    assert float(state.sigma.mean()) != pytest.approx(0.5)  # it moved


def test_openes_update_is_evosax_01s():
    """evosax 0.1.5 OpenES: antithetic noise, raw fitness (maximize: negated), theta_grad = noise.T @ f / (P sigma),
    its own Adam (beta1 0.99, beta2 0.999, eps 1e-8, bias-corrected by the generation), lr 0.05, sigma constant:
    the harness's OpenES driven by the openes candidate's shaping (raw fitness)."""
    d = load(HADES / "candidates" / "openes.py", "hades_distiller_openes")
    spec = spec_of(d)
    state = hades.es_init(spec)
    m, v = np.zeros(spec.num_dims), np.zeros(spec.num_dims)
    for gen in range(3):
        mean = state.mean
        population = hades.es_ask(spec, jax.random.key(gen + 1), state, 16)
        np.testing.assert_allclose(population[:8] - mean, -(population[8:] - mean), atol=1e-4)  # antithetic
        fitness = jax.random.uniform(jax.random.key(10 + gen), (16,), maxval=20.0)
        noise = (population - mean) / 0.5
        grads = 1.0 / (16 * 0.5) * jnp.dot(noise.T, -fitness)
        m = (1 - 0.99) * grads + 0.99 * m
        v = (1 - 0.999) * grads**2 + 0.999 * v
        mhat, vhat = m / (1 - 0.99 ** (gen + 1)), v / (1 - 0.999 ** (gen + 1))
        mean = mean - 0.05 * mhat / (jnp.sqrt(vhat) + 1e-8)
        state = hades.es_tell(spec, state, population, d.shape(fitness, gen))
        np.testing.assert_allclose(state.mean, mean, rtol=1e-4, atol=1e-5)
        assert np.all(state.sigma == 0.5)


def _old_distiller_es(strategy: str, population: int, n: int):
    """evosax 0.3's SNES / Open_ES and their params exactly as distiller.py built them before the harness owned
    the ES (its _strategy: SNES with evosax 0.1's temperature-20 rank weights, ties by position; Open_ES with
    evosax 0.1's Adam, a constant sigma and raw fitness); it told them the negated returns."""
    from evosax.algorithms import SNES, Open_ES

    if strategy == "openes":
        es = Open_ES(population, jnp.zeros(n), optimizer=optax.adam(0.05, b1=0.99, b2=0.999, eps=1e-8),
                     std_schedule=optax.constant_schedule(0.5),
                     fitness_shaping_fn=lambda population, fitness, state, params: fitness)
        return es, es.default_params

    def rank_weights(population, fitness, state, params):
        return params.weights[jnp.argsort(jnp.argsort(fitness))]

    es = SNES(population, jnp.zeros(n), fitness_shaping_fn=rank_weights)
    weights = jax.nn.softmax(-20.0 * (jnp.arange(population) / (population - 1) - 0.5))
    return es, es.default_params.replace(std_init=jnp.asarray(0.5), weights=weights)


@pytest.mark.parametrize("candidate", ["distiller.py", "candidates/openes.py", "candidates/soft_labels.py"])
def test_harness_es_is_the_old_distillers_evosax_03(candidate):
    """The same keys give the same population (bit for bit from the same mean), and the same mean and sigma after
    each generation (to float tolerance: the sums run in another order) as the evosax 0.3 strategies the
    distillers ran before: the README's measurements, made with those, hold for the harness's ES."""
    d = load(HADES / candidate, "hades_distiller_" + Path(candidate).stem)
    spec, p = spec_of(d), 16
    es, params = _old_distiller_es(spec.strategy, p, spec.num_dims)
    old = es.init(jax.random.key(0), jnp.zeros(spec.num_dims), params)
    state = hades.es_init(spec)
    for gen in range(4):
        key = jax.random.key(gen + 1)
        population, _ = es.ask(key, old, params)
        ours = hades.es_ask(spec, key, state, p)
        if gen == 0:  # the same noise from the same key: bit for bit while the means are
            np.testing.assert_array_equal(ours, population)
        np.testing.assert_allclose(ours, population, rtol=1e-5, atol=1e-6)
        fitness = jnp.round(jax.random.uniform(jax.random.key(10 + gen), (p,), maxval=6.0))  # ties
        old, _ = es.tell(jax.random.key(0), population, -fitness, old, params)
        state = hades.es_tell(spec, state, population, d.shape(fitness, jnp.int32(gen)))
        np.testing.assert_allclose(state.mean, old.mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.sigma, jnp.broadcast_to(old.std, state.sigma.shape), rtol=1e-5)
    assert float(jnp.abs(state.mean).max()) > 0.1  # it moved


def test_fitness_is_the_log_wrappers_last_returned_episode():
    """The fitness is purejaxrl's LogWrapper returned_episode_returns at the last step, averaged over environments:
    gymnax's LogWrapper (the same code) stepped with the same keys and actions gives the same number. CartPole, whose
    episodes end often and whose step compiles in a moment: the bookkeeping does not depend on the game."""
    import gymnax
    from gymnax.wrappers.purerl import LogWrapper

    env = hades.ppo.gymnax_env("CartPole-v1")
    apply = lambda params, obs: obs[:, :2] * params  # noqa: E731 - any policy of the observation
    key, n, steps = jax.random.key(7), 3, 120
    ours = jax.jit(lambda k: hades.fitness_return(env, apply, 3.0, k, n, steps))(key)

    base, env_params = gymnax.make("CartPole-v1")
    logged = LogWrapper(base)

    @jax.jit
    def step(key, state, obs):
        key, act_key, step_key = jax.random.split(key, 3)
        action = jax.random.categorical(act_key, apply(3.0, obs))
        obs, state, _, _, _, info = jax.vmap(logged.step, (0, 0, 0, None))(
            jax.random.split(step_key, n), state, action, env_params)
        return key, state, obs, info

    reset_key, key = jax.random.split(key)
    obs, state = jax.vmap(logged.reset, (0, None))(jax.random.split(reset_key, n), env_params)
    for _ in range(steps):  # step by step, as upstream's scan body
        key, state, obs, info = step(key, state, obs)
    assert bool(info["returned_episode_valid"].all())  # every environment finished an episode
    assert float(ours) == pytest.approx(float(info["returned_episode_returns"].mean()), abs=1e-5)


def test_fitness_credits_unfinished_episodes_their_running_return():
    """Where no episode ends within the steps (the cpu profile's 128 steps on SpaceInvaders), an environment counts
    its running return, not upstream's 0 (templates/hades/README.md, hole 3): CartPole pays 1 a step and lasts
    more than 5 steps, so 5 steps give 5 in every environment; an environment that did finish keeps its last
    finished episode's return (the test above)."""
    env = hades.ppo.gymnax_env("CartPole-v1")
    apply = lambda params, obs: obs[:, :2] * params  # noqa: E731
    fit = jax.jit(lambda k: hades.fitness_return(env, apply, 0.0, k, 3, 5))(jax.random.key(1))
    assert float(fit) == 5.0
