"""Synthenv tracer (fixed; runs in a sandbox of its own): import the candidate bandit.py, export its functions.

The only process that runs bandit.py's Python. It checks the bandit's family (LATENT, HIDDEN, ACTIVATION) and the
inner algorithms (ALGORITHMS) and writes them to exports/manifest.json; it checks that init returns exactly the
family's parameter shapes, and exports as StableHLO (jax_workloads.exported, no derivatives: nothing
differentiates them) the five functions the harness calls: init (flattened), es_init, es_update, sample_hparams
and horizon, at the shapes of [config] (the population size). The harness checks every export itself and never
imports bandit.py; the evaluator never sees any of them: it plays the final parameters with its own code.
"""

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp

from jax_workloads import exported, sealed
from jax_workloads import synthenv as se

EXPORTS = "exports"
FUNCTIONS = {"init": 3, "es_init": 1, "es_update": 5, "sample_hparams": 2, "horizon": 1}


def _module(path: str):
    try:
        spec = importlib.util.spec_from_file_location("candidate_bandit", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sealed.fail(f"candidate bandit.py has a syntax error at line {e.lineno}: {e.msg}")
    except Exception as e:  # noqa: BLE001 - any import-time error is the candidate's
        sealed.fail(f"candidate bandit.py failed to import: {sealed.describe(e)}")
    return module


def trace(path: str, config: dict, out: str | Path = EXPORTS) -> None:
    """Export the bandit at path into out (see the module's docstring)."""
    module = _module(path)
    fns = {name: sealed.check_function(module, name, n, "bandit.py") for name, n in FUNCTIONS.items()}
    values = {k: getattr(module, k.upper(), None) for k in ("latent", "hidden", "activation")}
    try:
        family = se.family_from(values, config["env"])
    except ValueError as e:
        sealed.fail(f"candidate bandit.py: {e}")
    algorithms = list(getattr(module, "ALGORITHMS", ()))
    if not algorithms or not set(algorithms) <= set(se.TRAIN_ALGORITHMS):
        sealed.fail(f"candidate bandit.py: ALGORITHMS must be a non-empty list of {list(se.TRAIN_ALGORITHMS)}, not "
                    f"{algorithms!r} (REINFORCE is the evaluator's held-out algorithm)")
    obs_size, actions = family.sizes
    key, gen, d = exported.spec((2,), jnp.uint32), exported.spec((), jnp.int32), family.size
    try:
        got = jax.eval_shape(lambda k: fns["init"](k, obs_size, actions), key)
        got = {k: tuple(v.shape) for k, v in dict(got).items()}
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"init(key, obs_size, num_actions) raised: {sealed.describe(e)}")
    if got != family.shapes:
        sealed.fail(f"init must return the family's parameters {family.shapes}, not {got}")
    vec, pop = exported.spec((d,)), int(config["meta"]["population"])
    exported.export_function(lambda k: se.flatten(family, fns["init"](k, obs_size, actions)).astype(jnp.float32),
                             (key,), Path(out) / "init", name="init", vjp=False)
    exported.export_function(fns["es_init"], (vec,), Path(out) / "es_init", name="es_init", vjp=False)
    exported.export_function(fns["es_update"], (vec, vec, exported.spec((pop, d)), exported.spec((pop,)), gen),
                             Path(out) / "es_update", name="es_update", vjp=False)
    exported.export_function(fns["sample_hparams"], (key, gen), Path(out) / "sample_hparams", name="sample_hparams",
                             vjp=False)
    exported.export_function(fns["horizon"], (gen,), Path(out) / "horizon", name="horizon", vjp=False)
    exported.write_manifest(out, {"family": {k: v for k, v in family.to_dict().items() if k != "env_name"},
                                  "algorithms": algorithms})


def main() -> None:
    trace("bandit.py", json.loads(Path("config.json").read_text())["config"])


if __name__ == "__main__":
    main()
