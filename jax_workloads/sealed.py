"""Both sides of sealed evaluation.

Harness side (inside the sandbox): load the candidate module, fail with a
one-line reason, export plain arrays, record phase timings.
Evaluator side (trusted, never imports the candidate): load exported arrays
with pickling disabled and check their names, shapes, dtypes and finiteness.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
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


def describe(exc: BaseException) -> str:
    """`Type: message` on one line, for failure reasons."""
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


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
    fn = getattr(module, name, None)
    if not callable(fn):
        fail(f"candidate {path.name} does not define a function {name!r}")
    try:
        inspect.signature(fn).bind(*range(n_args))
    except TypeError:
        fail(f"candidate {path.name}: {name}{inspect.signature(fn)} must accept {n_args} positional arguments")
    except ValueError:
        pass  # builtins without a signature: let the shape gate judge
    return fn


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


class Stopwatch:
    """Wall-clock phase marks of a harness, written to timings.json for the runner."""

    def __init__(self, started: float):
        self.marks: dict[str, float] = {"started": started}
        self._last = time.time()

    def lap(self, phase: str) -> None:
        now = time.time()
        self.marks[phase] = now - self._last
        self._last = now

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.marks))
