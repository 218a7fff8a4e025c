"""The fused CUDA kernels (engine/backends/cuda_kernels.py) against the CPU engine, and a
training step on CUDA that never waits for the GPU except to read its loss. GPU only."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest

import engine
from engine import nn
from engine.nn import functional as F

pytestmark = pytest.mark.gpu


def _pair(a: np.ndarray, grad: bool = True) -> tuple[engine.Tensor, engine.Tensor]:
    cpu = engine.tensor(a, requires_grad=grad)
    return cpu, cpu.detach().to("cuda").requires_grad_(grad)


def _close(gpu: engine.Tensor, cpu: engine.Tensor, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    # detached: numpy() refuses a tensor that requires grad, as PyTorch's does
    np.testing.assert_allclose(
        gpu.detach().cpu().numpy(), cpu.detach().numpy(), rtol=rtol, atol=atol
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_cpu(dtype: Any, reduction: str) -> None:
    rng = np.random.default_rng(0)
    x, xg = _pair(rng.standard_normal((37, 1000)).astype(dtype) * 4)
    t = rng.integers(0, 1000, 37)
    t[[3, 10]] = -100
    tc, tg = engine.tensor(t), engine.tensor(t, device="cuda")
    lc, lg = (
        F.cross_entropy(x, tc, reduction=reduction),
        F.cross_entropy(xg, tg, reduction=reduction),
    )
    _close(lg, lc)
    lc.sum().backward()
    lg.sum().backward()
    _close(xg.grad, x.grad)
    assert float(np.abs(xg.grad.cpu().numpy()[[3, 10]]).max()) == 0.0


def test_cross_entropy_out_of_range_target_gives_nan_on_cuda() -> None:
    x = engine.zeros(2, 3, device="cuda")
    loss = F.cross_entropy(x, engine.tensor([0, 7], device="cuda"), reduction="none")
    assert np.isnan(loss.cpu().numpy()[1]) and loss.cpu().numpy()[0] == pytest.approx(np.log(3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_cpu(dtype: Any, affine: bool) -> None:
    rng = np.random.default_rng(1)
    x, xg = _pair(rng.standard_normal((300, 4, 96)).astype(dtype) + 3)
    w, wg = _pair(rng.standard_normal(96).astype(dtype))
    b, bg = _pair(rng.standard_normal(96).astype(dtype))
    args_c, args_g = ((w, b), (wg, bg)) if affine else ((None, None), (None, None))
    yc, yg = F.layer_norm(x, (96,), *args_c), F.layer_norm(xg, (96,), *args_g)
    # atol 1e-5: the row sums run in another order and y = xhat * w + b is one FMA on
    # the GPU, so a y near 0 (b cancelling xhat * w) can be ~1.3e-6 off in float32
    _close(yg, yc, atol=1e-5)
    gy = rng.standard_normal(yc.shape).astype(dtype)
    (yc * engine.tensor(gy)).sum().backward()
    (yg * engine.tensor(gy, device="cuda")).sum().backward()
    _close(xg.grad, x.grad, atol=1e-5)
    if affine:
        _close(wg.grad, w.grad, rtol=1e-4, atol=1e-4)
        _close(bg.grad, b.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fn", [F.gelu, F.silu])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, engine.bfloat16])
def test_gelu_and_silu_match_cpu(fn: Any, dtype: Any) -> None:
    a = np.random.default_rng(2).standard_normal((64, 129)) * 4
    x = (
        engine.tensor(a).to(dtype)
        if isinstance(dtype, engine.dtype)
        else engine.tensor(a.astype(dtype))
    )
    x.requires_grad_()
    xg = x.detach().to("cuda").requires_grad_()
    yc, yg = fn(x), fn(xg)
    tol = 1e-2 if x.dtype is engine.bfloat16 else 1e-5
    _close(yg.float(), yc.float(), rtol=tol, atol=tol)
    yc.sum().backward()
    yg.sum().backward()
    _close(xg.grad.float(), x.grad.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("act", ["relu", "gelu", "silu", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_linear_and_activation_match_the_cpu_modules(
    act: str, dtype: Any, bias: bool
) -> None:
    import cupyx

    fused = importlib.import_module("engine.nn.functional.linear")
    rng = np.random.default_rng(6)
    # 129 output features: the bias's index % cols crosses block boundaries mid-row
    x, xg = _pair(rng.standard_normal((3, 37, 64)).astype(dtype) * 2)
    w, wg = _pair(rng.standard_normal((129, 64)).astype(dtype) / 8)
    b, bg = _pair(rng.standard_normal(129).astype(dtype)) if bias else (None, None)
    module = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}[act]()
    yc = module(F.linear(x, w, b))
    fused.linear_act(xg, wg, bg, act).sum().backward()  # compiles the kernels first
    for t in (xg, wg, bg):
        if t is not None:
            t.grad = None
    gy = rng.standard_normal(yc.shape).astype(dtype)
    gyg = engine.tensor(gy, device="cuda")
    with cupyx.allow_synchronize(False):
        yg = fused.linear_act(xg, wg, bg, act)
        yg.backward(gyg)
    assert type(yg.grad_fn) is fused.LinearActBackward
    yc.backward(engine.tensor(gy))
    tol = 1e-4 if dtype == np.float32 else 1e-10
    _close(yg, yc, rtol=tol, atol=tol)
    _close(xg.grad, x.grad, rtol=tol, atol=tol)
    _close(wg.grad, w.grad, rtol=tol, atol=tol * 10)  # sums over 111 rows
    if bias:
        _close(bg.grad, b.grad, rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("dtype", [engine.float32, engine.float64, engine.float16])
def test_dropout_on_cuda_is_seeded_scaled_and_drawn_on_device(dtype: engine.dtype) -> None:
    x = engine.ones(1000, 1000, dtype=dtype, device="cuda", requires_grad=True)
    engine.manual_seed(5)
    y = F.dropout(x, 0.3)
    engine.manual_seed(5)
    again = F.dropout(x.detach(), 0.3)
    y_host = y.detach().cpu().float().numpy()
    assert np.array_equal(y_host, again.cpu().float().numpy())
    assert not np.array_equal(y_host, F.dropout(x.detach(), 0.3).cpu().float().numpy())
    kept = y_host != 0
    assert abs(kept.mean() - 0.7) < 0.005
    np.testing.assert_allclose(y_host[kept], 1 / 0.7, rtol=1e-3)
    y.sum().backward()
    assert np.array_equal(x.grad.cpu().float().numpy(), y_host)


@pytest.mark.parametrize("dtype", [engine.float32, engine.float64, engine.bfloat16])
def test_rand_and_randn_on_cuda_are_drawn_on_device(dtype: engine.dtype) -> None:
    import cupy

    engine.manual_seed(3)
    u, z = (
        engine.rand(500_000, dtype=dtype, device="cuda"),
        engine.randn(500_000, dtype=dtype, device="cuda"),
    )
    assert isinstance(u._data, cupy.ndarray) and u.dtype is dtype and z.dtype is dtype
    uh, zh = u.cpu().float().numpy(), z.cpu().float().numpy()
    assert uh.min() >= 0 and uh.max() < 1 and abs(uh.mean() - 0.5) < 0.01
    assert abs(zh.mean()) < 0.01 and abs(zh.std() - 1) < 0.02
    engine.manual_seed(3)
    assert np.array_equal(
        engine.rand(500_000, dtype=dtype, device="cuda").cpu().float().numpy(), uh
    )
    w = engine.empty(1000, device="cuda").uniform_(-2, 3)
    assert float(w.min()) >= -2 and float(w.max()) < 3


def test_index_factories_on_cuda_are_made_on_device_without_waiting() -> None:
    import cupy
    import cupyx

    engine.manual_seed(4)
    engine.randint(0, 3, (8,), device="cuda")  # compiles the kernel outside the check
    with cupyx.allow_synchronize(False):
        made = [
            engine.randint(-5, 7, (400_000,), device="cuda"),
            engine.randint(2**31 - 1, (1000,), dtype=engine.int32, device="cuda"),
            engine.randperm(100_000, device="cuda"),
            engine.arange(3, 1000, 7, device="cuda"),
            engine.arange(0.5, 2.5, 0.25, dtype=engine.float64, device="cuda"),
            engine.linspace(-1, 1, 33, device="cuda"),
        ]
    assert all(isinstance(t._data, cupy.ndarray) for t in made)
    ints, narrow, perm, ar, far, lin = (t.cpu().numpy() for t in made)
    assert ints.dtype == np.int64 and ints.min() == -5 and ints.max() == 6
    assert np.allclose(np.bincount(ints + 5) / ints.size, 1 / 12, atol=0.005)
    assert narrow.dtype == np.int32
    assert np.array_equal(np.sort(perm), np.arange(100_000)) and perm[:10].tolist() != list(
        range(10)
    )
    for gpu, cpu in (
        (ar, engine.arange(3, 1000, 7)),
        (far, engine.arange(0.5, 2.5, 0.25, dtype=engine.float64)),
        (lin, engine.linspace(-1, 1, 33)),
    ):
        assert gpu.dtype == cpu.numpy().dtype and np.array_equal(gpu, cpu.numpy())
    engine.manual_seed(4)
    engine.randint(0, 3, (8,), device="cuda")
    assert np.array_equal(engine.randint(-5, 7, (400_000,), device="cuda").cpu().numpy(), ints)


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: engine.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
        lambda ps: engine.optim.Adam(ps, lr=1e-2, weight_decay=0.1, amsgrad=True),
        lambda ps: engine.optim.Adam(ps, lr=3e-3, betas=(0.4, 0.99), maximize=True),
    ],
)
def test_fused_adam_equals_the_cpu_update_bit_for_bit(make: Any) -> None:
    # the kernel does the CPU's float32 ops in the CPU's order with IEEE rounding each
    rng = np.random.default_rng(4)
    shapes = [(7, 3), (3,), (200, 130), (1,)] + [(5,)] * 140  # more than one launch's table
    cpu = [
        engine.tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True) for s in shapes
    ]
    gpu = [p.detach().to("cuda").requires_grad_() for p in cpu]
    oc, og = make(cpu), make(gpu)
    for _ in range(3):
        for pc, pg in zip(cpu, gpu, strict=True):
            g = rng.standard_normal(pc.shape).astype(np.float32)
            pc.grad, pg.grad = engine.tensor(g), engine.tensor(g, device="cuda")
        oc.step()
        og.step()
    for pc, pg in zip(cpu, gpu, strict=True):
        assert np.array_equal(pg.detach().cpu().numpy(), pc.detach().numpy())
        for k in ("exp_avg", "exp_avg_sq"):
            assert np.array_equal(og.state[pg][k].cpu().numpy(), oc.state[pc][k].numpy())


def test_a_training_step_on_cuda_never_synchronises_but_to_read_the_loss() -> None:
    import cupy
    import cupyx

    engine.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(32, 64),
        nn.LayerNorm(64),
        nn.GELU(),
        nn.Dropout(0.1),
        nn.Linear(64, 64),
        nn.GELU(),  # fused with the Linear before it
        nn.Linear(64, 10),
    ).to("cuda")
    opt = engine.optim.AdamW(model.parameters(), lr=1e-3)
    x = engine.randn(128, 32, device="cuda")
    y = engine.randint(0, 10, (128,)).to("cuda")
    fused = importlib.import_module("engine.nn.functional.linear")
    assert type(model[4:6](model[:4](x)).grad_fn) is fused.LinearActBackward
    made: list[engine.Tensor] = []

    def step() -> engine.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        made.append(nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        opt.step()
        made.extend([loss, *model.parameters(), *(p.grad for p in model.parameters())])
        made.extend(t for s in opt.state.values() for t in s.values() if t.is_cuda)
        return loss

    step()  # compiles and loads the kernels (and warms the memory pool) outside the check
    losses = []
    for _ in range(3):
        with cupyx.allow_synchronize(False):
            loss = step()
        losses.append(loss.item())  # the one read back, outside the check
    assert losses[-1] < losses[0]
    assert all(isinstance(t._data, cupy.ndarray) for t in made)
