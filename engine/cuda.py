"""`engine.cuda`: what PyTorch's `torch.cuda` answers, answered through CuPy when installed."""

from __future__ import annotations

import functools


@functools.cache
def _cupy():
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def is_available() -> bool:
    return device_count() > 0


def device_count() -> int:
    cp = _cupy()
    if cp is None:
        return 0
    try:
        return int(cp.cuda.runtime.getDeviceCount())
    except Exception:  # a driver that is missing or broken means no usable GPU
        return 0


def current_device() -> int:
    cp = _cupy()
    if cp is None or not is_available():
        raise RuntimeError("CUDA is not available")
    return int(cp.cuda.Device().id)


def set_device(index: int) -> None:
    cp = _cupy()
    if cp is None or not is_available():
        raise RuntimeError("CUDA is not available")
    cp.cuda.Device(index).use()


def synchronize(device: int | None = None) -> None:
    cp = _cupy()
    if cp is None or not is_available():
        raise RuntimeError("CUDA is not available")
    if device is None:
        cp.cuda.Device().synchronize()
    else:
        cp.cuda.Device(device).synchronize()
