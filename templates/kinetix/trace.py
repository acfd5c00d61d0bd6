"""Kinetix tracer (fixed; runs in a sandbox of its own): import the candidate agent, export its network and loss.

The only process that runs agent.py's Python. It builds the candidate's network and exports, as StableHLO
(jax_workloads.exported), the functions training and evaluation call, each at the shapes they are called with:

- exports/init: init(key data, one observation [obs_size]) -> params, the network's initialisation
  (key data: jax.random.key_data of a key; the harness passes its own keys' data);
- exports/apply: apply(params, observations [num_envs, obs_size]) -> (policy_out, value), one rollout step;
- exports/loss: loss(params, obs, action, log_prob, value, advantage, target) -> (total, aux dict) on one PPO
  minibatch (ppo.Batch's fields), the candidate's loss with its own network's apply baked in, with its derivative;
- exports/policy: apply(params, observations [b, obs_size]) with a symbolic batch size b, lowered for the CPU:
  the network the harness composes into the greedy policy the evaluator plays on batches of its own choosing;

and exports/manifest.json: {"continuous": CONTINUOUS}. PPO's settings are the public [config.ppo] of
config.json, read as the harness reads them. The harness trains with these exports, checks every one of them
itself (it trusts nothing this process says) and never imports agent.py, so whatever else the module does at
import (rebinding harness functions, threads, exit handlers, files) ends with this sandbox.
"""

import json
from pathlib import Path

from jax_workloads import exported, ppo_agent, sealed
from jax_workloads import kinetix_tasks as kt

EXPORTS = "exports"


def trace(agent_path: str, config: dict, out: str | Path = EXPORTS) -> None:
    """Export the agent at agent_path for the harness into `out` (see the module's docstring); fail() otherwise."""
    continuous, make_network, loss = ppo_agent.import_agent(agent_path)
    ppo_cfg = ppo_agent.ppo_config(config)
    try:
        env = kt.task_env(config, continuous)
    except (ValueError, TypeError, KeyError) as e:
        sealed.fail(f"template.toml [config]: {sealed.describe(e)}")
    ppo_agent.export_agent(make_network, loss, env, ppo_cfg, out)
    exported.write_manifest(out, {"continuous": continuous})


def main() -> None:
    trace("agent.py", json.loads(Path("config.json").read_text())["config"])


if __name__ == "__main__":
    main()
