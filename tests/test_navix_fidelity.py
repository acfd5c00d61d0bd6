"""The navix template's PPO is NAVIX's own: its settings, network, loss, optimizer, observations and environments.

Each test checks the project's value or function against a transcription of upstream's on the same inputs.
Upstream: epignatelli/navix at tag v0.7.0, commit e4eb92a66647fb8d6e409fb064097e51fa1f5378, files
  navix/agents/ppo.py: PPOHparams (the settings), PPO.ppo_loss, PPO.evaluate_experience (GAE), PPO.train (optimizer)
  navix/agents/models.py: ActorCritic, MLPEncoder                  (the network)
  baselines/ppo.py: FlattenObsWrapper, nx.make(env_id), seeds_range (the observations and the seeds)
  navix/environments/registry.py: make(name, max_steps=100)       (the episode limit)
and the installed navix 0.7.4 (the release that installs on Python 3.11), whose environments the template plays.
Where the template differs from upstream on purpose (the CPU profile's budget; the discount of GAE, see
test_gae_is_the_standard_one_not_navix_gamma_power_t), the test says so.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import sys

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from conftest import ROOT

from base.template import load_template
from jax_workloads import navix_tasks as nt
from jax_workloads import ppo, ppo_agent

NAVIX = ROOT / "templates" / "navix"

# ---------------------------------------------------------------- upstream's settings, transcribed

PPO_HPARAMS = {  # navix/agents/ppo.py PPOHparams defaults at v0.7.0 (baselines/ppo.py passes PPOHparams())
    "budget": 1_000_000, "num_envs": 16, "num_steps": 128, "num_minibatches": 8, "num_epochs": 1,
    "gae_lambda": 0.95, "clip_eps": 0.2, "ent_coef": 0.01, "vf_coef": 0.5, "max_grad_norm": 0.5, "lr": 2.5e-4,
    "anneal_lr": True, "normalise_advantage": True, "clip_value_loss": True,
}
ENV_GAMMA = 0.99  # navix/environments/environment.py Environment.gamma
SEEDS = len(range(0, 10, 1))  # baselines/ppo.py seeds_range (0, 10, 1)
MAX_STEPS = 100  # registry.make's default
HIDDEN = 64  # MLPEncoder.hidden_size: Dense 64, tanh, Dense 64, tanh


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


agent = load_module(NAVIX / "agent.py", "navix_agent_fidelity")


def profile(name):
    t = load_template(str(NAVIX)).with_profile(name)
    return t.spec, ppo_agent.ppo_config(t.spec.config)


def test_navix_is_the_pinned_release_and_the_suite_is_its_environments():
    import navix

    assert importlib.metadata.version("navix") == "0.7.4"
    spec, _ = profile("cpu")
    assert set(spec.config["envs"]) <= set(navix.registry())
    assert spec.config["max_steps"] == MAX_STEPS == nt.MAX_STEPS


def test_ppo_settings_are_navix_ppohparams_in_every_profile():
    algorithm = {"num_envs": PPO_HPARAMS["num_envs"], "num_steps": PPO_HPARAMS["num_steps"],
                 "num_minibatches": PPO_HPARAMS["num_minibatches"], "update_epochs": PPO_HPARAMS["num_epochs"],
                 "gamma": ENV_GAMMA, "gae_lambda": PPO_HPARAMS["gae_lambda"],
                 "max_grad_norm": PPO_HPARAMS["max_grad_norm"], "lr": PPO_HPARAMS["lr"],
                 "anneal_lr": PPO_HPARAMS["anneal_lr"], "shuffle_envs": False}  # NAVIX shuffles transitions
    for name in ("cpu", "gpu"):
        _, config = profile(name)
        assert {k: getattr(config, k) for k in algorithm} == algorithm, name
    gpu_spec, gpu = profile("gpu")
    assert (gpu.total_timesteps, gpu_spec.seeds) == (PPO_HPARAMS["budget"], SEEDS)
    # The CPU profile shrinks the budget only (README, "Budgets").
    _, cpu = profile("cpu")
    assert cpu.total_timesteps < gpu.total_timesteps
    assert dataclasses.replace(cpu, total_timesteps=gpu.total_timesteps) == gpu


def test_agent_objective_and_network_constants_are_navix():
    assert (agent.ENT_COEF, agent.VF_COEF, agent.CLIP_EPS) == (PPO_HPARAMS["ent_coef"], PPO_HPARAMS["vf_coef"],
                                                                PPO_HPARAMS["clip_eps"])
    assert agent.VALUE_LOSS == "navix" and agent.NORMALISE_ADVANTAGE
    assert (agent.HIDDEN, agent.LAYERS, agent.ACTIVATION) == (HIDDEN, 2, "tanh")
    assert not agent.LAYER_NORM and not agent.SHARED_TORSO and agent.POLICY_INIT_SCALE == 0.01


def upstream_forward(actor, critic, x):
    """models.py ActorCritic: actor = MLPEncoder then Dense(action_dim), critic = MLPEncoder then Dense(1), squeezed;
    each given as its three (kernel, bias) pairs."""
    def mlp(layers, h):
        for kernel, bias in layers[:-1]:
            h = jnp.tanh(h @ kernel + bias)
        kernel, bias = layers[-1]
        return h @ kernel + bias
    return mlp(actor, x), jnp.squeeze(mlp(critic, x), -1)


def test_network_is_navix_actor_critic_same_outputs():
    net = agent.make_network(7, 0)
    obs_size = 5 * 5 * 3
    params = jax.jit(net.init)(jax.random.key(0), jnp.zeros((obs_size,)))["params"]
    dense = [params[f"Dense_{i}"] for i in range(6)]  # actor encoder 0-1, critic encoder 2-3, heads 4 (actor), 5
    pairs = [(d["kernel"], d["bias"]) for d in dense]
    assert [k.shape for k, _ in pairs] == [(obs_size, HIDDEN), (HIDDEN, HIDDEN)] * 2 + [(HIDDEN, 7), (HIDDEN, 1)]
    assert all(not np.any(b) for _, b in pairs)  # zero biases (flax's default, NAVIX's constant(0.0) on the heads)
    # The heads are orthogonal with NAVIX's scales: columns orthogonal, of norm 0.01 and 1.0.
    for (kernel, _), scale in ((pairs[4], 0.01), (pairs[5], 1.0)):
        np.testing.assert_allclose(kernel.T @ kernel, scale**2 * np.eye(kernel.shape[1]), atol=1e-6)
    # The encoders keep flax's default Dense initialisation (lecun normal), as NAVIX's MLPEncoder does.
    assert 0.5 < float(jnp.std(pairs[0][0])) * np.sqrt(obs_size) < 1.5
    obs = jax.random.randint(jax.random.key(1), (9, obs_size), 0, 11).astype(jnp.float32)
    logits, value = jax.jit(net.apply)({"params": params}, obs)
    up_logits, up_value = jax.jit(upstream_forward)([pairs[0], pairs[1], pairs[4]], [pairs[2], pairs[3], pairs[5]], obs)
    np.testing.assert_allclose(logits, up_logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value, up_value, rtol=1e-5, atol=1e-6)


def upstream_loss(params, apply_fn, batch, hp):
    """ppo.py PPO.ppo_loss with clip_value_loss and normalise_advantage (NAVIX's defaults), verbatim in its algebra."""
    logits, value = apply_fn(params, batch.obs)
    pi = distrax.Categorical(logits=logits)
    log_prob = pi.log_prob(batch.action)
    value_loss = jnp.square(value - batch.target)
    value_clipped = batch.value + jnp.clip(value - batch.value, -hp["clip_eps"], hp["clip_eps"])
    value_loss_clipped = 0.5 * jnp.square(value_clipped - batch.target)
    value_loss = 0.5 * jnp.maximum(value_loss, value_loss_clipped).mean()
    ratio = jnp.exp(log_prob - batch.log_prob)
    gae = (batch.advantage - batch.advantage.mean()) / (batch.advantage.std() + 1e-8)
    loss_actor = -jnp.minimum(ratio * gae, jnp.clip(ratio, 1.0 - hp["clip_eps"], 1.0 + hp["clip_eps"]) * gae).mean()
    return loss_actor + hp["vf_coef"] * value_loss - hp["ent_coef"] * pi.entropy().mean()


def test_agent_loss_matches_navix_ppo_loss():
    _, config = profile("cpu")
    net = agent.make_network(7, 0)
    k = jax.random.split(jax.random.key(2), 6)
    n, obs_size = 64, 75
    params = jax.jit(net.init)(k[0], jnp.zeros((obs_size,)))
    obs = jax.random.randint(k[1], (n, obs_size), 0, 11).astype(jnp.float32)
    action = jax.random.randint(k[2], (n,), 0, 7)
    batch = ppo.Batch(obs, action, -1.9 + 0.3 * jax.random.normal(k[3], (n,)), 0.5 * jax.random.normal(k[4], (n,)),
                      jax.random.normal(k[5], (n,)), jax.random.normal(k[5], (n,)) + 1.0)
    ours, reference, upstream = jax.jit(lambda p, b: (
        agent.loss(p, net.apply, b, config, True)[0], ppo.ppo_loss(p, net.apply, b, config, True)[0],
        upstream_loss(p, net.apply, b, PPO_HPARAMS)))(params, batch)
    np.testing.assert_allclose(ours, upstream, rtol=1e-5)
    # NAVIX's clipped value loss is not the reference one (its clipped branch is halved once more).
    assert not np.isclose(ours, reference, rtol=1e-4)


def test_optimizer_is_navix_clip_then_adam_annealed_per_update():
    """ppo.py PPO.train: clip_by_global_norm(0.5), Adam(eps 1e-5) at lr * (1 - (count // (minibatches * epochs)) /
    num_updates). Ours anneals the same line per minibatch step instead of per update: within lr / num_updates."""
    _, config = profile("cpu")
    per_update = config.num_minibatches * config.update_epochs
    counts = np.arange(config.num_updates * per_update)
    navix_lr = config.lr * (1.0 - (counts // per_update) / config.num_updates)
    ours = optax.linear_schedule(config.lr, 0.0, config.num_updates * per_update)(counts)
    assert np.max(np.abs(ours - navix_lr)) <= config.lr / config.num_updates + 1e-12
    tx = ppo.default_optimizer(config)
    grads = {"w": jnp.full((4,), 10.0)}  # norm 20: clipped to 0.5 first
    upstream = optax.chain(optax.clip_by_global_norm(PPO_HPARAMS["max_grad_norm"]), optax.adam(config.lr, eps=1e-5))
    u, _ = tx.update(grads, tx.init(grads))
    up, _ = upstream.update(grads, upstream.init(grads))
    np.testing.assert_allclose(u["w"], up["w"], rtol=1e-6)  # the first step: both at lr


def test_gae_is_the_standard_one_not_navix_gamma_power_t():
    """NAVIX's evaluate_experience discounts step t of an episode by gamma ** t (Timestep.t), a per-step discount
    that shrinks along the episode; the template uses the standard constant gamma (PureJaxRL's, and the one
    rlax.truncated_generalized_advantage_estimation expects), a deliberate difference (README)."""
    import rlax

    t_len, n = 32, 4
    k = jax.random.split(jax.random.key(3), 4)
    value, reward = jax.random.normal(k[0], (t_len, n)), jax.random.normal(k[1], (t_len, n))
    last = jax.random.normal(k[2], n)
    done = (jax.random.uniform(k[3], (t_len, n)) < 0.1).astype(jnp.float32)
    values = jnp.concatenate([value, last[None]])
    gae = jax.vmap(rlax.truncated_generalized_advantage_estimation, in_axes=(1, 1, None, 1, None), out_axes=1)
    steps = jnp.broadcast_to(jnp.arange(1, t_len + 1)[:, None], (t_len, n))

    @jax.jit
    def all_three():
        lam = PPO_HPARAMS["gae_lambda"]
        return (ppo._gae(value, reward, done, last, ENV_GAMMA, lam)[0],
                gae(reward, (1 - done) * ENV_GAMMA, lam, values, True),
                gae(reward, (1 - done) * ENV_GAMMA**steps, lam, values, True))

    adv, standard, navix = all_three()
    np.testing.assert_allclose(adv, standard, rtol=1e-5, atol=1e-5)
    assert not np.allclose(adv, navix, atol=1e-3)


def test_observations_actions_and_rewards_are_navix_baseline():
    """baselines/ppo.py: nx.make(env_id) (symbolic observations, 7 MiniGrid actions, max_steps 100), flattened by
    FlattenObsWrapper; rewards and terminations NAVIX's own; solved = the goal_reached event at a termination.
    DoorKey-5x5, the suite's environment with every entity (key, door, goal): 200 random actions, one compiled scan
    of ours beside one of NAVIX's, episodes ending and restarting along the way."""
    import navix

    env_id = "Navix-DoorKey-5x5-v0"
    upstream = navix.make(env_id)
    env = nt.make_env(env_id)
    assert (upstream.max_steps, env.obs_size, env.num_actions) == (
        MAX_STEPS, int(np.prod(upstream.observation_space.shape)), len(upstream.action_set))
    assert env.num_actions == 7
    key = jax.random.key(4)
    actions = jax.random.randint(jax.random.key(5), (200,), 0, 7)

    @jax.jit
    def both(key):
        obs, timestep = env.reset(key)
        up = upstream.reset(key)
        first = jnp.array_equal(obs, jnp.ravel(up.observation).astype(jnp.float32))

        def step(carry, xs):
            timestep, up = carry
            action, step_key = xs
            obs, timestep, reward, done, solved = env.step(step_key, timestep, action)
            nxt = upstream._step(up, action)
            up_solved = nxt.is_termination() & nxt.state.events.goal_reached.happened
            same_obs = jnp.array_equal(obs, jnp.ravel(nxt.observation).astype(jnp.float32)) | done
            # After an episode ends, both restart from the same key: NAVIX's reset, as ours does.
            up = jax.tree.map(lambda a, b: jnp.where(nxt.is_done(), a, b), upstream.reset(step_key), nxt)
            return (timestep, up), (reward, nxt.reward, done, nxt.is_done(), solved, up_solved, same_obs)

        keys = jax.random.split(jax.random.key(6), actions.shape[0])
        return first, jax.lax.scan(step, (timestep, up), (actions, keys))[1]

    first, (reward, up_reward, done, up_done, solved, up_solved, same_obs) = both(key)
    assert bool(first) and bool(jnp.all(same_obs))
    np.testing.assert_array_equal(reward, up_reward)
    np.testing.assert_array_equal(done, up_done)
    np.testing.assert_array_equal(solved, up_solved)
    assert int(done.sum()) >= 1  # at least one episode ended (the 100-step limit if nothing else)
