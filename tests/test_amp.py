"""engine.amp: autocast's op dtypes as PyTorch's, gradients through its casts, GradScaler
against PyTorch fixtures, and float16/bfloat16 training runs beside a float32 one.

The expected dtypes below were read off torch 2.13.0 under `torch.autocast("cpu", dtype)`
for both low dtypes, with float32 inputs and with inputs already in the low dtype. The
GradScaler references come from tests/make_amp_fixtures.py.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from agree import assert_agree
from fixture_meta import FIXTURES, check_meta

import engine
from engine import nn
from engine.amp import GradScaler, autocast
from engine.nn import functional as F

LOW = [engine.bfloat16, engine.float16]
F32 = engine.float32

# ---- autocast: each op's output dtype -----------------------------------------------------
# What PyTorch's CPU autocast returns: "low" for the region's dtype, "f32" for float32,
# "in" for the dtype of the (floating) input.
CPU_POLICY = {
    "matmul": "low",
    "rmatmul": "low",
    "linear": "low",
    "conv2d": "low",
    "sdpa": "low",
    "mha": "low",
    "prod": "f32",
    "cross_entropy": "f32",
    "nll_loss": "f32",
    "mse_loss": "f32",
    "l1_loss": "f32",
    "smooth_l1_loss": "f32",
    "huber_loss": "f32",
    "bce_with_logits": "f32",
    "bce": "f32",
    "pad_reflect": "f32",
    "pad_replicate": "f32",
    "pad_constant": "in",
    "pad_circular": "in",
    "softmax": "in",
    "log_softmax": "in",
    "layer_norm": "in",
    "batch_norm": "in",
    "exp": "in",
    "log": "in",
    "pow": "in",
    "rpow": "in",
    "sum": "in",
    "mean": "in",
    "cumsum": "in",
    "norm": "in",
    "rsqrt": "in",
    "reciprocal": "in",
    "tanh": "in",
    "sigmoid": "in",
    "relu": "in",
    "gelu": "in",
    "silu": "in",
    "var": "in",
    "amax": "in",
    "max_pool2d": "in",
    "dropout": "in",
    # a float32 operand promotes, as outside autocast
    "add_f32": "f32",
    "mul_f32": "f32",
    "cat_f32": "f32",
    "stack_f32": "f32",
    "where_f32": "f32",
}


def op_cases(din: engine.dtype) -> dict[str, Callable[[], engine.Tensor]]:
    """Each op on inputs in `din` (weights and biases float32, as a model's are)."""
    x = engine.randn(4, 8).to(din)
    pos = engine.rand(4, 8).to(din) + 0.1
    w, b = engine.randn(6, 8), engine.randn(6)
    t32 = engine.randn(4, 8)
    img = engine.randn(2, 3, 5, 5).to(din)
    q = engine.randn(2, 2, 4, 8).to(din)
    tgt = engine.randint(0, 8, (4,))
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    bn = nn.BatchNorm2d(3)
    return {
        "matmul": lambda: engine.matmul(x, w.T),
        "rmatmul": lambda: x @ w.T,
        "linear": lambda: F.linear(x, w, b),
        "conv2d": lambda: F.conv2d(img, engine.randn(4, 3, 3, 3), engine.randn(4)),
        "sdpa": lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True),
        "mha": lambda: mha(x[None], x[None], x[None])[0],
        "prod": x.prod,
        "cross_entropy": lambda: F.cross_entropy(x, tgt),
        "nll_loss": lambda: F.nll_loss(x, tgt),
        "mse_loss": lambda: F.mse_loss(x, t32.to(din)),
        "l1_loss": lambda: F.l1_loss(x, t32.to(din)),
        "smooth_l1_loss": lambda: F.smooth_l1_loss(x, t32.to(din)),
        "huber_loss": lambda: F.huber_loss(x, t32.to(din)),
        "bce_with_logits": lambda: F.binary_cross_entropy_with_logits(x, pos / 2),
        "bce": lambda: F.binary_cross_entropy(pos / 2, pos / 3),
        "pad_reflect": lambda: F.pad(img, (1, 1, 1, 1), mode="reflect"),
        "pad_replicate": lambda: F.pad(img, (1, 1), mode="replicate"),
        "pad_constant": lambda: F.pad(img, (1, 1)),
        "pad_circular": lambda: F.pad(img, (1, 1, 1, 1), mode="circular"),
        "softmax": lambda: engine.softmax(x, -1),
        "log_softmax": lambda: F.log_softmax(x, -1),
        "layer_norm": lambda: F.layer_norm(x, (8,), engine.ones(8), engine.zeros(8)),
        "batch_norm": lambda: bn(img),
        "exp": x.exp,
        "log": pos.log,
        "pow": lambda: x**2,
        "rpow": lambda: 2**x,
        "sum": x.sum,
        "mean": x.mean,
        "cumsum": lambda: x.cumsum(0),
        "norm": x.norm,
        "rsqrt": pos.rsqrt,
        "reciprocal": lambda: engine.reciprocal(pos),
        "tanh": x.tanh,
        "sigmoid": x.sigmoid,
        "relu": lambda: F.relu(x),
        "gelu": lambda: F.gelu(x),
        "silu": lambda: F.silu(x),
        "var": x.var,
        "amax": x.amax,
        "max_pool2d": lambda: F.max_pool2d(img, 2),
        "dropout": lambda: F.dropout(x, 0.0),
        "add_f32": lambda: x + t32,
        "mul_f32": lambda: x * t32,
        "cat_f32": lambda: engine.cat([x, t32]),
        "stack_f32": lambda: engine.stack([x, t32]),
        "where_f32": lambda: engine.where(t32 > 0, x, t32),
    }


@pytest.mark.parametrize("low", LOW, ids=str)
@pytest.mark.parametrize("input_low", [False, True], ids=["f32_inputs", "low_inputs"])
def test_cpu_op_dtypes_match_pytorch(low: engine.dtype, input_low: bool) -> None:
    din = low if input_low else F32
    cases = op_cases(din)
    assert set(cases) == set(CPU_POLICY)
    want = {"low": low, "f32": F32, "in": din}
    with autocast("cpu", dtype=low):
        got = {name: fn().dtype for name, fn in cases.items()}
    assert got == {name: want[p] for name, p in CPU_POLICY.items()}


def test_outside_autocast_nothing_changes() -> None:
    cases = op_cases(F32)
    assert all(fn().dtype == F32 for fn in cases.values())


def test_low_dtype_matmul_rounds_like_float32_blas() -> None:
    """A 16-bit matmul is the float32 product of the rounded inputs, rounded once."""
    a, b = engine.randn(16, 32), engine.randn(32, 8)
    for low in LOW:
        with autocast("cpu", dtype=low):
            y = a @ b
        ref = (a.to(low).float().numpy() @ b.to(low).float().numpy()).astype(low.np)
        np.testing.assert_array_equal(y.numpy(), ref)


def test_gradients_reach_float32_parameters_in_float32() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 3))
    x, y = engine.randn(10, 8), engine.randint(0, 3, (10,))
    F.cross_entropy(model(x), y).backward()
    ref = {n: p.grad.numpy() for n, p in model.named_parameters()}
    for low in LOW:
        model.zero_grad()
        with autocast("cpu", dtype=low):
            out = model(x)
            loss = F.cross_entropy(out, y)
        assert out.dtype == low and loss.dtype == F32
        loss.backward()
        for n, p in model.named_parameters():
            assert p.dtype == F32 and p.grad.dtype == F32, n
            assert_agree(p.grad.numpy(), ref[n], rtol=5e-2, atol=5e-2, what=f"{low} {n}")


def test_enabled_false_and_nesting() -> None:
    a = engine.randn(3, 3)
    assert not engine.is_autocast_enabled("cpu")
    with autocast("cpu"):
        assert (a @ a).dtype == engine.bfloat16
        assert engine.is_autocast_enabled("cpu") and not engine.is_autocast_enabled()
        with autocast("cpu", enabled=False):
            assert (a @ a).dtype == F32
            assert not engine.is_autocast_enabled("cpu")
            with autocast("cpu", dtype=engine.float16):
                assert (a @ a).dtype == engine.float16
                assert engine.get_autocast_dtype("cpu") == engine.float16
            assert (a @ a).dtype == F32
        assert (a @ a).dtype == engine.bfloat16
    assert (a @ a).dtype == F32
    assert engine.get_autocast_dtype("cpu") == engine.bfloat16
    assert engine.get_autocast_dtype("cuda") == engine.float16


def test_exceptions_restore_the_outer_state() -> None:
    with pytest.raises(KeyError), autocast("cpu"):
        raise KeyError
    assert not engine.is_autocast_enabled("cpu")


def test_cuda_region_leaves_cpu_ops_alone() -> None:
    a = engine.randn(3, 3)
    with autocast("cuda"):
        assert engine.is_autocast_enabled("cuda")
        assert (a @ a).dtype == F32


def test_decorator_form() -> None:
    @autocast("cpu", dtype=engine.float16)
    def f(a: engine.Tensor) -> engine.Tensor:
        return a @ a

    a = engine.randn(2, 2)
    assert f(a).dtype == engine.float16
    assert (a @ a).dtype == F32
    assert engine.autocast is autocast and engine.amp.autocast is autocast


def test_state_is_thread_local() -> None:
    seen: list[engine.dtype] = []
    a = engine.randn(2, 2)
    worker = threading.Thread(target=lambda: seen.append((a @ a).dtype))
    with autocast("cpu"):
        worker.start()
        worker.join()
    assert seen == [F32]


def test_unsupported_dtype_warns_and_disables() -> None:
    with pytest.warns(UserWarning, match="not supported"), autocast("cpu", dtype=engine.float64):
        assert (engine.randn(2, 2) @ engine.randn(2, 2)).dtype == F32
    with pytest.raises(RuntimeError, match="device_type"):
        autocast("tpu")


def test_float64_inputs_are_left_alone() -> None:
    a = engine.randn(3, 3, dtype=engine.float64)
    with autocast("cpu"):
        assert (a @ a).dtype == engine.float64


def test_weight_casts_are_cached_per_region_and_refreshed_after_change() -> None:
    lin = nn.Linear(4, 4, bias=False)
    x = engine.randn(2, 4)
    with autocast("cpu"):
        y1, y2 = lin(x), lin(x)
        with engine.no_grad():
            lin.weight.mul_(2)
        y3 = lin(x)
    np.testing.assert_array_equal(y1.detach().numpy(), y2.detach().numpy())
    assert_agree(y3.detach().float().numpy(), 2 * y1.detach().float().numpy(), rtol=1e-2)
    # one backward through the cast both forward passes shared, then another
    y1.float().sum().backward()
    y2.float().sum().backward()
    assert_agree(lin.weight.grad.numpy(), 2 * x.sum(0).expand(4, 4).numpy(), 1e-2, 2e-2)


# ---- GradScaler against PyTorch -----------------------------------------------------------
@pytest.fixture(scope="module")
def amp_ref() -> Any:
    return np.load(FIXTURES / "amp.npz")


@pytest.fixture(scope="module")
def amp_meta() -> dict[str, Any]:
    return check_meta("amp")


def test_fixtures_are_current(amp_meta: dict[str, Any]) -> None:
    assert amp_meta["steps"] == 12
    assert {c["name"] for c in amp_meta["scalers"]} == set(amp_meta["results"])


def _scaler_run(cfg: dict[str, Any], meta: dict[str, Any], ref: Any, device: str) -> None:
    name, steps = cfg["name"], meta["steps"]
    n = len(meta["shapes"])
    params = [nn.Parameter(engine.tensor(ref[f"input/param{i}"], device=device)) for i in range(n)]
    opt = engine.optim.SGD(params, lr=0.1)
    scaler = GradScaler(device, **cfg["kwargs"])
    want = meta["results"][name]
    for step in range(steps):
        opt.zero_grad()
        grads = [engine.tensor(ref[f"input/grad{i}/{step}"], device=device) for i in range(n)]
        loss = sum((p * g).sum() for p, g in zip(params, grads, strict=True))
        scaler.scale(loss).backward()
        before = [p.detach().numpy() for p in params]
        scaler.unscale_(opt)
        # inf - inf in the comparison of planted infs is nan, and agreement anyway
        with np.errstate(invalid="ignore"):
            for i, p in enumerate(params):
                got = p.grad.numpy()
                assert_agree(got, ref[f"{name}/grad{i}/{step}"], what=f"grad{i} {step}")
        scaler.step(opt)
        scaler.update()
        after = [p.detach().numpy() for p in params]
        stepped = not all(np.array_equal(b, a) for b, a in zip(before, after, strict=True))
        assert scaler.get_scale() == want["scale"][step], step
        assert scaler._get_growth_tracker() == want["tracker"][step], step
        assert stepped == want["stepped"][step], step
        for i, p in enumerate(params):
            assert_agree(p.detach().numpy(), ref[f"{name}/param{i}/{step}"], what=f"p{i} {step}")
    state = scaler.state_dict()
    assert state == want["state_dict"]
    fresh = GradScaler()
    fresh.load_state_dict(json.loads(json.dumps(state)))
    assert fresh.state_dict() == want["reloaded"]


@pytest.mark.parametrize("index", range(3))
def test_grad_scaler_matches_pytorch(index: int, amp_meta: dict[str, Any], amp_ref: Any) -> None:
    _scaler_run(amp_meta["scalers"][index], amp_meta, amp_ref, "cpu")


@pytest.mark.gpu
def test_grad_scaler_matches_pytorch_on_gpu(amp_meta: dict[str, Any], amp_ref: Any) -> None:
    for cfg in amp_meta["scalers"]:
        _scaler_run(cfg, amp_meta, amp_ref, "cuda")


def _one_param_step(scaler: GradScaler) -> tuple[Any, nn.Parameter]:
    p = nn.Parameter(engine.ones(3))
    opt = engine.optim.SGD([p], lr=1.0)
    scaler.scale((p * 2).sum()).backward()
    return opt, p


def test_grad_scaler_call_order_errors() -> None:
    scaler = GradScaler()
    opt, _ = _one_param_step(scaler)
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="after step"):
        scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler.step(opt)
    scaler.update()
    with pytest.raises(AssertionError, match="scale"):
        GradScaler().step(opt)
    with pytest.raises(AssertionError, match="growth factor"):
        GradScaler(growth_factor=1.0)


def test_grad_scaler_step_returns_the_optimizers_value_and_unscales_once() -> None:
    scaler = GradScaler(init_scale=4.0)
    opt, p = _one_param_step(scaler)
    opt.step = lambda: "stepped"  # type: ignore[method-assign]
    assert scaler.step(opt) == "stepped"
    np.testing.assert_array_equal(p.grad.numpy(), np.full(3, 2.0, np.float32))


def test_grad_scaler_refuses_float16_gradients() -> None:
    p = nn.Parameter(engine.ones(2, dtype=engine.float16))
    opt = engine.optim.SGD([p], lr=1.0)
    scaler = GradScaler(init_scale=4.0)
    scaler.scale((p * 2).sum()).backward()
    with pytest.raises(ValueError, match="FP16"):
        scaler.unscale_(opt)


def test_grad_scaler_scale_nested_and_new_scale() -> None:
    scaler = GradScaler(init_scale=8.0)
    a, b = engine.ones(1), engine.full((2,), 2.0)
    out = scaler.scale([a, (b, [a])])
    assert isinstance(out, list) and isinstance(out[1], tuple) and isinstance(out[1][1], list)
    assert out[0].item() == 8.0 and out[1][0].tolist() == [16.0, 16.0]
    assert out[1][1][0].item() == 8.0
    scaler.update(new_scale=2.0)
    assert scaler.get_scale() == 2.0
    scaler.update(new_scale=engine.tensor(0.5))
    assert scaler.get_scale() == 0.5
    with pytest.raises(ValueError, match="iterable"):
        scaler.scale(3.0)


def test_disabled_grad_scaler_is_a_pass_through() -> None:
    scaler = GradScaler(enabled=False)
    opt, p = _one_param_step(scaler)
    assert not scaler.is_enabled() and scaler.get_scale() == 1.0
    assert scaler.state_dict() == {}
    scaler.unscale_(opt)
    scaler.step(opt)
    scaler.update()
    np.testing.assert_array_equal(p.detach().numpy(), np.full(3, -1.0, np.float32))


def test_grad_scaler_getters_and_setters() -> None:
    s = GradScaler(init_scale=16.0, growth_factor=3.0, backoff_factor=0.25, growth_interval=7)
    assert (s.get_scale(), s.get_growth_factor(), s.get_backoff_factor()) == (16.0, 3.0, 0.25)
    assert s.get_growth_interval() == 7
    s.set_growth_factor(4.0)
    s.set_backoff_factor(0.5)
    s.set_growth_interval(9)
    assert (s.get_growth_factor(), s.get_backoff_factor(), s.get_growth_interval()) == (4, 0.5, 9)
    with pytest.raises(RuntimeError, match="empty"):
        s.load_state_dict({})


# ---- training runs: float16 and bfloat16 autocast beside float32 --------------------------
STEPS = 40


def _mlp_run(device: str, low: engine.dtype | None) -> list[float]:
    """40 AdamW steps of a 20-64-64-5 MLP on fixed batches; autocast in `low` if given
    (float16 with a GradScaler, as float16 training is run)."""
    gen = engine.Generator().manual_seed(7)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.GELU())
    model.append(nn.Linear(64, 5))
    engine.manual_seed(3)
    for p in model.parameters():
        with engine.no_grad():
            p.copy_(engine.randn(*p.shape, generator=gen) * 0.2)
    model.to(device)
    opt = engine.optim.AdamW(model.parameters(), lr=3e-3)
    scaler = GradScaler(device, enabled=low == engine.float16)
    xs = engine.randn(STEPS, 32, 20, generator=gen).to(device)
    ys = engine.randint(0, 5, (STEPS, 32), generator=gen).to(device)
    losses = []
    for step in range(STEPS):
        opt.zero_grad()
        with autocast(device, dtype=low, enabled=low is not None):
            loss = F.cross_entropy(model(xs[step]), ys[step])
        assert loss.dtype == F32
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_low_precision_training_tracks_float32(device: str) -> None:
    ref = np.array(_mlp_run(device, None))
    for low in LOW:
        got = np.array(_mlp_run(device, low))
        rel = np.abs(got - ref) / np.abs(ref)
        assert rel.max() <= 0.02, (low, rel.max(), int(rel.argmax()))
        assert not np.array_equal(got, ref), low  # the low dtype really was used
    assert ref[-1] < ref[0] * 0.8  # and the run learns


@pytest.mark.gpu
def test_cuda_op_dtypes() -> None:
    """CUDA's lists differ from CPU's: softmax, layer_norm, sum, exp and the losses run
    in float32, binary_cross_entropy refuses to autocast."""
    x = engine.randn(4, 8, device="cuda").half()
    w = engine.randn(6, 8, device="cuda")
    with autocast("cuda"):
        assert (x.float() @ w.T).dtype == engine.float16
        for out in (x.softmax(-1), x.exp(), x.sum(), F.layer_norm(x, (8,)), x.norm()):
            assert out.dtype == F32
        assert x.mean().dtype == engine.float16
        with warnings.catch_warnings(), pytest.raises(RuntimeError, match="unsafe to autocast"):
            F.binary_cross_entropy(x.sigmoid(), x.sigmoid())
