"""A candidate's functions as StableHLO: exported where the candidate runs, called where it never does.

Python cannot confine Python in one process: a candidate module that is imported by the process
that trains can rebind the training code, start threads or register exit handlers. So a
candidate's Python runs in one place only, a tracing sandbox of its own, which exports each
editable function with `jax.export` (StableHLO, with the derivative training needs). The trusted
harness, in a second sandbox, never imports the candidate: it loads those exports, checks they are
plain computation (sealed.load_export: no host callbacks, no foreign code) and calls them.

    tracing sandbox:   export_function(loss, specs, "exports/loss")   # candidate imported here only
    trusted harness:   loss = import_function("exports/loss")         # a jittable, differentiable function

Every function is exported under `jax.vmap` with a symbolic leading axis, so the harness can call
it inside vmap (seeds, betas) and grad: the batching rule registered here folds the harness's vmap
axes into that leading axis. Arguments and results may be pytrees of arrays (dicts, lists, tuples).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_workloads.sealed import PLAIN_CUSTOM_CALLS, ArtifactError, check_exported, describe, fail, load_export

SUFFIX = ".jaxexport"
MANIFEST = "manifest.json"
MAX_BYTES = 64 * 2**20  # one exported function; a network's weights are arguments, not constants
_AXIS = "vmapped"  # the symbolic leading axis every export carries


def spec(shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.ShapeDtypeStruct:
    """The shape and dtype of one argument, as export_function takes them."""
    return jax.ShapeDtypeStruct(tuple(shape), dtype)


def specs_of(tree: Any) -> Any:
    """The specs of a pytree of arrays (or of specs)."""
    return jax.tree.map(lambda x: spec(np.shape(x), x.dtype), tree)


def export_function(fn: Callable, args: tuple, path: str | Path, *, name: str, vjp: bool = True) -> Any:
    """Export fn(*args) (args: pytrees of specs) to path + SUFFIX; returns the specs of its result.

    Runs in the tracing sandbox; a function that does not trace is the candidate's failure (one line).
    """
    (axis,) = jax.export.symbolic_shape(_AXIS)
    batched = jax.tree.map(lambda s: spec((axis, *s.shape), s.dtype), args)
    try:
        # For this machine's device (the tracer runs with the harness's GPUs) and always for the CPU,
        # where gates and tests may call it.
        platforms = sorted({"cpu", {"gpu": "cuda"}.get(jax.default_backend(), jax.default_backend())})
        exp = jax.export.export(jax.jit(jax.vmap(fn)), platforms=platforms)(*batched)
        data = exp.serialize(vjp_order=1 if vjp else 0)
    except Exception as e:  # noqa: BLE001 - any tracing error is the candidate's
        fail(f"{name} raised while being traced: {describe(e)} (arguments {_shapes(args)})")
    path = Path(f"{path}{SUFFIX}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    out = jax.tree.unflatten(exp.out_tree, [spec(a.shape[1:], a.dtype) for a in exp.out_avals])
    return out


def write_manifest(directory: str | Path, values: dict) -> None:
    """Plain settings the candidate declares (JSON numbers, strings, booleans), for the harness to check."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    (Path(directory) / MANIFEST).write_text(json.dumps(values))


def read_manifest(directory: str | Path) -> dict:
    """The manifest the tracer wrote; {} when there is none. Its values are data: the harness checks each."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return {}
    try:
        values = json.loads(path.read_text())
    except (ValueError, OSError) as e:
        raise ArtifactError(f"{MANIFEST} is not JSON ({describe(e)})") from None
    if not isinstance(values, dict):
        raise ArtifactError(f"{MANIFEST} is not a JSON object")
    return values


def import_function(path: str | Path, *, custom_calls: re.Pattern = PLAIN_CUSTOM_CALLS) -> Callable:
    """Load an exported candidate function (checked to be plain computation) as a jittable, differentiable callable.

    Raises ArtifactError (one line) when the file is missing, not an export, not plain computation, or
    not exported by export_function.
    """
    path = Path(f"{path}{SUFFIX}")
    exp = load_export(path, MAX_BYTES, custom_calls, platforms=("cpu", "cuda", "rocm"))
    if not all(_leading_axis(a) for a in (*exp.in_avals, *exp.out_avals)):
        raise ArtifactError(f"{path.name} was not exported by export_function (no leading {_AXIS} axis)")
    if exp.has_vjp():  # checked too: the backward pass runs in training as the forward pass does
        check_exported(exp.vjp(), f"{path.name} (its derivative)", custom_calls, tuple(exp.platforms))
    _register_batching()

    def call(*args):
        out = exp.call(*jax.tree.map(lambda x: jnp.asarray(x)[None], args))
        return jax.tree.map(lambda x: x[0], out)

    return call


def _leading_axis(aval) -> bool:
    return len(aval.shape) >= 1 and str(aval.shape[0]) == _AXIS


def _shapes(args: tuple) -> str:
    return str(jax.tree.map(lambda s: f"{jnp.dtype(s.dtype).name}{list(s.shape)}", args))


_registered = False


def _register_batching() -> None:
    """Let vmap call exports of export_function: fold the new batch axis into their leading symbolic axis.

    jax has no batching rule for called exports; every export here has a leading symbolic axis on every
    argument and result (it was traced under vmap), so a batch of B calls on [n, ...] is one call on
    [B * n, ...]. The backward pass (Exported.vjp) has the same form, so grad inside vmap works too.
    """
    global _registered
    if _registered:
        return
    from jax._src.export._export import call_exported_p
    from jax._src.interpreters import batching

    def rule(args, dims, *, exported):
        size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not batching.not_mapped)
        flat = []
        for a, d in zip(args, dims, strict=True):
            a = jnp.broadcast_to(a, (size, *a.shape)) if d is batching.not_mapped else jnp.moveaxis(a, d, 0)
            flat.append(a.reshape(size * a.shape[1], *a.shape[2:]))
        outs = call_exported_p.bind(*flat, exported=exported)
        return [o.reshape(size, o.shape[0] // size, *o.shape[1:]) for o in outs], [0] * len(outs)

    batching.primitive_batchers[call_exported_p] = rule
    _registered = True
