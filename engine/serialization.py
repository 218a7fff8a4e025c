"""`engine.save` / `engine.load`: a flat dict of tensors to and from safetensors, never pickle."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from engine.factories import as_tensor
from engine.tensor import Tensor


def save(obj: dict[str, Tensor], path: str | os.PathLike[str]) -> None:
    """Write a flat {name: tensor} dict as one safetensors file (via a temporary file)."""
    if not isinstance(obj, dict):
        raise TypeError(
            f"save: expected a flat dict of str -> Tensor (safetensors only, no pickle), "
            f"got {type(obj).__name__}"
        )
    arrays = {}
    for name, t in obj.items():
        if not isinstance(name, str) or not isinstance(t, Tensor):
            raise TypeError(
                f"save: expected str keys and Tensor values (safetensors only, no pickle), "
                f"got {name!r}: {type(t).__name__}"
            )
        arrays[name] = np.ascontiguousarray(t.detach().numpy())
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    save_file(arrays, tmp)
    os.replace(tmp, path)


def load(path: str | os.PathLike[str], device: Any = None) -> dict[str, Tensor]:
    """Read a safetensors file written by `save` (or PyTorch's safetensors) as a dict."""
    try:
        arrays = load_file(os.fspath(path))
    except OSError:
        raise
    except Exception as e:  # safetensors' own error type for a corrupt or truncated file
        raise RuntimeError(
            f"load: {os.fspath(path)} is not a valid safetensors file ({e})"
        ) from None
    return {name: as_tensor(a, device=device) for name, a in arrays.items()}
