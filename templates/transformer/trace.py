"""Transformer tracer (fixed; runs in a sandbox of its own): import the candidate recipe, export what training needs.

The only process that runs the candidate's Python (recipe.py). First of all it hides the fortune
corpus from itself (confine.py), before JAX starts a thread and before the recipe is imported: the
exports must not be able to carry the held-out text. Then it exports, as StableHLO, at the shapes
the harness calls them with (jax_workloads.exported; every tree flattened to a list of arrays):

    init(key_data uint32[2])                    -> parameters (the fixed GPT with the recipe's Block)
    apply(parameters, tokens [batch, T])        -> logits, with its derivative (training)
    loss(logits, targets [batch, T])            -> [batch, T], with its derivative
    opt_init(parameters)                        -> optimizer state (optimizer(steps), optax state flattened)
    opt_update(grads, state, parameters)        -> (updates, state)

and forward.jaxexport, the forward pass at the evaluator's batch (config.eval_batch) as the
evaluator takes it (tf.export_forward: no symbolic axis, no custom calls). The harness gates and
trains with these and never imports recipe.py, so whatever else the module does at import
(rebinding training code, threads, exit handlers, files) ends with this sandbox.
"""

import json
from pathlib import Path

import confine

# Hide the corpus first (see the module docstring). Only when run as the tracer, so that tests can import it.
if __name__ == "__main__":
    HIDDEN = confine.hide([json.loads(Path("config.json").read_text())["config"]["corpus_dir"]])

import flax.linen as nn  # noqa: E402
import harness  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jax_workloads import exported, sealed  # noqa: E402
from jax_workloads import transformer as tf  # noqa: E402


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


def export_recipe(block, optimizer, loss, config: tf.TrainConfig, eval_batch: int, folder: str | Path) -> None:
    """Export the recipe's model, optimizer and loss to folder (see the module docstring)."""
    folder = Path(folder)
    key = exported.spec((2,), jnp.uint32)  # the raw key data make_train splits (jax.random.PRNGKey)
    try:
        shapes = jax.eval_shape(lambda k: tf.init_params(config.model, block, k), key)
    except Exception as e:  # noqa: BLE001 - any error here is the candidate's
        sealed.fail(f"Block raised while building the model: {sealed.describe(e)}")
    leaves, treedef = jax.tree_util.tree_flatten(shapes)
    model = tf.GPT(config.model, block)

    def params_of(leaves):
        return jax.tree_util.tree_unflatten(treedef, leaves)

    def init(key):
        return jax.tree_util.tree_leaves(tf.init_params(config.model, block, key))

    def apply(leaves, tokens):
        return model.apply({"params": params_of(leaves)}, tokens)

    specs = exported.specs_of(leaves)
    tokens = exported.spec((config.batch_size, config.model.block_size), jnp.int32)
    exported.export_function(init, (key,), folder / "init", name="Block (building the model)", vjp=False)
    logits = exported.export_function(apply, (specs, tokens), folder / "apply", name="the model with this Block")
    exported.export_function(loss, (logits, tokens), folder / "loss", name="loss")

    try:
        tx = optimizer(config.steps)
        state_shapes = jax.eval_shape(tx.init, shapes)
        update_shapes = jax.eval_shape(lambda p, s: tx.update(p, s, p)[0], shapes, state_shapes)
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"optimizer raised on the model: {sealed.describe(e)}")
    if jax.tree_util.tree_structure(update_shapes) != treedef:
        sealed.fail("optimizer returned updates that do not match the parameters")
    state_def = jax.tree_util.tree_structure(state_shapes)

    def opt_init(leaves):
        return jax.tree_util.tree_leaves(tx.init(params_of(leaves)))

    def opt_update(grads, state, leaves):
        updates, state = tx.update(params_of(grads), jax.tree_util.tree_unflatten(state_def, state), params_of(leaves))
        return jax.tree_util.tree_leaves(updates), jax.tree_util.tree_leaves(state)

    state = exported.export_function(opt_init, (specs,), folder / "opt_init", name="optimizer's init", vjp=False)
    exported.export_function(opt_update, (specs, state, specs), folder / "opt_update", name="optimizer's update",
                             vjp=False)
    try:
        (folder / harness.FORWARD).write_bytes(tf.export_forward(config.model, block, shapes, eval_batch))
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"exporting the forward pass failed: {sealed.describe(e)}")


def main() -> None:
    if HIDDEN is not None:  # fail closed: a candidate that could read the held-out text could export it
        sealed.fail(f"cannot hide the corpus from the candidate: {HIDDEN}; use the docker sandbox")
    config = json.loads(Path("config.json").read_text())["config"]
    block, optimizer, loss = load_recipe()
    export_recipe(block, optimizer, loss, harness.train_config(config), config["eval_batch"], "exports")


if __name__ == "__main__":
    main()
