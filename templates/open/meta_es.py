"""Meta-train OPEN's learned optimizer (learned_rule.py) with OpenAI-ES, as OPEN's code does.

    python templates/open/meta_es.py --out templates/open/candidates/learned.py
    scientist eval --template open -c templates/open/candidates/learned.py

The defaults are OPEN's (github.com/AlexGoldie/rl-learned-optimization, rl_optimizer/train.py at commit
b65037bd89c09f31e80c5d49f1d78cc9c6dc43e0): the GRU optimizer of learned_rule.py starting from all-zero
weights; OpenAI-ES (evosax Open_ES: antithetic sampling, centred ranks) with population 64, sigma 0.03
and learning rate 0.03 both decayed by 0.999 per generation, Adam with b1 = 0.99 on the ES gradient,
512 generations, one inner run per member, every member on the same seeds in a generation; fitness the
final return (the last update's mean return of the last finished episodes). Every member trains PPO
with the template's own configuration (template.toml [config]) and optimizer wiring
(harness.make_optimizer); members, seeds and the whole inner PPO run are one jit(vmap(vmap(train)))
call per generation, with the ES mean scored alongside. The result is a copy of the rule file with
the weights filled in: a normal candidate, scored by the sealed evaluator.

Options beside OPEN's: --rule adam_mlp (learned_mlp_rule.py, the template's earlier MLP residual on
the tuned Adam, starting at Adam), --fitness tail (the mean training return over the last tenth of
the updates), constant settings with --sigma-decay 1 --lr-decay 1. --from-upstream FILE.npy writes
a candidate from one of OPEN's published flat weight vectors (rl_optimizer/pretrained/*.npy) without
training. A GPU-sized job; a CPU smoke test: --env CartPole-v1 --timesteps 16384 --popsize 2
--generations 1.
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
from evosax.core.fitness_shaping import centered_rank_fitness_shaping_fn  # noqa: E402

from jax_workloads import ppo  # noqa: E402

WEIGHTS_LINE = "WEIGHTS = None\n"
SIZES_LINE = "HIDDEN, GRU_FEATURES = 16, 8\n"
RULES = {"open": "learned_rule", "adam_mlp": "learned_mlp_rule"}


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
    p.add_argument("--rule", choices=sorted(RULES), default="open",
                   help="open: OPEN's GRU optimizer (learned_rule.py); adam_mlp: the MLP residual on Adam")
    p.add_argument("--popsize", type=int, default=64, help="ES population (even)")
    p.add_argument("--generations", type=int, default=512)
    p.add_argument("--seeds", type=int, default=1, help="inner PPO seeds per member (OPEN's num_rollouts)")
    p.add_argument("--hidden", type=int, default=16, help="MLP width")
    p.add_argument("--gru", type=int, default=8, help="GRU units (--rule open)")
    p.add_argument("--sigma", type=float, default=0.03, help="ES perturbation scale at generation 0")
    p.add_argument("--sigma-decay", type=float, default=0.999, help="sigma's factor per generation")
    p.add_argument("--es-lr", type=float, default=0.03, help="ES step size at generation 0 (Adam on the ES gradient)")
    p.add_argument("--lr-decay", type=float, default=0.999, help="the step size's factor per generation")
    p.add_argument("--es-b1", type=float, default=0.99, help="Adam's b1 on the ES gradient")
    p.add_argument("--fitness", choices=("final", "tail"), default="final",
                   help="final: the last update's return (OPEN); tail: the mean over the last tenth of the updates")
    p.add_argument("--from-upstream", type=Path, default=None,
                   help="write a candidate from OPEN's flat weights (a .npy of rl_optimizer/pretrained) and stop")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.popsize < 2 or args.popsize % 2:
        p.error(f"--popsize must be even and at least 2, not {args.popsize}")
    for name in ("generations", "seeds", "hidden", "gru"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if not (args.sigma > 0 and args.es_lr > 0):
        p.error("--sigma and --es-lr must be positive")
    if not (0 < args.sigma_decay <= 1 and 0 < args.lr_decay <= 1 and 0 <= args.es_b1 < 1):
        p.error("--sigma-decay and --lr-decay must be in (0, 1], --es-b1 in [0, 1)")
    if args.from_upstream is not None and args.rule != "open":
        p.error("--from-upstream loads OPEN's GRU optimizer: it needs --rule open")
    if args.from_upstream is not None and not args.from_upstream.is_file():
        p.error(f"--from-upstream {args.from_upstream} is not a file")
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


def wiring() -> dict:
    """The template's optimizer wiring ([config.open]: grad_clip, proportions), as the harness reads it."""
    config = tomllib.loads((HERE / "template.toml").read_text())["config"].get("open", {})
    return {"grad_clip": config.get("grad_clip", "separate"), "proportions": config.get("proportions", "open")}


def make_fitness(cfg: ppo.PPOConfig, env: ppo.Env, rule: ModuleType, harness: ModuleType, kind: str = "final"):
    """fitness(weights, rngs[seeds]) -> the final training return (OPEN), or with kind="tail" the mean over the
    last tenth of the updates; averaged over the seeds."""
    tail = 1 if kind == "final" else max(1, cfg.num_updates // 10)
    options = dict(wiring(), carry=getattr(rule, "CARRY", 0), zero_mean=getattr(rule, "ZERO_MEAN", False))

    def fitness(weights, rngs):
        tx: optax.GradientTransformation = harness.make_optimizer(
            lambda f: rule.learned_update(weights, f), cfg, env, **options)
        train = ppo.make_train(cfg, env, optimizer=tx, optimizer_sees_batch=True)
        returns = jax.vmap(train)(rngs)["metrics"]["return"]
        return jnp.nan_to_num(returns[:, -tail:].mean(), nan=-1e6)  # a diverged member is simply the worst

    return fitness


def plain(tree):
    """Nested dicts of arrays as nested dicts of lists, rounded to 6 decimals (+ 0.0: no -0.0)."""
    if isinstance(tree, dict):
        return {k: plain(v) for k, v in tree.items()}
    return (np.round(np.asarray(tree, np.float64), 6) + 0.0).tolist()


def render(weights: dict, command: str, summary: str, rule: str = "open", sizes: tuple[int, int] = (16, 8)) -> str:
    """The rule's file with WEIGHTS (and for OPEN's GRU its sizes) filled in, and a comment saying how."""
    name = RULES[rule]
    source = (HERE / f"{name}.py").read_text()
    if source.count(WEIGHTS_LINE) != 1:
        raise RuntimeError(f"{name}.py must contain the line {WEIGHTS_LINE.strip()!r} exactly once")
    if rule == "open":
        if source.count(SIZES_LINE) != 1:
            raise RuntimeError(f"{name}.py must contain the line {SIZES_LINE.strip()!r} exactly once")
        source = source.replace(SIZES_LINE, f"HIDDEN, GRU_FEATURES = {sizes[0]}, {sizes[1]}\n")
    filled = (f"# Meta-trained by: {command}\n# {summary}\n"
              f"WEIGHTS = {pprint.pformat(plain(weights), width=110, compact=True)}\n")
    return source.replace(WEIGHTS_LINE, filled)


def from_upstream(path: Path, rule: ModuleType, hidden: int, gru: int) -> dict:
    """OPEN's flat meta-parameters (jax.flatten_util.ravel_pytree of GRU_Opt.init's tree) as learned_rule's tree."""
    from jax.flatten_util import ravel_pytree

    flat = np.load(path, allow_pickle=False).astype(np.float32).reshape(-1)
    template_flat, unravel = ravel_pytree(rule.zero_weights(hidden, gru))
    if flat.shape != template_flat.shape:
        raise SystemExit(f"meta_es.py: error: {path} holds {flat.size} numbers; OPEN's optimizer with --hidden "
                         f"{hidden} --gru {gru} has {template_flat.size}")
    return unravel(jnp.asarray(flat))


def make_strategy(args: argparse.Namespace, mean) -> Open_ES:
    """OpenAI-ES as OPEN sets it up: sigma and the step size each exponential_decay(value, transition_steps=1,
    decay_rate, end_value=0), Adam with b1 = --es-b1 on the ES gradient, centred-rank fitness shaping."""
    # (A rate of 1 is a constant: optax reads end_value=0 as an upper bound when the rate is not below 1.)
    decayed = lambda value, rate: (optax.constant_schedule(value) if rate == 1  # noqa: E731
                                   else optax.exponential_decay(value, 1, rate, end_value=0.0))
    return Open_ES(args.popsize, mean, optimizer=optax.adam(decayed(args.es_lr, args.lr_decay), b1=args.es_b1),
                   std_schedule=decayed(args.sigma, args.sigma_decay),
                   fitness_shaping_fn=centered_rank_fitness_shaping_fn)


def main(argv: list[str] | None = None) -> int:
    """Run ES and write the candidate; prints one progress line per generation."""
    args = parse_args(argv)
    command = "python templates/open/meta_es.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    rule = _load(RULES[args.rule])
    if args.rule == "open":
        rule.CARRY = args.gru  # the sizes this run uses (the module's own constants are the defaults)
    if args.from_upstream is not None:
        weights = from_upstream(args.from_upstream, rule, args.hidden, args.gru)
        args.out.write_text(render(weights, command, f"OPEN's published weights {args.from_upstream.name}, "
                                   "not trained here", args.rule, (args.hidden, args.gru)))
        print(f"wrote {args.out}")
        return 0
    cfg, env = ppo_setup(args)
    harness = _load("harness")
    key = jax.random.key(args.seed)
    key, init_key = jax.random.split(key)
    mean = rule.zero_weights(args.hidden, args.gru) if args.rule == "open" else rule.init_weights(init_key, args.hidden)
    es = make_strategy(args, mean)
    params = es.default_params
    state = es.init(key, mean, params)
    fitness = make_fitness(cfg, env, rule, harness, args.fitness)
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
    summary = (f"{args.generations} generations of OpenAI-ES, {args.popsize} members x {args.seeds} seeds, "
               f"{cfg.total_timesteps} {env.name} steps; {args.fitness} training return of the ES mean before "
               f"the last step {mean_score:.2f}")
    args.out.write_text(render(weights, command, summary, args.rule, (args.hidden, args.gru)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
