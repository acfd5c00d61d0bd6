"""Transformer harness (fixed; runs inside the sandbox): train the recipe's GPT, export it.

First of all it hides the fortune corpus from this process (confine.py), before JAX starts a
thread and before the candidate's recipe is imported. Then it reads config.json and
data/train.npz (the training text only), gates the recipe on tiny inputs, trains every seed
in one compiled call (vmapped, or in sequence on a CPU: config.vmap_seeds), and exports the
parameters at every checkpoint (artifacts/params.npz, plain arrays) and the forward pass
(artifacts/forward.jaxexport, serialized StableHLO). It never scores anything.
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

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jax_workloads import sealed  # noqa: E402
from jax_workloads import transformer as tf  # noqa: E402


def train_config(config: dict) -> tf.TrainConfig:
    """The training run that template.toml's [config] describes."""
    return tf.TrainConfig(model=tf.ModelConfig(**config["model"]), steps=config["steps"],
                          batch_size=config["batch_size"], checkpoints=config["checkpoints"])


def load_recipe() -> tuple:
    """Block, optimizer and loss from the candidate's recipe.py (imported once)."""
    loss = sealed.load_candidate("recipe.py", "loss", 2)
    recipe = getattr(loss, "__globals__", None)  # the namespace of the module load_candidate imported
    if recipe is None:
        sealed.fail("candidate recipe.py: loss must be a function defined with def")
    block, optimizer = recipe.get("Block"), recipe.get("optimizer")
    if not (isinstance(block, type) and issubclass(block, nn.Module)):
        sealed.fail("candidate recipe.py must define Block, a flax.linen Module class")
    if not callable(optimizer):
        sealed.fail("candidate recipe.py must define a function optimizer(total_steps)")
    return block, optimizer, loss


def gate(block, optimizer, loss, config: tf.TrainConfig, max_params: int) -> None:
    """Cheap checks before minutes are spent: size, shapes, causality, finiteness, gradients.

    Every check runs jitted: op-by-op, flax and optax would dispatch hundreds of tiny computations.
    """
    rng = jax.random.PRNGKey(0)
    try:
        n = tf.count_params(jax.eval_shape(lambda: tf.init_params(config.model, block, rng)))
    except Exception as e:  # noqa: BLE001 - any error here is the candidate's
        sealed.fail(f"Block raised while building the model: {sealed.describe(e)}")
    if n > max_params:
        sealed.fail(f"the model has {n:,} parameters, more than the template's max_params = {max_params:,}")

    b, t, v = 2, 8, config.model.vocab_size
    tiny = tf.ModelConfig(**{**config.model.__dict__, "block_size": t})
    tokens = jax.random.randint(rng, (b, t), 0, v)
    try:
        params = jax.jit(lambda r: tf.init_params(tiny, block, r))(rng)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        model = tf.GPT(tiny, block)

        @jax.jit
        def forward(leaves, tokens):
            return model.apply({"params": jax.tree_util.tree_unflatten(treedef, leaves)}, tokens)

        logits = forward(leaves, tokens)
        leak = tf.leak_check(forward, leaves, tokens, seed=0) if logits.shape == (b, t, v) else None
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"Block raised on a tiny batch: {sealed.describe(e)}")
    if logits.shape != (b, t, v):
        sealed.fail(f"the model with this Block returns shape {logits.shape} for tokens {tokens.shape}, expected "
                    f"{(b, t, v)}: Block must map [batch, time, d_model] to the same shape")
    if not bool(jnp.all(jnp.isfinite(logits))):
        sealed.fail("the model with this Block returns NaN or infinite values on a tiny batch")
    if leak is not None:
        sealed.fail(f"Block rejected: {leak}")

    targets = jax.random.randint(jax.random.PRNGKey(1), (b, t), 0, v)
    try:
        out, grad = jax.jit(lambda z: (loss(z, targets), jax.grad(lambda z: jnp.mean(loss(z, targets)))(z)))(logits)
        out = jnp.asarray(out)
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"loss raised on a tiny batch: {sealed.describe(e)}")
    if out.shape != (b, t):
        sealed.fail(f"loss must return one value per position, shape {(b, t)}; it returned shape {out.shape}")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        sealed.fail(f"loss must return floating-point values, got dtype {out.dtype}")
    if not (bool(jnp.all(jnp.isfinite(out))) and bool(jnp.all(jnp.isfinite(grad)))):
        sealed.fail("loss returned NaN or infinite values or gradients on a tiny batch")

    try:
        tx = optimizer(config.steps)
        updates = jax.jit(lambda p: tx.update(jax.tree.map(jnp.ones_like, p), tx.init(p), p)[0])(params)
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"optimizer raised on a tiny model: {sealed.describe(e)}")
    if jax.tree_util.tree_structure(updates) != treedef:
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
    block, optimizer, loss = load_recipe()
    gate(block, optimizer, loss, cfg, config["max_params"])
    with np.load("data/train.npz") as d:
        data = jnp.asarray(d["tokens"])
    rngs = jax.random.split(jax.random.PRNGKey(config["train_seed"]), seeds)
    train = tf.train_seeds(tf.make_train(cfg, block, optimizer, loss), config.get("vmap_seeds"))
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
    try:
        final = jax.tree.map(lambda x: x[0, -1], checkpoints)
        blob = tf.export_forward(cfg.model, block, final, config["eval_batch"])
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"exporting the forward pass failed: {sealed.describe(e)}")
    sealed.export_arrays("artifacts/params.npz", dict(zip(tf.param_names(len(leaves)), leaves, strict=True)))
    Path("artifacts/forward.jaxexport").write_bytes(blob)
    # The training loss (the recipe's own, in bits) is for people reading the run only; the evaluator ignores it.
    per_checkpoint = np.asarray(losses).reshape(seeds, cfg.checkpoints, -1).mean(-1) / np.log(2.0)
    Path("artifacts/train_log.json").write_text(json.dumps({"train_loss_bits_per_checkpoint": per_checkpoint.tolist()}))
    clock.lap("export")
    clock.save("timings.json")


if __name__ == "__main__":
    main()
