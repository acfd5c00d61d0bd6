"""Benchmark: one vmapped sweep versus a Python loop of single trainings (DiscoPOP template).

Measures, for the shipped DPO loss (templates/discopop/loss.py) trained on the
template's data for S seeds x the template's betas:

  (a) vmapped: `preference.make_sweep`, i.e. jit(vmap(vmap(train))), one compiled call;
  (b) loop:    jit(train) compiled once, called S*B times from a Python loop in one process.

For each it reports the compile time, the steady-state run time (median over
--repeats runs after compilation, every output blocked on) and the throughput in
preference pairs per second (S * B * steps * batch_size / time). Both paths must
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

from jax_workloads import preference as pf
from scientist.template import load_template


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


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time of `fn()` (blocked until ready) over `repeats` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


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
    pairs_per_run = s * b * train_cfg.steps * min(train_cfg.batch_size, config["pairs"])

    # (a) one compiled call over seeds x betas, as the harness does.
    t = time.perf_counter()
    sweep = pf.make_sweep(train_cfg, loss).lower(rngs, prompts, prefs, betas).compile()
    compile_vmap = time.perf_counter() - t
    run_vmap, (params_vmap, _) = timed(lambda: sweep(rngs, prompts, prefs, betas), args.repeats)

    # (b) one compiled single training, called S*B times; per-seed data sliced beforehand.
    per_seed = [jax.tree.map(lambda x, i=i: x[i], prefs) for i in range(s)]
    t = time.perf_counter()
    train = jax.jit(pf.make_train(train_cfg, loss)).lower(rngs[0], prompts, per_seed[0], betas[0]).compile()
    compile_loop = time.perf_counter() - t

    def loop() -> list:
        return [train(rngs[i], prompts, per_seed[i], betas[j]) for i in range(s) for j in range(b)]

    run_loop, outs = timed(loop, args.repeats)
    params_loop = {k: np.stack([o[0][k] for o in outs]).reshape(params_vmap[k].shape) for k in params_vmap}
    assert_same_policies(params_vmap, params_loop, prompts)

    rows = [("vmapped (1 call)", compile_vmap, run_vmap), (f"loop ({s * b} calls)", compile_loop, run_loop)]
    print(f"DiscoPOP DPO, {s} seeds x {b} betas, {train_cfg.steps} steps, batch {train_cfg.batch_size}, "
          f"jax {jax.__version__} on {jax.devices()[0].platform}, median of {args.repeats}")
    print(f"{'path':<18} {'compile s':>10} {'run s':>8} {'pairs/s':>12}")
    for name, c, r in rows:
        print(f"{name:<18} {c:>10.2f} {r:>8.3f} {pairs_per_run / r:>12,.0f}")
    print(f"ratio loop/vmapped: run {run_loop / run_vmap:.2f}x, compile {compile_loop / compile_vmap:.2f}x")
    print(json.dumps({
        "bench": "discopop_vmap", "seeds": s, "betas": b, "steps": train_cfg.steps,
        "batch_size": train_cfg.batch_size, "repeats": args.repeats, "jax": jax.__version__,
        "compile_vmap_s": round(compile_vmap, 3), "run_vmap_s": round(run_vmap, 4),
        "compile_loop_s": round(compile_loop, 3), "run_loop_s": round(run_loop, 4),
        "ratio_run_loop_over_vmap": round(run_loop / run_vmap, 3),
        "pairs_per_s_vmap": round(pairs_per_run / run_vmap),
        "pairs_per_s_loop": round(pairs_per_run / run_loop),
        "params_allclose": True,
    }))


if __name__ == "__main__":
    main()
