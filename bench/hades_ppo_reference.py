"""The hades template's PPO reference: the return its metric is normalised by (templates/hades/README.md).

Trains PPO (jax_workloads/ppo.py, PureJaxRL's MinAtar settings: 64 environments x 128 steps, 4 epochs of 8
minibatches, lr 5e-3 annealed, 2 x 64 relu actor-critic) on SpaceInvaders-MinAtar with the observations the
distilled data sets use (jax_workloads.hades.make_env: upstream's normalisation), all seeds in one jit(vmap), then
plays each trained policy as the hades evaluator plays a behaviour-cloned one (hades.episode_returns: one whole
episode per environment, actions sampled from the policy, 1000 steps at most) and prints the mean return.
The defaults are the settings the shipped reference ([private.ppo_reference] return = 81.102) was measured with:

    .venv/bin/python bench/hades_ppo_reference.py   # = --seeds 2 --timesteps 2000000 --episodes 64 --seed 0
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from jax_workloads import hades, ppo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--timesteps", type=int, default=2_000_000)  # the shipped reference's (CPU budget)
    parser.add_argument("--episodes", type=int, default=64, help="evaluation episodes per seed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    env = hades.make_env("SpaceInvaders-MinAtar")
    config = ppo.PPOConfig(total_timesteps=args.timesteps, num_envs=64, num_steps=128, update_epochs=4,
                           num_minibatches=8, lr=5e-3, anneal_lr=True, hidden=64, layers=2, activation="relu")
    train = ppo.make_train(config, env)
    net = ppo.default_network(config, env)
    keys = jax.random.split(jax.random.key(args.seed), args.seeds)
    started = time.perf_counter()
    out = jax.block_until_ready(jax.jit(jax.vmap(train))(keys))
    trained = time.perf_counter() - started

    def play(params, key):
        return hades.episode_returns(env, lambda p, o: net.apply(p, o)[0], params, key, args.episodes, 1000)

    eval_keys = jax.random.split(jax.random.key(args.seed + 1), args.seeds)
    returns = np.asarray(jax.jit(jax.vmap(play))(out["params"], eval_keys))  # [seeds, episodes]
    curve = np.asarray(out["metrics"]["return"])  # [seeds, updates]: training episodes
    print(json.dumps({
        "env": "SpaceInvaders-MinAtar", "timesteps": args.timesteps, "seeds": args.seeds,
        "episodes_per_seed": args.episodes, "return_per_seed": returns.mean(-1).round(3).tolist(),
        "return": round(float(returns.mean()), 3), "stderr": round(float(returns.mean(-1).std(ddof=1) / np.sqrt(
            args.seeds)), 3) if args.seeds > 1 else None,
        "final_training_return_per_seed": curve[:, -10:].mean(-1).round(3).tolist(),
        "train_s": round(trained, 1),
    }))


if __name__ == "__main__":
    main()
