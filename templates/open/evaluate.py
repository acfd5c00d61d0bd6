"""OPEN evaluator (trusted; never imports the candidate).

`prepare` has nothing to make: PPO collects its own data. `evaluate` loads the exported
actor-critic parameters of every seed, checks names, shapes, dtypes and finiteness against
the fixed network, and plays `eval.episodes` episodes per seed with the greedy policy on
environment seeds of its own (jax_workloads.ppo.make_rollout). The metric is that final
return divided by the tuned Adam baseline's, a reference measured once with this same
evaluator and recorded in [private.adam_reference] together with the fingerprint of the
configuration it was measured on; a changed configuration is refused until it is
measured again (README.md says how).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jax_workloads import ppo, sealed
from jax_workloads.seeds import typed_seed_key


def network(config: dict) -> tuple[ppo.Env, ppo.ActorCritic]:
    """The fixed environment and actor-critic the harness trains."""
    env = ppo.gymnax_env(config["env"])
    return env, ppo.default_network(ppo.PPOConfig(**config["ppo"]), env)


def reference_fingerprint(config: dict) -> str:
    """A short hash of the configuration the Adam reference return was measured on: the public [config].

    Not the eval seed: each home draws its own (base.secrets), and a reference that named it would refuse
    every home but the one it was measured in. It was measured on the shipped eval_seed; on another one the
    same episodes' return differs only by chance, so tuned Adam scores about 1.0 rather than exactly.
    """
    blob = json.dumps({"config": config}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def adam_reference(config: dict, private: dict) -> float:
    """The tuned Adam return the metric is normalised by, refused if it was measured on another configuration."""
    ref = private["adam_reference"]
    now = reference_fingerprint(config)
    if ref["fingerprint"] != now:
        raise ValueError(f"[private.adam_reference] was measured for configuration {ref['fingerprint']}, but this "
                         f"configuration is {now}: measure it again (templates/open/README.md, 'The Adam reference')")
    if not ref["return"] > 0:
        raise ValueError("[private.adam_reference] return must be positive")
    return float(ref["return"])


def expected_arrays(config: dict, seeds: int) -> dict:
    """Names, shapes and dtypes the exported policy must have: the fixed network's, one per seed."""
    env, net = network(config)
    params = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((env.obs_size,)))
    return {".".join(str(k.key) for k in path[1:]): ((seeds, *leaf.shape), "float32")
            for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


def unflatten(arrays: dict[str, np.ndarray]) -> dict:
    """{"Dense_0.kernel": a} -> {"params": {"Dense_0": {"kernel": a}}}: the flax tree ActorCritic applies."""
    tree: dict = {}
    for name, value in arrays.items():
        node = tree
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = jnp.asarray(value)
    return {"params": tree}


def prepare(data_dir: Path, config: dict, private: dict, seeds: int) -> None:
    """Nothing to prepare: PPO collects its own data in the sandbox."""
    Path(data_dir).mkdir(parents=True, exist_ok=True)


def evaluate(work: Path, config: dict, private: dict, seeds: int) -> dict:
    """Per-seed greedy return of the exported policies, raw and normalised by tuned Adam; curves for figures."""
    reference = adam_reference(config, private)
    arrays = sealed.load_arrays(work / "artifacts" / "policy.npz", expected_arrays(config, seeds))
    ppo_config = ppo.PPOConfig(**config["ppo"])
    curve = sealed.load_arrays(work / "artifacts" / "curve.npz",
                               {"return": ((seeds, ppo_config.num_updates), "float32")})["return"]
    env, net = network(config)
    episodes = config["eval"]["episodes"]
    rollout = ppo.make_rollout(env, net.apply, num_envs=episodes, max_steps=config["eval"]["max_steps"],
                               greedy=config["eval"]["greedy"])
    keys = jax.random.split(typed_seed_key(private["eval_seed"]), seeds)
    returns, _ = jax.jit(jax.vmap(rollout))(unflatten(arrays), keys)
    returns = np.asarray(returns, np.float64).mean(axis=1)
    # The curve is the harness's log of its own training episodes: informational, never scored.
    step = max(1, curve.shape[1] // 100)
    per_update = ppo_config.num_envs * ppo_config.num_steps
    extra = {
        "env": config["env"], "adam_reference_return": reference, "eval_episodes": episodes,
        "greedy": config["eval"]["greedy"], "total_timesteps": ppo_config.num_updates * per_update,
        "curve_timesteps": [(i + 1) * per_update for i in range(0, curve.shape[1], step)],
        "train_return": curve[:, ::step].astype(np.float64).round(4).tolist(),
    }
    per_seed = {"normalized_return": (returns / reference).tolist(), "return": returns.tolist()}
    return {"per_seed": per_seed, "extra": extra}
