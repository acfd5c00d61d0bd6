"""HaDES tracer (fixed; runs in a sandbox of its own): import the candidate distiller, export its functions.

The only process that runs distiller.py's Python. It checks the distiller's constants against their ranges
(jax_workloads.hades.es_spec: DATASET_SIZE <= [config.es] max_dataset_size, LEARN_LABELS, STRATEGY, SIGMA_INIT,
OPENES_LR, FIXED_INIT), exports its fitness shaping shape(fitness [population], generation) -> weights as
StableHLO into exports/ (jax_workloads.hades.export_distiller) and the constants as exports/manifest.json. Any
other function distiller.py defines is neither traced nor exported. The harness checks the export and the
manifest again itself and never imports distiller.py.
"""

import json
from pathlib import Path

from jax_workloads import hades, sealed

EXPORTS = "exports"


def trace(path: str, config: dict, out: str | Path = EXPORTS) -> None:
    """Export the distiller at path into out (see the module's docstring)."""
    try:
        cfg = hades.distill_config(config)
    except (ValueError, TypeError, KeyError) as e:
        sealed.fail(f"template.toml [config]: {sealed.describe(e)}")
    hades.export_distiller(hades.import_distiller(path, cfg), cfg, out)


def main() -> None:
    trace("distiller.py", json.loads(Path("config.json").read_text())["config"])


if __name__ == "__main__":
    main()
