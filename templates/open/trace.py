"""OPEN tracer (fixed; runs in a sandbox of its own): import the candidate rule, export it as StableHLO.

The only process that runs the candidate's Python. `update(f)` is called on every parameter tensor
of the fixed actor-critic, so it is exported once per distinct parameter shape (and the gate's
shapes), as exports/update_<shape>, taking the features as a plain dict of arrays; no derivative:
training never differentiates the optimizer. The module's CARRY and ZERO_MEAN go into
exports/manifest.json, which the harness checks again (it is data). Whatever else the module does at
import (rebinding jax_workloads, threads, exit handlers, files) ends with this sandbox.
"""

import json
from pathlib import Path

import jax
from harness import export_path, feature_specs, parameter_shapes, rule_options

from jax_workloads import exported, sealed
from jax_workloads import open_features as of


def main() -> None:
    config = json.loads(Path("config.json").read_text())["config"]
    shapes = parameter_shapes(config)  # before the candidate is imported: it cannot change them
    rule = sealed.load_candidate("optimizer.py", "update", 1)
    module = getattr(rule, "__globals__", {})
    declared = {k: module[k] for k in ("CARRY", "ZERO_MEAN") if k in module}
    carry, zero_mean = rule_options(declared)  # the same one-line messages as the harness's check

    def update(features: dict):
        return rule(of.Features(**features))

    for shape in shapes:
        try:  # the rule's own errors first, in one short line (the export's message lists every argument)
            jax.eval_shape(update, feature_specs(shape, carry))
        except Exception as e:  # noqa: BLE001 - any tracing error is the candidate's
            sealed.fail(f"update rule raised on a parameter of shape {shape}: {sealed.describe(e)}")
        exported.export_function(update, (feature_specs(shape, carry),), export_path(shape),
                                 name=f"update (on a parameter of shape {shape})", vjp=False)
    exported.write_manifest("exports", {"CARRY": carry, "ZERO_MEAN": zero_mean})


if __name__ == "__main__":
    main()
