"""The op cases both the PyTorch fixture script and the engine's tests run.

Each case is a function of the module (`torch` or `engine`: the API is the same) and its
inputs, so one definition gives PyTorch's reference and the engine's result. Inputs are
made here, deterministically, by kind; the fixture script stores them with PyTorch's
outputs and gradients, and the tests read them back.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

INF = float("inf")


@dataclass(frozen=True)
class In:
    shape: tuple[int, ...]
    kind: str = "normal"  # normal positive nonzero unit wide ties zeros | index:N | mask | int
    grad: bool = True


@dataclass(frozen=True)
class Case:
    name: str
    fn: Callable[..., Any]
    inputs: tuple[In, ...]
    covers: tuple[str, ...]  # the API names (Tensor methods, operators, functions) it checks
    fd: bool = True  # central finite differences apply (smooth at the inputs)


def make_input(case: Case, i: int) -> np.ndarray:
    spec = case.inputs[i]
    rng = np.random.default_rng(zlib.crc32(f"{case.name}/{i}".encode()))
    shape, kind = spec.shape, spec.kind
    if kind.startswith("index:"):
        return rng.integers(0, int(kind.split(":")[1]), shape).astype(np.int64)
    if kind == "mask":
        return rng.random(shape) < 0.4
    if kind == "int":
        return rng.integers(-5, 6, shape).astype(np.int64)
    if kind == "positive":
        x = rng.uniform(0.5, 2.0, shape)
    elif kind == "nonzero":
        x = rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
    elif kind == "unit":
        x = rng.uniform(-0.9, 0.9, shape)
    elif kind == "wide":
        x = rng.standard_normal(shape) * 6
    elif kind == "ties":
        x = rng.integers(-2, 3, shape).astype(np.float64)
    elif kind == "zeros":
        x = rng.standard_normal(shape) * (rng.random(shape) > 0.3)
    else:
        x = rng.standard_normal(shape)
    return x.astype(np.float32)


def _c(
    name: str, fn: Callable[..., Any], *inputs: In, covers: tuple[str, ...] | str, fd: bool = True
) -> Case:
    return Case(name, fn, tuple(inputs), (covers,) if isinstance(covers, str) else covers, fd)


def _is_engine(m: Any) -> bool:
    return m.__name__ == "engine"


A34, B34 = In((3, 4)), In((3, 4))
X = In((2, 3, 4))

CASES: tuple[Case, ...] = (
    # ---- arithmetic -----------------------------------------------------------------------
    _c("add", lambda m, a, b: a + b, A34, B34, covers=("+", "add")),
    _c("add_broadcast", lambda m, a, b: a + b, X, In((3, 1)), covers="+"),
    _c("add_scalar", lambda m, a: a + 2.5, A34, covers="+"),
    _c("radd_scalar", lambda m, a: 2.5 + a, A34, covers="+"),
    _c("add_alpha", lambda m, a, b: a.add(b, alpha=2.0), A34, In((4,)), covers="add"),
    _c("add_empty", lambda m, a, b: a + b, In((0, 3)), In((3,)), covers="+"),
    _c("sub", lambda m, a, b: a - b, In((2, 1, 4)), In((3, 4)), covers=("-", "sub")),
    _c("rsub_scalar", lambda m, a: 1.5 - a, A34, covers="-"),
    _c("sub_method", lambda m, a, b: a.sub(b), A34, B34, covers="sub"),
    _c("mul", lambda m, a, b: a * b, In((4, 1)), In((1, 5)), covers=("*", "mul")),
    _c("mul_scalar", lambda m, a: 3 * a, A34, covers="*"),
    _c("mul_method", lambda m, a, b: a.mul(b), A34, B34, covers="mul"),
    _c("div", lambda m, a, b: a / b, X, In((4,), "nonzero"), covers=("/", "div")),
    _c("rdiv_scalar", lambda m, a: 2.0 / a, In((3, 4), "nonzero"), covers="/"),
    _c("div_scalar", lambda m, a: a / 4, A34, covers="/"),
    _c("div_method", lambda m, a, b: a.div(b), A34, In((3, 4), "nonzero"), covers="div"),
    _c("pow_scalar", lambda m, a: a**2.5, In((3, 4), "positive"), covers=("**", "pow")),
    _c("pow_square", lambda m, a: a**2, A34, covers="**"),
    _c("pow_zero", lambda m, a: a**0, A34, covers="**"),
    _c("pow_neg_int", lambda m, a: a ** (-2), In((3, 4), "nonzero"), covers="**"),
    _c("rpow_scalar", lambda m, a: 2.0**a, A34, covers="**"),
    _c("pow_tensor", lambda m, a, b: a**b, In((3, 4), "positive"), In((4,)), covers="**"),
    _c("pow_method", lambda m, a: a.pow(3), A34, covers="pow"),
    _c("matmul_2d", lambda m, a, b: a @ b, A34, In((4, 5)), covers=("@", "matmul")),
    _c("matmul_vv", lambda m, a, b: a @ b, In((4,)), In((4,)), covers="@"),
    _c("matmul_vm", lambda m, a, b: a @ b, In((4,)), In((4, 5)), covers="@"),
    _c("matmul_mv", lambda m, a, b: a @ b, A34, In((4,)), covers="@"),
    _c("matmul_batched", lambda m, a, b: m.matmul(a, b), X, In((4, 5)), covers="matmul"),
    _c("matmul_broadcast", lambda m, a, b: a @ b, In((2, 1, 3, 4)), In((5, 4, 2)), covers="@"),
    _c("matmul_bv", lambda m, a, b: a @ b, X, In((4,)), covers="@"),
    _c("matmul_empty", lambda m, a, b: a @ b, In((0, 4)), In((4, 5)), covers="@"),
    _c("neg", lambda m, a: -a, A34, covers=("unary -",)),
    _c("neg_method", lambda m, a: a.neg(), A34, covers="neg"),
    _c("abs", lambda m, a: a.abs(), A34, covers="abs"),
    _c("abs_ties", lambda m, a: abs(a), In((3, 4), "ties"), covers="abs", fd=False),
    _c("exp", lambda m, a: a.exp(), A34, covers="exp"),
    _c("log", lambda m, a: a.log(), In((3, 4), "positive"), covers="log"),
    _c("sqrt", lambda m, a: a.sqrt(), In((3, 4), "positive"), covers="sqrt"),
    _c("rsqrt", lambda m, a: a.rsqrt(), In((3, 4), "positive"), covers="rsqrt"),
    _c("tanh", lambda m, a: a.tanh(), In((3, 4), "wide"), covers="tanh"),
    _c("sigmoid", lambda m, a: a.sigmoid(), In((3, 4), "wide"), covers="sigmoid"),
    _c("relu", lambda m, a: a.relu(), A34, covers="relu"),
    _c("relu_ties", lambda m, a: a.relu(), In((3, 4), "ties"), covers="relu", fd=False),
    _c("clamp", lambda m, a: a.clamp(-0.5, 0.5), A34, covers="clamp"),
    _c("clamp_min", lambda m, a: a.clamp(min=-0.2), A34, covers="clamp"),
    _c("clamp_max", lambda m, a: a.clamp(max=0.3), A34, covers="clamp"),
    _c("clamp_ties", lambda m, a: a.clamp(-1.0, 1.0), In((3, 4), "ties"), covers="clamp", fd=False),
    _c("clamp_tensor", lambda m, a, lo: m.clamp(a, min=lo), A34, In((4,)), covers="clamp"),
    _c("maximum", lambda m, a, b: a.maximum(b), X, In((3, 1)), covers="maximum"),
    _c("minimum", lambda m, a, b: m.minimum(a, b), A34, B34, covers="minimum"),
    _c(
        "maximum_ties",
        lambda m, a, b: m.maximum(a, b),
        In((3, 4), "ties"),
        In((3, 4), "ties"),
        covers="maximum",
        fd=False,
    ),
    _c("eq", lambda m, a, b: a == b, In((3, 4), "ties"), In((4,), "ties"), covers="=="),
    _c("ne", lambda m, a, b: a != b, In((3, 4), "ties"), In((3, 4), "ties"), covers="!="),
    _c("lt", lambda m, a, b: a < b, A34, B34, covers="<"),
    _c("le", lambda m, a: a <= 0.0, In((3, 4), "ties"), covers="<="),
    _c("gt", lambda m, a, b: a > b, A34, In((4,)), covers=">"),
    _c("ge", lambda m, a, b: a >= b, In((3, 4), "ties"), In((3, 4), "ties"), covers=">="),
    # ---- reductions -----------------------------------------------------------------------
    _c("sum_all", lambda m, a: a.sum(), X, covers="sum"),
    _c("sum_dim", lambda m, a: a.sum(1), X, covers="sum"),
    _c("sum_dims_keepdim", lambda m, a: a.sum((0, 2), keepdim=True), X, covers="sum"),
    _c("sum_neg_dim", lambda m, a: m.sum(a, dim=-1), X, covers="sum"),
    _c("sum_empty", lambda m, a: a.sum(0), In((0, 3)), covers="sum"),
    _c(
        "sum_keepdim",
        lambda m, a: a.sum_keepdim((0, 2)) if _is_engine(m) else a.sum((0, 2), keepdim=True),
        X,
        covers="sum_keepdim",
    ),
    _c("mean_all", lambda m, a: a.mean(), X, covers="mean"),
    _c("mean_dim", lambda m, a: a.mean(dim=(1, 2)), X, covers="mean"),
    _c("mean_keepdim", lambda m, a: m.mean(a, 0, keepdim=True), X, covers="mean"),
    _c("var_all", lambda m, a: a.var(), X, covers="var"),
    _c("var_dim", lambda m, a: a.var(1), X, covers="var"),
    _c("var_biased", lambda m, a: a.var(1, unbiased=False), X, covers="var"),
    _c("var_keepdim", lambda m, a: a.var((0, 2), keepdim=True), X, covers="var"),
    _c("std_all", lambda m, a: a.std(), X, covers="std"),
    _c("std_dim", lambda m, a: a.std(dim=2, unbiased=False), X, covers="std"),
    _c("std_keepdim", lambda m, a: a.std(0, keepdim=True), X, covers="std"),
    _c("max_all", lambda m, a: a.max(), X, covers="max"),
    _c("max_dim", lambda m, a: a.max(1), X, covers="max"),
    _c("max_dim_keepdim", lambda m, a: a.max(dim=-1, keepdim=True), X, covers="max"),
    _c("max_ties", lambda m, a: a.max(), In((3, 4), "ties"), covers="max", fd=False),
    _c("max_fn", lambda m, a: m.max(a, 0)[0], A34, covers="max"),
    _c("min_all", lambda m, a: a.min(), X, covers="min"),
    _c("min_dim", lambda m, a: a.min(0), X, covers="min"),
    _c("min_ties", lambda m, a: m.min(a), In((3, 4), "ties"), covers="min", fd=False),
    _c("argmax_all", lambda m, a: a.argmax(), X, covers="argmax"),
    _c("argmax_dim", lambda m, a: m.argmax(a, dim=1), X, covers="argmax"),
    _c("argmax_keepdim", lambda m, a: a.argmax(2, keepdim=True), X, covers="argmax"),
    _c("argmin_dim", lambda m, a: a.argmin(0), X, covers="argmin"),
    _c("argmin_all", lambda m, a: a.argmin(), X, covers="argmin"),
    _c("norm", lambda m, a: a.norm(), X, covers="norm"),
    _c("norm_dim", lambda m, a: a.norm(dim=1), X, covers="norm"),
    _c("norm_p1", lambda m, a: a.norm(p=1, dim=(0, 2), keepdim=True), X, covers="norm"),
    _c("norm_p3", lambda m, a: a.norm(3, 2), X, covers="norm"),
    _c("norm_inf", lambda m, a: a.norm(INF, 1), X, covers="norm"),
    _c("prod_all", lambda m, a: a.prod(), In((2, 5), "nonzero"), covers="prod"),
    _c("prod_dim", lambda m, a: a.prod(1), X, covers="prod"),
    _c("prod_keepdim", lambda m, a: a.prod(0, keepdim=True), X, covers="prod"),
    _c("prod_zeros", lambda m, a: a.prod(1), In((4, 5), "zeros"), covers="prod", fd=False),
    _c("softmax", lambda m, a: a.softmax(1), X, covers="softmax"),
    _c("softmax_fn", lambda m, a: m.softmax(a, dim=-1), In((3, 4), "wide"), covers="softmax"),
    _c("softmax_empty", lambda m, a: a.softmax(1), In((0, 5)), covers="softmax"),
    _c("log_softmax", lambda m, a: a.log_softmax(0), X, covers="log_softmax"),
    _c(
        "log_softmax_fn",
        lambda m, a: m.log_softmax(a, -1),
        In((3, 4), "wide"),
        covers="log_softmax",
    ),
    _c("cumsum", lambda m, a: a.cumsum(1), X, covers="cumsum"),
    _c("cumsum_last", lambda m, a: a.cumsum(dim=-1), X, covers="cumsum"),
    # ---- shape ----------------------------------------------------------------------------
    _c("reshape", lambda m, a: a.reshape(4, -1), X, covers="reshape"),
    _c("reshape_tuple", lambda m, a: a.reshape((-1,)), X, covers="reshape"),
    _c("reshape_empty", lambda m, a: a.reshape(3, 0), In((0, 3)), covers="reshape"),
    _c("view", lambda m, a: a.view(6, 4), X, covers="view"),
    _c("flatten", lambda m, a: a.flatten(), X, covers="flatten"),
    _c("flatten_range", lambda m, a: a.flatten(1), X, covers="flatten"),
    _c("unsqueeze", lambda m, a: a.unsqueeze(1), A34, covers="unsqueeze"),
    _c("unsqueeze_last", lambda m, a: a.unsqueeze(-1), A34, covers="unsqueeze"),
    _c("squeeze", lambda m, a: a.squeeze(), In((3, 1, 4, 1)), covers="squeeze"),
    _c("squeeze_dim", lambda m, a: a.squeeze(1), In((3, 1, 4, 1)), covers="squeeze"),
    _c("transpose", lambda m, a: a.transpose(0, 2), X, covers="transpose"),
    _c("permute", lambda m, a: a.permute(2, 0, 1), X, covers="permute"),
    _c("permute_tuple", lambda m, a: a.permute((1, 2, 0)), X, covers="permute"),
    _c("T", lambda m, a: a.T, A34, covers="T"),
    _c("expand", lambda m, a: a.expand(2, 3, 4), In((3, 1)), covers="expand"),
    _c("expand_keep", lambda m, a: a.expand(5, -1), In((1, 4)), covers="expand"),
    _c("contiguous", lambda m, a: a.transpose(0, 1).contiguous(), A34, covers="contiguous"),
    _c("chunk", lambda m, a: a.chunk(3, dim=2), X, covers="chunk"),
    _c("chunk_uneven", lambda m, a: a.chunk(2), In((5, 2)), covers="chunk"),
    _c("split", lambda m, a: a.split(2), In((5, 3)), covers="split"),
    _c("split_sections", lambda m, a: a.split([1, 3], dim=2), X, covers="split"),
    _c("getitem_int", lambda m, a: a[1], X, covers="__getitem__"),
    _c("getitem_slices", lambda m, a: a[:, 1:3, ::2], X, covers="__getitem__"),
    _c("getitem_none_ellipsis", lambda m, a: a[None, ..., 0], X, covers="__getitem__"),
    _c("getitem_scalar", lambda m, a: a[1, 2], A34, covers="__getitem__"),
    _c("getitem_neg", lambda m, a: a[-1, :, -2], X, covers="__getitem__"),
    _c("getitem_index", lambda m, a, i: a[i], A34, In((5,), "index:3"), covers="__getitem__"),
    _c(
        "getitem_index_dim1",
        lambda m, a, i: a[:, i],
        X,
        In((2, 2), "index:3"),
        covers="__getitem__",
    ),
    _c(
        "getitem_index_pair",
        lambda m, a, i, j: a[i, j],
        A34,
        In((6,), "index:3"),
        In((6,), "index:4"),
        covers="__getitem__",
    ),
    _c("getitem_mask", lambda m, a, k: a[k], A34, In((3, 4), "mask"), covers="__getitem__"),
    _c("getitem_mask_rows", lambda m, a, k: a[k], X, In((2,), "mask"), covers="__getitem__"),
    _c("getitem_empty", lambda m, a: a[2:2], A34, covers="__getitem__"),
    _c("cat", lambda m, a, b: m.cat([a, b], dim=1), X, In((2, 2, 4)), covers="cat"),
    _c("cat_empty", lambda m, a, b: m.cat([a, b]), In((0, 4)), In((2, 4)), covers="cat"),
    _c("stack", lambda m, a, b: m.stack([a, b], 1), A34, B34, covers="stack"),
    # ---- others ---------------------------------------------------------------------------
    _c(
        "masked_fill",
        lambda m, a, k: a.masked_fill(k, -1.5),
        X,
        In((3, 4), "mask"),
        covers="masked_fill",
    ),
    _c("gather", lambda m, a, i: a.gather(1, i), A34, In((3, 6), "index:4"), covers="gather"),
    _c("gather_dim0", lambda m, a, i: a.gather(0, i), X, In((3, 2, 4), "index:2"), covers="gather"),
    _c(
        "where",
        lambda m, c, a, b: m.where(c, a, b),
        In((3, 4), "mask"),
        A34,
        In((4,)),
        covers="where",
    ),
    _c("where_scalar", lambda m, c, a: m.where(c, a, 0.5), In((3, 4), "mask"), A34, covers="where"),
    _c(
        "where_method",
        lambda m, a, c, b: a.where(c, b),
        A34,
        In((3, 4), "mask"),
        B34,
        covers="where",
    ),
    _c("clone", lambda m, a: a.clone(), X, covers="clone"),
    _c("detach", lambda m, a, b: a.detach() * b, A34, B34, covers="detach", fd=False),
    _c("type_as", lambda m, a, b: a.type_as(b) * b, A34, B34, covers="type_as"),
    _c("double", lambda m, a: a.double() ** 2, A34, covers=("to", "double")),
    _c("to_dtype", lambda m, a: a.to(m.float64).sum(1), A34, covers="to"),
    _c("float_half", lambda m, a: a.half().float(), A34, covers=("float", "half"), fd=False),
    _c("bfloat16", lambda m, a: a.bfloat16().float(), A34, covers="bfloat16", fd=False),
    _c("long", lambda m, a: a.long(), In((3, 4), "wide"), covers="long"),
    _c("int", lambda m, a: a.int(), In((3, 4), "wide"), covers="int"),
    _c("bool", lambda m, a: a.bool(), In((3, 4), "ties"), covers="bool"),
    _c(
        "int_ops",
        lambda m, a, b: (a + b) * 2 - a,
        In((3, 4), "int"),
        In((4,), "int"),
        covers=("+",),
    ),
    _c("int_true_div", lambda m, a: a / 2, In((3, 4), "int"), covers="/"),
    _c("int_float_scalar", lambda m, a: a * 1.5, In((3, 4), "int"), covers="*"),
    _c("int_sum", lambda m, a: a.sum(0), In((3, 4), "int"), covers="sum"),
    _c(
        "chain",
        lambda m, a, b, w: ((a @ w).tanh() * b).sum(1).log_softmax(0),
        In((5, 3)),
        In((5, 4)),
        In((3, 4)),
        covers=("@",),
    ),
)


# In-place ops: value checks (they take part in no graph).
INPLACE: tuple[Case, ...] = (
    _c("add_", lambda m, a, b: a.clone().add_(b, alpha=0.5), A34, In((4,)), covers="add_"),
    _c("sub_", lambda m, a, b: a.clone().sub_(b), A34, B34, covers="sub_"),
    _c("mul_", lambda m, a: a.clone().mul_(3.0), A34, covers="mul_"),
    _c("div_", lambda m, a, b: a.clone().div_(b), A34, In((3, 4), "nonzero"), covers="div_"),
    _c(
        "addcmul_",
        lambda m, a, b, c: a.clone().addcmul_(b, c, value=0.1),
        A34,
        B34,
        In((4,)),
        covers="addcmul_",
    ),
    _c(
        "addcdiv_",
        lambda m, a, b, c: a.clone().addcdiv_(b, c, value=-0.2),
        A34,
        B34,
        In((3, 4), "positive"),
        covers="addcdiv_",
    ),
    _c("copy_", lambda m, a, b: a.clone().copy_(b), A34, In((4,)), covers="copy_"),
    _c("fill_", lambda m, a: a.clone().fill_(2.5), A34, covers="fill_"),
    _c("zero_", lambda m, a: a.clone().zero_(), A34, covers="zero_"),
    _c("clamp_", lambda m, a: a.clone().clamp_(-0.3, 0.4), A34, covers="clamp_"),
    _c("iadd", lambda m, a, b: _iadd(a.clone(), b), A34, B34, covers="add_"),
)


def _iadd(a: Any, b: Any) -> Any:
    a += b
    a *= 2
    return a
