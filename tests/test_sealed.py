"""The evaluator's artifact checks: a bad artifact is rejected with a clear reason."""

import numpy as np
import pytest

from jax_workloads.sealed import ArtifactError, load_arrays

EXPECTED = {"w": ((2, 3), "float32")}


def save(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_accepts_the_expected_arrays(tmp_path):
    p = save(tmp_path / "a.npz", w=np.zeros((2, 3), np.float32))
    assert load_arrays(p, EXPECTED)["w"].shape == (2, 3)


@pytest.mark.parametrize("arrays,message", [
    ({"w": np.zeros((3, 2), np.float32)}, "shape"),
    ({"w": np.zeros((2, 3), np.float64)}, "dtype"),
    ({"w": np.full((2, 3), np.nan, np.float32)}, "NaN"),
    ({"w": np.zeros((2, 3), np.float32), "extra": np.zeros(1)}, "expected"),
    ({"v": np.zeros((2, 3), np.float32)}, "expected"),
])
def test_rejects_wrong_arrays(tmp_path, arrays, message):
    p = save(tmp_path / "a.npz", **arrays)
    with pytest.raises(ArtifactError, match=message):
        load_arrays(p, EXPECTED)


def test_rejects_pickled_objects_and_garbage(tmp_path):
    p = save(tmp_path / "a.npz", w=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(ArtifactError, match="not a readable array file"):
        load_arrays(p, EXPECTED)
    g = tmp_path / "g.npz"
    g.write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="not a readable array file"):
        load_arrays(g, EXPECTED)
    with pytest.raises(ArtifactError, match="exported no"):
        load_arrays(tmp_path / "missing.npz", EXPECTED)


def test_constants_are_capped_splats_counted_once_each():
    """An export may not smuggle offline-computed values: one dense table or thousands of scalars over the cap are
    refused; the same program with a splat (a constant filled with one value) passes."""
    import jax
    import jax.numpy as jnp

    from jax_workloads.sealed import MAX_CONSTANT_BYTES, ArtifactError, check_exported

    spec = jax.ShapeDtypeStruct((8,), jnp.float32)
    table = np.linspace(0, 1, MAX_CONSTANT_BYTES // 4 + 1, dtype=np.float32)
    with pytest.raises(ArtifactError, match="bytes of constants, more than the limit"):
        check_exported(jax.export.export(jax.jit(lambda x: jnp.interp(x, table, table)))(spec), "table")

    def scalars(x):
        for i in range(MAX_CONSTANT_BYTES // 4 + 1):
            x = x + float(i)  # distinct values: jax shares the constant of equal ones
        return x

    with pytest.raises(ArtifactError, match="bytes of constants"):
        check_exported(jax.export.export(jax.jit(scalars))(spec), "scalars")
    splat = np.full(MAX_CONSTANT_BYTES, 0.5, np.float32)
    check_exported(jax.export.export(jax.jit(lambda x: x + splat[:8].sum() + jnp.zeros(10**6).sum()))(spec), "splat")
