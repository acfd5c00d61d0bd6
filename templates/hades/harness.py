"""HaDES harness (fixed; runs inside the sandbox): run the candidate's ES, export the distilled data sets.

Reads config.json from the work folder and the candidate distiller as the tracer (trace.py) exported it
(exports/: its fitness shaping `shape` as StableHLO, checked to be plain computation; its manifest's constants,
checked against their ranges). This process never imports distiller.py. It gates the shaping on made-up fitness
at the real shapes, then runs every seed's ES, all seeds at once (jax_workloads.hades.run_distill: each
generation three compiled programs, the costly one, behaviour cloning and rollouts, free of the candidate's
functions so that the compilation cache serves it to every candidate of the same data set size; each generation
samples a population around the mean with its own noise, decodes every genome into a data set with
its own layout, trains [config.es] rollouts behaviour-cloning policies ([config.bc]) on each, plays them on
SpaceInvaders-MinAtar for the fitness, weighs the members with the candidate's shape, bounded, and updates the
mean and sigma with its own SNES or OpenES), and exports each
seed's final data set (artifacts/dataset.npz: states [S, D, 600], labels [S, D, 4]) and the ES curves
(artifacts/curves.npz, for figures). It never scores anything: the evaluator trains policies of its own on the
data sets and plays episodes of its own.
"""

import time

STARTED = time.time()

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jax_workloads import hades, sealed  # noqa: E402


def main() -> None:
    clock = sealed.Stopwatch(STARTED)
    cfg = json.loads(Path("config.json").read_text())
    config, seeds = cfg["config"], cfg["seeds"]
    try:
        dcfg = hades.distill_config(config)
    except (ValueError, TypeError, KeyError) as e:
        sealed.fail(f"template.toml [config]: {sealed.describe(e)}")
    distiller = hades.load_distiller("exports", dcfg)  # the tracer's exports: distiller.py is never imported
    hades.gate(distiller, dcfg)
    clock.lap("setup")
    rngs = jax.random.split(jax.random.key(config["train_seed"]), seeds)
    out = hades.run_distill(dcfg, distiller, rngs, sealed.Progress(dcfg.generations).update,
                            compiled=lambda: clock.lap("compile"))
    clock.lap("train")
    sealed.export_arrays(Path("artifacts") / hades.DATASET_FILE, {
        "states": np.asarray(out["states"], np.float32), "labels": np.asarray(out["labels"], np.float32)})
    # The ES curves (fitness on the training rollouts) are for figures only: the evaluator checks their shapes and
    # passes them on, labelled as the harness's report; they are never the metric.
    sealed.export_arrays(Path("artifacts") / "curves.npz", {
        k: np.asarray(out[k], np.float32) for k in ("fitness_mean", "fitness_max", "bc_loss")})
    clock.lap("export")
    clock.save("timings.json")


if __name__ == "__main__":
    main()
