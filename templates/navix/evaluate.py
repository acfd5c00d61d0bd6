"""NAVIX evaluator (trusted; never imports the candidate).

`prepare` has nothing to write: the environments ship with the navix package. `evaluate` loads, for each
environment of the suite, the exported policies (jax_workloads.policy_export.load_policy: serialized StableHLO
checked to be plain computation, plus its parameters as plain arrays, its signature checked against this
environment's observations and the logits of its 7 discrete actions), draws layouts from the private eval_seed
(NAVIX's reset of each drawn key), plays one episode per layout and seed with its own NAVIX code, sampling the
actions from the policy's logits with keys of its own (also from eval_seed), and reports the success rate: per
seed, the fraction of layouts on which the policy reached the goal, averaged over environments with equal weight.
The greedy policy (argmax) is played on the same layouts and reported beside it. It trusts nothing else the
sandbox wrote."""

from pathlib import Path

import jax
import numpy as np

from jax_workloads import navix_tasks as nt
from jax_workloads import ppo, sealed
from jax_workloads.policy_export import curve_indices, load_policy


def prepare(data_dir: Path, config: dict, private: dict, seeds: int) -> None:
    """Nothing to prepare: the harness makes the environments from the installed navix package."""
    Path(data_dir).mkdir(parents=True, exist_ok=True)


def _train_curves(directory: Path, config: dict, seeds: int) -> dict:
    """The harness's own learning curves (training episodes, stochastic policy), checked for shape only."""
    points = len(curve_indices(ppo.PPOConfig(**config["ppo"]).num_updates))
    shape = ((seeds, points), "float32")
    arrays = sealed.load_arrays(directory / "train_curves.npz",
                                {"steps": ((points,), "float32"), "solved": shape, "return": shape})
    return {k: v.tolist() for k, v in arrays.items()}


def evaluate(work: Path, config: dict, private: dict, seeds: int) -> dict:
    """Per-seed success rates of the exported policies on held-out layouts (sampled, and greedy), plus detail."""
    envs, max_steps = list(config["envs"]), int(config.get("max_steps", nt.MAX_STEPS))
    episodes = int(private["episodes_per_env"])
    rates, greedy, returns, curves = [], [], [], []
    for i, env_id in enumerate(envs):
        directory = work / "artifacts" / str(i)
        policy, _ = load_policy(directory, seeds, lambda c, e=env_id: nt.action_spec(e, c, max_steps))
        layouts, sample_key = nt.held_out_keys(private, i, episodes)
        sampled = nt.make_success_rate(env_id, policy, seeds, max_steps, sample_key)
        argmax = nt.make_success_rate(env_id, policy, seeds, max_steps)
        (solved, ret), (solved_greedy, _) = jax.jit(lambda k, s=sampled, g=argmax: (s(k), g(k)))(layouts)
        rates.append(np.asarray(solved, np.float64).mean(-1))
        greedy.append(np.asarray(solved_greedy, np.float64).mean(-1))
        returns.append(np.asarray(ret, np.float64).mean(-1))
        curves.append(_train_curves(directory, config, seeds))
    per_env = np.stack(rates, -1)  # [S, envs]
    per_seed = {"success_rate": per_env.mean(-1).tolist(),
                "success_rate_greedy": np.stack(greedy, -1).mean(-1).tolist(),
                "return": np.stack(returns, -1).mean(-1).tolist()}
    extra = {
        "envs": envs,
        "episodes_per_env": episodes,
        "max_steps": max_steps,
        "per_env_success_rate": per_env.tolist(),
        "per_env_success_rate_greedy": np.stack(greedy, -1).tolist(),
        "total_timesteps_per_seed": config["ppo"]["total_timesteps"],
        "train_curves": curves,
    }
    return {"per_seed": per_seed, "extra": extra}
