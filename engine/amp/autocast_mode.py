"""`autocast`: PyTorch's automatic mixed precision, per thread and per device type.

Inside an autocast region an op on PyTorch's lower-precision list (matmul, linear,
conv2d, attention) casts its floating inputs to the region's dtype and returns it; an op
on the float32 list casts them to float32; every other op runs in the dtype its inputs
have, with the usual type promotion. The lists are PyTorch's own, which differ between
CPU and CUDA (aten/src/ATen/autocast_mode.cpp): on CUDA softmax, layer_norm, sum, exp,
log, pow and the losses run in float32, on CPU only the losses, prod and
reflection/replication padding do (elsewhere the input's dtype carries through).

Cost when autocast is off: each affected op reads `autocast_state.on` (one thread-local
attribute, as it reads grad mode) and goes on. The casts are `to_dtype`, so gradients
flow back through them and reach float32 parameters in float32.
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from engine import dtypes
from engine.autograd import counter
from engine.autograd import grad_mode as _gm
from engine.functions.convert import to_dtype
from engine.tensor import Tensor

F = TypeVar("F", bound=Callable[..., Any])

_LOW, _FP32, _MIXED, _BANNED = "low", "fp32", "mixed", "banned"
_LOW_DTYPES = (dtypes.float16, dtypes.bfloat16)
_DEFAULT_DTYPE = {"cpu": dtypes.bfloat16, "cuda": dtypes.float16}
_MATMUL_LIKE = ("matmul", "linear", "conv2d", "scaled_dot_product_attention")
_LOSSES = (
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "nll_loss",
    "cross_entropy",
    "binary_cross_entropy_with_logits",
    # torchvision's focal loss is composed of ops whose result promotes to float32
    # (binary_cross_entropy_with_logits times a float32 factor)
    "sigmoid_focal_loss",
)

# The engine's ops on PyTorch's lists. "mixed" is batch_norm (both devices) and CPU
# layer_norm: on no list, but their kernels take a 16-bit input with float32 weights
# and return the input's dtype, which the engine reaches by normalising in float32 and
# rounding the result once.
POLICIES: dict[str, dict[str, str]] = {
    "cpu": {
        **dict.fromkeys(_MATMUL_LIKE, _LOW),
        **dict.fromkeys(
            (
                *_LOSSES,
                "binary_cross_entropy",
                "prod",
                "reflection_pad1d",
                "reflection_pad2d",
                "replication_pad1d",
                "replication_pad2d",
                "replication_pad3d",
            ),
            _FP32,
        ),
        "layer_norm": _MIXED,
        "batch_norm": _MIXED,
    },
    "cuda": {
        **dict.fromkeys(_MATMUL_LIKE, _LOW),
        **dict.fromkeys(
            (
                *_LOSSES,
                "exp",
                "log",
                "pow",
                "reciprocal",
                "rsqrt",
                "layer_norm",
                "norm",
                "softmax",
                "log_softmax",
                "sum",
                "prod",
                "cumsum",
            ),
            _FP32,
        ),
        "batch_norm": _MIXED,
        "binary_cross_entropy": _BANNED,
    },
}


class _AutocastState(threading.local):
    # Thread-local as PyTorch's: a DataLoader thread must not autocast the training
    # thread's ops, nor the other way round.
    on = False  # some device type autocasts: the one flag the ops read
    cpu: dtypes.dtype | None = None  # the region's dtype per device type, None when off
    cuda: dtypes.dtype | None = None
    cache_enabled = True
    depth = 0  # autocast blocks entered (enabled or not); the cache empties at 0

    def __init__(self) -> None:
        # (id of a float32 leaf parameter, dtype) -> (parameter, its version, the cast)
        self.cache: dict[tuple[int, dtypes.dtype], tuple[Tensor, int, Tensor]] = {}


autocast_state = _AutocastState()


def _cast(t: Tensor, target: dtypes.dtype) -> Tensor:
    """t in `target`; a float32 leaf that requires grad is cast once per region, as
    PyTorch caches it, and again only after an in-place change (its version moved)."""
    if not (t._rg and t._node is None and _gm.enabled and autocast_state.cache_enabled):
        return to_dtype(t, target)
    st = autocast_state
    key = (id(t), target)
    version = counter(t)[0]
    hit = st.cache.get(key)
    if hit is not None and hit[0] is t and hit[1] == version:
        return hit[2]
    out = to_dtype(t, target)
    st.cache[key] = (t, version, out)
    return out


def cast(op: str, *args: Any) -> tuple[Any, ...]:
    """op's arguments as autocast hands them to it: floating tensors (float64 excepted,
    as PyTorch leaves it) cast to the region's dtype or to float32 by op's policy on
    the device type of its first tensor; anything else as given."""
    first = next((a for a in args if isinstance(a, Tensor)), None)
    if first is None:
        return args
    kind = first._device.type
    low = getattr(autocast_state, kind)
    policy = POLICIES[kind].get(op) if low is not None else None
    if policy is None or policy == _MIXED:
        return args
    if policy == _BANNED:
        raise RuntimeError(
            f"torch.nn.functional.{op} and torch.nn.BCELoss are unsafe to autocast. Many "
            "models use a sigmoid layer right before the binary cross entropy layer; in "
            "this case, combine the two layers using "
            "torch.nn.functional.binary_cross_entropy_with_logits or torch.nn.BCEWithLogitsLoss, "
            "which are safe to autocast."
        )
    target = low if policy == _LOW else dtypes.float32
    keep = (target.np, dtypes.float64.np)
    return tuple(
        _cast(a, target)
        if isinstance(a, Tensor)
        and a._device.type == kind
        and a.is_floating_point()
        and a._data.dtype not in keep
        else a
        for a in args
    )


def norm_args(op: str, input: Tensor, *params: Tensor | None) -> tuple[tuple[Any, ...], Any]:
    """A normalisation's input and parameters as autocast hands them over, and the dtype
    to round its result to (None: keep it). float32 policy: all in float32. Mixed: a
    16-bit input with float32 parameters normalises in float32 and rounds back to its
    dtype, as PyTorch's mixed-dtype kernels do."""
    kind = input._device.type
    policy = POLICIES[kind].get(op) if getattr(autocast_state, kind) is not None else None
    if policy == _FP32:
        return cast(op, input, *params), None
    dt = input.dtype
    if (
        policy == _MIXED
        and dt in _LOW_DTYPES
        and any(p is not None and p.dtype == dtypes.float32 for p in params)
    ):
        return (to_dtype(input, dtypes.float32), *params), dt
    return (input, *params), None


def is_autocast_enabled(device_type: str = "cuda") -> bool:
    """Whether ops on `device_type` autocast here (PyTorch's no-argument form asks about CUDA)."""
    return getattr(autocast_state, _check_device_type(device_type)) is not None


def get_autocast_dtype(device_type: str) -> dtypes.dtype:
    """The dtype autocast uses on `device_type`: the region's, or the device's default."""
    return getattr(autocast_state, _check_device_type(device_type)) or _DEFAULT_DTYPE[device_type]


def _check_device_type(device_type: str) -> str:
    if device_type not in _DEFAULT_DTYPE:
        raise RuntimeError(
            f"autocast: device_type must be 'cpu' or 'cuda', got {device_type!r} (the engine "
            "runs on no other device)"
        )
    return device_type


class autocast:
    """`with autocast("cuda"):` / `@autocast("cpu", dtype=engine.float16)`.

    Nestable: an inner region (or `enabled=False`) applies until it exits, then the
    outer one's setting returns. The default dtype is float16 on CUDA, bfloat16 on CPU.
    """

    def __init__(
        self,
        device_type: str,
        dtype: dtypes.dtype | None = None,
        enabled: bool = True,
        cache_enabled: bool | None = None,
    ) -> None:
        self.device_type = _check_device_type(device_type)
        self.fast_dtype = _DEFAULT_DTYPE[device_type] if dtype is None else dtypes.as_dtype(dtype)
        self._cache_enabled = True if cache_enabled is None else bool(cache_enabled)
        self._enabled = bool(enabled)
        if self._enabled and self.fast_dtype not in _LOW_DTYPES:
            # PyTorch's answer to an unsupported dtype: a warning and no autocast
            warnings.warn(
                f"In {device_type.upper()} autocast, but the target dtype is not supported. "
                f"Disabling autocast. {device_type.upper()} Autocast only supports dtypes of "
                "engine.bfloat16, engine.float16 currently.",
                stacklevel=2,
            )
            self._enabled = False

    def __enter__(self) -> None:
        st = autocast_state
        self._prev = (getattr(st, self.device_type), st.cache_enabled)
        setattr(st, self.device_type, self.fast_dtype if self._enabled else None)
        st.cache_enabled = self._cache_enabled
        st.on = st.cpu is not None or st.cuda is not None
        st.depth += 1

    def __exit__(self, *exc: object) -> None:
        st = autocast_state
        st.depth -= 1
        if st.depth == 0:
            st.cache.clear()
        setattr(st, self.device_type, self._prev[0])
        st.cache_enabled = self._prev[1]
        st.on = st.cpu is not None or st.cuda is not None

    def __call__(self, func: F) -> F:
        args = (self.device_type, self.fast_dtype, self._enabled, self._cache_enabled)

        @functools.wraps(func)
        def wrapper(*a: Any, **kw: Any) -> Any:
            # a fresh region per call: recursive or concurrent calls keep their own state
            with autocast(*args):
                return func(*a, **kw)

        return wrapper  # type: ignore[return-value]
