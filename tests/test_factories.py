"""Tensor creation: tensor()/as_tensor/from_numpy inference and sharing, and the factories.

Expected dtypes and values were taken from PyTorch 2.13 (CPU) once and written down here.
"""

from __future__ import annotations

import numpy as np
import pytest
from agree import assert_agree

import engine

# ---- tensor(): dtype inference like PyTorch -------------------------------------------------


@pytest.mark.parametrize(
    ("data", "dtype"),
    [
        ([1.5, 2.0], engine.float32),
        (2.5, engine.float32),
        ([1, 2, 3], engine.int64),
        (7, engine.int64),
        ([True, False], engine.bool),
        (True, engine.bool),
        ([1, 2.5], engine.float32),
        ([True, 2], engine.int64),
        ([[1, 2], [3, 4]], engine.int64),
        ([[1.0], [2.0]], engine.float32),
        ([], engine.float32),
        (np.array([1.0, 2.0]), engine.float64),
        (np.array([1.0], dtype=np.float32), engine.float32),
        (np.array([1.0], dtype=np.float16), engine.float16),
        (np.array([1, 2], dtype=np.int32), engine.int32),
        (np.array([1, 2], dtype=np.int64), engine.int64),
        (np.array([True]), engine.bool),
        (np.float64(1.0), engine.float64),
        (np.float32(1.0), engine.float32),
    ],
)
def test_tensor_infers_dtype_as_pytorch(data: object, dtype: engine.dtype) -> None:
    assert engine.tensor(data).dtype is dtype


def test_tensor_shapes_of_nested_lists_and_scalars() -> None:
    assert engine.tensor([[1, 2, 3], [4, 5, 6]]).shape == (2, 3)
    assert engine.tensor([[[1.0]], [[2.0]]]).shape == (2, 1, 1)
    zero_d = engine.tensor(3.0)
    assert zero_d.shape == ()
    assert zero_d.ndim == 0
    assert zero_d.item() == 3.0
    assert engine.tensor([]).shape == (0,)
    assert engine.tensor([[1, 2], [3, 4]]).tolist() == [[1, 2], [3, 4]]


def test_tensor_with_dtype_casts_values() -> None:
    t = engine.tensor([1.7, -2.2], dtype=engine.int64)
    assert t.dtype is engine.int64
    assert t.tolist() == [1, -2]
    assert engine.tensor([1, 2], dtype=engine.float16).dtype is engine.float16
    assert engine.tensor([1, 2], dtype=float).dtype is engine.float32
    assert engine.tensor(np.zeros(2, dtype=np.uint8), dtype=engine.float32).dtype is engine.float32


def test_tensor_copies_its_source() -> None:
    src = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    t = engine.tensor(src)
    src[0] = 100.0
    assert t.tolist() == [1.0, 2.0, 3.0]
    lst = [1.0, 2.0]
    t2 = engine.tensor(lst)
    lst[0] = 5.0
    assert t2.tolist() == [1.0, 2.0]


def test_tensor_of_a_tensor_copies_and_detaches() -> None:
    a = engine.tensor([1.0, 2.0], requires_grad=True)
    b = engine.tensor(a)
    assert not b.requires_grad
    assert b.is_leaf
    with engine.no_grad():
        a.fill_(9.0)
    assert b.tolist() == [1.0, 2.0]
    c = engine.tensor(a, dtype=engine.float64, requires_grad=True)
    assert c.dtype is engine.float64
    assert c.requires_grad
    assert c.is_leaf


def test_as_tensor_shares_memory_with_a_matching_ndarray() -> None:
    src = np.array([1.0, 2.0], dtype=np.float32)
    t = engine.as_tensor(src)
    assert t.dtype is engine.float32
    src[0] = 9.0
    assert t.tolist() == [9.0, 2.0]


def test_as_tensor_copies_when_the_dtype_changes() -> None:
    src = np.array([1.0, 2.0], dtype=np.float64)
    t = engine.as_tensor(src, dtype=engine.float32)
    assert t.dtype is engine.float32
    src[0] = 9.0
    assert t.tolist() == [1.0, 2.0]


def test_as_tensor_of_python_data_infers_like_tensor() -> None:
    assert engine.as_tensor([1, 2]).dtype is engine.int64
    assert engine.as_tensor([1.0, 2]).dtype is engine.float32


def test_as_tensor_of_a_tensor_returns_it_when_nothing_changes() -> None:
    t = engine.tensor([1.0, 2.0])
    assert engine.as_tensor(t) is t
    assert engine.as_tensor(t, dtype=engine.float64).dtype is engine.float64


def test_from_numpy_shares_memory_both_ways_and_keeps_dtype() -> None:
    src = np.array([1, 2, 3], dtype=np.int32)
    t = engine.from_numpy(src)
    assert t.dtype is engine.int32
    assert t.device == engine.device("cpu")
    src[0] = 10
    assert t.tolist() == [10, 2, 3]
    t[1] = 20
    assert src.tolist() == [10, 20, 3]


def test_from_numpy_keeps_float64() -> None:
    assert engine.from_numpy(np.zeros((2, 2))).dtype is engine.float64


def test_from_numpy_refuses_non_arrays() -> None:
    with pytest.raises(TypeError, match="ndarray"):
        engine.from_numpy([1.0, 2.0])  # type: ignore[arg-type]


@pytest.mark.parametrize("np_dtype", [np.uint8, np.int16, np.uint64, np.complex64, np.complex128])
@pytest.mark.parametrize("make", [engine.tensor, engine.as_tensor, engine.from_numpy])
def test_unsupported_numpy_dtypes_raise_type_error_naming_the_dtype(
    np_dtype: type, make: object
) -> None:
    arr = np.zeros(3, dtype=np_dtype)
    with pytest.raises(TypeError, match=np.dtype(np_dtype).name):
        make(arr)  # type: ignore[operator]


def test_complex_python_data_raises_type_error() -> None:
    with pytest.raises(TypeError, match="complex"):
        engine.tensor([1 + 2j])


@pytest.mark.parametrize("data", [[[1, 2], [3]], [[1.0], [2.0, 3.0]], [1, [2, 3]]])
def test_ragged_lists_raise_value_error(data: object) -> None:
    with pytest.raises(ValueError):
        engine.tensor(data)


def test_tensor_requires_grad_and_device() -> None:
    t = engine.tensor([1.0, 2.0], requires_grad=True, device="cpu")
    assert t.requires_grad
    assert t.is_leaf
    assert t.device == engine.device("cpu")
    with pytest.raises(RuntimeError, match="floating"):
        engine.tensor([1, 2], requires_grad=True)


# ---- zeros / ones / empty / full -------------------------------------------------------------


@pytest.mark.parametrize("factory", [engine.zeros, engine.ones, engine.empty])
def test_size_as_varargs_tuple_or_list(factory: object) -> None:
    for args in [(2, 3), ((2, 3),), ([2, 3],)]:
        t = factory(*args)  # type: ignore[operator]
        assert t.shape == (2, 3)
        assert t.dtype is engine.float32
    assert factory(()).shape == ()  # type: ignore[operator]
    assert factory(0).shape == (0,)  # type: ignore[operator]
    assert factory(4).shape == (4,)  # type: ignore[operator]


def test_zeros_and_ones_values_and_dtype() -> None:
    assert engine.zeros(2, 2).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert engine.ones(3, dtype=engine.int64).tolist() == [1, 1, 1]
    assert engine.ones(3, dtype=engine.int64).dtype is engine.int64
    assert engine.zeros(2, dtype=engine.bool).tolist() == [False, False]
    assert engine.ones(2, dtype=engine.bfloat16).dtype is engine.bfloat16


def test_negative_size_raises() -> None:
    with pytest.raises(ValueError, match="negative"):
        engine.zeros(2, -1)


@pytest.mark.parametrize(
    ("value", "dtype"),
    [(3, engine.int64), (True, engine.bool), (1.5, engine.float32), (2.0, engine.float32)],
)
def test_full_infers_dtype_from_the_fill_value(value: object, dtype: engine.dtype) -> None:
    t = engine.full((2, 3), value)
    assert t.dtype is dtype
    assert t.shape == (2, 3)
    assert t.tolist() == [[value] * 3] * 2


def test_full_size_forms_and_explicit_dtype() -> None:
    assert engine.full([2, 2], 7).shape == (2, 2)
    assert engine.full(3, 7).shape == (3,)
    t = engine.full((2,), 3, dtype=engine.float16)
    assert t.dtype is engine.float16
    assert t.tolist() == [3.0, 3.0]


def test_like_factories_keep_shape_and_dtype() -> None:
    x = engine.zeros(2, 3, dtype=engine.int32)
    for like in (engine.zeros_like, engine.ones_like, engine.empty_like):
        y = like(x)
        assert y.shape == (2, 3)
        assert y.dtype is engine.int32
    assert engine.zeros_like(x).tolist() == [[0] * 3] * 2
    assert engine.ones_like(x).tolist() == [[1] * 3] * 2
    f = engine.full_like(x, 2.7)  # PyTorch: the like-tensor's dtype wins, the value is cast
    assert f.dtype is engine.int32
    assert f.tolist() == [[2, 2, 2], [2, 2, 2]]


def test_like_factories_accept_dtype_and_requires_grad() -> None:
    x = engine.zeros(2, 3, dtype=engine.int32)
    assert engine.ones_like(x, dtype=engine.float16).dtype is engine.float16
    assert engine.zeros_like(x, dtype=engine.float64).dtype is engine.float64
    assert engine.full_like(x, 0.5, dtype=engine.float32).tolist() == [[0.5] * 3] * 2
    y = engine.zeros_like(x, dtype=engine.float32, requires_grad=True)
    assert y.requires_grad
    assert y.is_leaf
    src = engine.ones(2, requires_grad=True)
    assert not engine.zeros_like(src).requires_grad  # like PyTorch: not inherited


# ---- arange / linspace / eye -----------------------------------------------------------------

# torch.arange(0, 1, 0.1).tolist()
ARANGE_0_1_01 = [
    0.0,
    0.10000000149011612,
    0.20000000298023224,
    0.30000001192092896,
    0.4000000059604645,
    0.5,
    0.6000000238418579,
    0.699999988079071,
    0.800000011920929,
    0.8999999761581421,
]


def test_arange_integer_forms() -> None:
    assert engine.arange(5).tolist() == [0, 1, 2, 3, 4]
    assert engine.arange(5).dtype is engine.int64
    assert engine.arange(2, 6).tolist() == [2, 3, 4, 5]
    assert engine.arange(1, 10, 3).tolist() == [1, 4, 7]
    assert engine.arange(5, 0, -2).tolist() == [5, 3, 1]
    assert engine.arange(0).tolist() == []
    assert engine.arange(3, 1).tolist() == []


def test_arange_float_forms_equal_pytorch() -> None:
    t = engine.arange(0, 1, 0.1)
    assert t.dtype is engine.float32
    assert t.tolist() == ARANGE_0_1_01
    assert engine.arange(5.0).dtype is engine.float32
    assert engine.arange(0, 5, 1.0).dtype is engine.float32
    assert engine.arange(5, 0, -1.5).tolist() == [5.0, 3.5, 2.0, 0.5]
    assert engine.arange(1, 2.5, 0.5).tolist() == [1.0, 1.5, 2.0]
    assert engine.arange(-1, 1, 0.3).tolist() == [
        -1.0,
        -0.699999988079071,
        -0.4000000059604645,
        -0.10000000149011612,
        0.20000000298023224,
        0.5,
        0.800000011920929,
    ]
    assert engine.arange(0, 1, 0.1, dtype=engine.float64).tolist() == [
        0.0,
        0.1,
        0.2,
        0.30000000000000004,
        0.4,
        0.5,
        0.6000000000000001,
        0.7000000000000001,
        0.8,
        0.9,
    ]


def test_arange_explicit_dtype_and_zero_step() -> None:
    t = engine.arange(4, dtype=engine.float32)
    assert t.dtype is engine.float32
    assert t.tolist() == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="step"):
        engine.arange(0, 5, 0)


def test_linspace() -> None:
    t = engine.linspace(0, 1, 5)
    assert t.dtype is engine.float32
    assert t.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    # torch.linspace(-1, 1, 7)
    expected = [
        -1.0,
        -0.6666666269302368,
        -0.3333333134651184,
        -2.9802322387695312e-08,
        0.3333333134651184,
        0.6666666269302368,
        1.0,
    ]
    assert_agree(engine.linspace(-1, 1, 7).numpy(), np.array(expected, dtype=np.float32))
    assert engine.linspace(0, 10, 5, dtype=engine.int64).tolist() == [0, 2, 5, 7, 10]
    assert engine.linspace(3, 3, 1).tolist() == [3.0]
    assert engine.linspace(0, 1, 0).shape == (0,)
    with pytest.raises(ValueError):
        engine.linspace(0, 1, -1)


def test_eye() -> None:
    assert engine.eye(2).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert engine.eye(2).dtype is engine.float32
    assert engine.eye(2, 3).tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert engine.eye(3, 1).tolist() == [[1.0], [0.0], [0.0]]
    assert engine.eye(2, dtype=engine.int64).tolist() == [[1, 0], [0, 1]]


# ---- requires_grad on factories --------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: engine.zeros(2, **kw),
        lambda **kw: engine.ones(2, **kw),
        lambda **kw: engine.empty(2, **kw),
        lambda **kw: engine.full((2,), 1.5, **kw),
        lambda **kw: engine.arange(3.0, **kw),
        lambda **kw: engine.linspace(0, 1, 3, **kw),
        lambda **kw: engine.eye(2, **kw),
        lambda **kw: engine.rand(2, **kw),
        lambda **kw: engine.randn(2, **kw),
        lambda **kw: engine.tensor([1.0], **kw),
    ],
)
def test_factories_make_leaves_that_require_grad(make: object) -> None:
    t = make(requires_grad=True)  # type: ignore[operator]
    assert t.requires_grad
    assert t.is_leaf
    assert t.grad_fn is None
    assert not make().requires_grad  # type: ignore[operator]


@pytest.mark.parametrize(
    "make",
    [
        lambda: engine.zeros(2, dtype=engine.int64, requires_grad=True),
        lambda: engine.ones(2, dtype=engine.bool, requires_grad=True),
        lambda: engine.full((2,), 3, requires_grad=True),
        lambda: engine.arange(3, requires_grad=True),
        lambda: engine.randint(0, 3, (2,), requires_grad=True),
        lambda: engine.randperm(3, requires_grad=True),
    ],
)
def test_requires_grad_on_an_integer_dtype_raises(make: object) -> None:
    with pytest.raises(RuntimeError, match="floating"):
        make()  # type: ignore[operator]


# ---- the default dtype -----------------------------------------------------------------------


def test_set_default_dtype_changes_factories_and_inference() -> None:
    assert engine.get_default_dtype() is engine.float32
    engine.set_default_dtype(engine.float64)
    try:
        assert engine.get_default_dtype() is engine.float64
        assert engine.tensor([1.5]).dtype is engine.float64
        assert engine.tensor([1, 2.5]).dtype is engine.float64
        assert engine.tensor([1, 2]).dtype is engine.int64
        assert engine.zeros(2).dtype is engine.float64
        assert engine.ones(2).dtype is engine.float64
        assert engine.full((1,), 1.5).dtype is engine.float64
        assert engine.arange(0, 1, 0.5).dtype is engine.float64
        assert engine.linspace(0, 1, 3).dtype is engine.float64
        assert engine.eye(2).dtype is engine.float64
        assert engine.rand(2).dtype is engine.float64
        assert engine.randn(2).dtype is engine.float64
        assert (engine.tensor([1, 2]) / 2).dtype is engine.float64
    finally:
        engine.set_default_dtype(engine.float32)
    assert engine.get_default_dtype() is engine.float32
    assert engine.tensor([1.5]).dtype is engine.float32
    assert engine.zeros(2).dtype is engine.float32


def test_set_default_dtype_refuses_integer_dtypes() -> None:
    with pytest.raises(TypeError):
        engine.set_default_dtype(engine.int64)
    assert engine.get_default_dtype() is engine.float32
