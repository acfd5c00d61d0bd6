"""Reference points for the kinetix metric: what holding one action for a whole episode scores.

Kinetix's handmade s-levels are deterministic scenes, and several of them are solved by pressing
one motor or thruster and never letting go. This script plays each of Kinetix's constant discrete
actions (11: two directions for each of 4 motor bindings, no-op, 2 thrusters) on the evaluator's own held-out variants
(kinetix_tasks.held_out_variants and make_solve_rate, as the evaluator calls them)
and prints, per level, the solve rate of every action, then two summaries:

- the best single action for all levels (a policy that ignores its observation entirely), and
- the per-level oracle: the best constant action chosen separately for each level. A trained
  agent that only identifies the level and holds that action reaches this; going above it needs
  closed-loop control.

No training and no candidate code: one compiled rollout, about a minute on 2 CPU cores.

Run:  .venv/bin/python templates/kinetix/oracle.py [--template-dir templates/kinetix] [--episodes N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # the checkout, when run as a script

from jax_workloads import kinetix_tasks as kt  # noqa: E402

NUM_ACTIONS = 11
# Kinetix's discrete actions (kinetix.environment.utils.convert_discrete_actions): 2k and 2k + 1 drive motor
# binding k backwards and forwards, 8 does nothing, 9 and 10 fire thruster bindings 0 and 1.
ACTION_NAMES = [f"motor {i // 2} {'-+'[i % 2]}" for i in range(8)] + ["no-op", "thruster 0", "thruster 1"]


def constant_action_rates(config: dict, private: dict, episodes: int | None = None) -> tuple[list[str], np.ndarray]:
    """Solve rate of each constant discrete action on each level's held-out variants: (levels, [actions, levels])."""
    levels = list(private.get("levels", config["levels"]))
    states, static_params = kt.load_levels(levels)
    per_level = int(episodes or private["episodes_per_level"])
    held_out = kt.held_out_variants(states, config, private, per_level)
    spec = kt.action_spec(static_params, continuous=False, max_timesteps=config["max_timesteps"])

    def policy(obs):
        # "Seed" s holds action s: the evaluator's batch of seeds doubles as a batch of constant policies.
        return jnp.broadcast_to(jnp.arange(NUM_ACTIONS, dtype=jnp.int32)[:, None], obs.shape[:2])

    run = jax.jit(kt.make_solve_rate(static_params, policy, spec, NUM_ACTIONS, config["max_timesteps"]))
    solved, _ = run(held_out)
    rates = np.asarray(solved, np.float64).reshape(NUM_ACTIONS, len(levels), per_level).mean(-1)
    return levels, rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template-dir", type=Path, default=HERE, help="a kinetix template folder (its template.toml)")
    parser.add_argument("--episodes", type=int, help="variants per level (default: [private] episodes_per_level)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)
    try:
        toml = tomllib.loads((args.template_dir / "template.toml").read_text())
        levels, rates = constant_action_rates(toml["config"], toml["private"], args.episodes)
    except (OSError, KeyError, ValueError, tomllib.TOMLDecodeError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    best_single = int(rates.mean(1).argmax())
    oracle = rates.max(0)
    if args.json:
        print(json.dumps({"levels": levels, "actions": ACTION_NAMES, "rates": rates.tolist(),
                          "best_single_action": ACTION_NAMES[best_single],
                          "best_single_action_rate": float(rates[best_single].mean()),
                          "per_level_oracle": oracle.tolist(), "per_level_oracle_rate": float(oracle.mean())}))
        return 0
    print("| level | best constant action | its solve rate | actions that solve any variant |")
    print("|---|---|---:|---|")
    for j, level in enumerate(levels):
        a = int(rates[:, j].argmax())
        solving = ", ".join(ACTION_NAMES[i] for i in np.flatnonzero(rates[:, j] > 0)) or "none"
        print(f"| {level} | {ACTION_NAMES[a] if oracle[j] > 0 else '-'} | {oracle[j]:.3f} | {solving} |")
    print()
    print(f"best single action for every level ({ACTION_NAMES[best_single]}): solve_rate "
          f"{rates[best_single].mean():.3f}")
    print(f"per-level oracle (best constant action per level): solve_rate {oracle.mean():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
