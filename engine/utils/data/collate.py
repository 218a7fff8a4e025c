"""`default_collate` and `default_convert`: samples into batches of engine tensors.

PyTorch's rules: tensors are stacked, NumPy arrays and scalars become tensors of their own
dtype, Python floats a float64 tensor, ints an int64 one (bools a bool one), strings and
bytes stay a list; mappings, namedtuples and sequences are collated field by field
(a batch of tuples gives a list of batched fields).
"""

from __future__ import annotations

import collections.abc
import copy
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from engine import dtypes
from engine.factories import as_tensor, from_numpy, tensor
from engine.functions.shape import stack
from engine.tensor import Tensor

CollateFnMap = dict[type | tuple[type, ...], Callable[..., Any]]

# NumPy dtypes of strings, bytes and objects: no tensor holds them
_np_str_obj = re.compile(r"[SaUO]")
_err = (
    "default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; found {}"
)


def default_convert(data: Any) -> Any:
    """NumPy arrays and scalars to tensors, recursing into containers; the rest unchanged.

    The loader's `collate_fn` when automatic batching is off (`batch_size=None`).
    """
    elem_type = type(data)
    if isinstance(data, Tensor):
        return data
    if isinstance(data, np.ndarray | np.generic) and not isinstance(data, np.str_ | np.bytes_):
        if isinstance(data, np.ndarray) and _np_str_obj.search(data.dtype.str):
            return data
        return as_tensor(data)
    if isinstance(data, collections.abc.Mapping):
        try:
            if isinstance(data, collections.abc.MutableMapping):
                clone = copy.copy(data)
                clone.update({key: default_convert(data[key]) for key in data})
                return clone
            return elem_type({key: default_convert(data[key]) for key in data})
        except TypeError:  # a mapping type that cannot be built from a dict
            return {key: default_convert(data[key]) for key in data}
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # namedtuple
        return elem_type(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, collections.abc.Sequence) and not isinstance(data, str | bytes):
        try:
            if isinstance(data, collections.abc.MutableSequence):
                clone = copy.copy(data)
                for i, d in enumerate(data):
                    clone[i] = default_convert(d)
                return clone
            return elem_type([default_convert(d) for d in data])
        except TypeError:
            return [default_convert(d) for d in data]
    return data


def collate(batch: list[Any], *, collate_fn_map: CollateFnMap | None = None) -> Any:
    """Collate a batch by the type of its first element: `collate_fn_map` first (exact type,
    then subclasses in insertion order), then containers, recursively."""
    elem = batch[0]
    elem_type = type(elem)
    if collate_fn_map is not None:
        if elem_type in collate_fn_map:
            return collate_fn_map[elem_type](batch, collate_fn_map=collate_fn_map)
        for collate_type, fn in collate_fn_map.items():
            if isinstance(elem, collate_type):
                return fn(batch, collate_fn_map=collate_fn_map)
    if isinstance(elem, collections.abc.Mapping):
        fields = {
            key: collate([d[key] for d in batch], collate_fn_map=collate_fn_map) for key in elem
        }
        try:
            if isinstance(elem, collections.abc.MutableMapping):
                clone = copy.copy(elem)
                clone.update(fields)
                return clone
            return elem_type(fields)
        except TypeError:
            return fields
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return elem_type(
            *(collate(list(s), collate_fn_map=collate_fn_map) for s in zip(*batch, strict=False))
        )
    if isinstance(elem, collections.abc.Sequence):
        size = len(elem)
        if any(len(e) != size for e in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        columns = [
            collate(list(s), collate_fn_map=collate_fn_map) for s in zip(*batch, strict=True)
        ]
        if isinstance(elem, tuple):
            return columns
        try:
            if isinstance(elem, collections.abc.MutableSequence):
                clone = copy.copy(elem)
                for i, column in enumerate(columns):
                    clone[i] = column
                return clone
            return elem_type(columns)
        except TypeError:
            return columns
    raise TypeError(_err.format(elem_type))


def collate_tensor_fn(batch: list[Tensor], *, collate_fn_map: CollateFnMap | None = None) -> Tensor:
    return stack(batch, 0)


def collate_numpy_array_fn(
    batch: list[np.ndarray], *, collate_fn_map: CollateFnMap | None = None
) -> Any:
    if _np_str_obj.search(batch[0].dtype.str):
        raise TypeError(_err.format(batch[0].dtype))
    return collate([as_tensor(b) for b in batch], collate_fn_map=collate_fn_map)


def collate_numpy_scalar_fn(
    batch: list[Any], *, collate_fn_map: CollateFnMap | None = None
) -> Tensor:
    # np.asarray keeps the scalars' dtype (as_tensor of a list would apply Python's rules)
    arr = np.asarray(batch)
    dtypes.from_np(arr.dtype)  # an engine-less dtype (int16, ...) fails here, by name
    return from_numpy(arr)


def collate_float_fn(batch: list[float], *, collate_fn_map: CollateFnMap | None = None) -> Tensor:
    return tensor(batch, dtype=dtypes.float64)


def collate_int_fn(batch: list[int], *, collate_fn_map: CollateFnMap | None = None) -> Tensor:
    return tensor(batch)  # int64, or bool for a batch of bools


def collate_str_fn(batch: list[Any], *, collate_fn_map: CollateFnMap | None = None) -> list[Any]:
    return batch


default_collate_fn_map: CollateFnMap = {
    Tensor: collate_tensor_fn,
    np.ndarray: collate_numpy_array_fn,
    (np.bool_, np.number, np.object_): collate_numpy_scalar_fn,
    float: collate_float_fn,
    int: collate_int_fn,
    str: collate_str_fn,
    bytes: collate_str_fn,
}


def default_collate(batch: list[Any]) -> Any:
    """Stack a list of samples into a batch (the loader's default `collate_fn`)."""
    return collate(batch, collate_fn_map=default_collate_fn_map)
