"""Search space of the hades template for the LLM-free (evolutionary) proposer.

A genome is a flat dict of the distiller's knobs, the constants at the top of distiller.py:

    dataset_size   int    D, synthetic state-action pairs, in DATASET_SIZES (HaDES on MinAtar: 16)
    learn_labels   bool   evolve soft labels (softmax of learned logits) instead of fixed one-hots
    strategy       str    "snes" (separable NES, the paper's) or "openes" (OpenAI-ES with Adam)
    sigma_init     float  the search distribution's initial standard deviation (0.5)
    temperature    float  SNES's rank-weight temperature (20); unused by OpenES
    openes_lr      float  OpenES's Adam learning rate (0.05); unused by SNES
    fixed_init     bool   HaDES-F (one initialisation for every inner policy) instead of HaDES-R

These are what the paper varies: learned soft labels, OpenES against SNES, HaDES-F against HaDES-R and the data
set's size. render() writes a complete distiller.py from a genome; the shipped distiller.py is
render(known()["baseline"]) and every file in candidates/ is render() of its known member, character for character
(the tests check this), so a genome and its code never disagree. canonical() maps the knob a strategy does not use
to the baseline's value, so genomes that differ only there are one candidate.

The proposer calls known(), sample(), mutate(), crossover(), render(), describe() and canonical() (the interface
base.search_space.SearchSpace); validate() checks a genome that came from elsewhere (a file, a hand edit).
"""

from __future__ import annotations

import random
from typing import Any

from base.search_space import Range, choose_other, mutate_until_changed, neighbour

Genome = dict[str, Any]

BASELINE = "baseline"
NOUN = "distiller"  # how ideas name what is evolved
GOAL = "distils a data set on which behaviour cloning trains policies of held-out architectures that score more"
DATASET_SIZES = (4, 8, 16, 32, 64)  # multiples of the 4 actions, up to [config.es] max_dataset_size
STRATEGIES = ("snes", "openes")
BOOLS = ("learn_labels", "fixed_init")
LOG_SIGMA = 0.4  # multiplicative perturbation of the continuous knobs
RANGES: dict[str, Range] = {
    "sigma_init": Range(0.05, 2.0, LOG_SIGMA, log=True),
    "temperature": Range(1.0, 50.0, LOG_SIGMA, log=True),
    "openes_lr": Range(0.005, 0.5, LOG_SIGMA, log=True),
}
KEYS = ("dataset_size", "learn_labels", "strategy", "sigma_init", "temperature", "openes_lr", "fixed_init")
UNUSED = {"snes": "openes_lr", "openes": "temperature"}  # the knob each strategy ignores


def genome(**changes: Any) -> Genome:
    """The baseline genome (HaDES-R at the paper's MinAtar settings) with some knobs changed."""
    base = {"dataset_size": 16, "learn_labels": False, "strategy": "snes", "sigma_init": 0.5, "temperature": 20.0,
            "openes_lr": 0.05, "fixed_init": False}
    unknown = set(changes) - set(base)
    if unknown:
        raise ValueError(f"unknown knob {sorted(unknown)[0]!r}")
    return {**base, **changes}


def known() -> dict[str, Genome]:
    """Named members: the baseline and the files in candidates/ (same names)."""
    return {
        "baseline": genome(),
        "soft_labels": genome(learn_labels=True),  # upstream --learn_labels
        "openes": genome(strategy="openes"),  # upstream --es_strategy OpenES (its lr 0.05, sigma --sigma_init)
        "hades_f": genome(fixed_init=True),  # HaDES-F: upstream --overfit
        "dataset_4": genome(dataset_size=4),  # one state per action
    }


# ---------------------------------------------------------------- validation


def validate(g: Genome) -> None:
    """Raise ValueError unless g is a well-formed member of the space (keys, types, ranges)."""
    if not isinstance(g, dict) or set(g) != set(KEYS):
        got = sorted(g) if isinstance(g, dict) else type(g).__name__
        raise ValueError(f"a genome has exactly the keys {list(KEYS)}, got {got}")
    for key in BOOLS:
        if not isinstance(g[key], bool):
            raise ValueError(f"{key} must be true or false, got {g[key]!r}")
    if g["dataset_size"] not in DATASET_SIZES or isinstance(g["dataset_size"], bool):
        raise ValueError(f"dataset_size must be one of {DATASET_SIZES}, got {g['dataset_size']!r}")
    if g["strategy"] not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {g['strategy']!r}")
    for key, r in RANGES.items():
        r.check(g[key], key)


def canonical(g: Genome) -> Genome:
    """The knob the genome's strategy does not read set to the baseline's value: one genome per distiller."""
    unused = UNUSED[g["strategy"]]
    return {**g, unused: genome()[unused]}


# ---------------------------------------------------------------- sampling, mutation, crossover


def sample(rng: random.Random) -> Genome:
    """A random member of the space."""
    g = {"dataset_size": rng.choice(DATASET_SIZES), "strategy": rng.choice(STRATEGIES)}
    g.update({key: rng.random() < 0.5 for key in BOOLS})
    g.update({key: r.draw(rng) for key, r in RANGES.items()})
    return {key: g[key] for key in KEYS}


def _change_knobs(g: Genome, rng: random.Random) -> Genome:
    """One or two knobs changed (the size by one notch); a number at its bound may not move."""
    child = dict(g)
    for key in rng.sample(KEYS, rng.choice((1, 1, 2))):
        if key in BOOLS:
            child[key] = not child[key]
        elif key == "dataset_size":
            child[key] = neighbour(DATASET_SIZES, child[key], rng, bounce=True)
        elif key == "strategy":
            child[key] = choose_other(STRATEGIES, child[key], rng)
        else:
            child[key] = RANGES[key].perturb(child[key], rng)
    return child


def mutate(g: Genome, rng: random.Random) -> Genome:
    """One or two knobs changed; g is not modified. Retries until the genome actually changes."""
    return mutate_until_changed(_change_knobs, g, rng)


def crossover(a: Genome, b: Genome, rng: random.Random) -> Genome:
    """Each knob from either parent (uniform crossover)."""
    return {key: (a if rng.random() < 0.5 else b)[key] for key in KEYS}


# ---------------------------------------------------------------- description and rendering


def describe(g: Genome) -> str:
    """One line, e.g. "HaDES-R, D=16 fixed one-hot labels, SNES sigma 0.5 temperature 20"."""
    es = (f"SNES sigma {g['sigma_init']:g} temperature {g['temperature']:g}" if g["strategy"] == "snes"
          else f"OpenES sigma {g['sigma_init']:g} Adam lr {g['openes_lr']:g}")
    labels = "learned soft labels" if g["learn_labels"] else "fixed one-hot labels"
    return f"HaDES-{'F' if g['fixed_init'] else 'R'}, D={g['dataset_size']} {labels}, {es}"


DISTILLER_TEMPLATE = '''"""The hades template's editable module: the distiller (ES settings, fitness shaping).

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

{summary}
"""

import jax
import jax.numpy as jnp

DATASET_SIZE = {dataset_size}  # D: synthetic state-action pairs
LEARN_LABELS = {learn_labels}  # evolve the labels (softmax of learned logits) instead of fixing them to one-hots
STRATEGY = "{strategy}"  # "snes" or "openes"
SIGMA_INIT = {sigma_init!r}  # the search distribution's initial standard deviation
TEMPERATURE = {temperature!r}  # SNES: rank weights softmax(-T * centred rank)
OPENES_LR = {openes_lr!r}  # OpenES: Adam's learning rate on the mean (beta1 0.99, beta2 0.999 as evosax 0.1)
FIXED_INIT = {fixed_init}  # HaDES-F (True) or HaDES-R (False)


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
'''

BASELINE_SUMMARY = """\
As shipped this is the template's baseline, HaDES-R at the paper's MinAtar settings (FLAIROx/behaviour-distillation
@a600a5a, distill_minatar.py): D = 16 states, fixed one-hot labels (4 per action), SNES with sigma 0.5 and its rank
weights at temperature 20."""


def render(g: Genome) -> dict[str, str]:
    """The genome as a complete distiller.py, {"distiller.py": source}."""
    validate(g)
    summary = BASELINE_SUMMARY if g == known()[BASELINE] else f"This distiller: {describe(g)}."
    values = {k: float(v) if k in RANGES else v for k, v in g.items()}
    return {"distiller.py": DISTILLER_TEMPLATE.format(summary=summary, **values)}
