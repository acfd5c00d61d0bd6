"""Synthenv tracer (fixed; runs in a sandbox of its own): import the candidate bandit.py, export its functions.

The only process that runs bandit.py's Python. It checks the bandit's family (LATENT, HIDDEN, ACTIVATION), the
inner algorithms (ALGORITHMS) and SNES's settings (SIGMA_INIT, LR_MEAN, each in its declared range) and writes
them to exports/manifest.json, and exports as StableHLO (jax_workloads.exported, no derivatives: nothing
differentiates them) the three functions the harness calls: shape (the fitness shaping, at the population size
of [config]), sample_hparams and horizon. Nothing it exports can set the bandit's parameters: the harness owns
their initialisation and the SNES step, and never calls an init or es_update the candidate may still define.
The harness checks every export and the manifest itself and never imports bandit.py; the evaluator never sees
any of them: it plays the final parameters with its own code.
"""

import dataclasses
import importlib.util
import json
from pathlib import Path

import jax.numpy as jnp

from jax_workloads import exported, sealed
from jax_workloads import synthenv as se

EXPORTS = "exports"
FUNCTIONS = {"shape": 2, "sample_hparams": 2, "horizon": 1}


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
    try:
        strategy = se.Strategy(getattr(module, "SIGMA_INIT", None), getattr(module, "LR_MEAN", None))
    except ValueError as e:
        sealed.fail(f"candidate bandit.py: {e}")
    gen, pop = exported.spec((), jnp.int32), int(config["meta"]["population"])
    exported.export_function(fns["shape"], (exported.spec((pop,)), gen), Path(out) / "shape", name="shape",
                             vjp=False)
    exported.export_function(fns["sample_hparams"], (exported.spec((2,), jnp.uint32), gen),
                             Path(out) / "sample_hparams", name="sample_hparams", vjp=False)
    exported.export_function(fns["horizon"], (gen,), Path(out) / "horizon", name="horizon", vjp=False)
    exported.write_manifest(out, {"family": {k: v for k, v in family.to_dict().items() if k != "env_name"},
                                  "algorithms": algorithms, "strategy": dataclasses.asdict(strategy)})


def main() -> None:
    trace("bandit.py", json.loads(Path("config.json").read_text())["config"])


if __name__ == "__main__":
    main()
