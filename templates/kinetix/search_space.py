"""Search space of the kinetix template for the LLM-free (evolutionary) proposer.

A genome is a flat dict of the agent's knobs, the constants at the top of agent.py:

    continuous         bool   Kinetix's 11 discrete actions (False) or its 6 continuous ones (True)
    hidden             int    width of the shared embedding and of every hidden layer of the towers, in HIDDEN_SIZES
    layers             int    hidden layers of the actor tower and of the critic tower, 1 to 6 (Kinetix: 5)
    activation         str    the towers' activation, "tanh", "relu" or "gelu" (the embedding's is ReLU, as Kinetix's)
    layer_norm         bool   LayerNorm before each tower activation
    policy_init_scale  float  orthogonal-init scale of the policy head (small: a near-uniform first policy)
    ent_coef           float  entropy bonus
    vf_coef            float  value-loss weight
    clip_eps           float  PPO's ratio clip (and the value clip's width)
    clip_value         bool   clip the value update around the rollout's estimate

render() writes a complete agent.py from a genome; the shipped agent.py is render(known()["baseline"])
and every file in candidates/ is render() of its known member, character for character (the tests
check this), so a genome and its code never disagree. Every member trains: sizes are bounded (the
largest network, 512 x 6, is 3.2M parameters per seed, under the harness's 5M limit) and every
coefficient stays in a range where PPO is well defined.

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
GOAL = "solves more held-out level variants"  # ... and what better means here
HIDDEN_SIZES = (32, 64, 128, 256, 512)
LAYERS = (1, 2, 3, 4, 5, 6)
ACTIVATIONS = ("tanh", "relu", "gelu")
BOOLS = ("continuous", "layer_norm", "clip_value")
LOG_SIGMA = 0.4       # multiplicative perturbation of log-scaled knobs
ADDITIVE_SIGMA = 0.05  # additive perturbation of clip_eps
# Continuous knobs: coefficients are drawn log-uniformly and perturbed multiplicatively, clip_eps additively.
RANGES: dict[str, Range] = {
    "policy_init_scale": Range(0.01, 1.0, LOG_SIGMA, log=True),
    "ent_coef": Range(1e-4, 0.1, LOG_SIGMA, log=True),
    "vf_coef": Range(0.1, 2.0, LOG_SIGMA, log=True),
    "clip_eps": Range(0.05, 0.4, ADDITIVE_SIGMA),
}
KEYS = ("continuous", "hidden", "layers", "activation", "layer_norm", "policy_init_scale", "ent_coef", "vf_coef",
        "clip_eps", "clip_value")


def genome(**changes: Any) -> Genome:
    """The baseline genome with some knobs changed."""
    base = {"continuous": False, "hidden": 128, "layers": 5, "activation": "tanh", "layer_norm": False,
            "policy_init_scale": 0.01, "ent_coef": 0.01, "vf_coef": 0.5, "clip_eps": 0.2, "clip_value": True}
    unknown = set(changes) - set(base)
    if unknown:
        raise ValueError(f"unknown knob {sorted(unknown)[0]!r}")
    return {**base, **changes}


def known() -> dict[str, Genome]:
    """Named members: the baseline, the files in candidates/ (same names) and one more published variant."""
    return {
        "baseline": genome(),
        "wide_deep": genome(hidden=256, layers=6),
        "layer_norm": genome(layer_norm=True),
        "high_entropy": genome(ent_coef=0.05),
        "continuous": genome(continuous=True),
        # Not in candidates/: no value clipping, which Andrychowicz et al. (2021) found does not help.
        "no_value_clip": genome(clip_value=False),
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
    if g["hidden"] not in HIDDEN_SIZES or isinstance(g["hidden"], bool):
        raise ValueError(f"hidden must be one of {HIDDEN_SIZES}, got {g['hidden']!r}")
    if g["layers"] not in LAYERS or isinstance(g["layers"], bool):
        raise ValueError(f"layers must be one of {LAYERS}, got {g['layers']!r}")
    if g["activation"] not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {g['activation']!r}")
    for key, r in RANGES.items():
        r.check(g[key], key)


# ---------------------------------------------------------------- sampling, mutation, crossover


def sample(rng: random.Random) -> Genome:
    """A random member of the space (discrete actions more often: the baseline's action space)."""
    return {
        "continuous": rng.random() < 0.25,
        "hidden": rng.choice(HIDDEN_SIZES),
        "layers": rng.choice(LAYERS),
        "activation": rng.choice(ACTIVATIONS),
        "layer_norm": rng.random() < 0.5,
        **{key: RANGES[key].draw(rng) for key in ("policy_init_scale", "ent_coef", "vf_coef", "clip_eps")},
        "clip_value": rng.random() < 0.5,
    }


def _change_knobs(g: Genome, rng: random.Random) -> Genome:
    """One or two knobs changed (sizes by one notch at a time); a coefficient at its bound may not move."""
    child = dict(g)
    for key in rng.sample(KEYS, rng.choice((1, 1, 2))):
        if key in BOOLS:
            child[key] = not child[key]
        elif key == "hidden":
            child[key] = neighbour(HIDDEN_SIZES, child[key], rng, bounce=True)
        elif key == "layers":
            child[key] = neighbour(LAYERS, child[key], rng, bounce=True)
        elif key == "activation":
            child[key] = choose_other(ACTIVATIONS, child[key], rng)
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
    """One line, e.g. "discrete, tanh towers 5x128, ent 0.01, vf 0.5, clip 0.2, value clip" (the towers of the
    actor and of the critic, on a shared ReLU embedding as wide)."""
    net = f"{g['activation']} towers {g['layers']}x{g['hidden']}" + (" + LayerNorm" if g["layer_norm"] else "")
    return (f"{'continuous' if g['continuous'] else 'discrete'}, {net}, policy init {g['policy_init_scale']:g}, "
            f"ent {g['ent_coef']:g}, vf {g['vf_coef']:g}, clip {g['clip_eps']:g}, "
            f"{'value clip' if g['clip_value'] else 'no value clip'}")


AGENT_TEMPLATE = '''"""The editable module of the kinetix template: the agent, i.e. its network and its PPO objective.

The harness trains this agent with Kinetix's PPO (jax_workloads/ppo.py, PureJaxRL style) on random variants of
Kinetix's handmade s-size levels and exports its greedy policy; a sealed evaluator measures the solve
rate on variants it draws itself. Three names are required:

- CONTINUOUS: False for Kinetix's 11 discrete actions (one motor direction, one thruster, or nothing),
  True for its 6 continuous ones (4 motor colours in [-1, 1], 2 thruster colours in [0, 1]).
- make_network(num_actions, action_dim) -> a flax module. Called on flat observations [..., obs_size]
  it returns (policy_out, value [...]): policy_out is the action logits [..., num_actions] when
  discrete, or (mean, log_std), each [..., action_dim], when continuous. Training samples from that
  categorical or diagonal Gaussian (ppo.sample_action); the evaluator plays its argmax or its mean.
- loss(params, apply_fn, batch, config, discrete) -> (scalar, dict of scalar diagnostics), minimised
  by Adam on each minibatch; batch is a ppo.Batch (obs, action, log_prob, value, advantage, target).

The constants below are the knobs the LLM-free proposer turns (search_space.py); any code may change.
{summary}
"""

import math

import flax.linen as nn
import jax.numpy as jnp

from jax_workloads.ppo import entropy, log_prob

CONTINUOUS = {continuous}  # action head: Kinetix's 11 discrete actions, or its 6 continuous ones
HIDDEN = {hidden}  # width of the shared embedding and of every tower layer
LAYERS = {layers}  # hidden layers of the actor tower and of the critic tower
ACTIVATION = "{activation}"  # the towers' activation: "tanh", "relu" or "gelu"
LAYER_NORM = {layer_norm}  # LayerNorm before each tower activation
POLICY_INIT_SCALE = {policy_init_scale!r}  # init scale of the policy head: small starts near uniform
ENT_COEF = {ent_coef!r}  # entropy bonus
VF_COEF = {vf_coef!r}  # value-loss weight
CLIP_EPS = {clip_eps!r}  # PPO's ratio clip (and the value clip's width)
CLIP_VALUE = {clip_value}  # clip the value update around the rollout's estimate, as PPO's reference code does

_ACTIVATIONS = {{"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu}}


class ActorCritic(nn.Module):
    """A shared ReLU embedding of the flat symbolic observation, then separate actor and critic towers."""

    num_actions: int
    action_dim: int = 0

    @nn.compact
    def __call__(self, x):
        act = _ACTIVATIONS[ACTIVATION]
        init = nn.initializers.orthogonal
        x = nn.relu(nn.Dense(HIDDEN, kernel_init=init(math.sqrt(2)))(x))  # the embedding both towers share

        def mlp(h, out, scale):
            for _ in range(LAYERS):
                h = nn.Dense(HIDDEN, kernel_init=init(math.sqrt(2)))(h)
                if LAYER_NORM:
                    h = nn.LayerNorm()(h)
                h = act(h)
            return nn.Dense(out, kernel_init=init(scale))(h)

        value = mlp(x, 1, 1.0)[..., 0]
        if self.num_actions:
            return mlp(x, self.num_actions, POLICY_INIT_SCALE), value
        mean = mlp(x, self.action_dim, POLICY_INIT_SCALE)
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        return (mean, jnp.broadcast_to(log_std, mean.shape)), value


def make_network(num_actions, action_dim):
    return ActorCritic(num_actions, action_dim)


def loss(params, apply_fn, batch, config, discrete):
    policy_out, value = apply_fn(params, batch.obs)
    value_loss = (value - batch.target) ** 2
    if CLIP_VALUE:
        value_clipped = batch.value + jnp.clip(value - batch.value, -CLIP_EPS, CLIP_EPS)
        value_loss = jnp.maximum(value_loss, (value_clipped - batch.target) ** 2)
    value_loss = 0.5 * value_loss.mean()
    # Clipped surrogate objective on per-minibatch normalised advantages.
    ratio = jnp.exp(log_prob(policy_out, batch.action, discrete) - batch.log_prob)
    adv = (batch.advantage - batch.advantage.mean()) / (batch.advantage.std() + 1e-8)
    actor_loss = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - CLIP_EPS, 1 + CLIP_EPS) * adv).mean()
    ent = entropy(policy_out, discrete).mean()
    total = actor_loss + VF_COEF * value_loss - ENT_COEF * ent
    return total, {{"value_loss": value_loss, "actor_loss": actor_loss, "entropy": ent}}
'''


def render(g: Genome) -> dict[str, str]:
    """The genome as a complete agent.py, {"agent.py": source}."""
    validate(g)
    if g == known()[BASELINE]:
        summary = ("As shipped this is the template's baseline, Kinetix's own agent: its symbolic actor-critic\n"
                   "(ActorCriticSymbolicRNN, not recurrent: a shared Dense 128 + ReLU embedding, then separate actor\n"
                   "and critic towers of 5 x 128 tanh, orthogonal initialisation) and its clipped PPO objective with\n"
                   "a clipped value loss and an entropy bonus of 0.01.")
    else:
        summary = f"This agent: {describe(g)}."
    values = {k: float(v) if k in RANGES else v for k, v in g.items()}
    return {"agent.py": AGENT_TEMPLATE.format(summary=summary, **values)}
