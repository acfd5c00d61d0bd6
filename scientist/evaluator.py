"""The trusted evaluation process: `python -I -m scientist.evaluator {prepare,evaluate} ...`.

Started by the runner as a separate process in isolated mode (no PYTHONPATH, no
current folder on sys.path), so it can never import the candidate's code. It
loads the template's evaluator module by path, and for `evaluate` turns its
per-seed values into final_info.json with mean, standard error, 95% interval
and n per metric.

The [private] values it uses (the home's secrets in place, base.secrets) arrive on its stdin
as one JSON object (`--private stdin`, how the runner starts it): never in a file the sandbox
could read, nor in its command line. Without that flag it uses template.toml's [private] as
written: the shipped values, public, for tests and by-hand debugging only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import numbers
import os
import sys
import time
from pathlib import Path

import numpy as np

from base.results import FinalInfo
from base.stats import summarize
from base.template import Metric, load_template
from jax_workloads.sealed import FAIL_MARKER, ArtifactError, describe

ARTIFACT_REJECTED = 3


def _module(template_root: Path, filename: str):
    spec = importlib.util.spec_from_file_location("template_evaluator", template_root / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def final_info(template_name: str, metric: Metric, seeds: int, result: dict) -> FinalInfo:
    """The final_info.json contract: one summary per metric, the main metric named first.

    Every value of every metric must be a finite number (a NaN passes any range check and
    would flow into means and tests); the main metric's must lie in its declared range (if any),
    and its interval stays within it. A violation is a ValueError with a one-line reason.
    """
    per_seed = result.get("per_seed") if isinstance(result, dict) else None
    if not isinstance(per_seed, dict):
        raise ValueError(f"evaluator returned {type(per_seed).__name__} for per_seed, not a dict of per-seed lists")
    for name, values in per_seed.items():
        if not isinstance(values, list | tuple):
            raise ValueError(f"evaluator returned {type(values).__name__} for {name!r}, not a list of per-seed values")
        if len(values) != seeds:
            raise ValueError(f"evaluator returned {len(values)} values of {name!r} for {seeds} seeds")
        for seed, v in enumerate(values):
            # bool is an int to Python, but a metric of True is a bug, not a number
            if isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise ValueError(f"evaluator returned {name} = {v!r} for seed {seed}, not a finite number")
    outside = [v for v in per_seed.get(metric.name, []) if (metric.low is not None and v < metric.low)
               or (metric.high is not None and v > metric.high)]
    if outside:
        raise ValueError(f"evaluator returned {metric.name} = {outside[0]!r}, outside its declared range "
                         f"[{metric.low}, {metric.high}]")
    summaries = {name: summarize(values, *((metric.low, metric.high) if name == metric.name else ()))
                 for name, values in per_seed.items()}
    return FinalInfo(template=template_name, metric=metric.name, direction=metric.direction, n=seeds,
                     metrics=summaries, extra=result.get("extra", {}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scientist.evaluator")
    parser.add_argument("action", choices=["prepare", "evaluate"])
    parser.add_argument("--template", required=True, help="template folder")
    parser.add_argument("--dir", required=True, type=Path, help="data folder (prepare) or work folder")
    parser.add_argument("--seeds", required=True, type=int)
    parser.add_argument("--out", type=Path, help="where evaluate writes final_info.json")
    parser.add_argument("--jax-cache", type=Path)
    parser.add_argument("--private", choices=["template", "stdin"], default="template",
                        help="where [private] comes from: template.toml as written (public), or a JSON object on stdin")
    parser.add_argument("--config", choices=["template", "stdin"], default="template",
                        help="where [config] comes from: template.toml as written, or stdin with --private stdin, "
                             "which is then {\"private\": {...}, \"config\": {...}} (the run's settings, with its "
                             "profile or screen laid over them)")
    args = parser.parse_args(argv)
    private = config = None
    if args.private == "stdin":
        try:
            private = json.loads(sys.stdin.read())
        except ValueError as e:
            print(f"{FAIL_MARKER}--private stdin: not a JSON object ({e})", file=sys.stderr, flush=True)
            return 2
        if args.config == "stdin" and isinstance(private, dict):
            private, config = private.get("private"), private.get("config")
        if not isinstance(private, dict) or (args.config == "stdin" and not isinstance(config, dict)):
            print(f"{FAIL_MARKER}--private stdin: not a JSON object" + (" with private and config" if
                  args.config == "stdin" else ""), file=sys.stderr, flush=True)
            return 2

    if args.jax_cache is not None:
        import jax

        # Resolved: JAX's cache keys contain the folder's path as written (its autotune folder is one of the
        # compile options), so a home whose cache folder is a link would otherwise never hit the entries there.
        jax.config.update("jax_compilation_cache_dir", str(args.jax_cache.resolve()))
        # Trusted cache: every compile is worth keeping, the small ones too (about 2 s per run).
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        # A bounded cache is also a locked one: JAX then reads and writes entries under a file lock,
        # so concurrent evaluators (parallel sessions on one home) never read a half-written program.
        jax.config.update("jax_compilation_cache_max_size", 4 * 2**30)
    template = load_template(args.template)
    spec = template.spec
    private = spec.private if private is None else private
    config = spec.config if config is None else config
    module = _module(template.root, spec.evaluator)
    if args.action == "prepare":
        module.prepare(args.dir, config, private, args.seeds)
        return 0
    started = time.time()
    try:
        result = module.evaluate(args.dir, config, private, args.seeds)
        info = final_info(spec.name, spec.metric, args.seeds, result)
    except ArtifactError as e:
        print(f"{FAIL_MARKER}artifact rejected: {e}", file=sys.stderr, flush=True)
        return ARTIFACT_REJECTED
    except Exception as e:  # noqa: BLE001 - an evaluator crash on a weird artifact is a rejection too
        print(f"{FAIL_MARKER}evaluation failed: {describe(e)}", file=sys.stderr, flush=True)
        return ARTIFACT_REJECTED
    if spec.metric.name not in info.metrics:
        print(f"{FAIL_MARKER}evaluator produced no {spec.metric.name!r}", file=sys.stderr, flush=True)
        return ARTIFACT_REJECTED
    info = info.model_copy(update={"evaluate_s": time.time() - started})
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(info.to_json(), indent=1))
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
