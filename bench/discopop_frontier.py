"""Benchmark: the DiscoPOP metric before and after "metrics credit only what was trained" (issue 23, item 3).

Re-reads finished `scientist eval` run folders (their final_info.json and work/artifacts/policy.npz):

  old     the metric as it was: KL and gain interpolated separately along log(beta) (PCHIP, 32 points
          per gap) and read off the running-maximum envelope; computed from final_info.json's
          extra.kl / extra.reward_gain, so it is exactly what that run printed before
  trained the upper concave hull of the 8 trained points only (chords: conservative, no mixtures)
  new     today's evaluator (templates/discopop/evaluate.py) run on the same exported policies:
          the hull of the trained policies and their exact two-policy mixtures

All three read the same trained policies, so their differences are the metric's alone. The held-out
prompts use the [private] values of template.toml (the shipped fixture values) unless --private
gives a JSON file of them. With --per-beta, also prints each run's mean KL and gain per beta.

Run:  .venv/bin/python bench/discopop_frontier.py RUN_DIR... [--baseline RUN_DIR] [--per-beta]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.stats import ttest_ind

from jax_workloads import preference as pf

TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "discopop"


def old_metric(betas: np.ndarray, kl: np.ndarray, gain: np.ndarray, budget: float, per_gap: int = 32) -> float:
    """The metric before issue 23: the beta path (PCHIP along log beta) read off the running-max envelope."""
    between = np.linspace(np.log(betas[0]), np.log(betas[-1]), per_gap * (len(betas) - 1) + 1)
    xs = np.concatenate([kl, PchipInterpolator(np.log(betas), kl)(between)])
    ys = np.concatenate([gain, PchipInterpolator(np.log(betas), gain)(between)])
    order = np.argsort(xs)
    xs, ys = np.concatenate([[0.0], xs[order]]), np.maximum.accumulate(np.concatenate([[0.0], ys[order]]))
    return float(np.interp(budget, xs, ys))


def _evaluator():
    spec = importlib.util.spec_from_file_location("discopop_evaluate", TEMPLATE / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_run(run: Path, evaluator, private: dict) -> dict:
    """Per-seed old, trained-hull and new metric of one run folder, and its per-beta arrays."""
    info = json.loads((run / "final_info.json").read_text())
    extra = info["extra"]
    betas, budget = np.asarray(extra["betas"], float), float(extra["kl_budget"])
    kl, gain = np.asarray(extra["kl"], float), np.asarray(extra["reward_gain"], float)
    order = np.argsort(betas)
    cfg = json.loads((run / "work" / "config.json").read_text())
    new = evaluator.evaluate(run / "work", cfg["config"], private, cfg["seeds"])
    return {
        "name": run.name, "betas": betas, "kl": kl, "gain": gain,
        "old": np.array([old_metric(betas[order], k[order], g[order], budget) for k, g in zip(kl, gain, strict=True)]),
        "trained": np.array([pf.frontier_value(k, g, budget) for k, g in zip(kl, gain, strict=True)]),
        "new": np.asarray(new["per_seed"]["reward_gain_at_kl"]),
    }


def _cell(x: np.ndarray, base: np.ndarray | None) -> str:
    s = f"{x.mean():.4f} ± {x.std(ddof=1) / np.sqrt(len(x)):.4f}"
    if base is not None and x is not base:
        s += f" ({x.mean() - base.mean():+.4f}, p = {ttest_ind(x, base, equal_var=False).pvalue:.2g})"
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--baseline", type=Path, help="the DPO run the p-values compare with (Welch's t-test)")
    ap.add_argument("--private", type=Path, help="JSON file of the [private] values (default: template.toml's)")
    ap.add_argument("--per-beta", action="store_true")
    args = ap.parse_args()
    if args.private:
        private = json.loads(args.private.read_text())
    else:
        private = tomllib.loads((TEMPLATE / "template.toml").read_text()).get("private")
        if not private:
            sys.exit("template.toml has no [private] values: pass --private FILE.json")
    for run in [*args.runs, *([args.baseline] if args.baseline else [])]:
        if not (run / "final_info.json").is_file() or not (run / "work" / "artifacts" / "policy.npz").is_file():
            sys.exit(f"{run}: not a finished discopop run folder (final_info.json, work/artifacts/policy.npz)")
    evaluator = _evaluator()
    base = read_run(args.baseline, evaluator, private) if args.baseline else None
    rows = ([base] if base else []) + [read_run(r, evaluator, private) for r in args.runs]
    print("| run | old (beta path) | trained points' hull | new (trained + mixtures) |")
    print("|---|---|---|---|")
    for r in rows:
        cells = [_cell(r[k], base[k] if base else None) for k in ("old", "trained", "new")]
        print(f"| {r['name']} | " + " | ".join(cells) + " |")
    if args.per_beta:
        for r in rows:
            print(f"\n{r['name']}: mean over {len(r['kl'])} seeds per beta")
            print("| beta | " + " | ".join(f"{b:g}" for b in r["betas"]) + " |")
            print("|---|" + "---|" * len(r["betas"]))
            print("| KL | " + " | ".join(f"{v:.3f}" for v in r["kl"].mean(0)) + " |")
            print("| gain | " + " | ".join(f"{v:.3f}" for v in r["gain"].mean(0)) + " |")


if __name__ == "__main__":
    main()
