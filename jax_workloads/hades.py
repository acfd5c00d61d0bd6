"""Behaviour distillation (HaDES, Lupu et al. 2024) for the `hades` template: MinAtar, behaviour cloning, the ES loop.

HaDES searches a tiny synthetic data set of states and action labels with an evolution strategy; a candidate
data set's fitness is the return of a policy trained on it by behaviour cloning. Written after the upstream code,
FLAIROx/behaviour-distillation @a600a5a (Apache-2.0), policy_distillation/distill_minatar.py
(tests/test_hades_fidelity.py transcribes it). Used by both sides of sealed evaluation:

- Training (harness, and in process for tests): `make_distill(config, distiller)` returns `distill(rng)`, one ES run
  in one program; `run_distill` runs the same steps (`make_generation`) for all seeds as three programs a
  generation, the costly one free of the candidate's functions (compiled once, then cached). Each generation samples
  a population of genomes around the ES mean (`es_ask`), decodes each into a data set (`decode`), trains `rollouts`
  fresh MLPs on it by behaviour cloning (`make_bc`) and plays each for `eval_steps` steps in `eval_envs`
  environments (`fitness_return`: upstream's fitness, the return of the last episode each environment finished),
  turns the fitness into weights with the candidate's `shape` and updates the ES (`es_tell`: SNES or OpenES, written
  here). The candidate (`Distiller`) is that one shaping function and its declared constants (`ESSpec`, checked by
  `es_spec`): from its export in the harness, from Python in tests; everything that could set the artifact (the
  genome's layout, the mean's start, the noise, the updates) is here. Seeds are a jax.vmap away.
- Scoring (evaluator, trusted): `episode_returns` plays one whole episode per environment with a policy the
  evaluator trained itself (`make_bc`) on an exported data set (`load_dataset`: checked shapes and bounds).

Observations are upstream's: SpaceInvaders-MinAtar's 10 x 10 x 6 grid, flattened, normalised by upstream's own
per-feature statistics (normalize_params/{mean,var}_SpaceInvaders-MinAtar.npy, shipped here as
minatar_obs_norm.npz) as (x - mean) / sqrt(var + 1e-8): the synthetic states live in that normalised space.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax_workloads import ppo, sealed
from jax_workloads.sealed import ArtifactError, load_arrays

NORM_FILE = Path(__file__).with_name("minatar_obs_norm.npz")
DATASET_FILE = "dataset.npz"
STATE_BOUND = 1e4  # |state| above this is no observation the normalised environment shows (its largest: 9,995)
LABEL_TOLERANCE = 1e-3  # labels are distributions over actions: rows sum to 1 within this, none negative


@dataclass(frozen=True)
class BCConfig:
    """The behaviour-cloning inner loop (upstream's make_train): an MLP trained by Adam on the whole data set."""

    width: int = 512  # upstream --width
    layers: int = 2  # BCAgent: two hidden layers
    activation: str = "relu"  # upstream --activation
    lr: float = 0.03  # upstream --lr
    steps: int = 32  # upstream --epochs: full-batch Adam steps
    adam_eps: float = 1e-5


@dataclass(frozen=True)
class DistillConfig:
    """The ES loop (upstream's main) and its fitness rollouts."""

    env: str = "SpaceInvaders-MinAtar"
    population: int = 2048  # upstream --popsize
    generations: int = 2000  # upstream --generations
    rollouts: int = 2  # upstream --rollouts: BC policies trained per candidate data set
    eval_envs: int = 8  # upstream --eval_envs
    eval_steps: int = 1024  # upstream --num_steps
    max_dataset_size: int = 64  # the most state-action pairs a distiller may make (the artifact's bound)
    bc: BCConfig = BCConfig()


def distill_config(config: dict) -> DistillConfig:
    """[config] (config.json's "config") as a DistillConfig; unknown or missing keys raise TypeError/KeyError."""
    es = dict(config["es"])
    return DistillConfig(env=config["env"], bc=BCConfig(**config["bc"]), **es)


# ------------------------------------------------------------------------------------------------ environment


def obs_norm(env_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Upstream's per-feature observation mean and variance for env_name (flat)."""
    with np.load(NORM_FILE, allow_pickle=False) as data:
        if f"{env_name}/mean" not in data.files:
            raise ValueError(f"no observation statistics for {env_name!r} (have: "
                             f"{sorted({k.split('/')[0] for k in data.files})})")
        return data[f"{env_name}/mean"], data[f"{env_name}/var"]


def make_env(env_name: str) -> ppo.Env:
    """The gymnax MinAtar environment with flat observations normalised as upstream's TransformObservation."""
    base = ppo.gymnax_env(env_name)
    mean, var = obs_norm(env_name)
    mean, scale = jnp.asarray(mean), jnp.asarray(1.0 / np.sqrt(var + 1e-8), jnp.float32)

    def norm(obs):
        return (obs - mean) * scale

    def reset(key):
        obs, state = base.reset(key)
        return norm(obs), state

    def step(key, state, action):
        obs, state, reward, done, solved = base.step(key, state, action)
        return norm(obs), state, reward, done, solved

    return base._replace(reset=reset, step=step)


# ------------------------------------------------------------------------------------------------ behaviour cloning

_ACTIVATIONS = {"relu": nn.relu, "tanh": nn.tanh, "gelu": nn.gelu}


class BCPolicy(nn.Module):
    """Upstream's BCAgent (PureJaxRL's MinAtar actor): Dense layers with orthogonal(sqrt 2) kernels, a head with
    orthogonal(0.01), zero biases; returns action logits."""

    num_actions: int
    width: int = 512
    layers: int = 2
    activation: str = "relu"

    @nn.compact
    def __call__(self, x):
        act = _ACTIVATIONS[self.activation]
        for _ in range(self.layers):
            x = act(nn.Dense(self.width, kernel_init=nn.initializers.orthogonal(np.sqrt(2)),
                             bias_init=nn.initializers.zeros)(x))
        return nn.Dense(self.num_actions, kernel_init=nn.initializers.orthogonal(0.01),
                        bias_init=nn.initializers.zeros)(x)


def bc_loss(logits, labels):
    """Upstream's loss: -mean(log pi(a|s) * label) over the data set and the actions (cross-entropy / actions)."""
    return -jnp.mean(jax.nn.log_softmax(logits) * labels)


def make_bc(config: BCConfig, num_actions: int, obs_size: int):
    """Return (policy, bc(init_key, states [D, obs], labels [D, A]) -> (params, final loss)).

    Adam at a constant config.lr: upstream anneals with frac = 1 - count // steps, which is 1 for every one of its
    `steps` updates (integer division), so its schedule is constant. Upstream also permutes the data each step;
    the full-batch mean loss does not depend on the order, so we do not.
    """
    policy = BCPolicy(num_actions, config.width, config.layers, config.activation)
    tx = optax.adam(config.lr, eps=config.adam_eps)

    def bc(init_key, states, labels):
        params = policy.init(init_key, jnp.zeros((1, obs_size)))
        opt_state = tx.init(params)

        def step(carry, _):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(lambda p: bc_loss(policy.apply(p, states), labels))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(step, (params, opt_state), None, config.steps)
        return params, losses[-1]

    return policy, bc


# ------------------------------------------------------------------------------------------------ rollouts


def fitness_return(env: ppo.Env, apply, params, key, num_envs: int, num_steps: int):
    """Upstream's fitness: sample actions for num_steps steps in num_envs environments (episodes reset as they
    end) and average, over environments, the return of the last episode each finished (purejaxrl's LogWrapper
    returned_episode_returns at the last step). An environment that finished no episode within num_steps counts
    its running return, where upstream counts 0: at upstream's 1024 steps that is rare, but at the cpu profile's
    128 a policy that survives longer would score below one that dies at once, the opposite of the evaluator's
    whole-episode return."""
    reset_key, key = jax.random.split(key)
    obs, state = jax.vmap(env.reset)(jax.random.split(reset_key, num_envs))
    zeros = jnp.zeros(num_envs)

    def step(carry, _):
        obs, state, ret, last, finished, key = carry
        key, act_key, step_key = jax.random.split(key, 3)
        action = jax.random.categorical(act_key, apply(params, obs))
        obs, state, reward, done, _ = jax.vmap(env.step)(jax.random.split(step_key, num_envs), state, action)
        ret = ret + reward
        return (obs, state, jnp.where(done, 0.0, ret), jnp.where(done, ret, last), finished | done, key), None

    init = (obs, state, zeros, zeros, jnp.zeros(num_envs, bool), key)
    (_, _, running, last, finished, _), _ = jax.lax.scan(step, init, None, num_steps)
    return jnp.where(finished, last, running).mean()


def episode_returns(env: ppo.Env, apply, params, key, num_envs: int, max_steps: int):
    """The evaluator's measure: one whole episode per environment (sampled actions), its return [num_envs].

    Stops once every episode has ended (a while loop: short episodes cost what they take), or after max_steps,
    which should be at least the environment's episode limit (MinAtar's 1000) so that every episode ends."""
    reset_key, key = jax.random.split(key)
    obs, state = jax.vmap(env.reset)(jax.random.split(reset_key, num_envs))

    def step(carry):
        t, obs, state, ret, alive, key = carry
        key, act_key, step_key = jax.random.split(key, 3)
        action = jax.random.categorical(act_key, apply(params, obs))
        obs, state, reward, done, _ = jax.vmap(env.step)(jax.random.split(step_key, num_envs), state, action)
        return t + 1, obs, state, ret + alive * reward, alive * (1.0 - done), key

    def running(carry):
        return (carry[0] < max_steps) & jnp.any(carry[4] > 0)

    init = (0, obs, state, jnp.zeros(num_envs), jnp.ones(num_envs), key)
    return jax.lax.while_loop(running, step, init)[3]


# ------------------------------------------------------------------------------------------------ the ES (harness)
#
# The harness owns everything that could set the artifact: the genome's layout and decoding, the ES mean's
# initialisation (zeros), the population's noise (drawn from the harness's key) and both ES updates. The candidate
# declares constants from the ranges below (its manifest, checked here) and one traced function,
# shape(fitness [P], generation) -> weights [P], its fitness shaping. It never sees the noise, the mean or sigma:
# the mean moves only along the noise the harness drew, weighted by what the candidate made of the fitness.

OBS_SIZE, NUM_ACTIONS = 600, 4  # SpaceInvaders-MinAtar: a 10 x 10 x 6 grid, 4 actions
STRATEGIES = ("snes", "openes")
SIGMA_RANGE = (1e-3, 10.0)  # the search distribution's initial standard deviation
OPENES_LR_RANGE = (1e-4, 1.0)  # OpenES's Adam learning rate on the mean
OPENES_ADAM = (0.99, 0.999, 1e-8)  # evosax 0.1's OpenES Adam: beta1, beta2, eps (upstream's)
WEIGHT_CLIP = 1e4  # OpenES: |weight| bound (Adam divides by the RMS of the gradient: only finiteness is at stake)


@dataclass(frozen=True)
class ESSpec:
    """The candidate's declared constants (its manifest), checked by `es_spec`: the data set's size D, learned
    labels or upstream's fixed one-hots, SNES or OpenES, the initial sigma, OpenES's Adam rate, HaDES-F or -R."""

    dataset_size: int = 16
    learn_labels: bool = False
    strategy: str = "snes"
    sigma_init: float = 0.5
    openes_lr: float = 0.05
    fixed_init: bool = False

    @property
    def num_dims(self) -> int:
        """The genome's length: D states of OBS_SIZE, then D x NUM_ACTIONS label logits when labels are learned."""
        return self.dataset_size * (OBS_SIZE + (NUM_ACTIONS if self.learn_labels else 0))


# The candidate's constants: manifest key -> the name distiller.py gives it.
CONSTANTS = {"dataset_size": "DATASET_SIZE", "learn_labels": "LEARN_LABELS", "strategy": "STRATEGY",
             "sigma_init": "SIGMA_INIT", "openes_lr": "OPENES_LR", "fixed_init": "FIXED_INIT"}


def es_spec(values: dict, max_dataset_size: int) -> ESSpec:
    """The declared constants {manifest key: value} as an ESSpec; ValueError (one line, naming the constant as
    distiller.py spells it) when one is missing, of the wrong type or out of its range."""
    missing = [CONSTANTS[k] for k in CONSTANTS if k not in values]
    if missing:
        raise ValueError(f"{missing[0]} is not defined")
    unknown = sorted(set(values) - set(CONSTANTS))
    if unknown:
        raise ValueError(f"unknown constant {unknown[0]!r}")
    v = values

    def number(key, low, high):
        x = v[key]
        if isinstance(x, bool) or not isinstance(x, int | float) or not low <= x <= high:
            raise ValueError(f"{CONSTANTS[key]} must be a number in [{low:g}, {high:g}], not {x!r}")
        return float(x)

    for key in ("learn_labels", "fixed_init"):
        if not isinstance(v[key], bool):
            raise ValueError(f"{CONSTANTS[key]} must be True or False, not {v[key]!r}")
    size = v["dataset_size"]
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= max_dataset_size:
        raise ValueError(f"DATASET_SIZE must be an integer in [1, {max_dataset_size}] ([config.es] "
                         f"max_dataset_size), not {size!r}")
    if v["strategy"] not in STRATEGIES:
        raise ValueError(f"STRATEGY must be one of {STRATEGIES}, not {v['strategy']!r}")
    return ESSpec(dataset_size=size, learn_labels=v["learn_labels"], strategy=v["strategy"],
                  sigma_init=number("sigma_init", *SIGMA_RANGE), openes_lr=number("openes_lr", *OPENES_LR_RANGE),
                  fixed_init=v["fixed_init"])


def decode(spec: ESSpec, genome):
    """The genome [N] as (states [D, 600], labels [D, 4]): its first D x 600 entries are the states; the labels are
    upstream's fixed targets (D // 4 one-hots per action, in action order: init_params), or with learn_labels the
    softmax of the genome's tail."""
    d = spec.dataset_size
    states = genome[: d * OBS_SIZE].reshape(d, OBS_SIZE)
    if spec.learn_labels:
        labels = jax.nn.softmax(genome[d * OBS_SIZE:].reshape(d, NUM_ACTIONS), axis=-1)
    else:
        labels = jax.nn.one_hot(jnp.arange(d) * NUM_ACTIONS // d, NUM_ACTIONS)
    return states, labels


class ESState(NamedTuple):
    """The harness's ES state: the mean, the per-dimension sigma, and OpenES's Adam moments and step count (zeros
    and unused under SNES)."""

    mean: Any
    sigma: Any
    m: Any
    v: Any
    count: Any


def es_init(spec: ESSpec) -> ESState:
    """The mean at 0 (the mean observation: upstream's init_params), sigma at sigma_init."""
    zeros = jnp.zeros(spec.num_dims)
    return ESState(zeros, jnp.full(spec.num_dims, spec.sigma_init, jnp.float32), zeros, zeros, jnp.zeros((), jnp.int32))


def es_ask(spec: ESSpec, key, state: ESState, population: int):
    """mean + sigma * eps, eps drawn here from the harness's key: N(0, 1) for SNES, antithetic (eps, -eps) halves for
    OpenES; the same draws as evosax's SNES and Open_ES (0.1 and 0.3) from the same key."""
    if spec.strategy == "openes":
        half = jax.random.normal(key, (population // 2, spec.num_dims))
        eps = jnp.concatenate([half, -half])
    else:
        eps = jax.random.normal(key, (population, spec.num_dims))
    return state.mean + state.sigma * eps


def bound_weights(spec: ESSpec, weights):
    """The candidate's weights made safe: non-finite ones count 0 (the gate refuses a shape that gives any on its
    made-up fitness); SNES's rescaled so that sum |w| <= 1 (its steps are linear in w: at most one sigma-scaled
    noise vector per generation, as the rank weights evosax uses, which sum to 1); OpenES's clipped to
    +-WEIGHT_CLIP (Adam divides the gradient by its RMS, so the scale does not move the mean; the clip keeps the
    sums finite)."""
    weights = jnp.where(jnp.isfinite(weights), weights, 0.0).astype(jnp.float32)
    if spec.strategy == "openes":
        return jnp.clip(weights, -WEIGHT_CLIP, WEIGHT_CLIP)
    return weights / jnp.maximum(1.0, jnp.abs(weights).sum())


def snes_update(state: ESState, population, weights) -> ESState:
    """SNES (evosax 0.1's tell, lr 1 on the mean): mean += sigma * sum w z, sigma *= exp(lr_sigma / 2 * sum w (z^2 - 1))
    with lr_sigma = (3 + log N) / (5 sqrt N); z as evosax computes it, from the population. w: higher is better."""
    n = state.mean.shape[0]
    lr_sigma = (3 + jnp.log(n)) / (5 * jnp.sqrt(n))
    z = (population - state.mean) / state.sigma
    mean = state.mean + state.sigma * jnp.dot(weights, z)
    sigma = state.sigma * jnp.exp(0.5 * lr_sigma * jnp.dot(weights, z**2 - 1))
    return state._replace(mean=mean, sigma=sigma)


def openes_update(state: ESState, population, weights, lr: float) -> ESState:
    """OpenES (evosax 0.1): gradient dot(w, z) / (P sigma) ascended by Adam (OPENES_ADAM, bias-corrected by the step
    count) at rate lr; sigma constant (upstream's --sigma_decay 1)."""
    b1, b2, eps = OPENES_ADAM
    z = (population - state.mean) / state.sigma
    grad = -jnp.dot(weights, z) / (population.shape[0] * state.sigma)  # descended: the negated ascent direction
    count = state.count + 1
    m = (1 - b1) * grad + b1 * state.m
    v = (1 - b2) * grad**2 + b2 * state.v
    m_hat, v_hat = m / (1 - b1**count), v / (1 - b2**count)
    mean = state.mean - lr * m_hat / (jnp.sqrt(v_hat) + eps)
    return state._replace(mean=mean, m=m, v=v, count=count)


def es_tell(spec: ESSpec, state: ESState, population, weights) -> ESState:
    """One ES update from the candidate's (bounded) weights."""
    weights = bound_weights(spec, weights)
    if spec.strategy == "openes":
        return openes_update(state, population, weights, spec.openes_lr)
    return snes_update(state, population, weights)


# ------------------------------------------------------------------------------------------------ the ES loop


class Distiller(NamedTuple):
    """The candidate distiller as the harness runs it: its declared constants (ESSpec, checked) and its fitness
    shaping shape(fitness [P] float32, generation int32[]) -> weights [P] (fitness: returns, higher is better;
    weights: higher moves the mean toward that member), from the tracer's export in the harness, from Python in
    tests."""

    shape: Any
    spec: ESSpec = ESSpec()


class Generation(NamedTuple):
    """One ES generation in three steps, each jittable and vmappable over seeds (make_generation).

    The costly middle step, `fitness` (behaviour cloning and rollouts of the whole population), takes the decoded
    data sets as plain arrays and runs no function of the candidate's: the harness compiles it as a program of its
    own, which the compilation cache then serves to every candidate of the same data set size (the runner starts a
    candidate's cache from the shipped candidate's). `ask` and `tell` hold what the candidate decides.
    """

    start: Any    # (rng) -> (ES state, rng, fixed_key)
    ask: Any      # (state, rng, fixed_key) -> (population [P, N], (keys, init_keys, states, labels), rng)
    fitness: Any  # (keys, init_keys, states [P, D, obs], labels [P, D, A]) -> (fitness [P], bc loss [])
    tell: Any     # (state, population, fitness [P], generation) -> state
    finish: Any   # (state) -> {"states", "labels"}: the final mean, decoded


def make_generation(config: DistillConfig, distiller: Distiller, fitness_fn=None) -> Generation:
    """The steps of one generation (upstream's main): sample the population (es_ask) and decode every genome
    (decode); train `rollouts` BC policies per data set with keys shared by the whole population (upstream's
    batch_rng, in_axes None) and average their fitness_return; turn the fitness into weights with the candidate's
    shape and move the ES (es_tell). fitness_fn(key, init_key, states, labels) -> (fitness, bc loss) replaces the
    BC-and-rollouts fitness (tests: a cheap one)."""
    spec = distiller.spec
    if fitness_fn is None:
        env = make_env(config.env)
        policy, bc = make_bc(config.bc, env.num_actions, env.obs_size)

        def fitness_fn(key, init_key, states, labels):
            params, loss = bc(init_key, states, labels)
            return fitness_return(env, policy.apply, params, key, config.eval_envs, config.eval_steps), loss

    def start(rng):
        # The second key initialised the ES when the distiller did (the mean starts at 0 and draws nothing); it
        # is still split off so that every later key is the one the earlier runs drew.
        rng, _, fixed_key = jax.random.split(rng, 3)
        return es_init(spec), rng, fixed_key

    def ask(state, rng, fixed_key):
        rng, ask_key, eval_key = jax.random.split(rng, 3)
        population = es_ask(spec, ask_key, state, config.population)
        states, labels = jax.vmap(lambda genome: decode(spec, genome))(population)
        keys = jax.random.split(eval_key, config.rollouts)
        init_keys = jnp.broadcast_to(fixed_key, keys.shape) if spec.fixed_init else jax.vmap(
            lambda k: jax.random.fold_in(k, 1))(keys)
        return population, (keys, init_keys, states, labels), rng

    def fitness(keys, init_keys, states, labels):
        per_rollout = jax.vmap(jax.vmap(fitness_fn, (0, 0, None, None)), (None, None, 0, 0))
        fit, loss = per_rollout(keys, init_keys, states, labels)  # [P, rollouts]
        return fit.mean(-1), loss.mean()

    def tell(state, population, fit, g):
        return es_tell(spec, state, population, distiller.shape(fit, g))

    def finish(state):
        states, labels = decode(spec, state.mean)
        return {"states": states, "labels": labels}

    return Generation(start, ask, fitness, tell, finish)


def make_distill(config: DistillConfig, distiller: Distiller, progress=None, fitness_fn=None):
    """Return distill(rng) -> {"states", "labels", "fitness_mean", "fitness_max", "bc_loss"}: one ES run in one
    program (the generations a lax.scan of make_generation's steps), for tests and in-process use. The harness
    runs the same steps as separate programs (run_distill). The exported data set is the final mean, decoded."""
    gen = make_generation(config, distiller, fitness_fn)

    def distill(rng):
        state, rng, fixed_key = gen.start(rng)

        def generation(carry, g):
            state, rng = carry
            population, data, rng = gen.ask(state, rng, fixed_key)
            fit, loss = gen.fitness(*data)
            state = gen.tell(state, population, fit, g)
            if progress is not None:
                jax.debug.callback(progress, g)
            return (state, rng), (fit.mean(), fit.max(), loss)

        (state, _), (mean, best, loss) = jax.lax.scan(generation, (state, rng),
                                                      jnp.arange(config.generations, dtype=jnp.int32))
        return gen.finish(state) | {"fitness_mean": mean, "fitness_max": best, "bc_loss": loss}

    return distill


def run_distill(config: DistillConfig, distiller: Distiller, rngs, progress=None, compiled=None,
                fitness_fn=None) -> dict:
    """Every seed's ES run (rngs [S]), as make_distill computes it, with each generation's steps as three compiled
    programs over all seeds at once; the generations are a Python loop. The fitness program runs nothing of the
    candidate's, so a compilation cache that holds it (the shipped candidate's, for one) spares its compilation.
    progress(g) after each generation; compiled() once every program is compiled (a phase mark); fitness_fn as in
    make_generation."""
    gen = make_generation(config, distiller, fitness_fn)
    start, ask, fitness, finish = (jax.jit(jax.vmap(f)) for f in (gen.start, gen.ask, gen.fitness, gen.finish))
    tell = jax.jit(jax.vmap(gen.tell, (0, 0, 0, None)))
    g0 = jnp.int32(0)
    # Compiled ahead, at abstract shapes, so that the compile phase is timed apart from training.
    state, rng, fixed = jax.eval_shape(start, rngs)
    population, data, _ = jax.eval_shape(ask, state, rng, fixed)
    fit, _ = jax.eval_shape(fitness, *data)
    programs = [f.lower(*args).compile() for f, args in ((start, (rngs,)), (ask, (state, rng, fixed)),
                (fitness, data), (tell, (state, population, fit, g0)), (finish, (state,)))]
    start, ask, fitness, tell, finish = programs
    if compiled is not None:
        compiled()
    state, rng, fixed = start(rngs)
    curves = []
    for g in range(config.generations):
        population, data, rng = ask(state, rng, fixed)
        fit, loss = fitness(*data)
        state = tell(state, population, fit, jnp.int32(g))
        curves.append((fit.mean(-1), fit.max(-1), loss))
        if progress is not None:
            progress(g)
    mean, best, loss = (jnp.stack(c, axis=1) for c in zip(*curves, strict=True))  # [S, G]
    return jax.block_until_ready(finish(state) | {"fitness_mean": mean, "fitness_max": best, "bc_loss": loss})


# ------------------------------------------------------------------------------------------------ the artifact


def check_dataset(states: np.ndarray, labels: np.ndarray, obs_size: int, num_actions: int, max_size: int) -> None:
    """Raise ArtifactError unless states [S, D, obs_size] and labels [S, D, num_actions] are a bounded data set:
    1 <= D <= max_size, |states| <= STATE_BOUND, every label row a distribution over the actions."""
    if states.ndim != 3 or states.shape[2] != obs_size:
        raise ArtifactError(f"states have shape {states.shape}, expected [seeds, D, {obs_size}]")
    if labels.shape != (*states.shape[:2], num_actions):
        raise ArtifactError(f"labels have shape {labels.shape}, expected {(*states.shape[:2], num_actions)}")
    if not 1 <= states.shape[1] <= max_size:
        raise ArtifactError(f"the data set has {states.shape[1]} state-action pairs; at most {max_size} are allowed")
    if np.abs(states).max() > STATE_BOUND:
        raise ArtifactError(f"a state has a feature of magnitude {np.abs(states).max():.3g} > {STATE_BOUND:g}")
    if labels.min() < 0 or np.abs(labels.sum(-1) - 1).max() > LABEL_TOLERANCE:
        raise ArtifactError("labels must be distributions over the actions (non-negative, rows summing to 1)")


def load_dataset(path: str | Path, seeds: int, obs_size: int, num_actions: int, max_size: int) -> dict:
    """The harness's data sets, checked: {"states" [S, D, obs], "labels" [S, D, A]} (float32, finite, bounded)."""
    path = Path(path)
    size = 1  # a file that is no npz of [S, D, obs] states: load_arrays says what is wrong with it
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                if "states" in data.files and data["states"].ndim == 3:
                    size = data["states"].shape[1]
        except Exception:  # noqa: BLE001 - load_arrays below names what is wrong
            pass
    if size > max_size:  # refused with its size, before the checks of its values
        raise ArtifactError(f"the data set has {size} state-action pairs; at most {max_size} are allowed")
    arrays = load_arrays(path, {"states": ((seeds, size, obs_size), "float32"),
                                "labels": ((seeds, size, num_actions), "float32")})
    check_dataset(arrays["states"], arrays["labels"], obs_size, num_actions, max_size)
    return arrays


# ------------------------------------------------------------------------------------------------ sealed exports


def module_constants(module) -> dict:
    """The candidate module's declared constants {manifest key: value} (those it defines; FIXED_INIT defaults to
    HaDES-R)."""
    values = {k: getattr(module, name) for k, name in CONSTANTS.items() if hasattr(module, name)}
    values.setdefault("fixed_init", False)
    return values


def import_distiller(path: str | Path, config: DistillConfig) -> Distiller:
    """Import the candidate distiller (tracer only), check its constants and its shape function; fail() otherwise.
    Its other functions, if it defines any (init, ask, decode, tell, result: the old contract), are ignored."""
    import importlib.util

    module = None
    name = Path(path).name
    try:
        spec = importlib.util.spec_from_file_location("candidate_distiller", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sealed.fail(f"candidate {name} has a syntax error at line {e.lineno}: {e.msg}")
    except Exception as e:  # noqa: BLE001 - any import-time error is the candidate's
        sealed.fail(f"candidate {name} failed to import: {sealed.describe(e)}")
    try:
        es = es_spec(module_constants(module), config.max_dataset_size)
    except ValueError as e:
        sealed.fail(f"candidate {name}: {e}")
    return Distiller(sealed.check_function(module, "shape", 2, name), es)


def _shaping_specs(config: DistillConfig):
    from jax_workloads import exported

    return exported.spec((config.population,), jnp.float32), exported.spec((), jnp.int32)


def export_distiller(distiller: Distiller, config: DistillConfig, out: str | Path) -> None:
    """Export the candidate's shape as StableHLO (no derivatives: nothing differentiates it) into out, with its
    constants as the manifest. The result's shape is checked here for a clear message; the harness checks again."""
    from jax_workloads import exported

    args = _shaping_specs(config)
    try:
        weights = jax.eval_shape(distiller.shape, *args)
    except Exception as e:  # noqa: BLE001 - any tracing error is the candidate's
        sealed.fail(f"shape(fitness, generation) raised while being traced: {sealed.describe(e)}")
    if not (hasattr(weights, "shape") and weights.shape == (config.population,)
            and jnp.issubdtype(weights.dtype, jnp.floating)):
        sealed.fail(f"shape must return float weights [{config.population}] (one per member), not "
                    f"{_describe_specs(weights)}")
    exported.export_function(distiller.shape, args, Path(out) / "shape", name="shape", vjp=False)
    exported.write_manifest(out, dataclasses.asdict(distiller.spec))


def _describe_specs(tree) -> str:
    return str(jax.tree.map(lambda s: f"{jnp.dtype(s.dtype).name}{list(s.shape)}", tree))


def load_distiller(directory: str | Path, config: DistillConfig) -> Distiller:
    """The tracer's exports as a Distiller (harness): shape checked to be plain computation, the manifest's
    constants checked against their ranges (es_spec). Nothing else the tracer wrote is read."""
    from jax_workloads import exported

    try:
        shape = exported.import_function(Path(directory) / "shape")
        es = es_spec(exported.read_manifest(directory), config.max_dataset_size)
    except (ArtifactError, ValueError) as e:
        sealed.fail(f"the traced distiller was refused: {e}")
    return Distiller(shape, es)


def gate(distiller: Distiller, config: DistillConfig) -> None:
    """The candidate's shaping on made-up fitness (ties included) at generations 0 and 1, at the real shapes,
    compiled cheaply once (sealed.run_once): float weights [population], all finite, before the ES loop is
    compiled. (In the loop, non-finite weights count 0: bound_weights.)"""
    env = make_env(config.env)
    if (env.obs_size, env.num_actions) != (OBS_SIZE, NUM_ACTIONS):
        sealed.fail(f"{config.env} has {env.obs_size} features and {env.num_actions} actions; the genome's layout "
                    f"is for {OBS_SIZE} and {NUM_ACTIONS} (SpaceInvaders-MinAtar)")
    if distiller.spec.strategy == "openes" and config.population % 2:
        sealed.fail(f"OpenES samples antithetic pairs: [config.es] population = {config.population} must be even")

    def probe(key):
        fitness = jnp.round(jax.random.uniform(key, (config.population,), maxval=10.0))
        return [distiller.shape(fitness, jnp.int32(g)) for g in (0, 1)]

    try:
        weights = sealed.run_once(probe, jax.random.key(0))
    except Exception as e:  # noqa: BLE001 - the export is the candidate's
        sealed.fail(f"the distiller failed its gate: {sealed.describe(e)}")
    for w in weights:
        if w.shape != (config.population,) or not jnp.issubdtype(w.dtype, jnp.floating):
            sealed.fail(f"the distiller failed its gate: shape returned {jnp.dtype(w.dtype).name}{list(w.shape)}, "
                        f"not float weights [{config.population}]")
        if not np.all(np.isfinite(np.asarray(w))):
            sealed.fail("the distiller failed its gate: shape's weights hold NaN or infinite values")
