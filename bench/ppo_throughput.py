"""Benchmark: PPO environment steps per second, jax_workloads/ppo.py against a plain PureJaxRL-style script.

For each environment (CartPole-v1, Breakout-MinAtar, one Kinetix s-level) it trains 8 vmapped seeds
with the same hyperparameters and network twice: (a) through the framework, `ppo.make_train` on
`ppo.gymnax_env` / `kinetix_tasks.make_env`; (b) with bench/plain_ppo.py, one self-contained script. Each
is compiled once (compile time reported separately), then run --repeats times, alternating a, b, a,
b so that a noisy neighbour slows both alike; steps/s = seeds x total_timesteps / best run time (the
ratio of median run times is printed too).
The ratio framework/plain near 1 means the framework's adapters and hooks cost nothing measurable.

Run:  .venv/bin/python bench/ppo_throughput.py [--seeds 8] [--repeats 2] [--quick] [--env CartPole-v1 ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jax_workloads import kinetix_tasks, ppo

HERE = Path(__file__).resolve().parent
KINETIX_LEVEL = "s/h4_thrust_aim"

# name -> (framework env factory, plain env name, shared settings): PureJaxRL's CartPole and MinAtar
# batch shapes; for Kinetix, the kinetix template's CPU batch shape.
CASES = {
    "CartPole-v1": (lambda: ppo.gymnax_env("CartPole-v1"), "CartPole-v1",
                    dict(total_timesteps=500_000, num_envs=4, num_steps=128, num_minibatches=4)),
    "Breakout-MinAtar": (lambda: ppo.gymnax_env("Breakout-MinAtar"), "Breakout-MinAtar",
                         dict(total_timesteps=500_000, num_envs=64, num_steps=128, num_minibatches=8)),
    f"Kinetix {KINETIX_LEVEL}": (lambda: kinetix_tasks.make_env([KINETIX_LEVEL]), f"kinetix:{KINETIX_LEVEL}",
                                 dict(total_timesteps=32_768, num_envs=16, num_steps=64, num_minibatches=4)),
}


def load_plain():
    """bench/plain_ppo.py, imported by path (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("plain_ppo", HERE / "plain_ppo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["plain_ppo"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def compiled(train, rngs) -> tuple:
    """(compiled function, compile seconds): jit(vmap(train)) lowered and compiled for these seeds."""
    t = time.perf_counter()
    fn = jax.jit(jax.vmap(train)).lower(rngs).compile()
    return fn, time.perf_counter() - t


def bench_case(name: str, seeds: int, repeats: int, scale: float) -> dict:
    """Compile both implementations for one environment, then time them alternately."""
    plain = load_plain()
    make_env, plain_env, settings = CASES[name]
    settings = {**settings, "total_timesteps": int(settings["total_timesteps"] * scale)}
    rngs = jax.random.split(jax.random.key(0), seeds)
    fw_train, fw_compile = compiled(ppo.make_train(ppo.PPOConfig(**settings), make_env()), rngs)
    pl_train, pl_compile = compiled(plain.make_train(plain.Config(**settings), plain_env), rngs)
    times: dict[str, list[float]] = {"framework": [], "plain": []}
    finals = {}
    for _ in range(repeats):
        for key, fn in (("framework", fw_train), ("plain", pl_train)):
            t = time.perf_counter()
            out = jax.block_until_ready(fn(rngs))
            times[key].append(time.perf_counter() - t)
            curve = out["metrics"]["return"] if key == "framework" else out["returns"]
            finals[key] = float(np.asarray(curve)[:, -1].mean())
    steps = seeds * settings["total_timesteps"]
    row = {"env": name, "steps": steps}
    for key, compile_s in (("framework", fw_compile), ("plain", pl_compile)):
        row[key] = {"compile_s": compile_s, "best_s": min(times[key]), "median_s": statistics.median(times[key]),
                    "steps_per_s": steps / min(times[key]), "final_return": finals[key]}
    row["ratio"] = row["framework"]["steps_per_s"] / row["plain"]["steps_per_s"]
    row["median_ratio"] = row["plain"]["median_s"] / row["framework"]["median_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a tenth of the steps: a smoke test, not a measurement")
    parser.add_argument("--env", action="append", choices=list(CASES), help="only these environments (repeatable)")
    args = parser.parse_args()
    if args.seeds < 1 or args.repeats < 1:
        parser.error("--seeds and --repeats must be at least 1")
    print(f"jax {jax.__version__}, {jax.default_backend()}, {args.seeds} seeds, best of {args.repeats}", flush=True)
    rows = []
    for name in args.env or CASES:
        rows.append(bench_case(name, args.seeds, args.repeats, 0.1 if args.quick else 1.0))
        r = rows[-1]
        print(f"  {name}: framework {r['framework']['steps_per_s']:,.0f} steps/s, "
              f"plain {r['plain']['steps_per_s']:,.0f} steps/s", flush=True)
    print()
    print("| environment | steps (all seeds) | framework steps/s | plain steps/s | framework / plain (best) "
          "| (median) | compile s (framework / plain) | final return (framework / plain) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        fw, pl = r["framework"], r["plain"]
        print(f"| {r['env']} | {r['steps']:,} | {fw['steps_per_s']:,.0f} | {pl['steps_per_s']:,.0f} "
              f"| **{r['ratio']:.2f}x** | {r['median_ratio']:.2f}x | {fw['compile_s']:.1f} / {pl['compile_s']:.1f} "
              f"| {fw['final_return']:.2f} / {pl['final_return']:.2f} |")


if __name__ == "__main__":
    main()
