"""Benchmark: seeds vmapped in one compiled call versus a Python loop over seeds (diffusion template).

Measures, for the shipped DDPM recipe (templates/diffusion/ddpm.py) trained on the
template's data (made by its evaluator's `prepare`) for S seeds x the 4 data sets:

  (a) vmapped: `diffusion.make_sweep`, i.e. jit(vmap(vmap(train))) over seeds x data sets, one call,
      as the harness runs it;
  (b) loop:    jit(vmap(train)) over the data sets of one seed, compiled once, called S times
      from a Python loop (only the seed axis moves out of the compiled program);
  (c) models:  jit(train) of one denoiser, compiled once, called S * 4 times from a Python loop.

For each it reports the compile time, the steady-state run time (best and median of
--repeats runs after compilation, every output blocked on) and the training throughput
in samples per second (S * 4 * steps * batch_size / time: noised training points through
a forward and backward pass). The repeats alternate between the two paths, so a noisy
neighbour slows both alike. Both paths must train the same denoisers (np.allclose on the
parameters, atol 1e-3), so they do equal work.

Run:  .venv/bin/python bench/diffusion_vmap.py [--seeds 8] [--steps 2000] [--batch-size 256] [--repeats 3]
(--steps 500 gives the same throughputs four times sooner: run time is linear in the steps.)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import jax
import numpy as np

from base.template import load_template
from jax_workloads import diffusion as df


def load_module(path: Path, name: str) -> ModuleType:
    """Import a Python file by path (the template's recipe or evaluator)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def template_points(root: Path, config: dict, private: dict, seeds: int) -> jax.Array:
    """Training points made exactly as the runner does: the template evaluator's `prepare`."""
    evaluator = load_module(root / "evaluate.py", "diffusion_evaluator")
    with tempfile.TemporaryDirectory() as tmp:
        evaluator.prepare(Path(tmp), config, private, seeds)
        with np.load(Path(tmp) / "train.npz") as d:
            return jax.numpy.asarray(d["points"])


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


def main() -> None:
    template = load_template("diffusion")
    spec = template.spec
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=spec.seeds)
    parser.add_argument("--steps", type=int, default=spec.config["train"]["steps"])
    parser.add_argument("--batch-size", type=int, default=spec.config["train"]["batch_size"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    config = spec.config
    harness = load_module(template.root / "harness.py", "diffusion_harness")
    tc = dataclasses.replace(harness.train_config(config), steps=args.steps, batch_size=args.batch_size)
    recipe = load_module(template.root / "ddpm.py", "diffusion_ddpm")
    s, d = args.seeds, len(df.DATASETS)
    points = template_points(template.root, config, spec.private, s)
    rngs = jax.random.split(jax.random.PRNGKey(config["train_seed"]), s * d).reshape(s, d, -1)
    samples = s * d * tc.steps * tc.batch_size

    # (a) one compiled call over seeds x data sets, as the harness does.
    t = time.perf_counter()
    sweep = df.make_sweep(tc, recipe.schedule, recipe.loss).lower(rngs, points).compile()
    compile_s = {"vmapped": time.perf_counter() - t}
    # (b) one compiled call per seed (its 4 data sets vmapped), called S times.
    t = time.perf_counter()
    per_seed = jax.jit(jax.vmap(df.make_train(tc, recipe.schedule, recipe.loss))).lower(rngs[0], points[0]).compile()
    compile_s["loop"] = time.perf_counter() - t
    # (c) one compiled single training, called S * 4 times.
    t = time.perf_counter()
    single = jax.jit(df.make_train(tc, recipe.schedule, recipe.loss)).lower(rngs[0, 0], points[0, 0]).compile()
    compile_s["models"] = time.perf_counter() - t

    times, outs = interleaved({
        "vmapped": lambda: sweep(rngs, points),
        "loop": lambda: [per_seed(rngs[i], points[i]) for i in range(s)],
        "models": lambda: [single(rngs[i, j], points[i, j]) for i in range(s) for j in range(d)],
    }, args.repeats)
    params_vmap = outs["vmapped"][0]
    params_loop = {k: np.stack([p[k] for p, _ in outs["loop"]]) for k in params_vmap}
    params_models = {k: np.stack([p[k] for p, _ in outs["models"]]).reshape(v.shape) for k, v in params_vmap.items()}
    worst = 0.0
    for other in (params_loop, params_models):
        for k in params_vmap:
            diff = np.abs(np.asarray(params_vmap[k]) - other[k])
            worst = max(worst, float(diff.max()))
            assert np.allclose(params_vmap[k], other[k], atol=1e-3), f"parameter {k!r} differs between the paths"

    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"diffusion DDPM, {s} seeds x {d} data sets, {tc.steps} steps, batch {tc.batch_size}, "
          f"MLP {tc.net.layers}x{tc.net.hidden}, jax {jax.__version__} on {jax.devices()[0].platform} "
          f"({os.cpu_count()} CPUs), {args.repeats} interleaved repeats")
    print(f"{'path':<22} {'compile s':>10} {'best s':>8} {'median s':>9} {'samples/s (best)':>17}")
    for k, name in (("vmapped", "vmapped (1 call)"), ("loop", f"seed loop ({s} calls)"),
                    ("models", f"model loop ({s * d} calls)")):
        print(f"{name:<22} {compile_s[k]:>10.2f} {best[k]:>8.2f} {median[k]:>9.2f} {samples / best[k]:>17,.0f}")
    for k in ("loop", "models"):
        print(f"ratio {k}/vmapped: run {best[k] / best['vmapped']:.2f}x (best), "
              f"{median[k] / median['vmapped']:.2f}x (median); compile {compile_s[k] / compile_s['vmapped']:.2f}x")
    print(f"largest parameter difference between the paths: {worst:.1e}")
    print(json.dumps({
        "bench": "diffusion_vmap", "seeds": s, "datasets": d, "steps": tc.steps, "batch_size": tc.batch_size,
        "hidden": tc.net.hidden, "layers": tc.net.layers, "repeats": args.repeats, "jax": jax.__version__,
        "compile_s": {k: round(v, 3) for k, v in compile_s.items()},
        "run_best_s": {k: round(v, 3) for k, v in best.items()},
        "run_median_s": {k: round(v, 3) for k, v in median.items()},
        "run_all_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "ratio_over_vmapped_best": {k: round(best[k] / best["vmapped"], 3) for k in ("loop", "models")},
        "ratio_over_vmapped_median": {k: round(median[k] / median["vmapped"], 3) for k in ("loop", "models")},
        "samples_per_s_best": {k: round(samples / v) for k, v in best.items()},
        "max_abs_param_difference": worst,
    }))


if __name__ == "__main__":
    main()
