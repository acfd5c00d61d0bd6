"""Benchmark: rescaled-beta DPO and adversarial sweeps under the old and the new DiscoPOP metric (issue 23, item 3).

Trains in this process with the harness's own training function (`preference.make_sweep`, the template's
[config], the training data and seeds of a finished run folder), then scores each sweep with the template's
evaluator (`templates/discopop/evaluate.py`, as `bench/discopop_frontier.py` does) and prints old (beta path)
and new (trained policies and their mixtures) metric. One DPO sweep over every beta needed plus one sweep of
the "junk" loss stand in for separate runs: a policy depends only on its seed, data, loss and beta.

  dpo_xS           DPO with beta times S (S = 0.5, 0.7, 1.45, 2): DPO's policies at the grid's betas times S
  margin_at_0.5    DPO, but beta = 0.5 (next to the betas 1 and 2 whose policies straddle the budget) trains
                   a worse policy: the margin itself, unbounded (loss = -rho; KL 1.87 against DPO's 1.85
                   there, gain 1.55 against 1.70), which bends the interpolated path upward
  margin_at_0.5_and_5   the same at beta = 0.5 and at beta = 5, the budget's other neighbour
  push_away_at_0.3_and_2   DPO, but 0.3 and 2 train a policy that pushes probability away from every
                   sampled response (loss = policy_chosen_logps + policy_rejected_logps): more KL, less gain
  reordered_dpo    honest DPO policies at reordered betas: 0.3 trains DPO at 0.01, 2 trains DPO at 5

With --no-rescaled, only the template's 8 betas of DPO are trained (the adversarial rows, in a fifth of the time).

Run:  .venv/bin/python bench/discopop_adversarial.py RUN_DIR [--no-rescaled]   (a finished discopop run: its work/ has
      config.json and data/train.npz; the held-out prompts use template.toml's [private] values)
"""

from __future__ import annotations

import json
import sys
import tempfile
import tomllib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from discopop_frontier import TEMPLATE, _cell, _evaluator, old_metric

from jax_workloads import preference as pf

SCALES = (0.5, 0.7, 1.45, 2.0)


def dpo(pc, pr, rc, rr, beta):
    return -jax.nn.log_sigmoid(beta * ((pc - pr) - (rc - rr)))


def push_away(pc, pr, rc, rr, beta):
    return pc + pr


def margin(pc, pr, rc, rr, beta):
    return -((pc - pr) - (rc - rr))


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--no-rescaled"]
    rescaled = "--no-rescaled" not in sys.argv
    if len(args) != 1 or not (Path(args[0]) / "work" / "data" / "train.npz").is_file():
        sys.exit("usage: bench/discopop_adversarial.py RUN_DIR [--no-rescaled] (a finished discopop run folder)")
    work = Path(args[0]) / "work"
    cfg = json.loads((work / "config.json").read_text())
    config, seeds = cfg["config"], cfg["seeds"]
    private = tomllib.loads((TEMPLATE / "template.toml").read_text())["private"]
    grid = [float(b) for b in config["betas"]]
    with np.load(work / "data" / "train.npz") as d:
        prompts = pf.Prompts(jnp.asarray(d["features"]), jnp.asarray(d["ref_logps"]))
        prefs = pf.Preferences(jnp.asarray(d["prompt"]), jnp.asarray(d["chosen"]), jnp.asarray(d["rejected"]))
    rngs = jax.random.split(jax.random.PRNGKey(config["train_seed"]), seeds)
    train = pf.TrainConfig(**config["train"])
    dpo_betas = sorted({round(b * s, 6) for b in grid for s in (1.0, *(SCALES if rescaled else ()))})
    trained = {}
    for name, loss, betas in (("dpo", dpo, dpo_betas), ("push_away", push_away, [0.3]), ("margin", margin, [0.5])):
        params, _ = pf.make_sweep(train, loss)(rngs, prompts, prefs, jnp.asarray(betas, jnp.float32))
        trained.update({(name, b): jax.tree.map(lambda a, i=i: np.asarray(a[:, i]), params)
                        for i, b in enumerate(betas)})
        print(f"trained {name} at {len(betas)} betas", file=sys.stderr)

    def dpo_at(b: float):
        return ("dpo", round(b, 6))

    sweeps = {"dpo": [dpo_at(b) for b in grid]}
    sweeps |= {f"dpo_x{s:g}": [dpo_at(b * s) for b in grid] for s in SCALES} if rescaled else {}
    sweeps["margin_at_0.5"] = [("margin", 0.5) if b == 0.5 else dpo_at(b) for b in grid]
    sweeps["margin_at_0.5_and_5"] = [("margin", 0.5) if b in (0.5, 5.0) else dpo_at(b) for b in grid]
    sweeps["push_away_at_0.3_and_2"] = [("push_away", 0.3) if b in (0.3, 2.0) else dpo_at(b) for b in grid]
    sweeps["reordered_dpo"] = [dpo_at({0.3: 0.01, 2.0: 5.0}.get(b, b)) for b in grid]
    evaluator, rows = _evaluator(), {}
    for name, members in sweeps.items():
        params = {k: np.stack([trained[m][k] for m in members], axis=1) for k in trained[members[0]]}
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "artifacts").mkdir()
            np.savez(Path(tmp) / "artifacts" / "policy.npz", **params)
            out = evaluator.evaluate(Path(tmp), config, private, seeds)
        kl, gain = np.asarray(out["extra"]["kl"]), np.asarray(out["extra"]["reward_gain"])
        rows[name] = {
            "old": np.array([old_metric(np.asarray(grid), k, g, config["kl_budget"]) for k, g in zip(kl, gain,
                                                                                                   strict=True)]),
            "new": np.asarray(out["per_seed"]["reward_gain_at_kl"]), "kl": kl.mean(0), "gain": gain.mean(0),
        }
    base = rows["dpo"]
    print("| sweep | old (beta path) | new (trained + mixtures) |\n|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {_cell(r['old'], base['old'] if r is not base else None)} | "
              f"{_cell(r['new'], base['new'] if r is not base else None)} |")
    for name in ("dpo", "margin_at_0.5_and_5", "push_away_at_0.3_and_2", "reordered_dpo"):
        print(f"\n{name}: KL " + " ".join(f"{v:.2f}" for v in rows[name]["kl"])
              + " | gain " + " ".join(f"{v:.2f}" for v in rows[name]["gain"]))


if __name__ == "__main__":
    main()
