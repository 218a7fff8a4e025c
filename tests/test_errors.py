"""Errors: the engine's exception types, messages that name the op and both operands, and
never a bare NumPy traceback underneath (docs/API.md, Tensor, "Errors")."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest

import engine

T = engine.tensor


def numpy_in_chain(e: BaseException) -> bool:
    """Whether a NumPy exception shows in e's traceback chain (cause or unsuppressed context)."""
    seen = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if type(cur).__module__.startswith("numpy"):
            return True
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    return False


def raised(fn: Callable[[], object], kind: type[BaseException]) -> BaseException:
    with pytest.raises(kind) as info:
        fn()
    e = info.value
    assert not numpy_in_chain(e), f"a NumPy error shows through: {e!r}"
    assert e.__cause__ is None
    assert e.__context__ is None or e.__suppress_context__
    return e


def shape_text(s: tuple[int, ...]) -> str:
    return re.escape(str(s))


def test_engine_errors_subclass_runtime_error() -> None:
    assert issubclass(engine.ShapeError, RuntimeError)
    assert issubclass(engine.DeviceError, RuntimeError)
    assert not issubclass(engine.ShapeError, engine.DeviceError)


# ---- shape errors -------------------------------------------------------------------------
A, B = (2, 3), (3, 2)

SHAPE_CASES: list[tuple[str, Callable[[], object]]] = [
    ("add", lambda: engine.ones(*A) + engine.ones(*B)),
    ("add", lambda: engine.add(engine.ones(*A), engine.ones(*B))),
    ("sub", lambda: engine.ones(*A) - engine.ones(*B)),
    ("mul", lambda: engine.ones(*A) * engine.ones(*B)),
    ("div", lambda: engine.ones(*A) / engine.ones(*B)),
    ("pow", lambda: engine.ones(*A) ** engine.ones(*B)),
    ("maximum", lambda: engine.maximum(engine.ones(*A), engine.ones(*B))),
    ("minimum", lambda: engine.minimum(engine.ones(*A), engine.ones(*B))),
    ("eq", lambda: engine.ones(*A) == engine.ones(*B)),
    ("lt", lambda: engine.ones(*A) < engine.ones(*B)),
    ("where", lambda: engine.where(engine.ones(*A).bool(), engine.ones(*A), engine.ones(*B))),
    ("masked_fill", lambda: engine.ones(*A).masked_fill(engine.ones(*B).bool(), 0.0)),
    ("matmul", lambda: engine.ones(*A) @ engine.ones(*A)),
]


@pytest.mark.parametrize(
    ("op", "fn"), SHAPE_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(SHAPE_CASES)]
)
def test_binary_shape_mismatch_names_the_op_and_both_shapes(op: str, fn: Callable) -> None:
    e = raised(fn, engine.ShapeError)
    msg = str(e)
    assert msg.startswith(op + ":"), msg
    assert str(A) in msg
    assert str(B) in msg or op == "matmul"


def test_binary_shape_mismatch_with_requires_grad() -> None:
    a = engine.ones(*A, requires_grad=True)
    e = raised(lambda: a * engine.ones(*B), engine.ShapeError)
    assert "mul" in str(e)


def test_matmul_shape_mismatch_names_the_inner_sizes() -> None:
    e = raised(lambda: engine.ones(2, 3) @ engine.ones(4, 5), engine.ShapeError)
    assert re.search(r"matmul.*\(2, 3\).*\(4, 5\)", str(e))
    e = raised(lambda: engine.ones(3) @ engine.ones(4), engine.ShapeError)
    assert re.search(r"matmul.*\(3,\).*\(4,\)", str(e))
    raised(lambda: engine.matmul(engine.ones(()), engine.ones(3)), engine.ShapeError)


def test_cat_and_stack_shape_mismatch() -> None:
    e = raised(lambda: engine.cat([engine.ones(*A), engine.ones(*B)]), engine.ShapeError)
    assert re.search(rf"cat.*{shape_text(A)}.*{shape_text(B)}", str(e))
    e = raised(lambda: engine.stack([engine.ones(*A), engine.ones(*B)]), engine.ShapeError)
    assert re.search(rf"stack.*{shape_text(A)}.*{shape_text(B)}", str(e))
    raised(lambda: engine.cat([engine.ones(()), engine.ones(())]), engine.ShapeError)


@pytest.mark.parametrize(
    ("op", "fn", "shapes"),
    [
        ("reshape", lambda: engine.ones(2, 3).reshape(4, 2), ["(4, 2)", "(2, 3)"]),
        ("reshape", lambda: engine.ones(2, 3).reshape(-1, 4), ["(-1, 4)", "(2, 3)"]),
        ("view", lambda: engine.ones(2, 3).view(5), ["(5,)", "(2, 3)"]),
        ("expand", lambda: engine.ones(2, 3).expand(3, 3), ["(2, 3)", "(3, 3)"]),
        ("expand", lambda: engine.ones(2, 3).expand(3), ["(2, 3)", "(3,)"]),
        (
            "gather",
            lambda: engine.ones(2, 3).gather(1, engine.zeros(3, 3, dtype=engine.int64)),
            ["(3, 3)", "(2, 3)"],
        ),
        ("permute", lambda: engine.ones(2, 3).permute(0, 0), ["(2, 3)"]),
        ("split", lambda: engine.ones(2, 3).split([1, 1], 1), ["3"]),
        (
            "backward",
            lambda: (engine.ones(2, requires_grad=True) * 2).backward(engine.ones(3)),
            ["(3,)", "(2,)"],
        ),
        ("copy_", lambda: engine.zeros(2, 3).copy_(engine.ones(3, 2)), ["(3, 2)", "(2, 3)"]),
        ("add_", lambda: engine.zeros(2, 3).add_(engine.ones(3, 2)), ["(3, 2)", "(2, 3)"]),
        ("setitem", lambda: engine.zeros(2, 3).__setitem__(0, engine.ones(2)), ["(2,)", "(2, 3)"]),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_shape_errors_name_the_op_and_shapes(op: str, fn: Callable, shapes: list[str]) -> None:
    msg = str(raised(fn, engine.ShapeError))
    assert msg.startswith(op + ":"), msg
    for s in shapes:
        assert s in msg, (s, msg)


def test_view_of_non_contiguous_tensor_raises_runtime_error() -> None:
    e = raised(lambda: engine.ones(2, 3).t().view(6), RuntimeError)
    assert "view" in str(e)
    assert "reshape" in str(e)  # says what to use instead


# ---- device errors ------------------------------------------------------------------------
def fake_cuda(t: engine.Tensor) -> engine.Tensor:
    """t, labelled as living on cuda:0 (no CuPy needed until an op would touch its array)."""
    t._device = engine.device("cuda:0")
    return t


DEVICE_CASES: list[tuple[str, Callable[[engine.Tensor, engine.Tensor], object]]] = [
    ("add", lambda a, b: a + b),
    ("sub", lambda a, b: a - b),
    ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b),
    ("pow", lambda a, b: a**b),
    ("matmul", lambda a, b: a @ b),
    ("maximum", engine.maximum),
    ("eq", lambda a, b: a == b),
    ("cat", lambda a, b: engine.cat([a, b])),
    ("stack", lambda a, b: engine.stack([a, b])),
    ("where", lambda a, b: engine.where(a > 0, a, b)),
    ("add_", lambda a, b: a.add_(b)),
    ("mul_", lambda a, b: a.mul_(b)),
]


@pytest.mark.parametrize(("op", "fn"), DEVICE_CASES, ids=[c[0] for c in DEVICE_CASES])
def test_device_mismatch_names_the_op_and_both_devices(op: str, fn: Callable) -> None:
    a, b = engine.zeros(3), fake_cuda(engine.zeros(3))
    msg = str(raised(lambda: fn(a, b), engine.DeviceError))
    assert msg.startswith(op + ":"), msg
    assert "cpu" in msg
    assert "cuda:0" in msg


def test_device_mismatch_either_way_round() -> None:
    a, b = engine.zeros(3), fake_cuda(engine.zeros(3))
    msg = str(raised(lambda: b + a, engine.DeviceError))
    assert msg.index("cuda:0") < msg.index("cpu")


def test_device_mismatch_in_index_ops() -> None:
    a = engine.zeros(3)
    mask = fake_cuda(engine.zeros(3, dtype=engine.bool))
    index = fake_cuda(engine.zeros(3, dtype=engine.int64))
    for fn in (
        lambda: a.masked_fill(mask, 1.0),
        lambda: a.gather(0, index),
        lambda: a[index],
    ):
        msg = str(raised(fn, engine.DeviceError))
        assert "cpu" in msg
        assert "cuda:0" in msg


def test_backward_gradient_on_another_device() -> None:
    y = engine.ones(3, requires_grad=True) * 2
    msg = str(raised(lambda: y.backward(fake_cuda(engine.ones(3))), engine.DeviceError))
    assert msg.startswith("backward:")
    assert "cpu" in msg
    assert "cuda:0" in msg


def test_device_error_is_a_runtime_error() -> None:
    a, b = engine.zeros(3), fake_cuda(engine.zeros(3))
    with pytest.raises(RuntimeError):
        a * b


# ---- dtype errors -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("op", "fn"),
    [
        ("matmul", lambda: engine.ones(2, 2) @ engine.ones(2, 2, dtype=engine.float64)),
        ("matmul", lambda: engine.ones(2, 2, dtype=engine.int64) @ engine.ones(2, 2)),
        ("matmul", lambda: engine.ones(2, 2).bool() @ engine.ones(2, 2).bool()),
        ("sub", lambda: engine.ones(2).bool() - engine.ones(2).bool()),
        ("sub", lambda: engine.ones(2) - engine.ones(2).bool()),
        ("neg", lambda: -engine.ones(2).bool()),
        ("relu", lambda: engine.ones(2).bool().relu()),
        ("abs", lambda: engine.ones(2).bool().abs()),
        ("mean", lambda: engine.ones(2, dtype=engine.int64).mean()),
        ("and", lambda: engine.ones(2) & engine.ones(2)),
        ("invert", lambda: ~engine.ones(2)),
        ("where", lambda: engine.where(engine.ones(2), engine.ones(2), engine.ones(2))),
        ("masked_fill", lambda: engine.ones(2).masked_fill(engine.ones(2), 0.0)),
        ("gather", lambda: engine.ones(2).gather(0, engine.zeros(2))),
        ("add", lambda: engine.ones(2) + "x"),
        ("mul", lambda: engine.ones(2) * [1, 2]),
        ("uniform_", lambda: engine.zeros(2, dtype=engine.int64).uniform_()),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_dtype_errors_raise_type_error_naming_the_op(op: str, fn: Callable) -> None:
    msg = str(raised(fn, TypeError))
    assert msg.startswith(op + ":"), msg


def test_integer_to_negative_integer_power_is_not_a_shape_error() -> None:
    # PyTorch: "Integers to negative integer powers are not allowed."
    for fn in (lambda: T([1, 2]) ** -1, lambda: T([1, 2]) ** T([-1, 1])):
        e = raised(fn, RuntimeError)
        assert not isinstance(e, engine.ShapeError)
        assert str(e).startswith("pow:")
        assert "negative" in str(e)


def test_matmul_dtype_error_names_both_dtypes() -> None:
    msg = str(raised(lambda: engine.ones(2) @ engine.ones(2, dtype=engine.float64), TypeError))
    assert "float32" in msg
    assert "float64" in msg


def test_requires_grad_on_int_tensor() -> None:
    msg = str(raised(lambda: engine.ones(2, dtype=engine.int64).requires_grad_(), RuntimeError))
    assert "requires_grad" in msg


def test_in_place_cast_error_is_not_numpys() -> None:
    msg = str(raised(lambda: T([1, 2]).mul_(1.5), RuntimeError))
    assert msg.startswith("mul_:")
    assert "int64" in msg
    assert "ufunc" not in msg


# ---- dims out of range --------------------------------------------------------------------
X = engine.ones(2, 3)


@pytest.mark.parametrize(
    ("op", "fn"),
    [
        ("sum", lambda: X.sum(2)),
        ("sum", lambda: X.sum(-3)),
        ("sum", lambda: X.sum((0, 2))),
        ("mean", lambda: X.mean(5)),
        ("var", lambda: X.var(2)),
        ("std", lambda: X.std(2)),
        ("prod", lambda: X.prod(2)),
        ("norm", lambda: X.norm(dim=2)),
        ("max", lambda: X.max(2)),
        ("min", lambda: X.min(-3)),
        ("argmax", lambda: X.argmax(3)),
        ("argmin", lambda: X.argmin(3)),
        ("softmax", lambda: X.softmax(2)),
        ("log_softmax", lambda: X.log_softmax(-3)),
        ("cumsum", lambda: X.cumsum(2)),
        ("transpose", lambda: X.transpose(0, 2)),
        ("unsqueeze", lambda: X.unsqueeze(3)),
        ("squeeze", lambda: X.squeeze(2)),
        ("flatten", lambda: X.flatten(0, 2)),
        ("cat", lambda: engine.cat([X, X], 2)),
        ("stack", lambda: engine.stack([X, X], 3)),
        ("size", lambda: X.size(2)),
        ("gather", lambda: X.gather(2, engine.zeros(2, 3, dtype=engine.int64))),
        ("split", lambda: X.split(1, 2)),
        ("chunk", lambda: X.chunk(2, 2)),
        ("permute", lambda: X.permute(0, 2)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_dim_out_of_range_raises_index_error(op: str, fn: Callable) -> None:
    msg = str(raised(fn, IndexError))
    assert msg.startswith(op + ":"), msg
    assert "out of range" in msg


def test_dim_out_of_range_states_the_valid_range() -> None:
    msg = str(raised(lambda: X.sum(2), IndexError))
    assert "[-2, 1]" in msg
    assert "2" in msg


def test_index_out_of_range_raises_index_error() -> None:
    msg = str(raised(lambda: X[5], IndexError))
    assert "5" in msg
    assert "(2, 3)" in msg
    raised(lambda: X[0, 3], IndexError)
    raised(lambda: X[0, 0, 0], IndexError)
    raised(lambda: X[T([0, 7])], IndexError)


def test_gather_index_out_of_range() -> None:
    raised(lambda: X.gather(1, T([[0, 5, 0], [0, 0, 0]])), IndexError)


def test_bad_index_type() -> None:
    raised(lambda: X[T([0.5])], IndexError)
    raised(lambda: X["a"], IndexError)


# ---- conversions --------------------------------------------------------------------------
def test_item_of_many_elements() -> None:
    raised(X.item, RuntimeError)


def test_bool_of_many_elements() -> None:
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(X)


def test_numpy_of_tensor_requiring_grad() -> None:
    t = engine.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="detach"):
        t.numpy()
    np.testing.assert_array_equal(t.detach().numpy(), [1.0, 1.0])


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_of_integers_is_a_type_error(op: str) -> None:
    with pytest.raises(TypeError, match=op):
        getattr(engine.tensor([1, 2, 3]), op)(0)


def test_factory_arguments_are_checked_with_the_ops_name() -> None:
    with pytest.raises(TypeError, match="full"):
        engine.full((2,), "x")
    with pytest.raises(ValueError, match="eye"):
        engine.eye(-1)
