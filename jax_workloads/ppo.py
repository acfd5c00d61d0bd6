"""PPO in the PureJaxRL style: `make_train(config, env)` returns a jittable `train(rng)`.

Everything (environment steps, advantage estimation, minibatch updates) is one
compiled program, so seeds are a `jax.vmap` away:

    env = gymnax_env("CartPole-v1")
    train = jax.jit(jax.vmap(make_train(PPOConfig(), env)))
    out = train(jax.random.split(jax.random.key(0), 8))     # 8 seeds, one call

Environments come through a small adapter (`Env`) so gymnax 1.x (whose step
returns six values, `gymnax_env` here) and Kinetix (five, with its own reset
distribution, `jax_workloads.kinetix_tasks.make_env`) look alike. Templates
customise PPO through three arguments of make_train, each with the standard PPO
piece as default: `network` (a flax module returning action logits or Gaussian
means, and a value), `optimizer` (an optax transformation, called with
`train_frac` and `batch_frac` when it accepts extra arguments, as OPEN's learned
optimizers do) and `loss` (the PPO objective).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters; the defaults are PureJaxRL's for CartPole."""

    total_timesteps: int = 500_000
    num_envs: int = 4
    num_steps: int = 128
    update_epochs: int = 4
    num_minibatches: int = 4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    lr: float = 2.5e-4
    anneal_lr: bool = True
    hidden: int = 64
    layers: int = 2
    activation: str = "tanh"
    # Minibatches of whole environment trajectories (Kinetix's PPO, experiments/ppo.py, permutes the environments
    # and splits them into minibatches) instead of shuffled single transitions (PureJaxRL's feed-forward PPO).
    shuffle_envs: bool = False

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // (self.num_envs * self.num_steps)

    @property
    def minibatch_size(self) -> int:
        return self.num_envs * self.num_steps // self.num_minibatches


class Env(NamedTuple):
    """A vmappable environment: reset(key) -> (obs, state); step(key, state, action) -> (obs, state, r, done, solved).

    `solved` is the environment's own success signal at the end of an episode (Kinetix's
    goal reached); False for environments without one. Observations are flat vectors.
    """

    reset: Callable
    step: Callable
    obs_size: int
    num_actions: int          # discrete actions; 0 when continuous
    action_dim: int           # continuous action size; 0 when discrete
    name: str

    @property
    def discrete(self) -> bool:
        return self.num_actions > 0


def gymnax_env(name: str, **kwargs: Any) -> Env:
    """A gymnax 1.x environment (CartPole-v1, Breakout-MinAtar, ...) as an Env with flat observations."""
    import gymnax
    from gymnax.environments import spaces

    env, params = gymnax.make(name, **kwargs)

    def reset(key):
        obs, state = env.reset(key, params)
        return obs.reshape(-1).astype(jnp.float32), state

    def step(key, state, action):
        obs, state, reward, terminated, truncated, _ = env.step(key, state, action, params)
        done = jnp.logical_or(terminated, truncated)
        return obs.reshape(-1).astype(jnp.float32), state, reward.astype(jnp.float32), done, jnp.bool_(False)

    space = env.action_space(params)
    obs_size = int(np.prod(env.observation_space(params).shape))
    if isinstance(space, spaces.Discrete):
        return Env(reset, step, obs_size, int(space.n), 0, name)
    return Env(reset, step, obs_size, 0, int(np.prod(space.shape)), name)


_ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu}


class ActorCritic(nn.Module):
    """PureJaxRL's actor-critic: separate MLPs; logits (discrete) or Gaussian means with a learned log-std."""

    num_actions: int
    action_dim: int = 0
    hidden: int = 64
    layers: int = 2
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x):
        act = _ACTIVATIONS[self.activation]
        init = nn.initializers.orthogonal

        def mlp(h, out, scale):
            for _ in range(self.layers):
                h = act(nn.Dense(self.hidden, kernel_init=init(math.sqrt(2)))(h))
            return nn.Dense(out, kernel_init=init(scale))(h)

        value = mlp(x, 1, 1.0)[..., 0]
        if self.num_actions:
            return mlp(x, self.num_actions, 0.01), value
        mean = mlp(x, self.action_dim, 0.01)
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        return (mean, jnp.broadcast_to(log_std, mean.shape)), value


def default_network(config: PPOConfig, env: Env) -> nn.Module:
    """The standard actor-critic for env, sized by config."""
    return ActorCritic(env.num_actions, env.action_dim, config.hidden, config.layers, config.activation)


class Network(NamedTuple):
    """A network as the two functions make_train calls of a flax module: what stands in for one when the network is
    a candidate's exported functions (jax_workloads.exported), which the training process never imports.

    init(key, obs [obs_size]) -> params; apply(params, obs [n, obs_size]) -> (policy_out, value [n]).
    """

    init: Callable
    apply: Callable


# The policy distribution, written out: categorical over logits, or a diagonal Gaussian.
def sample_action(key, policy_out, discrete: bool):
    """Draw an action from the network's policy output."""
    if discrete:
        return jax.random.categorical(key, policy_out)
    mean, log_std = policy_out
    return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)


def log_prob(policy_out, action, discrete: bool):
    """Log-probability of action under the policy output."""
    if discrete:
        logp = jax.nn.log_softmax(policy_out)
        return jnp.take_along_axis(logp, action[..., None].astype(jnp.int32), axis=-1)[..., 0]
    mean, log_std = policy_out
    z = (action - mean) / jnp.exp(log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def entropy(policy_out, discrete: bool):
    """Entropy of the policy output."""
    if discrete:
        logp = jax.nn.log_softmax(policy_out)
        return -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    _, log_std = policy_out
    return jnp.sum(log_std + 0.5 * jnp.log(2 * jnp.pi * jnp.e), axis=-1)


def greedy_action(policy_out, discrete: bool):
    """The policy's most likely action: what an evaluator runs."""
    return jnp.argmax(policy_out, axis=-1) if discrete else policy_out[0]


class Batch(NamedTuple):
    """One minibatch of transitions with their advantages and value targets."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    advantage: jax.Array
    target: jax.Array


def ppo_loss(params, apply_fn: Callable, batch: Batch, config: PPOConfig, discrete: bool):
    """The clipped PPO objective with a clipped value loss and an entropy bonus; returns (loss, aux)."""
    policy_out, value = apply_fn(params, batch.obs)
    value_clipped = batch.value + jnp.clip(value - batch.value, -config.clip_eps, config.clip_eps)
    value_loss = 0.5 * jnp.maximum((value - batch.target) ** 2, (value_clipped - batch.target) ** 2).mean()
    ratio = jnp.exp(log_prob(policy_out, batch.action, discrete) - batch.log_prob)
    adv = (batch.advantage - batch.advantage.mean()) / (batch.advantage.std() + 1e-8)
    actor_loss = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - config.clip_eps, 1 + config.clip_eps) * adv).mean()
    ent = entropy(policy_out, discrete).mean()
    total = actor_loss + config.vf_coef * value_loss - config.ent_coef * ent
    return total, {"value_loss": value_loss, "actor_loss": actor_loss, "entropy": ent}


def default_optimizer(config: PPOConfig) -> optax.GradientTransformation:
    """PureJaxRL's optimizer: global-norm clipping then Adam, learning rate annealed linearly to 0."""
    steps_per_update = config.update_epochs * config.num_minibatches
    lr = (optax.linear_schedule(config.lr, 0.0, config.num_updates * steps_per_update) if config.anneal_lr
          else config.lr)
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(lr, eps=1e-5))


class EpisodeStats(NamedTuple):
    """Running and last-finished episode return, length and success, per environment."""

    ret: jax.Array
    length: jax.Array
    last_ret: jax.Array
    last_length: jax.Array
    last_solved: jax.Array


def _gae(values, rewards, dones, last_value, gamma, lam):
    def step(carry, t):
        gae, next_value = carry
        value, reward, done = t
        delta = reward + gamma * next_value * (1 - done) - value
        gae = delta + gamma * lam * (1 - done) * gae
        return (gae, value), gae

    _, adv = jax.lax.scan(step, (jnp.zeros_like(last_value), last_value), (values, rewards, dones), reverse=True)
    return adv, adv + values


def env_minibatches(key: jax.Array, data, num_minibatches: int):
    """Kinetix's minibatches: permute the environments of time-major data [T, N, ...], split them into
    num_minibatches groups and return each group's whole trajectories, flattened: [num_minibatches, T * N / M, ...]."""
    num_envs = jax.tree.leaves(data)[0].shape[1]
    perm = jax.random.permutation(key, num_envs)

    def split(x):
        x = jnp.take(x, perm, axis=1).reshape((x.shape[0], num_minibatches, -1, *x.shape[2:]))
        return jnp.swapaxes(x, 0, 1).reshape((num_minibatches, -1, *x.shape[3:]))

    return jax.tree.map(split, data)


def make_train(config: PPOConfig, env: Env, *, network: nn.Module | Network | None = None,
               optimizer: optax.GradientTransformation | None = None, loss: Callable = ppo_loss,
               optimizer_sees_batch: bool = False, progress: Callable[[Any], None] | None = None) -> Callable:
    """Return train(rng) -> {"params", "metrics"}; jit it, and vmap it over seeds.

    metrics (one entry per update): "return" and "length" of the episodes finished so far
    (mean over environments of the last finished episode), "solved" (the same for the
    success signal), and the loss terms. With optimizer_sees_batch, the optimizer's update
    also receives the minibatch as `batch=` (OPEN's dormancy needs the activations on it).
    `progress`, if given, is called on the host with the index of each finished update
    (sealed.Progress.update); it has no outputs, so the results do not depend on it.
    `network` is a flax module or a Network of two functions (init, apply); `loss` is called as
    loss(params, network.apply, minibatch, config, discrete).
    """
    if config.num_updates < 1:
        raise ValueError(f"total_timesteps={config.total_timesteps} is less than one update "
                         f"({config.num_envs} envs x {config.num_steps} steps)")
    if config.shuffle_envs and config.num_envs % config.num_minibatches:
        raise ValueError(f"shuffle_envs splits the {config.num_envs} environments into {config.num_minibatches} "
                         "minibatches: num_envs must be a multiple of num_minibatches")
    net = network or default_network(config, env)
    tx = optax.with_extra_args_support(optimizer or default_optimizer(config))
    discrete = env.discrete
    steps_per_update = config.update_epochs * config.num_minibatches

    def train(rng):
        rng, init_key, reset_key = jax.random.split(rng, 3)
        params = net.init(init_key, jnp.zeros((env.obs_size,)))
        opt_state = tx.init(params)
        obs, env_state = jax.vmap(env.reset)(jax.random.split(reset_key, config.num_envs))
        zeros = jnp.zeros(config.num_envs)
        stats = EpisodeStats(zeros, zeros, zeros, zeros, zeros)

        def env_step(carry, _):
            params, env_state, obs, stats, rng = carry
            rng, act_key, step_key = jax.random.split(rng, 3)
            policy_out, value = net.apply(params, obs)
            action = sample_action(act_key, policy_out, discrete)
            logp = log_prob(policy_out, action, discrete)
            next_obs, env_state, reward, done, solved = jax.vmap(env.step)(
                jax.random.split(step_key, config.num_envs), env_state, action)
            ret, length = stats.ret + reward, stats.length + 1
            stats = EpisodeStats(
                jnp.where(done, 0.0, ret), jnp.where(done, 0.0, length), jnp.where(done, ret, stats.last_ret),
                jnp.where(done, length, stats.last_length), jnp.where(done, solved, stats.last_solved))
            transition = (obs, action, logp, value, reward, done.astype(jnp.float32))
            return (params, env_state, next_obs, stats, rng), transition

        def update(carry, update_i):
            params, opt_state, env_state, obs, stats, rng = carry
            (params, env_state, obs, stats, rng), traj = jax.lax.scan(
                env_step, (params, env_state, obs, stats, rng), None, config.num_steps)
            t_obs, t_action, t_logp, t_value, t_reward, t_done = traj
            _, last_value = net.apply(params, obs)
            adv, target = _gae(t_value, t_reward, t_done, last_value, config.gamma, config.gae_lambda)
            data = Batch(t_obs, t_action, t_logp, t_value, adv, target)
            if not config.shuffle_envs:
                data = jax.tree.map(lambda x: x.reshape((-1, *x.shape[2:])), data)

            def epoch(carry, epoch_i):
                params, opt_state, rng = carry
                rng, perm_key = jax.random.split(rng)
                if config.shuffle_envs:
                    shuffled = env_minibatches(perm_key, data, config.num_minibatches)
                else:
                    perm = jax.random.permutation(perm_key, data.obs.shape[0])
                    shuffled = jax.tree.map(
                        lambda x: x[perm].reshape((config.num_minibatches, -1, *x.shape[1:])), data)

                def minibatch(carry, mb):
                    params, opt_state, mb_i = carry
                    grads, aux = jax.grad(loss, has_aux=True)(params, net.apply, mb, config, discrete)
                    step_i = update_i * steps_per_update + epoch_i * config.num_minibatches + mb_i
                    extra = {"batch": mb} if optimizer_sees_batch else {}
                    updates, opt_state = tx.update(
                        grads, opt_state, params, train_frac=update_i / config.num_updates,
                        batch_frac=(step_i % steps_per_update) / steps_per_update, **extra)
                    return (optax.apply_updates(params, updates), opt_state, mb_i + 1), aux

                (params, opt_state, _), aux = jax.lax.scan(minibatch, (params, opt_state, 0), shuffled)
                return (params, opt_state, rng), aux

            (params, opt_state, rng), aux = jax.lax.scan(
                epoch, (params, opt_state, rng), jnp.arange(config.update_epochs))
            metrics = {"return": stats.last_ret.mean(), "length": stats.last_length.mean(),
                       "solved": stats.last_solved.mean(), **jax.tree.map(jnp.mean, aux)}
            if progress is not None:
                jax.debug.callback(progress, update_i)
            return (params, opt_state, env_state, obs, stats, rng), metrics

        carry = (params, opt_state, env_state, obs, stats, rng)
        (params, *_), metrics = jax.lax.scan(update, carry, jnp.arange(config.num_updates))
        return {"params": params, "metrics": metrics}

    return train


def make_rollout(env: Env, apply_fn: Callable, *, num_envs: int, max_steps: int, greedy: bool = True) -> Callable:
    """Return rollout(params, rng) -> (episode returns [num_envs], solved [num_envs]): one episode per env.

    What an evaluator runs with exported parameters: each environment plays until its first
    episode ends (or max_steps), with the greedy policy unless greedy=False.
    """

    def rollout(params, rng):
        rng, reset_key = jax.random.split(rng)
        obs, state = jax.vmap(env.reset)(jax.random.split(reset_key, num_envs))
        zeros = jnp.zeros(num_envs)

        def step(carry, _):
            obs, state, ret, solved, alive, rng = carry
            rng, act_key, step_key = jax.random.split(rng, 3)
            policy_out, _ = apply_fn(params, obs)
            action = (greedy_action(policy_out, env.discrete) if greedy
                      else sample_action(act_key, policy_out, env.discrete))
            obs, state, reward, done, now_solved = jax.vmap(env.step)(
                jax.random.split(step_key, num_envs), state, action)
            ret = ret + alive * reward
            solved = jnp.where(alive * done, now_solved, solved)
            alive = alive * (1 - done.astype(jnp.float32))
            return (obs, state, ret, solved, alive, rng), None

        init = (obs, state, zeros, zeros, jnp.ones(num_envs), rng)
        (_, _, ret, solved, _, _), _ = jax.lax.scan(step, init, None, max_steps)
        return ret, solved

    return rollout
