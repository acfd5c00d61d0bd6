"""Kinetix harness (fixed; runs inside the sandbox): train the candidate agent with PPO, export its greedy policy.

Reads config.json from the work folder and the candidate agent as the tracer (trace.py) exported it: its
network's init and apply, its loss (with its derivative) and its network for the evaluator's batches, each
StableHLO checked to be plain computation (exports/*.jaxexport), and its declared action head
(exports/manifest.json, checked here). This process never imports agent.py. It gates the exports on small
inputs, trains every seed in one compiled call (jax_workloads/ppo.py, with Kinetix's PPO settings) on random
variants of the configured Kinetix levels, and exports the greedy policy of every seed as a jax.export
artifact (serialized StableHLO) plus its parameters as plain arrays. It never scores anything:
the evaluator plays the exported policy on variants of its own choosing.
"""

import time

STARTED = time.time()

import json  # noqa: E402
import re  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import NamedTuple  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jax_workloads import exported, ppo, sealed  # noqa: E402
from jax_workloads import kinetix_tasks as kt  # noqa: E402

MAX_PARAMS = 5_000_000  # per seed; Kinetix MLP policies are well under 1M
# What the traced functions may call besides StableHLO: sealed.PLAIN_CUSTOM_CALLS (shape assertions, LAPACK) and
# the GPU's linear algebra, cuSOLVER's and hipSOLVER's kernels, which the tracer's exports hold when it ran on a
# GPU (orthogonal initialisation is a QR decomposition: cusolver_geqrf_ffi, cusolver_orgqr_ffi). Compiled into
# jaxlib as LAPACK is; host callbacks and any other foreign code stay refused.
CUSTOM_CALLS = re.compile(r"^(shape_assertion|lapack_[a-z0-9]+_ffi|(cu|hip)solver_[a-z0-9]+_ffi)$")


def ppo_config(config: dict) -> ppo.PPOConfig:
    """The PPOConfig of [config.ppo], as the run's profile (cpu or gpu budget) left it in config.json."""
    try:
        return ppo.PPOConfig(**config.get("ppo", {}))
    except TypeError as e:
        sealed.fail(f"template.toml [config.ppo]: {sealed.describe(e)}")


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


def load_agent(directory: str | Path = "exports") -> Agent:
    """The tracer's exports (plain computation, sealed.load_export) and its manifest; fail() when one is refused."""
    directory = Path(directory)
    try:
        continuous = exported.read_manifest(directory).get("continuous")
        fns = [exported.import_function(directory / name, custom_calls=CUSTOM_CALLS)
               for name in ("init", "apply", "loss", "policy")]
    except sealed.ArtifactError as e:
        sealed.fail(f"the traced agent was refused: {e}")
    if not isinstance(continuous, bool):
        sealed.fail(f"the traced agent was refused: its manifest's continuous is {continuous!r}, not true or false")
    kt.init_lapack()  # the init's QR decomposition, on the CPU, would otherwise segfault here (jax-ml/jax#29610)
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
    # The evaluator's network, at this batch (kt.export_policy exports the greedy policy for a symbolic one).
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
        policy_out, value, total, aux, grads = jax.jit(probe)(key)
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


def main() -> None:
    clock = sealed.Stopwatch(STARTED)
    cfg = json.loads(Path("config.json").read_text())
    config, seeds = cfg["config"], cfg["seeds"]
    agent = load_agent()  # this process never imports agent.py: the tracer exported it
    ppo_cfg = ppo_config(config)
    try:
        env = kt.task_env(config, agent.continuous)
    except (ValueError, TypeError, KeyError) as e:
        sealed.fail(f"template.toml [config]: {sealed.describe(e)}")
    gate(agent, env, ppo_cfg)
    rngs = jax.random.split(jax.random.key(config["train_seed"]), seeds)
    clock.lap("setup")
    try:
        progress = sealed.Progress(ppo_cfg.num_updates)  # for the live view: how far training is
        train = jax.jit(jax.vmap(ppo.make_train(ppo_cfg, env, network=agent.network(), loss=agent.ppo_loss,
                                                    progress=progress.update)))
        compiled = train.lower(rngs).compile()
        clock.lap("compile")
        out = jax.block_until_ready(compiled(rngs))
        clock.lap("train")
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"training failed: {sealed.describe(e)}")
    params = out["params"]
    finite = np.ones(seeds, bool)
    for x in jax.tree.leaves(params):
        finite &= np.isfinite(np.asarray(x)).reshape(seeds, -1).all(-1)
    if not finite.all():
        sealed.fail(f"training diverged: non-finite network parameters in seed(s) {np.where(~finite)[0].tolist()}")

    def act(params, obs):
        """Greedy actions of every seed's policy: argmax of the logits, or the Gaussian mean."""
        def one(p, o):
            policy_out, _ = agent.policy(p, o)  # the network for any batch size, lowered for the CPU
            a = ppo.greedy_action(policy_out, env.discrete)
            return a.astype(jnp.int32) if env.discrete else a.astype(jnp.float32)
        return jax.vmap(one)(params, obs)

    try:
        kt.export_policy(act, params, env.obs_size, "artifacts")
    except Exception as e:  # noqa: BLE001 - e.g. a network whose shapes cannot stay symbolic in the batch size
        sealed.fail(f"exporting the policy failed: {sealed.describe(e)}")
    # The training curves (stochastic policy, training variants) are for figures only: the evaluator
    # checks their shapes and passes them on, labelled as the harness's report; they are never the metric.
    keep = kt.curve_indices(ppo_cfg.num_updates)
    metrics = out["metrics"]
    sealed.export_arrays("artifacts/train_curves.npz", {
        "steps": ((keep + 1) * ppo_cfg.num_envs * ppo_cfg.num_steps).astype(np.float32),
        "solved": np.asarray(metrics["solved"], np.float32)[:, keep],
        "return": np.asarray(metrics["return"], np.float32)[:, keep],
    })
    clock.lap("export")
    clock.save("timings.json")


if __name__ == "__main__":
    main()
