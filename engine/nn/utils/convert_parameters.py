"""parameters_to_vector / vector_to_parameters, as torch.nn.utils.convert_parameters."""

from __future__ import annotations

from collections.abc import Iterable

from engine.device import device
from engine.functions.shape import cat
from engine.tensor import Tensor


def _check_device(param: Tensor, seen: device | None) -> device:
    if seen is not None and param._device is not seen:
        raise TypeError(
            f"Found two parameters on different devices ({seen} and {param._device}), "
            "this is currently not supported."
        )
    return param._device


def parameters_to_vector(parameters: Iterable[Tensor]) -> Tensor:
    """The parameters flattened and joined into one vector (differentiable, as PyTorch's)."""
    seen = None
    flat = []
    for p in parameters:
        seen = _check_device(p, seen)
        flat.append(p.reshape(-1))
    return cat(flat)


def vector_to_parameters(vec: Tensor, parameters: Iterable[Tensor]) -> None:
    """Point each parameter's data at its slice of vec, as PyTorch's (they share storage)."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected engine.Tensor, but got: {type(vec).__name__}")
    seen = None
    pointer = 0
    for p in parameters:
        seen = _check_device(p, seen)
        n = p.numel()
        p.data = vec[pointer : pointer + n].view_as(p).data
        pointer += n
