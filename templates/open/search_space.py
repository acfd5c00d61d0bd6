"""Search space of the OPEN template for the LLM-free (evolutionary) proposer.

A genome is a flat JSON object describing an update rule over OPEN's features:

    update = -lr_t * (direction + weight_decay * param) + noise * lr_t * is_actor * N(0, 1)

    direction  "adam"     m_hat / (sqrt(v_hat) + eps)      bias-corrected EMAs of g (decay b1) and g^2 (decay b2)
               "rmsprop"  g / (sqrt(v) + eps)              EMA of g^2 at decay b2, no bias correction
               "sgdm"     m_hat                            bias-corrected EMA of g at decay b1
               "signum"   sign(m)                          EMA of g at decay b1 (Lion/signSGD-like)
    lr_t = lr * schedule(train_frac)                       "linear" 1 - t, "cosine" (1 + cos(pi t)) / 2, "constant"
               * (1 + batch_slope * (0.5 - batch_frac))    step size across a PPO update's epochs and minibatches
               * exp(layer_slope * (layer_frac - 0.5))     per-layer step size (first layer to output layer)
               * (1 + dormant_boost * [dormancy < dormant_threshold])   larger steps for near-dead neurons

b1 and b2 index the feature decays (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999). Every member is finite for
finite features: denominators are at least eps, bias corrections at least 1 - 0.9999 at step 1, and the
exponent of the layer factor is at most 1 in size. Constants stay in RANGES and are rounded to three
significant digits, so genomes and rendered code stay short.

The proposer calls known(), sample(), mutate(), crossover(), render() and describe() (the interface
base.search_space.SearchSpace); validate() checks a genome from elsewhere.
"""

from __future__ import annotations

import copy
import json
import random
import textwrap
from typing import Any

from base.search_space import Range, choose_other, clip, mutate_until_changed, neighbour, uniform

Genome = dict[str, Any]

DECAYS = (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)  # the features' decays: jax_workloads.open_features.DECAYS
DIRECTIONS = ("adam", "rmsprop", "sgdm", "signum")
SCHEDULES = ("linear", "cosine", "constant")
# The member of known() that the template ships as its editable file (its baseline).
BASELINE = "adam"
NOUN = "update rule"  # how ideas name what is evolved
GOAL = "trains Breakout agents to higher returns"  # ... and what better means here
TUNED_LR = 8e-3  # the tuned Adam learning rate (README.md)
LOG_SIGMA = 0.5  # multiplicative perturbation of the step size and eps


def _additive(lo: float, hi: float) -> Range:
    """A range perturbed additively, by a quarter of its width."""
    return Range(lo, hi, 0.25 * (hi - lo))


RANGES: dict[str, Range] = {
    "lr": Range(1e-5, 3.0, LOG_SIGMA, log=True),
    "eps": Range(1e-8, 1e-2, LOG_SIGMA, log=True),
    "batch_slope": _additive(-1.0, 1.0),
    "layer_slope": _additive(-1.0, 1.0),
    "dormant_boost": _additive(0.0, 5.0),
    "dormant_threshold": _additive(0.01, 0.5),
    "noise": _additive(0.0, 2.0),
    "weight_decay": _additive(0.0, 0.1),
}
# Natural learning rates differ by direction: a fresh sample starts in the right decade.
LR_START = {"adam": (1e-3, 3e-2), "rmsprop": (2e-4, 5e-3), "sgdm": (0.1, 3.0), "signum": (1e-4, 1e-2)}
DEFAULTS: Genome = {"b1": 2, "b2": 4, "eps": 1e-5, "schedule": "linear", "batch_slope": 0.0, "layer_slope": 0.0,
                    "dormant_boost": 0.0, "dormant_threshold": 0.1, "noise": 0.0, "weight_decay": 0.0}
KEYS = ("direction", "lr", *DEFAULTS)


def rule(direction: str, lr: float, **changes: Any) -> Genome:
    """A genome: the defaults (Adam's decays, linear annealing, no feature modulation) with `changes`."""
    g = {"direction": direction, "lr": float(lr), **DEFAULTS, **changes}
    return {k: g[k] for k in KEYS}


def known() -> dict[str, Genome]:
    """Named members: the rules in candidates/ (same math) and a few variants worth trying."""
    return {
        "adam": rule("adam", TUNED_LR),
        "sgd_momentum": rule("sgdm", 1.0),
        "rmsprop": rule("rmsprop", 1e-3, b2=3),
        "hand_open": rule("adam", TUNED_LR, batch_slope=0.5, dormant_boost=2.0, dormant_threshold=0.1, noise=0.1),
        # Not in candidates/: Adam with cosine annealing, a Lion-like signed momentum, AdamW.
        "adam_cosine": rule("adam", TUNED_LR, schedule="cosine"),
        "signum": rule("signum", 2e-3, b1=3),
        "adamw": rule("adam", TUNED_LR, weight_decay=0.01),
    }


def _uses(direction: str) -> set[str]:
    """Which of b1, b2, eps a direction reads (the others are kept but unused)."""
    return {"adam": {"b1", "b2", "eps"}, "rmsprop": {"b2", "eps"}, "sgdm": {"b1"}, "signum": {"b1"}}[direction]


def validate(genome: Genome) -> None:
    """Raise ValueError unless `genome` is a well-formed member of the space (keys, choices, ranges)."""
    if not isinstance(genome, dict) or set(genome) != set(KEYS):
        raise ValueError(f"a genome has exactly the keys {list(KEYS)}")
    if genome["direction"] not in DIRECTIONS:
        raise ValueError(f"unknown direction {genome['direction']!r}")
    if genome["schedule"] not in SCHEDULES:
        raise ValueError(f"unknown schedule {genome['schedule']!r}")
    for key in ("b1", "b2"):
        if not isinstance(genome[key], int) or isinstance(genome[key], bool) or not 0 <= genome[key] < len(DECAYS):
            raise ValueError(f"{key} must be an index into {DECAYS}, not {genome[key]!r}")
    for key, r in RANGES.items():
        r.check(genome[key], key)


# ---------------------------------------------------------------- sampling, mutation, crossover


def sample(rng: random.Random) -> Genome:
    """A random member: a direction and learning rate, and each feature modulation switched on with probability 1/2."""
    direction = rng.choice(DIRECTIONS)
    g = rule(direction, uniform(rng, *LR_START[direction], log=True),
             b1=rng.choice([2, 3, 4]), b2=rng.choice([3, 4, 5]), schedule=rng.choice(SCHEDULES))
    for key in ("batch_slope", "layer_slope", "dormant_boost", "noise", "weight_decay"):
        if rng.random() < 0.5:
            g[key] = RANGES[key].draw(rng)
    if g["dormant_boost"]:
        g["dormant_threshold"] = RANGES["dormant_threshold"].draw(rng)
    return g


def _perturb(g: Genome, key: str, rng: random.Random) -> None:
    if key in ("b1", "b2"):
        g[key] = neighbour(range(len(DECAYS)), g[key], rng)  # a neighbouring decay index
    elif key == "direction":
        g[key] = choose_other(DIRECTIONS, g[key], rng)
        g["lr"] = clip(g["lr"], *LR_START[g[key]])  # keep the step size sensible for the new direction
    elif key == "schedule":
        g[key] = choose_other(SCHEDULES, g[key], rng)
    else:
        g[key] = RANGES[key].perturb(g[key], rng)


def mutate(genome: Genome, rng: random.Random) -> Genome:
    """Change one or two fields: most often a constant, sometimes a decay index, the direction or the schedule.

    Retries until the genome actually changes; `genome` is not modified.
    """
    fields = ["lr", "lr", "batch_slope", "layer_slope", "dormant_boost", "dormant_threshold", "noise",
              "weight_decay", "schedule", "direction", *sorted(_uses(genome["direction"]))]

    def change(g: Genome, rng: random.Random) -> Genome:
        child = copy.deepcopy(g)
        for key in rng.sample(fields, rng.choice([1, 1, 2])):
            _perturb(child, key, rng)
        return child

    return mutate_until_changed(change, genome, rng)


def crossover(a: Genome, b: Genome, rng: random.Random) -> Genome:
    """Each field from a or b at random; the learning rate goes with the direction it was tuned for."""
    child = {k: copy.deepcopy((a if rng.random() < 0.5 else b)[k]) for k in KEYS}
    child["lr"] = (a if child["direction"] == a["direction"] else b)["lr"]
    return child


# ---------------------------------------------------------------- describing and rendering


def _num(x: float) -> str:
    return repr(float(x))


def describe(genome: Genome) -> str:
    """One line, e.g. "adam(b1=0.9, b2=0.999) lr=0.001 linear, batch_slope=0.5, noise=0.5"."""
    g = genome
    decays = {"b1": DECAYS[g["b1"]], "b2": DECAYS[g["b2"]], "eps": g["eps"]}
    args = ", ".join(f"{k}={decays[k]:g}" for k in ("b1", "b2", "eps") if k in _uses(g["direction"]))
    parts = [f"{g['direction']}({args}) lr={g['lr']:g} {g['schedule']}"]
    for key in ("batch_slope", "layer_slope", "noise", "weight_decay"):
        if g[key]:
            parts.append(f"{key}={g[key]:g}")
    if g["dormant_boost"]:
        parts.append(f"dormant_boost={g['dormant_boost']:g} below {g['dormant_threshold']:g}")
    return ", ".join(parts)


def _direction_lines(g: Genome) -> list[str]:
    b1, b2 = DECAYS[g["b1"]], DECAYS[g["b2"]]
    m_hat = f"m_hat = f.momentum[..., {g['b1']}] / (1.0 - {_num(b1)} ** f.step)"
    return {
        "adam": [m_hat, f"v_hat = f.sq_momentum[..., {g['b2']}] / (1.0 - {_num(b2)} ** f.step)",
                 f"direction = m_hat / (jnp.sqrt(v_hat) + {_num(g['eps'])})"],
        "rmsprop": [f"direction = f.grad / (jnp.sqrt(f.sq_momentum[..., {g['b2']}]) + {_num(g['eps'])})"],
        "sgdm": [m_hat, "direction = m_hat"],
        "signum": [f"direction = jnp.sign(f.momentum[..., {g['b1']}])"],
    }[g["direction"]]


def render(genome: Genome) -> dict[str, str]:
    """The genome as a complete optimizer.py, {"optimizer.py": source}, with the template's signature."""
    validate(genome)
    g = genome
    schedule = {"linear": " * (1.0 - f.train_frac)", "cosine": " * 0.5 * (1.0 + jnp.cos(jnp.pi * f.train_frac))",
                "constant": ""}[g["schedule"]]
    body = [*_direction_lines(g), f"lr = {_num(g['lr'])}{schedule}"]
    if g["batch_slope"]:
        body.append(f"lr = lr * (1.0 + {_num(g['batch_slope'])} * (0.5 - f.batch_frac))")
    if g["layer_slope"]:
        body.append(f"lr = lr * jnp.exp({_num(g['layer_slope'])} * (f.layer_frac - 0.5))")
    if g["dormant_boost"]:
        body.append(f"lr = lr * (1.0 + {_num(g['dormant_boost'])} * (f.dormancy < {_num(g['dormant_threshold'])}))")
    if g["weight_decay"]:
        body.append(f"direction = direction + {_num(g['weight_decay'])} * f.param")
    ret = "return -lr * direction"
    if g["noise"]:
        ret += f" + {_num(g['noise'])} * lr * f.is_actor * f.noise"
    body.append(ret)
    source = "\n".join([
        f'"""{textwrap.fill(describe(g), width=100, subsequent_indent="    ")}',
        "",
        "Generated by templates/open/search_space.py from the genome",
        *textwrap.wrap(json.dumps(g), width=100, break_long_words=False, break_on_hyphens=False),
        '"""',
        "",
        *(["import jax.numpy as jnp", "", ""] if any("jnp." in line for line in body) else [""]),
        "def update(f):",
        *("    " + line for line in body),
        "",
    ])
    return {"optimizer.py": source}
