"""Losses and nn.utils against PyTorch's fixtures (make_loss_fixtures.py), finite
differences of the fused backward passes, and the errors the losses raise."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from agree import assert_agree
from conftest import DEVICES
from fixture_meta import FIXTURES, check_meta

import engine
import engine.nn.functional as F
from engine import nn

SPECS = json.loads((FIXTURES / "losses.json").read_text())["cases"]
BY_NAME = {s["name"]: s for s in SPECS}
LOSSES = [
    s["name"]
    for s in SPECS
    if s["kind"] == "function" and s["fn"] != "scaled_dot_product_attention"
]
MODULES = {
    "cross_entropy": nn.CrossEntropyLoss,
    "nll_loss": nn.NLLLoss,
    "mse_loss": nn.MSELoss,
    "l1_loss": nn.L1Loss,
    "smooth_l1_loss": nn.SmoothL1Loss,
    "huber_loss": nn.HuberLoss,
    "binary_cross_entropy": nn.BCELoss,
    "binary_cross_entropy_with_logits": nn.BCEWithLogitsLoss,
    "sigmoid_focal_loss": nn.FocalLoss,
}


@pytest.fixture(scope="module")
def ref() -> Any:
    return np.load(FIXTURES / "losses.npz")


def test_fixtures_match_the_script_that_made_them() -> None:
    meta = check_meta("losses")
    assert [s["name"] for s in meta["cases"]] == list(BY_NAME)


def function_inputs(
    spec: dict[str, Any], ref: Any, device: str, dtype: Any = None
) -> tuple[list[engine.Tensor], dict[str, engine.Tensor]]:
    """The case's positional tensors (float ones requiring grad where PyTorch's did) and
    tensor keyword arguments, optionally cast from float32 to `dtype`."""
    name = spec["name"]
    tensors = []
    for i, g in enumerate(spec["grad"]):
        a = ref[f"{name}/in{i}"]
        if dtype is not None and a.dtype == np.float32:
            a = a.astype(dtype)
        t = engine.tensor(a, device=device)
        if g:
            t.requires_grad_()
        tensors.append(t)
    kw = {}
    for k in spec["tensor_kwargs"]:
        a = ref[f"{name}/kw/{k}"]
        if dtype is not None and a.dtype == np.float32:
            a = a.astype(dtype)
        kw[k] = engine.tensor(a, device=device)
    return tensors, kw


def call_function(spec: dict[str, Any], tensors: list[Any], kw: dict[str, Any]) -> Any:
    return getattr(F, spec["fn"])(*tensors, **kw, **spec["kwargs"])


def call_module(spec: dict[str, Any], tensors: list[Any], kw: dict[str, Any]) -> Any:
    return MODULES[spec["fn"]](**kw, **spec["kwargs"])(*tensors)


def check_against_fixture(
    spec: dict[str, Any], ref: Any, device: str, call: Callable[..., Any]
) -> None:
    name = spec["name"]
    tensors, kw = function_inputs(spec, ref, device)
    out = call(spec, tensors, kw)
    expected = ref[f"{name}/out0"]
    assert out.dtype == engine.float32
    assert_agree(out.detach().cpu().numpy(), expected, what=f"{name} output")
    if f"{name}/gy0" not in ref:
        assert not out.requires_grad
        return
    (out * engine.tensor(ref[f"{name}/gy0"], device=device)).sum().backward()
    for i, t in enumerate(tensors):
        key = f"{name}/grad{i}"
        if key in ref:
            assert t.grad is not None, f"{name}: input {i} got no gradient"
            assert_agree(t.grad.cpu().numpy(), ref[key], what=f"{name} grad of input {i}")
        else:
            assert t.grad is None


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", LOSSES)
def test_functional_loss_matches_pytorch(name: str, device: str, ref: Any) -> None:
    check_against_fixture(BY_NAME[name], ref, device, call_function)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", [n for n in LOSSES if BY_NAME[n]["module"]])
def test_loss_module_matches_pytorch(name: str, device: str, ref: Any) -> None:
    check_against_fixture(BY_NAME[name], ref, device, call_module)


def test_loss_module_state_dict_keys_equal_pytorchs() -> None:
    expected = check_meta("losses")["loss_state_keys"]
    w = engine.ones(3)
    modules = {
        "CrossEntropyLoss": nn.CrossEntropyLoss(weight=w),
        "NLLLoss": nn.NLLLoss(weight=w),
        "BCELoss": nn.BCELoss(weight=w),
        "BCEWithLogitsLoss": nn.BCEWithLogitsLoss(weight=w, pos_weight=w),
        "MSELoss": nn.MSELoss(),
    }
    assert {k: list(m.state_dict()) for k, m in modules.items()} == expected


# ---- finite differences of the fused backward passes (float64) ----------------------------
def numeric_grad(f: Callable[[list[np.ndarray]], float], arrays: list[np.ndarray], i: int) -> Any:
    """Central differences of the scalar f with respect to arrays[i]."""
    h = 1e-6
    base = arrays[i]
    out = np.zeros_like(base)
    for k in np.ndindex(base.shape):
        plus, minus = base.copy(), base.copy()
        plus[k] += h
        minus[k] -= h
        f_plus = f([*arrays[:i], plus, *arrays[i + 1 :]])
        f_minus = f([*arrays[:i], minus, *arrays[i + 1 :]])
        out[k] = (f_plus - f_minus) / (2 * h)
    return out


def check_finite_differences(
    fn: Callable[..., engine.Tensor], arrays: list[np.ndarray], grad: list[bool], gy: np.ndarray
) -> None:
    """fn's analytic gradients of sum(fn(*arrays) * gy) agree with central differences."""

    def value(xs: list[np.ndarray]) -> float:
        with engine.no_grad():
            return float(np.sum(fn(*[engine.tensor(x) for x in xs]).numpy() * gy))

    tensors = [engine.tensor(a, requires_grad=g) for a, g in zip(arrays, grad, strict=True)]
    (fn(*tensors) * engine.tensor(gy)).sum().backward()
    for i, t in enumerate(tensors):
        if grad[i]:
            assert_agree(t.grad.numpy(), numeric_grad(value, arrays, i), what=f"input {i}")


FD_CASES = [
    "ce_weight_smooth_mean",
    "ce_weight_smooth_none",
    "ce_ignore_index_1",
    "ce_kdim_mean",
    "ce_unbatched",
    "ce_probs_weight_smooth_kdim",
    "nll_weight_kdim",
    "nll_none",
    "bce_weight_mean",
    "bcel_both_mean",
    "bcel_pos_weight_none",
    "focal_g2.0_a0.25_mean",
    "focal_g1.5_a-1.0_none",
    "focal_g3.0_a0.8_sum",
    "focal_g0.0_a0.5_mean",
    "huber_loss_delta0.3_mean",
    "mse_loss__sum",
]


@pytest.mark.parametrize("name", FD_CASES)
def test_fused_backward_matches_finite_differences(name: str, ref: Any) -> None:
    spec = BY_NAME[name]
    arrays = [
        ref[f"{name}/in{i}"].astype(np.float64)
        if ref[f"{name}/in{i}"].dtype == np.float32
        else ref[f"{name}/in{i}"]
        for i in range(len(spec["grad"]))
    ]
    kw = {k: engine.tensor(ref[f"{name}/kw/{k}"].astype(np.float64)) for k in spec["tensor_kwargs"]}
    gy = ref[f"{name}/gy0"].astype(np.float64)
    check_finite_differences(
        lambda *ts: call_function(spec, list(ts), kw), arrays, spec["grad"], gy
    )


# ---- behaviour beyond the fixtures ---------------------------------------------------------
def test_cross_entropy_all_ignored_mean_is_nan_with_zero_gradient() -> None:
    x = engine.randn(3, 4, requires_grad=True)
    loss = F.cross_entropy(x, engine.full((3,), -100, dtype=engine.int64), label_smoothing=0.1)
    assert math.isnan(loss.item())
    loss.backward()
    assert (x.grad.numpy() == 0).all()


def test_losses_keep_half_precision_inputs_dtype() -> None:
    x = engine.randn(8, 5)
    t = engine.randint(0, 5, (8,))
    for dt in (engine.float16, engine.bfloat16):
        xl = x.to(dt).requires_grad_()
        loss = F.cross_entropy(xl, t)
        loss.backward()
        assert loss.dtype == dt and xl.grad.dtype == dt
        expected = F.cross_entropy(xl.detach().float(), t).item()
        assert abs(loss.float().item() - expected) < 1e-2 * abs(expected)


def test_mse_broadcasts_a_different_target_with_a_warning_as_pytorch() -> None:
    x = engine.randn(4, 3, requires_grad=True)
    with pytest.warns(UserWarning, match="target size"):
        loss = F.mse_loss(x, engine.zeros(3))
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.detach().numpy() / 12, rtol=1e-6)


def test_focal_loss_module_defaults_are_torchvisions() -> None:
    m = nn.FocalLoss()
    assert (m.gamma, m.alpha, m.reduction) == (2.0, 0.25, "mean")
    x, t = engine.randn(4, 3), (engine.rand(4, 3) > 0.5).float()
    expected = F.sigmoid_focal_loss(x, t, reduction="none").mean().item()
    assert m(x, t).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (
            lambda: F.cross_entropy(engine.randn(4, 5), engine.zeros(3, dtype=engine.int64)),
            engine.ShapeError,
            r"cross_entropy: expected target of shape \(4,\) for input of shape \(4, 5\)",
        ),
        (
            lambda: F.cross_entropy(engine.randn(4, 5), engine.zeros(3, dtype=engine.int64)),
            ValueError,
            r"got target of shape \(3,\)",
        ),
        (
            lambda: F.cross_entropy(engine.randn(2, 5), engine.tensor([1, 5])),
            IndexError,
            r"cross_entropy: target 5 is out of bounds .* 5 classes",
        ),
        (
            lambda: F.nll_loss(engine.randn(2, 5), engine.tensor([-3, 1])),
            ValueError,
            r"nll_loss: target -3 is out of bounds",
        ),
        (
            lambda: F.cross_entropy(engine.randn(2, 5), engine.tensor([True, False])),
            TypeError,
            r"cross_entropy: target must hold class indices .* got engine.bool",
        ),
        (
            lambda: F.nll_loss(engine.randn(2, 5), engine.rand(2)),
            TypeError,
            r"nll_loss: target must hold class indices",
        ),
        (
            lambda: F.cross_entropy(engine.randn(2, 5), engine.rand(2, 4)),
            engine.ShapeError,
            r"cross_entropy: target of shape \(2, 4\) does not match input of shape \(2, 5\)",
        ),
        (
            lambda: F.cross_entropy(
                engine.randn(2, 5), engine.tensor([0, 1]), weight=engine.ones(4)
            ),
            engine.ShapeError,
            r"cross_entropy: weight of shape \(4,\) should have one entry per class",
        ),
        (
            lambda: F.binary_cross_entropy(engine.rand(3), engine.rand(4)),
            ValueError,
            r"binary_cross_entropy: target of shape \(4,\) does not match input of shape \(3,\)",
        ),
        (
            lambda: F.binary_cross_entropy(engine.rand(3) + 1, engine.rand(3)),
            ValueError,
            r"between 0 and 1",
        ),
        (
            lambda: F.binary_cross_entropy_with_logits(engine.randn(3, 2), engine.rand(2, 3)),
            engine.ShapeError,
            r"binary_cross_entropy_with_logits: target of shape \(2, 3\)",
        ),
        (
            lambda: F.mse_loss(engine.randn(3), engine.randn(4)),
            engine.ShapeError,
            r"mse_loss: target of shape \(4,\) does not broadcast with input of shape \(3,\)",
        ),
        (
            lambda: F.l1_loss(engine.randn(3), engine.randn(3), reduction="avg"),
            ValueError,
            r"l1_loss: 'avg' is not a valid value for reduction",
        ),
        (
            lambda: F.mse_loss(engine.zeros(3, dtype=engine.int64), engine.randn(3)),
            TypeError,
            r"mse_loss: input must be a floating-point tensor",
        ),
        (lambda: nn.MSELoss(reduction="mea"), ValueError, r"MSELoss: 'mea'"),
    ],
)
def test_loss_errors_name_the_loss_and_shapes(call: Any, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        call()


# ---- nn.utils ------------------------------------------------------------------------------
def _params_with_grads(name: str, n: int, ref: Any, device: str) -> list[nn.Parameter]:
    params = []
    for i in range(n):
        g = ref[f"{name}/g{i}"]
        p = nn.Parameter(engine.zeros(*g.shape, device=device))
        p.grad = engine.tensor(g, device=device)
        params.append(p)
    return params


CLIP_NORM = [s["name"] for s in SPECS if s["kind"] == "clip_norm"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", CLIP_NORM)
def test_clip_grad_norm_matches_pytorch(name: str, device: str, ref: Any) -> None:
    spec = BY_NAME[name]
    params = _params_with_grads(name, spec["n"], ref, device)
    total = nn.utils.clip_grad_norm_(iter(params), spec["max_norm"], spec["norm_type"])
    assert isinstance(total, engine.Tensor) and total.shape == () and total.device.type == device
    assert_agree(total.cpu().numpy(), ref[f"{name}/total"], what=f"{name} total norm")
    for i, p in enumerate(params):
        assert_agree(p.grad.cpu().numpy(), ref[f"{name}/clipped{i}"], what=f"{name} grad {i}")


@pytest.mark.parametrize("device", DEVICES)
def test_clip_grad_value_matches_pytorch(device: str, ref: Any) -> None:
    name = "clip_value_0.3"
    spec = BY_NAME[name]
    params = _params_with_grads(name, spec["n"], ref, device)
    assert nn.utils.clip_grad_value_(params, spec["clip_value"]) is None
    for i, p in enumerate(params):
        assert_agree(p.grad.cpu().numpy(), ref[f"{name}/clipped{i}"], what=f"{name} grad {i}")


def test_clip_grad_norm_edge_cases() -> None:
    p = nn.Parameter(engine.ones(3))
    assert nn.utils.clip_grad_norm_(p, 1.0).item() == 0.0  # no gradients: a zero norm
    p.grad = engine.tensor([3.0, 4.0, 0.0])
    skipped = nn.Parameter(engine.ones(2))  # no grad: left out of the norm and untouched
    total = nn.utils.clip_grad_norm_([p, skipped], 1.0, foreach=True)
    assert total.item() == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.8, 0.0], rtol=1e-5)
    assert skipped.grad is None
    p.grad = engine.tensor([math.nan, 1.0, 0.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_(p, 1.0, error_if_nonfinite=True)
    with pytest.warns(UserWarning, match="empty generator"):
        nn.utils.clip_grad_norm_((q for q in []), 1.0)


def test_parameters_to_vector_and_back() -> None:
    lin = nn.Linear(3, 2)
    vec = nn.utils.parameters_to_vector(lin.parameters())
    assert vec.shape == (8,)
    np.testing.assert_array_equal(
        vec.detach().numpy(),
        np.concatenate([lin.weight.detach().numpy().ravel(), lin.bias.detach().numpy()]),
    )
    (vec * engine.arange(8.0)).sum().backward()  # differentiable, as PyTorch's
    np.testing.assert_array_equal(lin.bias.grad.numpy(), [6.0, 7.0])
    new = engine.arange(8.0)
    nn.utils.vector_to_parameters(new, lin.parameters())
    np.testing.assert_array_equal(lin.weight.detach().numpy(), np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(lin.bias.detach().numpy(), [6.0, 7.0])
    with pytest.raises(TypeError, match=r"expected engine\.Tensor"):
        nn.utils.vector_to_parameters([1.0, 2.0], lin.parameters())
