"""Descent's tensor engine: PyTorch's API on NumPy (CPU) and CuPy (GPU).

`import engine as torch` should carry a plain PyTorch script a long way; the contract is
../shared/API.md.
"""

import builtins

from engine import cuda
from engine.autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from engine.device import device
from engine.dtypes import (
    bfloat16,
    bool_,
    dtype,
    float16,
    float32,
    float64,
    get_default_dtype,
    int32,
    int64,
    set_default_dtype,
)
from engine.errors import DeviceError, ShapeError
from engine.factories import (
    arange,
    as_tensor,
    empty,
    empty_like,
    eye,
    from_numpy,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    randperm,
    tensor,
    zeros,
    zeros_like,
)
from engine.functions.arith import (
    abs,
    add,
    clamp,
    div,
    exp,
    log,
    maximum,
    minimum,
    mul,
    neg,
    pow,
    reciprocal,
    relu,
    rsqrt,
    sigmoid,
    sqrt,
    sub,
    tanh,
    where,
)
from engine.functions.arith import masked_fill as masked_fill
from engine.functions.index import gather
from engine.functions.linalg import matmul
from engine.functions.reduce import (
    amax,
    amin,
    argmax,
    argmin,
    cumsum,
    log_softmax,
    max,
    mean,
    min,
    norm,
    prod,
    softmax,
    std,
    sum,
    var,
)
from engine.functions.shape import (
    cat,
    chunk,
    clone,
    flatten,
    permute,
    reshape,
    split,
    squeeze,
    stack,
    transpose,
    unsqueeze,
)
from engine.random import (
    Generator,
    default_generator,
    get_rng_state,
    initial_seed,
    manual_seed,
    seed,
    set_rng_state,
)
from engine.serialization import load, save
from engine.tensor import Tensor, bind_methods, wrap

bind_methods()

# The subpackages a PyTorch script reaches as attributes (torch.nn, torch.optim, ...);
# imported after the core, which they build on.
from engine import checkpoint, nn, optim, utils  # noqa: E402

# isort: split
# torch.amp and torch.autocast's names, after nn: autocast covers the ops of both.
from engine import amp  # noqa: E402
from engine.amp import autocast, get_autocast_dtype, is_autocast_enabled  # noqa: E402

clip = clamp
concat = cat


def is_tensor(obj: object) -> bool:
    return isinstance(obj, Tensor)


def numel(t: Tensor) -> int:
    return t.numel()


def isclose(
    a: Tensor, b: Tensor, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False
) -> Tensor:
    """|a - b| <= atol + rtol * |b| elementwise, as PyTorch's."""
    if a.device is not b.device:
        raise DeviceError(f"isclose: tensors on {a.device} and {b.device}")
    try:
        out = a.device.xp.isclose(a._data, b._data, rtol=rtol, atol=atol, equal_nan=equal_nan)
    except ValueError:
        raise ShapeError(f"isclose: shapes {a.shape} and {b.shape} do not broadcast") from None
    return wrap(a.device.xp.asarray(out), a.device)


def allclose(
    a: Tensor, b: Tensor, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False
) -> bool:
    return builtins.bool(isclose(a, b, rtol, atol, equal_nan)._data.all())


# PyTorch's dtype aliases; last, because they shadow builtins in this module.
float = float32
double = float64
half = float16
long = int64
int = int32
bool = bool_
