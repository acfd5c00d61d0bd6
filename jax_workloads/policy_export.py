"""The sealed policy export that the PPO-agent templates (kinetix, navix) share, both sides of it.

- Harness side: `export_policy` writes the greedy policy of every seed as one `jax.export` artifact
  (serialized StableHLO with no Python in it, its batch size symbolic) next to its parameters as plain arrays.
- Evaluator side (trusted): `load_policy` deserializes the artifact, rejects anything but plain computation
  (sealed.load_export: host callbacks, foreign custom calls, effects, infeed/outfeed), checks its signature
  against the evaluator's own environment (an ActionSpec) and its parameters, and returns a function the
  evaluator plays on observations of its choosing.
- `curve_indices`: which updates a harness's exported learning curve keeps, for figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jax_workloads.sealed import ArtifactError, export_arrays, load_arrays, load_export

EXPORT_FILE = "policy.jaxexport"
PARAMS_FILE = "policy_params.npz"
MAX_EXPORT_BYTES = 64 * 2**20  # a policy MLP is kilobytes; anything this big is not a policy


@dataclass(frozen=True)
class ActionSpec:
    """What the evaluator's environment accepts, for checking an exported policy's signature."""

    obs_size: int
    num_actions: int   # discrete actions; 0 when continuous
    action_dim: int    # continuous action size; 0 when discrete



CURVE_POINTS = 100  # learning-curve points the harness exports for figures


def curve_indices(num_updates: int) -> np.ndarray:
    """Which updates the harness's exported learning curve keeps (at most about CURVE_POINTS, evenly spaced)."""
    every = max(1, num_updates // CURVE_POINTS)
    return np.arange(every - 1, num_updates, every)



def export_policy(act: Callable, params, obs_size: int, directory: str | Path) -> None:
    """Export act(params, obs [S, b, obs_size]) -> actions as jax.export StableHLO, params as plain arrays.

    `params` is any pytree of arrays with a leading seed axis S; it is flattened to a list (the
    artifact's first argument), and the batch size b stays symbolic so the evaluator picks its own.
    Lowered for the CPU, where the evaluator runs, whatever device trained the policy.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    leaves, treedef = jax.tree.flatten(params)
    seeds = int(leaves[0].shape[0])

    def flat_act(flat, obs):
        return act(jax.tree.unflatten(treedef, flat), obs)

    (b,) = jax.export.symbolic_shape("b")
    args = ([jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves],
            jax.ShapeDtypeStruct((seeds, b, obs_size), jnp.float32))
    exported = jax.export.export(jax.jit(flat_act), platforms=["cpu"])(*args)
    (directory / EXPORT_FILE).write_bytes(exported.serialize())
    export_arrays(directory / PARAMS_FILE, {f"p{i:03d}": np.asarray(x) for i, x in enumerate(leaves)})


def init_lapack() -> None:
    """Make jaxlib's LAPACK kernels callable from exports deserialized in this process.

    jax initialises them only when it lowers a linear-algebra operation itself; an export that calls one
    (orthogonal initialisation is a QR decomposition: lapack_sgeqrf_ffi), deserialized in a process that has
    not, segfaults when it runs (jax-ml/jax#29610, jax 0.9.0 here). Cheap, and idempotent.
    """
    from jax._src.lib import lapack

    lapack.prepare_lapack_call("geqrf_ffi", np.float32)


def load_policy(directory: str | Path, seeds: int,
                spec_of: Callable[[bool], ActionSpec]) -> tuple[Callable, ActionSpec]:
    """Load and check an exported policy; returns (policy(obs [S, E, obs_size]) -> actions, its ActionSpec).

    Integer actions mean the environment's discrete action space, floating-point ones its continuous one:
    spec_of(continuous) is the evaluator's ActionSpec for that action space.
    Raises ArtifactError when the files are missing or malformed, the module holds anything but plain
    computation (sealed.load_export), its signature is not (params..., obs [seeds, b, obs_size]) -> actions of
    the evaluator's action space, or a parameter is missing, misshapen or not finite.
    """
    directory = Path(directory)
    exported = load_export(directory / EXPORT_FILE, MAX_EXPORT_BYTES)

    n_params = len(exported.in_avals) - 1
    if n_params < 1 or exported.in_tree != jax.tree.structure(((list(range(n_params)), 0), {})):
        raise ArtifactError(f"the exported policy's arguments are {exported.in_tree}, expected ([params...], obs)")
    if len(exported.out_avals) != 1:
        raise ArtifactError(f"the exported policy returns {len(exported.out_avals)} arrays, expected 1 (actions)")
    out = exported.out_avals[0]
    discrete = bool(jnp.issubdtype(out.dtype, jnp.integer))
    spec = spec_of(not discrete)
    obs_aval = exported.in_avals[-1]
    obs_shape = _dims(obs_aval.shape)
    if (len(obs_shape) != 3 or obs_shape[0] != seeds or isinstance(obs_shape[1], int)
            or obs_shape[2] != spec.obs_size or obs_aval.dtype != jnp.float32):
        raise ArtifactError(f"the exported policy takes observations {obs_aval.str_short()}, expected "
                            f"float32[{seeds},b,{spec.obs_size}] with a symbolic batch size b")
    if discrete:
        ok, want = _dims(out.shape) == obs_shape[:2], f"int[{seeds},b] (discrete actions)"
    else:
        ok = _dims(out.shape) == (*obs_shape[:2], spec.action_dim) and jnp.issubdtype(out.dtype, jnp.floating)
        want = f"float[{seeds},b,{spec.action_dim}] (continuous actions)"
    if not ok:
        raise ArtifactError(f"the exported policy returns {out.str_short()}, expected {want}")

    expected = {}
    for i, aval in enumerate(exported.in_avals[:-1]):
        if not all(isinstance(d, int) for d in aval.shape):
            raise ArtifactError(f"parameter p{i:03d} of the exported policy has a symbolic shape {aval.str_short()}")
        if not jnp.issubdtype(aval.dtype, jnp.floating) or aval.shape[:1] != (seeds,):
            raise ArtifactError(f"parameter p{i:03d} is {aval.str_short()}: parameters must be floating-point "
                                f"with a leading axis of {seeds} seeds")
        expected[f"p{i:03d}"] = (aval.shape, str(aval.dtype))
    params = load_arrays(directory / PARAMS_FILE, expected)
    flat = [jnp.asarray(params[f"p{i:03d}"]) for i in range(n_params)]
    init_lapack()  # a network may hold linear algebra (sealed.PLAIN_CUSTOM_CALLS lets LAPACK through)

    def policy(obs):
        return exported.call(flat, obs)

    return policy, spec


def _dims(shape) -> tuple:
    """A shape with its symbolic dimensions as strings, so that it compares with plain tuples."""
    return tuple(d if isinstance(d, int) else str(d) for d in shape)
