"""The sealed PPO agent that the PPO-agent templates (kinetix, navix) share: its tracer side and its harness side.

A template's editable agent.py defines CONTINUOUS, make_network(num_actions, action_dim) (a flax module:
observations -> (policy_out, value)) and loss(params, apply_fn, batch, config, discrete). Two processes, two
sandboxes:

- Tracer (the only process that imports agent.py): `import_agent` imports and checks it; `export_agent` exports,
  for one environment, the functions training and evaluation call (init, apply, loss with its derivative, and the
  network with a symbolic batch size for the evaluator) as StableHLO (jax_workloads.exported).
- Harness (never imports agent.py): `load_agent` loads those exports, each checked to be plain computation, and
  `gate` checks them on small inputs; `train` trains every seed in one compiled call (ppo.make_train) and
  `export_greedy_policy` exports every seed's greedy policy for the evaluator (policy_export.export_policy).
"""

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jax_workloads import exported, ppo, sealed
from jax_workloads.policy_export import export_policy, init_lapack

# ---------------------------------------------------------------- tracer side


def import_agent(path: str = "agent.py"):
    """Import agent.py and check it defines CONTINUOUS, make_network(num_actions, action_dim) and loss (5 args)."""
    module = None
    try:
        spec = importlib.util.spec_from_file_location("candidate_agent", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sealed.fail(f"candidate agent.py has a syntax error at line {e.lineno}: {e.msg}")
    except Exception as e:  # noqa: BLE001 - any import-time error is the candidate's
        sealed.fail(f"candidate agent.py failed to import: {sealed.describe(e)}")
    continuous = getattr(module, "CONTINUOUS", False)
    if not isinstance(continuous, bool):
        sealed.fail(f"candidate agent.py: CONTINUOUS must be True or False, not {continuous!r}")
    network = sealed.check_function(module, "make_network", 2, "agent.py")
    return continuous, network, sealed.check_function(module, "loss", 5, "agent.py")



def ppo_config(config: dict) -> ppo.PPOConfig:
    """The PPOConfig of [config.ppo] as the harness reads it (harness.ppo_config): the loss's `config` argument."""
    try:
        return ppo.PPOConfig(**config.get("ppo", {}))
    except TypeError as e:
        sealed.fail(f"template.toml [config.ppo]: {sealed.describe(e)}")


def _raised(what: str, fn, *args):
    """jax.eval_shape(fn, *args), or fail() saying `what` raised (before export_function's longer message)."""
    try:
        return jax.eval_shape(fn, *args)
    except Exception as e:  # noqa: BLE001 - any tracing error is the candidate's
        sealed.fail(f"{what} raised: {sealed.describe(e)}")


def minibatch_specs(apply, params, env: ppo.Env, config: ppo.PPOConfig) -> ppo.Batch:
    """The shapes and dtypes of the minibatch ppo.make_train gives the loss, for this network.

    Its fields are made as make_train makes them: observations (float32), the action sampled from the
    network's policy output and its log-probability, the network's value, and the advantage and target
    of GAE (float32: the rewards are).
    """
    n = config.minibatch_size

    def batch(params, obs, key):
        policy_out, value = apply(params, obs)
        action = ppo.sample_action(key, policy_out, env.discrete)
        target = jnp.zeros((n,), jnp.promote_types(value.dtype, jnp.float32))
        return ppo.Batch(obs, action, ppo.log_prob(policy_out, action, env.discrete), value, target, target)

    return _raised(f"the network (with ppo.sample_action and ppo.log_prob) on a minibatch of {n} observations",
                   batch, params, exported.spec((n, env.obs_size)), jax.random.key(0))


def export_policy_network(apply, params, obs_size: int, path: str) -> None:
    """Export apply(params, obs [b, obs_size]) with b symbolic, for the CPU (where the evaluator plays).

    As export_function exports (a leading vmapped axis on every argument and result, so that
    exported.import_function loads it), with a second symbolic axis in the same scope: the batch b.
    """
    vmapped, b = jax.export.symbolic_shape(f"{exported._AXIS}, b")
    args = (jax.tree.map(lambda s: exported.spec((vmapped, *s.shape), s.dtype), params),
            exported.spec((vmapped, b, obs_size)))
    try:
        exp = jax.export.export(jax.jit(jax.vmap(apply)), platforms=["cpu"])(*args)
        data = exp.serialize(vjp_order=0)
    except Exception as e:  # noqa: BLE001 - any tracing error is the candidate's
        sealed.fail("the network could not be exported for observations [b, obs_size] with a symbolic batch size b "
                    f"(the evaluator picks its own): {sealed.describe(e)}")
    Path(f"{path}{exported.SUFFIX}").write_bytes(data)


def export_agent(make_network: Callable, loss: Callable, env: ppo.Env, ppo_cfg: ppo.PPOConfig,
                 out: str | Path, prefix: str = "") -> None:
    """Export the candidate's network and loss for training on env into `out` (see the module's docstring).

    The files are named prefix + init, apply, loss and policy: a template with several environments exports one
    set per environment into the one flat folder the runner copies.
    """
    out = Path(out)
    try:
        net = make_network(env.num_actions, env.action_dim)
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"make_network raised: {sealed.describe(e)}")
    if not isinstance(net, nn.Module):
        sealed.fail(f"make_network must return a flax.linen Module, not {type(net).__name__}")

    def init(key_data, obs):
        return net.init(jax.random.wrap_key_data(key_data), obs)

    key_data = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
    one_obs = exported.spec((env.obs_size,))
    params = _raised("the network's init on one observation", init, key_data, one_obs)
    rollout_obs = exported.spec((ppo_cfg.num_envs, env.obs_size))
    _raised(f"the network on a batch of {ppo_cfg.num_envs} observations", net.apply, params, rollout_obs)
    batch = minibatch_specs(net.apply, params, env, ppo_cfg)

    def loss_fn(params, *fields):
        return loss(params, net.apply, ppo.Batch(*fields), ppo_cfg, env.discrete)

    _raised(f"loss on a minibatch of {ppo_cfg.minibatch_size} transitions", loss_fn, params, *batch)

    exported.export_function(init, (key_data, one_obs), out / f"{prefix}init", name="the network's init", vjp=False)
    exported.export_function(net.apply, (params, rollout_obs), out / f"{prefix}apply", name="the network", vjp=False)
    exported.export_function(loss_fn, (params, *batch), out / f"{prefix}loss", name="loss")
    export_policy_network(net.apply, params, env.obs_size, str(out / f"{prefix}policy"))


# ---------------------------------------------------------------- harness side

MAX_PARAMS = 5_000_000  # per seed; Kinetix's and NAVIX's MLP policies are well under 1M
# What the traced functions may call besides StableHLO: sealed.PLAIN_CUSTOM_CALLS (shape assertions, LAPACK, and
# mhlo.erf, which flax's default lecun_normal initialisation calls through its truncated normal) and
# the GPU's linear algebra, cuSOLVER's and hipSOLVER's kernels, which the tracer's exports hold when it ran on a
# GPU (orthogonal initialisation is a QR decomposition: cusolver_geqrf_ffi, cusolver_orgqr_ffi). Compiled into
# jaxlib as LAPACK is; host callbacks and any other foreign code stay refused.
CUSTOM_CALLS = re.compile(r"^(shape_assertion|mhlo\.erf|lapack_[a-z0-9]+_ffi|(cu|hip)solver_[a-z0-9]+_ffi)$")


def _finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


class Agent(NamedTuple):
    """The candidate agent as the tracer exported it (trace.py), each function imported and checked here."""

    continuous: bool   # its action head: Kinetix's continuous actions, or its discrete ones
    init: Callable     # init(key data, obs [obs_size]) -> params
    apply: Callable    # apply(params, obs [num_envs, obs_size]) -> (policy_out, value)
    loss: Callable     # loss(params, obs, action, log_prob, value, advantage, target) -> (total, aux), one minibatch
    policy: Callable   # apply(params, obs [b, obs_size]) for any b, lowered for the CPU: what the evaluator plays

    def network(self) -> ppo.Network:
        """The network as ppo.make_train calls it: init from a key, apply on a rollout step's observations."""
        return ppo.Network(lambda key, obs: self.init(jax.random.key_data(key), obs), self.apply)

    def ppo_loss(self, params, apply_fn, batch: ppo.Batch, config: ppo.PPOConfig, discrete: bool):
        """The candidate's loss as make_train calls it. Its own network's apply, the PPO settings (config.json's, as
        here) and its action head are baked into the export: apply_fn, config and discrete are not passed on."""
        return self.loss(params, *batch)


def load_agent(directory: str | Path = "exports", prefix: str = "") -> Agent:
    """The tracer's exports (plain computation, sealed.load_export) and its manifest; fail() when one is refused."""
    directory = Path(directory)
    try:
        continuous = exported.read_manifest(directory).get("continuous")
        fns = [exported.import_function(directory / f"{prefix}{name}", custom_calls=CUSTOM_CALLS)
               for name in ("init", "apply", "loss", "policy")]
    except sealed.ArtifactError as e:
        sealed.fail(f"the traced agent was refused: {e}")
    if not isinstance(continuous, bool):
        sealed.fail(f"the traced agent was refused: its manifest's continuous is {continuous!r}, not true or false")
    init_lapack()  # the init's QR decomposition, on the CPU, would otherwise segfault here (jax-ml/jax#29610)
    return Agent(continuous, *fns)


def _shapes(tree) -> tuple:
    """(structure, [dtype[shape] of each leaf]) of a pytree of arrays, to compare and to print."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, [f"{jnp.dtype(x.dtype).name}{list(x.shape)}" for x in leaves]


def _tile(x, n: int):
    """The rows of x repeated to n rows."""
    return jnp.resize(x, (n, *x.shape[1:]))


def gate(agent: Agent, env: ppo.Env, config: ppo.PPOConfig) -> None:
    """Cheap checks before minutes are spent: the network's parameters and outputs, and the loss on a batch.

    Each function is called at the shapes training calls it with: the network on num_envs observations, the
    loss on a minibatch (the network's outputs on those observations, repeated to its size); the network
    exported for the evaluator must give the trained network's shapes on those observations. Shapes first
    (nothing allocated or compiled), then the values of all of it in one compiled call.
    """
    n, m = config.num_envs, config.minibatch_size
    net = agent.network()

    def network(key):
        k_init, k_obs = jax.random.split(key)
        params = net.init(k_init, jnp.zeros((env.obs_size,)))
        # Kinetix's symbolic observations are clipped to [-10, 10]; most entries are small.
        obs = jax.random.uniform(k_obs, (n, env.obs_size), minval=-2.0, maxval=2.0)
        return params, obs, net.apply(params, obs)

    def minibatch(key, obs, policy_out, value):
        k_act, k_adv = jax.random.split(key)
        policy_out, value, obs = jax.tree.map(lambda x: _tile(x, m), (policy_out, value, obs))
        action = ppo.sample_action(k_act, policy_out, env.discrete)
        return ppo.Batch(obs, action, ppo.log_prob(policy_out, action, env.discrete), value,
                         jax.random.normal(k_adv, (m,)), value + 1.0)

    def loss(params, batch):
        return agent.ppo_loss(params, net.apply, batch, config, env.discrete)

    def probe(key):
        k_net, k_batch = jax.random.split(key)
        params, obs, (policy_out, value) = network(k_net)
        (total, aux), grads = jax.value_and_grad(loss, has_aux=True)(params, minibatch(k_batch, obs, policy_out, value))
        return policy_out, value, total, aux, grads

    key = jax.random.key(0)
    try:
        # Counted from shapes alone, so that an oversized network is refused before it is allocated.
        shapes = jax.eval_shape(net.init, key, jnp.zeros((env.obs_size,)))
    except Exception as e:  # noqa: BLE001 - e.g. exported for another observation size
        sealed.fail(f"the network's init does not take a key and one observation of {env.obs_size}: "
                    f"{sealed.describe(e)}")
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    if n_params > MAX_PARAMS:
        sealed.fail(f"the network has {n_params:,} parameters; at most {MAX_PARAMS:,} are allowed")
    if not all(jnp.issubdtype(x.dtype, jnp.floating) for x in jax.tree.leaves(shapes)):
        sealed.fail("the network's parameters must be floating-point arrays")
    try:
        params, obs, out = jax.eval_shape(network, key)
        policy_out, value = out
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"the network raised on a batch of {n} observations: {sealed.describe(e)}")
    check_outputs(policy_out, value, n, env)
    # The evaluator's network, at this batch (export_policy exports the greedy policy for a symbolic one).
    try:
        policy_shapes = _shapes(jax.eval_shape(agent.policy, params, obs))
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"the network exported for the evaluator raised on a batch of {n} observations: "
                    f"{sealed.describe(e)}")
    if policy_shapes != _shapes((policy_out, value)):
        sealed.fail(f"the network exported for the evaluator returns {policy_shapes[1]} on a batch of {n} "
                    f"observations, the network trained {_shapes((policy_out, value))[1]}")
    batch = jax.eval_shape(minibatch, key, obs, policy_out, value)
    try:
        out = jax.eval_shape(loss, params, batch)
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"loss raised on a minibatch of {m}: {sealed.describe(e)}")
    if not isinstance(out, tuple) or len(out) != 2:
        sealed.fail(f"loss must return (scalar, dict of diagnostics), not {type(out).__name__}")
    if out[0].shape != ():
        sealed.fail(f"loss must return (scalar, dict) and its first value has shape {out[0].shape}")
    if not isinstance(out[1], dict):
        sealed.fail(f"loss must return (scalar, dict of diagnostics); its second value is a {type(out[1]).__name__}")
    try:
        jax.eval_shape(jax.grad(lambda p, b: loss(p, b)[0]), params, batch)
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"the loss's gradient raised on a minibatch of {m}: {sealed.describe(e)}")

    try:
        policy_out, value, total, aux, grads = sealed.run_once(probe, key)
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"the network and loss failed on a batch of {n} observations: {sealed.describe(e)}")
    if not _finite((policy_out, value)):
        sealed.fail(f"the network returned NaN or infinite values on a batch of {n} observations")
    if not _finite(total) or not _finite(aux):
        sealed.fail(f"loss returned NaN or infinite values on a minibatch of {m}")
    if not _finite(grads):
        sealed.fail(f"loss has NaN or infinite gradients on a minibatch of {m}")


def check_outputs(policy_out, value, n: int, env: ppo.Env) -> None:
    """fail() unless the network's outputs on n observations are (logits or (mean, log_std), value) of env's shapes."""
    if env.discrete:
        shapes_ok = hasattr(policy_out, "shape") and policy_out.shape == (n, env.num_actions)
        want = f"logits of shape ({n}, {env.num_actions})"
    else:
        shapes_ok = (isinstance(policy_out, tuple) and len(policy_out) == 2
                     and all(getattr(p, "shape", None) == (n, env.action_dim) for p in policy_out))
        want = f"(mean, log_std), each of shape ({n}, {env.action_dim})"
    if not shapes_ok:
        got = jax.tree.map(lambda x: tuple(jnp.shape(x)), policy_out)
        sealed.fail(f"the network must return (policy_out, value) with policy_out = {want}; got policy_out {got}")
    if getattr(value, "shape", None) != (n,):
        sealed.fail(f"the network's value must have shape ({n},), got {jnp.shape(value)}")
    leaves = jax.tree.leaves((policy_out, value))
    if not all(jnp.issubdtype(x.dtype, jnp.floating) for x in leaves):
        sealed.fail(f"the network's outputs must be floating-point, not {[str(x.dtype) for x in leaves]}")


def train(agent: Agent, env: ppo.Env, ppo_cfg: ppo.PPOConfig, rngs, clock: sealed.Stopwatch,
          progress: sealed.Progress | None = None, label: str = "") -> dict:
    """Train every seed (one key per seed in rngs) in one compiled call; fail() on an error or non-finite parameters.

    Returns ppo.make_train's {"params", "metrics"}, each with a leading seed axis; laps `compile` and `train`
    (suffixed with label) on the clock.
    """
    try:
        train_fn = jax.jit(jax.vmap(ppo.make_train(ppo_cfg, env, network=agent.network(), loss=agent.ppo_loss,
                                                   progress=progress.update if progress else None)))
        compiled = train_fn.lower(rngs).compile()
        clock.lap(f"compile{label}")
        out = jax.block_until_ready(compiled(rngs))
        clock.lap(f"train{label}")
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"training failed: {sealed.describe(e)}")
    seeds = len(rngs)
    finite = np.ones(seeds, bool)
    for x in jax.tree.leaves(out["params"]):
        finite &= np.isfinite(np.asarray(x)).reshape(seeds, -1).all(-1)
    if not finite.all():
        sealed.fail(f"training diverged: non-finite network parameters in seed(s) {np.where(~finite)[0].tolist()}")
    return out


def export_greedy_policy(agent: Agent, env: ppo.Env, params, directory: str | Path, logits: bool = False) -> None:
    """Export every seed's greedy policy (argmax of the logits, or the Gaussian mean) with its parameters; with
    logits (discrete actions only), the policy's logits instead, float32, for an evaluator that samples itself."""

    def act(params, obs):
        def one(p, o):
            policy_out, _ = agent.policy(p, o)  # the network for any batch size, lowered for the CPU
            if logits:
                return policy_out.astype(jnp.float32)
            a = ppo.greedy_action(policy_out, env.discrete)
            return a.astype(jnp.int32) if env.discrete else a.astype(jnp.float32)
        return jax.vmap(one)(params, obs)

    try:
        export_policy(act, params, env.obs_size, directory)
    except Exception as e:  # noqa: BLE001 - e.g. a network whose shapes cannot stay symbolic in the batch size
        sealed.fail(f"exporting the policy failed: {sealed.describe(e)}")
