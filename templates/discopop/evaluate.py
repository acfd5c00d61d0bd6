"""DiscoPOP evaluator (trusted; never imports the candidate).

`prepare` makes the training data outside the sandbox: training prompts and,
per seed, preference pairs labelled by the hidden reward. `evaluate` loads the
exported policy parameters, validates them, and scores each seed's policies
exactly on held-out prompts drawn from its own seed: expected true reward and
KL to the reference per beta, summarised as the reward gain reachable within
the KL budget on the frontier that the trained policies and their mixtures reach.
"""

from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jax_workloads import preference as pf
from jax_workloads import sealed
from jax_workloads.seeds import seed_key


def _world(config: dict) -> pf.WorldConfig:
    return pf.WorldConfig(**config["world"])


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5, 6))
def _make_data(world: pf.WorldConfig, world_seed: int, prompts_seed: int, n_prompts: int, pairs_seed: int,
               pairs: int, seeds: int):
    """Training prompts and each seed's preference pairs, in one compiled program: op by op, making
    them took 8.5 s of a fresh home's first run on 2 cores, and 4.2 s this way (BENCHMARKS.md §12)."""
    prompts = pf.make_prompts(world, world_seed, seed_key(prompts_seed), n_prompts)
    keys = jax.random.split(seed_key(pairs_seed), seeds)
    return prompts, jax.vmap(lambda k: pf.sample_preferences(world, world_seed, prompts, k, pairs))(keys)


def prepare(data_dir: Path, config: dict, private: dict, seeds: int) -> None:
    """Write data/train.npz: training prompts and `seeds` preference data sets."""
    prompts, prefs = _make_data(_world(config), private["world_seed"], private["train_prompts_seed"],
                                config["train_prompts"], private["pairs_seed"], config["pairs"], seeds)
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


@partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _score(params: dict, world: pf.WorldConfig, world_seed: int, eval_seed: int, n_prompts: int):
    """Held-out prompts, their reference and oracle reward, and every policy's exact reward and KL.

    One compiled program rather than some thirty small ones run op by op: each of those is traced,
    lowered and looked up in the persistent cache anew in every evaluator process.
    """
    test = pf.make_prompts(world, world_seed, seed_key(eval_seed), n_prompts)
    reward = pf.true_reward(world, world_seed, test.features)
    ref_reward = jnp.mean(jnp.sum(jnp.exp(test.ref_logps) * reward, axis=-1))
    oracle = jnp.mean(jnp.max(reward, axis=-1))
    rewards, kls = jax.vmap(jax.vmap(lambda p: pf.reward_and_kl(p, test, reward)))(params)
    logps = jax.vmap(jax.vmap(lambda p: pf.policy_logps(p, test)))(params)
    # Seed by seed (lax.map): all seeds' mixtures at once would hold some 300 MB.
    mix_rewards, mix_kls = jax.lax.map(lambda lp: pf.mixture_reward_and_kl(lp, test.ref_logps, reward), logps)
    return rewards, kls, ref_reward, oracle, mix_rewards, mix_kls


def evaluate(work: Path, config: dict, private: dict, seeds: int) -> dict:
    """Per-seed metrics of the exported policies, plus the frontier for figures."""
    params = sealed.load_arrays(work / "artifacts" / "policy.npz", expected_arrays(config, seeds))
    rewards, kls, ref, oracle, mix_rewards, mix_kls = _score(
        params, _world(config), private["world_seed"], private["eval_seed"], private["eval_prompts"])
    ref_reward = float(ref)
    oracle_gain = float(oracle) - ref_reward
    gain, kl = np.asarray(rewards) - ref_reward, np.asarray(kls)
    budget = float(config["kl_budget"])
    # Metrics credit only what was trained: the frontier is read off the points that the trained policies
    # and their two-policy mixtures reach, each scored exactly like the policies (pf.reachable_frontier says
    # why their hull is reachable too). The exact mixtures, whose KL lies below the chord, also let a loss
    # that only rescales beta score as the loss it rescales (the template README gives the measurements).
    path = [(np.concatenate([kl[s], np.asarray(mix_kls[s])]),
             np.concatenate([gain[s], np.asarray(mix_rewards[s]) - ref_reward])) for s in range(seeds)]
    per_seed = {
        "reward_gain_at_kl": [pf.frontier_value(k, g, budget) for k, g in path],
        "frontier_auc": [pf.frontier_auc(k, g, budget) for k, g in path],
        "best_reward_gain": [float(gain[s].max()) for s in range(seeds)],
    }
    extra = {
        "betas": list(config["betas"]), "kl_budget": budget, "held_out_prompts": private["eval_prompts"],
        "reference_reward": ref_reward, "oracle_gain": oracle_gain,
        "kl": kl.tolist(), "reward_gain": gain.tolist(),
    }
    return {"per_seed": per_seed, "extra": extra}
