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
