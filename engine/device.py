"""Devices: `cpu`, `cuda:N` and `meta`, each knowing its array module and backend ops.

This is the one place that chooses NumPy, CuPy or the meta backend (shapes without
storage). Devices are interned, so ops compare them with `is`; a cuda device loads CuPy
only when a tensor is first put on it. `with engine.device(d):` makes d the device of
factories that are given none, as PyTorch 2's device context does.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from engine.backends.host_memory import tune_malloc
from engine.backends.meta import MetaOps
from engine.backends.numpy_ops import ArrayOps


class device:
    __slots__ = ("_ops", "index", "type")
    _interned: dict[tuple[str, int | None], device] = {}  # noqa: RUF012

    def __new__(cls, spec: str | int | device, index: int | None = None) -> device:
        if isinstance(spec, device):
            return spec
        kind, idx = _parse(spec, index)
        key = (kind, idx)
        d = cls._interned.get(key)
        if d is None:
            d = object.__new__(cls)
            d.type = kind
            d.index = idx
            d._ops = None
            cls._interned[key] = d
        return d

    @property
    def ops(self) -> ArrayOps:
        ops = self._ops
        if ops is None:
            ops = self._ops = _load_backend(self)
        return ops

    @property
    def xp(self) -> Any:
        return self.ops.xp

    def __repr__(self) -> str:
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (device, (str(self),))

    def __enter__(self) -> device:
        # a context variable, not an attribute of this interned object: each thread (and
        # each asyncio task) has its own default, and contexts nest
        _DEFAULTS.set((*_DEFAULTS.get(), resolve(self)))
        return self

    def __exit__(self, *exc: object) -> None:
        _DEFAULTS.set(_DEFAULTS.get()[:-1])


def _parse(spec: str | int, index: int | None) -> tuple[str, int | None]:
    if isinstance(spec, int):
        return "cuda", spec
    if not isinstance(spec, str):
        raise TypeError(f"device: expected a string such as 'cpu' or 'cuda:0', got {spec!r}")
    kind, _, num = spec.partition(":")
    if kind not in ("cpu", "cuda", "meta"):
        raise RuntimeError(
            f"device: unknown device type {kind!r} in {spec!r}; use 'cpu', 'cuda[:N]' or 'meta'"
        )
    if num:
        if index is not None:
            raise RuntimeError(f"device: index given twice in device({spec!r}, {index})")
        if not num.isdigit():
            raise RuntimeError(f"device: invalid device string {spec!r}")
        index = int(num)
    if kind != "cuda":
        if index not in (None, 0):
            raise RuntimeError(f"device: {kind} has no index {index}")
        return kind, None
    return "cuda", index


def _load_backend(d: device) -> ArrayOps:
    if d.type == "cpu":
        return ArrayOps()
    if d.type == "meta":
        return MetaOps()
    from engine import cuda

    if not cuda.is_available():
        raise RuntimeError(
            f"{d}: CUDA is not available (install descent[gpu] or descent[gpu13] "
            "on a machine with an NVIDIA GPU)"
        )
    from engine.backends.cupy_ops import CupyOps

    return CupyOps(d.index or 0)


CPU = device("cpu")
CPU._ops = ArrayOps()
tune_malloc()
# The default devices of factories, innermost `with device(...)` last.
_DEFAULTS: ContextVar[tuple[device, ...]] = ContextVar("engine_default_device", default=(CPU,))


def resolve(spec: str | int | device | None) -> device:
    """The concrete device a tensor lives on: `cuda` without index becomes the current GPU,
    None the default device (cpu, or that of the innermost `with device(...)`)."""
    if spec is None:
        return _DEFAULTS.get()[-1]
    if spec is CPU:
        return CPU
    d = device(spec)
    if d.type == "cuda":
        if d.index is None:
            from engine import cuda

            # without CUDA, cuda:0's backend load below gives the clear error
            d = device("cuda", cuda.current_device() if cuda.is_available() else 0)
        d.ops  # noqa: B018  (fails early and clearly when CUDA is missing)
    return d
