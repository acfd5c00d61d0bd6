"""Kinetix tracer (fixed; runs in a sandbox of its own): import the candidate agent, export its network and loss.

The only process that runs agent.py's Python. It builds the candidate's network and exports, as StableHLO
(jax_workloads.exported), the functions training and evaluation call, each at the shapes they are called with:

- exports/init: init(key data, one observation [obs_size]) -> params, the network's initialisation
  (key data: jax.random.key_data of a key; the harness passes its own keys' data);
- exports/apply: apply(params, observations [num_envs, obs_size]) -> (policy_out, value), one rollout step;
- exports/loss: loss(params, obs, action, log_prob, value, advantage, target) -> (total, aux dict) on one PPO
  minibatch (ppo.Batch's fields), the candidate's loss with its own network's apply baked in, with its derivative;
- exports/policy: apply(params, observations [b, obs_size]) with a symbolic batch size b, lowered for the CPU:
  the network the harness composes into the greedy policy the evaluator plays on batches of its own choosing;

and exports/manifest.json: {"continuous": CONTINUOUS}. PPO's settings are the public [config.ppo] of
config.json, read as the harness reads them. The harness trains with these exports, checks every one of them
itself (it trusts nothing this process says) and never imports agent.py, so whatever else the module does at
import (rebinding harness functions, threads, exit handlers, files) ends with this sandbox.
"""

import importlib.util
import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

from jax_workloads import exported, ppo, sealed
from jax_workloads import kinetix_tasks as kt

EXPORTS = "exports"


def load_agent(path: str = "agent.py"):
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


def trace(agent_path: str, config: dict, out: str | Path = EXPORTS) -> None:
    """Export the agent at agent_path for the harness into `out` (see the module's docstring); fail() otherwise."""
    out = Path(out)
    continuous, make_network, loss = load_agent(agent_path)
    ppo_cfg = ppo_config(config)
    try:
        env = kt.task_env(config, continuous)
    except (ValueError, TypeError, KeyError) as e:
        sealed.fail(f"template.toml [config]: {sealed.describe(e)}")
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

    exported.export_function(init, (key_data, one_obs), out / "init", name="the network's init", vjp=False)
    exported.export_function(net.apply, (params, rollout_obs), out / "apply", name="the network", vjp=False)
    exported.export_function(loss_fn, (params, *batch), out / "loss", name="loss")
    export_policy_network(net.apply, params, env.obs_size, str(out / "policy"))
    exported.write_manifest(out, {"continuous": continuous})


def main() -> None:
    trace("agent.py", json.loads(Path("config.json").read_text())["config"])


if __name__ == "__main__":
    main()
