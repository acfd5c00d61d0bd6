"""OPEN harness (fixed; runs inside the sandbox): train PPO with the candidate update rule, export the policy.

Reads config.json from the work folder, gates the candidate rule on tiny inputs, trains
PPO (jax_workloads.ppo) with the rule as its optimizer for every seed in one compiled
call, and exports only plain arrays: the trained actor-critic's parameters
(artifacts/policy.npz) and, for figures only, the per-update training return
(artifacts/curve.npz). It never scores anything.
"""

import time

STARTED = time.time()

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jax_workloads import open_features as of  # noqa: E402
from jax_workloads import ppo, sealed  # noqa: E402

GATE_SHAPES = [(6, 4), (4,), (1,)]  # a kernel, a bias, a value head's bias


def gate(rule) -> None:
    """Cheap check before minutes are spent: the rule runs under jit and returns finite updates of the right shape."""
    for i, shape in enumerate(GATE_SHAPES):
        for step in (1, 100):
            f = of.example_features(shape, jax.random.key(i), step=step)
            try:
                out = jnp.asarray(jax.jit(rule)(f))
            except Exception as e:  # noqa: BLE001 - any error here is the candidate's
                sealed.fail(f"update rule raised on tiny inputs: {sealed.describe(e)}")
            if out.shape != shape:
                sealed.fail(f"update rule must return an update of the parameter's shape {shape}; "
                            f"it returned shape {out.shape}")
            if not jnp.issubdtype(out.dtype, jnp.floating):
                sealed.fail(f"update rule must return floating-point values, got dtype {out.dtype}")
            if not bool(jnp.all(jnp.isfinite(out))):
                sealed.fail(f"update rule returned NaN or infinite values on tiny inputs (shape {shape}, step {step})")


def make_optimizer(rule, config: ppo.PPOConfig, env: ppo.Env) -> optax.GradientTransformationExtraArgs:
    """PureJaxRL's global-norm gradient clipping, then the rule over OPEN's features."""
    net = ppo.default_network(config, env)
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                       of.open_optimizer(rule, net, layers=config.layers, activation=config.activation))


def flatten(params) -> dict[str, np.ndarray]:
    """{"Dense_0.kernel": array, ...}: the parameter tree as plain named arrays (seed axis first)."""
    return {".".join(str(k.key) for k in path[1:]): np.asarray(leaf, np.float32)
            for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


def main() -> None:
    clock = sealed.Stopwatch(STARTED)
    cfg = json.loads(Path("config.json").read_text())
    config, seeds = cfg["config"], cfg["seeds"]
    rule = sealed.load_candidate("optimizer.py", "update", 1)
    gate(rule)
    env = ppo.gymnax_env(config["env"])
    ppo_config = ppo.PPOConfig(**config["ppo"])
    progress = sealed.Progress(ppo_config.num_updates)  # for the live view: how far training is
    train = ppo.make_train(ppo_config, env, optimizer=make_optimizer(rule, ppo_config, env), optimizer_sees_batch=True,
                           progress=progress.update)
    rngs = jax.random.split(jax.random.key(config["train_seed"]), seeds)
    clock.lap("setup")
    try:
        compiled = jax.jit(jax.vmap(train)).lower(rngs).compile()
        clock.lap("compile")
        out = jax.block_until_ready(compiled(rngs))
        clock.lap("train")
    except Exception as e:  # noqa: BLE001 - a rule that breaks the training program is the candidate's fault
        sealed.fail(f"training failed: {sealed.describe(e)}")
    params = flatten(out["params"])
    finite = np.all([np.isfinite(v).reshape(seeds, -1).all(-1) for v in params.values()], axis=0)
    if not finite.all():
        sealed.fail(f"training diverged: non-finite policy parameters in seed(s) {np.where(~finite)[0].tolist()}")
    sealed.export_arrays("artifacts/policy.npz", params)
    # The training curve is for figures only; the evaluator never scores it.
    sealed.export_arrays("artifacts/curve.npz", {"return": np.asarray(out["metrics"]["return"], np.float32)})
    clock.lap("export")
    clock.save("timings.json")


if __name__ == "__main__":
    main()
