"""HaDES evaluator (trusted; never imports the candidate).

`prepare` has nothing to write: the environment ships with gymnax. `evaluate` loads each seed's distilled data set
(jax_workloads.hades.load_dataset: float32 states [S, D, 600] and labels [S, D, 4], finite, at most
[config.es] max_dataset_size pairs, states bounded, labels distributions over the actions), trains fresh policies
on it by behaviour cloning ([config.bc]'s optimiser, learning rate and steps) with the held-out architectures of
[private] architectures (widths, activations) from initialisations drawn from the private init_seed, plays one
whole episode (sampled actions, at most max_steps) per environment of its own, drawn from the private eval_seed,
with each, and reports the mean return divided by the PPO reference's ([private.ppo_reference], measured once with
bench/hades_ppo_reference.py, README.md). It trusts nothing else the sandbox wrote.
"""

from dataclasses import replace
from pathlib import Path

import jax
import numpy as np

from jax_workloads import hades, sealed
from jax_workloads.seeds import typed_seed_key


def prepare(data_dir: Path, config: dict, private: dict, seeds: int) -> None:
    """Nothing to prepare: the harness makes the environment from the installed gymnax package."""
    Path(data_dir).mkdir(parents=True, exist_ok=True)


def ppo_reference(config: dict, private: dict) -> float:
    """The PPO return the metric divides by, refused if it was measured on another environment."""
    ref = private["ppo_reference"]
    if ref["env"] != config["env"]:
        raise ValueError(f"[private.ppo_reference] was measured on {ref['env']}, not {config['env']}: measure it "
                         "again (templates/hades/README.md, 'The PPO reference')")
    if not ref["return"] > 0:
        raise ValueError("[private.ppo_reference] return must be positive")
    return float(ref["return"])


def held_out_returns(cfg: hades.DistillConfig, states, labels, private: dict) -> np.ndarray:
    """Returns [S, architectures, inits, episodes] of fresh policies trained on each seed's data set."""
    env = hades.make_env(cfg.env)
    episodes, inits, max_steps = int(private["episodes"]), int(private["inits"]), int(private["max_steps"])
    init_root, eval_root = typed_seed_key(private["init_seed"]), typed_seed_key(private["eval_seed"])
    env_keys = jax.random.split(eval_root, inits)  # the same episodes for every seed and architecture
    seeds, out = states.shape[0], []
    for i, arch in enumerate(private["architectures"]):
        bc_config = replace(cfg.bc, width=int(arch["width"]), activation=str(arch["activation"]))
        policy, bc = hades.make_bc(bc_config, env.num_actions, env.obs_size)

        def score(states, labels, init_key, env_key, policy=policy, bc=bc):
            params, _ = bc(init_key, states, labels)
            return hades.episode_returns(env, policy.apply, params, env_key, episodes, max_steps)

        init_keys = jax.random.split(jax.random.fold_in(init_root, i), seeds * inits).reshape(seeds, inits)
        run = jax.jit(jax.vmap(jax.vmap(score, (None, None, 0, 0)), (0, 0, 0, None)))
        out.append(np.asarray(run(states, labels, init_keys, env_keys), np.float64))
    return np.stack(out, 1)


def evaluate(work: Path, config: dict, private: dict, seeds: int) -> dict:
    """Per-seed normalised return of policies trained on the exported data sets, plus detail for figures."""
    cfg = hades.distill_config(config)
    env = hades.make_env(cfg.env)
    reference = ppo_reference(config, private)
    data = hades.load_dataset(work / "artifacts" / hades.DATASET_FILE, seeds, env.obs_size, env.num_actions,
                              cfg.max_dataset_size)
    curves = sealed.load_arrays(work / "artifacts" / "curves.npz", {
        k: ((seeds, cfg.generations), "float32") for k in ("fitness_mean", "fitness_max", "bc_loss")})
    returns = held_out_returns(cfg, data["states"], data["labels"], private)
    mean, var = hades.obs_norm(cfg.env)
    per_seed_return = returns.mean((1, 2, 3))
    per_seed = {"normalized_return": (per_seed_return / reference).tolist(), "return": per_seed_return.tolist()}
    extra = {
        "env": cfg.env, "ppo_reference_return": reference, "dataset_size": int(data["states"].shape[1]),
        "architectures": [f"{a['width']} {a['activation']}" for a in private["architectures"]],
        "per_architecture_return": returns.mean((2, 3)).tolist(),  # [S, architectures]
        "episodes": int(private["episodes"]), "inits": int(private["inits"]),
        "generations": cfg.generations, "population": cfg.population,
        # The harness's report of its ES (fitness on its own rollouts), for figures only.
        "es_curves": {k: v.tolist() for k, v in curves.items()},
        # The first seed's data set in observation units (the normalisation undone), for a figure of its states.
        "states": (data["states"][0] * np.sqrt(var + 1e-8) + mean).round(3).tolist(),
        "labels": data["labels"][0].round(4).tolist(),
    }
    return {"per_seed": per_seed, "extra": extra}
