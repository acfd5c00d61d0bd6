"""Benchmark: one vmapped sweep versus a Python loop of single trainings (DiscoPOP template).

Measures, for the shipped DPO loss (templates/discopop/loss.py) trained on the
template's data for S seeds x the template's betas:

  (a) vmapped: `preference.make_sweep`, i.e. jit(vmap(vmap(train))), one compiled call;
  (b) loop:    jit(train) compiled once, called S*B times from a Python loop in one process.

For each it reports the compile time, the steady-state run time (best and median of
--repeats runs after compilation, every output blocked on) and the throughput in
preference pairs per second (S * B * steps * batch_size / time). The repeats
alternate between the two paths, so a noisy neighbour slows both alike. Both paths must
give the same trained policies (np.allclose on the weights and on the policy
log-probabilities), so they do equal work.

Run:  .venv/bin/python bench/discopop_vmap.py [--seeds 8] [--steps 400] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import jax
import jax.numpy as jnp
import numpy as np

from base.template import load_template
from jax_workloads import preference as pf


def load_module(path: Path, name: str) -> ModuleType:
    """Import a Python file by path (the template's loss or evaluator)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def template_data(root: Path, config: dict, private: dict, seeds: int) -> tuple[pf.Prompts, pf.Preferences]:
    """Training data made exactly as the runner does: the template evaluator's `prepare`."""
    evaluator = load_module(root / "evaluate.py", "discopop_evaluator")
    with tempfile.TemporaryDirectory() as tmp:
        evaluator.prepare(Path(tmp), config, private, seeds)
        with np.load(Path(tmp) / "train.npz") as d:
            prompts = pf.Prompts(jnp.asarray(d["features"]), jnp.asarray(d["ref_logps"]))
            prefs = pf.Preferences(*(jnp.asarray(d[k]) for k in ("prompt", "chosen", "rejected")))
    return prompts, prefs


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> tuple[dict[str, list[float]], dict]:
    """Wall times of each fn over `repeats` rounds (A, B, A, B, ...: noise hits both alike), last results."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    outs: dict[str, object] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            outs[name] = jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t)
    return times, outs


def assert_same_policies(vmapped: dict, looped: dict, prompts: pf.Prompts) -> None:
    """Both paths trained the same policies: equal weights and equal log-probs on the training prompts.

    `b2` shifts every logit of a prompt equally, so log_softmax cancels it: its gradient is rounding
    noise that Adam scales up to learning-rate-sized steps, and it is checked through the log-probs only.
    """
    for k in ("w1", "b1", "w2"):
        assert np.allclose(vmapped[k], looped[k], atol=1e-4), f"parameter {k!r} differs between the paths"
    logps = jax.jit(jax.vmap(jax.vmap(lambda p: pf.policy_logps(p, prompts))))
    a, b = logps(vmapped), logps({k: jnp.asarray(v) for k, v in looped.items()})
    assert np.allclose(a, b, atol=1e-4), "policy log-probs differ between the paths"


def main() -> None:
    template = load_template("discopop")
    spec = template.spec
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=spec.seeds)
    parser.add_argument("--steps", type=int, default=spec.config["train"]["steps"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    config = spec.config
    train_cfg = pf.TrainConfig(**{**config["train"], "steps": args.steps})
    loss = load_module(template.root / "loss.py", "discopop_loss").loss
    prompts, prefs = template_data(template.root, config, spec.private, args.seeds)
    betas = jnp.asarray(config["betas"], jnp.float32)
    rngs = jax.random.split(jax.random.PRNGKey(config["train_seed"]), args.seeds)
    s, b = args.seeds, len(config["betas"])
    pairs = s * b * train_cfg.steps * min(train_cfg.batch_size, config["pairs"])

    # (a) one compiled call over seeds x betas, as the harness does.
    t = time.perf_counter()
    sweep = pf.make_sweep(train_cfg, loss).lower(rngs, prompts, prefs, betas).compile()
    compile_s = {"vmapped": time.perf_counter() - t}
    # (b) one compiled single training, called S*B times; per-seed data sliced beforehand.
    per_seed = [jax.tree.map(lambda x, i=i: x[i], prefs) for i in range(s)]
    t = time.perf_counter()
    train = jax.jit(pf.make_train(train_cfg, loss)).lower(rngs[0], prompts, per_seed[0], betas[0]).compile()
    compile_s["loop"] = time.perf_counter() - t

    times, outs = interleaved({
        "vmapped": lambda: sweep(rngs, prompts, prefs, betas),
        "loop": lambda: [train(rngs[i], prompts, per_seed[i], betas[j]) for i in range(s) for j in range(b)],
    }, args.repeats)
    params_vmap, looped = outs["vmapped"][0], [params for params, _ in outs["loop"]]
    params_loop = {k: np.stack([p[k] for p in looped]).reshape(v.shape) for k, v in params_vmap.items()}
    assert_same_policies(params_vmap, params_loop, prompts)

    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"DiscoPOP DPO, {s} seeds x {b} betas, {train_cfg.steps} steps, batch {train_cfg.batch_size}, "
          f"jax {jax.__version__} on {jax.devices()[0].platform}, {args.repeats} interleaved repeats")
    print(f"{'path':<18} {'compile s':>10} {'best s':>8} {'median s':>9} {'pairs/s (best)':>15}")
    for k, name in (("vmapped", "vmapped (1 call)"), ("loop", f"loop ({s * b} calls)")):
        rate = pairs / best[k]
        print(f"{name:<18} {compile_s[k]:>10.2f} {best[k]:>8.2f} {median[k]:>9.2f} {rate:>15,.0f}")
    print(f"ratio loop/vmapped: run {best['loop'] / best['vmapped']:.2f}x (best), "
          f"{median['loop'] / median['vmapped']:.2f}x (median); "
          f"compile {compile_s['loop'] / compile_s['vmapped']:.2f}x")
    print(json.dumps({
        "bench": "discopop_vmap", "seeds": s, "betas": b, "steps": train_cfg.steps,
        "batch_size": train_cfg.batch_size, "repeats": args.repeats, "jax": jax.__version__,
        "compile_s": {k: round(v, 3) for k, v in compile_s.items()},
        "run_best_s": {k: round(v, 3) for k, v in best.items()},
        "run_median_s": {k: round(v, 3) for k, v in median.items()},
        "run_all_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "ratio_loop_over_vmapped_best": round(best["loop"] / best["vmapped"], 3),
        "ratio_loop_over_vmapped_median": round(median["loop"] / median["vmapped"], 3),
        "pairs_per_s_best": {k: round(pairs / v) for k, v in best.items()},
        "policies_allclose": True,
    }))


if __name__ == "__main__":
    main()
