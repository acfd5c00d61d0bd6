"""Kinetix harness (fixed; runs inside the sandbox): train the candidate agent with PPO, export its greedy policy.

Reads config.json from the work folder and the candidate agent as the tracer (trace.py) exported it: its
network's init and apply, its loss (with its derivative) and its network for the evaluator's batches, each
StableHLO checked to be plain computation (exports/*.jaxexport), and its declared action head
(exports/manifest.json, checked here). This process never imports agent.py. It gates the exports on small
inputs, trains every seed in one compiled call (jax_workloads/ppo.py, with Kinetix's PPO settings) on random
variants of the configured Kinetix levels, and exports the greedy policy of every seed as a jax.export
artifact (serialized StableHLO) plus its parameters as plain arrays. It never scores anything:
the evaluator plays the exported policy on variants of its own choosing.
"""

import time

STARTED = time.time()

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jax_workloads import kinetix_tasks as kt  # noqa: E402
from jax_workloads import ppo_agent, sealed  # noqa: E402
from jax_workloads.ppo_agent import gate, load_agent, ppo_config  # noqa: E402, F401 - this harness's names for them


def main() -> None:
    clock = sealed.Stopwatch(STARTED)
    cfg = json.loads(Path("config.json").read_text())
    config, seeds = cfg["config"], cfg["seeds"]
    agent = ppo_agent.load_agent()  # this process never imports agent.py: the tracer exported it
    ppo_cfg = ppo_config(config)
    try:
        env = kt.task_env(config, agent.continuous)
    except (ValueError, TypeError, KeyError) as e:
        sealed.fail(f"template.toml [config]: {sealed.describe(e)}")
    gate(agent, env, ppo_cfg)
    rngs = jax.random.split(jax.random.key(config["train_seed"]), seeds)
    clock.lap("setup")
    out = ppo_agent.train(agent, env, ppo_cfg, rngs, clock, sealed.Progress(ppo_cfg.num_updates))
    params = out["params"]
    ppo_agent.export_greedy_policy(agent, env, params, "artifacts")
    # The training curves (stochastic policy, training variants) are for figures only: the evaluator
    # checks their shapes and passes them on, labelled as the harness's report; they are never the metric.
    keep = kt.curve_indices(ppo_cfg.num_updates)
    metrics = out["metrics"]
    sealed.export_arrays("artifacts/train_curves.npz", {
        "steps": ((keep + 1) * ppo_cfg.num_envs * ppo_cfg.num_steps).astype(np.float32),
        "solved": np.asarray(metrics["solved"], np.float32)[:, keep],
        "return": np.asarray(metrics["return"], np.float32)[:, keep],
    })
    clock.lap("export")
    clock.save("timings.json")


if __name__ == "__main__":
    main()
