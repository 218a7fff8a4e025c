"""`Tensor`: an array on a device, with PyTorch's autograd attributes and methods.

The class holds state and conversions; the ops live in `engine.functions` and are bound
as methods at the bottom of this module without a wrapper, so `a + b` costs one Python
call on top of the array op.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from engine import dtypes
from engine.autograd import counter, run_backward
from engine.device import CPU, device, resolve
from engine.errors import DeviceError, ShapeError
from engine.hooks import RemovableHandle


class Tensor:
    # Class-level defaults instead of __slots__: a new tensor then needs two stores,
    # which measured faster to create than a slotted object with seven.
    _data: Any
    _device: device = CPU
    _rg: bool = False
    _node: Any = None
    _vc: list[int] | None = None
    _hooks: dict[int, Callable[..., Any]] | None = None
    grad: Tensor | None = None

    __array_ufunc__ = None  # `ndarray + tensor` defers to Tensor.__radd__
    __hash__ = object.__hash__

    # ---- attributes -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._data.shape

    @property
    def dtype(self) -> dtypes.dtype:
        return dtypes._BY_NP[self._data.dtype]

    @property
    def device(self) -> device:
        return self._device

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def is_cuda(self) -> bool:
        return self._device.type == "cuda"

    @property
    def requires_grad(self) -> bool:
        return self._rg

    @requires_grad.setter
    def requires_grad(self, flag: bool) -> None:
        flag = bool(flag)
        if self._node is not None:
            raise RuntimeError(
                "requires_grad: you can only change requires_grad flags of leaf tensors; "
                "use detach() for a tensor outside the graph"
            )
        if flag and not self.dtype.is_floating_point:
            raise RuntimeError(
                f"requires_grad: only floating-point tensors can require gradients, "
                f"got {self.dtype}"
            )
        self._rg = flag

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def grad_fn(self) -> Any:
        return self._node

    @property
    def data(self) -> Tensor:
        """A detached tensor sharing storage but not the version counter, as PyTorch's."""
        return wrap(self._data, self._device)

    @data.setter
    def data(self, other: Tensor) -> None:
        if not isinstance(other, Tensor):
            raise TypeError(f"data: expected a Tensor, got {type(other).__name__}")
        self._data = other._data
        self._device = other._device

    @property
    def _version(self) -> int:
        return self._vc[0] if self._vc is not None else 0

    def size(self, dim: int | None = None) -> Any:
        shape = self._data.shape
        if dim is None:
            return shape
        return shape[_dim(dim, len(shape), "size")]

    def numel(self) -> int:
        return int(self._data.size)

    def dim(self) -> int:
        return self._data.ndim

    def element_size(self) -> int:
        return self._data.itemsize

    def is_floating_point(self) -> bool:
        return self._data.dtype.kind == "f" or self._data.dtype == dtypes.bfloat16.np

    def is_contiguous(self) -> bool:
        return bool(self._data.flags.c_contiguous)

    # ---- conversion ---------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """A host copy, always: writing to it never changes the tensor."""
        if self._rg:
            raise RuntimeError(
                "numpy: can't call numpy() on a tensor that requires grad; "
                "use tensor.detach().numpy()"
            )
        return self._device.ops.to_host(self._data)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        a = self.detach().numpy()
        return a if dtype is None else a.astype(dtype, copy=False)

    def tolist(self) -> Any:
        return self._device.ops.to_host(self._data).tolist()

    def item(self) -> Any:
        if self._data.size != 1:
            raise RuntimeError(
                f"item: a tensor with {self._data.size} elements cannot be converted to a "
                "Python number"
            )
        value = self._device.ops.to_host(self._data).reshape(()).item()
        if self._data.dtype == dtypes.bfloat16.np:
            return float(value)
        return value

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self.dtype.category != dtypes._INT or self._data.size != 1:
            raise TypeError("only integer tensors of a single element can be used as an index")
        return int(self.item())

    def __bool__(self) -> bool:
        if self._data.size != 1:
            raise RuntimeError(
                f"bool: a tensor with {self._data.size} elements is ambiguous as a truth value"
            )
        return bool(self.item())

    def __len__(self) -> int:
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    def __repr__(self) -> str:
        if self._device.type == "meta":
            return _meta_repr(self)
        host = self._device.ops.to_host(self._data)
        if host.dtype == dtypes.bfloat16.np:
            host = host.astype(np.float32)
        finite = host[np.isfinite(host)] if host.dtype.kind == "f" else host
        integral = host.dtype.kind != "f" or bool(np.all(finite == np.round(finite)))
        # PyTorch's look: whole numbers as `1.`, anything else with four decimals.
        body = np.array2string(
            host,
            separator=", ",
            prefix="tensor(",
            precision=4,
            floatmode="maxprec" if integral else "fixed",
        )
        extras = []
        if self._device is not CPU:
            extras.append(f"device='{self._device}'")
        d = self.dtype
        if (
            d not in (dtypes.get_default_dtype(), dtypes.int64, dtypes.bool_)
            or self._data.size == 0
        ):
            extras.append(f"dtype={d}")
        if self._node is not None:
            extras.append(f"grad_fn=<{self._node.name()}>")
        elif self._rg:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body, *extras]) + ")"

    def __reduce_ex__(self, protocol: int) -> tuple[Any, ...]:
        """Pickle as host data, device and requires_grad: the graph never travels."""
        return (
            _rebuild,
            (type(self), self._device.ops.to_host(self._data), str(self._device), self._rg),
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> Tensor:
        if self._node is not None:
            raise RuntimeError(
                "deepcopy: only tensors created by the user (graph leaves) can be deep-copied; "
                "detach() it first"
            )
        out = _new(type(self))
        memo[id(self)] = out
        for key, value in self.__dict__.items():
            if key == "_data":
                out._data = value.copy()
            elif key not in ("_vc", "_hooks"):  # a copy starts its own history
                out.__dict__[key] = copy.deepcopy(value, memo)
        return out

    # ---- autograd -----------------------------------------------------------------------
    def backward(self, gradient: Tensor | None = None, retain_graph: bool | None = None) -> None:
        if not self._rg:
            raise RuntimeError(
                "backward: this tensor does not require grad and has no grad_fn; "
                "did you forget requires_grad=True on a leaf?"
            )
        data = self._data
        if gradient is None:
            if data.size != 1:
                raise RuntimeError(
                    f"backward: a gradient can be created implicitly only for scalar outputs; "
                    f"this tensor has shape {data.shape}, pass gradient="
                )
            gy = self._device.xp.ones(data.shape, dtype=data.dtype)
        else:
            if not isinstance(gradient, Tensor):
                raise TypeError(
                    f"backward: gradient must be a Tensor, got {type(gradient).__name__}"
                )
            if gradient._device is not self._device:
                raise DeviceError(
                    f"backward: gradient on {gradient._device} does not match the "
                    f"tensor's device {self._device}"
                )
            gy = gradient._data
            if gy.shape != data.shape:
                raise ShapeError(
                    f"backward: gradient of shape {gy.shape} does not match the "
                    f"tensor's shape {data.shape}"
                )
            if gy.dtype != data.dtype:
                gy = gy.astype(data.dtype)
        run_backward(self, gy, bool(retain_graph))

    def register_hook(self, fn: Callable[[Tensor], Tensor | None]) -> RemovableHandle:
        """fn(grad) runs when this tensor's gradient is computed; it may return a replacement."""
        if not self._rg:
            raise RuntimeError("register_hook: cannot hook a tensor that does not require grad")
        node = self._node
        if node is None:
            if self._hooks is None:
                self._hooks = {}
            return RemovableHandle(self._hooks, fn)
        if node._pre_hooks is None:
            node._pre_hooks = {}
            node._hook_device = self._device
        return RemovableHandle(node._pre_hooks, fn)

    def detach(self) -> Tensor:
        """Shares storage and the version counter, so in-place changes still show up."""
        out = wrap(self._data, self._device)
        out._vc = counter(self)
        return out

    def detach_(self) -> Tensor:
        if self._node is not None and self._vc is None:
            counter(self)
        self._node = None
        self._rg = False
        return self


_new = object.__new__


def wrap(data: Any, dev: device) -> Tensor:
    """A tensor around an existing array, with no graph: the ops' constructor."""
    t = _new(Tensor)
    t._data = data
    t._device = dev
    return t


def _meta_repr(t: Tensor) -> str:
    """PyTorch's look for a tensor with no values: `tensor(..., device='meta', size=(2, 3))`."""
    extras = [f"size={tuple(t.shape)}"]
    if t.dtype != dtypes.get_default_dtype():
        extras.append(f"dtype={t.dtype}")
    if t._node is not None:
        extras.append(f"grad_fn=<{t._node.name()}>")
    elif t._rg:
        extras.append("requires_grad=True")
    return "tensor(..., device='meta', " + ", ".join(extras) + ")"


def _rebuild(cls: type[Tensor], host: np.ndarray, dev: str, requires_grad: bool) -> Tensor:
    d = resolve(dev)
    t = _new(cls)
    t._data = d.ops.from_host(host)
    t._device = d
    t._rg = requires_grad
    return t


def _dim(d: int, ndim: int, op: str) -> int:
    n = max(ndim, 1)
    if not -n <= d < n:
        raise IndexError(
            f"{op}: dimension out of range (expected to be in range of [{-n}, {n - 1}], "
            f"but got {d})"
        )
    return d % n


def bind_methods() -> None:
    """Attach the ops as methods; engine/__init__ calls it once every module is loaded."""
    from engine.functions import arith, convert, index, inplace, linalg, reduce, shape

    methods: dict[str, Callable[..., Any]] = {
        # arithmetic
        "__add__": arith.add,
        "__radd__": arith.add,
        "add": arith.add,
        "__sub__": arith.sub,
        "__rsub__": arith.rsub,
        "sub": arith.sub,
        "__mul__": arith.mul,
        "__rmul__": arith.mul,
        "mul": arith.mul,
        "__truediv__": arith.div,
        "__rtruediv__": arith.rdiv,
        "div": arith.div,
        "__pow__": arith.pow,
        "__rpow__": arith.rpow,
        "pow": arith.pow,
        "__matmul__": linalg.matmul,
        "__rmatmul__": linalg.rmatmul,
        "matmul": linalg.matmul,
        "__neg__": arith.neg,
        "neg": arith.neg,
        "__pos__": arith.positive,
        "__abs__": arith.abs,
        "abs": arith.abs,
        "exp": arith.exp,
        "log": arith.log,
        "sqrt": arith.sqrt,
        "rsqrt": arith.rsqrt,
        "tanh": arith.tanh,
        "sigmoid": arith.sigmoid,
        "relu": arith.relu,
        "clamp": arith.clamp,
        "clip": arith.clamp,
        "maximum": arith.maximum,
        "minimum": arith.minimum,
        "where": arith.where_method,
        "masked_fill": arith.masked_fill,
        "__eq__": arith.eq,
        "__ne__": arith.ne,
        "__lt__": arith.lt,
        "__le__": arith.le,
        "__gt__": arith.gt,
        "__ge__": arith.ge,
        "eq": arith.eq,
        "ne": arith.ne,
        "lt": arith.lt,
        "le": arith.le,
        "gt": arith.gt,
        "ge": arith.ge,
        "__and__": arith.logical_and,
        "__rand__": arith.logical_and,
        "__or__": arith.logical_or,
        "__ror__": arith.logical_or,
        "__xor__": arith.logical_xor,
        "__rxor__": arith.logical_xor,
        "__invert__": arith.logical_not,
        # reductions
        "sum": reduce.sum,
        "mean": reduce.mean,
        "var": reduce.var,
        "std": reduce.std,
        "max": reduce.max,
        "min": reduce.min,
        "amax": reduce.amax,
        "amin": reduce.amin,
        "argmax": reduce.argmax,
        "argmin": reduce.argmin,
        "norm": reduce.norm,
        "prod": reduce.prod,
        "softmax": reduce.softmax,
        "log_softmax": reduce.log_softmax,
        "cumsum": reduce.cumsum,
        "sum_keepdim": reduce.sum_keepdim,
        "all": reduce.all,
        "any": reduce.any,
        # shape
        "reshape": shape.reshape,
        "view": shape.view,
        "flatten": shape.flatten,
        "unsqueeze": shape.unsqueeze,
        "squeeze": shape.squeeze,
        "transpose": shape.transpose,
        "permute": shape.permute,
        "expand": shape.expand,
        "expand_as": shape.expand_as,
        "view_as": shape.view_as,
        "reshape_as": shape.reshape_as,
        "contiguous": shape.contiguous,
        "chunk": shape.chunk,
        "split": shape.split,
        "t": shape.t,
        "clone": shape.clone,
        "__getitem__": index.getitem,
        "__setitem__": index.setitem,
        "gather": index.gather,
        # conversion
        "to": convert.to,
        "to_device": convert.to_device,
        "cpu": convert.cpu,
        "cuda": convert.cuda,
        "type_as": convert.type_as,
        "float": convert.caster(dtypes.float32, "float"),
        "double": convert.caster(dtypes.float64, "double"),
        "half": convert.caster(dtypes.float16, "half"),
        "bfloat16": convert.caster(dtypes.bfloat16, "bfloat16"),
        "long": convert.caster(dtypes.int64, "long"),
        "int": convert.caster(dtypes.int32, "int"),
        "bool": convert.caster(dtypes.bool_, "bool"),
        # in place
        "add_": inplace.add_,
        "sub_": inplace.sub_,
        "mul_": inplace.mul_,
        "div_": inplace.div_,
        "addcmul_": inplace.addcmul_,
        "addcdiv_": inplace.addcdiv_,
        "copy_": inplace.copy_,
        "fill_": inplace.fill_,
        "zero_": inplace.zero_,
        "clamp_": inplace.clamp_,
        "uniform_": inplace.uniform_,
        "normal_": inplace.normal_,
        "__iadd__": inplace.iadd,
        "__isub__": inplace.isub,
        "__imul__": inplace.imul,
        "__itruediv__": inplace.itruediv,
    }
    for name, fn in methods.items():
        setattr(Tensor, name, fn)
    Tensor.T = property(shape.t_all)  # type: ignore[attr-defined]
    Tensor.mT = property(shape.t_matrix)  # type: ignore[attr-defined]
