"""OPEN's per-parameter optimizer inputs, and an optax transformation built from an update rule over them.

OPEN (Goldie et al., 2024) meta-learns an update rule whose inputs are chosen for RL's
difficulties: momenta at several timescales (non-stationarity), how far training and the
current batch have progressed, the layer's depth, a neuron's dormancy (plasticity loss) and
a random input (exploration). Here the rule is any jittable function

    rule(f: Features) -> update          # same shape as f.param; added to the parameter

applied to every parameter tensor. `open_optimizer(rule, ...)` computes the features and
wraps the rule as an optax GradientTransformationExtraArgs whose update takes `train_frac`
and `batch_frac` (as jax_workloads.ppo calls it) and, for dormancy, the PPO minibatch as
`batch` (make_train(..., optimizer_sees_batch=True)).

Fidelity to OPEN's code (github.com/AlexGoldie/rl-learned-optimization, rl_optimizer/train.py
and network.py at commit b65037bd89c09f31e80c5d49f1d78cc9c6dc43e0):
- `open_proportions`: OPEN's training proportion u/(U-1) and batch proportion epoch/(E-1),
  computed from the optimizer's own step count as OPEN does (`open_optimizer(...,
  proportions=Schedule(...))`); without it, the proportions ppo.make_train passes are used
  (u/U and the position among the update's epochs x minibatches, the earlier behaviour);
- `clip_actor_critic`: OPEN clips the actor's and the critic's gradients separately, each to
  its own global norm (separate networks there); optax.clip_by_global_norm over the whole
  actor-critic is PureJaxRL's joint clipping;
- a recurrent rule (OPEN's GRU) keeps a per-parameter carry (`carry_size`, `f.carry`, the rule
  returns (update, new_carry)), and `zero_mean` subtracts the mean update over all parameters
  of actor and critic together, as OPEN's "Make update globally 0".

The network layout (which tensors are the policy's, each layer's position, which Dense
layer's outputs give a tensor's dormancy) is that of jax_workloads.ppo.ActorCritic.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

# Decays of the gradient momenta (OPEN's timescales); momentum[..., i] uses DECAYS[i].
DECAYS = (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)
# Dormancy of a neuron is its mean |activation| over its layer's mean (ReDo, Sokar et al., 2023).
DORMANCY_EPS = 1e-8


class Features(NamedTuple):
    """What the update rule sees for one parameter tensor. Every field is float32 of the parameter's shape,
    except momentum and sq_momentum, which add a trailing axis of len(DECAYS)."""

    param: jax.Array        # the parameter's current value
    grad: jax.Array         # its gradient (after the harness's global-norm clipping)
    momentum: jax.Array     # [..., 6]: m_i <- d_i m_i + (1 - d_i) g, from 0, no bias correction (as OPEN)
    sq_momentum: jax.Array  # [..., 6]: v_i <- d_i v_i + (1 - d_i) g^2 (not in OPEN: lets Adam/RMSprop be written)
    step: jax.Array         # optimizer steps so far, this one included: 1, 2, ... (for bias correction)
    train_frac: jax.Array   # training proportion: PPO update index / number of updates, in [0, 1)
    batch_frac: jax.Array   # batch proportion: position within the update's epochs x minibatches, in [0, 1)
    layer_frac: jax.Array   # layer proportion: 0 for a network's first layer ... 1 for its output layer
    dormancy: jax.Array     # the neuron's mean |activation| on the minibatch / its layer's mean (1: typical, 0: dead)
    is_actor: jax.Array     # 1 for the policy network's parameters, 0 for the value network's
    noise: jax.Array        # fresh N(0, 1) per parameter and step: a random input for exploration
    carry: jax.Array | None = None  # [..., carry_size]: a recurrent rule's per-parameter state (None: stateless rule)


class OpenState(NamedTuple):
    """The transformation's state: EMAs of g and g^2 per parameter, the step count, the noise key."""

    momentum: Any
    sq_momentum: Any
    step: jax.Array
    key: jax.Array
    carry: Any = None  # a recurrent rule's per-parameter state ([*p.shape, carry_size] per leaf), else None


class Schedule(NamedTuple):
    """PPO's loop sizes, from which OPEN computes its proportions out of the optimizer's step count."""

    num_updates: int
    update_epochs: int
    num_minibatches: int


def open_proportions(step: jax.Array, schedule: Schedule) -> tuple[jax.Array, jax.Array]:
    """OPEN's (training proportion, batch proportion) before optimizer step `step` (0, 1, ...).

    As rl_optimizer/train.py computes them from the optimizer's iteration count:
    training = (step // (minibatches * epochs)) / (updates - 1), i.e. u/(U-1);
    batch = ((step // minibatches) % epochs) / (epochs - 1), i.e. epoch/(E-1).
    Both run from 0 to 1 inclusive. OPEN divides by zero when U or E is 1; here a single
    update or epoch has proportion 0.
    """
    u = step // (schedule.num_minibatches * schedule.update_epochs)
    epoch = (step // schedule.num_minibatches) % schedule.update_epochs
    train = u.astype(jnp.float32) / max(schedule.num_updates - 1, 1)
    batch = epoch.astype(jnp.float32) / max(schedule.update_epochs - 1, 1)
    return train, batch


def clip_actor_critic(max_norm: float, layers: int) -> optax.GradientTransformation:
    """OPEN's gradient clipping: the policy's and the value network's gradients each clipped to global norm max_norm.

    Each group is scaled exactly as optax.clip_by_global_norm scales a whole tree (OPEN applies
    that transformation to the actor's and to the critic's gradients separately).
    """

    def init(params):
        return optax.EmptyState()

    def update(grads, state, params=None):
        layout = actor_critic_layout(grads, layers)
        leaves, treedef = jax.tree.flatten(grads)
        actor = [info.is_actor == 1.0 for info in treedef.flatten_up_to(layout)]
        norms = {}
        for flag in (True, False):
            group = [g for g, a in zip(leaves, actor, strict=True) if a == flag]
            norms[flag] = optax.global_norm(group) if group else jnp.zeros(())

        def clip(g, flag):
            norm = norms[flag].astype(g.dtype)
            return jax.lax.select(norm < max_norm, g, (g / norm) * max_norm)

        return treedef.unflatten([clip(g, a) for g, a in zip(leaves, actor, strict=True)]), state

    return optax.GradientTransformation(init, update)


class LeafInfo(NamedTuple):
    """Where one parameter tensor sits in the actor-critic."""

    layer_frac: float
    is_actor: float
    dense: str | None  # the Dense module whose output neurons this tensor feeds (None: no neurons, e.g. log_std)


def _path_names(path) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def actor_critic_layout(params: Any, layers: int) -> Any:
    """A tree like `params` of LeafInfo, for jax_workloads.ppo.ActorCritic with `layers` hidden layers.

    ActorCritic builds the value MLP first (Dense_0 ... Dense_L) and then the policy MLP
    (Dense_{L+1} ... Dense_{2L+1}); log_std (continuous actions) belongs to the policy's output.
    """

    def info(path, leaf) -> LeafInfo:
        names = _path_names(path)
        dense = next((n for n in names if re.fullmatch(r"Dense_\d+", n)), None)
        if dense is None:
            if names[-1] == "log_std":
                return LeafInfo(1.0, 1.0, None)
            raise ValueError(f"parameter {'/'.join(names)} is not part of ppo.ActorCritic's layout")
        i = int(dense.split("_")[1])
        if i > 2 * layers + 1:
            raise ValueError(f"{dense} does not fit an actor-critic with {layers} hidden layers")
        return LeafInfo(layer_frac=(i % (layers + 1)) / layers, is_actor=float(i > layers), dense=dense)

    layout = jax.tree_util.tree_map_with_path(info, params)
    # The value head (Dense_L) has one output: a cheap check that ActorCritic still builds the critic first.
    value_kernel = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
                    if _path_names(path)[-2:] == [f"Dense_{layers}", "kernel"]]
    if len(value_kernel) != 1 or value_kernel[0].shape[-1] != 1:
        raise ValueError(f"Dense_{layers} is not the value head: the actor-critic layout has changed")
    return layout


def dormancy(net: nn.Module, params: Any, obs: jax.Array, layers: int, activation: str) -> dict[str, jax.Array]:
    """Per Dense module, each output neuron's mean |activation| on obs divided by the mean over the layer.

    Hidden layers are measured after the nonlinearity (a dead ReLU neuron has dormancy 0),
    output layers on their raw outputs.
    """
    act = {"tanh": jnp.tanh, "relu": jax.nn.relu}[activation]
    _, state = net.apply(params, obs, capture_intermediates=True, mutable=["intermediates"])
    out = {}
    for name, calls in state["intermediates"].items():
        if not re.fullmatch(r"Dense_\d+", name):
            continue
        y = calls["__call__"][0]
        hidden = int(name.split("_")[1]) % (layers + 1) < layers
        a = jnp.abs(act(y) if hidden else y).reshape(-1, y.shape[-1]).mean(0)
        out[name] = a / (a.mean() + DORMANCY_EPS)
    return out


def _seed_key(params: Any) -> jax.Array:
    """A noise key that differs between seeds without an extra argument: folded from the initial parameters."""
    total = sum(jnp.sum(p.astype(jnp.float32)) for p in jax.tree.leaves(params))
    return jax.random.fold_in(jax.random.key(0), jax.lax.bitcast_convert_type(jnp.float32(total), jnp.uint32))


def _ema(old: jax.Array, x: jax.Array) -> jax.Array:
    # 1 - d is taken in double precision: 1 - float32(0.9999) would be off by 2e-4 relative.
    decays, rates = jnp.asarray(DECAYS, jnp.float32), jnp.asarray([1.0 - d for d in DECAYS], jnp.float32)
    return decays * old + rates * x[..., None]


def open_optimizer(rule: Callable[[Features], Any], net: nn.Module | None = None, *, layers: int = 2,
                   activation: str = "tanh", proportions: Schedule | None = None, carry_size: int = 0,
                   zero_mean: bool = False) -> optax.GradientTransformationExtraArgs:
    """Wrap `rule` as an optax transformation over OPEN's features of a ppo.ActorCritic's parameters.

    update(grads, state, params, train_frac=..., batch_frac=..., batch=...) returns the rule's
    updates (optax convention: added to the parameters). Without `batch` (or `net`) every
    dormancy is 1. A rule returning the wrong shape raises ValueError when traced.

    proportions: OPEN's training and batch proportions from the step count (`open_proportions`),
    in place of the train_frac and batch_frac the caller passes. carry_size > 0: the rule is
    recurrent; it sees its per-parameter state as f.carry (zeros at first, as flax's GRUCell
    starts) and returns (update, new_carry). zero_mean: the updates' mean over every parameter
    is subtracted (OPEN's GRU optimizer does this).
    """
    n = len(DECAYS)

    def init(params):
        zeros = jax.tree.map(lambda p: jnp.zeros((*p.shape, n), jnp.float32), params)
        carry = (jax.tree.map(lambda p: jnp.zeros((*p.shape, carry_size), jnp.float32), params) if carry_size
                 else None)
        return OpenState(zeros, zeros, jnp.zeros((), jnp.int32), _seed_key(params), carry)

    def update(grads, state, params=None, *, train_frac=0.0, batch_frac=0.0, batch=None, **_):
        if params is None:
            raise ValueError("open_optimizer needs the parameters: call update(grads, state, params)")
        if proportions is not None:
            train_frac, batch_frac = open_proportions(state.step, proportions)
        layout = actor_critic_layout(params, layers)
        momentum = jax.tree.map(_ema, state.momentum, grads)
        sq_momentum = jax.tree.map(lambda v, g: _ema(v, g * g), state.sq_momentum, grads)
        step = state.step + 1
        key, noise_key = jax.random.split(state.key)
        dorm = dormancy(net, params, batch.obs, layers, activation) if batch is not None and net is not None else {}

        leaves, treedef = jax.tree.flatten(params)
        paths = [p for p, _ in jax.tree_util.tree_leaves_with_path(params)]
        noise_keys = jax.random.split(noise_key, len(leaves))
        carries = treedef.flatten_up_to(state.carry) if carry_size else [None] * len(leaves)
        per_leaf = zip(leaves, treedef.flatten_up_to(grads), treedef.flatten_up_to(momentum),
                       treedef.flatten_up_to(sq_momentum), treedef.flatten_up_to(layout), noise_keys, paths, carries,
                       strict=True)
        updates, new_carries = [], []
        for p, g, m, v, info, k, path, c in per_leaf:
            full = lambda x, p=p: jnp.full(p.shape, x, jnp.float32)  # noqa: E731 - a scalar as a per-parameter input
            d = jnp.broadcast_to(dorm[info.dense], p.shape) if info.dense in dorm else full(1.0)
            f = Features(param=p.astype(jnp.float32), grad=g.astype(jnp.float32), momentum=m, sq_momentum=v,
                         step=full(step), train_frac=full(train_frac), batch_frac=full(batch_frac),
                         layer_frac=full(info.layer_frac), dormancy=d, is_actor=full(info.is_actor),
                         noise=jax.random.normal(k, p.shape, jnp.float32), carry=c)
            where = f"parameter {'/'.join(_path_names(path)[-2:])} of shape {p.shape}"
            if carry_size:
                out = rule(f)
                if not (isinstance(out, tuple) and len(out) == 2):
                    raise ValueError(f"a recurrent update rule must return (update, new_carry); for {where} it "
                                     f"returned {type(out).__name__}")
                u, new_c = jnp.asarray(out[0]), jnp.asarray(out[1])
                if new_c.shape != c.shape:
                    raise ValueError(f"the update rule returned a carry of shape {new_c.shape} for {where}; "
                                     f"expected {c.shape}")
                new_carries.append(new_c.astype(jnp.float32))
            else:
                u = jnp.asarray(rule(f))
            if u.shape != p.shape:
                raise ValueError(f"the update rule returned shape {u.shape} for {where}")
            updates.append(u.astype(p.dtype))
        if zero_mean:  # OPEN: "Make update globally 0", over actor and critic together
            mean = jnp.concatenate([u.reshape(-1) for u in updates]).mean()
            updates = [u - mean.astype(u.dtype) for u in updates]
        carry = treedef.unflatten(new_carries) if carry_size else None
        return treedef.unflatten(updates), OpenState(momentum, sq_momentum, step, key, carry)

    return optax.GradientTransformationExtraArgs(init, update)


def example_features(shape: tuple[int, ...], key: jax.Array, step: int = 1, carry_size: int = 0) -> Features:
    """Plausible random features for one tensor: for gating a candidate rule and for tests.

    carry_size > 0 adds a recurrent rule's state f.carry ([*shape, carry_size], small random values)."""
    ks = jax.random.split(key, 6)
    n = len(DECAYS)
    g = 0.01 * jax.random.normal(ks[0], shape)
    return Features(
        param=0.1 * jax.random.normal(ks[1], shape), grad=g,
        momentum=0.01 * jax.random.normal(ks[2], (*shape, n)),
        sq_momentum=1e-4 * jax.random.uniform(ks[3], (*shape, n)),
        step=jnp.full(shape, float(step)), train_frac=jnp.full(shape, 0.3), batch_frac=jnp.full(shape, 0.5),
        layer_frac=jnp.full(shape, 0.5), dormancy=jax.random.uniform(ks[4], shape, maxval=2.0),
        is_actor=jnp.ones(shape), noise=jax.random.normal(ks[5], shape),
        carry=0.1 * jax.random.normal(jax.random.fold_in(key, 7), (*shape, carry_size)) if carry_size else None)
