"""In-place ops: each returns self, writes into the same storage (views write through to
their base), bumps the version counter and keeps the tensor's dtype, as PyTorch's do."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import engine

T = engine.tensor


def close(t: engine.Tensor, expected: list) -> None:
    np.testing.assert_allclose(np.asarray(t.tolist(), dtype=np.float64), expected, rtol=1e-6)


# Each case: (name, op, start values, expected values).
CASES: list[tuple[str, Callable[[engine.Tensor], engine.Tensor], list, list]] = [
    ("add_", lambda t: t.add_(T([1.0, 2.0, 3.0])), [1.0, 2.0, 3.0], [2.0, 4.0, 6.0]),
    ("add_ alpha", lambda t: t.add_(T([1.0, 2.0, 3.0]), alpha=2), [1.0, 1.0, 1.0], [3, 5, 7]),
    ("add_ scalar", lambda t: t.add_(1.5), [1.0, 2.0, 3.0], [2.5, 3.5, 4.5]),
    ("add_ scalar alpha", lambda t: t.add_(1, alpha=-2), [1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]),
    ("add_ broadcast", lambda t: t.add_(T([10.0])), [1.0, 2.0, 3.0], [11.0, 12.0, 13.0]),
    ("sub_", lambda t: t.sub_(T([1.0, 1.0, 1.0])), [1.0, 2.0, 3.0], [0.0, 1.0, 2.0]),
    ("sub_ alpha", lambda t: t.sub_(T([2.0, 2.0, 2.0]), alpha=0.5), [1.0, 2.0, 3.0], [0, 1, 2]),
    ("mul_", lambda t: t.mul_(T([2.0, 3.0, 4.0])), [1.0, 2.0, 3.0], [2.0, 6.0, 12.0]),
    ("mul_ scalar", lambda t: t.mul_(-0.5), [1.0, 2.0, 3.0], [-0.5, -1.0, -1.5]),
    ("div_", lambda t: t.div_(T([2.0, 4.0, 8.0])), [1.0, 2.0, 3.0], [0.5, 0.5, 0.375]),
    ("div_ scalar", lambda t: t.div_(4), [1.0, 2.0, 3.0], [0.25, 0.5, 0.75]),
    (
        "addcmul_",
        lambda t: t.addcmul_(T([1.0, 2.0, 3.0]), T([2.0, 2.0, 2.0]), value=0.5),
        [1.0, 1.0, 1.0],
        [2.0, 3.0, 4.0],
    ),
    (
        "addcdiv_",
        lambda t: t.addcdiv_(T([1.0, 2.0, 3.0]), T([2.0, 4.0, 2.0]), value=2),
        [1.0, 1.0, 1.0],
        [2.0, 2.0, 4.0],
    ),
    ("copy_", lambda t: t.copy_(T([7.0, 8.0, 9.0])), [1.0, 2.0, 3.0], [7.0, 8.0, 9.0]),
    ("copy_ broadcast", lambda t: t.copy_(T([7.0])), [1.0, 2.0, 3.0], [7.0, 7.0, 7.0]),
    ("copy_ int source", lambda t: t.copy_(T([4, 5, 6])), [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]),
    (
        "copy_ float64 source",
        lambda t: t.copy_(T([0.1, 0.2, 0.3], dtype=engine.float64)),
        [1.0, 2.0, 3.0],
        [0.1, 0.2, 0.3],
    ),
    ("fill_", lambda t: t.fill_(4), [1.0, 2.0, 3.0], [4.0, 4.0, 4.0]),
    ("fill_ 0-d tensor", lambda t: t.fill_(T(2.5)), [1.0, 2.0, 3.0], [2.5, 2.5, 2.5]),
    ("zero_", lambda t: t.zero_(), [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]),
    ("clamp_", lambda t: t.clamp_(0, 1), [-1.0, 0.5, 3.0], [0.0, 0.5, 1.0]),
    ("clamp_ min", lambda t: t.clamp_(min=0.0), [-1.0, 0.5, 3.0], [0.0, 0.5, 3.0]),
    ("clamp_ max", lambda t: t.clamp_(max=1.0), [-1.0, 0.5, 3.0], [-1.0, 0.5, 1.0]),
]


@pytest.mark.parametrize(("name", "op", "start", "expected"), CASES, ids=[c[0] for c in CASES])
def test_in_place_op_returns_self_and_writes_in_place(
    name: str, op: Callable, start: list, expected: list
) -> None:
    t = T(start)
    storage = t._data
    before = t._version
    out = op(t)
    assert out is t
    assert t._data is storage  # the same array, written into
    assert t.dtype == engine.float32
    close(t, expected)
    assert t._version > before


@pytest.mark.parametrize(("name", "op", "start", "expected"), CASES, ids=[c[0] for c in CASES])
def test_in_place_op_on_a_view_writes_through_to_the_base(
    name: str, op: Callable, start: list, expected: list
) -> None:
    base = engine.zeros(2, 3)
    base[1] = T(start)
    version = base._version
    view = base[1]
    out = op(view)
    assert out is view
    close(base[1], expected)
    assert base[0].tolist() == [0.0, 0.0, 0.0]
    assert base._version > version
    assert base._version == view._version


def test_in_place_op_on_a_transposed_view() -> None:
    base = T([[1.0, 2.0], [3.0, 4.0]])
    base.t().mul_(T([1.0, 10.0]))  # scales the columns of t(), the rows of base
    assert base.tolist() == [[1.0, 2.0], [30.0, 40.0]]


def test_in_place_op_through_reshape_view() -> None:
    base = engine.zeros(4)
    base.view(2, 2)[1].fill_(5.0)
    assert base.tolist() == [0.0, 0.0, 5.0, 5.0]


def test_version_counts_each_write() -> None:
    t = engine.zeros(3)
    assert t._version == 0
    t.add_(1)
    t.mul_(2)
    t[0] = 5.0
    t.zero_()
    assert t._version == 4


def test_augmented_assignment_is_in_place() -> None:
    t = T([1.0, 2.0])
    storage = t._data
    alias = t
    t += 1
    t *= 3
    t -= 1
    t /= 2
    assert t is alias
    assert t._data is storage
    assert t.tolist() == [2.5, 4.0]
    assert t._version == 4


@pytest.mark.parametrize(
    "op",
    [lambda t: t.mul_(1.5), lambda t: t.add_(0.5), lambda t: t.div_(2), lambda t: t.add_(T([0.5]))],
    ids=["mul_", "add_", "div_", "add_ tensor"],
)
def test_int_tensor_in_place_with_float_result_raises(op: Callable) -> None:
    # PyTorch: "result type Float can't be cast to the desired output type Long".
    t = T([1, 2, 3])
    with pytest.raises(RuntimeError, match="cast"):
        op(t)
    assert t.tolist() == [1, 2, 3]
    assert t.dtype == engine.int64
    assert t._version == 0


def test_int_tensor_in_place_with_int_result_works() -> None:
    t = T([1, 2, 3])
    t.mul_(2).add_(T([1, 1, 1]))
    assert t.tolist() == [3, 5, 7]
    assert t.dtype == engine.int64


def test_in_place_keeps_the_tensors_dtype() -> None:
    t = T([1.0, 2.0])
    t.add_(T([1.0, 1.0], dtype=engine.float64))
    assert t.dtype == engine.float32
    i = T([1, 2, 3])
    i.copy_(T([1.7, 2.2, -3.6]))  # copy_ casts, truncating toward zero as PyTorch
    assert i.tolist() == [1, 2, -3]
    assert i.dtype == engine.int64
    i.fill_(1.5)
    assert i.tolist() == [1, 1, 1]


def test_bool_tensor_add_raises() -> None:
    b = T([True, False])
    with pytest.raises(RuntimeError):
        b.add_(1)


def test_copy_with_mismatched_shape_raises_shape_error() -> None:
    t = engine.zeros(2, 3)
    with pytest.raises(engine.ShapeError, match=r"copy_.*\(3, 2\).*\(2, 3\)"):
        t.copy_(engine.ones(3, 2))
    assert t.tolist() == [[0.0] * 3] * 2


@pytest.mark.parametrize("name", ["add_", "sub_", "mul_", "div_"])
def test_binary_in_place_with_mismatched_shape_raises_shape_error(name: str) -> None:
    t = engine.zeros(2, 3)
    with pytest.raises(engine.ShapeError, match=name):
        getattr(t, name)(engine.ones(3, 2))


def test_in_place_cannot_grow_the_tensor_by_broadcasting() -> None:
    # The result must keep self's shape: (2,) += (3, 2) is an error, as in PyTorch.
    t = engine.zeros(2)
    with pytest.raises(engine.ShapeError):
        t.add_(engine.ones(3, 2))


def test_writing_into_an_expanded_tensor_raises() -> None:
    t = engine.zeros(3)
    with pytest.raises(RuntimeError, match="clone"):
        t.expand(2, 3).add_(1)
    assert t.tolist() == [0.0, 0.0, 0.0]


def test_fill_with_non_scalar_tensor_raises() -> None:
    with pytest.raises(engine.ShapeError):
        engine.zeros(3).fill_(engine.ones(3))


def test_clamp_without_bounds_raises() -> None:
    with pytest.raises(ValueError):
        engine.zeros(3).clamp_()


# ---- random fills -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["uniform_", "normal_"])
def test_random_fill_returns_self_in_place_and_bumps(name: str) -> None:
    t = engine.zeros(1000)
    storage = t._data
    out = getattr(t, name)()
    assert out is t
    assert t._data is storage
    assert t._version == 1
    assert len(set(t.tolist())) > 900


def test_uniform_respects_bounds() -> None:
    t = engine.empty(10000).uniform_(2.0, 3.0)
    values = np.asarray(t.tolist())
    assert values.min() >= 2.0
    assert values.max() < 3.0
    assert abs(values.mean() - 2.5) < 0.02


def test_normal_has_the_given_mean_and_std() -> None:
    values = np.asarray(engine.empty(20000).normal_(2.0, 3.0).tolist())
    assert abs(values.mean() - 2.0) < 0.1
    assert abs(values.std() - 3.0) < 0.1


@pytest.mark.parametrize("name", ["uniform_", "normal_"])
def test_random_fill_with_generator_is_reproducible(name: str) -> None:
    g = engine.Generator().manual_seed(7)
    first = getattr(engine.empty(5), name)(generator=g).tolist()
    second = getattr(engine.empty(5), name)(generator=g).tolist()
    assert first != second  # the generator advanced
    g.manual_seed(7)
    assert getattr(engine.empty(5), name)(generator=g).tolist() == first
    # A separate generator leaves the global stream alone.
    engine.manual_seed(1)
    expected = engine.rand(3).tolist()
    engine.manual_seed(1)
    getattr(engine.empty(5), name)(generator=engine.Generator().manual_seed(3))
    assert engine.rand(3).tolist() == expected


def test_random_fill_follows_the_global_seed() -> None:
    engine.manual_seed(11)
    a = engine.empty(4).normal_().tolist()
    engine.manual_seed(11)
    assert engine.empty(4).normal_().tolist() == a


def test_random_fill_keeps_dtype() -> None:
    t = engine.zeros(4, dtype=engine.float64).uniform_()
    assert t.dtype == engine.float64
    with pytest.raises(TypeError, match="uniform_"):
        engine.zeros(4, dtype=engine.int64).uniform_()


def test_random_fill_on_a_view_writes_through() -> None:
    base = engine.zeros(2, 50)
    base[1].normal_()
    assert base[0].tolist() == [0.0] * 50
    assert len(set(base[1].tolist())) == 50


# ---- requires_grad_ -----------------------------------------------------------------------
def test_requires_grad_returns_self() -> None:
    t = engine.zeros(2)
    assert t.requires_grad_() is t
    assert t.requires_grad
    assert t.requires_grad_(False) is t
    assert not t.requires_grad


def test_requires_grad_on_int_tensor_raises() -> None:
    with pytest.raises(RuntimeError, match="floating"):
        engine.zeros(2, dtype=engine.int64).requires_grad_()


def test_requires_grad_false_on_non_leaf_raises() -> None:
    y = engine.zeros(2, requires_grad=True) * 2
    with pytest.raises(RuntimeError):
        y.requires_grad_(False)


# ---- __setitem__ --------------------------------------------------------------------------
def test_setitem_int_and_slices() -> None:
    t = engine.zeros(3, 4)
    storage = t._data
    t[0] = 1.0
    t[1, 2] = 5.0
    t[2, 1:3] = 7.0
    t[:, 3] = T([8.0, 9.0, 10.0])
    assert t._data is storage
    assert t.tolist() == [
        [1.0, 1.0, 1.0, 8.0],
        [0.0, 0.0, 5.0, 9.0],
        [0.0, 7.0, 7.0, 10.0],
    ]
    assert t._version == 4


def test_setitem_negative_index_ellipsis_and_none() -> None:
    t = engine.zeros(2, 3)
    t[-1] = 2.0
    t[..., 0] = 3.0
    assert t.tolist() == [[3.0, 0.0, 0.0], [3.0, 2.0, 2.0]]


def test_setitem_bool_mask() -> None:
    t = T([1.0, -2.0, 3.0, -4.0])
    t[t < 0] = 0.0
    assert t.tolist() == [1.0, 0.0, 3.0, 0.0]
    t[T([True, False, True, False])] = T([10.0, 30.0])
    assert t.tolist() == [10.0, 0.0, 30.0, 0.0]


def test_setitem_index_tensor() -> None:
    t = engine.zeros(3, 2)
    t[T([0, 2])] = T([1.0, 2.0])  # value broadcasts over the selected rows
    assert t.tolist() == [[1.0, 2.0], [0.0, 0.0], [1.0, 2.0]]
    t[T([0, 1]), T([1, 0])] = 9.0
    assert t.tolist() == [[1.0, 9.0], [9.0, 0.0], [1.0, 2.0]]


def test_setitem_broadcast_value() -> None:
    t = engine.zeros(2, 3)
    t[...] = T([1.0, 2.0, 3.0])
    assert t.tolist() == [[1.0, 2.0, 3.0]] * 2
    t[:, 1:] = T([[5.0], [6.0]])
    assert t.tolist() == [[1.0, 5.0, 5.0], [1.0, 6.0, 6.0]]


def test_setitem_casts_the_value_to_the_tensors_dtype() -> None:
    t = engine.zeros(2, dtype=engine.int64)
    t[0] = 2.7
    t[1] = T(3.9, dtype=engine.float64)
    assert t.tolist() == [2, 3]
    assert t.dtype == engine.int64


def test_setitem_on_a_view_writes_through() -> None:
    base = engine.zeros(2, 3)
    v = base[1]
    v[0] = 4.0
    assert base.tolist() == [[0.0, 0.0, 0.0], [4.0, 0.0, 0.0]]
    assert base._version == v._version == 1


def test_setitem_shape_mismatch_raises_shape_error() -> None:
    t = engine.zeros(3, 4)
    with pytest.raises(engine.ShapeError, match="setitem"):
        t[0] = engine.ones(3)
    assert t._version == 0


def test_setitem_out_of_range_raises_index_error() -> None:
    with pytest.raises(IndexError, match="setitem"):
        engine.zeros(3)[5] = 1.0
