"""NAVIX harness (fixed; runs inside the sandbox): train the candidate agent with PPO, export its policies.

Reads config.json from the work folder and the candidate agent as the tracer (trace.py) exported it for each
environment of the suite (exports/env<i>_*: its network's init and apply, its loss with its derivative, its network
for the evaluator's batches, each StableHLO checked to be plain computation; jax_workloads.ppo_agent). This
process never imports agent.py. For each environment it gates the exports on small inputs, trains every seed in
one compiled call (jax_workloads/ppo.py with NAVIX's PPO settings, [config.ppo]) on layouts NAVIX draws from the
training keys, and exports every seed's policy (its logits over the 7 actions) as a jax.export artifact plus its
parameters as plain arrays (artifacts/<i>/). It never scores anything: the evaluator plays the exported policies
on layouts of its own choosing, sampling the actions with its own keys.
"""

import time

STARTED = time.time()

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jax_workloads import navix_tasks as nt  # noqa: E402
from jax_workloads import ppo_agent, sealed  # noqa: E402
from jax_workloads.policy_export import curve_indices  # noqa: E402


def main() -> None:
    clock = sealed.Stopwatch(STARTED)
    cfg = json.loads(Path("config.json").read_text())
    config, seeds = cfg["config"], cfg["seeds"]
    ppo_cfg = ppo_agent.ppo_config(config)
    try:
        envs = nt.task_envs(config)
    except (ValueError, TypeError, KeyError) as e:
        sealed.fail(f"template.toml [config]: {sealed.describe(e)}")
    key = jax.random.key(config["train_seed"])
    for i, env in enumerate(envs):
        agent = ppo_agent.load_agent("exports", prefix=f"env{i}_")  # the tracer's exports: agent.py is never imported
        if agent.continuous:
            sealed.fail("the traced agent was refused: its manifest says continuous; NAVIX's actions are discrete")
        ppo_agent.gate(agent, env, ppo_cfg)
        rngs = jax.random.split(jax.random.fold_in(key, i), seeds)
        clock.lap(f"setup_{i}")
        out = ppo_agent.train(agent, env, ppo_cfg, rngs, clock, sealed.Progress(ppo_cfg.num_updates), f"_{i}")
        ppo_agent.export_greedy_policy(agent, env, out["params"], Path("artifacts") / str(i), logits=True)
        # The training curves (stochastic policy, training layouts) are for figures only: the evaluator checks
        # their shapes and passes them on, labelled as the harness's report; they are never the metric.
        keep = curve_indices(ppo_cfg.num_updates)
        sealed.export_arrays(Path("artifacts") / str(i) / "train_curves.npz", {
            "steps": ((keep + 1) * ppo_cfg.num_envs * ppo_cfg.num_steps).astype(np.float32),
            "solved": np.asarray(out["metrics"]["solved"], np.float32)[:, keep],
            "return": np.asarray(out["metrics"]["return"], np.float32)[:, keep],
        })
        clock.lap(f"export_{i}")
    clock.save("timings.json")


if __name__ == "__main__":
    main()
