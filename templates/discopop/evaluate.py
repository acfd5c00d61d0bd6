"""DiscoPOP evaluator (trusted; never imports the candidate).

`prepare` makes the training data outside the sandbox: training prompts and,
per seed, preference pairs labelled by the hidden reward. `evaluate` loads the
exported policy parameters, validates them, and scores each seed's policies
exactly on held-out prompts drawn from its own seed: expected true reward and
KL to the reference per beta, summarised as the reward gain reachable within
the KL budget on the frontier.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jax_workloads import preference as pf
from jax_workloads import sealed


def _world(config: dict) -> pf.WorldConfig:
    return pf.WorldConfig(**config["world"])


def prepare(data_dir: Path, config: dict, private: dict, seeds: int) -> None:
    """Write data/train.npz: training prompts and `seeds` preference data sets."""
    world, ws = _world(config), private["world_seed"]
    prompts = pf.make_prompts(world, ws, jax.random.PRNGKey(private["train_prompts_seed"]),
                              config["train_prompts"])
    keys = jax.random.split(jax.random.PRNGKey(private["pairs_seed"]), seeds)
    prefs = jax.vmap(lambda k: pf.sample_preferences(world, ws, prompts, k, config["pairs"]))(keys)
    data_dir.mkdir(parents=True, exist_ok=True)
    np.savez(data_dir / "train.npz", features=np.asarray(prompts.features),
             ref_logps=np.asarray(prompts.ref_logps), prompt=np.asarray(prefs.prompt),
             chosen=np.asarray(prefs.chosen), rejected=np.asarray(prefs.rejected))


def expected_arrays(config: dict, seeds: int) -> dict:
    """Names, shapes and dtypes the exported policy must have."""
    s, b = seeds, len(config["betas"])
    d, h = config["world"]["feature_dim"], config["train"]["hidden"]
    return {"w1": ((s, b, d, h), "float32"), "b1": ((s, b, h), "float32"),
            "w2": ((s, b, h), "float32"), "b2": ((s, b), "float32")}


def evaluate(work: Path, config: dict, private: dict, seeds: int) -> dict:
    """Per-seed metrics of the exported policies, plus the frontier for figures."""
    params = sealed.load_arrays(work / "artifacts" / "policy.npz", expected_arrays(config, seeds))
    world, ws = _world(config), private["world_seed"]
    test = pf.make_prompts(world, ws, jax.random.PRNGKey(private["eval_seed"]), private["eval_prompts"])
    reward = pf.true_reward(world, ws, test.features)
    ref_reward = float(jnp.mean(jnp.sum(jnp.exp(test.ref_logps) * reward, axis=-1)))
    oracle_gain = float(jnp.mean(jnp.max(reward, axis=-1))) - ref_reward
    score = jax.jit(jax.vmap(jax.vmap(lambda p: pf.reward_and_kl(p, test, reward))))
    rewards, kls = score({k: jnp.asarray(v) for k, v in params.items()})
    gain, kl = np.asarray(rewards) - ref_reward, np.asarray(kls)
    budget = float(config["kl_budget"])
    per_seed = {
        "reward_gain_at_kl": [pf.frontier_value(kl[s], gain[s], budget) for s in range(seeds)],
        "frontier_auc": [pf.frontier_auc(kl[s], gain[s], budget) for s in range(seeds)],
        "best_reward_gain": [float(gain[s].max()) for s in range(seeds)],
    }
    extra = {
        "betas": list(config["betas"]), "kl_budget": budget, "held_out_prompts": private["eval_prompts"],
        "reference_reward": ref_reward, "oracle_gain": oracle_gain,
        "kl": kl.tolist(), "reward_gain": gain.tolist(),
    }
    return {"per_seed": per_seed, "extra": extra}
