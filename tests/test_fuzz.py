"""Slow tier: seeded fuzzing of the engine against independent references.

Forward values are checked against NumPy computed directly on float64 inputs; gradients
against central finite differences in float64; autograd invariants (accumulation,
retain_graph, contiguous vs strided inputs) against themselves; engine.nn against finite
differences and its own state dicts; the DataLoader against the index arithmetic of its
arguments; and fault injection (corrupt checkpoints, a failing worker) against the errors
the contract promises. Each test runs a fixed set of seeds, so a failure names the seed
that reproduces it (`pytest -m slow tests/test_fuzz.py -k 'name and seed'`).
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import engine
from engine.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from engine.utils.data import DataLoader, Dataset

pytestmark = [
    pytest.mark.slow,
    # NumPy's floating-point warnings leak out of the engine on x / 0 and the mean of an
    # empty dim (PyTorch gives inf / nan silently); the values themselves are checked here
    pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning"),
    # the NumPy reference of var / std over a dim of size 1 (nan, as PyTorch gives)
    pytest.mark.filterwarnings("ignore:Degrees of freedom <= 0:RuntimeWarning"),
]

SEEDS = list(range(12))


def rng_for(seed: int, salt: str) -> np.random.Generator:
    """A generator per (test, seed): the tests' streams do not depend on each other."""
    return np.random.default_rng([seed, *salt.encode()])


def t64(a: np.ndarray, requires_grad: bool = False) -> engine.Tensor:
    return engine.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


def check(got: engine.Tensor, want: Any, what: str, rtol: float = 1e-10) -> None:
    want = np.asarray(want)
    arr = got.detach().numpy() if isinstance(got, engine.Tensor) else np.asarray(got)
    assert arr.shape == want.shape, f"{what}: shape {arr.shape}, NumPy {want.shape}"
    if want.dtype == np.bool_ or np.issubdtype(want.dtype, np.integer):
        np.testing.assert_array_equal(arr, want, err_msg=what)
    else:
        np.testing.assert_allclose(arr, want, rtol=rtol, atol=1e-12, equal_nan=True, err_msg=what)


# ---- random shapes ---------------------------------------------------------------------------
def rand_shape(rng: np.random.Generator, max_ndim: int = 4, zero: bool = True) -> tuple[int, ...]:
    ndim = int(rng.integers(0, max_ndim + 1))
    sizes = [0, 1, 1, 2, 3, 4] if zero else [1, 1, 2, 3, 4]
    return tuple(int(rng.choice(sizes)) for _ in range(ndim))


def broadcast_pair(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two shapes that broadcast: suffixes of one base shape with random dims set to 1."""
    base = rand_shape(rng)

    def one() -> tuple[int, ...]:
        keep = int(rng.integers(0, len(base) + 1))
        shape = list(base[len(base) - keep :])
        for i in range(len(shape)):
            if rng.random() < 0.3:
                shape[i] = 1
        return tuple(shape)

    return one(), one()


# ---- forward: binary ops with broadcasting -------------------------------------------------
BINARY: dict[str, tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]]] = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
    "maximum": (engine.maximum, np.maximum),
    "minimum": (engine.minimum, np.minimum),
    "eq": (lambda a, b: a == b, np.equal),
    "ne": (lambda a, b: a != b, np.not_equal),
    "lt": (lambda a, b: a < b, np.less),
    "le": (lambda a, b: a <= b, np.less_equal),
    "gt": (lambda a, b: a > b, np.greater),
    "ge": (lambda a, b: a >= b, np.greater_equal),
}


def values(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    # small integers (as floats) half the time, so comparisons and max/min meet ties
    if rng.random() < 0.5:
        return rng.integers(-3, 4, size=shape).astype(np.float64)
    return rng.standard_normal(shape)


@pytest.mark.parametrize("seed", SEEDS)
def test_binary_ops_broadcast_like_numpy(seed: int) -> None:
    rng = rng_for(seed, "binary")
    for case in range(120):
        sa, sb = broadcast_pair(rng)
        a, b = values(rng, sa), values(rng, sb)
        if rng.random() < 0.5:
            b = np.where(b == 0, 0.5, b)  # mostly finite quotients, sometimes inf/nan
        for name, (op, ref) in BINARY.items():
            with np.errstate(divide="ignore", invalid="ignore"):
                want = ref(a, b)
            what = f"seed {seed} case {case}: {name} {sa} {sb}"
            check(op(t64(a), t64(b)), want, what)
        cond = rng.random(broadcast_pair(rng)[0]) < 0.5
        try:
            want = np.where(cond, a, b)
        except ValueError:
            continue
        check(engine.where(engine.tensor(cond), t64(a), t64(b)), want, f"where {cond.shape}")


@pytest.mark.parametrize("seed", SEEDS)
def test_python_scalar_operands_both_sides(seed: int) -> None:
    rng = rng_for(seed, "scalar")
    for case in range(40):
        shape = rand_shape(rng)
        a = values(rng, shape)
        s = float(rng.choice([-2.0, -0.5, 0.25, 1.0, 3.0]))
        if rng.random() < 0.5:
            s = int(s * 4)
        ta = t64(a)
        what = f"seed {seed} case {case}: shape {shape} scalar {s!r}"
        with np.errstate(divide="ignore", invalid="ignore"):
            check(ta + s, a + s, what)
            check(s + ta, s + a, what)
            check(ta - s, a - s, what)
            check(s - ta, s - a, what)
            check(ta * s, a * s, what)
            check(s * ta, s * a, what)
            check(s / ta, s / a, what)
            if s != 0:
                check(ta / s, a / s, what)
            check(engine.maximum(ta, t64(np.array(s))), np.maximum(a, s), what)
            check(ta < s, a < s, what)
            check(ta >= s, a >= s, what)
            check(ta == s, a == s, what)
            check(ta.clamp(min=-abs(s), max=abs(s)), np.clip(a, -abs(s), abs(s)), what)
            if s == int(s) and abs(s) <= 3:
                check(ta ** int(s), np.power(a, float(int(s))), what, rtol=1e-9)


def test_mismatched_shapes_raise_shape_error() -> None:
    rng = rng_for(0, "mismatch")
    for _ in range(40):
        sa, sb = rand_shape(rng, zero=False), rand_shape(rng, zero=False)
        try:
            np.broadcast_shapes(sa, sb)
        except ValueError:
            for name, (op, _) in BINARY.items():
                with pytest.raises(engine.ShapeError):
                    op(engine.zeros(sa, dtype=engine.float64), engine.zeros(sb))
                assert name


# ---- type promotion -------------------------------------------------------------------------
# PyTorch's documented rules (torch.result_type / "Type promotion" in the tensor attributes
# docs), restated here independently of engine/dtypes.py:
# - categories bool < integral < floating; an operand of a higher category wins, within one
#   category the wider dtype wins (int32 < int64, float32 < float64);
# - dimensioned tensors outrank 0-d tensors, which outrank Python scalars: a lower-priority
#   operand changes the result only when its category is higher than every higher-priority
#   operand's, and then the result is its own dtype (a 0-d tensor) or, for a Python scalar,
#   bool / int64 / the default dtype (float32) for bool / int / float;
# - true division of integral or bool operands gives the default dtype (float32);
# - comparisons give bool; subtraction with a bool tensor operand raises.
DTYPES = {
    "bool": (engine.bool_, np.bool_),
    "int32": (engine.int32, np.int32),
    "int64": (engine.int64, np.int64),
    "float32": (engine.float32, np.float32),
    "float64": (engine.float64, np.float64),
}
CATEGORY = {"bool": 0, "int32": 1, "int64": 1, "float32": 2, "float64": 2}
WIDTH = {"bool": 0, "int32": 32, "int64": 64, "float32": 32, "float64": 64}
SCALAR_DTYPE = {bool: "bool", int: "int64", float: "float32"}


def expected_dtype(operands: list[tuple[str, int]]) -> str:
    """operands: (dtype name, priority) with priority 2 dimensioned, 1 0-d, 0 scalar."""
    best: str | None = None
    for prio in (2, 1, 0):
        names = [n for n, p in operands if p == prio]
        if not names:
            continue
        top = max(CATEGORY[n] for n in names)
        if best is not None and top <= CATEGORY[best]:
            continue
        pick = max((n for n in names if CATEGORY[n] == top), key=WIDTH.__getitem__)
        best = pick
    assert best is not None
    return best


def promo_operand(rng: np.random.Generator, shape: tuple[int, ...], nonzero: bool) -> Any:
    """A random tensor (dimensioned or 0-d) or Python scalar, with its (dtype, priority)."""
    kind = rng.choice(["dim", "dim", "zero_d", "scalar"])
    name = str(rng.choice(list(DTYPES)))
    low = 1 if nonzero else -3
    if kind == "scalar":
        py = rng.choice([bool, int, float])
        if py is bool:
            v: Any = True if nonzero else bool(rng.integers(0, 2))
        elif py is int:
            v = int(rng.integers(1, 4)) * (1 if nonzero else int(rng.choice([-1, 1])))
        else:
            v = float(rng.choice([0.5, 1.5, -2.25] if nonzero else [0.0, 0.5, -2.25]))
        return v, np.asarray(v, dtype=np.float64), (SCALAR_DTYPE[py], 0)
    shp = () if kind == "zero_d" else shape
    if name == "bool":
        a = np.ones(shp, bool) if nonzero else rng.random(shp) < 0.5
    elif CATEGORY[name] == 1:
        a = rng.integers(low, 4, size=shp)
    else:
        a = rng.integers(low, 4, size=shp) + rng.choice([0.0, 0.5], size=shp)
    a = np.asarray(a, dtype=DTYPES[name][1])
    return (
        engine.tensor(a, dtype=DTYPES[name][0]),
        a.astype(np.float64),
        (name, 2 - (kind != "dim")),
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_type_promotion_follows_pytorch_rules(seed: int) -> None:
    rng = rng_for(seed, "promotion")
    ops = {
        "add": (lambda a, b: a + b, np.add),
        "sub": (lambda a, b: a - b, np.subtract),
        "mul": (lambda a, b: a * b, np.multiply),
        "div": (lambda a, b: a / b, np.divide),
        "maximum": (engine.maximum, np.maximum),
        "lt": (lambda a, b: a < b, np.less),
        "eq": (lambda a, b: a == b, np.equal),
    }
    for case in range(150):
        shape = tuple(int(s) for s in rng.integers(1, 4, size=int(rng.integers(1, 3))))
        for name, (op, ref) in ops.items():
            a, a64, ka = promo_operand(rng, shape, nonzero=name == "div")
            b, b64, kb = promo_operand(rng, shape, nonzero=name == "div")
            if not isinstance(a, engine.Tensor):
                a, a64, ka, b, b64, kb = b, b64, kb, a, a64, ka  # the tensor goes left
            if not isinstance(a, engine.Tensor) or (
                name == "maximum" and not isinstance(b, engine.Tensor)
            ):
                continue  # two scalars is no tensor op; maximum takes tensors only
            want = expected_dtype([ka, kb])
            what = f"seed {seed} case {case}: {name}({ka}, {kb})"
            if name == "sub" and "bool" in {ka[0], kb[0]}:
                if ka == ("bool", 0) or kb == ("bool", 0):
                    continue  # a bool Python scalar: left to the fast tier
                with pytest.raises((RuntimeError, TypeError)):  # PyTorch refuses bool tensors
                    op(a, b)
                continue
            if name == "div" and CATEGORY[want] < 2:
                want = "float32"
            if name in {"lt", "eq"}:
                cast = DTYPES[want][1]
                want_vals = ref(a64.astype(cast), b64.astype(cast))
                want = "bool"
            else:
                want_vals = ref(a64, b64)
            got = op(a, b)
            assert got.dtype == DTYPES[want][0], f"{what}: got {got.dtype}, expected {want}"
            rtol = 1e-6 if want == "float32" else 1e-12
            check(got, want_vals.astype(DTYPES[want][1]), what, rtol=rtol)
        # where(cond, a, b) promotes its two value operands the same way
        a, a64, ka = promo_operand(rng, shape, nonzero=False)
        b, b64, kb = promo_operand(rng, shape, nonzero=False)
        if isinstance(a, engine.Tensor) and isinstance(b, engine.Tensor):
            cond = rng.random(shape) < 0.5
            got = engine.where(engine.tensor(cond), a, b)
            want = expected_dtype([ka, kb])
            assert got.dtype == DTYPES[want][0], f"seed {seed} case {case}: where({ka}, {kb})"
            check(got, np.where(cond, a64, b64).astype(DTYPES[want][1]), "where values")


# ---- reductions -----------------------------------------------------------------------------
def rand_dims(rng: np.random.Generator, ndim: int) -> tuple[int, ...]:
    """A random non-empty tuple of distinct dims, each written positive or negative."""
    k = int(rng.integers(1, ndim + 1))
    dims = rng.choice(ndim, size=k, replace=False)
    return tuple(int(d) - ndim if rng.random() < 0.5 else int(d) for d in dims)


def np_softmax(a: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("seed", SEEDS)
def test_reductions_like_numpy(seed: int) -> None:
    rng = rng_for(seed, "reduce")
    for case in range(120):
        shape = rand_shape(rng, zero=False)
        while not shape:
            shape = rand_shape(rng, zero=False)
        a = rng.standard_normal(shape)  # no ties: argmax/max indices are unique
        ta = t64(a)
        nd = len(shape)
        dims = rand_dims(rng, nd)
        keep = bool(rng.random() < 0.5)
        d = dims[0]
        what = f"seed {seed} case {case}: shape {shape} dims {dims} keepdim {keep}"
        with np.errstate(divide="ignore", invalid="ignore"):
            check(ta.sum(dims, keepdim=keep), a.sum(axis=dims, keepdims=keep), what)
            check(ta.mean(dims, keepdim=keep), a.mean(axis=dims, keepdims=keep), what)
            check(ta.var(dims, keepdim=keep), a.var(axis=dims, ddof=1, keepdims=keep), what)
            check(ta.var(dims, unbiased=False, keepdim=keep), a.var(axis=dims, keepdims=keep), what)
            check(ta.std(dims, keepdim=keep), a.std(axis=dims, ddof=1, keepdims=keep), what)
        check(ta.norm(dim=dims, keepdim=keep), np.sqrt((a * a).sum(axis=dims, keepdims=keep)), what)
        check(engine.amax(ta, dims, keepdim=keep), a.max(axis=dims, keepdims=keep), what)
        check(engine.amin(ta, dims, keepdim=keep), a.min(axis=dims, keepdims=keep), what)
        values, indices = ta.max(d, keepdim=keep)
        check(values, a.max(axis=d, keepdims=keep), what)
        check(indices, a.argmax(axis=d, keepdims=keep), what)
        values, indices = ta.min(d, keepdim=keep)
        check(values, a.min(axis=d, keepdims=keep), what)
        check(indices, a.argmin(axis=d, keepdims=keep), what)
        check(ta.argmax(d, keepdim=keep), a.argmax(axis=d, keepdims=keep), what)
        check(ta.argmax(), np.argmax(a), what)
        check(ta.prod(d, keepdim=keep), a.prod(axis=d, keepdims=keep), what)
        check(ta.softmax(d), np_softmax(a, d), what)
        check(ta.log_softmax(d), np.log(np_softmax(a, d)), what, rtol=1e-9)
        check(ta.cumsum(d), np.cumsum(a, axis=d), what)
        # whole-tensor forms
        check(ta.sum(), a.sum(), what)
        check(ta.mean(), a.mean(), what)
        check(ta.max(), a.max(), what)
        check(ta.min(), a.min(), what)
        check(ta.prod(), a.prod(), what)
        check(ta.norm(), np.sqrt((a * a).sum()), what)
        if a.size > 1:
            check(ta.std(), a.std(ddof=1), what)


@pytest.mark.parametrize("seed", SEEDS)
def test_reductions_over_size_zero_dims(seed: int) -> None:
    rng = rng_for(seed, "reduce0")
    for case in range(30):
        shape = list(rand_shape(rng, zero=False)) or [2]
        shape[int(rng.integers(len(shape)))] = 0
        a = np.zeros(shape)
        ta = t64(a)
        dims = rand_dims(rng, len(shape))
        keep = bool(rng.random() < 0.5)
        what = f"seed {seed} case {case}: shape {shape} dims {dims}"
        with np.errstate(invalid="ignore", divide="ignore"):
            check(ta.sum(dims, keepdim=keep), a.sum(axis=dims, keepdims=keep), what)
            check(ta.mean(dims, keepdim=keep), a.mean(axis=dims, keepdims=keep), what)
        check(ta.prod(dims[0], keepdim=keep), a.prod(axis=dims[0], keepdims=keep), what)
        check(ta.cumsum(dims[0]), np.cumsum(a, axis=dims[0]), what)
        check(ta.softmax(dims[0]), a, what)
        if all(shape[d] > 0 for d in dims):
            check(engine.amax(ta, dims, keepdim=keep), a.max(axis=dims, keepdims=keep), what)
        else:
            with pytest.raises((RuntimeError, IndexError, ValueError)):
                engine.amax(ta, dims, keepdim=keep)


# ---- shape ops --------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_shape_ops_like_numpy(seed: int) -> None:
    rng = rng_for(seed, "shape")
    for case in range(120):
        shape = rand_shape(rng)
        a = rng.standard_normal(shape)
        ta = t64(a)
        nd = len(shape)
        what = f"seed {seed} case {case}: shape {shape}"
        # reshape with -1 (never with a zero-size total, where -1 is ambiguous)
        if a.size:
            flat = [int(s) for s in rng.permutation(np.array((*shape, 1), dtype=int))]
            new = [*flat]
            new[int(rng.integers(len(new)))] = -1
            check(ta.reshape(*new), a.reshape(new), f"{what} reshape {new}")
            check(ta.reshape(tuple(new)), a.reshape(new), f"{what} reshape {new}")
        check(ta.reshape(-1), a.reshape(-1), what)
        if nd:
            perm = [int(p) for p in rng.permutation(nd)]
            check(ta.permute(*perm), a.transpose(perm), f"{what} permute {perm}")
            check(ta.permute(perm), a.transpose(perm), f"{what} permute {perm}")
            d0, d1 = (int(x) - nd * int(rng.integers(2)) for x in rng.integers(0, nd, size=2))
            check(ta.transpose(d0, d1), np.swapaxes(a, d0, d1), f"{what} transpose {d0} {d1}")
            d = int(rng.integers(-nd, nd))
            check(ta.squeeze(d), np.squeeze(a, d) if shape[d] == 1 else a, f"{what} squeeze {d}")
            start = int(rng.integers(-nd, nd))
            end = int(rng.integers(start % nd, nd))
            want = a.reshape((*shape[: start % nd], -1, *shape[end + 1 :])) if a.size else None
            got = ta.flatten(start, end)
            if want is not None:
                check(got, want, f"{what} flatten {start} {end}")
            else:
                n = int(np.prod(shape[start % nd : end + 1]))
                assert got.shape == (*shape[: start % nd], n, *shape[end + 1 :]), what
            # chunk / split along a random dim, then cat back
            d = int(rng.integers(-nd, nd))
            n = int(rng.integers(1, 5))
            pieces = ta.chunk(n, d)
            size = shape[d]
            step = -(-size // n) if size else 0
            bounds = list(range(step, size, step)) if step else []
            # PyTorch: an empty dim gives `chunks` empty pieces
            want_pieces = np.split(a, bounds, axis=d) if size else [a] * n
            assert len(pieces) == len(want_pieces), f"{what} chunk {n} {d}"
            for p, w in zip(pieces, want_pieces, strict=True):
                check(p, w, f"{what} chunk {n} {d}")
            check(engine.cat(pieces, d), a, f"{what} cat of chunks")
            k = int(rng.integers(1, 4))
            want_pieces = np.split(a, list(range(k, size, k)), axis=d) if size else [a]
            pieces = ta.split(k, d)
            assert len(pieces) == len(want_pieces), f"{what} split {k} {d}"
            for p, w in zip(pieces, want_pieces, strict=True):
                check(p, w, f"{what} split {k} {d}")
            if size:
                cuts = sorted(int(c) for c in rng.integers(0, size + 1, size=2))
                sections = [cuts[0], cuts[1] - cuts[0], size - cuts[1]]
                pieces = ta.split(sections, d)
                for p, w in zip(pieces, np.split(a, cuts, axis=d), strict=True):
                    check(p, w, f"{what} split {sections} {d}")
            # cat of parts of different lengths along d
            other = list(shape)
            other[d] = int(rng.integers(0, 3))
            b = rng.standard_normal(other)
            check(engine.cat([ta, t64(b)], d), np.concatenate([a, b], axis=d), f"{what} cat")
        d = int(rng.integers(-nd - 1, nd + 1))
        check(ta.unsqueeze(d), np.expand_dims(a, d), f"{what} unsqueeze {d}")
        check(ta.squeeze(), np.squeeze(a), what)
        d = int(rng.integers(-nd - 1, nd + 1))
        n = int(rng.integers(1, 4))
        parts = [rng.standard_normal(shape) for _ in range(n)]
        check(engine.stack([t64(p) for p in parts], d), np.stack(parts, axis=d), f"{what} stack")
        # expand: size-1 dims grow, -1 keeps, and new leading dims
        target = [
            int(rng.integers(1, 4)) if s == 1 else (-1 if rng.random() < 0.5 else s) for s in shape
        ]
        lead = [int(rng.integers(0, 3)) for _ in range(int(rng.integers(0, 2)))]
        full = [s if t == -1 else t for s, t in zip(shape, target, strict=True)]
        check(ta.expand(*lead, *target), np.broadcast_to(a, (*lead, *full)), f"{what} expand")
        # the results of shape ops compose: a transposed, reshaped view reads like NumPy's
        if nd >= 2:
            check(ta.transpose(0, -1).reshape(-1), a.swapaxes(0, -1).reshape(-1), what)


# ---- __getitem__ ------------------------------------------------------------------------------
def rand_index(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[Any, Any]:
    """A random index for `shape`, as the engine takes it and as NumPy does."""
    parts: list[Any] = []
    dim = 0
    used_ellipsis = False
    used_array = 0
    while dim < len(shape):
        size = shape[dim]
        r = rng.random()
        if r < 0.1:
            parts.append(None)
            continue
        if r < 0.17 and not used_ellipsis:
            used_ellipsis = True
            skip = int(rng.integers(0, len(shape) - dim + 1))
            parts.append(Ellipsis)
            dim += skip
            continue
        if r < 0.35 and size:
            parts.append(int(rng.integers(-size, size)))
        elif r < 0.5 and used_array < 2:
            used_array += 1
            if rng.random() < 0.5 or not size:
                k = int(rng.integers(1, len(shape) - dim + 1))  # a mask may span several dims
                mask = rng.random(shape[dim : dim + k]) < 0.5
                parts.append(("mask", mask))
                dim += k - 1
            else:
                n = int(rng.integers(0, 5))
                arr = rng.integers(-size, size, size=n if rng.random() < 0.7 else (2, n))
                parts.append(("ints", arr))  # repeats are likely
        else:
            start = int(rng.integers(-size - 1, size + 2)) if rng.random() < 0.7 else None
            stop = int(rng.integers(-size - 1, size + 2)) if rng.random() < 0.7 else None
            step = int(rng.integers(1, 4)) if rng.random() < 0.6 else None
            parts.append(slice(start, stop, step))
        dim += 1
    if rng.random() < 0.2:
        parts.append(None)
    eng = []
    ref = []
    for p in parts:
        if isinstance(p, tuple):  # ("mask" | "ints", array)
            eng.append(engine.tensor(p[1]))
            ref.append(p[1])
        else:
            eng.append(p)
            ref.append(p)
    if len(eng) == 1 and rng.random() < 0.5:
        return eng[0], ref[0]
    return tuple(eng), tuple(ref)


@pytest.mark.parametrize("seed", SEEDS)
def test_getitem_like_numpy(seed: int) -> None:
    rng = rng_for(seed, "getitem")
    for case in range(400):
        shape = rand_shape(rng)
        a = rng.standard_normal(shape)
        idx, ref = rand_index(rng, shape)
        what = f"seed {seed} case {case}: shape {shape} index {ref!r}"
        try:
            want = a[ref]
        except IndexError:  # index arrays that do not broadcast: PyTorch raises IndexError
            with pytest.raises(IndexError):
                t64(a)[idx]
            continue
        check(t64(a)[idx], want, what)
        # and on a non-contiguous view of the same values
        if len(shape) >= 2:
            at = np.ascontiguousarray(a.swapaxes(0, 1))
            view = t64(at).transpose(0, 1)
            check(view[idx], want, f"{what} (strided)")


# ---- gradients of random expressions against finite differences ---------------------------
# Each op factory takes the rng and its operands' NumPy values and returns the engine op, the
# NumPy op and the operands' distance to a point where the op is not smooth (or not defined):
# an expression whose inputs come closer than MARGIN to one is drawn again.
MARGIN = 0.05
INF = float("inf")
Op = tuple[Callable[..., Any], Callable[..., Any], float]


def _gap(x: np.ndarray, axis: int) -> float:
    """The smallest gap between the largest and second-largest entries along axis."""
    if x.shape[axis] < 2:
        return INF
    s = np.sort(x, axis=axis)
    return float(np.min(np.take(s, -1, axis) - np.take(s, -2, axis), initial=INF))


def _min(x: np.ndarray) -> float:
    return float(np.min(x, initial=INF))


def unary_op(rng: np.random.Generator, x: np.ndarray) -> Op | None:
    nd = x.ndim
    name = str(
        rng.choice(
            [
                "neg",
                "exp",
                "log",
                "sqrt",
                "rsqrt",
                "abs",
                "tanh",
                "sigmoid",
                "relu",
                "square",
                "cube",
                "clamp",
                "scale",
                "rsub",
                "rdiv",
                "rpow",
                "sum",
                "mean",
                "var",
                "softmax",
                "log_softmax",
                "amax",
                "max",
                "norm",
                "cumsum",
                "prod",
                "transpose",
                "reshape",
                "index",
                "pow_half",
            ]
        )
    )
    d = int(rng.integers(-nd, nd)) if nd else 0
    if name == "neg":
        return (lambda t: -t), np.negative, INF
    if name == "exp":
        return engine.exp, np.exp, 3.0 - float(np.max(x, initial=0.0))
    if name == "log":
        return engine.log, np.log, _min(x)
    if name == "sqrt":
        return engine.sqrt, np.sqrt, _min(x)
    if name == "rsqrt":
        return engine.rsqrt, lambda v: 1 / np.sqrt(v), _min(x) - 0.2
    if name == "pow_half":
        return (lambda t: t**0.5), np.sqrt, _min(x)
    if name == "abs":
        return engine.abs, np.abs, _min(np.abs(x))
    if name == "tanh":
        return engine.tanh, np.tanh, INF
    if name == "sigmoid":
        return engine.sigmoid, lambda v: 1 / (1 + np.exp(-v)), INF
    if name == "relu":
        return engine.relu, lambda v: np.maximum(v, 0), _min(np.abs(x))
    if name == "square":
        return (lambda t: t**2), np.square, INF
    if name == "cube":
        return (lambda t: t.pow(3)), lambda v: v**3, INF
    if name == "clamp":
        lo, hi = sorted(float(v) for v in rng.uniform(-1.5, 1.5, size=2))
        margin = min(_min(np.abs(x - lo)), _min(np.abs(x - hi)), hi - lo)
        return (lambda t: t.clamp(lo, hi)), lambda v: np.clip(v, lo, hi), margin
    s = float(rng.choice([-1.5, 0.5, 2.0]))
    if name == "scale":
        return (lambda t: t * s), (lambda v: v * s), INF
    if name == "rsub":
        return (lambda t: s - t), (lambda v: s - v), INF
    if name == "rdiv":
        return (lambda t: s / t), (lambda v: s / v), _min(np.abs(x)) - 0.2
    if name == "rpow":
        return (lambda t: 1.5**t), (lambda v: 1.5**v), 3.0 - float(np.max(np.abs(x), initial=0))
    if nd == 0:
        return None  # the rest need a dim
    if name == "sum":
        return (lambda t: t.sum(d, keepdim=True)), (lambda v: v.sum(d, keepdims=True)), INF
    if name == "mean":
        return (lambda t: t.mean(d, keepdim=True)), (lambda v: v.mean(d, keepdims=True)), INF
    if name == "var":
        if x.shape[d] < 2:
            return None
        return (
            (lambda t: t.var(d, keepdim=True)),
            (lambda v: v.var(d, ddof=1, keepdims=True)),
            INF,
        )
    if name == "softmax":
        return (lambda t: t.softmax(d)), (lambda v: np_softmax(v, d)), INF
    if name == "log_softmax":
        return (lambda t: t.log_softmax(d)), (lambda v: np.log(np_softmax(v, d))), INF
    if name == "amax":
        return (
            (lambda t: engine.amax(t, d, keepdim=True)),
            (lambda v: v.max(d, keepdims=True)),
            _gap(x, d),
        )
    if name == "max":
        return (
            (lambda t: t.max(d, keepdim=True)[0]),
            (lambda v: v.max(d, keepdims=True)),
            _gap(x, d),
        )
    if name == "norm":
        margin = _min(np.sqrt((x * x).sum(d)))
        return (
            (lambda t: t.norm(dim=d, keepdim=True)),
            (lambda v: np.sqrt((v * v).sum(d, keepdims=True))),
            margin,
        )
    if name == "cumsum":
        return (lambda t: t.cumsum(d)), (lambda v: np.cumsum(v, d)), INF
    if name == "prod":
        return (lambda t: t.prod(d, keepdim=True)), (lambda v: v.prod(d, keepdims=True)), INF
    if name == "transpose":
        e = int(rng.integers(0, nd))
        return (
            (lambda t: t.transpose(d, e).contiguous().transpose(d, e) * 1.0),
            (lambda v: v),
            INF,
        )
    if name == "reshape":
        return (lambda t: t.reshape(-1).reshape(x.shape)), (lambda v: v), INF
    # an integer-array index along d with repeats, then a slice back to the original size
    n = x.shape[d]
    perm = rng.integers(0, n, size=n)
    idx = (slice(None),) * (d % nd) + (engine.tensor(perm),)
    nidx = (slice(None),) * (d % nd) + (perm,)
    return (lambda t: t[idx]), (lambda v: v[nidx]), INF


def binary_op(rng: np.random.Generator, a: np.ndarray, b: np.ndarray) -> Op:
    name = str(rng.choice(["add", "sub", "mul", "div", "maximum", "minimum", "pow", "where"]))
    if name == "add":
        return (lambda s, t: s + t), np.add, INF
    if name == "sub":
        return (lambda s, t: s - t), np.subtract, INF
    if name == "mul":
        return (lambda s, t: s * t), np.multiply, INF
    if name == "div":
        return (lambda s, t: s / t), np.divide, _min(np.abs(b)) - 0.2
    if name in {"maximum", "minimum"}:
        fn = engine.maximum if name == "maximum" else engine.minimum
        return fn, getattr(np, name), _min(np.abs(a - b))
    if name == "pow":
        return (lambda s, t: s**t), np.power, min(_min(a) - 0.2, 3 - _min(-np.abs(b)))
    cond = rng.random(np.broadcast_shapes(a.shape, b.shape)) < 0.5
    return (
        (lambda s, t: engine.where(engine.tensor(cond), s, t)),
        (lambda u, v: np.where(cond, u, v)),
        INF,
    )


def random_expression(
    rng: np.random.Generator,
) -> tuple[list[np.ndarray], Callable[..., Any], Callable[..., Any]] | None:
    """Inputs, the engine's function of them and NumPy's, or None if the draw was unusable."""
    base = rand_shape(rng, max_ndim=3, zero=False)
    leaves = []
    for _ in range(int(rng.integers(1, 4))):
        shape = tuple(s if rng.random() < 0.7 else 1 for s in base[int(rng.integers(0, 2)) :])
        x = rng.uniform(0.3, 1.5, size=shape) * rng.choice([-1, 1], size=shape)
        if rng.random() < 0.3:
            x = np.abs(x)  # positive inputs let log/sqrt/pow through more often
        leaves.append(np.asarray(x, dtype=np.float64))
    # the program: a list of (op, operand slots); slot i < len(leaves) is an input
    program: list[tuple[Op, list[int]]] = []
    vals = list(leaves)
    for _ in range(int(rng.integers(2, 5))):
        if len(vals) > 1 and rng.random() < 0.5:
            i, j = (int(k) for k in rng.choice(len(vals), size=2))
            op = binary_op(rng, vals[i], vals[j])
            slots = [i, j]
        else:
            # prefer the newest value, so the ops compose
            i = len(vals) - 1 if rng.random() < 0.7 else int(rng.integers(len(vals)))
            got = unary_op(rng, vals[i])
            if got is None:
                continue
            op, slots = got, [i]
        if op[2] < MARGIN:
            return None
        with np.errstate(all="ignore"):
            out = op[1](*(vals[k] for k in slots))
        if not np.all(np.isfinite(out)) or np.max(np.abs(out), initial=0) > 1e4:
            return None
        vals.append(out)
        program.append((op, slots))
    if not program:
        return None

    def run(ops_index: int, *inputs: Any) -> Any:
        env = list(inputs)
        for op, slots in program:
            env.append(op[ops_index](*(env[k] for k in slots)))
        return env[-1]

    return leaves, (lambda *xs: run(0, *xs)), (lambda *xs: run(1, *xs))


def finite_difference(
    f: Callable[..., np.ndarray], inputs: list[np.ndarray], weight: np.ndarray, h: float = 1e-6
) -> list[np.ndarray]:
    grads = []
    for i, x in enumerate(inputs):
        g = np.zeros_like(x)
        for k in np.ndindex(x.shape):
            xp, xm = x.copy(), x.copy()
            xp[k] += h
            xm[k] -= h
            args_p = [*inputs[:i], xp, *inputs[i + 1 :]]
            args_m = [*inputs[:i], xm, *inputs[i + 1 :]]
            g[k] = ((f(*args_p) * weight).sum() - (f(*args_m) * weight).sum()) / (2 * h)
        grads.append(g)
    return grads


@pytest.mark.parametrize("seed", SEEDS)
def test_gradients_of_random_expressions_match_finite_differences(seed: int) -> None:
    rng = rng_for(seed, "grad")
    done = 0
    while done < 200:
        drawn = random_expression(rng)
        if drawn is None:
            continue
        leaves, f_engine, f_numpy = drawn
        done += 1
        xs = [t64(x, requires_grad=True) for x in leaves]
        out = f_engine(*xs)
        want = f_numpy(*leaves)
        what = f"seed {seed} expression {done}: inputs {[x.shape for x in leaves]}"
        check(out, want, f"{what} forward", rtol=1e-9)
        weight = rng.standard_normal(want.shape)
        (out * t64(weight)).sum().backward()
        fd = finite_difference(f_numpy, leaves, weight)
        for i, (x, g) in enumerate(zip(xs, fd, strict=True)):
            if x.grad is None:  # an input the expression never reads
                np.testing.assert_array_equal(g, 0, err_msg=f"{what}: input {i} has no grad")
                continue
            assert x.grad.shape == x.shape, f"{what}: grad shape of input {i}"
            np.testing.assert_allclose(
                x.grad.numpy(), g, rtol=1e-5, atol=1e-6, err_msg=f"{what}: grad of input {i}"
            )


def draw_expression(rng: np.random.Generator) -> tuple[list[np.ndarray], Callable[..., Any], Any]:
    while True:
        drawn = random_expression(rng)
        if drawn is not None:
            return drawn


def strided(x: np.ndarray, rng: np.random.Generator) -> tuple[engine.Tensor, engine.Tensor]:
    """A leaf holding x's values spread out, and a non-contiguous view of it equal to x:
    every other element of a transposed, twice-as-long buffer."""
    if x.ndim < 2:
        big = np.zeros((*x.shape[:-1], 2 * x.shape[-1]) if x.ndim else (2,))
        big[..., ::2] = x
        base = t64(big, requires_grad=True)
        view = base[..., ::2] if x.ndim else base[0]
        return base, view
    big = np.zeros((x.shape[-1] * 2, *x.shape[:-1]))  # the last dim first, strided by 2
    big[::2] = np.moveaxis(x, -1, 0)
    base = t64(big, requires_grad=True)
    perm = [*range(1, x.ndim), 0]
    return base, base[::2].permute(*perm)


@pytest.mark.parametrize("seed", SEEDS)
def test_autograd_invariants_on_random_expressions(seed: int) -> None:
    rng = rng_for(seed, "invariants")
    for case in range(80):
        leaves, f_engine, _ = draw_expression(rng)
        what = f"seed {seed} case {case}: inputs {[x.shape for x in leaves]}"
        weight = t64(rng.standard_normal(f_engine(*[t64(x) for x in leaves]).shape))

        def loss(
            xs: list[engine.Tensor], f: Callable[..., Any] = f_engine, w: engine.Tensor = weight
        ) -> engine.Tensor:
            return (f(*xs) * w).sum()

        # one backward
        xs = [t64(x, requires_grad=True) for x in leaves]
        loss(xs).backward()
        once = [None if x.grad is None else x.grad.numpy() for x in xs]
        # two backward calls through one retained graph accumulate to twice that
        ys = [t64(x, requires_grad=True) for x in leaves]
        out = loss(ys)
        out.backward(retain_graph=True)
        out.backward()
        for g1, y in zip(once, ys, strict=True):
            if g1 is None:
                assert y.grad is None, what
            else:
                np.testing.assert_allclose(y.grad.numpy(), 2 * g1, rtol=1e-12, err_msg=what)
        # the graph is freed now: a third backward says so
        with pytest.raises(RuntimeError):
            out.backward()
        # two separate graphs accumulate too
        zs = [t64(x, requires_grad=True) for x in leaves]
        loss(zs).backward()
        loss(zs).backward()
        for g1, z in zip(once, zs, strict=True):
            if g1 is not None:
                np.testing.assert_allclose(z.grad.numpy(), 2 * g1, rtol=1e-12, err_msg=what)
        # leaves whose arrays are non-contiguous (from_numpy keeps NumPy's strides)
        leaves_nc = []
        for x in leaves:
            buf = np.zeros((*x.shape, 2))
            buf[..., 0] = x
            leaves_nc.append(engine.from_numpy(buf[..., 0]).requires_grad_())
        loss(leaves_nc).backward()
        for g1, x in zip(once, leaves_nc, strict=True):
            if g1 is not None:
                np.testing.assert_allclose(x.grad.numpy(), g1, rtol=1e-12, err_msg=what)
        # the same inputs as non-contiguous views give the same values and gradients
        pairs = [strided(x, rng) for x in leaves]
        views = [v for _, v in pairs]
        for v, x in zip(views, leaves, strict=True):
            assert v.shape == x.shape
        check(f_engine(*views), f_engine(*[t64(x) for x in leaves]).detach().numpy(), what)
        loss(views).backward()
        for g1, (base, _), x in zip(once, pairs, leaves, strict=True):
            if g1 is None:
                assert base.grad is None, what
                continue
            grad = base.grad.numpy()
            if x.ndim >= 2:
                np.testing.assert_allclose(
                    np.moveaxis(grad[::2], 0, -1), g1, rtol=1e-12, atol=1e-14, err_msg=what
                )
                np.testing.assert_array_equal(grad[1::2], 0, err_msg=what)
            elif x.ndim == 1:
                np.testing.assert_allclose(grad[::2], g1, rtol=1e-12, atol=1e-14, err_msg=what)
                np.testing.assert_array_equal(grad[1::2], 0, err_msg=what)
            else:
                np.testing.assert_allclose(grad[0], g1, rtol=1e-12, atol=1e-14, err_msg=what)
                assert grad[1] == 0, what


# ---- engine.nn: random models against finite differences; state dicts ----------------------
SMOOTH_ACTIVATIONS = [engine.nn.Tanh, engine.nn.SiLU, engine.nn.GELU, engine.nn.Sigmoid]


def conv_out(size: int, k: int, stride: int, pad: int, dil: int = 1) -> int:
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


def random_mlp(rng: np.random.Generator) -> tuple[engine.nn.Module, tuple[int, ...]]:
    nn = engine.nn
    width = int(rng.integers(1, 6))
    layers: list[nn.Module] = []
    for _ in range(int(rng.integers(1, 4))):
        out = int(rng.integers(1, 6))
        layers.append(nn.Linear(width, out, bias=bool(rng.random() < 0.8)))
        if rng.random() < 0.3 and out > 1:
            layers.append(nn.LayerNorm(out))
        layers.append(SMOOTH_ACTIVATIONS[int(rng.integers(len(SMOOTH_ACTIVATIONS)))]())
        width = out
    layers.append(nn.Linear(width, int(rng.integers(1, 4))))
    return nn.Sequential(*layers), (int(rng.integers(1, 4)), int(layers[0].in_features))


def random_cnn(rng: np.random.Generator) -> tuple[engine.nn.Module, tuple[int, ...]] | None:
    nn = engine.nn
    groups = int(rng.choice([1, 1, 2, 3]))
    cin = groups * int(rng.integers(1, 3))
    cout = groups * int(rng.integers(1, 3))
    k = int(rng.integers(1, 4))
    stride = int(rng.integers(1, 3))
    pad = int(rng.integers(0, 3))
    dil = int(rng.integers(1, 3))
    h, w = (int(s) for s in rng.integers(3, 9, size=2))
    oh, ow = conv_out(h, k, stride, pad, dil), conv_out(w, k, stride, pad, dil)
    if oh < 1 or ow < 1:
        return None
    layers: list[nn.Module] = [
        nn.Conv2d(
            cin,
            cout,
            k,
            stride=stride,
            padding=pad,
            dilation=dil,
            groups=groups,
            bias=bool(rng.random() < 0.8),
        ),
    ]
    if rng.random() < 0.3:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(SMOOTH_ACTIVATIONS[int(rng.integers(len(SMOOTH_ACTIVATIONS)))]())
    pk = int(rng.integers(1, 4))
    ps = int(rng.integers(1, 3))
    pp = int(rng.integers(0, pk // 2 + 1))  # PyTorch: padding at most half the kernel
    if conv_out(oh, pk, ps, pp) >= 1 and conv_out(ow, pk, ps, pp) >= 1:
        pool = nn.MaxPool2d if rng.random() < 0.5 else nn.AvgPool2d
        layers.append(pool(pk, stride=ps, padding=pp))
        oh, ow = conv_out(oh, pk, ps, pp), conv_out(ow, pk, ps, pp)
    layers += [nn.Flatten(), nn.Linear(cout * oh * ow, int(rng.integers(1, 4)))]
    return nn.Sequential(*layers), (int(rng.integers(1, 3)), cin, h, w)


def random_model(rng: np.random.Generator) -> tuple[engine.nn.Module, tuple[int, ...]]:
    while True:
        made = random_mlp(rng) if rng.random() < 0.4 else random_cnn(rng)
        if made is not None:
            model, shape = made
            return model.to(engine.float64), shape


def nudge(t: engine.Tensor, k: tuple[int, ...], by: float) -> None:
    delta = np.zeros(t.shape)
    delta[k] = by
    with engine.no_grad():
        t.add_(t64(delta))


@pytest.mark.parametrize("seed", SEEDS)
def test_random_models_gradients_match_finite_differences(seed: int) -> None:
    rng = rng_for(seed, "nn-grad")
    h = 1e-6
    for case in range(15):
        model, in_shape = random_model(rng)
        x = t64(rng.standard_normal(in_shape), requires_grad=True)
        weight = None

        def loss(model: engine.nn.Module = model, x: engine.Tensor = x) -> engine.Tensor:
            nonlocal weight
            out = model(x)
            if weight is None:
                weight = t64(rng.standard_normal(out.shape))
            return (out * weight).sum()

        loss().backward()
        what = f"seed {seed} case {case}: {model} on {in_shape}"
        checked = [("input", x), *model.named_parameters()]
        for name, p in checked:
            assert p.grad is not None and p.grad.shape == p.shape, f"{what}: {name}"
            grad = p.grad.numpy()
            flat = [tuple(int(i) for i in np.unravel_index(j, p.shape)) for j in range(p.numel())]
            picks = rng.choice(len(flat), size=min(3, len(flat)), replace=False)
            for j in picks:
                k = flat[int(j)]
                with engine.no_grad():
                    nudge(p, k, h)
                    up = loss().item()
                    nudge(p, k, -2 * h)
                    down = loss().item()
                    nudge(p, k, h)
                fd = (up - down) / (2 * h)
                assert abs(grad[k] - fd) <= 1e-5 * abs(fd) + 1e-6, (
                    f"{what}: d/d{name}{list(k)} autograd {grad[k]} finite difference {fd}"
                )


@pytest.mark.parametrize("seed", SEEDS)
def test_random_models_state_dict_round_trip(seed: int, tmp_path: Any) -> None:
    rng = rng_for(seed, "nn-state")
    for case in range(6):
        state = rng.bit_generator.state
        engine.manual_seed(seed * 100 + case)
        model, in_shape = random_model(rng)
        rng.bit_generator.state = state
        engine.manual_seed(seed * 100 + case + 50)
        other, _ = random_model(rng)  # the same architecture, other weights
        x = t64(rng.standard_normal(in_shape))
        if rng.random() < 0.5:
            model.eval()
            other.eval()
        with engine.no_grad():
            model(x)  # batch-norm running statistics move away from their initial values
        sd = model.state_dict()
        what = f"seed {seed} case {case}: {model}"
        assert list(sd) == list(other.state_dict()), what
        result = other.load_state_dict(sd)
        assert list(result.missing_keys) == [] and list(result.unexpected_keys) == [], what
        for key, value in other.state_dict().items():
            np.testing.assert_array_equal(value.numpy(), sd[key].numpy(), err_msg=f"{what} {key}")
        model.eval()
        other.eval()
        with engine.no_grad():
            np.testing.assert_array_equal(model(x).numpy(), other(x).numpy(), err_msg=what)
        # through a checkpoint file too
        path = tmp_path / f"model{case}.safetensors"
        save_checkpoint(Checkpoint(model_state_dict=sd, step=case), path)
        back = load_checkpoint(path)
        assert back.step == case and list(back.model_state_dict) == list(sd), what
        for key, value in back.model_state_dict.items():
            assert value.dtype == sd[key].dtype, f"{what} {key}"
            np.testing.assert_array_equal(value.numpy(), sd[key].numpy(), err_msg=f"{what} {key}")


# ---- DataLoader -------------------------------------------------------------------------------
class Items(Dataset):
    """Item i is a dict of an int, an array and a tuple, so collate recurses."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n = n
        self.fail_at = fail_at

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i == self.fail_at:
            raise ValueError(f"item {i} is broken")
        return {"i": i, "x": np.full(2, float(i)), "pair": (engine.tensor(i), i * 0.5)}


def batches(loader: DataLoader) -> list[list[int]]:
    out = []
    for b in loader:
        ids = b["i"].tolist()
        assert b["x"].numpy().tolist() == [[float(i)] * 2 for i in ids]
        assert b["pair"][0].tolist() == ids and b["pair"][1].tolist() == [i * 0.5 for i in ids]
        out.append(ids)
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_dataloader_batches_cover_every_index(seed: int) -> None:
    rng = rng_for(seed, "loader")
    for case in range(4):
        n = int(rng.integers(1, 40))
        bs = int(rng.integers(1, 9))
        drop_last = bool(rng.random() < 0.5)
        shuffle = bool(rng.random() < 0.6)
        gseed = int(rng.integers(0, 2**31))
        what = f"seed {seed} case {case}: n {n} batch {bs} drop_last {drop_last} shuffle {shuffle}"

        def make(
            workers: int,
            n: int = n,
            bs: int = bs,
            dl: bool = drop_last,
            sh: bool = shuffle,
            gseed: int = gseed,
        ) -> DataLoader:
            return DataLoader(
                Items(n),
                batch_size=bs,
                shuffle=sh,
                drop_last=dl,
                num_workers=workers,
                generator=engine.Generator().manual_seed(gseed),
            )

        loader = make(0)
        got = batches(loader)
        full, rest = divmod(n, bs)
        n_batches = full if drop_last or not rest else full + 1
        assert len(loader) == n_batches == len(got), what
        sizes = [len(b) for b in got]
        assert sizes == [bs] * full + ([] if drop_last or not rest else [rest]), what
        seen = sorted(i for b in got for i in b)
        if drop_last:
            assert len(set(seen)) == len(seen) == full * bs, what
            assert set(seen) <= set(range(n)), what
        else:
            assert seen == list(range(n)), what
        if not shuffle:
            assert [i for b in got for i in b] == list(range(full * bs if drop_last else n)), what
        # a second epoch of a shuffled loader draws another order of the same indices
        again = batches(loader)
        assert sorted(i for b in again for i in b) == seen or (shuffle and drop_last), what
        # two worker processes give the same batches in the same order
        assert batches(make(2)) == got, what
    assert multiprocessing.active_children() == []


def children_gone(timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        gc.collect()
        if not multiprocessing.active_children():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("seed", SEEDS[:8])
def test_dataloader_worker_error_surfaces_in_the_main_process(seed: int) -> None:
    rng = rng_for(seed, "loader-fault")
    n = int(rng.integers(4, 40))
    bs = int(rng.integers(1, 5))
    fail_at = int(rng.integers(0, n))
    workers = [0, 2][seed % 2]
    loader = DataLoader(Items(n, fail_at=fail_at), batch_size=bs, num_workers=workers)
    seen: list[int] = []

    def consume() -> None:
        for b in loader:
            seen.extend(b["i"].tolist())

    with pytest.raises(ValueError, match=f"item {fail_at} is broken") as info:
        consume()
    if workers:
        assert "DataLoader worker process" in str(info.value)
    # every batch before the broken one arrived, in order
    assert seen == list(range(fail_at // bs * bs)), f"seed {seed}: n {n} bs {bs} at {fail_at}"
    del info
    assert children_gone(), f"seed {seed}: workers left behind {multiprocessing.active_children()}"
    assert multiprocessing.active_children() == []


# ---- fault injection: corrupt checkpoints ----------------------------------------------------
def saved_checkpoint(path: Any, rng: np.random.Generator) -> bytes:
    model = engine.nn.Sequential(engine.nn.Linear(3, 4), engine.nn.ReLU(), engine.nn.Linear(4, 2))
    opt = engine.optim.Adam(model.parameters(), lr=1e-3)
    model(engine.randn(5, 3)).sum().backward()
    opt.step()
    state = {"bf16": engine.randn(3).bfloat16(), "flag": engine.tensor([True, False])}
    save_checkpoint(
        Checkpoint(
            model_state_dict={**model.state_dict(), **state},
            optimizer_state_dict=opt.state_dict(),
            rng_state=engine.get_rng_state(),
            epoch=int(rng.integers(0, 9)),
            loss=float(rng.random()),
            metadata={"name": "fuzz", "nested": {"xs": [1, 2.5, None]}},
        ),
        path,
    )
    with open(path, "rb") as f:
        return f.read()


def load_or_checkpoint_error(path: Any, what: str) -> bool:
    """True if it loaded, False if CheckpointError; any other exception fails the test."""
    try:
        load_checkpoint(path)
    except CheckpointError:
        return False
    except Exception as e:
        raise AssertionError(f"{what}: {type(e).__name__}: {e}") from e
    return True


@pytest.mark.parametrize("seed", SEEDS)
def test_truncated_or_corrupt_checkpoints_raise_checkpoint_error(seed: int, tmp_path: Any) -> None:
    rng = rng_for(seed, "corrupt")
    good = saved_checkpoint(tmp_path / "good.safetensors", rng)
    header_len = int.from_bytes(good[:8], "little")
    bad = tmp_path / "bad.safetensors"
    for case in range(200):
        kind = rng.choice(["truncate", "flip", "overwrite", "header", "extend"])
        # half the offsets in the header, where corruption is most often detectable
        if rng.random() < 0.5:
            at = int(rng.integers(0, 8 + header_len))
        else:
            at = int(rng.integers(0, len(good)))
        data = bytearray(good)
        if kind == "truncate":
            data = data[:at]
        elif kind == "flip":
            data[at] ^= 1 << int(rng.integers(0, 8))
        elif kind == "overwrite":
            n = int(rng.integers(1, 16))
            data[at : at + n] = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
        elif kind == "header":  # a printable byte in the JSON: more often still JSON
            at = int(rng.integers(8, 8 + header_len))
            data[at] = int(rng.choice(list(b'0123456789[]{}",:-. truenullfalsxyz')))
        else:
            data += rng.integers(0, 256, size=int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        bad.write_bytes(bytes(data))
        what = f"seed {seed} case {case}: {kind} at {at}"
        loaded = load_or_checkpoint_error(bad, what)
        if kind in {"truncate", "extend"}:
            assert not loaded, f"{what}: a file of the wrong length loaded"


def random_json(rng: np.random.Generator, depth: int = 0) -> Any:
    kind = int(rng.integers(0, 8 if depth < 2 else 5))
    if kind == 0:
        return None
    if kind == 1:
        return bool(rng.random() < 0.5)
    if kind == 2:
        return int(rng.integers(-3, 10))
    if kind == 3:
        return float(rng.choice([0.5, -1.0, 1e300]))
    if kind == 4:
        return str(rng.choice(["", "0.weight", "__tensor__", "__tuple__", "__dict__", "x"]))
    if kind == 5:
        return [random_json(rng, depth + 1) for _ in range(int(rng.integers(0, 3)))]
    keys = ["__tensor__", "__tuple__", "__dict__", "a", "0.weight"]
    return {
        str(rng.choice(keys)): random_json(rng, depth + 1) for _ in range(int(rng.integers(0, 3)))
    }


def mutate_json(rng: np.random.Generator, doc: Any) -> Any:
    """doc with one random node (possibly the root) replaced by random JSON."""
    nodes: list[tuple[Any, Any]] = [(None, None)]
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict | list):
            for k, v in node.items() if isinstance(node, dict) else enumerate(node):
                nodes.append((node, k))
                stack.append(v)
    parent, key = nodes[int(rng.integers(len(nodes)))]
    if parent is None:
        return random_json(rng)
    parent[key] = random_json(rng)
    return doc


@pytest.mark.parametrize("seed", SEEDS)
def test_checkpoints_with_mutated_headers_raise_checkpoint_error(seed: int, tmp_path: Any) -> None:
    """Valid JSON with the wrong structure, in the safetensors header or the checkpoint's
    own metadata document: loads or raises CheckpointError, never anything else."""
    rng = rng_for(seed, "mutate")
    good = saved_checkpoint(tmp_path / "good.safetensors", rng)
    n = int.from_bytes(good[:8], "little")
    header = json.loads(good[8 : 8 + n])
    bad = tmp_path / "bad.safetensors"
    for case in range(200):
        h = json.loads(json.dumps(header))
        if rng.random() < 0.6:
            doc = json.loads(h["__metadata__"]["descent.checkpoint"])
            h["__metadata__"]["descent.checkpoint"] = json.dumps(mutate_json(rng, doc))
        else:
            h = mutate_json(rng, h)
        text = json.dumps(h).encode()
        text += b" " * (-len(text) % 8)
        bad.write_bytes(len(text).to_bytes(8, "little") + text + good[8 + n :])
        load_or_checkpoint_error(bad, f"seed {seed} case {case}: header {text[:300]!r}")
