"""Synthenv harness (fixed; runs inside the sandbox): meta-train the candidate's bandit, export its parameters.

Reads config.json and the candidate's functions as the tracer (trace.py) exported them (exports/: shape,
sample_hparams, horizon, each StableHLO checked to be plain computation, and manifest.json, whose family,
algorithms and SNES settings are checked here as untrusted data). This process never imports bandit.py. It gates
the exports on small inputs, then meta-trains every seed at once (jax_workloads.synthenv.run_meta_train, each
generation's steps as compiled programs, the costly ones, inner training and play, free of the candidate's
functions so that the compilation cache serves them to every candidate of the same family:
SNES over the bandit's parameters, fitness the real environment's return of agents trained on it; this process
initialises the parameters, samples the population and takes every SNES step, the candidate only shapes the
fitness into bounded weights) and exports each seed's final bandit as plain arrays (artifacts/bandit.npz) with
its family (artifacts/family.json) and the meta-training curves (artifacts/curves.npz, for figures only). It
never scores the result: the evaluator trains its own agents on the bandit and plays them on the real environment.
"""

import time

STARTED = time.time()

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jax_workloads import exported, sealed  # noqa: E402
from jax_workloads import synthenv as se  # noqa: E402

NAMES = ("shape", "sample_hparams", "horizon")


def settings(config: dict) -> tuple[se.Inner, se.Meta]:
    try:
        return se.Inner(**config["inner"]), se.Meta(**config["meta"])
    except (TypeError, KeyError) as e:
        sealed.fail(f"template.toml [config]: {sealed.describe(e)}")


def load(config: dict) -> tuple[se.Family, tuple[str, ...], se.Strategy, se.MetaFns]:
    """The tracer's exports and manifest, checked: the family, the inner algorithms, SNES's settings and the three
    functions."""
    try:
        manifest = exported.read_manifest("exports")
        family = se.family_from(manifest.get("family"), config["env"])
        strategy = se.strategy_from(manifest.get("strategy"))
        fns = se.MetaFns(*(exported.import_function(f"exports/{name}") for name in NAMES))
    except (sealed.ArtifactError, ValueError) as e:
        sealed.fail(f"the traced bandit was refused: {e}")
    algorithms = manifest.get("algorithms")
    if not (isinstance(algorithms, list) and algorithms and all(a in se.TRAIN_ALGORITHMS for a in algorithms)):
        sealed.fail(f"the traced bandit was refused: algorithms {algorithms!r} are not a list of "
                    f"{list(se.TRAIN_ALGORITHMS)}")
    return family, tuple(algorithms), strategy, fns


def gate(fns: se.MetaFns, meta: se.Meta) -> None:
    """Every function once on small inputs, compiled cheaply (sealed.run_once): shapes and finiteness. shape gets
    fitness as meta-training gives it (sorted best first, ties at -500 as unsolved episodes make them)."""
    p = meta.population
    fitness = jnp.where(jnp.arange(p) < p // 2, -100.0 - 350.0 * jnp.arange(p) / p, -500.0)

    def probe(key):
        g = jnp.int32(0)
        return fns.shape(fitness, g), fns.sample_hparams(jax.random.key_data(key), g), fns.horizon(g)

    try:
        w, hp, h = sealed.run_once(probe, jax.random.key(0))
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"the bandit's functions failed on a probe: {sealed.describe(e)}")
    want = {"shape": (w, (p,)), "sample_hparams": (hp, (len(se.HPARAMS),)), "horizon": (h, ())}
    for name, (x, shape) in want.items():
        if jnp.shape(x) != shape or not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
            sealed.fail(f"{name} must return a float array of shape {shape}, not {jnp.asarray(x).dtype}"
                        f"{list(jnp.shape(x))}")
        if not bool(jnp.all(jnp.isfinite(x))):
            sealed.fail(f"{name} returned NaN or infinite values on the probe")


def main() -> None:
    clock = sealed.Stopwatch(STARTED)
    cfg = json.loads(Path("config.json").read_text())
    config, seeds = cfg["config"], cfg["seeds"]
    inner, meta = settings(config)
    family, algorithms, strategy, fns = load(config)
    gate(fns, meta)
    clock.lap("gate")
    rngs = jax.random.split(jax.random.key(config["train_seed"]), seeds)
    try:
        out = se.run_meta_train(family, algorithms, inner, meta, strategy, fns, rngs,
                                sealed.Progress(meta.generations).update, compiled=lambda: clock.lap("compile"))
        clock.lap("train")
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"meta-training failed: {sealed.describe(e)}")
    finite = np.asarray(out["finite"])  # [seeds, generations]
    if not finite.all():  # the weights of that generation were zeroed; a candidate's shaping must be finite
        seed, gen = (int(i[0]) for i in np.nonzero(~finite))
        sealed.fail(f"shape returned NaN or infinite weights in generation {gen} of seed {seed}")
    params = np.asarray(out["params"], np.float32)
    bad = ~np.isfinite(params).all(-1)
    if bad.any():
        sealed.fail(f"meta-training diverged: non-finite bandit parameters in seed(s) {np.where(bad)[0].tolist()}")
    art = Path("artifacts")
    sealed.export_arrays(art / "bandit.npz", {"params": params})
    (art / "family.json").write_text(json.dumps({k: v for k, v in family.to_dict().items() if k != "env_name"}))
    # Curves of the meta-training (population fitness per generation, on the harness's own episodes) are for
    # figures only: the evaluator checks their shapes and passes them on, labelled as the harness's report.
    sealed.export_arrays(art / "curves.npz", {k: np.nan_to_num(np.asarray(v, np.float32), nan=0.0, posinf=0.0,
                                                                neginf=0.0) for k, v in out["curves"].items()})
    clock.lap("export")
    clock.save("timings.json")


if __name__ == "__main__":
    main()
