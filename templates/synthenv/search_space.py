"""Search space of the synthenv template for the LLM-free (evolutionary) proposer.

A genome is a flat dict of the knobs at the top of bandit.py (the bandit's family and its meta-training):

    latent          str    the latent distribution of the contexts: "normal", "uniform", "categorical", "softmax"
    hidden          int    hidden units of the context and reward MLPs, in HIDDEN_SIZES (upstream: 32)
    activation      str    "relu" (upstream) or "tanh"
    algorithms      list   inner algorithms, one per generation in turn: ["ppo", "dqn"], ["ppo"] or ["dqn"]
    sigma_init      float  SNES's initial standard deviation (upstream: 0.05)
    lr_mean         float  SNES's learning rate of the mean (evosax: 1.0)
    sample_hparams  bool   draw each inner agent's hyperparameters from upstream's lists (else fixed ones)
    horizon_init    int    the fitness horizon's first value (Acrobot: 500)
    horizon_end     int    ... its last value (Acrobot: 500)
    horizon_steps   int    ... generations over which it moves from first to last (upstream's transition_steps)

render() writes a complete bandit.py: the shipped file with these constants replaced; the shipped bandit.py is
render(known()["baseline"]) and every file in candidates/ is render() of its known member, character for
character (tests/test_synthenv.py checks this). The paper's findings are in the space as ablations: fixed
hyperparameters (sample_hparams false) and one inner algorithm are what upstream's setting improves on, and a
curriculum of the fitness horizon (MountainCar's 1000 -> 200 in upstream) is a schedule a search may rediscover.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from base.search_space import Range, choose_other, mutate_until_changed, neighbour

Genome = dict[str, Any]

BASELINE = "baseline"
NOUN = "synthetic bandit"
GOAL = "trains agents that score a higher return on the real Acrobot environment"
LATENTS = ("normal", "uniform", "categorical", "softmax")
HIDDEN_SIZES = (8, 16, 32, 64, 128)
ACTIVATIONS = ("relu", "tanh")
ALGORITHM_SETS = (["ppo", "dqn"], ["ppo"], ["dqn"])
HORIZONS = (100, 200, 300, 400, 500)
HORIZON_STEPS = (1, 2, 4, 8, 16, 32, 64)
RANGES: dict[str, Range] = {
    "sigma_init": Range(0.005, 0.5, 0.4, log=True),
    "lr_mean": Range(0.1, 2.0, 0.3, log=True),
}
CHOICES: dict[str, tuple] = {"hidden": HIDDEN_SIZES, "horizon_init": HORIZONS, "horizon_end": HORIZONS,
                             "horizon_steps": HORIZON_STEPS}  # ordered: moved one notch
OTHERS: dict[str, tuple] = {"latent": LATENTS, "activation": ACTIVATIONS}
KEYS = ("latent", "hidden", "activation", "algorithms", "sigma_init", "lr_mean", "sample_hparams", "horizon_init",
        "horizon_end", "horizon_steps")
SOURCE = Path(__file__).with_name("bandit.py")
CONSTANTS = {"latent": "LATENT", "hidden": "HIDDEN", "activation": "ACTIVATION", "algorithms": "ALGORITHMS",
             "sigma_init": "SIGMA_INIT", "lr_mean": "LR_MEAN", "sample_hparams": "SAMPLE_HPARAMS",
             "horizon_init": "HORIZON_INIT", "horizon_end": "HORIZON_END", "horizon_steps": "HORIZON_STEPS"}
SHIPPED_SUMMARY = re.compile(r"As shipped this is the paper's setting.*?\n\"\"\"", re.S)


def genome(**changes: Any) -> Genome:
    """The baseline genome (the paper's setting) with some knobs changed."""
    base = {"latent": "normal", "hidden": 32, "activation": "relu", "algorithms": ["ppo", "dqn"], "sigma_init": 0.05,
            "lr_mean": 1.0, "sample_hparams": True, "horizon_init": 500, "horizon_end": 500, "horizon_steps": 1}
    unknown = set(changes) - set(base)
    if unknown:
        raise ValueError(f"unknown knob {sorted(unknown)[0]!r}")
    return {**base, **changes}


def known() -> dict[str, Genome]:
    """Named members: the baseline, the files in candidates/ (same names) and one more variant."""
    return {
        "baseline": genome(),
        "fixed_hparams": genome(sample_hparams=False),
        "ppo_only": genome(algorithms=["ppo"]),
        # Not in candidates/ (not measured yet): SNES's sigma doubled, and a horizon curriculum from short to the
        # full 500 steps over 4 generations.
        "wide_sigma": genome(sigma_init=0.1),
        "horizon_curriculum": genome(horizon_init=200, horizon_steps=4),
    }


def validate(g: Genome) -> None:
    """Raise ValueError unless g is a well-formed member of the space."""
    if not isinstance(g, dict) or set(g) != set(KEYS):
        raise ValueError(f"a genome has exactly the keys {list(KEYS)}, got {sorted(g) if isinstance(g, dict) else g}")
    if not isinstance(g["sample_hparams"], bool):
        raise ValueError(f"sample_hparams must be true or false, got {g['sample_hparams']!r}")
    if g["algorithms"] not in ALGORITHM_SETS:
        raise ValueError(f"algorithms must be one of {ALGORITHM_SETS}, got {g['algorithms']!r}")
    for key, values in {**CHOICES, **OTHERS}.items():
        if g[key] not in values or isinstance(g[key], bool):
            raise ValueError(f"{key} must be one of {values}, got {g[key]!r}")
    for key, r in RANGES.items():
        r.check(g[key], key)


def sample(rng: random.Random) -> Genome:
    g = {key: rng.choice(values) for key, values in {**CHOICES, **OTHERS}.items()}
    g["algorithms"] = list(rng.choice(ALGORITHM_SETS))
    g["sample_hparams"] = rng.random() < 0.5
    g.update({key: r.draw(rng) for key, r in RANGES.items()})
    return {key: g[key] for key in KEYS}


def _change_knobs(g: Genome, rng: random.Random) -> Genome:
    child = {k: (list(v) if isinstance(v, list) else v) for k, v in g.items()}
    for key in rng.sample(KEYS, rng.choice((1, 1, 2))):
        if key == "sample_hparams":
            child[key] = not child[key]
        elif key == "algorithms":
            child[key] = list(choose_other(ALGORITHM_SETS, child[key], rng))
        elif key in CHOICES:
            child[key] = neighbour(CHOICES[key], child[key], rng, bounce=True)
        elif key in OTHERS:
            child[key] = choose_other(OTHERS[key], child[key], rng)
        else:
            child[key] = RANGES[key].perturb(child[key], rng)
    return child


def mutate(g: Genome, rng: random.Random) -> Genome:
    """One or two knobs changed; retries until the genome changes. g is not modified."""
    return mutate_until_changed(_change_knobs, g, rng)


def crossover(a: Genome, b: Genome, rng: random.Random) -> Genome:
    return {key: list(v) if isinstance(v := (a if rng.random() < 0.5 else b)[key], list) else v for key in KEYS}


def describe(g: Genome) -> str:
    """One line, e.g. "normal latent, 32 relu, ppo+dqn, sampled hparams, SNES sigma 0.05, horizon 500"."""
    horizon = (f"horizon {g['horizon_init']}" if g["horizon_init"] == g["horizon_end"] else
               f"horizon {g['horizon_init']}->{g['horizon_end']} over {g['horizon_steps']} generations")
    return (f"{g['latent']} latent, {g['hidden']} {g['activation']}, {'+'.join(g['algorithms'])}, "
            f"{'sampled' if g['sample_hparams'] else 'fixed'} hparams, SNES sigma {g['sigma_init']:g} "
            f"lr {g['lr_mean']:g}, {horizon}")


def _literal(key: str, value: Any) -> str:
    if key == "algorithms":
        return "(" + ", ".join(f'"{a}"' for a in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(float(value)) if key in RANGES else repr(value)


def render(g: Genome) -> dict[str, str]:
    """The genome as a complete bandit.py, {"bandit.py": source}."""
    validate(g)
    text = SOURCE.read_text()
    if g != known()[BASELINE]:
        text = SHIPPED_SUMMARY.sub(lambda _: f"This bandit: {describe(g)}.\n\"\"\"", text, count=1)
    for key, name in CONSTANTS.items():
        text, n = re.subn(rf"^{name} = [^#\n]*?(  #|\n)", lambda m, k=key, nm=name: f"{nm} = {_literal(k, g[k])}"
                          f"{m.group(1)}", text, count=1, flags=re.M)
        if n != 1:
            raise ValueError(f"bandit.py has no line {name} = ...")
    return {"bandit.py": text}
