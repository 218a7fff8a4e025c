"""Linear + activation as one fused op (`linear_act`), and Sequential running it in place of
a Linear and its activation wherever nothing could tell the two apart: on CPU the values
and every gradient are bitwise those of the modules called one by one."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import engine
from engine import nn
from engine.amp import autocast
from engine.errors import ShapeError
from engine.utils.checkpoint import checkpoint, checkpoint_sequential

# engine.nn.functional.linear is also the name of the function the package exports
fused = importlib.import_module("engine.nn.functional.linear")
ACTS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


def _unfused(model: nn.Sequential, x: engine.Tensor) -> engine.Tensor:
    """The model's modules called one by one, as Sequential did before fusing."""
    for module in model:
        x = module(x)
    return x


def _fused_ran(out: engine.Tensor) -> bool:
    return type(out.grad_fn) is fused.LinearActBackward


def _assert_bitwise(a: engine.Tensor | None, b: engine.Tensor | None, what: str) -> None:
    assert a is not None and b is not None, what
    x, y = a.detach().numpy(), b.detach().numpy()
    assert x.dtype == y.dtype and x.shape == y.shape, what
    assert x.tobytes() == y.tobytes(), f"{what} differs: max |diff| {np.abs(x - y).max()}"


def _inputs(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    a = np.random.default_rng(1).standard_normal(shape) * 3
    a.reshape(-1)[:4] = [40.0, -40.0, 100.0, -100.0][: a.size]  # saturated and overflowing
    return a.astype(dtype)


@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 5), (2, 1, 3, 5), (1, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_act_is_bitwise_linear_then_the_activation(
    act: str, dtype: Any, shape: tuple[int, ...], bias: bool
) -> None:
    lin = nn.Linear(5, 33, bias=bias).to(engine.float64 if dtype == np.float64 else None)
    w = lin.weight
    b = lin.bias
    a = _inputs(shape, dtype)
    gy = np.random.default_rng(2).standard_normal((*shape[:-1], 33)).astype(dtype)
    results = []
    for run in (lambda x: fused.linear_act(x, w, b, act), lambda x: ACTS[act]()(lin(x))):
        lin.zero_grad()
        x = engine.tensor(a, requires_grad=True)
        y = run(x)
        y.backward(engine.tensor(gy))
        results.append((y, x.grad, w.grad, b.grad if bias else None))
    (y1, gx1, gw1, gb1), (y2, gx2, gw2, gb2) = results
    assert _fused_ran(y1) and not _fused_ran(y2)
    _assert_bitwise(y1, y2, "output")
    _assert_bitwise(gx1, gx2, "input grad")
    _assert_bitwise(gw1, gw2, "weight grad")
    if bias:
        _assert_bitwise(gb1, gb2, "bias grad")


@pytest.mark.parametrize("act", sorted(ACTS))
def test_a_strided_upstream_gradient_gives_the_unfused_gradients(act: str) -> None:
    lin = nn.Linear(6, 6)
    x = engine.tensor(_inputs((6, 6), np.float32), requires_grad=True)
    grads = []
    for y in (fused.linear_act(x, lin.weight, lin.bias, act), ACTS[act]()(lin(x))):
        lin.zero_grad()
        x.grad = None
        (y.T * engine.arange(6.0)).sum().backward()
        grads.append([x.grad, lin.weight.grad, lin.bias.grad])
    for name, g1, g2 in zip(("x", "weight", "bias"), *grads, strict=True):
        _assert_bitwise(g1, g2, name)


def test_without_grad_nothing_is_kept_and_the_values_agree() -> None:
    lin = nn.Linear(4, 8)
    x = engine.randn(3, 4)
    with engine.no_grad():
        y = fused.linear_act(x, lin.weight, lin.bias, "gelu")
    assert y.grad_fn is None and not y.requires_grad
    _assert_bitwise(y, nn.GELU()(lin(x)), "output")


def test_linear_act_refuses_what_linear_refuses_and_unknown_activations() -> None:
    w = engine.randn(3, 4)
    with pytest.raises(ValueError, match="activation must be one of"):
        fused.linear_act(engine.randn(2, 4), w, None, "softplus")
    with pytest.raises(ShapeError, match=r"linear: input of shape \(2, 5\)"):
        fused.linear_act(engine.randn(2, 5), w, None, "relu")
    with pytest.raises(ShapeError, match="bias of shape"):
        fused.linear_act(engine.randn(2, 4), w, engine.randn(4), "relu")
    with pytest.raises(TypeError, match="same dtype"):
        fused.linear_act(engine.randn(2, 4, dtype=engine.float64), w, None, "relu")


@pytest.mark.parametrize(
    "act, fuses",
    [
        (nn.ReLU(), True),
        (nn.ReLU(inplace=True), True),
        (nn.GELU(), True),
        (nn.GELU(approximate="tanh"), False),
        (nn.SiLU(), True),
        (nn.SiLU(inplace=True), True),
        (nn.Tanh(), True),
        (nn.Sigmoid(), False),
        (nn.LeakyReLU(), False),
    ],
)
def test_sequential_fuses_a_linear_and_the_activations_it_serves(
    act: nn.Module, fuses: bool
) -> None:
    model = nn.Sequential(nn.Linear(4, 8), act)
    x = engine.randn(3, 4, requires_grad=True)
    y = model(x)
    assert _fused_ran(y) is fuses
    _assert_bitwise(y, _unfused(model, x), "output")


def test_a_linear_subclass_or_a_patched_forward_is_not_fused() -> None:
    class Scaled(nn.Linear):
        def forward(self, input: engine.Tensor) -> engine.Tensor:
            return super().forward(input) * 2

    x = engine.randn(3, 4)
    sub = nn.Sequential(Scaled(4, 8), nn.ReLU())
    assert not _fused_ran(sub(x))
    _assert_bitwise(sub(x), _unfused(sub, x), "output")
    patched = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
    patched[1].forward = lambda input: input + 1  # type: ignore[method-assign]
    assert not _fused_ran(patched(x))
    _assert_bitwise(patched(x), patched[0](x) + 1, "output")


@pytest.mark.parametrize("where", [0, 1])
@pytest.mark.parametrize("kind", ["pre", "forward", "backward"])
def test_a_hook_on_either_module_turns_fusion_off_and_fires(where: int, kind: str) -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2))
    calls: list[str] = []
    target = model[where]
    if kind == "pre":
        handle = target.register_forward_pre_hook(lambda m, args: calls.append("pre"))
    elif kind == "forward":
        handle = target.register_forward_hook(lambda m, args, out: calls.append("forward"))
    else:
        handle = target.register_full_backward_hook(lambda m, gi, go: calls.append("backward"))
    x = engine.randn(3, 4, requires_grad=True)
    h = model[:2](x)
    assert not _fused_ran(h)
    model(x).sum().backward()
    # forward hooks ran for model[:2] and for the model, the backward hook in the one backward
    assert calls.count(kind) == (1 if kind == "backward" else 2)
    handle.remove()
    assert _fused_ran(model[:2](x))


def test_a_forward_hook_on_the_activation_sees_and_can_replace_its_output() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU())
    seen: list[engine.Tensor] = []

    def hook(m: nn.Module, args: tuple[Any, ...], out: engine.Tensor) -> engine.Tensor:
        seen.append(args[0])
        return out * 0

    model[1].register_forward_hook(hook)
    x = engine.randn(3, 4)
    y = model(x)
    assert len(seen) == 1 and seen[0].shape == (3, 8)  # the hook saw the Linear's output
    assert not y.detach().numpy().any()


def test_fusion_changes_no_state_dict_key_module_or_repr() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 2))
    before = (list(model.state_dict()), [n for n, _ in model.named_modules()], repr(model))
    model(engine.randn(3, 4)).sum().backward()
    after = (list(model.state_dict()), [n for n, _ in model.named_modules()], repr(model))
    assert before == after
    assert before[0] == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert before[1] == ["", "0", "1", "2", "3", "4"]


def _mlp(dtype: engine.dtype) -> nn.Sequential:
    engine.manual_seed(7)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(12, 32),
        nn.GELU(),
        nn.Dropout(0.0),
        nn.Linear(32, 32),
        nn.ReLU(inplace=True),
        nn.Linear(32, 16, bias=False),
        nn.SiLU(),
        nn.Linear(16, 16),
        nn.Tanh(),
        nn.Linear(16, 3),
    ).to(dtype)


def _train(model: nn.Sequential, forward: Callable[[engine.Tensor], engine.Tensor]) -> None:
    opt = engine.optim.AdamW(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(3)
    dtype = next(model.parameters()).dtype
    for _ in range(5):
        x = engine.tensor(rng.standard_normal((16, 3, 4))).to(dtype)
        y = engine.tensor(rng.integers(0, 3, 16))
        opt.zero_grad()
        nn.functional.cross_entropy(forward(x), y).backward()
        opt.step()


@pytest.mark.parametrize("dtype", [engine.float32, engine.float64])
def test_training_an_mlp_gives_bitwise_the_unfused_weights(dtype: engine.dtype) -> None:
    fused_model, plain = _mlp(dtype), _mlp(dtype)
    assert _fused_ran(fused_model[:3](engine.randn(2, 12, dtype=dtype, requires_grad=True)))
    _train(fused_model, fused_model)
    _train(plain, lambda x: _unfused(plain, x))
    after, reference = fused_model.state_dict(), plain.state_dict()
    assert list(after) == list(reference)
    for key in reference:
        _assert_bitwise(after[key], reference[key], key)
    assert not np.array_equal(after["1.weight"].numpy(), _mlp(dtype).state_dict()["1.weight"])


@pytest.mark.parametrize("low", [engine.bfloat16, engine.float16])
def test_autocast_and_16_bit_models_run_the_unfused_ops(low: engine.dtype) -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2))
    x = engine.randn(3, 4, requires_grad=True)
    with autocast("cpu", dtype=low):
        h, ref = model[:2](x), _unfused(model[:2], x)
    assert h.dtype is low and not _fused_ran(h)
    _assert_bitwise(h.float(), ref.float(), "autocast output")
    model.to(low)
    h = model[:2](x.detach().to(low))
    assert h.dtype is low and not _fused_ran(h)
    _assert_bitwise(h.float(), _unfused(model[:2], x.detach().to(low)).float(), "16-bit output")


def test_on_the_meta_device_shapes_come_out_as_unfused() -> None:
    model = nn.Sequential(nn.Linear(4, 8, device="meta"), nn.SiLU(), nn.Linear(8, 2, device="meta"))
    y = model(engine.empty(5, 3, 4, device="meta"))
    assert y.shape == (5, 3, 2) and y.device.type == "meta"


def test_an_in_place_change_to_a_fused_output_fails_the_backward_as_unfused() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
    x = engine.randn(3, 4, requires_grad=True)
    messages = []
    for y in (model(x), _unfused(model, x)):
        with engine.no_grad():
            y.add_(1)
        with pytest.raises(RuntimeError) as e:
            y.sum().backward()
        messages.append(str(e.value))
    assert all("modified by an in-place operation" in m for m in messages)


def test_checkpointing_a_fused_model_gives_the_plain_gradients() -> None:
    model = _mlp(engine.float32)
    x = engine.randn(6, 12, requires_grad=True)

    def grads(forward: Callable[[engine.Tensor], engine.Tensor]) -> list[engine.Tensor]:
        model.zero_grad()
        x.grad = None
        (forward(x) ** 2).mean().backward()
        return [p.grad for p in model.parameters()] + [x.grad]  # type: ignore[misc]

    plain = grads(lambda h: _unfused(model, h))
    for way in (
        model,
        lambda h: checkpoint(model, h),
        lambda h: checkpoint_sequential(model, 3, h),
    ):
        for i, (a, b) in enumerate(zip(grads(way), plain, strict=True)):
            _assert_bitwise(a, b, f"gradient {i}")


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_a_transformer_layers_feed_forward_runs_fused_and_bitwise(
    activation: str, norm_first: bool
) -> None:
    engine.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        16,
        2,
        dim_feedforward=32,
        dropout=0.0,
        activation=activation,
        batch_first=True,
        norm_first=norm_first,
    )
    x = engine.randn(2, 5, 16)
    seen: list[bool] = []
    # what linear2 receives is the fused activation's output
    handle = layer.linear2.register_forward_pre_hook(lambda m, a: seen.append(_fused_ran(a[0])))
    fused_out = layer(x)
    fused_out.sum().backward()
    fused_grads = [p.grad.clone() for p in layer.parameters()]
    assert seen == [True]
    handle.remove()
    layer.zero_grad()
    # any hook on linear1 runs it as its own module: the unfused path
    plain = layer.linear1.register_forward_hook(lambda m, a, out: None)
    unfused_out = layer(x)
    unfused_out.sum().backward()
    plain.remove()
    _assert_bitwise(fused_out, unfused_out, "output")
    for g, p in zip(fused_grads, layer.parameters(), strict=True):
        _assert_bitwise(g, p.grad, "gradient")
