"""CuPy's overrides of the generic backend; same signatures (tests/test_backends.py checks)."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from engine.backends.numpy_ops import ArrayOps


class CupyOps(ArrayOps):
    name = "cupy"

    def __init__(self, index: int = 0) -> None:
        import cupy

        self.xp = cupy
        self.index = index

    def on(self) -> contextlib.AbstractContextManager[Any]:
        return self.xp.cuda.Device(self.index)

    def to_host(self, a: Any) -> np.ndarray:
        return self.xp.asnumpy(a)

    def from_host(self, a: np.ndarray) -> Any:
        with self.xp.cuda.Device(self.index):
            return self.xp.asarray(a)

    def index_add(self, target: Any, index: Any, values: Any) -> None:
        import cupyx

        cupyx.scatter_add(target, index, values)

    def reshape_view(self, a: Any, shape: tuple[int, ...]) -> Any:
        out = a.view()
        try:
            out.shape = shape
        except AttributeError as e:  # CuPy's way of saying a copy would be needed
            raise ValueError(str(e)) from None
        return out

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    def erfc(self, a: Any) -> Any:
        import cupyx.scipy.special

        x = a if a.dtype in (self.xp.float32, self.xp.float64) else a.astype(self.xp.float32)
        return cupyx.scipy.special.erfc(x).astype(a.dtype, copy=False)

    def normal_cdf(self, a: Any) -> Any:
        import cupyx.scipy.special

        x = a if a.dtype in (self.xp.float32, self.xp.float64) else a.astype(self.xp.float32)
        return cupyx.scipy.special.ndtr(x).astype(a.dtype, copy=False)
