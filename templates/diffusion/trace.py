"""Diffusion tracer (fixed; runs in a sandbox of its own): import the candidate recipe, export what training needs.

The only process that runs the candidate's Python (ddpm.py). `schedule` and `sampler` depend on the
configuration only, so they are evaluated here, to plain arrays (exports/recipe.npz: alpha_bar and
the table tau, a, b, c); `loss` is exported as StableHLO at the minibatch shapes training calls it
with, with its derivative (exports/loss). The harness checks all of it and never imports ddpm.py,
so whatever else the module does at import (rebinding training code, threads, exit handlers,
files) ends with this sandbox.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import harness  # the gates, so that a bad recipe fails here with the messages it always had
import jax

from jax_workloads import exported, sealed


def main() -> None:
    config = json.loads(Path("config.json").read_text())["config"]
    tc = harness.train_config(config)
    schedule = sealed.load_candidate("ddpm.py", "schedule", 1)
    # The module's namespace: imported once, so that its import-time code runs once too.
    recipe = SimpleNamespace(**getattr(schedule, "__globals__", {}))
    if not hasattr(schedule, "__globals__"):
        sealed.fail("candidate ddpm.py: schedule must be a function defined with def")
    loss = sealed.check_function(recipe, "loss", 4, "ddpm.py")
    sampler = sealed.check_function(recipe, "sampler", 1, "ddpm.py")
    # The table from concrete values (a sampler may use numpy on them), as the harness always made it.
    table = harness.gate_sampler(sampler, harness.gate_schedule(schedule, tc.timesteps), config["max_sampler_steps"])
    # Training evaluated the schedule inside its compiled program; under jit XLA folds it to the same
    # constants it did there (eager evaluation may differ in the last bit, e.g. of a cosine).
    try:
        alpha_bar = jax.jit(lambda: schedule(tc.timesteps))()
    except Exception as e:  # noqa: BLE001 - any error here is the candidate's
        sealed.fail(f"schedule({tc.timesteps}) could not be compiled: {sealed.describe(e)}")
    alpha_bar = harness.check_schedule(alpha_bar, tc.timesteps)
    sealed.export_arrays(harness.RECIPE, {"alpha_bar": alpha_bar, **table})
    points, levels = exported.spec((tc.batch_size, 2)), exported.spec((tc.batch_size,))
    exported.export_function(loss, (points, points, points, levels), "exports/loss", name="loss")


if __name__ == "__main__":
    main()
