"""The two array backends: CupyOps overrides ArrayOps with the same signatures, CuPy stays
optional, and (on a GPU machine) tensors on cuda hold CuPy arrays and compute as on cpu."""

from __future__ import annotations

import inspect
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import engine
from engine.backends.cupy_ops import CupyOps
from engine.backends.numpy_ops import ArrayOps


def _own_methods(cls: type) -> dict[str, object]:
    return {
        name: value
        for name, value in vars(cls).items()
        if callable(value) and not (name.startswith("__") and name.endswith("__"))
    }


def test_cupy_ops_overrides_only_methods_of_array_ops() -> None:
    extra = sorted(set(_own_methods(CupyOps)) - set(_own_methods(ArrayOps)))
    assert not extra, f"CupyOps defines methods ArrayOps lacks: {extra}"
    assert _own_methods(CupyOps), "CupyOps overrides nothing?"
    assert issubclass(CupyOps, ArrayOps)


@pytest.mark.parametrize("name", sorted(_own_methods(CupyOps)))
def test_each_override_has_the_generic_signature(name: str) -> None:
    ours = inspect.signature(getattr(CupyOps, name))
    generic = inspect.signature(getattr(ArrayOps, name))
    assert ours == generic, f"CupyOps.{name}{ours} != ArrayOps.{name}{generic}"


def test_the_generic_backend_is_numpy() -> None:
    ops = engine.device("cpu").ops
    assert type(ops) is ArrayOps
    assert ops.xp is np
    a = np.arange(3.0)
    host = ops.to_host(a)
    host[0] = 9.0
    assert a[0] == 0.0  # to_host copies
    assert ops.from_host(a) is a
    target = np.zeros(3)
    ops.index_add(target, np.array([0, 0, 2]), np.array([1.0, 2.0, 3.0]))
    assert target.tolist() == [3.0, 0.0, 3.0]
    with pytest.raises(ValueError):
        ops.reshape_view(np.zeros((2, 3)).T, (6,))


def test_importing_engine_does_not_import_cupy() -> None:
    code = "import sys, engine; engine.zeros(2) + 1; sys.exit(int('cupy' in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


def test_engine_works_when_cupy_is_not_installed() -> None:
    # A None entry in sys.modules makes `import cupy` raise ImportError, as if not installed.
    code = """
import sys
from typing import Any
sys.modules["cupy"] = None
import engine
assert engine.cuda.is_available() is False
assert engine.cuda.device_count() == 0
assert (engine.ones(2) * 2).tolist() == [2.0, 2.0]
try:
    engine.ones(2).to("cuda")
except RuntimeError as e:
    assert not isinstance(e, ImportError) and "CUDA is not available" in str(e), e
else:
    raise AssertionError("moving to cuda without CuPy did not raise")
"""
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


# ---- on a GPU machine ------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_tensors_hold_cupy_arrays() -> None:
    import cupy

    assert engine.cuda.is_available()
    assert engine.cuda.device_count() >= 1
    for t in (
        engine.zeros(2, 3, device="cuda"),
        engine.tensor([1.0, 2.0], device="cuda"),
        engine.rand(4, device="cuda"),
        engine.arange(5, device="cuda"),
        engine.ones(3).to("cuda"),
        engine.ones(3).cuda(),
        engine.ones(3, device="cuda") * 2 + 1,
        engine.ones(2, 2, device="cuda").sum(0),
    ):
        assert isinstance(t._data, cupy.ndarray)
        assert t.device.type == "cuda"
        assert t.device.index == 0
        assert t.is_cuda
    assert type(engine.device("cuda:0").ops) is CupyOps


@pytest.mark.gpu
@pytest.mark.parametrize(
    "dtype",
    [engine.float32, engine.float16, engine.bfloat16, engine.float64, engine.int64, engine.bool],
)
def test_round_trip_cpu_cuda_cpu_keeps_values(dtype: engine.dtype) -> None:
    x = engine.tensor([[0.0, 1.5, -2.25], [3.0, 0.0, 7.0]]).to(dtype)
    y = x.to("cuda")
    assert y.dtype is dtype
    back = y.cpu()
    assert back.device == engine.device("cpu")
    assert isinstance(back._data, np.ndarray)
    assert back.dtype is dtype
    assert back.tolist() == x.tolist()
    assert y.tolist() == x.tolist()
    assert engine.tensor([2.5], device="cuda").item() == 2.5


@pytest.mark.gpu
def test_cuda_index_with_a_cpu_index_tensor() -> None:
    y = engine.arange(10.0, device="cuda")
    picked = y[engine.tensor([1, 3])]
    assert picked.device.type == "cuda"
    assert picked.tolist() == [1.0, 3.0]


@pytest.mark.gpu
def test_mixing_devices_raises_a_device_error() -> None:
    with pytest.raises(engine.DeviceError):
        engine.ones(2) + engine.ones(2, device="cuda")


@pytest.mark.gpu
def test_forward_and_backward_on_cuda_match_cpu() -> None:
    engine.manual_seed(0)
    x_cpu = engine.randn(8, 5)
    w_cpu = engine.randn(5, 3, requires_grad=True)
    b_cpu = engine.randn(3, requires_grad=True)
    x = x_cpu.to("cuda")
    w = w_cpu.detach().to("cuda").requires_grad_()
    b = b_cpu.detach().to("cuda").requires_grad_()

    def loss(x: engine.Tensor, w: engine.Tensor, b: engine.Tensor) -> engine.Tensor:
        h = (x @ w + b).tanh()
        return (h.log_softmax(1) * h.sigmoid()).sum() / 8 + (w**2).mean()

    lc = loss(x_cpu, w_cpu, b_cpu)
    lg = loss(x, w, b)
    lc.backward()
    lg.backward()
    assert lg.device.type == "cuda"
    assert w.grad is not None and b.grad is not None
    assert w.grad.device.type == "cuda"
    assert abs(lg.item() - lc.item()) <= 1e-5 * abs(lc.item()) + 1e-6
    np.testing.assert_allclose(w.grad.cpu().numpy(), w_cpu.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.grad.cpu().numpy(), b_cpu.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_gradient_flows_back_across_a_device_move() -> None:
    x = engine.tensor([1.0, 2.0], requires_grad=True)
    y = (x.to("cuda") * 3).sum()
    y.backward()
    assert x.grad is not None
    assert x.grad.device == engine.device("cpu")
    assert x.grad.tolist() == [3.0, 3.0]


@pytest.mark.gpu
def test_cupy_arrays_become_cuda_tensors() -> None:
    import cupy

    a = cupy.arange(6, dtype=cupy.float32).reshape(2, 3)
    shared = engine.as_tensor(a)
    assert shared.device == engine.device("cuda:0") and shared._data is a
    copied = engine.tensor(a, dtype=engine.float64)
    a[0, 0] = 7
    assert copied.dtype is engine.float64 and copied.tolist()[0][0] == 0.0
    assert shared.tolist()[0][0] == 7.0


def test_host_allocator_tuning_applies_here_and_can_be_switched_off(monkeypatch: Any) -> None:
    import platform

    from engine.backends.host_memory import tune_malloc

    # on glibc every mallopt call must be accepted; elsewhere there is nothing to tune
    assert tune_malloc() == (platform.libc_ver()[0] == "glibc")
    monkeypatch.setenv("DESCENT_MALLOC_TUNING", "0")
    assert not tune_malloc()
