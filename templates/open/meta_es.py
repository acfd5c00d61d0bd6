"""Meta-train a small learned optimizer (learned_rule.py) with evolution strategies, OPEN-style.

    python templates/open/meta_es.py --out templates/open/candidates/learned.py
    scientist eval --template open -c templates/open/candidates/learned.py

Each generation, OpenAI-ES (evosax) perturbs the MLP weights of learned_rule.py; every member
trains PPO with the template's own configuration (template.toml [config]) and optimizer
wiring (harness.make_optimizer) on `--seeds` seeds, and its fitness is the mean training return
over the last tenth of the updates. Members, seeds and the whole inner PPO run are one
jit(vmap(vmap(train))) call per generation. The ES mean starts at the tuned Adam (zero output
layer), so generation 0 is Adam and ES looks for improvements around it. The result is a copy
of learned_rule.py with the weights filled in: a normal candidate, scored by the sealed evaluator.

The defaults are sized for a GPU (64 members x 2 seeds of 5e5-step Breakout PPO per generation);
a CPU smoke test: --env CartPole-v1 --timesteps 4096 --popsize 4 --generations 2 --seeds 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import pprint
import shlex
import sys
import time
import tomllib
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # the project root, for jax_workloads when run as a script

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from evosax.algorithms import Open_ES  # noqa: E402

from jax_workloads import ppo  # noqa: E402

WEIGHTS_LINE = "WEIGHTS = None\n"


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"open_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; values are checked here so that a bad one is one line, not a traceback."""
    p = Parser(prog="meta_es.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="candidate file to write (e.g. candidates/learned.py)")
    p.add_argument("--env", default=None, help="gymnax environment (default: template.toml's)")
    p.add_argument("--timesteps", type=int, default=None, help="inner PPO steps (default: template.toml's)")
    p.add_argument("--popsize", type=int, default=64, help="ES population (even)")
    p.add_argument("--generations", type=int, default=64)
    p.add_argument("--seeds", type=int, default=2, help="inner PPO seeds per member")
    p.add_argument("--hidden", type=int, default=16, help="MLP width")
    p.add_argument("--sigma", type=float, default=0.03, help="ES perturbation scale")
    p.add_argument("--es-lr", type=float, default=0.03, help="ES step size (Adam on the ES gradient)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.popsize < 2 or args.popsize % 2:
        p.error(f"--popsize must be even and at least 2, not {args.popsize}")
    for name in ("generations", "seeds", "hidden"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if not (args.sigma > 0 and args.es_lr > 0):
        p.error("--sigma and --es-lr must be positive")
    if not args.out.parent.is_dir():
        p.error(f"the folder of --out ({args.out.parent}) does not exist")
    return args


def ppo_setup(args: argparse.Namespace) -> tuple[ppo.PPOConfig, ppo.Env]:
    """The template's PPO configuration and environment, with --env and --timesteps applied."""
    config = tomllib.loads((HERE / "template.toml").read_text())["config"]
    kwargs = dict(config["ppo"])
    if args.timesteps is not None:
        kwargs["total_timesteps"] = args.timesteps
    cfg = ppo.PPOConfig(**kwargs)
    if cfg.num_updates < 1:
        raise SystemExit(f"meta_es.py: error: --timesteps {cfg.total_timesteps} is less than one PPO update "
                         f"({cfg.num_envs} envs x {cfg.num_steps} steps)")
    try:
        env = ppo.gymnax_env(args.env or config["env"])
    except Exception as e:  # noqa: BLE001 - gymnax raises its own error types for unknown names
        raise SystemExit(f"meta_es.py: error: cannot make environment {args.env!r}: {e}") from None
    return cfg, env


def make_fitness(cfg: ppo.PPOConfig, env: ppo.Env, rule: ModuleType, harness: ModuleType):
    """fitness(weights, rngs[seeds]) -> mean training return over the last tenth of the updates."""
    tail = max(1, cfg.num_updates // 10)

    def fitness(weights, rngs):
        tx: optax.GradientTransformation = harness.make_optimizer(
            lambda f: rule.learned_update(weights, f), cfg, env)
        train = ppo.make_train(cfg, env, optimizer=tx, optimizer_sees_batch=True)
        returns = jax.vmap(train)(rngs)["metrics"]["return"]
        return jnp.nan_to_num(returns[:, -tail:].mean(), nan=-1e6)  # a diverged member is simply the worst

    return fitness


def render(weights: dict, command: str, summary: str) -> str:
    """learned_rule.py with WEIGHTS filled in, and a comment saying how they were made."""
    source = (HERE / "learned_rule.py").read_text()
    if source.count(WEIGHTS_LINE) != 1:
        raise RuntimeError(f"learned_rule.py must contain the line {WEIGHTS_LINE.strip()!r} exactly once")
    plain = {k: (np.round(np.asarray(v, np.float64), 6) + 0.0).tolist() for k, v in weights.items()}  # + 0.0: no -0.0
    filled = (f"# Meta-trained by: {command}\n# {summary}\n"
              f"WEIGHTS = {pprint.pformat(plain, width=110, compact=True)}\n")
    return source.replace(WEIGHTS_LINE, filled)


def main(argv: list[str] | None = None) -> int:
    """Run ES and write the candidate; prints one progress line per generation."""
    args = parse_args(argv)
    cfg, env = ppo_setup(args)
    rule, harness = _load("learned_rule"), _load("harness")
    key = jax.random.key(args.seed)
    key, init_key = jax.random.split(key)
    mean = rule.init_weights(init_key, args.hidden)
    es = Open_ES(args.popsize, mean, optimizer=optax.adam(args.es_lr),
                 std_schedule=optax.constant_schedule(args.sigma))
    params = es.default_params
    state = es.init(key, mean, params)
    fitness = make_fitness(cfg, env, rule, harness)
    # Every member sees the same inner seeds in a generation (common random numbers: less noise in the ranking),
    # and the ES mean is scored alongside as one more member, so one compiled program serves every generation.
    evaluate = jax.jit(jax.vmap(fitness, in_axes=(0, None)))
    with_mean = lambda pop, state: jax.tree.map(  # noqa: E731
        lambda p, m: jnp.concatenate([p, m[None]]), pop, es.get_mean(state))
    print(f"meta-ES: {args.popsize} members x {args.seeds} seeds of {cfg.total_timesteps} {env.name} steps, "
          f"{es.num_dims} weights", flush=True)
    started = time.time()
    for gen in range(args.generations):
        key, ask_key, tell_key, seed_key = jax.random.split(key, 4)
        population, new_state = es.ask(ask_key, state, params)
        scores = evaluate(with_mean(population, state), jax.random.split(seed_key, args.seeds))
        mean_score = float(scores[-1])
        state, _ = es.tell(tell_key, population, -scores[:-1], new_state, params)  # evosax minimises
        print(f"generation {gen + 1}/{args.generations}: ES mean {mean_score:.2f}, members "
              f"{float(scores[:-1].mean()):.2f} (best {float(scores[:-1].max()):.2f}), {time.time() - started:.0f} s",
              flush=True)
    weights = es.get_mean(state)
    command = "python templates/open/meta_es.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    summary = (f"{args.generations} generations of OpenAI-ES, {args.popsize} members x {args.seeds} seeds, "
               f"{cfg.total_timesteps} {env.name} steps; training return of the ES mean before the last step "
               f"{mean_score:.2f}")
    args.out.write_text(render(weights, command, summary))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
