"""Synthenv evaluator (trusted; never imports the candidate, runs none of its functions).

`prepare` has nothing to write: the real environment ships with gymnax. `evaluate` loads each seed's final
bandit as plain arrays (sealed.load_arrays: names, shapes, dtypes, finite) with its family (checked against
jax_workloads.synthenv.Family: the latent, the width and the activation of a fixed MLP family, evaluated by this
process's own code), trains agents on it with PPO and with REINFORCE, an algorithm meta-training never used, at
hyperparameters drawn from upstream's lists with the private hparam_seed (agents_per_algorithm per algorithm,
the same draws for every seed), plays each agent's greedy policy for `episodes` episodes of the real environment
(its own 500-step limit) on keys from the private eval_seed, and reports per seed the mean return over all
those agents (return), and per algorithm. The harness's meta-training curves are checked for shape and passed
on for figures, never scored.
"""

import json
from pathlib import Path

import jax
import numpy as np

from jax_workloads import sealed
from jax_workloads import synthenv as se
from jax_workloads.seeds import typed_seed_key

CURVES = ("fitness_mean", "fitness_max", "horizon", "std_mean")
EVAL_ALGORITHMS = {"ppo": se.PPO_GRID, "reinforce": se.REINFORCE_GRID}


def prepare(data_dir: Path, config: dict, private: dict, seeds: int) -> None:
    """Nothing to prepare: the harness makes the real environment from the installed gymnax package."""
    Path(data_dir).mkdir(parents=True, exist_ok=True)


def load_bandits(art: Path, config: dict, seeds: int) -> tuple[se.Family, np.ndarray, dict]:
    """The exported family, every seed's bandit parameters [S, D] and the meta-training curves, checked."""
    try:
        family = se.family_from(json.loads((art / "family.json").read_text()), config["env"])
    except (OSError, ValueError, TypeError) as e:
        raise sealed.ArtifactError(f"family.json is not a bandit family ({sealed.describe(e)})") from None
    params = sealed.load_arrays(art / "bandit.npz", {"params": ((seeds, family.size), "float32")})["params"]
    gens = se.Meta(**config["meta"]).generations
    curves = sealed.load_arrays(art / "curves.npz", {k: ((seeds, gens), "float32") for k in CURVES})
    return family, params, curves


def make_scores(family: se.Family, inner: se.Inner, algorithm: str, episodes: int):
    """scores(params [S, D], keys [K], hps [K, h]) -> greedy real returns [S, K] of agents trained on each bandit."""
    train, apply = se.make_inner_train(algorithm, family, inner)
    steps = se.default_steps(family.env_name)

    def one(flat, key, hp):
        train_key, play_key = jax.random.split(key)
        return se.greedy_return(family.env_name, apply, train(flat, train_key, hp), play_key, episodes, steps)

    return jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0, 0)), in_axes=(0, None, None)))


def evaluate(work: Path, config: dict, private: dict, seeds: int) -> dict:
    """Per-seed greedy return on the real environment of agents trained on the exported bandits."""
    family, params, curves = load_bandits(work / "artifacts", config, seeds)
    inner = se.Inner(**config["inner"])
    k, episodes = int(private["agents_per_algorithm"]), int(private["episodes"])
    hp_key, eval_key = typed_seed_key(int(private["hparam_seed"])), typed_seed_key(int(private["eval_seed"]))
    per_algo, hparams = {}, {}
    for i, (algorithm, grid) in enumerate(EVAL_ALGORITHMS.items()):
        hps = se.grid_draws(grid, jax.random.fold_in(hp_key, i), k)
        keys = jax.random.split(jax.random.fold_in(eval_key, i), k)
        per_algo[algorithm] = np.asarray(make_scores(family, inner, algorithm, episodes)(params, keys, hps),
                                         np.float64)
        hparams[algorithm] = len(grid)
    returns = np.concatenate(list(per_algo.values()), -1)  # [S, 2K]
    per_seed = {"return": returns.mean(-1).tolist(),
                **{f"return_{a}": r.mean(-1).tolist() for a, r in per_algo.items()}}
    extra = {
        "env": family.env_name,
        "family": {k_: v for k_, v in family.to_dict().items() if k_ != "env_name"},
        "agents_per_algorithm": k,
        "episodes": episodes,
        "per_agent_return": {a: r.tolist() for a, r in per_algo.items()},
        "meta_curves": {c: v.tolist() for c, v in curves.items()},
        "population": config["meta"]["population"],
        "generations": config["meta"]["generations"],
    }
    return {"per_seed": per_seed, "extra": extra}
