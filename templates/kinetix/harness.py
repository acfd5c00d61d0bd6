"""Kinetix harness (fixed; runs inside the sandbox): train the candidate agent with PPO, export its greedy policy.

Reads config.json from the work folder, gates the candidate agent (agent.py) on tiny inputs,
trains every seed in one compiled call (jax_workloads/ppo.py, with Kinetix's PPO settings) on random variants of the
configured Kinetix levels, and exports the greedy policy of every seed as a jax.export
artifact (serialized StableHLO) plus its parameters as plain arrays. It never scores anything:
the evaluator plays the exported policy on variants of its own choosing.
"""

import time

STARTED = time.time()

import importlib.util  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jax_workloads import kinetix_tasks as kt  # noqa: E402
from jax_workloads import ppo, sealed  # noqa: E402

MAX_PARAMS = 5_000_000  # per seed; Kinetix MLP policies are well under 1M


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
    """The PPOConfig of [config.ppo], as the run's profile (cpu or gpu budget) left it in config.json."""
    try:
        return ppo.PPOConfig(**config.get("ppo", {}))
    except TypeError as e:
        sealed.fail(f"template.toml [config.ppo]: {sealed.describe(e)}")


def _finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


def gate(make_network, loss, env: ppo.Env, config: ppo.PPOConfig):
    """Cheap checks before minutes are spent: the network's outputs and the loss on a tiny batch.

    Returns the network module.
    """
    n = 8
    try:
        net = make_network(env.num_actions, env.action_dim)
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"make_network raised: {sealed.describe(e)}")
    if not isinstance(net, nn.Module):
        sealed.fail(f"make_network must return a flax.linen Module, not {type(net).__name__}")
    k_init, k_obs, k_act, k_adv = jax.random.split(jax.random.key(0), 4)
    # Kinetix's symbolic observations are clipped to [-10, 10]; most entries are small.
    obs = jax.random.uniform(k_obs, (n, env.obs_size), minval=-2.0, maxval=2.0)
    try:
        # Counted from shapes alone, so that an oversized network is refused before it is allocated.
        shapes = jax.eval_shape(net.init, k_init, jnp.zeros((env.obs_size,)))
        n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
        if n_params > MAX_PARAMS:
            sealed.fail(f"the network has {n_params:,} parameters; at most {MAX_PARAMS:,} are allowed")
        params = net.init(k_init, jnp.zeros((env.obs_size,)))
        policy_out, value = net.apply(params, obs)
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"the network raised on a batch of {n} observations: {sealed.describe(e)}")
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
    if not _finite((policy_out, value)):
        sealed.fail("the network returned NaN or infinite values on a tiny batch")

    action = ppo.sample_action(k_act, policy_out, env.discrete)
    batch = ppo.Batch(obs, action, ppo.log_prob(policy_out, action, env.discrete), value,
                      jax.random.normal(k_adv, (n,)), value + 1.0)
    try:
        out = loss(params, net.apply, batch, config, env.discrete)
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"loss raised on a tiny batch: {sealed.describe(e)}")
    if not isinstance(out, tuple) or len(out) != 2:
        sealed.fail(f"loss must return (scalar, dict of diagnostics), not {type(out).__name__}")
    total, aux = out
    if jnp.shape(total) != ():
        sealed.fail(f"loss must return (scalar, dict) and its first value has shape {jnp.shape(total)}")
    if not isinstance(aux, dict):
        sealed.fail(f"loss must return (scalar, dict of diagnostics); its second value is a {type(aux).__name__}")
    try:
        grads = jax.grad(lambda p: loss(p, net.apply, batch, config, env.discrete)[0])(params)
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"the loss's gradient raised on a tiny batch: {sealed.describe(e)}")
    if not _finite(total) or not _finite(aux):
        sealed.fail("loss returned NaN or infinite values on a tiny batch")
    if not _finite(grads):
        sealed.fail("loss has NaN or infinite gradients on a tiny batch")
    return net


def main() -> None:
    clock = sealed.Stopwatch(STARTED)
    cfg = json.loads(Path("config.json").read_text())
    config, seeds = cfg["config"], cfg["seeds"]
    continuous, make_network, loss = load_agent()
    ppo_cfg = ppo_config(config)
    try:
        env = kt.make_env(config["levels"], kt.Variation(**config.get("variation", {})), continuous=continuous,
                          max_timesteps=config["max_timesteps"],
                          dense_reward_scale=config.get("dense_reward_scale", kt.DENSE_REWARD_SCALE))
    except (ValueError, TypeError) as e:
        sealed.fail(f"template.toml [config]: {sealed.describe(e)}")
    net = gate(make_network, loss, env, ppo_cfg)
    rngs = jax.random.split(jax.random.key(config["train_seed"]), seeds)
    clock.lap("setup")
    try:
        progress = sealed.Progress(ppo_cfg.num_updates)  # for the live view: how far training is
        train = jax.jit(jax.vmap(ppo.make_train(ppo_cfg, env, network=net, loss=loss, progress=progress.update)))
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
            policy_out, _ = net.apply(p, o)
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
