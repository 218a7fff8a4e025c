"""The generic backend, written against `self.xp`; NumPy's own spelling where it differs."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

_NO_CONTEXT = contextlib.nullcontext()  # reusable: it holds no state


class ArrayOps:
    name = "numpy"

    def __init__(self) -> None:
        self.xp: Any = np

    def on(self) -> contextlib.AbstractContextManager[Any]:
        """A context in which new arrays are made on this backend's device."""
        return _NO_CONTEXT

    def to_host(self, a: Any) -> np.ndarray:
        """A NumPy copy of `a`."""
        return np.array(a, copy=True)

    def from_host(self, a: np.ndarray) -> Any:
        """`a` as an array of this backend (no copy where none is needed)."""
        return a

    def index_add(self, target: Any, index: Any, values: Any) -> None:
        """target[index] += values, adding every occurrence of a repeated index."""
        np.add.at(target, index, values)

    def reshape_view(self, a: Any, shape: tuple[int, ...]) -> Any:
        """`a` reshaped without copying; ValueError where the strides do not allow it."""
        return np.reshape(a, shape, copy=False)

    def synchronize(self) -> None:
        """Wait for queued device work; the host runs NumPy eagerly."""
