"""The hades template's editable module: the distiller (the data set's parametrisation, the ES).

Behaviour distillation (HaDES, Lupu et al., ICLR 2024) searches a tiny synthetic data set of states and action
labels with an evolution strategy; a data set's fitness is the return of a policy trained on it by behaviour
cloning. The harness runs the loop (jax_workloads/hades.py: ask, decode, behaviour cloning and rollouts on
SpaceInvaders-MinAtar, tell) and exports the final data set; a sealed evaluator trains fresh policies of held-out
widths and activations on it and plays its own episodes. Five functions are required (keys are uint32[2] key
data; the ES state is a list of arrays, any shapes, the same structure in and out):

- init(key) -> state
- ask(key, state) -> population [POPULATION, N]      (POPULATION: [config.es] population, the harness's budget)
- decode(genome [N]) -> (states [D, 600], labels [D, 4]): observations in the environment's normalised space
  (upstream's statistics), labels distributions over the 4 actions; 1 <= D <= [config.es] max_dataset_size
- tell(population, fitness [POPULATION], state) -> state: fitness are returns, higher is better
- result(state) -> genome [N]: the data set to export (decoded by decode)

FIXED_INIT (a constant, optional) chooses HaDES-F (True: every inner policy starts from one initialisation) over
HaDES-R (False: a fresh initialisation for every policy trained). The constants below are the knobs the LLM-free
proposer turns (search_space.py); any code may change.

This distiller: HaDES-R, D=16 learned soft labels, SNES sigma 0.5 temperature 20.
"""

import jax
import jax.numpy as jnp
import optax
from evosax.algorithms import SNES, Open_ES

DATASET_SIZE = 16  # D: synthetic state-action pairs
LEARN_LABELS = True  # evolve the labels (softmax of learned logits) instead of fixing them to one-hots
STRATEGY = "snes"  # "snes" or "openes"
SIGMA_INIT = 0.5  # the search distribution's initial standard deviation
TEMPERATURE = 20.0  # SNES: rank weights softmax(-T * centred rank); T = 0: evosax's log-rank weights
OPENES_LR = 0.05  # OpenES: Adam's learning rate on the mean (beta1 0.99, beta2 0.999 as evosax 0.1)
FIXED_INIT = False  # HaDES-F (True) or HaDES-R (False)

OBS_SIZE, NUM_ACTIONS = 600, 4  # SpaceInvaders-MinAtar: a 10 x 10 x 6 grid, 4 actions
POPULATION = 2048  # the paper's; the tracer sets it to [config.es] population before it traces anything
N = DATASET_SIZE * OBS_SIZE + (DATASET_SIZE * NUM_ACTIONS if LEARN_LABELS else 0)


def _rank_weights(population, fitness, state, params):
    """SNES's fitness shaping as evosax 0.1: the weight of each member's rank (0 = best: fitness is minimised)."""
    ranks = jnp.argsort(jnp.argsort(fitness))
    return params.weights[ranks]


def _temperature_weights(p):
    centred = jnp.arange(p) / (p - 1) - 0.5
    return jax.nn.softmax(-TEMPERATURE * centred)


def _strategy(population):
    # Built at each call (the calls are traced once): made inside a trace, a cached strategy would keep its tracers.
    if STRATEGY == "openes":
        es = Open_ES(population, jnp.zeros(N), optimizer=optax.adam(OPENES_LR, b1=0.99, b2=0.999, eps=1e-8),
                     std_schedule=optax.constant_schedule(SIGMA_INIT),
                     fitness_shaping_fn=lambda population, fitness, state, params: fitness)  # raw, as evosax 0.1
        params = es.default_params
    else:
        es = SNES(population, jnp.zeros(N), fitness_shaping_fn=_rank_weights)
        params = es.default_params.replace(std_init=jnp.asarray(SIGMA_INIT))
        if TEMPERATURE > 0:
            params = params.replace(weights=_temperature_weights(population))
    treedef = jax.tree.structure(jax.eval_shape(lambda: es.init(jax.random.key(0), jnp.zeros(N), params)))
    return es, params, treedef


def _state(leaves):
    return jax.tree.unflatten(_strategy(POPULATION)[2], leaves)


def init(key):
    es, params, _ = _strategy(POPULATION)
    return jax.tree.leaves(es.init(jax.random.wrap_key_data(key), jnp.zeros(N), params))


def ask(key, state):
    es, params, _ = _strategy(POPULATION)
    population, _ = es.ask(jax.random.wrap_key_data(key), _state(state), params)
    return population


def tell(population, fitness, state):
    es, params, _ = _strategy(POPULATION)
    # evosax minimises: the negated return
    new, _ = es.tell(jax.random.key(0), population, -fitness, _state(state), params)
    return jax.tree.leaves(new)


def result(state):
    return _state(state).mean


def decode(genome):
    states = genome[: DATASET_SIZE * OBS_SIZE].reshape(DATASET_SIZE, OBS_SIZE)
    if LEARN_LABELS:
        labels = jax.nn.softmax(genome[DATASET_SIZE * OBS_SIZE:].reshape(DATASET_SIZE, NUM_ACTIONS), axis=-1)
    else:  # upstream's fixed targets: D // A one-hots per action, in action order
        labels = jax.nn.one_hot(jnp.arange(DATASET_SIZE) * NUM_ACTIONS // DATASET_SIZE, NUM_ACTIONS)
    return states, labels
