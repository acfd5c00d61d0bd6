"""HaDES tracer (fixed; runs in a sandbox of its own): import the candidate distiller, export its functions.

The only process that runs distiller.py's Python. It sets the distiller's POPULATION to the public [config.es]
population of config.json, checks its five functions (init, ask, decode, tell, result) at the shapes the harness
calls them with, and exports each as StableHLO into exports/ (jax_workloads.hades.export_distiller), with
exports/manifest.json {"fixed_init": ...} (HaDES-F or HaDES-R). The harness trains with these exports, checks
every one of them itself and never imports distiller.py.
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
    hades.export_distiller(hades.import_distiller(path, cfg.population), cfg, out)


def main() -> None:
    trace("distiller.py", json.loads(Path("config.json").read_text())["config"])


if __name__ == "__main__":
    main()
