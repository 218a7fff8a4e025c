"""`Flatten` and `Unflatten`: reshapes of a range of dims / one dim, as PyTorch's."""

from __future__ import annotations

from typing import Any

from engine.functions.common import norm_dim
from engine.functions.shape import flatten, reshape
from engine.nn.module import Module
from engine.tensor import Tensor


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input: Tensor) -> Tensor:
        return flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    def __init__(self, dim: int, unflattened_size: Any) -> None:
        super().__init__()
        if isinstance(dim, str):
            raise TypeError("Unflatten: named dims are not supported; pass an int dim")
        if not isinstance(unflattened_size, list | tuple) or not all(
            isinstance(s, int) for s in unflattened_size
        ):
            raise TypeError(
                f"unflattened_size must be a tuple of ints, but found type "
                f"{type(unflattened_size).__name__}"
            )
        self.dim = dim
        self.unflattened_size = tuple(unflattened_size)

    def forward(self, input: Tensor) -> Tensor:
        shape = input.shape
        d = norm_dim(self.dim, len(shape), "unflatten")
        return reshape(input, (*shape[:d], *self.unflattened_size, *shape[d + 1 :]))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
