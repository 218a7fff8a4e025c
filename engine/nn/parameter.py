"""`Parameter`: a leaf tensor that a Module registers when assigned as an attribute."""

from __future__ import annotations

from engine.tensor import Tensor


class Parameter(Tensor):
    """Shares `data`'s storage, as PyTorch's; requires grad unless told otherwise."""

    def __new__(cls, data: Tensor | None = None, requires_grad: bool = True) -> Parameter:
        if data is None:
            from engine.factories import empty

            data = empty(0)
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter: expected a Tensor, got {type(data).__name__}")
        p = object.__new__(cls)
        p._data = data._data
        p._device = data._device
        if requires_grad:
            p.requires_grad = True  # the setter refuses non-float dtypes with a clear error
        return p

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()
