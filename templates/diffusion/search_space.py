"""Search space of the diffusion template for the LLM-free (evolutionary) proposer.

A genome is a DDPM recipe in four independent parts, as plain JSON-serialisable data:

    {"schedule":  {"kind": "linear", "beta_start": b0, "beta_end": b1}          betas linear in the step, given
                | {"kind": "cosine", "offset": s, "power": p}                    at T = 1000 and rescaled to T
                | {"kind": "sigmoid", "start": s, "end": e, "tau": t},          alpha_bar = f(t) / f(0) forms
     "target":    "eps" | "x0" | "v",                                            what the network predicts
     "weighting": {"kind": "none"} | {"kind": "min_snr", "gamma": g}            per-level weight of the
                | {"kind": "snr_power", "power": q},                             target's squared error
     "sampler":   {"eta": e, "steps": k}}                                        DDIM(eta) over k levels

The schedules: linear is DDPM's (Ho et al., 2020); cosine is f(t) = cos((t + s) / (1 + s) * pi / 2)^p
(Nichol & Dhariwal, 2021, with p = 2); sigmoid is f(t) = sigmoid(end / tau) - sigmoid((start + t (end - start)) / tau)
(Chen, 2023). Each beta is capped at 0.999 and alpha_bar floored at 1e-9, so it stays in (0, 1) for any T.

The weighting multiplies the target's own squared error: min_snr is Min-SNR-gamma in the form its
paper gives for each target (Hang et al., 2023: min(SNR, g) / SNR for eps, min(SNR, g) for x0,
min(SNR, g) / (SNR + 1) for v, the same weight on the implied noise error), snr_power is SNR^q as written.

The sampler is DDIM (Song et al., 2021) on every `stride`-th training level, stride = max(1, T // steps),
with noise scale eta: eta = 1 is DDPM's ancestral sampler with the posterior variance, eta = 0 the
deterministic DDIM. Every recipe is rendered as a linear table (tau, a, b, c) of the template's
contract, for whichever target the network predicts.

Numbers stay in fixed ranges (RANGES), rounded to three significant digits, so genomes and the code
rendered from them stay short. The proposer calls known(), sample(), mutate(), crossover(), render()
and describe() (the interface base.search_space.SearchSpace); validate() checks a genome from elsewhere
(a file, a hand edit).
"""

from __future__ import annotations

import copy
import json
import random
import textwrap
from typing import Any

from base.search_space import Range, mutate_until_changed, neighbour, weighted_choice

Genome = dict[str, Any]

# The member of known() that the template ships as its editable file (its baseline).
BASELINE = "ddpm"
NOUN = "recipe"  # how ideas name what is evolved
GOAL = "reaches a lower sample MMD to held-out points"  # ... and what better means here
PARTS = ("schedule", "target", "weighting", "sampler")
TARGETS = ("eps", "x0", "v")
STEPS = (10, 20, 25, 50, 100)  # sampler steps; T // steps levels apart (all of them when steps >= T)
SCHEDULE_FIELDS = {
    "linear": ("beta_start", "beta_end"),
    "cosine": ("offset", "power"),
    "sigmoid": ("start", "end", "tau"),
}
WEIGHTING_FIELDS = {"none": (), "min_snr": ("gamma",), "snr_power": ("power",)}
# Positive scale-like numbers are drawn log-uniformly and perturbed multiplicatively, the others additively.
LOG_SIGMA = 0.3
RANGES: dict[str, Range] = {
    "beta_start": Range(1e-5, 1e-3, LOG_SIGMA, log=True),
    "beta_end": Range(0.005, 0.05, LOG_SIGMA, log=True),
    "offset": Range(0.001, 0.1, LOG_SIGMA, log=True),
    "power": Range(0.5, 4.0, LOG_SIGMA, log=True),   # the cosine's exponent
    "start": Range(-6.0, 0.0, 0.7),
    "end": Range(1.0, 6.0, 0.7),
    "tau": Range(0.2, 2.0, LOG_SIGMA, log=True),
    "gamma": Range(0.5, 20.0, LOG_SIGMA, log=True),
    "snr_power": Range(-1.0, 1.0, 0.2),  # the weighting's exponent (a field named "power" too; see _range_key)
    "eta": Range(0.0, 1.0, 0.2),
}


# ---------------------------------------------------------------- known members


def recipe(schedule: dict, target: str = "eps", weighting: dict | None = None, eta: float = 1.0,
           steps: int = 100) -> Genome:
    """A genome from its four parts (weighting defaults to none)."""
    return {"schedule": dict(schedule), "target": target, "weighting": dict(weighting or {"kind": "none"}),
            "sampler": {"eta": float(eta), "steps": int(steps)}}


LINEAR = {"kind": "linear", "beta_start": 1e-4, "beta_end": 0.02}
COSINE = {"kind": "cosine", "offset": 0.008, "power": 2.0}


def known() -> dict[str, Genome]:
    """Named members: the recipes in candidates/ (same math) and a few published or seeded variants."""
    return {
        "ddpm": recipe(LINEAR),
        "cosine": recipe(COSINE),
        "v_prediction": recipe(LINEAR, "v"),
        "min_snr": recipe(LINEAR, weighting={"kind": "min_snr", "gamma": 5.0}),
        "ddim": recipe(LINEAR, eta=0.0, steps=50),
        # Not in candidates/: combinations and a schedule of Chen (2023).
        "cosine_v": recipe(COSINE, "v"),
        "sigmoid": recipe({"kind": "sigmoid", "start": -3.0, "end": 3.0, "tau": 1.0}),
        "x0_prediction": recipe(LINEAR, "x0", {"kind": "snr_power", "power": 1.0}),
    }


# ---------------------------------------------------------------- validation


def _range_key(part: str, field: str) -> str:
    return "snr_power" if (part, field) == ("weighting", "power") else field


def validate(genome: Genome) -> None:
    """Raise ValueError unless `genome` is a well-formed member of the space (parts, kinds, fields, ranges)."""
    if not isinstance(genome, dict) or set(genome) != set(PARTS):
        raise ValueError(f"a genome has exactly the parts {list(PARTS)}")
    for part, table in (("schedule", SCHEDULE_FIELDS), ("weighting", WEIGHTING_FIELDS)):
        node = genome[part]
        kind = node.get("kind") if isinstance(node, dict) else None
        if kind not in table:
            raise ValueError(f"{part} kind must be one of {list(table)}, got {kind!r}")
        if set(node) != {"kind", *table[kind]}:
            raise ValueError(f"a {kind} {part} has the fields {list(table[kind])}")
        for field in table[kind]:
            key = _range_key(part, field)
            RANGES[key].check(node[field], key)
    if genome["target"] not in TARGETS:
        raise ValueError(f"target must be one of {list(TARGETS)}, got {genome['target']!r}")
    sampler = genome["sampler"]
    if not isinstance(sampler, dict) or set(sampler) != {"eta", "steps"}:
        raise ValueError("a sampler has the fields eta and steps")
    RANGES["eta"].check(sampler["eta"], "eta")
    if sampler["steps"] not in STEPS or isinstance(sampler["steps"], bool):
        raise ValueError(f"sampler steps must be one of {list(STEPS)}, got {sampler['steps']!r}")


# ---------------------------------------------------------------- random parts


def _random_part(part: str, rng: random.Random) -> Any:
    if part == "target":
        return rng.choice(TARGETS)
    if part == "sampler":
        return {"eta": rng.choice([0.0, 1.0, RANGES["eta"].draw(rng)]), "steps": rng.choice(STEPS)}
    table = SCHEDULE_FIELDS if part == "schedule" else WEIGHTING_FIELDS
    kind = rng.choice(list(table))
    return {"kind": kind, **{f: RANGES[_range_key(part, f)].draw(rng) for f in table[kind]}}


def sample(rng: random.Random) -> Genome:
    """A random member of the space."""
    return {part: _random_part(part, rng) for part in PARTS}


# ---------------------------------------------------------------- mutation and crossover


def _numbers(genome: Genome) -> list[tuple[str, str, str]]:
    """(part, field, range key) of every number in the genome."""
    out = [(p, f, _range_key(p, f)) for p in ("schedule", "weighting") for f in genome[p] if f != "kind"]
    return [*out, ("sampler", "eta", "eta")]


def _mutate_number(g: Genome, rng: random.Random) -> Genome:
    part, field, key = rng.choice(_numbers(g))
    g = copy.deepcopy(g)
    g[part][field] = RANGES[key].perturb(g[part][field], rng)
    return g


def _mutate_steps(g: Genome, rng: random.Random) -> Genome:
    steps = neighbour(STEPS, g["sampler"]["steps"], rng)  # at either end, a step off the list changes nothing
    return {**copy.deepcopy(g), "sampler": {**g["sampler"], "steps": steps}}


def _replace_part(g: Genome, rng: random.Random) -> Genome:
    part = rng.choice(PARTS)
    return {**copy.deepcopy(g), part: _random_part(part, rng)}


MUTATIONS = [  # (operator, weight): most changes are small
    (_mutate_number, 0.6),
    (_mutate_steps, 0.15),
    (_replace_part, 0.25),
]


def mutate(genome: Genome, rng: random.Random) -> Genome:
    """A small random change: perturb a number, move the step count, or redraw one part.

    Retries until the genome actually changes (a number at its bound may not move); `genome` is not modified.
    """
    return mutate_until_changed(lambda g, r: weighted_choice(r, MUTATIONS)(g, r), genome, rng)


def crossover(a: Genome, b: Genome, rng: random.Random) -> Genome:
    """Each part from either parent (the parts are independent: any combination is a valid recipe)."""
    return {part: copy.deepcopy((a if rng.random() < 0.5 else b)[part]) for part in PARTS}


# ---------------------------------------------------------------- description and rendering


def describe(genome: Genome) -> str:
    """One line, e.g. "linear(1e-4, 0.02) schedule, eps-prediction, unweighted, DDPM ancestral sampler, 100 steps"."""
    s, w, smp = genome["schedule"], genome["weighting"], genome["sampler"]
    sched = f"{s['kind']}({', '.join(f'{s[f]:g}' for f in SCHEDULE_FIELDS[s['kind']])}) schedule"
    weight = {"none": "unweighted", "min_snr": f"min-SNR weighting (gamma {w.get('gamma', 0):g})",
              "snr_power": f"SNR^{w.get('power', 0):g} weighting"}[w["kind"]]
    eta = smp["eta"]
    kind = {1.0: "DDPM ancestral", 0.0: "deterministic DDIM"}.get(eta, f"DDIM eta={eta:g}")
    return f"{sched}, {genome['target']}-prediction, {weight}, {kind} sampler, {smp['steps']} steps"


def _num(x: float) -> str:
    return repr(float(x))


# Many capped betas in a row would underflow alpha_bar to 0; the floor keeps it inside (0, 1).
_FLOORED = "return jnp.maximum(jnp.cumprod(1.0 - betas), 1e-9)"


def _schedule_code(s: dict) -> list[str]:
    if s["kind"] == "linear":
        return [
            "# Betas linear in the step, given at T = 1000 and rescaled to T, capped below 1.",
            f"betas = jnp.minimum(jnp.linspace({_num(s['beta_start'])}, {_num(s['beta_end'])}, timesteps)"
            " * (1000 / timesteps), 0.999)",
            _FLOORED,
        ]
    t = "t = jnp.arange(timesteps + 1) / timesteps"
    if s["kind"] == "cosine":
        # Floored at 0: in float32 cos(pi / 2) is slightly negative, and a fractional power of it is NaN.
        f = (f"f = jnp.maximum(jnp.cos((t + {_num(s['offset'])}) / {_num(1 + s['offset'])} * jnp.pi / 2), 0.0) "
             f"** {_num(s['power'])}")
    else:
        f = (f"f = jax.nn.sigmoid({_num(s['end'] / s['tau'])}) - jax.nn.sigmoid(({_num(s['start'])} + t * "
             f"{_num(s['end'] - s['start'])}) / {_num(s['tau'])})")
    return [
        t,
        f,
        "# alpha_bar = f(t) / f(0), through betas capped at 0.999 (f may reach 0 before t = 1 in float32).",
        "betas = jnp.clip(1.0 - f[1:] / jnp.maximum(f[:-1], 1e-12), 0.0, 0.999)",
        _FLOORED,
    ]


_TARGET_CODE = {
    "eps": "target = noise",
    "x0": "target = x0",
    "v": "target = jnp.sqrt(ab) * noise - jnp.sqrt(1.0 - ab) * x0",
}
# Min-SNR-gamma's weight for each target: the same weight min(SNR, gamma) / SNR on the implied noise error.
_MIN_SNR_CODE = {
    "eps": "jnp.minimum(snr, {g}) / snr",
    "x0": "jnp.minimum(snr, {g})",
    "v": "jnp.minimum(snr, {g}) / (snr + 1.0)",
}


def _loss_code(target: str, w: dict) -> list[str]:
    lines = []
    if target == "v":
        lines.append("ab = alpha_bar[:, None]")
    lines.append(_TARGET_CODE[target])
    error = "jnp.sum((output - target) ** 2, axis=-1)"
    if w["kind"] == "none":
        return [*lines, f"return {error}"]
    lines.append("snr = alpha_bar / (1.0 - alpha_bar)")
    if w["kind"] == "min_snr":
        weight = _MIN_SNR_CODE[target].format(g=_num(w["gamma"]))
    else:
        weight = f"snr ** {_num(w['power'])}"
    return [*lines, f"return {weight} * {error}"]


# x0_hat = p1 * x + q1 * output and eps_hat = p2 * x + q2 * output, for each target, at level ab_t.
_ESTIMATES = {
    "eps": ["p1, q1 = 1.0 / jnp.sqrt(ab_t), -jnp.sqrt(1.0 - ab_t) / jnp.sqrt(ab_t)",
            "p2, q2 = jnp.zeros_like(ab_t), jnp.ones_like(ab_t)"],
    "x0": ["p1, q1 = jnp.zeros_like(ab_t), jnp.ones_like(ab_t)",
           "p2, q2 = 1.0 / jnp.sqrt(1.0 - ab_t), -jnp.sqrt(ab_t) / jnp.sqrt(1.0 - ab_t)"],
    "v": ["p1, q1 = jnp.sqrt(ab_t), -jnp.sqrt(1.0 - ab_t)",
          "p2, q2 = jnp.sqrt(1.0 - ab_t), jnp.sqrt(ab_t)"],
}


def _sampler_code(target: str, smp: dict) -> list[str]:
    return [
        "timesteps = alpha_bar.shape[0]",
        f"stride = max(1, timesteps // {smp['steps']})",
        "levels = jnp.arange(timesteps - 1, -1, -stride)  # noise-level indices, noisiest first",
        "ab_t = alpha_bar[levels]",
        "ab_s = jnp.concatenate([ab_t[1:], jnp.ones(1)])  # the level each step moves to; the last is clean",
        f"# DDIM: x_s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s - sigma^2) eps_hat + sigma z, eta = {_num(smp['eta'])}.",
        f"sigma = {_num(smp['eta'])} * jnp.sqrt(jnp.maximum((1.0 - ab_s) / (1.0 - ab_t) * (1.0 - ab_t / ab_s), 0.0))",
        "d = jnp.sqrt(jnp.maximum(1.0 - ab_s - sigma**2, 0.0))",
        f"# The {target}-prediction as estimates x0_hat = p1 x + q1 output and eps_hat = p2 x + q2 output.",
        *_ESTIMATES[target],
        "a = jnp.sqrt(ab_s) * p1 + d * p2",
        "b = jnp.sqrt(ab_s) * q1 + d * q2",
        "return (levels + 1) / timesteps, a, b, sigma",
    ]


def render(genome: Genome) -> dict[str, str]:
    """The genome as a complete ddpm.py, {"ddpm.py": source}, with the template's three functions."""
    validate(genome)
    schedule = _schedule_code(genome["schedule"])
    uses_jax = genome["schedule"]["kind"] == "sigmoid"
    head = [
        f'"""{textwrap.fill(describe(genome), width=100)}.',
        "",
        "A DDPM recipe generated by templates/diffusion/search_space.py from the genome",
        *textwrap.wrap(json.dumps(genome), width=100, break_long_words=False, break_on_hyphens=False),
        '"""',
        "",
        *(["import jax"] if uses_jax else []),
        "import jax.numpy as jnp",
        "",
    ]
    functions = [
        ("schedule(timesteps)", schedule),
        ("loss(output, x0, noise, alpha_bar)", _loss_code(genome["target"], genome["weighting"])),
        ("sampler(alpha_bar)", _sampler_code(genome["target"], genome["sampler"])),
    ]
    body = []
    for signature, lines in functions:
        body += ["", f"def {signature}:", *("    " + line for line in lines), ""]
    return {"ddpm.py": "\n".join([*head, *body])}
