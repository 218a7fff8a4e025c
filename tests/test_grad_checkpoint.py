"""engine.utils.checkpoint: gradient checkpointing gives the gradients of a plain run
(dropout included, through the RNG restore) with a lower peak memory."""

from __future__ import annotations

import tracemalloc
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import DEVICES

import engine
from engine import nn
from engine.utils.checkpoint import checkpoint, checkpoint_sequential


def _grads(model: nn.Module, *tensors: engine.Tensor) -> list[np.ndarray]:
    out = [p.grad.cpu().numpy() for p in model.parameters()]  # type: ignore[union-attr]
    return out + [t.grad.cpu().numpy() for t in tensors]  # type: ignore[union-attr]


def _assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        np.testing.assert_array_equal(x, y, err_msg=f"gradient {i}")


def _mlp(depth: int, width: int, act: Callable[[], nn.Module] = nn.Tanh) -> nn.Sequential:
    return nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), act())])


def _run(model: nn.Module, x: engine.Tensor, forward: Callable[[Any], Any]) -> list[np.ndarray]:
    model.zero_grad()
    x.grad = None
    y = forward(x)
    (y * y).mean().backward()
    return _grads(model, x)


@pytest.mark.parametrize("device", DEVICES)
def test_checkpointed_layers_give_the_plain_gradients(device: str) -> None:
    model = _mlp(8, 16).to(device)
    x = engine.randn(5, 16, device=device, requires_grad=True)
    layers = list(model.children())

    def per_pair(h: engine.Tensor) -> engine.Tensor:
        for i in range(0, len(layers), 2):
            h = checkpoint(nn.Sequential(*layers[i : i + 2]), h)
        return h

    plain = _run(model, x, model)
    _assert_same(_run(model, x, per_pair), plain)
    _assert_same(_run(model, x, lambda h: checkpoint_sequential(model, 3, h)), plain)
    reentrant = _run(model, x, lambda h: checkpoint(model, h, use_reentrant=True))
    _assert_same(reentrant, plain)


def test_parameters_used_inside_get_gradients_when_no_input_requires_grad() -> None:
    model = _mlp(3, 8)
    x = engine.randn(4, 8)  # data: needs no gradient, as for a network's first block

    def fn(h: engine.Tensor) -> engine.Tensor:  # reaches the model through its closure
        return model(h)

    model.zero_grad()
    (model(x) ** 2).sum().backward()
    plain = _grads(model)
    for function in (model, fn, model.forward):
        model.zero_grad()
        y = checkpoint(function, x)
        assert y.requires_grad
        (y**2).sum().backward()
        _assert_same(_grads(model), plain)


def test_the_reentrant_variant_warns_that_parameters_alone_give_no_gradient() -> None:
    model = _mlp(2, 4)
    with pytest.warns(UserWarning, match="requires grad"):
        y = checkpoint(model, engine.randn(2, 4), use_reentrant=True)
    assert not y.requires_grad
    with pytest.raises(ValueError, match="Unexpected keyword"):
        checkpoint(model, engine.randn(2, 4), use_reentrant=True, extra=1)


def test_several_outputs_keyword_tensors_and_non_tensor_outputs() -> None:
    a = engine.randn(3, 4, requires_grad=True)
    b = engine.randn(4, 2, requires_grad=True)
    scale = engine.randn(3, 2, requires_grad=True)

    def fn(x: engine.Tensor, w: engine.Tensor, *, s: engine.Tensor) -> Any:
        h = (x @ w).tanh()
        return h * s, {"sum": h.sum(), "idx": h.argmax(dim=1)}, "a label", (x.exp(),)

    def loss(out: Any) -> engine.Tensor:
        # the exp output gets no gradient at all; the argmax one is an int tensor
        first, extra, label, _ = out
        assert label == "a label"
        assert extra["idx"].dtype is engine.int64 and not extra["idx"].requires_grad
        return (first**2).sum() + 3 * extra["sum"] + first.sum()

    def grads(use_checkpoint: bool) -> list[np.ndarray]:
        for t in (a, b, scale):
            t.grad = None
        out = checkpoint(fn, a, b, s=scale) if use_checkpoint else fn(a, b, s=scale)
        loss(out).backward()
        return [t.grad.numpy() for t in (a, b, scale)]  # type: ignore[union-attr]

    _assert_same(grads(True), grads(False))


def test_dropout_inside_gets_identical_gradients_through_the_rng_restore() -> None:
    model = nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 16), nn.Dropout(0.3)
    )
    x = engine.randn(8, 16, requires_grad=True)

    def run(forward: Callable[[Any], Any]) -> tuple[list[np.ndarray], list[float]]:
        engine.manual_seed(7)
        grads = _run(model, x, forward)
        return grads, engine.rand(4).tolist()  # the stream continues as without checkpointing

    plain, after = run(model)
    got, got_after = run(lambda h: checkpoint(model, h))
    _assert_same(got, plain)
    assert got_after == after
    # without the restore the recomputation draws other masks: the gradients differ
    unrestored, _ = run(lambda h: checkpoint(model, h, preserve_rng_state=False))
    assert any(not np.array_equal(u, p) for u, p in zip(unrestored, plain, strict=True))


def test_nested_checkpoints_and_backward_hooks_on_outputs() -> None:
    model = _mlp(4, 8)
    layers = list(model.children())
    x = engine.randn(3, 8, requires_grad=True)
    seen: list[tuple[int, ...]] = []

    def inner(h: engine.Tensor) -> engine.Tensor:
        return checkpoint(nn.Sequential(*layers[2:6]), h)

    def outer(h: engine.Tensor) -> engine.Tensor:
        h = checkpoint(inner, layers[1](layers[0](h)))
        h.register_hook(lambda g: seen.append(tuple(g.shape)))
        return nn.Sequential(*layers[6:])(h)

    _assert_same(_run(model, x, outer), _run(model, x, model))
    assert seen == [(3, 8)]


def test_backward_twice_needs_retain_graph_as_without_checkpointing() -> None:
    w = engine.randn(4, 4, requires_grad=True)
    x = engine.randn(2, 4)
    y = checkpoint(lambda a, b: (a @ b).tanh(), x, w).sum()
    y.backward(retain_graph=True)
    once = w.grad.numpy()  # type: ignore[union-attr]
    y.backward()
    np.testing.assert_allclose(w.grad.numpy(), 2 * once, rtol=1e-6)  # type: ignore[union-attr]
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_an_input_changed_in_place_before_backward_is_an_error() -> None:
    x = engine.randn(3, 3, requires_grad=True)
    h = x * 2
    y = checkpoint(lambda t: t.exp(), h)
    with engine.no_grad():
        h.add_(1)
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        y.sum().backward()


def test_without_grad_mode_it_is_a_plain_call() -> None:
    model = _mlp(2, 4)
    with engine.no_grad():
        y = checkpoint(model, engine.randn(2, 4))
    assert not y.requires_grad and y.grad_fn is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = checkpoint(model, engine.randn(2, 4))  # parameters require grad: no warning
    assert z.requires_grad


def test_peak_memory_of_forward_and_backward_falls() -> None:
    """24 layers of width 256, batch 512; tracemalloc sees NumPy's allocations."""
    engine.manual_seed(0)
    model = _mlp(24, 256, nn.GELU)
    x = engine.randn(512, 256)

    def measure(forward: Callable[[Any], Any]) -> tuple[int, list[np.ndarray]]:
        model.zero_grad()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            forward(x).sum().backward()
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        return peak, _grads(model)

    plain_peak, plain = measure(model)
    ck_peak, got = measure(lambda h: checkpoint_sequential(model, 6, h))
    _assert_same(got, plain)
    message = (
        f"peak memory of forward+backward: {plain_peak / 2**20:.1f} MiB plain, "
        f"{ck_peak / 2**20:.1f} MiB with checkpoint_sequential(6 segments)"
    )
    assert ck_peak < 0.75 * plain_peak, message
