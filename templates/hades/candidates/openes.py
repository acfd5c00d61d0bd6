"""The hades template's editable module: the distiller (ES settings, fitness shaping).

Behaviour distillation (HaDES, Lupu et al., ICLR 2024) searches a tiny synthetic data set of states and action
labels with an evolution strategy; a data set's fitness is the return of a policy trained on it by behaviour
cloning. The harness owns the search (jax_workloads/hades.py): the genome (D states of 600 features, then D x 4
label logits when labels are learned), the ES mean (it starts at 0, the mean observation), the population's noise
and the updates of SNES and OpenES. The distiller chooses, within the ranges the harness checks:

- DATASET_SIZE: D, 1 <= D <= [config.es] max_dataset_size (64); LEARN_LABELS: softmax labels from the genome's
  tail instead of upstream's fixed one-hots (D // 4 per action); STRATEGY: "snes" or "openes"; SIGMA_INIT in
  [0.001, 10]; OPENES_LR in [0.0001, 1] (OpenES's Adam on the mean); FIXED_INIT: HaDES-F (True: every inner
  policy starts from one initialisation) or HaDES-R (False: a fresh one each);
- shape(fitness [P], generation) -> weights [P]: the fitness shaping, traced and exported. fitness are the
  returns of the population's members (higher is better); a member's weight is how far the mean moves toward it
  (SNES: mean += sigma * sum w eps, sigma *= exp(lr_sigma / 2 * sum w (eps^2 - 1)), the weights rescaled so that
  sum |w| <= 1; OpenES: Adam ascends sum w eps / (P sigma), the weights clipped to +-1e4). Non-finite weights
  count 0.

Any other code may change; any other function is ignored (the harness never calls it). The constants below are
the knobs the LLM-free proposer turns (search_space.py).

This distiller: HaDES-R, D=16 fixed one-hot labels, OpenES sigma 0.5 Adam lr 0.05.
"""

import jax
import jax.numpy as jnp

DATASET_SIZE = 16  # D: synthetic state-action pairs
LEARN_LABELS = False  # evolve the labels (softmax of learned logits) instead of fixing them to one-hots
STRATEGY = "openes"  # "snes" or "openes"
SIGMA_INIT = 0.5  # the search distribution's initial standard deviation
TEMPERATURE = 20.0  # SNES: rank weights softmax(-T * centred rank)
OPENES_LR = 0.05  # OpenES: Adam's learning rate on the mean (beta1 0.99, beta2 0.999 as evosax 0.1)
FIXED_INIT = False  # HaDES-F (True) or HaDES-R (False)


def shape(fitness, generation):
    """The weights [P] of the members from their returns [P]: SNES's rank weights at TEMPERATURE as evosax 0.1
    computed them (ties broken by position: evosax 0.3's average ranks would give tied members one weight), or
    OpenES's raw fitness (evosax 0.1's OpenES shapes nothing)."""
    if STRATEGY == "openes":
        return fitness
    p = fitness.shape[0]
    ranks = jnp.argsort(jnp.argsort(-fitness))  # 0 = the best member
    centred = jnp.arange(p) / (p - 1) - 0.5
    return jax.nn.softmax(-TEMPERATURE * centred)[ranks]
