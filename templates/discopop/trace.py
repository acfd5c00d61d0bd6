"""DiscoPOP tracer (fixed; runs in a sandbox of its own): import the candidate loss, export it as StableHLO.

The only process that runs the candidate's Python. It exports `loss` at the shape training calls it
with (one minibatch), with its derivative; the harness trains with that export and never imports
loss.py, so whatever else the module does at import (rebinding harness functions, threads, exit
handlers, files) ends with this sandbox.
"""

import json
from pathlib import Path

from jax_workloads import exported, sealed

N_ARGS = 5  # policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta


def batch_size(config: dict) -> int:
    """The minibatch the harness trains on (jax_workloads.preference.make_train): the loss's argument length."""
    return min(config["train"]["batch_size"], config["pairs"])


def main() -> None:
    config = json.loads(Path("config.json").read_text())["config"]
    loss = sealed.load_candidate("loss.py", "loss", N_ARGS)
    logps = exported.spec((batch_size(config),))
    exported.export_function(loss, (logps, logps, logps, logps, exported.spec(())), "exports/loss", name="loss")


if __name__ == "__main__":
    main()
