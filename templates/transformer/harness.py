"""Transformer harness (fixed; runs inside the sandbox): train the recipe's GPT, export it.

First of all it hides the fortune corpus from this process (confine.py), before JAX starts a
thread. Then it reads config.json, data/train.npz (the training text only) and the recipe as
the tracer (trace.py) exported it to exports/: the model's init and apply, the optimizer's init
and update and the loss as StableHLO (checked to be plain computation), and the forward pass for
the evaluator. This process never imports recipe.py. It gates the exports (size, causality,
finiteness, the forward pass being the trained model), trains every seed in one compiled call
(vmapped, or in sequence on a CPU: config.vmap_seeds), and exports the parameters at every
checkpoint (artifacts/params.npz, plain arrays) and the forward pass (artifacts/forward.jaxexport,
serialized StableHLO). It never scores anything.
"""

import time

STARTED = time.time()

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import confine  # noqa: E402

# Hide the corpus first: before JAX starts a thread and before the candidate is imported (see confine.py).
# Only when run as the harness, so that tests can import the functions below without confining themselves.
if __name__ == "__main__":
    HIDDEN = confine.hide([json.loads(Path("config.json").read_text())["config"]["corpus_dir"]])

from typing import NamedTuple  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jax_workloads import exported, sealed  # noqa: E402
from jax_workloads import transformer as tf  # noqa: E402


def train_config(config: dict) -> tf.TrainConfig:
    """The training run that template.toml's [config] describes."""
    return tf.TrainConfig(model=tf.ModelConfig(**config["model"]), steps=config["steps"],
                          batch_size=config["batch_size"], checkpoints=config["checkpoints"])


FORWARD = "forward.jaxexport"  # the forward pass at the evaluator's batch, as the evaluator takes it


class Recipe(NamedTuple):
    """The tracer's exports: parameters and optimizer states are lists of arrays."""

    init: object          # init(key_data uint32[2]) -> parameters
    apply: object         # apply(parameters, tokens [batch_size, T]) -> logits, differentiable
    loss: object          # loss(logits, targets [batch_size, T]) -> [batch_size, T], differentiable
    tx: optax.GradientTransformation  # the recipe's optimizer, on those lists
    forward: object       # the evaluator's forward pass (a jax.export.Exported), [eval_batch, T]
    forward_bytes: bytes


def load_recipe(folder: str, config: dict) -> Recipe:
    """The recipe as the tracer exported it to folder, each function checked to be plain computation."""
    try:
        fn = {name: exported.import_function(f"{folder}/{name}")
              for name in ("init", "apply", "loss", "opt_init", "opt_update")}
        forward_bytes = (Path(folder) / FORWARD).read_bytes() if (Path(folder) / FORWARD).is_file() else b""
        forward = sealed.load_export(Path(folder) / FORWARD, config["max_export_bytes"], sealed.NO_CUSTOM_CALLS)
        mc = config["model"]
        tf.check_forward(forward, config["eval_batch"], mc["block_size"], tf.VOCAB_SIZE)
    except sealed.ArtifactError as e:
        sealed.fail(f"the traced recipe was refused: {e}")
    tx = optax.GradientTransformation(fn["opt_init"], lambda grads, state, params=None: fn["opt_update"](
        grads, state, params))
    return Recipe(fn["init"], fn["apply"], fn["loss"], tx, forward, forward_bytes)


def gate(recipe: Recipe, config: tf.TrainConfig, max_params: int) -> None:
    """Cheap checks before minutes are spent: size, shapes, causality, finiteness, gradients.

    On fresh parameters: the evaluator's forward pass must be causal and keep rows apart, and be the
    model that training differentiates (the same logits as apply); the loss and the optimizer must be
    finite. Every check runs jitted: op-by-op, the exports would dispatch many tiny computations.
    """
    key = jax.random.PRNGKey(0)
    shapes = jax.eval_shape(recipe.init, key)
    n = tf.count_params(shapes)
    if n > max_params:
        sealed.fail(f"the model has {n:,} parameters, more than the template's max_params = {max_params:,}")

    b, t, v = config.batch_size, config.model.block_size, config.model.vocab_size
    e = recipe.forward.in_avals[-1].shape[0]
    tokens = np.asarray(jax.random.randint(key, (max(b, e), t), 0, v), np.int32)
    try:
        params = jax.jit(recipe.init)(key)
        forward = jax.jit(recipe.forward.call)
        logits = forward(params, tokens[:e])
        leak = tf.leak_check(forward, params, tokens[:e], seed=0)
        trained = jax.jit(recipe.apply)(params, tokens[:b])
    except Exception as ex:  # noqa: BLE001
        sealed.fail(f"Block raised on a tiny batch: {sealed.describe(ex)}")
    if not bool(jnp.all(jnp.isfinite(logits))):
        sealed.fail("the model with this Block returns NaN or infinite values on a tiny batch")
    if leak is not None:
        sealed.fail(f"Block rejected: {leak}")
    if trained.shape != (b, t, v):
        sealed.fail(f"the model with this Block returns shape {trained.shape} for tokens {(b, t)}, expected "
                    f"{(b, t, v)}: Block must map [batch, time, d_model] to the same shape")
    rows = min(b, e)
    diff = float(np.max(jnp.abs(jax.nn.log_softmax(trained[:rows]) - jax.nn.log_softmax(logits[:rows]))))
    if not diff <= 1e-3:  # a Block that acts differently at the evaluator's batch size than in training
        sealed.fail(f"Block rejected: the forward pass for the evaluator is not the trained model (its "
                    f"log-probabilities differ by up to {diff:.3g} nats)")

    targets = jax.random.randint(jax.random.PRNGKey(1), (b, t), 0, v)
    try:
        out, grad = sealed.run_once(lambda z: (recipe.loss(z, targets),
                                               jax.grad(lambda z: jnp.mean(recipe.loss(z, targets)))(z)), trained)
        out = jnp.asarray(out)
    except Exception as ex:  # noqa: BLE001
        sealed.fail(f"loss raised on a tiny batch: {sealed.describe(ex)}")
    if out.shape != (b, t):
        sealed.fail(f"loss must return one value per position, shape {(b, t)}; it returned shape {out.shape}")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        sealed.fail(f"loss must return floating-point values, got dtype {out.dtype}")
    if not (bool(jnp.all(jnp.isfinite(out))) and bool(jnp.all(jnp.isfinite(grad)))):
        sealed.fail("loss returned NaN or infinite values or gradients on a tiny batch")

    try:
        updates = sealed.run_once(lambda p: recipe.tx.update(jax.tree.map(jnp.ones_like, p), recipe.tx.init(p), p)[0],
                                  params)
    except Exception as ex:  # noqa: BLE001
        sealed.fail(f"optimizer raised on a tiny model: {sealed.describe(ex)}")
    if [np.shape(u) for u in jax.tree_util.tree_leaves(updates)] != [np.shape(p) for p in params]:
        sealed.fail("optimizer returned updates that do not match the parameters")
    if not all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree_util.tree_leaves(updates)):
        sealed.fail("optimizer returned NaN or infinite updates on a tiny model")


def main() -> None:
    clock = sealed.Stopwatch(STARTED)
    if HIDDEN is not None:  # fail closed: a run that could read the held-out text proves nothing
        sealed.fail(f"cannot hide the corpus from the candidate: {HIDDEN}; use the docker sandbox")
    run = json.loads(Path("config.json").read_text())
    config, seeds = run["config"], run["seeds"]
    cfg = train_config(config)
    recipe = load_recipe("exports", config)
    gate(recipe, cfg, config["max_params"])
    with np.load("data/train.npz") as d:
        data = jnp.asarray(d["tokens"])
    rngs = jax.random.split(jax.random.PRNGKey(config["train_seed"]), seeds)
    train = tf.train_seeds(tf.make_train_from(cfg, recipe.init, recipe.apply, recipe.tx, recipe.loss),
                           config.get("vmap_seeds"))
    clock.lap("setup")
    try:
        compiled = train.lower(rngs, data).compile()
        clock.lap("compile")
        checkpoints, losses = jax.block_until_ready(compiled(rngs, data))
        clock.lap("train")
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"training failed: {sealed.describe(e)}")
    leaves = [np.asarray(x, np.float32) for x in jax.tree_util.tree_leaves(checkpoints)]  # each [S, K, ...]
    finite = np.all([np.isfinite(x).reshape(seeds, -1).all(-1) for x in leaves], axis=0)
    if not finite.all():
        sealed.fail(f"training diverged: non-finite parameters in seed(s) {np.flatnonzero(~finite).tolist()}")
    sealed.export_arrays("artifacts/params.npz", dict(zip(tf.param_names(len(leaves)), leaves, strict=True)))
    Path("artifacts/forward.jaxexport").write_bytes(recipe.forward_bytes)
    # The training loss (the recipe's own, in bits) is for people reading the run only; the evaluator ignores it.
    per_checkpoint = np.asarray(losses).reshape(seeds, cfg.checkpoints, -1).mean(-1) / np.log(2.0)
    Path("artifacts/train_log.json").write_text(json.dumps({"train_loss_bits_per_checkpoint": per_checkpoint.tolist()}))
    clock.lap("export")
    clock.save("timings.json")


if __name__ == "__main__":
    main()
