"""Benchmark: training S seeds of the transformer template in one vmapped call versus a Python loop over seeds.

Trains the shipped recipe (templates/transformer/recipe.py) on the template's training text
(made by the template evaluator's `prepare`, so the fortunes corpus must be installed), at the
template's CPU size, two ways:

  (a) vmapped: jit(vmap(train)) over S seeds, one compiled call (the harness's choice on a GPU);
  (b) loop:    jit(train) compiled once, called S times from a Python loop in one process;
  (c) lax.map: jit(lax.map(train)) over S seeds, one compiled call running them in sequence
               (the harness's choice on a CPU, config.vmap_seeds = 1).

For each it reports the compile time, the steady-state run time (best and median of --repeats
runs after compilation, every output blocked on) and the training throughput in tokens
(characters) per second: S * steps * batch_size * block_size / time. The repeats alternate
between the paths, so a noisy neighbour slows all alike. All paths must train the same models
(the same per-step training losses, to float32 rounding), so they do equal work. Time ratios
are loop / vmapped and lax.map / vmapped: below 1, the path is faster than vmapping.

Run:  .venv/bin/python bench/transformer_vmap.py [--seeds 4] [--steps 100] [--repeats 3]
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
from jax_workloads import transformer as tf


def load_module(path: Path, name: str) -> ModuleType:
    """Import a Python file by path (the template's recipe or evaluator)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def training_text(root: Path, config: dict, private: dict) -> jax.Array:
    """The training text made exactly as the runner makes it: the template evaluator's `prepare`."""
    evaluator = load_module(root / "evaluate.py", "transformer_evaluator")
    with tempfile.TemporaryDirectory() as tmp:
        evaluator.prepare(Path(tmp), config, private, seeds=1)
        with np.load(Path(tmp) / "train.npz") as d:
            return jnp.asarray(d["tokens"])


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
    template = load_template("transformer")
    spec = template.spec
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=spec.seeds)
    parser.add_argument("--steps", type=int, default=100, help="training steps (the template runs 600)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    config = spec.config
    cfg = tf.TrainConfig(model=tf.ModelConfig(**config["model"]), steps=args.steps, batch_size=config["batch_size"],
                         checkpoints=1)
    recipe = load_module(template.root / "recipe.py", "transformer_recipe")
    data = training_text(template.root, config, spec.private)
    rngs = jax.random.split(jax.random.PRNGKey(config["train_seed"]), args.seeds)
    train = tf.make_train(cfg, recipe.Block, recipe.optimizer, recipe.loss)
    tokens = args.seeds * cfg.steps * cfg.batch_size * cfg.model.block_size

    t = time.perf_counter()
    vmapped = tf.train_seeds(train).lower(rngs, data).compile()  # jit(vmap(train))
    compile_s = {"vmapped": time.perf_counter() - t}
    t = time.perf_counter()
    single = jax.jit(train).lower(rngs[0], data).compile()
    compile_s["loop"] = time.perf_counter() - t
    t = time.perf_counter()
    mapped = tf.train_seeds(train, vmap_seeds=1).lower(rngs, data).compile()  # jit(lax.map(train))
    compile_s["map"] = time.perf_counter() - t

    times, outs = interleaved({
        "vmapped": lambda: vmapped(rngs, data),
        "loop": lambda: [single(rngs[i], data) for i in range(args.seeds)],
        "map": lambda: mapped(rngs, data),
    }, args.repeats)
    loss_vmap = np.asarray(outs["vmapped"][1])
    loss_loop = np.stack([np.asarray(losses) for _, losses in outs["loop"]])
    assert np.allclose(loss_vmap, loss_loop, rtol=1e-3, atol=1e-3), "the two paths trained different models"
    assert np.allclose(np.asarray(outs["map"][1]), loss_loop, rtol=1e-3, atol=1e-3), "lax.map trained other models"

    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    n_params = tf.count_params(jax.tree.map(lambda x: x[0], outs["loop"][0][0]))
    print(f"transformer (shipped recipe, {n_params:,} parameters), {args.seeds} seeds, {cfg.steps} steps, batch "
          f"{cfg.batch_size} x {cfg.model.block_size} characters, jax {jax.__version__} on "
          f"{jax.devices()[0].platform}, {args.repeats} interleaved repeats")
    print(f"{'path':<18} {'compile s':>10} {'best s':>8} {'median s':>9} {'tokens/s (best)':>16}")
    paths = (("vmapped", "vmapped (1 call)"), ("loop", f"loop ({args.seeds} calls)"), ("map", "lax.map (1 call)"))
    for k, name in paths:
        print(f"{name:<18} {compile_s[k]:>10.2f} {best[k]:>8.2f} {median[k]:>9.2f} {tokens / best[k]:>16,.0f}")
    print(f"ratio loop/vmapped: run {best['loop'] / best['vmapped']:.2f}x (best), "
          f"{median['loop'] / median['vmapped']:.2f}x (median); "
          f"compile {compile_s['loop'] / compile_s['vmapped']:.2f}x")
    print(f"ratio lax.map/vmapped: run {best['map'] / best['vmapped']:.2f}x (best), "
          f"{median['map'] / median['vmapped']:.2f}x (median)")
    print(json.dumps({
        "bench": "transformer_vmap", "seeds": args.seeds, "steps": cfg.steps, "batch_size": cfg.batch_size,
        "block_size": cfg.model.block_size, "params": n_params, "repeats": args.repeats, "jax": jax.__version__,
        "compile_s": {k: round(v, 3) for k, v in compile_s.items()},
        "run_best_s": {k: round(v, 3) for k, v in best.items()},
        "run_median_s": {k: round(v, 3) for k, v in median.items()},
        "run_all_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "ratio_loop_over_vmapped_best": round(best["loop"] / best["vmapped"], 3),
        "ratio_loop_over_vmapped_median": round(median["loop"] / median["vmapped"], 3),
        "ratio_map_over_vmapped_best": round(best["map"] / best["vmapped"], 3),
        "tokens_per_s_best": {k: round(tokens / v) for k, v in best.items()},
        "max_train_loss_difference": float(np.max(np.abs(loss_vmap - loss_loop))),
    }))


if __name__ == "__main__":
    main()
