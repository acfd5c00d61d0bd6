"""PPO as one plain PureJaxRL-style script, with no framework around it: the reference for bench/ppo_throughput.py.

Self-contained on purpose (it imports nothing from this project): the same algorithm, hyperparameters
and network as jax_workloads/ppo.py's defaults, written the way PureJaxRL writes it, so that the
benchmark measures what the framework's abstractions cost. Environments: any gymnax 1.x name
(CartPole-v1, Breakout-MinAtar, ...) or "kinetix:s/<level>" for one Kinetix level.

    train = jax.jit(jax.vmap(make_train(Config(), "CartPole-v1")))
    out = train(jax.random.split(jax.random.key(0), 8))   # 8 seeds, one call

Run alone: .venv/bin/python bench/plain_ppo.py [ENV] [--seeds 8] [--timesteps 500000]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


@dataclass(frozen=True)
class Config:
    """PureJaxRL's CartPole hyperparameters (the defaults of jax_workloads.ppo.PPOConfig)."""

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


class ActorCritic(nn.Module):
    """Separate 2-layer tanh MLPs for the policy logits and the value, orthogonal initialisation."""

    num_actions: int
    hidden: int = 64

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.orthogonal
        a = nn.tanh(nn.Dense(self.hidden, kernel_init=init(math.sqrt(2)))(x))
        a = nn.tanh(nn.Dense(self.hidden, kernel_init=init(math.sqrt(2)))(a))
        logits = nn.Dense(self.num_actions, kernel_init=init(0.01))(a)
        c = nn.tanh(nn.Dense(self.hidden, kernel_init=init(math.sqrt(2)))(x))
        c = nn.tanh(nn.Dense(self.hidden, kernel_init=init(math.sqrt(2)))(c))
        return logits, nn.Dense(1, kernel_init=init(1.0))(c)[..., 0]


class Transition(NamedTuple):
    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    done: jax.Array


def make_env(name: str):
    """(reset(key) -> (obs, state), step(key, state, action) -> (obs, state, reward, done), obs_size, actions)."""
    if name.startswith("kinetix:"):
        from kinetix.environment import ActionType, EnvParams, ObservationType, make_kinetix_env
        from kinetix.util.saving import load_evaluation_levels

        levels, static_params = load_evaluation_levels([name.split(":", 1)[1]])
        level = jax.tree.map(lambda x: x[0], levels)
        params = EnvParams(max_timesteps=256)
        env = make_kinetix_env(ActionType.DISCRETE, ObservationType.SYMBOLIC_FLAT, lambda key: level, params,
                               static_params)

        def reset(key):
            obs, state = env.reset(key, params)
            return obs.astype(jnp.float32), state

        def step(key, state, action):
            obs, state, reward, done, _ = env.step(key, state, action, params)
            return obs.astype(jnp.float32), state, reward.astype(jnp.float32), done

        num_actions = env.action_space(params).n
    else:
        import gymnax

        env, params = gymnax.make(name)

        def reset(key):
            obs, state = env.reset(key, params)
            return obs.reshape(-1).astype(jnp.float32), state

        def step(key, state, action):
            obs, state, reward, terminated, truncated, _ = env.step(key, state, action, params)
            return obs.reshape(-1).astype(jnp.float32), state, reward.astype(jnp.float32), terminated | truncated

        num_actions = env.action_space(params).n
    obs_size = int(jax.eval_shape(reset, jax.random.key(0))[0].shape[0])
    return reset, step, obs_size, int(num_actions)


def make_train(config: Config, env_name: str):
    """train(rng) -> {"params", "returns" [num_updates]}: PPO in one jittable function."""
    reset, step, obs_size, num_actions = make_env(env_name)
    num_updates = config.total_timesteps // (config.num_envs * config.num_steps)
    network = ActorCritic(num_actions, config.hidden)

    def linear_schedule(count):
        frac = 1.0 - count / (num_updates * config.update_epochs * config.num_minibatches)
        return config.lr * frac

    lr = linear_schedule if config.anneal_lr else config.lr
    tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(lr, eps=1e-5))

    def train(rng):
        rng, init_key, reset_key = jax.random.split(rng, 3)
        params = network.init(init_key, jnp.zeros((obs_size,)))
        opt_state = tx.init(params)
        obs, env_state = jax.vmap(reset)(jax.random.split(reset_key, config.num_envs))
        ep_ret = jnp.zeros(config.num_envs)
        last_ret = jnp.zeros(config.num_envs)

        def update_step(runner, _):
            def env_step(carry, _):
                params, env_state, obs, ep_ret, last_ret, rng = carry
                rng, act_key, step_key = jax.random.split(rng, 3)
                logits, value = network.apply(params, obs)
                action = jax.random.categorical(act_key, logits)
                log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], -1)[:, 0]
                next_obs, env_state, reward, done = jax.vmap(step)(
                    jax.random.split(step_key, config.num_envs), env_state, action)
                ep_ret = ep_ret + reward
                last_ret = jnp.where(done, ep_ret, last_ret)
                ep_ret = jnp.where(done, 0.0, ep_ret)
                t = Transition(obs, action, log_prob, value, reward, done.astype(jnp.float32))
                return (params, env_state, next_obs, ep_ret, last_ret, rng), t

            params, opt_state, env_state, obs, ep_ret, last_ret, rng = runner
            (params, env_state, obs, ep_ret, last_ret, rng), traj = jax.lax.scan(
                env_step, (params, env_state, obs, ep_ret, last_ret, rng), None, config.num_steps)

            # Generalised advantage estimation, backwards over the rollout.
            _, last_value = network.apply(params, obs)

            def gae_step(carry, t):
                gae, next_value = carry
                delta = t.reward + config.gamma * next_value * (1 - t.done) - t.value
                gae = delta + config.gamma * config.gae_lambda * (1 - t.done) * gae
                return (gae, t.value), gae

            _, advantages = jax.lax.scan(gae_step, (jnp.zeros_like(last_value), last_value), traj, reverse=True)
            targets = advantages + traj.value

            def loss_fn(params, t, adv, target):
                logits, value = network.apply(params, t.obs)
                logp_all = jax.nn.log_softmax(logits)
                log_prob = jnp.take_along_axis(logp_all, t.action[:, None], -1)[:, 0]
                value_clipped = t.value + jnp.clip(value - t.value, -config.clip_eps, config.clip_eps)
                value_loss = 0.5 * jnp.maximum((value - target) ** 2, (value_clipped - target) ** 2).mean()
                ratio = jnp.exp(log_prob - t.log_prob)
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                actor_loss = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - config.clip_eps, 1 + config.clip_eps)
                                          * adv).mean()
                ent = -jnp.sum(jnp.exp(logp_all) * logp_all, -1).mean()
                return actor_loss + config.vf_coef * value_loss - config.ent_coef * ent

            def epoch(carry, _):
                params, opt_state, rng = carry
                rng, perm_key = jax.random.split(rng)
                batch = (traj, advantages, targets)
                batch = jax.tree.map(lambda x: x.reshape((-1, *x.shape[2:])), batch)
                perm = jax.random.permutation(perm_key, config.num_envs * config.num_steps)
                batch = jax.tree.map(lambda x: x[perm].reshape((config.num_minibatches, -1, *x.shape[1:])), batch)

                def minibatch(carry, mb):
                    params, opt_state = carry
                    grads = jax.grad(loss_fn)(params, *mb)
                    updates, opt_state = tx.update(grads, opt_state, params)
                    return (optax.apply_updates(params, updates), opt_state), None

                (params, opt_state), _ = jax.lax.scan(minibatch, (params, opt_state), batch)
                return (params, opt_state, rng), None

            (params, opt_state, rng), _ = jax.lax.scan(epoch, (params, opt_state, rng), None, config.update_epochs)
            return (params, opt_state, env_state, obs, ep_ret, last_ret, rng), last_ret.mean()

        runner = (params, opt_state, env_state, obs, ep_ret, last_ret, rng)
        (params, *_), returns = jax.lax.scan(update_step, runner, None, num_updates)
        return {"params": params, "returns": returns}

    return train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env", nargs="?", default="CartPole-v1")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--timesteps", type=int, default=500_000)
    args = parser.parse_args()
    train = jax.jit(jax.vmap(make_train(Config(total_timesteps=args.timesteps), args.env)))
    rngs = jax.random.split(jax.random.key(0), args.seeds)
    t = time.perf_counter()
    compiled = train.lower(rngs).compile()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    out = jax.block_until_ready(compiled(rngs))
    run_s = time.perf_counter() - t
    print(f"{args.env}: compile {compile_s:.1f} s, run {run_s:.1f} s, "
          f"{args.seeds * args.timesteps / run_s:,.0f} steps/s, final return {np.asarray(out['returns'][:, -1])}")


if __name__ == "__main__":
    main()
