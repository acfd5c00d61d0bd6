"""Behaviour distillation (HaDES, Lupu et al. 2024) for the `hades` template: MinAtar, behaviour cloning, the ES loop.

HaDES searches a tiny synthetic data set of states and action labels with an evolution strategy; a candidate
data set's fitness is the return of a policy trained on it by behaviour cloning. Written after the upstream code,
FLAIROx/behaviour-distillation @a600a5a (Apache-2.0), policy_distillation/distill_minatar.py
(tests/test_hades_fidelity.py transcribes it). Used by both sides of sealed evaluation:

- Training (harness, and in process for tests): `make_distill(config, distiller)` returns `distill(rng)`, one
  ES run: each generation asks the distiller's ES for a population of genomes, decodes each into a data set,
  trains `rollouts` fresh MLPs on it by behaviour cloning (`make_bc`) and plays each for `eval_steps` steps in
  `eval_envs` environments (`fitness_return`: upstream's fitness, the return of the last episode each
  environment finished), and tells the ES the mean. The distiller is five functions (`Distiller`): from a
  candidate's exports in the harness, from Python in tests. Seeds are a jax.vmap away.
- Scoring (evaluator, trusted): `episode_returns` plays one whole episode per environment with a policy the
  evaluator trained itself (`make_bc`) on an exported data set (`load_dataset`: checked shapes and bounds).

Observations are upstream's: SpaceInvaders-MinAtar's 10 x 10 x 6 grid, flattened, normalised by upstream's own
per-feature statistics (normalize_params/{mean,var}_SpaceInvaders-MinAtar.npy, shipped here as
minatar_obs_norm.npz) as (x - mean) / sqrt(var + 1e-8): the synthetic states live in that normalised space.
"""

from __future__ import annotations

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
    end) and average, over environments, the return of the last episode each finished (0 if none did: what
    purejaxrl's LogWrapper reports as returned_episode_returns at the last step)."""
    reset_key, key = jax.random.split(key)
    obs, state = jax.vmap(env.reset)(jax.random.split(reset_key, num_envs))
    zeros = jnp.zeros(num_envs)

    def step(carry, _):
        obs, state, ret, last, key = carry
        key, act_key, step_key = jax.random.split(key, 3)
        action = jax.random.categorical(act_key, apply(params, obs))
        obs, state, reward, done, _ = jax.vmap(env.step)(jax.random.split(step_key, num_envs), state, action)
        ret = ret + reward
        return (obs, state, jnp.where(done, 0.0, ret), jnp.where(done, ret, last), key), None

    (_, _, _, last, _), _ = jax.lax.scan(step, (obs, state, zeros, zeros, key), None, num_steps)
    return last.mean()


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


# ------------------------------------------------------------------------------------------------ the ES loop


class Distiller(NamedTuple):
    """The editable distiller's five functions (keys as uint32[2] key data, ES state as a list of arrays):
    init(key) -> state; ask(key, state) -> population [P, N]; decode(genome [N]) -> (states [D, obs], labels
    [D, A]); tell(population, fitness [P], state) -> state (fitness: returns, higher is better); result(state) ->
    the genome [N] to export. fixed_init: HaDES-F (every inner policy starts from one initialisation) rather than
    HaDES-R (a fresh one for each)."""

    init: Any
    ask: Any
    decode: Any
    tell: Any
    result: Any
    fixed_init: bool = False


def make_distill(config: DistillConfig, distiller: Distiller, progress=None):
    """Return distill(rng) -> {"states", "labels", "fitness_mean", "fitness_max", "bc_loss"}: one ES run.

    Per generation (upstream's main): ask, decode every genome, train `rollouts` BC policies per data set with keys
    shared by the whole population (upstream's batch_rng, in_axes None) and average their fitness_return; tell.
    """
    env = make_env(config.env)
    policy, bc = make_bc(config.bc, env.num_actions, env.obs_size)

    def fitness(key, init_key, states, labels):
        params, loss = bc(init_key, states, labels)
        return fitness_return(env, policy.apply, params, key, config.eval_envs, config.eval_steps), loss

    def distill(rng):
        rng, init_key, fixed_key = jax.random.split(rng, 3)
        state = distiller.init(jax.random.key_data(init_key))

        def generation(carry, g):
            state, rng = carry
            rng, ask_key, eval_key = jax.random.split(rng, 3)
            population = distiller.ask(jax.random.key_data(ask_key), state)
            states, labels = jax.vmap(distiller.decode)(population)
            keys = jax.random.split(eval_key, config.rollouts)
            init_keys = jnp.broadcast_to(fixed_key, keys.shape) if distiller.fixed_init else jax.vmap(
                lambda k: jax.random.fold_in(k, 1))(keys)
            per_rollout = jax.vmap(jax.vmap(fitness, (0, 0, None, None)), (None, None, 0, 0))
            fit, loss = per_rollout(keys, init_keys, states, labels)  # [P, rollouts]
            fit = fit.mean(-1)
            state = distiller.tell(population, fit, state)
            if progress is not None:
                jax.debug.callback(progress, g)
            return (state, rng), (fit.mean(), fit.max(), loss.mean())

        (state, _), (mean, best, loss) = jax.lax.scan(generation, (state, rng), jnp.arange(config.generations))
        states, labels = distiller.decode(distiller.result(state))
        return {"states": states, "labels": labels, "fitness_mean": mean, "fitness_max": best, "bc_loss": loss}

    return distill


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

FUNCTIONS = {"init": 1, "ask": 2, "decode": 1, "tell": 3, "result": 1}  # the distiller's functions, their arities


def import_distiller(path: str | Path, population: int):
    """Import the candidate distiller (tracer only), set its POPULATION, check its functions; fail() otherwise.
    Returns a Distiller of the module's Python functions."""
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
    fixed = getattr(module, "FIXED_INIT", False)
    if not isinstance(fixed, bool):
        sealed.fail(f"candidate {name}: FIXED_INIT must be True or False, not {fixed!r}")
    module.POPULATION = population
    fns = {f: sealed.check_function(module, f, n, name) for f, n in FUNCTIONS.items()}
    return Distiller(**fns, fixed_init=fixed)


def _shape_of(what: str, fn, *args):
    try:
        return jax.eval_shape(fn, *args)
    except Exception as e:  # noqa: BLE001 - any tracing error is the candidate's
        sealed.fail(f"{what} raised while being traced: {sealed.describe(e)}")


def export_distiller(distiller: Distiller, config: DistillConfig, out: str | Path) -> None:
    """Export the distiller's functions as StableHLO (no derivatives: nothing differentiates them) into out, and
    its manifest {"fixed_init": bool}. Shapes are checked here for a clear message; the harness checks again."""
    from jax_workloads import exported

    key = exported.spec((2,), jnp.uint32)
    state = _shape_of("init(key)", distiller.init, key)
    population = _shape_of("ask(key, state)", distiller.ask, key, state)
    if not (hasattr(population, "shape") and population.ndim == 2 and population.shape[0] == config.population):
        sealed.fail(f"ask must return a population [{config.population}, N], not {_describe_specs(population)}")
    genome = exported.spec(population.shape[1:], population.dtype)
    fitness = exported.spec((config.population,), jnp.float32)
    after = _shape_of("tell(population, fitness, state)", distiller.tell, population, fitness, state)
    if jax.tree.structure(after) != jax.tree.structure(state) or _describe_specs(after) != _describe_specs(state):
        sealed.fail(f"tell must return the state as init makes it ({_describe_specs(state)}), "
                    f"not {_describe_specs(after)}")
    for name, fn, args in (("init", distiller.init, (key,)), ("ask", distiller.ask, (key, state)),
                           ("decode", distiller.decode, (genome,)), ("tell", distiller.tell, (population, fitness,
                                                                                               state)),
                           ("result", distiller.result, (state,))):
        exported.export_function(fn, args, Path(out) / name, name=name, vjp=False)
    exported.write_manifest(out, {"fixed_init": distiller.fixed_init})


def _describe_specs(tree) -> str:
    return str(jax.tree.map(lambda s: f"{jnp.dtype(s.dtype).name}{list(s.shape)}", tree))


def load_distiller(directory: str | Path) -> Distiller:
    """The tracer's exports as a Distiller (harness): each checked to be plain computation; the manifest's
    fixed_init checked to be a bool."""
    from jax_workloads import exported

    try:
        fns = {f: exported.import_function(Path(directory) / f) for f in FUNCTIONS}
        fixed = exported.read_manifest(directory).get("fixed_init", False)
    except ArtifactError as e:
        sealed.fail(f"the traced distiller was refused: {e}")
    if not isinstance(fixed, bool):
        sealed.fail(f"the traced distiller was refused: its manifest's fixed_init is {fixed!r}, not a bool")
    return Distiller(**fns, fixed_init=fixed)


def gate(distiller: Distiller, config: DistillConfig) -> None:
    """One generation of the distiller without the fitness (init, ask, decode of every member, tell with made-up
    fitness, result, decode), at the real shapes, compiled cheaply once (sealed.run_once): shapes, dtypes,
    finiteness, the data set's size and labels, before the ES loop is compiled."""
    env_obs, env_actions = make_env(config.env).obs_size, ppo.gymnax_env(config.env).num_actions

    def probe(key):
        k_init, k_ask, k_fit = jax.random.split(key, 3)
        state = distiller.init(jax.random.key_data(k_init))
        population = distiller.ask(jax.random.key_data(k_ask), state)
        states, labels = jax.vmap(distiller.decode)(population)
        fitness = jax.random.uniform(k_fit, (population.shape[0],), maxval=10.0)
        after = distiller.tell(population, fitness, state)
        final = distiller.decode(distiller.result(after))
        return population, states, labels, after, final

    try:
        population, states, labels, after, (s, a) = sealed.run_once(probe, jax.random.key(0))
    except Exception as e:  # noqa: BLE001 - the exports are the candidate's
        sealed.fail(f"the distiller failed its gate: {sealed.describe(e)}")
    if population.shape[0] != config.population:
        sealed.fail(f"ask returned {population.shape[0]} members, not [config.es] population = {config.population}")
    for what, x in (("ask's population", population), ("decode's states", states), ("decode's labels", labels),
                    ("tell's state", after), ("result's data set", (s, a))):
        if not all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(x)
                   if jnp.issubdtype(leaf.dtype, jnp.floating)):
            sealed.fail(f"the distiller failed its gate: {what} holds NaN or infinite values")
    if s.dtype != jnp.float32 or a.dtype != jnp.float32:
        sealed.fail(f"decode must return float32 states and labels, not {s.dtype} and {a.dtype}")
    try:
        check_dataset(np.asarray(s)[None], np.asarray(a)[None], env_obs, env_actions, config.max_dataset_size)
        check_dataset(np.asarray(states[:1]), np.asarray(labels[:1]), env_obs, env_actions, config.max_dataset_size)
    except ArtifactError as e:
        sealed.fail(f"the distiller failed its gate: decode's data set: {e}")
