"""Kinetix evaluator (trusted; never imports the candidate).

`prepare` has nothing to write: the levels ship with the kinetix package. `evaluate` loads the
exported greedy policy (jax_workloads.kinetix_tasks.load_policy: serialized StableHLO checked to
be plain computation, plus its parameters as plain arrays), draws held-out variants of every
scored level from a private seed, plays one greedy episode per variant and seed with its own
Kinetix environment code, and reports the solve rate: per seed, the fraction of variants solved,
averaged over levels with equal weight. It also plays the unperturbed handmade levels.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jax_workloads import kinetix_tasks as kt
from jax_workloads import ppo, sealed


def prepare(data_dir: Path, config: dict, private: dict, seeds: int) -> None:
    """Nothing to prepare: the harness loads the levels from the installed kinetix package."""
    Path(data_dir).mkdir(parents=True, exist_ok=True)


def _train_curves(work: Path, config: dict, seeds: int) -> dict:
    """The harness's own learning curves (training episodes, stochastic policy), checked for shape only."""
    points = len(kt.curve_indices(ppo.PPOConfig(**config["ppo"]).num_updates))
    shape = ((seeds, points), "float32")
    arrays = sealed.load_arrays(work / "artifacts" / "train_curves.npz",
                                {"steps": ((points,), "float32"), "solved": shape, "return": shape})
    return {k: v.tolist() for k, v in arrays.items()}


def evaluate(work: Path, config: dict, private: dict, seeds: int) -> dict:
    """Per-seed solve rates of the exported policy on held-out variants, plus per-level detail for figures."""
    levels = list(private.get("levels", config["levels"]))
    states, static_params = kt.load_levels(levels)
    policy, spec = kt.load_policy(work / "artifacts", seeds, static_params)
    per_level = int(private["episodes_per_level"])
    held_out = kt.held_out_variants(states, config, private, per_level)
    # One batch, one compiled program: the handmade levels first, then their held-out variants.
    initial = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), states, held_out)
    run = jax.jit(kt.make_solve_rate(static_params, policy, spec, seeds, config["max_timesteps"]))
    solved, returns = (np.asarray(x, np.float64) for x in run(initial))
    n = len(levels)
    handmade = solved[:, :n]                                          # [S, L]
    per_level_rate = solved[:, n:].reshape(seeds, n, per_level).mean(-1)  # [S, L]
    per_seed = {
        "solve_rate": per_level_rate.mean(-1).tolist(),
        "solve_rate_handmade": handmade.mean(-1).tolist(),
        "return": returns[:, n:].mean(-1).tolist(),
    }
    extra = {
        "levels": levels,
        "episodes_per_level": per_level,
        "variation": vars(kt.Variation(**config.get("variation", {}))),
        "action_space": "discrete" if spec.num_actions else "continuous",
        "per_level_solve_rate": per_level_rate.tolist(),
        "handmade_solved": handmade.tolist(),
        "total_timesteps_per_seed": config["ppo"]["total_timesteps"],
        "train_curves": _train_curves(work, config, seeds),
    }
    return {"per_seed": per_seed, "extra": extra}
