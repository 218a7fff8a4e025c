"""API.md's meaning of "agree": |a - b| <= rtol*|b| + atol*max|b| elementwise."""

from __future__ import annotations

import numpy as np

FLOAT32 = {"rtol": 1e-5, "atol": 1e-6}


def assert_agree(
    actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-5, atol: float = 1e-6, what: str = ""
) -> None:
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if expected.dtype.kind in "biu":
        assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
        np.testing.assert_array_equal(actual, expected, err_msg=what)
        return
    if expected.size == 0:
        return
    a = actual.astype(np.float64)
    b = expected.astype(np.float64)
    scale = np.max(np.abs(b[np.isfinite(b)]), initial=0.0)
    bound = rtol * np.abs(b) + atol * scale
    same_nonfinite = (~np.isfinite(b)) & ((a == b) | (np.isnan(a) & np.isnan(b)))
    bad = ~((np.abs(a - b) <= bound) | same_nonfinite)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {b.size} elements disagree; first at {i}: "
            f"{a[i]!r} vs {b[i]!r} (bound {bound[i]:.3g})"
        )
