"""scaled_dot_product_attention, MultiheadAttention and TransformerEncoderLayer against
PyTorch's fixtures (make_loss_fixtures.py), finite differences of the fused attention
backward, initialisation, dropout and errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from agree import assert_agree
from conftest import DEVICES
from fixture_meta import FIXTURES
from test_losses import BY_NAME, SPECS, check_against_fixture, check_finite_differences

import engine
import engine.nn.functional as F
from engine import nn

SDPA = [
    s["name"]
    for s in SPECS
    if s["kind"] == "function" and s["fn"] == "scaled_dot_product_attention"
]
MODULE_CASES = [s["name"] for s in SPECS if s["kind"] == "module"]


@pytest.fixture(scope="module")
def ref() -> Any:
    return np.load(FIXTURES / "losses.npz")


def _sdpa(spec: dict[str, Any], tensors: list[Any], kw: dict[str, Any]) -> Any:
    mask = kw.get("attn_mask", tensors[3] if len(tensors) > 3 else None)
    return F.scaled_dot_product_attention(*tensors[:3], attn_mask=mask, **spec["kwargs"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", SDPA)
def test_sdpa_matches_pytorch(name: str, device: str, ref: Any) -> None:
    check_against_fixture(BY_NAME[name], ref, device, _sdpa)


def _build(spec: dict[str, Any], ref: Any, device: str) -> nn.Module:
    module = getattr(nn, spec["module"])(**spec["init"])
    assert list(module.state_dict()) == spec["state_dict_keys"]
    name = spec["name"]
    sd = {k: engine.tensor(ref[f"{name}/sd/{k}"]) for k in spec["state_dict_keys"]}
    missing, unexpected = module.load_state_dict(sd)
    assert not missing and not unexpected
    return module.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", MODULE_CASES)
def test_module_matches_pytorch(name: str, device: str, ref: Any) -> None:
    spec = BY_NAME[name]
    module = _build(spec, ref, device)
    inputs = [
        engine.tensor(ref[f"{name}/in{i}"], device=device, requires_grad=True)
        for i in range(spec["n_inputs"])
    ]
    kw = {k: engine.tensor(ref[f"{name}/kw/{k}"], device=device) for k in spec["tensor_kwargs"]}
    args = [inputs[0]] * 3 if spec["self_attention"] else inputs
    out = module(*args, **kw, **spec["kwargs"])
    outs = list(out) if isinstance(out, tuple) else [out]
    total = None
    for j, o in enumerate(outs):
        key = f"{name}/out{j}"
        if key not in ref:
            assert o is None, f"{name}: output {j} should be None"
            continue
        assert_agree(o.detach().cpu().numpy(), ref[key], what=f"{name} output {j}")
        term = (o * engine.tensor(ref[f"{name}/gy{j}"], device=device)).sum()
        total = term if total is None else total + term
    assert total is not None
    total.backward()
    for i, t in enumerate(inputs):
        assert_agree(t.grad.cpu().numpy(), ref[f"{name}/grad{i}"], what=f"{name} grad {i}")
    for k, p in module.named_parameters():
        assert_agree(p.grad.cpu().numpy(), ref[f"{name}/pgrad/{k}"], what=f"{name} grad {k}")


# ---- finite differences of the fused attention backward (float64) -------------------------
def _rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


FD = {
    "plain": ({}, None),
    "causal_rect": ({"is_causal": True}, None),
    "scale": ({"scale": 0.7}, None),
    "bool_mask_with_empty_row": ({}, "bool"),
    "float_mask": ({}, "float"),
    "gqa": ({"enable_gqa": True}, None),
}


@pytest.mark.parametrize("case", list(FD))
def test_sdpa_backward_matches_finite_differences(case: str) -> None:
    kwargs, mask_kind = FD[case]
    hq = 4 if case == "gqa" else 2
    arrays = [_rand(2, hq, 3, 4, seed=1), _rand(2, 2, 5, 4, seed=2), _rand(2, 2, 5, 3, seed=3)]
    grad = [True, True, True]
    if mask_kind == "bool":
        m = np.random.default_rng(4).random((3, 5)) > 0.4
        m[1] = False  # nothing to attend to: zeros out, zero gradient
        kwargs = {**kwargs, "attn_mask": engine.tensor(m)}
    elif mask_kind == "float":
        arrays.append(_rand(2, 1, 3, 5, seed=5))
        grad.append(True)
    gy = _rand(2, hq, 3, 3, seed=6)

    def fn(*ts: Any) -> Any:
        mask = ts[3] if len(ts) > 3 else kwargs.get("attn_mask")
        rest = {k: v for k, v in kwargs.items() if k != "attn_mask"}
        return F.scaled_dot_product_attention(*ts[:3], attn_mask=mask, **rest)

    check_finite_differences(fn, arrays, grad, gy)


def test_sdpa_dropout_is_seeded_and_its_backward_matches_finite_differences() -> None:
    arrays = [_rand(1, 2, 3, 4, seed=1), _rand(1, 2, 5, 4, seed=2), _rand(1, 2, 5, 3, seed=3)]

    def fn(*ts: Any) -> Any:
        engine.manual_seed(7)  # the same mask on every evaluation
        return F.scaled_dot_product_attention(*ts, dropout_p=0.4)

    a = fn(*[engine.tensor(x) for x in arrays]).numpy()
    b = fn(*[engine.tensor(x) for x in arrays]).numpy()
    plain = F.scaled_dot_product_attention(*[engine.tensor(x) for x in arrays]).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, plain)
    check_finite_differences(fn, arrays, [True, True, True], _rand(1, 2, 3, 3, seed=6))
    zeros = F.scaled_dot_product_attention(*[engine.tensor(x) for x in arrays], dropout_p=1.0)
    assert (zeros.numpy() == 0).all()


# ---- modules: initialisation, modes, options ------------------------------------------------
def test_multihead_attention_initialises_as_pytorch() -> None:
    e = 32
    m = nn.MultiheadAttention(e, 4)
    bound = math.sqrt(6.0 / (e + 3 * e))  # xavier_uniform_ on the (3E, E) in_proj_weight
    w = m.in_proj_weight.detach().numpy()
    assert w.shape == (3 * e, e) and np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert (m.in_proj_bias.detach().numpy() == 0).all()
    assert (m.out_proj.bias.detach().numpy() == 0).all()
    assert np.abs(m.out_proj.weight.detach().numpy()).max() <= 1 / math.sqrt(e)
    assert isinstance(m.out_proj, nn.Linear)
    assert m.bias_k is None and m.bias_v is None
    sep = nn.MultiheadAttention(e, 4, kdim=8, vdim=12, bias=False)
    assert sep.in_proj_weight is None and sep.in_proj_bias is None
    assert sep.k_proj_weight.shape == (e, 8) and sep.v_proj_weight.shape == (e, 12)
    assert list(sep.state_dict()) == [
        "q_proj_weight",
        "k_proj_weight",
        "v_proj_weight",
        "out_proj.weight",
    ]


def test_multihead_attention_dropout_only_in_training() -> None:
    m = nn.MultiheadAttention(8, 2, dropout=0.5)
    x = engine.randn(4, 2, 8)
    a, _ = m(x, x, x)
    b, _ = m(x, x, x)
    assert not np.allclose(a.detach().numpy(), b.detach().numpy())
    m.eval()
    c, wc = m(x, x, x, need_weights=False)
    d, _ = m(x, x, x)
    assert wc is None
    np.testing.assert_allclose(c.detach().numpy(), d.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_transformer_layer_takes_a_callable_activation_and_trains_with_dropout() -> None:
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, activation=F.gelu, batch_first=True)
    assert layer.activation is F.gelu
    x = engine.randn(2, 5, 8, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in layer.parameters())


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (
            lambda: F.scaled_dot_product_attention(
                *(engine.randn(1, 3, 4) for _ in range(3)),
                attn_mask=engine.ones(3, 3, dtype=engine.bool),
                is_causal=True,
            ),
            ValueError,
            r"attn_mask should not be set when is_causal=True",
        ),
        (
            lambda: F.scaled_dot_product_attention(
                engine.randn(1, 3, 4), engine.randn(1, 5, 6), engine.randn(1, 5, 4)
            ),
            engine.ShapeError,
            r"scaled_dot_product_attention: query \(1, 3, 4\), key \(1, 5, 6\)",
        ),
        (
            lambda: F.scaled_dot_product_attention(
                engine.randn(1, 3, 4),
                engine.randn(1, 5, 4),
                engine.randn(1, 5, 4),
                attn_mask=engine.ones(4, 5, dtype=engine.bool),
            ),
            engine.ShapeError,
            r"attn_mask of shape \(4, 5\) does not broadcast",
        ),
        (
            lambda: F.scaled_dot_product_attention(
                engine.randn(1, 3, 4), engine.randn(1, 5, 4).double(), engine.randn(1, 5, 4)
            ),
            TypeError,
            r"same dtype",
        ),
        (lambda: nn.MultiheadAttention(10, 3), ValueError, r"divisible by num_heads"),
        (
            lambda: nn.MultiheadAttention(8, 2, add_bias_kv=True),
            NotImplementedError,
            r"add_bias_kv",
        ),
        (
            lambda: nn.MultiheadAttention(8, 2)(
                *(engine.randn(3, 2, 8) for _ in range(3)), is_causal=True
            ),
            RuntimeError,
            r"need attn_mask",
        ),
        (
            lambda: nn.MultiheadAttention(8, 2)(
                *(engine.randn(3, 2, 8) for _ in range(3)),
                key_padding_mask=engine.zeros(3, 2, dtype=engine.bool),
            ),
            engine.ShapeError,
            r"expected key_padding_mask of shape \(2, 3\), got \(3, 2\)",
        ),
        (
            lambda: nn.MultiheadAttention(8, 2)(
                *(engine.randn(3, 2, 8) for _ in range(3)),
                attn_mask=engine.zeros(3, 4, dtype=engine.bool),
            ),
            engine.ShapeError,
            r"2D attn_mask is \(3, 4\), but should be \(3, 3\)",
        ),
        (
            lambda: nn.TransformerEncoderLayer(8, 2, activation="tanh"),
            RuntimeError,
            r"activation should be relu/gelu, not tanh",
        ),
    ],
)
def test_attention_errors_are_clear(call: Any, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        call()
