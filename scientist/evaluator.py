"""The trusted evaluation process: `python -I -m scientist.evaluator {prepare,evaluate} ...`.

Started by the runner as a separate process in isolated mode (no PYTHONPATH, no
current folder on sys.path), so it can never import the candidate's code. It
loads the template's evaluator module by path, and for `evaluate` turns its
per-seed values into final_info.json with mean, standard error, 95% interval
and n per metric.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

from base.stats import summarize
from base.template import Metric, load_template
from jax_workloads.sealed import FAIL_MARKER, ArtifactError, describe

ARTIFACT_REJECTED = 3


def _module(template_root: Path, filename: str):
    spec = importlib.util.spec_from_file_location("template_evaluator", template_root / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def final_info(template_name: str, metric: Metric, seeds: int, result: dict) -> dict:
    """The final_info.json contract: one summary per metric, the main metric named first.

    The main metric's values must lie in its declared range (if any), and its interval stays within it.
    """
    per_seed = result["per_seed"]
    for name, values in per_seed.items():
        if len(values) != seeds:
            raise ValueError(f"evaluator returned {len(values)} values of {name!r} for {seeds} seeds")
    outside = [v for v in per_seed.get(metric.name, []) if (metric.low is not None and v < metric.low)
               or (metric.high is not None and v > metric.high)]
    if outside:
        raise ValueError(f"evaluator returned {metric.name} = {outside[0]!r}, outside its declared range "
                         f"[{metric.low}, {metric.high}]")
    summaries = {name: summarize(values, *((metric.low, metric.high) if name == metric.name else ()))
                 for name, values in per_seed.items()}
    return {
        "template": template_name,
        "metric": metric.name,
        "direction": metric.direction,
        "n": seeds,
        "metrics": summaries,
        "extra": result.get("extra", {}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scientist.evaluator")
    parser.add_argument("action", choices=["prepare", "evaluate"])
    parser.add_argument("--template", required=True, help="template folder")
    parser.add_argument("--dir", required=True, type=Path, help="data folder (prepare) or work folder")
    parser.add_argument("--seeds", required=True, type=int)
    parser.add_argument("--out", type=Path, help="where evaluate writes final_info.json")
    parser.add_argument("--jax-cache", type=Path)
    args = parser.parse_args(argv)

    if args.jax_cache is not None:
        import jax

        jax.config.update("jax_compilation_cache_dir", str(args.jax_cache))
        # Trusted cache: every compile is worth keeping, the small ones too (about 2 s per run).
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        # A bounded cache is also a locked one: JAX then reads and writes entries under a file lock,
        # so concurrent evaluators (parallel sessions on one home) never read a half-written program.
        jax.config.update("jax_compilation_cache_max_size", 4 * 2**30)
    template = load_template(args.template)
    spec = template.spec
    module = _module(template.root, spec.evaluator)
    if args.action == "prepare":
        module.prepare(args.dir, spec.config, spec.private, args.seeds)
        return 0
    started = time.time()
    try:
        result = module.evaluate(args.dir, spec.config, spec.private, args.seeds)
        info = final_info(spec.name, spec.metric, args.seeds, result)
    except ArtifactError as e:
        print(f"{FAIL_MARKER}artifact rejected: {e}", file=sys.stderr, flush=True)
        return ARTIFACT_REJECTED
    except Exception as e:  # noqa: BLE001 - an evaluator crash on a weird artifact is a rejection too
        print(f"{FAIL_MARKER}evaluation failed: {describe(e)}", file=sys.stderr, flush=True)
        return ARTIFACT_REJECTED
    if spec.metric.name not in info["metrics"]:
        print(f"{FAIL_MARKER}evaluator produced no {spec.metric.name!r}", file=sys.stderr, flush=True)
        return ARTIFACT_REJECTED
    info["evaluate_s"] = time.time() - started
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
