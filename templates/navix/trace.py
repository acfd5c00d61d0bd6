"""NAVIX tracer (fixed; runs in a sandbox of its own): import the candidate agent, export its network and loss.

The only process that runs agent.py's Python. For each environment of the suite ([config] envs; their flat
observations differ in size) it exports into exports/ (one flat folder, files named env<i>_...), as StableHLO,
the functions training and evaluation call (jax_workloads.ppo_agent.export_agent): the network's init and apply,
the loss with its derivative, and the network with a symbolic batch size, lowered for the CPU, for the
evaluator's batches; and exports/manifest.json {"continuous": false}. PPO's settings are the public [config.ppo]
of config.json, read as the harness reads them. The harness trains with these exports, checks every one of them
itself and never imports agent.py.
"""

import json
from pathlib import Path

from jax_workloads import exported, ppo_agent, sealed
from jax_workloads import navix_tasks as nt

EXPORTS = "exports"


def trace(agent_path: str, config: dict, out: str | Path = EXPORTS) -> None:
    """Export the agent at agent_path for every environment into out (see the module's docstring)."""
    continuous, make_network, loss = ppo_agent.import_agent(agent_path)
    if continuous:
        sealed.fail("candidate agent.py: CONTINUOUS must be False: MiniGrid's (NAVIX's) 7 actions are discrete")
    ppo_cfg = ppo_agent.ppo_config(config)
    try:
        envs = nt.task_envs(config)
    except (ValueError, TypeError, KeyError) as e:
        sealed.fail(f"template.toml [config]: {sealed.describe(e)}")
    for i, env in enumerate(envs):
        ppo_agent.export_agent(make_network, loss, env, ppo_cfg, out, prefix=f"env{i}_")
    exported.write_manifest(out, {"continuous": False})


def main() -> None:
    trace("agent.py", json.loads(Path("config.json").read_text())["config"])


if __name__ == "__main__":
    main()
