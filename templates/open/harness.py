"""OPEN harness (fixed; runs inside the sandbox): train PPO with the candidate update rule, export the policy.

Reads config.json from the work folder and the candidate rule as the tracer (trace.py) exported it:
one StableHLO function per parameter shape of the fixed network (exports/update_<shape>, checked to
be plain computation) and its declared settings (exports/manifest.json, checked here). This process
never imports optimizer.py. It gates the rule on tiny inputs, trains PPO (jax_workloads.ppo) with
the rule as its optimizer for every seed in one compiled call, and exports only plain arrays: the
trained actor-critic's parameters (artifacts/policy.npz) and, for figures only, the per-update
training return (artifacts/curve.npz). It never scores anything.

As OPEN's code does (github.com/AlexGoldie/rl-learned-optimization, rl_optimizer/train.py at commit
b65037bd89c09f31e80c5d49f1d78cc9c6dc43e0), by default the actor's and the critic's gradients are
clipped separately to max_grad_norm, and the rule sees OPEN's proportions, u/(U-1) and epoch/(E-1).
[config.open] names the alternatives: grad_clip = "joint" (PureJaxRL's one global norm over the
actor-critic) and proportions = "minibatch" (u/U and the position among the update's epochs x
minibatches), the template's earlier wiring. A candidate may declare module constants CARRY (an
int: per-parameter recurrent state, seen as f.carry; update then returns (update, new_carry)) and
ZERO_MEAN (True: the update is made zero-mean over all parameters), as OPEN's GRU optimizer needs.
"""

import time

STARTED = time.time()

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jax_workloads import exported, ppo, sealed  # noqa: E402
from jax_workloads import open_features as of  # noqa: E402

GATE_SHAPES = [(6, 4), (4,), (1,)]  # a kernel, a bias, a value head's bias
GRAD_CLIPS = ("separate", "joint")      # OPEN's per-network clipping; PureJaxRL's one global norm
PROPORTIONS = ("open", "minibatch")     # OPEN's u/(U-1) and epoch/(E-1); u/U and the minibatch position


def rule_options(declared: dict) -> tuple[int, bool]:
    """(CARRY, ZERO_MEAN) as the candidate declares them (0 and False when it does not), checked: they are data."""
    carry, zero_mean = declared.get("CARRY", 0), declared.get("ZERO_MEAN", False)
    if isinstance(carry, bool) or not isinstance(carry, int) or not 0 <= carry <= 64:
        sealed.fail(f"CARRY must be an int from 0 to 64 (floats of recurrent state per parameter), not {carry!r}")
    if not isinstance(zero_mean, bool):
        sealed.fail(f"ZERO_MEAN must be True or False, not {zero_mean!r}")
    return carry, zero_mean


def parameter_shapes(config: dict) -> list[tuple[int, ...]]:
    """The gate's shapes, then the fixed actor-critic's other parameter shapes: the shapes `update` is exported at."""
    env = ppo.gymnax_env(config["env"])
    net = ppo.default_network(ppo.PPOConfig(**config["ppo"]), env)
    params = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((env.obs_size,)))
    shapes = GATE_SHAPES + [tuple(leaf.shape) for leaf in jax.tree.leaves(params)]
    return list(dict.fromkeys(shapes))


def export_path(shape: tuple[int, ...]) -> str:
    """Where the tracer writes `update` for parameters of this shape: exports/update_64x3, ..."""
    return f"exports/update_{'x'.join(map(str, shape)) or 'scalar'}"


def as_dict(f: of.Features) -> dict:
    """The features as the exported function takes them: a plain dict of arrays (no carry for a stateless rule)."""
    return {k: v for k, v in f._asdict().items() if v is not None}


def feature_specs(shape: tuple[int, ...], carry: int) -> dict:
    """Shapes and dtypes of the features of one parameter tensor: the exported function's argument."""
    return jax.eval_shape(lambda: as_dict(of.example_features(shape, jax.random.key(0), carry_size=carry)))


def load_rule(shapes: list[tuple[int, ...]]):
    """The update rule over Features, calling the tracer's export for each parameter shape; fail() if one is refused."""
    updates = {}
    for shape in shapes:
        try:
            updates[shape] = exported.import_function(export_path(shape))
        except sealed.ArtifactError as e:
            sealed.fail(f"the traced update rule was refused: {e}")

    def rule(f: of.Features):
        return updates[tuple(f.param.shape)](as_dict(f))

    return rule


def gate(rule, carry: int = 0) -> None:
    """Cheap check before minutes are spent: the rule runs under jit and returns finite updates of the right shape."""
    for i, shape in enumerate(GATE_SHAPES):
        for step in (1, 100):
            f = of.example_features(shape, jax.random.key(i), step=step, carry_size=carry)
            try:
                out = sealed.run_once(rule, f)
                if carry:
                    if not (isinstance(out, tuple) and len(out) == 2):
                        sealed.fail(f"with CARRY = {carry} the update rule must return (update, new_carry), "
                                    f"not {type(out).__name__}")
                    new_carry = jnp.asarray(out[1])
                    if new_carry.shape != (*shape, carry) or not bool(jnp.all(jnp.isfinite(new_carry))):
                        sealed.fail(f"update rule returned a carry of shape {new_carry.shape} (or non-finite) for a "
                                    f"parameter of shape {shape}; expected finite values of shape {(*shape, carry)}")
                    out = out[0]
                out = jnp.asarray(out)
            except Exception as e:  # noqa: BLE001 - any error here is the candidate's
                sealed.fail(f"update rule raised on tiny inputs: {sealed.describe(e)}")
            if out.shape != shape:
                sealed.fail(f"update rule must return an update of the parameter's shape {shape}; "
                            f"it returned shape {out.shape}")
            if not jnp.issubdtype(out.dtype, jnp.floating):
                sealed.fail(f"update rule must return floating-point values, got dtype {out.dtype}")
            if not bool(jnp.all(jnp.isfinite(out))):
                sealed.fail(f"update rule returned NaN or infinite values on tiny inputs (shape {shape}, step {step})")


def make_optimizer(rule, config: ppo.PPOConfig, env: ppo.Env, *, grad_clip: str = "separate",
                   proportions: str = "open", carry: int = 0,
                   zero_mean: bool = False) -> optax.GradientTransformationExtraArgs:
    """Gradient clipping to max_grad_norm, then the rule over OPEN's features.

    grad_clip: "separate" clips the actor's and the critic's gradients each to its own global norm (OPEN);
    "joint" clips the whole actor-critic's (PureJaxRL). proportions: "open" gives the rule OPEN's training
    and batch proportions, u/(U-1) and epoch/(E-1); "minibatch" the ones ppo.make_train passes.
    carry and zero_mean: as open_features.open_optimizer's carry_size and zero_mean.
    """
    if grad_clip not in GRAD_CLIPS or proportions not in PROPORTIONS:
        raise ValueError(f"grad_clip must be one of {GRAD_CLIPS} and proportions one of {PROPORTIONS}, "
                         f"not {grad_clip!r} and {proportions!r}")
    net = ppo.default_network(config, env)
    clip = (of.clip_actor_critic(config.max_grad_norm, config.layers) if grad_clip == "separate"
            else optax.clip_by_global_norm(config.max_grad_norm))
    schedule = (of.Schedule(config.num_updates, config.update_epochs, config.num_minibatches)
                if proportions == "open" else None)
    return optax.chain(clip, of.open_optimizer(rule, net, layers=config.layers, activation=config.activation,
                                               proportions=schedule, carry_size=carry, zero_mean=zero_mean))


def flatten(params) -> dict[str, np.ndarray]:
    """{"Dense_0.kernel": array, ...}: the parameter tree as plain named arrays (seed axis first)."""
    return {".".join(str(k.key) for k in path[1:]): np.asarray(leaf, np.float32)
            for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


def main() -> None:
    clock = sealed.Stopwatch(STARTED)
    cfg = json.loads(Path("config.json").read_text())
    config, seeds = cfg["config"], cfg["seeds"]
    try:
        carry, zero_mean = rule_options(exported.read_manifest("exports"))
    except sealed.ArtifactError as e:
        sealed.fail(f"the traced update rule was refused: {e}")
    rule = load_rule(parameter_shapes(config))
    gate(rule, carry)
    env = ppo.gymnax_env(config["env"])
    ppo_config = ppo.PPOConfig(**config["ppo"])
    wiring = config.get("open", {})  # OPEN's wiring unless [config.open] names the earlier one
    optimizer = make_optimizer(rule, ppo_config, env, grad_clip=wiring.get("grad_clip", "separate"),
                               proportions=wiring.get("proportions", "open"), carry=carry, zero_mean=zero_mean)
    progress = sealed.Progress(ppo_config.num_updates)  # for the live view: how far training is
    train = ppo.make_train(ppo_config, env, optimizer=optimizer, optimizer_sees_batch=True, progress=progress.update)
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
