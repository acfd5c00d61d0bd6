"""The kinetix template's PPO is Kinetix's own: its settings, network, reward, minibatches, GAE, loss and optimizer.

Each test checks the project's value or function against a transcription of upstream's on the same inputs.
Upstream: FLAIROx/Kinetix at commit fac744975567154a90e4d378ced1ad3f143d57c0 (2025-10-04), files
  configs/ppo.yaml, configs/learning/ppo-base.yaml, configs/learning/ppo-rnn.yaml, configs/model/model-base.yaml,
  configs/env/symbolic.yaml, configs/env_size/s.yaml        (the settings)
  kinetix/models/actor_critic.py: ActorCriticSymbolicRNN, GeneralActorCriticRNN   (the network for symbolic_flat)
  kinetix/models/utils.py: make_network_from_config          (symbolic_flat -> ActorCriticSymbolicRNN)
  kinetix/util/config.py: generate_params_from_config        (EnvParams().replace(dense_reward_scale=...))
  experiments/ppo.py: make_train                             (optimizer, GAE, minibatches, loss)
Where the template differs from upstream on purpose (the CPU profile's sizes; discrete or continuous actions where
Kinetix's configs use multi_discrete), the test says so.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import ROOT
from flax.linen.initializers import constant, orthogonal

from base.template import load_template
from jax_workloads import kinetix_tasks as kt
from jax_workloads import ppo

KINETIX = ROOT / "templates" / "kinetix"

# ---------------------------------------------------------------- upstream's settings, transcribed

PPO_BASE = {  # configs/learning/ppo-base.yaml (the keys PPO uses; level filtering and warmup are off or UED-only)
    "lr": 5e-5, "max_grad_norm": 1.0, "total_timesteps": 1073741824, "num_train_envs": 2048, "num_minibatches": 32,
    "gamma": 0.995, "update_epochs": 8, "clip_eps": 0.2, "gae_lambda": 0.9, "ent_coef": 0.01, "anneal_lr": False,
    "warmup_lr": False, "vf_coef": 0.5,
}
PPO_RNN = {"num_steps": 64}  # configs/learning/ppo-rnn.yaml
MODEL_BASE = {"fc_layer_depth": 5, "fc_layer_width": 128, "activation": "tanh", "recurrent_model": False}
SYMBOLIC = {"action_type": "multi_discrete", "observation_type": "symbolic_flat", "dense_reward_scale": 0.2,
            "frame_skip": 2}  # configs/env/symbolic.yaml
ENV_SIZE_S = {"num_polygons": 5, "num_circles": 2, "num_joints": 1, "num_thrusters": 1, "num_motor_bindings": 4,
              "num_thruster_bindings": 2}  # configs/env_size/s.yaml


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


harness = load_module(KINETIX / "harness.py", "kinetix_harness_fidelity")
agent = load_module(KINETIX / "agent.py", "kinetix_agent_fidelity")


def profile(name):
    t = load_template(str(KINETIX)).with_profile(name)
    return t.spec, harness.ppo_config(t.spec.config)


def test_ppo_settings_are_kinetix_ppo_base_in_every_profile():
    algorithm = {"update_epochs": PPO_BASE["update_epochs"], "num_minibatches": PPO_BASE["num_minibatches"],
                 "gamma": PPO_BASE["gamma"], "gae_lambda": PPO_BASE["gae_lambda"],
                 "max_grad_norm": PPO_BASE["max_grad_norm"], "lr": PPO_BASE["lr"], "anneal_lr": PPO_BASE["anneal_lr"],
                 "shuffle_envs": True}
    for name in ("cpu", "gpu"):
        spec, config = profile(name)
        assert {k: getattr(config, k) for k in algorithm} == algorithm, name
        assert spec.config["dense_reward_scale"] == SYMBOLIC["dense_reward_scale"], name
        assert config.num_steps == PPO_RNN["num_steps"], name
        assert config.num_envs % config.num_minibatches == 0, name
    _, gpu = profile("gpu")
    assert gpu.num_envs == PPO_BASE["num_train_envs"]
    # The CPU profile shrinks sizes only: fewer environments and steps (README, "Budgets").
    _, cpu = profile("cpu")
    assert dataclasses.replace(cpu, num_envs=gpu.num_envs, total_timesteps=gpu.total_timesteps) == gpu


def test_agent_objective_and_network_constants_are_kinetix():
    assert (agent.ENT_COEF, agent.VF_COEF, agent.CLIP_EPS) == (PPO_BASE["ent_coef"], PPO_BASE["vf_coef"],
                                                                PPO_BASE["clip_eps"])
    assert agent.CLIP_VALUE and not agent.LAYER_NORM and agent.POLICY_INIT_SCALE == 0.01
    model = (MODEL_BASE["fc_layer_width"], MODEL_BASE["fc_layer_depth"], MODEL_BASE["activation"])
    assert (agent.HIDDEN, agent.LAYERS, agent.ACTIVATION) == model


def test_levels_have_kinetix_s_static_params():
    from kinetix.environment import StaticEnvParams

    _, static_params = kt.load_levels(["s/h0_weak_thrust"])
    assert static_params == StaticEnvParams().replace(frame_skip=SYMBOLIC["frame_skip"], **ENV_SIZE_S)


# ---------------------------------------------------------------- the network: ActorCriticSymbolicRNN, transcribed


class GeneralActorCriticRNN(nn.Module):
    """GeneralActorCriticRNN with recurrent=False (model-base.yaml); discrete or continuous actions only."""

    action_dim: int
    fc_layer_depth: int
    fc_layer_width: int
    continuous: bool

    @nn.compact
    def __call__(self, embedding, activation):
        actor_mean = embedding
        critic = embedding
        for _ in range(self.fc_layer_depth):
            actor_mean = nn.Dense(self.fc_layer_width, kernel_init=orthogonal(np.sqrt(2)),
                                  bias_init=constant(0.0))(actor_mean)
            actor_mean = activation(actor_mean)
            critic = nn.Dense(self.fc_layer_width, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(critic)
            critic = activation(critic)
        actor_mean = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01), bias_init=constant(0.0))(actor_mean)
        if self.continuous:
            log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
            pi = distrax.MultivariateNormalDiag(actor_mean, jnp.exp(log_std))
        else:
            pi = distrax.Categorical(logits=actor_mean)
        critic = nn.Dense(1, kernel_init=orthogonal(1.0), bias_init=constant(0.0))(critic)
        return pi, jnp.squeeze(critic, axis=-1)


class ActorCriticSymbolicRNN(nn.Module):
    """ActorCriticSymbolicRNN: Dense(fc_layer_width) + ReLU embedding (ReLU whatever `activation`), then the towers."""

    action_dim: int
    fc_layer_depth: int
    fc_layer_width: int
    activation: str
    continuous: bool

    @nn.compact
    def __call__(self, obs):
        activation = nn.relu if self.activation == "relu" else nn.tanh
        embedding = nn.Dense(self.fc_layer_width, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(obs)
        embedding = nn.relu(embedding)
        return GeneralActorCriticRNN(self.action_dim, self.fc_layer_depth, self.fc_layer_width,
                                          self.continuous)(embedding, activation)


def upstream_to_ours(up: dict, depth: int) -> dict:
    """Upstream's parameters under our module's names: ours builds the critic tower first (Dense_1..depth, head
    Dense_depth+1), then the actor's; upstream interleaves actor (even) and critic (odd) layers, heads last."""
    g = up["params"]["GeneralActorCriticRNN_0"]
    ours = {"Dense_0": up["params"]["Dense_0"]}
    for i in range(depth):
        ours[f"Dense_{1 + i}"] = g[f"Dense_{2 * i + 1}"]
        ours[f"Dense_{depth + 2 + i}"] = g[f"Dense_{2 * i}"]
    ours[f"Dense_{depth + 1}"] = g[f"Dense_{2 * depth + 1}"]
    ours[f"Dense_{2 * depth + 2}"] = g[f"Dense_{2 * depth}"]
    if "log_std" in g:
        ours["log_std"] = g["log_std"]
    return {"params": ours}


@pytest.mark.parametrize("continuous", [False, True])
def test_network_is_actor_critic_symbolic_same_shapes_same_outputs(continuous):
    obs_size, n = 140, 16  # Kinetix's symbolic_flat observation for s levels (checked in test_kinetix.py)
    num_actions, action_dim = (0, 6) if continuous else (11, 0)
    ours = agent.make_network(num_actions, action_dim)
    up = ActorCriticSymbolicRNN(action_dim or num_actions, MODEL_BASE["fc_layer_depth"], MODEL_BASE["fc_layer_width"],
                          MODEL_BASE["activation"], continuous)
    key_up, key_ours, key_obs, key_act = jax.random.split(jax.random.key(3), 4)
    up_params = up.init(key_up, jnp.zeros((obs_size,)))
    our_params = ours.init(key_ours, jnp.zeros((obs_size,)))
    mapped = upstream_to_ours(up_params, MODEL_BASE["fc_layer_depth"])
    # Same parameters: every one of ours has upstream's shape, and none is left over on either side.
    assert jax.tree.structure(mapped) == jax.tree.structure(our_params)
    assert jax.tree.map(jnp.shape, mapped) == jax.tree.map(jnp.shape, our_params)
    n_params = sum(x.size for x in jax.tree.leaves(up_params))
    assert n_params == sum(x.size for x in jax.tree.leaves(our_params))
    assert n_params == 140 * 128 + 128 + 2 * 5 * (128 * 128 + 128) + 129 + (6 * 129 + 6 if continuous else 11 * 129)

    # Same outputs on the same parameters: logits or mean, value, log-probability and entropy.
    obs = jax.random.uniform(key_obs, (n, obs_size), minval=-3.0, maxval=3.0)
    # Perturb the parameters so that the small-initialised heads do not hide a wrong layer order.
    leaves, treedef = jax.tree.flatten(up_params)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    noisy = [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    up_params = jax.tree.unflatten(treedef, noisy)
    pi, up_value = up.apply(up_params, obs)
    policy_out, value = ours.apply(upstream_to_ours(up_params, MODEL_BASE["fc_layer_depth"]), obs)
    np.testing.assert_allclose(value, up_value, rtol=1e-5, atol=1e-5)
    assert float(jnp.std(value)) > 1e-2  # the outputs depend on the observation: the comparison means something
    action = ppo.sample_action(key_act, policy_out, not continuous)
    if continuous:
        np.testing.assert_allclose(policy_out[0], pi.mean(), rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_allclose(jax.nn.log_softmax(policy_out), jax.nn.log_softmax(pi.logits), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ppo.log_prob(policy_out, action, not continuous), pi.log_prob(action), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(ppo.entropy(policy_out, not continuous), pi.entropy(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- the reward: dense_reward_scale 0.2


def test_environment_reward_uses_kinetix_dense_reward_scale():
    from kinetix.environment import ActionType, EnvParams, ObservationType, make_kinetix_env

    level = "s/h2_one_wheel_car"  # a car that drives towards the goal: the distance changes every step
    states, static_params = kt.load_levels([level])
    initial = jax.tree.map(lambda x: x[0], states)
    env = kt.make_env([level])  # the harness's environment, its default reward scale; no variation: the level itself
    # generate_params_from_config: EnvParams().replace(dense_reward_scale=config["dense_reward_scale"]); here both
    # Kinetix's PPO scale and EnvParams' default, batched, on one environment without auto-reset.
    up = make_kinetix_env(ActionType.DISCRETE, ObservationType.SYMBOLIC_FLAT, None, EnvParams(), static_params,
                          auto_reset=False)
    scales = jnp.array([SYMBOLIC["dense_reward_scale"], EnvParams().dense_reward_scale])
    actions = jnp.array([1] * 20 + [6] * 10 + [0] * 10)  # a motor one way, a thruster, the other motor direction
    key = jax.random.key(0)

    @jax.jit
    def rollouts():
        def ours(state, a):
            _, state, reward, done, _ = env.step(key, state, a)
            return state, (reward, done)

        def upstream(scale):
            params = EnvParams().replace(dense_reward_scale=scale)
            _, state = up.reset(key, params, override_reset_state=initial)

            def step(state, a):
                _, state, reward, _, _ = up.step(key, state, a, params)
                return state, reward

            return jax.lax.scan(step, state, actions)[1]

        return jax.lax.scan(ours, env.reset(key)[1], actions)[1], jax.vmap(upstream)(scales)

    (reward, done), (up_02, up_01) = rollouts()
    assert not done.any()  # one episode throughout: the environments stay in step
    np.testing.assert_allclose(reward, up_02, rtol=1e-6, atol=1e-7)
    assert kt.DENSE_REWARD_SCALE == 0.2 and EnvParams().dense_reward_scale == 0.1  # Kinetix's default is not its PPO's
    dense = np.abs(np.asarray(up_02)) > 1e-6
    assert dense.sum() >= 10  # the dense reward is there, and doubled against EnvParams' default scale
    np.testing.assert_allclose(np.asarray(up_02)[dense], 2 * np.asarray(up_01)[dense], rtol=1e-4)


# ---------------------------------------------------------------- minibatches, GAE, loss and optimizer


def upstream_minibatches(key, batch, num_envs, num_minibatches):
    """experiments/ppo.py, _update_epoch: permute the environments, then [T, M, N/M] swapped to [M, T, N/M]."""
    permutation = jax.random.permutation(key, num_envs)
    shuffled = jax.tree.map(lambda x: jnp.take(x, permutation, axis=1), batch)
    return jax.tree.map(lambda x: jnp.swapaxes(jnp.reshape(x, [x.shape[0], num_minibatches, -1] + list(x.shape[2:])),
                                               1, 0), shuffled)


def test_minibatches_are_kinetix_whole_environment_trajectories():
    t, n, m = 64, 32, 8
    data = {"obs": jax.random.normal(jax.random.key(0), (t, n, 3)), "action": jnp.arange(t * n).reshape(t, n)}
    key = jax.random.key(9)
    ours = ppo.env_minibatches(key, data, m)
    up = upstream_minibatches(key, data, n, m)
    for name in data:
        assert ours[name].shape[:2] == (m, t * n // m)
        np.testing.assert_array_equal(ours[name].reshape(up[name].shape), up[name])
    # Each minibatch holds whole trajectories: every environment's T steps, in one minibatch only.
    envs = np.asarray(ours["action"]) % n
    assert all(len(set(row)) == n // m and np.bincount(row, minlength=n).max() == t for row in envs)
    with pytest.raises(ValueError, match="multiple of num_minibatches"):
        ppo.make_train(ppo.PPOConfig(num_envs=30, num_minibatches=8, shuffle_envs=True), ppo.gymnax_env("CartPole-v1"))


def upstream_gae(done, value, reward, last_val, last_done, gamma, gae_lambda):
    """experiments/ppo.py, _calculate_gae: transitions store the done flag *before* their step (last_done)."""
    def get_advantages(carry, transition):
        gae, next_value, next_done = carry
        done, value, reward = transition
        delta = reward + gamma * next_value * (1 - next_done) - value
        gae = delta + gamma * gae_lambda * (1 - next_done) * gae
        return (gae, value, done), gae

    _, advantages = jax.lax.scan(get_advantages, (jnp.zeros_like(last_val), last_val, last_done),
                                 (done, value, reward), reverse=True, unroll=16)
    return advantages, advantages + value


def test_gae_matches_kinetix():
    _, config = profile("cpu")
    t, n = 64, 8
    k = jax.random.split(jax.random.key(1), 5)
    value, reward = jax.random.normal(k[0], (t, n)), jax.random.normal(k[1], (t, n))
    last_val = jax.random.normal(k[2], n)
    done = (jax.random.uniform(k[3], (t, n)) < 0.1).astype(jnp.float32)  # ours: the episode ended at this step
    first_done = (jax.random.uniform(k[4], n) < 0.5).astype(jnp.float32)
    up_done = jnp.concatenate([first_done[None], done[:-1]])  # upstream's: it had ended before this step
    adv, target = ppo._gae(value, reward, done, last_val, config.gamma, config.gae_lambda)
    up_adv, up_target = upstream_gae(up_done, value, reward, last_val, done[-1], 0.995, 0.9)
    np.testing.assert_allclose(adv, up_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(target, up_target, rtol=1e-5, atol=1e-5)
    other, _ = ppo._gae(value, reward, done, last_val, 0.99, 0.95)
    assert not np.allclose(other, up_adv, atol=1e-3)  # the old settings would fail this test


def upstream_loss(params, apply_fn, batch, config):
    """experiments/ppo.py, _loss_fn, with the network's distrax distribution (discrete)."""
    logits, value = apply_fn(params, batch.obs)
    pi = distrax.Categorical(logits=logits)
    log_prob = pi.log_prob(batch.action)
    value_pred_clipped = batch.value + (value - batch.value).clip(-config["clip_eps"], config["clip_eps"])
    value_losses = jnp.square(value - batch.target)
    value_losses_clipped = jnp.square(value_pred_clipped - batch.target)
    value_loss = 0.5 * jnp.maximum(value_losses, value_losses_clipped).mean()
    ratio = jnp.exp(log_prob - batch.log_prob)
    gae = (batch.advantage - batch.advantage.mean()) / (batch.advantage.std() + 1e-8)
    loss_actor = -jnp.minimum(ratio * gae, jnp.clip(ratio, 1.0 - config["clip_eps"], 1.0 + config["clip_eps"]) * gae)
    entropy = pi.entropy().mean()
    return loss_actor.mean() + config["vf_coef"] * value_loss - config["ent_coef"] * entropy


def test_agent_loss_and_optimizer_match_kinetix():
    _, config = profile("cpu")
    net = agent.make_network(11, 0)
    k = jax.random.split(jax.random.key(2), 6)
    n = 64
    params = net.init(k[0], jnp.zeros((140,)))
    obs = jax.random.uniform(k[1], (n, 140), minval=-2.0, maxval=2.0)
    action = jax.random.randint(k[2], (n,), 0, 11)
    batch = ppo.Batch(obs, action, -2.4 + 0.3 * jax.random.normal(k[3], (n,)), 0.5 * jax.random.normal(k[4], (n,)),
                      jax.random.normal(k[5], (n,)), jax.random.normal(k[5], (n,)) + 1.0)
    ours, _ = agent.loss(params, net.apply, batch, config, True)
    np.testing.assert_allclose(ours, upstream_loss(params, net.apply, batch, PPO_BASE), rtol=1e-5)
    grads = jax.grad(lambda p: agent.loss(p, net.apply, batch, config, True)[0])(params)
    grads = jax.tree.map(lambda g: 50.0 * g, grads)  # large enough for the norm clip at 1.0 to act

    # experiments/ppo.py: anneal_lr and warmup_lr are false, so clip_by_global_norm then Adam(lr, eps=1e-5).
    upstream_tx = optax.chain(optax.clip_by_global_norm(PPO_BASE["max_grad_norm"]),
                              optax.adam(PPO_BASE["lr"], eps=1e-5))
    tx = ppo.default_optimizer(config)
    assert optax.tree.norm(grads) > 2 * PPO_BASE["max_grad_norm"]

    @jax.jit
    def descend(params):
        def step(carry, i):
            p, state, up_p, up_state = carry
            g = jax.tree.map(lambda x: x * (1.0 + 0.1 * i), grads)
            u, state = tx.update(g, state, p)
            up_u, up_state = upstream_tx.update(g, up_state, up_p)
            return (optax.apply_updates(p, u), state, optax.apply_updates(up_p, up_u), up_state), None

        carry = (params, tx.init(params), params, upstream_tx.init(params))
        return jax.lax.scan(step, carry, jnp.arange(50.0))[0]

    p, _, up_p, _ = descend(params)  # 50 steps: a learning rate annealed over the run would differ already
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(up_p), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(params), strict=True))
