"""Both sides of sealed evaluation.

Harness side (inside the sandbox): load the candidate module, fail with a
one-line reason, export plain arrays, record phase timings.
Evaluator side (trusted, never imports the candidate): load exported arrays
with pickling disabled and check their names, shapes, dtypes and finiteness;
load exported programs (jax.export StableHLO) and check that they are plain
computation before anything runs them.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import re
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType

import numpy as np

# The runner reads the last line that starts with this marker as the run's failure reason.
FAIL_MARKER = "HARNESS-FAIL: "
# Exit code of a harness that rejected its candidate (distinct from a crash of Python itself).
CANDIDATE_FAILED = 3


class ArtifactError(Exception):
    """An exported artifact is missing or is not what the evaluator expects."""


def fail(reason: str) -> None:
    """End the harness with a one-line reason the runner records."""
    line = " ".join(str(reason).split())[:500]
    print(f"{FAIL_MARKER}{line}", file=sys.stderr, flush=True)
    sys.exit(CANDIDATE_FAILED)


# A gate's probe runs once, on tiny inputs: XLA's optimisations would cost more to compile than they could save
# (a Kinetix agent's probe compiles in 6-8 s with these, 22 s without, on 2 loaded cores).
QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def run_once(fn: Callable, *args):
    """fn(*args) compiled for this one call without XLA's costly optimisations (QUICK_COMPILE): a gate's probe.

    Errors of the candidate's functions surface here as under jax.jit (tracing, lowering or running them).
    """
    import jax

    return jax.jit(fn).lower(*args).compile(compiler_options=QUICK_COMPILE)(*args)


def describe(exc: BaseException) -> str:
    """`Type: message` on one line, for failure reasons."""
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def check_function(module: ModuleType, name: str, n_args: int, where: str) -> Callable:
    """module.name, checked to be a function that accepts n_args positional arguments; else fail()."""
    fn = getattr(module, name, None)
    if not callable(fn):
        fail(f"candidate {where} does not define a function {name!r}")
    try:
        inspect.signature(fn).bind(*range(n_args))
    except TypeError:
        noun = "argument" if n_args == 1 else "arguments"
        fail(f"candidate {where}: {name}{inspect.signature(fn)} must accept {n_args} positional {noun}")
    except ValueError:
        pass  # builtins without a signature: let the shape gate judge
    return fn


def load_candidate(path: str | Path, name: str, n_args: int) -> Callable:
    """Import the candidate file and return its function `name` taking n_args positionals."""
    path = Path(path)
    try:
        spec = importlib.util.spec_from_file_location(f"candidate_{path.stem}", path)
        module: ModuleType = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except SyntaxError as e:
        fail(f"candidate {path.name} has a syntax error at line {e.lineno}: {e.msg}")
    except Exception as e:  # noqa: BLE001 - any import-time error is the candidate's
        fail(f"candidate {path.name} failed to import: {describe(e)}")
    return check_function(module, name, n_args, path.name)


def export_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write arrays as an uncompressed .npz: plain data, no Python objects."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})


def load_arrays(path: str | Path, expected: Mapping[str, tuple[tuple[int, ...], str]]) -> dict[str, np.ndarray]:
    """Load an exported .npz and check it holds exactly the expected, finite arrays."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"the harness exported no {path.name}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as e:  # noqa: BLE001 - any unreadable file is a bad artifact
        raise ArtifactError(f"{path.name} is not a readable array file ({describe(e)})") from None
    if set(arrays) != set(expected):
        raise ArtifactError(f"{path.name} holds arrays {sorted(arrays)}, expected {sorted(expected)}")
    for key, (shape, dtype) in expected.items():
        a = arrays[key]
        if a.shape != tuple(shape):
            raise ArtifactError(f"{path.name}: array {key!r} has shape {a.shape}, expected {tuple(shape)}")
        if a.dtype != np.dtype(dtype):
            raise ArtifactError(f"{path.name}: array {key!r} has dtype {a.dtype}, expected {dtype}")
        if not np.all(np.isfinite(a)):
            raise ArtifactError(f"{path.name}: array {key!r} holds NaN or infinite values")
    return arrays


# Custom calls that are plain computation: jax.export's own shape assertions (symbolic dimensions),
# LAPACK kernels (linear algebra) and mhlo.erf (how StableHLO serializes chlo.erf, e.g. in flax's
# truncated-normal initializers). Host callbacks (pure_callback, io_callback, debug.print) and any
# other foreign code are custom calls too; no pattern lets them through.
PLAIN_CUSTOM_CALLS = re.compile(r"^(shape_assertion|lapack_[a-z0-9]+_ffi|mhlo\.erf)$")
NO_CUSTOM_CALLS = re.compile(r"(?!)")  # matches no target
# Operations that talk to the host or other devices, whatever their dialect's spelling.
_HOST_OPS = {"infeed", "outfeed", "send", "recv", "after_all", "create_token"}
_PLAIN_DIALECTS = {"builtin", "func", "stablehlo", "chlo", "sdy", "shape", "arith", "tensor"}
# The data a program may carry in its constants, splats counted once per constant. The shipped templates' largest
# export holds about 2 kB (a network init's splats and shapes); a cap of 16 kB keeps a tracer from baking what it
# computed offline (trained weights, a table of answers, a designed data set) into an export as constants, since
# trained values must be arguments the harness computed, not code.
MAX_CONSTANT_BYTES = 16 * 1024


def load_export(path: str | Path, max_bytes: int, custom_calls: re.Pattern = PLAIN_CUSTOM_CALLS,
                platforms: tuple[str, ...] = ("cpu",), max_constant_bytes: int = MAX_CONSTANT_BYTES):
    """Read a jax.export artifact and check that it is plain computation for one device; returns the Exported.

    Walks every operation of the StableHLO module before anything runs it. Raises ArtifactError
    (one line) when the file is missing, larger than max_bytes or not an artifact; when it was
    exported for another platform or several devices, or has effects; or when it contains a custom
    call whose target `custom_calls` does not match, an operation that talks to the host
    (infeed, outfeed, send, recv, tokens), an operation of a dialect outside plain computation, or
    constants of more than max_constant_bytes in all.
    """
    import jax

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"the harness exported no {path.name}")
    size = path.stat().st_size
    if size > max_bytes:
        raise ArtifactError(f"{path.name} is {size:,} bytes, more than the limit of {max_bytes:,}")
    try:
        exported = jax.export.deserialize(bytearray(path.read_bytes()))
    except Exception as e:  # noqa: BLE001 - a truncated or tampered file may fail anywhere in the parser
        raise ArtifactError(f"{path.name} is not a jax.export artifact ({describe(e)})") from None
    check_exported(exported, path.name, custom_calls, platforms, max_constant_bytes)
    return exported


def _constant_bytes(op, ir) -> int:
    """The bytes of data an operation's "value" attribute holds: a splat counts one element, anything else
    (dense, dense_resource, an unknown encoding) its whole result shape."""
    if "value" not in op.attributes or len(op.results) != 1:
        return 0
    try:
        shaped = ir.ShapedType(op.results[0].type)
    except ValueError:  # a scalar: its attribute is its value
        return 8
    try:
        splat = ir.DenseElementsAttr(op.attributes["value"]).is_splat
    except ValueError:  # dense_resource or another encoding: no splat
        splat = False
    count = 1 if splat or not shaped.has_static_shape else math.prod(shaped.shape)
    width = getattr(shaped.element_type, "width", 64)  # complex and index types: 8 bytes
    return count * max(width // 8, 1)


def check_exported(exported, label: str, custom_calls: re.Pattern = PLAIN_CUSTOM_CALLS,
                   platforms: tuple[str, ...] = ("cpu",), max_constant_bytes: int = MAX_CONSTANT_BYTES) -> None:
    """Raise ArtifactError unless an Exported is plain computation for one device of one of `platforms`, with at
    most max_constant_bytes of constants."""
    from jax._src.interpreters import mlir as jax_mlir  # the context jax itself parses StableHLO with
    from jax._src.lib.mlir import ir

    if not set(platforms) & set(exported.platforms):
        raise ArtifactError(f"{label} was exported for {list(exported.platforms)}, not for {list(platforms)}")
    if exported.nr_devices != 1:
        raise ArtifactError(f"{label} was exported for {exported.nr_devices} devices, not 1")
    if exported.ordered_effects or exported.unordered_effects:
        raise ArtifactError(f"{label} has side effects (callbacks or I/O)")
    try:
        module = ir.Module.parse(exported.mlir_module(), context=jax_mlir.make_ir_context())
    except Exception as e:  # noqa: BLE001 - anything unparsable is not plain computation
        raise ArtifactError(f"{label} does not parse as StableHLO ({describe(e)})") from None
    bad: list[str] = []
    constants = 0

    def walk(op) -> None:
        nonlocal constants
        name = op.name
        constants += _constant_bytes(op, ir)
        dialect, _, short = name.partition(".")
        if name == "stablehlo.custom_call":
            target = ir.StringAttr(op.attributes["call_target_name"]).value
            if not custom_calls.match(target):
                bad.append(f"custom call {target!r}" + (" (a host callback)" if "callback" in target else ""))
        elif dialect not in _PLAIN_DIALECTS or short in _HOST_OPS:
            bad.append(f"operation {name!r}")
        for region in op.regions:
            for block in region.blocks:
                for child in block.operations:
                    walk(child.operation)

    walk(module.operation)
    if bad:
        raise ArtifactError(f"{label} contains {sorted(set(bad))[0]}; only plain computation is accepted")
    if constants > max_constant_bytes:
        raise ArtifactError(f"{label} carries {constants:,} bytes of constants, more than the limit of "
                            f"{max_constant_bytes:,}: values computed before the run (weights, tables, data) "
                            "must not be baked into an export")


class Stopwatch:
    """Wall-clock phase marks of a harness, written to timings.json for the runner.

    Each lap is written as it ends (to `path`, the work folder's timings.json by default), so the
    live view can say which phase a run is in; `save` writes the final marks.
    """

    def __init__(self, started: float, path: str | Path | None = "timings.json"):
        self.marks: dict[str, float] = {"started": started}
        self._last = time.time()
        self._path = path

    def lap(self, phase: str) -> None:
        now = time.time()
        self.marks[phase] = now - self._last
        self._last = now
        if self._path is not None:
            self.save(self._path)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.marks))


class Progress:
    """Training progress of a harness, written to progress.json for the live view (at most every `every_s`).

    Hand `progress.update` to a compiled training loop through jax.debug.callback (ppo.make_train's
    `progress=`): host code with no outputs, so the results are the same with or without it. Under
    vmap the callback runs once per seed with the same step; it records the furthest step seen.
    """

    def __init__(self, total: int, path: str | Path = "progress.json", every_s: float = 1.0):
        self.total, self.path, self.every_s = int(total), Path(path), every_s
        self.done, self._written = 0, 0.0

    def update(self, step) -> None:
        """Record that step `step` (0-based) of `total` has finished."""
        self.done = max(self.done, int(np.max(np.asarray(step))) + 1)
        now = time.time()
        if now - self._written >= self.every_s or self.done >= self.total:
            self._written = now
            try:
                self.path.write_text(json.dumps({"done": self.done, "total": self.total, "time": now}))
            except OSError:
                pass  # progress is informational: a full disk must not fail the training
