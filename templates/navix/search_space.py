"""Search space of the navix template for the LLM-free (evolutionary) proposer.

A genome is a flat dict of the agent's knobs, the constants at the top of agent.py:

    hidden               int    width of every hidden layer, in HIDDEN_SIZES (NAVIX: 64)
    layers               int    hidden layers of the actor MLP and of the critic MLP, 1 to 4 (NAVIX: 2)
    activation           str    the hidden activation, "tanh", "relu" or "gelu"
    layer_norm           bool   LayerNorm before each hidden activation
    shared_torso         bool   one MLP with two heads instead of separate actor and critic MLPs
    policy_init_scale    float  orthogonal-init scale of the policy head (small: a near-uniform first policy)
    ent_coef             float  entropy bonus
    vf_coef              float  value-loss weight
    clip_eps             float  PPO's ratio clip (and the value clip's width)
    value_loss           str    "navix" (NAVIX's clipped form), "clipped" (PPO's reference), "mse" or "huber"
    normalise_advantage  bool   normalise advantages per minibatch

render() writes a complete agent.py from a genome; the shipped agent.py is render(known()["baseline"])
and every file in candidates/ is render() of its known member, character for character (the tests
check this), so a genome and its code never disagree. Every member trains: the largest network (256 x 4, two
MLPs, on FourRooms' 1083 inputs) is under 1M parameters per seed, and every coefficient stays in a range where
PPO is well defined.

The proposer calls known(), sample(), mutate(), crossover(), render() and describe() (the interface
base.search_space.SearchSpace); validate() checks a genome that came from elsewhere (a file, a hand edit).
"""

from __future__ import annotations

import random
from typing import Any

from base.search_space import Range, choose_other, mutate_until_changed, neighbour

Genome = dict[str, Any]

# The member of known() that the template ships as its editable file (its baseline).
BASELINE = "baseline"
NOUN = "agent"  # how ideas name what is evolved
GOAL = "reaches the goal on more held-out gridworld layouts"  # ... and what better means here
HIDDEN_SIZES = (32, 64, 128, 256)
LAYERS = (1, 2, 3, 4)
ACTIVATIONS = ("tanh", "relu", "gelu")
VALUE_LOSSES = ("navix", "clipped", "mse", "huber")
BOOLS = ("layer_norm", "shared_torso", "normalise_advantage")
LOG_SIGMA = 0.4       # multiplicative perturbation of log-scaled knobs
ADDITIVE_SIGMA = 0.05  # additive perturbation of clip_eps
# Continuous knobs: coefficients are drawn log-uniformly and perturbed multiplicatively, clip_eps additively.
RANGES: dict[str, Range] = {
    "policy_init_scale": Range(0.01, 1.0, LOG_SIGMA, log=True),
    "ent_coef": Range(1e-4, 0.1, LOG_SIGMA, log=True),
    "vf_coef": Range(0.1, 2.0, LOG_SIGMA, log=True),
    "clip_eps": Range(0.05, 0.4, ADDITIVE_SIGMA),
}
CHOICES: dict[str, tuple] = {"hidden": HIDDEN_SIZES, "layers": LAYERS}  # sizes: moved one notch at a time
OTHERS: dict[str, tuple] = {"activation": ACTIVATIONS, "value_loss": VALUE_LOSSES}  # moved to any other value
KEYS = ("hidden", "layers", "activation", "layer_norm", "shared_torso", "policy_init_scale", "ent_coef", "vf_coef",
        "clip_eps", "value_loss", "normalise_advantage")


def genome(**changes: Any) -> Genome:
    """The baseline genome (NAVIX's agent) with some knobs changed."""
    base = {"hidden": 64, "layers": 2, "activation": "tanh", "layer_norm": False, "shared_torso": False,
            "policy_init_scale": 0.01, "ent_coef": 0.01, "vf_coef": 0.5, "clip_eps": 0.2, "value_loss": "navix",
            "normalise_advantage": True}
    unknown = set(changes) - set(base)
    if unknown:
        raise ValueError(f"unknown knob {sorted(unknown)[0]!r}")
    return {**base, **changes}


def known() -> dict[str, Genome]:
    """Named members: the baseline, the files in candidates/ (same names) and one more published variant."""
    return {
        "baseline": genome(),
        "wide_relu": genome(hidden=256, activation="relu"),
        "shared_torso": genome(shared_torso=True),
        "low_entropy": genome(ent_coef=0.001),
        "reference_value_clip": genome(value_loss="clipped"),
        # Not in candidates/: no value clipping, which Andrychowicz et al. (2021) found does not help.
        "mse_value": genome(value_loss="mse"),
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
    for key, values in {**CHOICES, **OTHERS}.items():
        if g[key] not in values or isinstance(g[key], bool):
            raise ValueError(f"{key} must be one of {values}, got {g[key]!r}")
    for key, r in RANGES.items():
        r.check(g[key], key)


# ---------------------------------------------------------------- sampling, mutation, crossover


def sample(rng: random.Random) -> Genome:
    """A random member of the space."""
    g = {key: rng.choice(values) for key, values in {**CHOICES, **OTHERS}.items()}
    g.update({key: rng.random() < 0.5 for key in BOOLS})
    g.update({key: r.draw(rng) for key, r in RANGES.items()})
    return {key: g[key] for key in KEYS}


def _change_knobs(g: Genome, rng: random.Random) -> Genome:
    """One or two knobs changed (sizes by one notch at a time); a coefficient at its bound may not move."""
    child = dict(g)
    for key in rng.sample(KEYS, rng.choice((1, 1, 2))):
        if key in BOOLS:
            child[key] = not child[key]
        elif key in CHOICES:
            child[key] = neighbour(CHOICES[key], child[key], rng, bounce=True)
        elif key in OTHERS:
            child[key] = choose_other(OTHERS[key], child[key], rng)
        else:
            child[key] = RANGES[key].perturb(child[key], rng)
    return child


def mutate(g: Genome, rng: random.Random) -> Genome:
    """One or two knobs changed: a size by one notch, a coefficient perturbed, a switch flipped; g is not modified.

    Retries until the genome actually changes.
    """
    return mutate_until_changed(_change_knobs, g, rng)


def crossover(a: Genome, b: Genome, rng: random.Random) -> Genome:
    """Each knob from either parent (uniform crossover)."""
    return {key: (a if rng.random() < 0.5 else b)[key] for key in KEYS}


# ---------------------------------------------------------------- description and rendering


def describe(g: Genome) -> str:
    """One line, e.g. "separate tanh MLPs 2x64, policy init 0.01, ent 0.01, vf 0.5, clip 0.2, navix value loss"."""
    net = (f"{'shared' if g['shared_torso'] else 'separate'} {g['activation']} MLPs {g['layers']}x{g['hidden']}"
           + (" + LayerNorm" if g["layer_norm"] else ""))
    return (f"{net}, policy init {g['policy_init_scale']:g}, ent {g['ent_coef']:g}, vf {g['vf_coef']:g}, "
            f"clip {g['clip_eps']:g}, {g['value_loss']} value loss"
            + ("" if g["normalise_advantage"] else ", raw advantages"))


AGENT_TEMPLATE = '''"""The editable module of the navix template: the agent, i.e. its network and its PPO objective.

The harness trains this agent with PPO (jax_workloads/ppo.py, PureJaxRL style, NAVIX's PPO settings) on each
NAVIX gridworld of the suite (MiniGrid in JAX), one policy per environment and seed, and exports its
policies (their logits); a sealed evaluator samples their actions and measures how often they reach the goal
on layouts it draws itself. Two names are required (CONTINUOUS, if defined, must be False: MiniGrid's 7
actions are discrete):

- make_network(num_actions, action_dim) -> a flax module. Called on flat symbolic observations [..., obs_size]
  (NAVIX's fully observed grid of (object, colour, state) triples, H x W x 3 flattened, small integers as
  float32) it returns (logits [..., num_actions], value [...]). Training samples from the categorical
  (ppo.sample_action); the evaluator plays its argmax. obs_size differs between environments: the module is
  traced once per environment.
- loss(params, apply_fn, batch, config, discrete) -> (scalar, dict of scalar diagnostics), minimised
  by Adam on each minibatch; batch is a ppo.Batch (obs, action, log_prob, value, advantage, target).

The constants below are the knobs the LLM-free proposer turns (search_space.py); any code may change.
{summary}
"""

import flax.linen as nn
import jax.numpy as jnp

from jax_workloads.ppo import entropy, log_prob

HIDDEN = {hidden}  # width of every hidden layer of both MLPs
LAYERS = {layers}  # hidden layers of the actor MLP and of the critic MLP
ACTIVATION = "{activation}"  # the hidden activation: "tanh", "relu" or "gelu"
LAYER_NORM = {layer_norm}  # LayerNorm before each hidden activation
SHARED_TORSO = {shared_torso}  # one MLP for actor and critic (two heads) instead of two separate MLPs
POLICY_INIT_SCALE = {policy_init_scale!r}  # orthogonal init scale of the policy head: small starts near uniform
ENT_COEF = {ent_coef!r}  # entropy bonus
VF_COEF = {vf_coef!r}  # value-loss weight
CLIP_EPS = {clip_eps!r}  # PPO's ratio clip (and the value clip's width)
# "navix": NAVIX's clipped value loss, 0.5 * max((v - R)^2, 0.5 * (v_clip - R)^2); "clipped": PPO's reference
# 0.5 * max((v - R)^2, (v_clip - R)^2); "mse": 0.5 * (v - R)^2; "huber": optax-style Huber (delta 1) on v - R.
VALUE_LOSS = "{value_loss}"
NORMALISE_ADVANTAGE = {normalise_advantage}  # normalise advantages per minibatch (NAVIX's normalise_advantage)

_ACTIVATIONS = {{"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu}}


class ActorCritic(nn.Module):
    """NAVIX's actor-critic: an MLP encoder and a linear head for the policy, another pair for the value."""

    num_actions: int

    @nn.compact
    def __call__(self, x):
        act = _ACTIVATIONS[ACTIVATION]

        def encoder(h):
            for _ in range(LAYERS):
                h = nn.Dense(HIDDEN)(h)
                if LAYER_NORM:
                    h = nn.LayerNorm()(h)
                h = act(h)
            return h

        actor = encoder(x)
        critic = actor if SHARED_TORSO else encoder(x)
        logits = nn.Dense(self.num_actions, kernel_init=nn.initializers.orthogonal(POLICY_INIT_SCALE))(actor)
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0))(critic)
        return logits, value[..., 0]


def make_network(num_actions, action_dim):
    return ActorCritic(num_actions)


def _value_loss(value, batch):
    err = value - batch.target
    clipped = batch.value + jnp.clip(value - batch.value, -CLIP_EPS, CLIP_EPS) - batch.target
    if VALUE_LOSS == "navix":
        return 0.5 * jnp.maximum(err**2, 0.5 * clipped**2).mean()
    if VALUE_LOSS == "clipped":
        return 0.5 * jnp.maximum(err**2, clipped**2).mean()
    if VALUE_LOSS == "huber":
        a = jnp.abs(err)
        return jnp.where(a <= 1.0, 0.5 * err**2, a - 0.5).mean()
    return 0.5 * (err**2).mean()


def loss(params, apply_fn, batch, config, discrete):
    logits, value = apply_fn(params, batch.obs)
    value_loss = _value_loss(value, batch)
    # Clipped surrogate objective.
    ratio = jnp.exp(log_prob(logits, batch.action, discrete) - batch.log_prob)
    adv = batch.advantage
    if NORMALISE_ADVANTAGE:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    actor_loss = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - CLIP_EPS, 1 + CLIP_EPS) * adv).mean()
    ent = entropy(logits, discrete).mean()
    total = actor_loss + VF_COEF * value_loss - ENT_COEF * ent
    return total, {{"value_loss": value_loss, "actor_loss": actor_loss, "entropy": ent}}
'''

BASELINE_SUMMARY = """\
As shipped this is the template's baseline, NAVIX's own PPO agent (navix.agents at tag v0.7.0): separate actor
and critic MLPs of 2 x Dense 64 + tanh (flax's default initialisation), an actor head with orthogonal(0.01) and
a critic head with orthogonal(1.0) initialisation, zero biases; and NAVIX's PPO objective: clip 0.2 on
per-minibatch normalised advantages, entropy bonus 0.01, and its clipped value loss, weight 0.5, written as
NAVIX writes it (the clipped branch carries an extra factor 0.5, see VALUE_LOSS)."""


def render(g: Genome) -> dict[str, str]:
    """The genome as a complete agent.py, {"agent.py": source}."""
    validate(g)
    summary = BASELINE_SUMMARY if g == known()[BASELINE] else f"This agent: {describe(g)}."
    values = {k: float(v) if k in RANGES else v for k, v in g.items()}
    return {"agent.py": AGENT_TEMPLATE.format(summary=summary, **values)}
