"""Tensor behaviour beyond the numeric op harness: attributes, conversions, devices, dtypes,
type promotion, Python protocols and indexing semantics.

Expected dtypes and values were taken from PyTorch 2.13 (CPU) once and written down here;
where docs/API.md's "Deliberate differences" say otherwise, the test follows API.md.
"""

from __future__ import annotations

import copy
import pickle
import re
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import engine

API_MD = Path(__file__).resolve().parents[1] / "docs" / "API.md"

# ---- attributes ------------------------------------------------------------------------------


def test_attributes_of_a_leaf() -> None:
    x = engine.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    assert x.shape == (2, 3)
    assert x.dtype is engine.float32
    assert x.device == engine.device("cpu")
    assert x.ndim == 2
    assert x.requires_grad
    assert x.grad is None
    assert x.is_leaf
    assert x.grad_fn is None
    assert x.T.shape == (3, 2)
    assert x.T.tolist() == [[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]


def test_attributes_of_an_op_result() -> None:
    x = engine.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    assert y.requires_grad
    assert not y.is_leaf
    assert y.grad_fn is not None
    y.sum().backward()
    assert x.grad is not None
    assert x.grad.tolist() == [2.0, 2.0]
    assert y.grad is None  # non-leaf gradients are not kept
    z = engine.tensor([1.0, 2.0]) * 2
    assert not z.requires_grad
    assert z.is_leaf
    assert z.grad_fn is None


def test_data_is_a_detached_view() -> None:
    x = engine.tensor([1.0, 2.0], requires_grad=True)
    d = x.data
    assert not d.requires_grad
    assert d.is_leaf
    d[0] = 10.0  # allowed: d needs no grad; it shares x's storage
    assert x.tolist() == [10.0, 2.0]


def test_T_of_1d_and_3d() -> None:
    assert engine.arange(3).T.shape == (3,)
    assert engine.zeros(2, 3, 4).T.shape == (4, 3, 2)


def test_size_numel_dim() -> None:
    x = engine.zeros(2, 3, 4)
    assert x.size() == (2, 3, 4)
    assert tuple(x.size()) == (2, 3, 4)
    assert x.size(0) == 2
    assert x.size(-1) == 4
    assert x.numel() == 24
    assert x.dim() == 3
    assert engine.tensor(1.0).numel() == 1
    assert engine.tensor(1.0).dim() == 0
    assert engine.zeros(0, 3).numel() == 0
    with pytest.raises(IndexError):
        x.size(3)


# ---- conversion ------------------------------------------------------------------------------


def test_numpy_always_copies() -> None:
    x = engine.tensor([1.0, 2.0])
    a = x.numpy()
    assert isinstance(a, np.ndarray)
    assert a.dtype == np.float32
    a[0] = 100.0
    assert x.tolist() == [1.0, 2.0]
    src = np.array([1.0, 2.0])
    shared = engine.from_numpy(src)
    b = shared.numpy()  # API.md: always a copy, even of a tensor made by from_numpy
    b[1] = -1.0
    assert src.tolist() == [1.0, 2.0]
    assert shared.tolist() == [1.0, 2.0]


def test_numpy_raises_when_the_tensor_requires_grad() -> None:
    x = engine.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"detach\(\)"):
        x.numpy()
    with pytest.raises(RuntimeError):
        (x * 2).numpy()
    assert x.detach().numpy().tolist() == [1.0, 2.0]


def test_numpy_of_bfloat16_keeps_the_dtype() -> None:
    a = engine.tensor([1.5, 2.0]).bfloat16().numpy()
    assert a.dtype == ml_dtypes.bfloat16


def test_tolist() -> None:
    assert engine.tensor([[1, 2], [3, 4]]).tolist() == [[1, 2], [3, 4]]
    assert engine.tensor(1.5).tolist() == 1.5
    assert engine.tensor([True, False]).tolist() == [True, False]
    assert engine.tensor([1.0], requires_grad=True).tolist() == [1.0]
    assert isinstance(engine.tensor([1, 2]).tolist()[0], int)


def test_item() -> None:
    assert engine.tensor(2.5).item() == 2.5
    assert engine.tensor([[7]]).item() == 7
    assert type(engine.tensor(7).item()) is int
    assert type(engine.tensor(2.5).item()) is float
    assert type(engine.tensor(True).item()) is bool
    assert type(engine.tensor(2.5, dtype=engine.bfloat16).item()) is float
    assert type(engine.tensor(2.5, dtype=engine.float16).item()) is float
    assert engine.tensor([3.0], requires_grad=True).item() == 3.0
    with pytest.raises(RuntimeError, match="2 elements"):
        engine.tensor([1.0, 2.0]).item()


def test_to_returns_self_when_nothing_changes() -> None:
    t = engine.tensor([1.0, 2.0])
    assert t.to(engine.float32) is t
    assert t.to("cpu") is t
    assert t.to(engine.device("cpu")) is t
    assert t.to(t) is t
    assert t.to("cpu", engine.float32) is t
    assert t.to(dtype=engine.float32) is t
    assert t.to(device="cpu") is t
    assert t.cpu() is t
    assert t.to_device("cpu") is t


def test_to_with_copy_returns_a_new_tensor() -> None:
    t = engine.tensor([1.0, 2.0])
    c = t.to(dtype=engine.float32, copy=True)
    assert c is not t
    assert c.dtype is engine.float32
    c.fill_(0.0)
    assert t.tolist() == [1.0, 2.0]
    d = t.to("cpu", copy=True)
    assert d is not t
    d.fill_(0.0)
    assert t.tolist() == [1.0, 2.0]


def test_to_changes_dtype() -> None:
    t = engine.tensor([1.5, -2.5])
    assert t.to(engine.float64).dtype is engine.float64
    assert t.to(engine.int64).tolist() == [1, -2]
    assert t.to("cpu", engine.float16).dtype is engine.float16
    assert t.to(device="cpu", dtype=engine.int32).dtype is engine.int32
    other = engine.tensor([1], dtype=engine.int32)
    assert t.to(other).dtype is engine.int32
    assert t.type_as(other).dtype is engine.int32


def test_to_is_differentiable() -> None:
    x = engine.tensor([1.0, 2.0], requires_grad=True)
    y = x.to(engine.float64)
    assert y.grad_fn is not None
    (y * y).sum().backward()
    assert x.grad is not None
    assert x.grad.dtype is engine.float32
    assert x.grad.tolist() == [2.0, 4.0]


def test_to_refuses_what_is_not_a_device_dtype_or_tensor() -> None:
    with pytest.raises(TypeError):
        engine.tensor([1.0]).to(3.5)
    with pytest.raises(TypeError):
        engine.tensor([1.0]).to(blocking=True)


@pytest.mark.parametrize(
    ("method", "dtype"),
    [
        ("float", engine.float32),
        ("double", engine.float64),
        ("half", engine.float16),
        ("bfloat16", engine.bfloat16),
        ("long", engine.int64),
        ("int", engine.int32),
        ("bool", engine.bool),
    ],
)
def test_cast_methods_give_their_dtype(method: str, dtype: engine.dtype) -> None:
    assert getattr(engine.tensor([1.0, 2.0]), method)().dtype is dtype
    assert getattr(engine.tensor([1, 2]), method)().dtype is dtype


def test_cast_values_as_pytorch() -> None:
    x = engine.tensor([-1.7, 0.0, 2.9])
    assert x.long().tolist() == [-1, 0, 2]  # truncation toward zero
    assert x.int().tolist() == [-1, 0, 2]
    assert x.bool().tolist() == [True, False, True]
    assert engine.tensor([True, False]).float().tolist() == [1.0, 0.0]
    # torch.tensor([1.1, 3.14159, 65519.0]).half()
    assert engine.tensor([1.1, 3.14159, 65519.0]).half().tolist() == [
        1.099609375,
        3.140625,
        65504.0,
    ]


def test_bfloat16_rounding_matches_ml_dtypes_and_pytorch() -> None:
    values = [1.1, 3.14159, 1000.7, 1e-3, -2.718281828, 1.00390625, 1.01171875]
    b = engine.tensor(values).bfloat16()
    assert b.dtype is engine.bfloat16
    expected = np.array(values, dtype=np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)
    assert b.tolist() == expected.tolist()
    # torch.tensor([1.1, 3.14159, 1000.7, 1e-3]).bfloat16().tolist()
    assert b.tolist()[:4] == [1.1015625, 3.140625, 1000.0, 0.00099945068359375]
    # round half to even: 1 + 2**-8 lies halfway between 1 and 1 + 2**-7
    assert b.tolist()[5] == 1.0
    assert b.tolist()[6] == 1.015625


# ---- devices ---------------------------------------------------------------------------------


def test_device_objects() -> None:
    cpu = engine.device("cpu")
    assert cpu.type == "cpu"
    assert cpu.index is None
    assert str(cpu) == "cpu"
    assert repr(cpu) == "device(type='cpu')"
    d = engine.device("cuda:1")
    assert d.type == "cuda"
    assert d.index == 1
    assert str(d) == "cuda:1"
    assert repr(d) == "device(type='cuda', index=1)"
    assert d == engine.device("cuda", 1)
    assert d != engine.device("cuda:0")
    assert d != cpu
    assert engine.device("cuda").index is None
    assert str(engine.device("cuda")) == "cuda"
    assert engine.device(cpu) is cpu
    assert {engine.device("cpu"): 1}[engine.device("cpu")] == 1


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "cpu:1", "cuda:0:1"])
def test_bad_device_strings_raise(spec: str) -> None:
    with pytest.raises(RuntimeError):
        engine.device(spec)


# Without a GPU (CuPy hidden, so this holds on a GPU machine too): a fresh interpreter.
NO_CUDA = """
import sys
sys.modules["cupy"] = None  # `import cupy` now fails as if it were not installed
import engine

assert engine.cuda.is_available() is False
assert engine.cuda.device_count() == 0
moves = {
    "to('cuda')": lambda t: t.to("cuda"),
    "to('cuda:0')": lambda t: t.to("cuda:0"),
    "to(device('cuda:1'))": lambda t: t.to(engine.device("cuda:1")),
    "to('cuda', float64)": lambda t: t.to("cuda", engine.float64),
    "cuda()": lambda t: t.cuda(),
    "cuda(1)": lambda t: t.cuda(1),
    "to_device('cuda')": lambda t: t.to_device("cuda"),
    "zeros(device='cuda')": lambda t: engine.zeros(2, device="cuda"),
    "tensor(device='cuda')": lambda t: engine.tensor([1.0], device="cuda"),
    "rand(device='cuda')": lambda t: engine.rand(2, device="cuda"),
    "cuda.synchronize()": lambda t: engine.cuda.synchronize(),
}
for what, move in moves.items():
    try:
        move(engine.tensor([1.0, 2.0]))
    except ImportError as e:
        raise AssertionError(f"{what}: ImportError {e}") from None
    except RuntimeError as e:
        assert "CUDA is not available" in str(e), (what, str(e))
        if what != "cuda.synchronize()":
            assert "install" in str(e), (what, str(e))
    else:
        raise AssertionError(f"{what} did not raise without CUDA")
"""


def test_without_cuda_moves_raise_a_clear_runtime_error() -> None:
    done = subprocess.run([sys.executable, "-c", NO_CUDA], check=False, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


def test_cuda_availability_agrees_with_device_count() -> None:
    assert engine.cuda.is_available() is (engine.cuda.device_count() > 0)
    if not engine.cuda.is_available():  # CI: no GPU, and the same clear error in-process
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            engine.tensor([1.0]).to("cuda")


# ---- dtypes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("d", "name", "floating", "itemsize"),
    [
        (engine.float32, "float32", True, 4),
        (engine.float16, "float16", True, 2),
        (engine.bfloat16, "bfloat16", True, 2),
        (engine.float64, "float64", True, 8),
        (engine.int64, "int64", False, 8),
        (engine.int32, "int32", False, 4),
        (engine.bool, "bool", False, 1),
    ],
)
def test_dtype_objects(d: engine.dtype, name: str, floating: bool, itemsize: int) -> None:
    assert isinstance(d, engine.dtype)
    assert d.is_floating_point is floating
    assert d.itemsize == itemsize
    assert repr(d) == f"engine.{name}"
    assert engine.zeros(1, dtype=d).dtype is d
    assert engine.zeros(1, dtype=d).element_size() == itemsize
    assert engine.zeros(1, dtype=d).is_floating_point() is floating


def test_dtype_aliases() -> None:
    assert engine.float is engine.float32
    assert engine.double is engine.float64
    assert engine.half is engine.float16
    assert engine.long is engine.int64
    assert engine.int is engine.int32
    assert engine.bool is engine.bool_


# ---- type promotion (PyTorch's rules) --------------------------------------------------------


def _t(values: list, dtype: engine.dtype) -> engine.Tensor:
    return engine.tensor(values, dtype=dtype)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: _t([1], engine.int32) + _t([1], engine.int64), engine.int64),
        (lambda: _t([1], engine.int64) + 1.5, engine.float32),
        (lambda: _t([1], engine.int32) + 1.5, engine.float32),
        (lambda: 1.5 * _t([1], engine.int64), engine.float32),
        (lambda: _t([1], engine.int32) * 2, engine.int32),
        (
            lambda: _t([1.0], engine.float32) + engine.tensor(1.0, dtype=engine.float64),
            engine.float32,
        ),
        (lambda: _t([1], engine.int64) + engine.tensor(1.0, dtype=engine.float64), engine.float64),
        (lambda: _t([1], engine.int32) + engine.tensor(5), engine.int32),
        (lambda: _t([1.0], engine.float16) + engine.tensor(1.0), engine.float16),
        (lambda: engine.tensor(1.0) + engine.tensor(1.0, dtype=engine.float64), engine.float64),
        (lambda: _t([True], engine.bool) + _t([1], engine.int64), engine.int64),
        (lambda: _t([True], engine.bool) + 1, engine.int64),
        (lambda: _t([True], engine.bool) + 1.5, engine.float32),
        (lambda: _t([1.0], engine.float16) + _t([1.0], engine.bfloat16), engine.float32),
        (lambda: _t([1.0], engine.float16) * 2.5, engine.float16),
        (lambda: _t([1.0], engine.float32) + _t([1.0], engine.float64), engine.float64),
        (lambda: _t([1], engine.int64) / _t([2], engine.int64), engine.float32),
        (lambda: _t([1], engine.int32) / 2, engine.float32),
        (lambda: _t([1], engine.int64) < _t([1.0], engine.float32), engine.bool),
        (lambda: _t([1.0], engine.float32) == 1, engine.bool),
        (lambda: _t([1], engine.int64) >= 0.5, engine.bool),
        (lambda: engine.maximum(_t([1], engine.int64), _t([1.5], engine.float32)), engine.float32),
        (lambda: engine.clamp(_t([1, 5], engine.int64), max=2.5), engine.float32),
        (
            lambda: engine.where(engine.tensor([True]), _t([1], engine.int64), 0.5),
            engine.float32,
        ),
    ],
)
def test_type_promotion_as_pytorch(make: object, expected: engine.dtype) -> None:
    assert make().dtype is expected  # type: ignore[operator]


def test_promotion_values() -> None:
    assert (engine.tensor([1, 2]) / engine.tensor([2, 4])).tolist() == [0.5, 0.5]
    assert (engine.tensor([1, 5]) + 0.5).tolist() == [1.5, 5.5]
    assert engine.clamp(engine.tensor([1, 5]), max=2.5).tolist() == [1.0, 2.5]


def test_bool_tensor_plus_bool_scalar_stays_bool() -> None:
    # found by tests/test_fuzz.py: add turned the scalar True into 1 (True * alpha) and gave
    # int64 [2, 1]; PyTorch's bool + bool is bool (a logical or)
    mask = engine.tensor([True, False])
    for out in (mask + True, True + mask, mask.add(True)):
        assert out.dtype is engine.bool_
        assert out.tolist() == [True, True]
    assert (mask + False).tolist() == [True, False]
    assert (mask + 2).dtype is engine.int64


def test_set_default_dtype_changes_promotion_with_float_scalars() -> None:
    engine.set_default_dtype(engine.float64)
    try:
        assert (engine.tensor([1, 2]) + 0.5).dtype is engine.float64
        assert (engine.tensor([1, 2]) / 2).dtype is engine.float64
    finally:
        engine.set_default_dtype(engine.float32)


def test_bfloat16_arithmetic_stays_bfloat16() -> None:
    # torch.tensor([1.1, 2.3, 3.7], dtype=torch.bfloat16) and the results PyTorch gives
    x = engine.tensor([1.1, 2.3, 3.7], dtype=engine.bfloat16)
    y = x * 2.5
    assert y.dtype is engine.bfloat16
    assert y.tolist() == [2.75, 5.75, 9.25]
    s = x + x
    assert s.dtype is engine.bfloat16
    assert s.tolist() == [2.203125, 4.59375, 7.40625]
    total = x.sum()
    assert total.dtype is engine.bfloat16
    assert total.item() == 7.09375
    dot = x @ x
    assert dot.dtype is engine.bfloat16
    assert dot.item() == 20.25
    assert (x - 1).dtype is engine.bfloat16
    assert (x / 2).dtype is engine.bfloat16
    assert (1 / x).dtype is engine.bfloat16
    assert (x**2).dtype is engine.bfloat16
    assert x.mean().dtype is engine.bfloat16
    m = engine.ones(2, 2, dtype=engine.bfloat16)
    assert (m @ m).dtype is engine.bfloat16


# ---- Python protocols ------------------------------------------------------------------------


def test_len_and_iteration() -> None:
    x = engine.arange(6).reshape(2, 3)
    assert len(x) == 2
    rows = list(x)
    assert len(rows) == 2
    assert all(isinstance(r, engine.Tensor) for r in rows)
    assert [r.tolist() for r in rows] == [[0, 1, 2], [3, 4, 5]]
    assert [int(v) for v in engine.tensor([4, 5, 6])] == [4, 5, 6]
    with pytest.raises(TypeError):
        len(engine.tensor(1.0))
    with pytest.raises(TypeError):
        iter(engine.tensor(1.0))


def test_bool_of_one_element_and_error_for_more() -> None:
    assert bool(engine.tensor([1.0])) is True
    assert bool(engine.tensor(0)) is False
    assert bool(engine.tensor([[True]])) is True
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(engine.tensor([1.0, 2.0]))
    with pytest.raises(RuntimeError):
        if engine.tensor([1, 2]) > 0:
            pass


def test_float_and_int_builtins() -> None:
    assert float(engine.tensor([2.5])) == 2.5
    assert int(engine.tensor(3.7)) == 3
    assert int(engine.tensor([-3.7])) == -3
    assert float(engine.tensor(3)) == 3.0
    assert float(engine.tensor([2.0], requires_grad=True)) == 2.0
    with pytest.raises(RuntimeError):
        float(engine.tensor([1.0, 2.0]))


def test_integer_tensors_work_as_python_indices() -> None:
    assert [10, 20, 30][engine.tensor(1)] == 20
    with pytest.raises(TypeError):
        [10, 20][engine.tensor(1.0)]


def test_tensors_hash_by_identity_and_work_as_dict_keys() -> None:
    a = engine.tensor([1.0, 2.0])
    b = engine.tensor([1.0, 2.0])
    d = {a: "a", b: "b"}
    assert d[a] == "a"
    assert d[b] == "b"
    assert hash(a) == hash(a)
    assert a in {a}
    assert len({a, b}) == 2


def test_repr_shows_values_and_autograd_state() -> None:
    r = repr(engine.tensor([1.0, 2.0]))
    assert r.startswith("tensor(")
    assert "1." in r and "2." in r
    assert "requires_grad" not in r
    leaf = repr(engine.tensor([1.5, 2.0], requires_grad=True))
    assert "1.5" in leaf
    assert "requires_grad=True" in leaf
    out = repr(engine.tensor([1.5, 2.0], requires_grad=True) * 2)
    assert "3." in out
    assert "grad_fn=<" in out
    assert "dtype=engine.int32" in repr(engine.tensor([1, 2], dtype=engine.int32))
    assert "dtype" not in repr(engine.tensor([1, 2]))
    assert "dtype=engine.bfloat16" in repr(engine.tensor([1.0]).bfloat16())
    assert "1." in repr(engine.tensor([1.0]).bfloat16())


# ---- indexing semantics ----------------------------------------------------------------------


def test_basic_index_is_a_view() -> None:
    x = engine.zeros(2, 3, requires_grad=True)
    with engine.no_grad():
        x[0].fill_(5.0)
        row = x[1]
        row[2] = 7.0
    assert x.tolist() == [[5.0, 5.0, 5.0], [0.0, 0.0, 7.0]]
    y = engine.arange(6.0).reshape(2, 3)
    col = y[:, 1]
    col.fill_(9.0)
    assert y.tolist() == [[0.0, 9.0, 2.0], [3.0, 9.0, 5.0]]
    element = y[1, 2]
    assert element.shape == ()
    element.fill_(-1.0)  # a 0-d view, as PyTorch's
    assert y[1, 2].item() == -1.0
    y[None, 0, 1:].zero_()
    assert y.tolist() == [[0.0, 0.0, 0.0], [3.0, 9.0, -1.0]]


def test_advanced_index_is_a_copy() -> None:
    y = engine.arange(6.0).reshape(2, 3)
    picked = y[engine.tensor([1])]
    assert picked.tolist() == [[3.0, 4.0, 5.0]]
    picked.fill_(-1.0)
    masked = y[y > 2]
    assert masked.tolist() == [3.0, 4.0, 5.0]
    masked.fill_(0.0)
    listed = y[[0, 0]]
    listed.fill_(0.0)
    assert y.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_index_tensors_and_their_dtypes() -> None:
    y = engine.arange(10, 20)
    assert y[engine.tensor([0, 9, 9])].tolist() == [10, 19, 19]
    assert y[engine.tensor([0, -1], dtype=engine.int32)].tolist() == [10, 19]
    mask = engine.tensor([True, False] * 5)
    assert y[mask].tolist() == [10, 12, 14, 16, 18]
    with pytest.raises(IndexError, match="long, int or bool"):
        y[engine.tensor([0.0])]


def test_index_errors() -> None:
    y = engine.zeros(2, 3)
    with pytest.raises(IndexError, match=r"\(2, 3\)"):
        y[5]
    with pytest.raises(IndexError):
        y[engine.tensor([7])]


def test_setitem_on_a_tensor_that_requires_grad_needs_no_grad() -> None:
    x = engine.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        x[0] = 1.0
    with engine.no_grad():
        x[0] = 1.0
    assert x.tolist() == [1.0, 0.0, 0.0]


def test_setitem_forms() -> None:
    x = engine.zeros(2, 3)
    x[0] = engine.tensor([1.0, 2.0, 3.0])
    x[1, engine.tensor([0, 2])] = 5.0
    x[x == 2.0] = -2.0
    assert x.tolist() == [[1.0, -2.0, 3.0], [5.0, 0.0, 5.0]]


# ---- shape semantics -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "chunks", "sizes"),
    [(5, 3, [2, 2, 1]), (6, 4, [2, 2, 2]), (7, 4, [2, 2, 2, 1]), (6, 3, [2, 2, 2]), (2, 5, [1, 1])],
)
def test_chunk_sizes_as_pytorch(n: int, chunks: int, sizes: list[int]) -> None:
    parts = engine.arange(n).chunk(chunks)
    assert isinstance(parts, tuple)
    assert [p.shape[0] for p in parts] == sizes
    assert engine.cat(parts).tolist() == list(range(n))


def test_chunk_of_an_empty_dim_gives_chunks_empty_pieces() -> None:
    # torch.zeros(0, 2).chunk(3): three (0, 2) tensors
    parts = engine.zeros(0, 2).chunk(3)
    assert [p.shape for p in parts] == [(0, 2), (0, 2), (0, 2)]


def test_split_sizes_as_pytorch() -> None:
    x = engine.arange(5)
    parts = x.split(2)
    assert isinstance(parts, tuple)
    assert [p.tolist() for p in parts] == [[0, 1], [2, 3], [4]]
    assert [p.shape[0] for p in x.split([1, 4])] == [1, 4]
    y = engine.zeros(2, 3)
    assert [p.shape for p in y.split(2, dim=1)] == [(2, 2), (2, 1)]
    assert [p.shape for p in y.chunk(2, 1)] == [(2, 2), (2, 1)]
    assert [p.shape for p in engine.split(y, 1)] == [(1, 3), (1, 3)]
    with pytest.raises(RuntimeError):
        x.split([1, 1])


def test_chunks_are_views() -> None:
    x = engine.zeros(4)
    a, _b = x.chunk(2)
    a.fill_(1.0)
    assert x.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_view_on_a_non_contiguous_tensor_raises_naming_reshape() -> None:
    x = engine.zeros(2, 3).t()
    with pytest.raises(RuntimeError, match="reshape"):
        x.view(6)
    assert x.reshape(6).shape == (6,)
    assert x.contiguous().view(6).shape == (6,)


def test_view_shares_storage() -> None:
    x = engine.zeros(2, 3)
    v = x.view(6)
    v[0] = 3.0
    assert x[0, 0].item() == 3.0


def test_reshape_with_minus_one() -> None:
    x = engine.arange(12)
    assert x.reshape(3, -1).shape == (3, 4)
    assert x.reshape(-1, 6).shape == (2, 6)
    assert x.reshape(-1).shape == (12,)
    assert x.view(2, -1, 3).shape == (2, 2, 3)
    assert x.reshape((4, -1)).shape == (4, 3)
    with pytest.raises(RuntimeError):
        x.reshape(5, -1)
    with pytest.raises(RuntimeError):
        x.reshape(-1, -1)


def test_squeeze_of_a_non_one_dim_is_a_no_op() -> None:
    x = engine.zeros(2, 1, 3)
    assert x.squeeze(0).shape == (2, 1, 3)
    assert x.squeeze(1).shape == (2, 3)
    assert x.squeeze(-1).shape == (2, 1, 3)
    assert x.squeeze().shape == (2, 3)
    assert engine.zeros(1, 1).squeeze().shape == ()


def test_max_with_dim_returns_values_and_indices() -> None:
    x = engine.tensor([[1.0, 5.0], [3.0, 2.0]])
    out = x.max(1)
    assert isinstance(out, tuple)
    assert out._fields == ("values", "indices")
    assert out.values.tolist() == [5.0, 3.0]
    assert out.indices.tolist() == [1, 0]
    assert out.indices.dtype is engine.int64
    values, indices = x.min(dim=0)
    assert values.tolist() == [1.0, 2.0]
    assert indices.tolist() == [0, 1]
    kept = engine.max(x, 0, keepdim=True)
    assert kept.values.shape == (1, 2)
    assert kept[0].tolist() == [[3.0, 5.0]]
    assert x.max().item() == 5.0
    assert engine.max(x, engine.tensor([[2.0, 2.0], [2.0, 2.0]])).tolist() == [
        [2.0, 5.0],
        [3.0, 2.0],
    ]


def test_allclose_and_isclose() -> None:
    a = engine.tensor([1.0, 2.0])
    assert engine.allclose(a, engine.tensor([1.0, 2.0 + 1e-7]))
    assert not engine.allclose(a, engine.tensor([1.0, 2.1]))
    assert engine.allclose(a, engine.tensor([1.0, 2.1]), atol=0.2)
    close = engine.isclose(a, engine.tensor([1.0, 2.1]))
    assert close.dtype is engine.bool
    assert close.tolist() == [True, False]
    nan = engine.tensor([float("nan")])
    assert not engine.allclose(nan, nan)
    assert engine.allclose(nan, nan, equal_nan=True)


def test_top_level_elementwise_functions() -> None:
    x = engine.tensor([-1.0, 0.5, 3.0])
    y = engine.tensor([0.0, 1.0, 2.0])
    assert engine.where(x > 0, x, y).tolist() == [0.0, 0.5, 3.0]
    assert engine.maximum(x, y).tolist() == [0.0, 1.0, 3.0]
    assert engine.minimum(x, y).tolist() == [-1.0, 0.5, 2.0]
    assert engine.clamp(x, 0.0, 1.0).tolist() == [0.0, 0.5, 1.0]
    assert engine.clamp(x, min=0.0).tolist() == [0.0, 0.5, 3.0]


def _api_top_level_functions() -> list[str]:
    text = API_MD.read_text()
    section = text.split("## `engine` (top level)", 1)[1].split("\n## ", 1)[0]
    line = section.split("- Functions:", 1)[1].split("\n- ", 1)[0]
    names = [re.match(r"[A-Za-z_]\w*", code) for code in re.findall(r"`([^`]+)`", line)]
    return [m.group(0) for m in names if m]


def test_every_top_level_function_in_api_md_exists() -> None:
    names = _api_top_level_functions()
    assert {"matmul", "allclose", "no_grad", "save", "load"} <= set(names)
    missing = [n for n in names if not callable(getattr(engine, n, None))]
    assert not missing, f"engine lacks API.md's top-level functions {missing}"


def test_api_md_top_level_names_exist() -> None:
    for name in [
        "Tensor",
        "tensor",
        "from_numpy",
        "as_tensor",
        "zeros",
        "ones",
        "full",
        "empty",
        "zeros_like",
        "ones_like",
        "full_like",
        "arange",
        "linspace",
        "eye",
        "rand",
        "randn",
        "randint",
        "randperm",
        "manual_seed",
        "get_rng_state",
        "set_rng_state",
        "Generator",
        "get_default_dtype",
        "set_default_dtype",
        "device",
        "cuda",
    ]:
        assert hasattr(engine, name), name


def test_save_and_load_round_trip_a_flat_dict(tmp_path: Path) -> None:
    sd = {
        "w": engine.randn(3, 2),
        "b": engine.zeros(2, dtype=engine.float64),
        "h": engine.ones(2, dtype=engine.bfloat16),
        "n": engine.tensor([1, 2, 3]),
        "m": engine.tensor([True, False]),
    }
    path = tmp_path / "sd.safetensors"
    engine.save(sd, path)
    back = engine.load(path)
    assert set(back) == set(sd)
    for k, v in sd.items():
        assert back[k].dtype is v.dtype
        assert back[k].tolist() == v.tolist()
        assert back[k].device == engine.device("cpu")
    with pytest.raises(TypeError):
        engine.save({"x": [1, 2]}, tmp_path / "bad.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(path.read_bytes()[:40])
    with pytest.raises(RuntimeError, match="safetensors"):
        engine.load(corrupt)


@pytest.mark.parametrize("d", list(engine.dtypes.ALL))
def test_dtypes_pickle_to_themselves(d: engine.dtype) -> None:
    assert pickle.loads(pickle.dumps(d)) is d


def test_tensors_pickle_as_data_device_and_requires_grad() -> None:
    x = engine.tensor([[1.5, -2.0]], dtype=engine.bfloat16)
    back = pickle.loads(pickle.dumps(x))
    assert back.dtype is engine.bfloat16 and back.tolist() == x.tolist()
    leaf = engine.ones(2, requires_grad=True)
    y = pickle.loads(pickle.dumps(leaf * 2))
    assert y.requires_grad and y.is_leaf and y.tolist() == [2.0, 2.0]


def test_deepcopy_copies_leaves_with_their_grad_and_refuses_graph_nodes() -> None:
    leaf = engine.ones(2, requires_grad=True)
    leaf.grad = engine.full((2,), 3.0)
    c = copy.deepcopy(leaf)
    assert c.requires_grad and c.grad is not leaf.grad and c.grad.tolist() == [3.0, 3.0]
    with engine.no_grad():
        c.add_(1)
    assert leaf.tolist() == [1.0, 1.0]
    with pytest.raises(RuntimeError, match="leaves"):
        copy.deepcopy(leaf * 2)


def test_repr_looks_like_pytorchs() -> None:
    assert repr(engine.tensor([1.5, 2.0])) == "tensor([1.5000, 2.0000])"
    assert repr(engine.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert repr(engine.tensor([1, 2])) == "tensor([1, 2])"
