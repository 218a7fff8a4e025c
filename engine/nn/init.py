"""`engine.nn.init`: PyTorch's initialisers, the same formulas and bounds, drawn from the
engine's own stream (`generator=` or the default generator). Each fills its tensor in
place under no_grad and returns it; on a meta tensor each does nothing (and draws
nothing) and returns it."""

from __future__ import annotations

import math
import warnings

import numpy as np

from engine import dtypes
from engine.autograd import no_grad
from engine.backends.numpy_ops import ArrayOps
from engine.functions.index import bump, writable
from engine.random import Generator, generator_or_default
from engine.tensor import Tensor

CPU_OPS = ArrayOps()
_LINEAR_FNS = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
)


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity, as torch.nn.init.calculate_gain."""
    if nonlinearity in _LINEAR_FNS or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif not isinstance(param, bool) and isinstance(param, int | float):
            slope = param
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    dims = tensor.dim()
    if dims < 2:
        raise ValueError(
            "Fan in and fan out can not be computed for tensor with fewer than 2 dimensions"
        )
    receptive = math.prod(tensor.shape[2:]) if dims > 2 else 1
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _calculate_correct_fan(tensor: Tensor, mode: str) -> int:
    mode = mode.lower()
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(
    tensor: Tensor, a: float = 0.0, b: float = 1.0, generator: Generator | None = None
) -> Tensor:
    with no_grad():
        return tensor.uniform_(a, b, generator=generator)


def normal_(
    tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator: Generator | None = None
) -> Tensor:
    with no_grad():
        return tensor.normal_(mean, std, generator=generator)


def constant_(tensor: Tensor, val: float) -> Tensor:
    with no_grad():
        return tensor.fill_(val)


def ones_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 1.0)


def zeros_(tensor: Tensor) -> Tensor:
    with no_grad():
        return tensor.zero_()


def trunc_normal_(
    tensor: Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    generator: Generator | None = None,
) -> Tensor:
    """N(mean, std) truncated to [a, b]: the distribution PyTorch's inverse-CDF sampler draws
    from, drawn here by redrawing the values that fall outside (in float64)."""
    if mean < a - 2 * std or mean > b + 2 * std:
        warnings.warn(
            "mean is more than 2 std from [a, b] in nn.init.trunc_normal_. "
            "The distribution of values may be incorrect.",
            stacklevel=2,
        )
    if not a < b:
        raise ValueError(f"trunc_normal_: needs a < b, got a={a}, b={b}")
    if tensor.device.type == "meta":
        return tensor  # no values to draw (its siblings get there through uniform_/normal_)
    gen = generator_or_default(generator)
    n = tensor.numel()
    lo, hi = (a - mean) / std, (b - mean) / std
    accept = 0.5 * (math.erf(hi / math.sqrt(2)) - math.erf(lo / math.sqrt(2)))
    if accept > 0.25:  # redraw what falls outside: a few rounds at most
        out = np.empty(n, dtype=np.float64)
        todo = np.arange(n)
        while todo.size:
            z = gen.normal((todo.size,), dtypes.float64, mean, std)
            ok = (z >= a) & (z <= b)
            out[todo[ok]] = z[ok]
            todo = todo[~ok]
    else:  # a narrow or far interval: invert the CDF, as PyTorch does
        out = mean + std * _truncated_standard(gen, n, lo, hi)
    with no_grad():
        data = writable("trunc_normal_", tensor)
        host = np.clip(out, a, b).reshape(tensor.shape).astype(data.dtype)
        data[...] = tensor.device.ops.from_host(host)
        bump(tensor)
    return tensor


def _truncated_standard(gen: Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """n draws of N(0, 1) truncated to [lo, hi] by inverting its CDF with bisection.

    Worked on the side of the interval nearer the mean's negative tail, where the CDF
    holds its precision in float64.
    """
    flip = lo > 0
    if flip:
        lo, hi = -hi, -lo
    erfc = CPU_OPS.erfc
    c_lo, c_hi = (0.5 * math.erfc(-v / math.sqrt(2)) for v in (lo, hi))
    u = c_lo + (c_hi - c_lo) * gen.uniform((n,), dtypes.float64)
    left, right = np.full(n, lo), np.full(n, hi)
    for _ in range(60):  # each halves the bracket: 60 reach float64's resolution
        mid = 0.5 * (left + right)
        below = 0.5 * erfc(mid / -math.sqrt(2)) < u
        left = np.where(below, mid, left)
        right = np.where(below, right, mid)
    z = 0.5 * (left + right)
    return -z if flip else z


def xavier_uniform_(
    tensor: Tensor, gain: float = 1.0, generator: Generator | None = None
) -> Tensor:
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator: Generator | None = None) -> Tensor:
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return normal_(tensor, 0.0, std, generator)


def _kaiming_std(tensor: Tensor, a: float, mode: str, nonlinearity: str) -> float | None:
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=3)
        return None
    fan = _calculate_correct_fan(tensor, mode)
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(
    tensor: Tensor,
    a: float = 0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: Generator | None = None,
) -> Tensor:
    std = _kaiming_std(tensor, a, mode, nonlinearity)
    if std is None:
        return tensor
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(
    tensor: Tensor,
    a: float = 0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: Generator | None = None,
) -> Tensor:
    std = _kaiming_std(tensor, a, mode, nonlinearity)
    if std is None:
        return tensor
    return normal_(tensor, 0.0, std, generator)


def _bias_bound(weight: Tensor) -> float:
    """1/sqrt(fan_in) of a layer's weight: the bound of PyTorch's default bias init."""
    fan_in, _ = _calculate_fan_in_and_fan_out(weight)
    return 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
