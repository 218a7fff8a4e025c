"""Layers, their functional ops and the initialisers against PyTorch and finite differences.

Fixtures come from make_layer_fixtures.py (cases in layer_cases.py): PyTorch's weights are
loaded into the engine's module, whose output, gradients and state dict after the step
must agree. Default initialisation is checked statistically (bounds and moments).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from agree import assert_agree
from conftest import DEVICES
from fixture_meta import FIXTURES, check_meta
from layer_cases import CASES, LayerCase

import engine
import engine.nn.functional as F
from engine import nn
from engine.nn import init

BY_NAME = {c.name: c for c in CASES}


@pytest.fixture(scope="module")
def ref() -> Any:
    return np.load(FIXTURES / "layers.npz")


@pytest.fixture(scope="module")
def meta() -> dict[str, Any]:
    return check_meta("layers")


def test_fixtures_match_the_script_that_made_them(meta: dict[str, Any]) -> None:
    assert meta["cases"] == [c.name for c in CASES]


def _state(ref: Any, case: LayerCase, part: str) -> dict[str, np.ndarray]:
    prefix = f"{case.name}/{part}/"
    return {k[len(prefix) :]: ref[k] for k in ref.files if k.startswith(prefix)}


# ---- against PyTorch ----------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_layer_matches_pytorch(name: str, device: str, ref: Any, meta: dict[str, Any]) -> None:
    case = BY_NAME[name]
    module = case.build(nn)
    keys = meta["state_dict_keys"][name]
    sd = module.state_dict()
    assert list(sd) == keys, "state-dict keys differ from PyTorch's"
    expected = _state(ref, case, "sd")
    for k in keys:
        assert tuple(sd[k].shape) == expected[k].shape, k
        assert str(sd[k].dtype) == f"engine.{expected[k].dtype}", k
    module.load_state_dict({k: engine.tensor(v) for k, v in expected.items()})
    module.to(device)
    module.train(case.train)
    x = engine.tensor(ref[f"{name}/in"], device=device)
    if x.is_floating_point():
        x.requires_grad_()
    out = module(x)
    assert_agree(out.detach().cpu().numpy(), ref[f"{name}/out"], what=f"{name} output")
    for k, v in _state(ref, case, "after").items():
        assert_agree(module.state_dict()[k].cpu().numpy(), v, what=f"{name} {k} after the step")
    if f"{name}/gy" not in ref:
        assert not out.requires_grad
        return
    out.backward(engine.tensor(ref[f"{name}/gy"], device=device))
    if f"{name}/grad_in" in ref:
        assert_agree(x.grad.cpu().numpy(), ref[f"{name}/grad_in"], what=f"{name} input grad")
    grads = _state(ref, case, "grad")
    for k, p in module.named_parameters():
        assert_agree(p.grad.cpu().numpy(), grads[k], what=f"{name} grad of {k}")


def test_state_dict_keys_survive_a_safetensors_round_trip(tmp_path: Any) -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    path = tmp_path / "m.safetensors"
    engine.save(model.state_dict(), path)
    loaded = engine.load(path)
    assert set(loaded) == set(model.state_dict())
    assert loaded["1.num_batches_tracked"].dtype == engine.int64
    assert loaded["1.num_batches_tracked"].shape == ()


# ---- default initialisation ---------------------------------------------------------------
def _uniform_stats(a: np.ndarray, bound: float) -> None:
    """U(-bound, bound): within the bound, reaching near it, and its mean and variance
    within 5 standard errors for a.size draws."""
    n = a.size
    edge = bound * (1 + 1e-6)  # low + (high - low) * u rounds in float32
    assert a.min() >= -edge and a.max() <= edge
    assert a.max() > (1 - 20 / n) * bound and a.min() < -(1 - 20 / n) * bound
    assert abs(a.mean()) < 5 * bound / math.sqrt(3 * n)
    assert abs(a.var() / (bound**2 / 3) - 1) < 5 * math.sqrt(0.8 / n)


def test_linear_and_conv_default_init_follow_pytorch_bounds() -> None:
    lin = nn.Linear(400, 300)
    _uniform_stats(lin.weight.detach().numpy(), 1 / math.sqrt(400))
    _uniform_stats(lin.bias.detach().numpy(), 1 / math.sqrt(400))
    conv = nn.Conv2d(16, 64, 3, groups=2)
    fan_in = 8 * 9
    _uniform_stats(conv.weight.detach().numpy(), 1 / math.sqrt(fan_in))
    _uniform_stats(conv.bias.detach().numpy(), 1 / math.sqrt(fan_in))


def test_embedding_norm_and_batchnorm_default_init() -> None:
    emb = nn.Embedding(500, 64, padding_idx=3).weight.detach().numpy()
    assert np.all(emb[3] == 0)
    rest = np.delete(emb, 3, axis=0)
    assert abs(rest.mean()) < 0.02 and abs(rest.std() - 1) < 0.02
    ln = nn.LayerNorm(5)
    assert ln.weight.tolist() == [1.0] * 5 and ln.bias.tolist() == [0.0] * 5
    bn = nn.BatchNorm2d(3)
    assert bn.running_mean.tolist() == [0.0] * 3 and bn.running_var.tolist() == [1.0] * 3
    assert bn.num_batches_tracked.dtype == engine.int64 and bn.num_batches_tracked.item() == 0


def test_module_init_is_seeded_by_the_engine_stream() -> None:
    engine.manual_seed(7)
    a = nn.Linear(4, 3).weight.detach().numpy()
    engine.manual_seed(7)
    assert np.array_equal(nn.Linear(4, 3).weight.detach().numpy(), a)


def test_initialisers_follow_pytorch_formulas() -> None:
    assert init.calculate_gain("relu") == math.sqrt(2)
    assert init.calculate_gain("tanh") == 5 / 3
    assert init.calculate_gain("leaky_relu") == math.sqrt(2 / (1 + 0.01**2))
    assert init.calculate_gain("leaky_relu", 0.2) == math.sqrt(2 / 1.04)
    assert init.calculate_gain("conv2d") == 1 and init.calculate_gain("selu") == 0.75
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("nope")
    w = engine.empty(200, 100, 3, 3)
    assert init._calculate_fan_in_and_fan_out(w) == (900, 1800)
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init._calculate_fan_in_and_fan_out(engine.empty(3))
    big = engine.empty(300, 200)
    _uniform_stats(init.xavier_uniform_(big, gain=2.0).numpy(), 2 * math.sqrt(6 / 500))
    _uniform_stats(init.kaiming_uniform_(big).numpy(), math.sqrt(2) * math.sqrt(3 / 200))
    std = init.xavier_normal_(big).numpy().std()
    assert abs(std / math.sqrt(2 / 500) - 1) < 0.03
    std = init.kaiming_normal_(big, mode="fan_out", nonlinearity="relu").numpy().std()
    assert abs(std / (math.sqrt(2) / math.sqrt(300)) - 1) < 0.03
    t = init.trunc_normal_(big, mean=1.0, std=2.0, a=-1.0, b=2.0).numpy()
    assert t.min() >= -1.0 and t.max() <= 2.0 and t.min() < -0.99 and t.max() > 1.99
    with pytest.warns(UserWarning, match="more than 2 std"):
        far = init.trunc_normal_(engine.empty(1000), a=5.0, b=6.0).numpy()
    assert far.min() >= 5.0 and far.max() <= 6.0 and abs(far.mean() - 5.1865) < 0.02
    # a truncated N(1, 4) on [-1, 2]: mean 1 + 2 (phi(-1) - phi(0.5)) / (Phi(0.5) - Phi(-1))
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    mean = 1 + 2 * (pdf(-1) - pdf(0.5)) / (cdf(0.5) - cdf(-1))
    assert abs(t.mean() - mean) < 0.02
    assert init.constant_(engine.empty(2), 3.0).tolist() == [3.0, 3.0]
    assert init.ones_(engine.empty(2)).tolist() == [1.0, 1.0]
    assert init.zeros_(engine.ones(2)).tolist() == [0.0, 0.0]


def test_initialisers_take_a_generator_and_work_on_parameters() -> None:
    p = nn.Parameter(engine.empty(5, 4))
    a = init.normal_(p, generator=engine.Generator().manual_seed(1)).detach().numpy()
    b = init.normal_(p, generator=engine.Generator().manual_seed(1)).detach().numpy()
    assert np.array_equal(a, b)
    for fn in (init.uniform_, init.xavier_uniform_, init.kaiming_normal_, init.trunc_normal_):
        x = fn(p, generator=engine.Generator().manual_seed(2)).detach().numpy()
        y = fn(p, generator=engine.Generator().manual_seed(2)).detach().numpy()
        assert np.array_equal(x, y), fn.__name__
    assert p.requires_grad and p.grad_fn is None


# ---- dropout and batch norm behaviour -----------------------------------------------------
def test_dropout_masks_follow_the_seed_and_scale_by_one_over_keep() -> None:
    x = engine.ones(200, 100, requires_grad=True)
    drop = nn.Dropout(0.3)
    engine.manual_seed(5)
    a = drop(x)
    engine.manual_seed(5)
    b = drop(x)
    assert np.array_equal(a.detach().numpy(), b.detach().numpy())
    values = set(np.unique(a.detach().numpy()).tolist())
    assert values == {0.0, np.float32(1 / 0.7).item()}
    assert abs((a.detach().numpy() == 0).mean() - 0.3) < 0.01
    a.sum().backward()
    assert np.array_equal(x.grad.numpy(), a.detach().numpy())  # the same mask, scaled
    g = engine.Generator().manual_seed(9)
    c = F.dropout(x.detach(), 0.3, generator=g)
    d = F.dropout(x.detach(), 0.3, generator=engine.Generator().manual_seed(9))
    assert np.array_equal(c.numpy(), d.numpy())
    drop.eval()
    assert drop(x) is x
    assert F.dropout(x, 0.0) is x
    assert F.dropout(x, 1.0).detach().numpy().max() == 0
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)


def test_batchnorm_cumulative_average_over_several_steps() -> None:
    bn = nn.BatchNorm1d(3, momentum=None)
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((8, 3)).astype(np.float32) for _ in range(3)]
    for b in batches:
        bn(engine.tensor(b))
    expected_mean = np.mean([b.mean(0) for b in batches], axis=0)
    expected_var = np.mean([b.var(0, ddof=1) for b in batches], axis=0)
    assert_agree(bn.running_mean.numpy(), expected_mean, what="running_mean")
    assert_agree(bn.running_var.numpy(), expected_var, what="running_var")
    assert bn.num_batches_tracked.item() == 3
    bn.eval()
    x = engine.tensor(batches[0])
    y = bn(x).detach().numpy()
    assert_agree(y, (batches[0] - expected_mean) / np.sqrt(expected_var + 1e-5), what="eval")
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn.train()(engine.ones(1, 3))
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        bn(engine.ones(2, 3, 4, 5))


# ---- finite differences in float64 --------------------------------------------------------
def _w(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


FD_CASES: dict[str, tuple[Any, list[np.ndarray]]] = {
    "linear": (F.linear, [_w((2, 3, 4), 0), _w((3, 4), 1), _w((3,), 2)]),
    "gelu": (F.gelu, [_w((3, 4), 3)]),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), [_w((3, 4), 4)]),
    "silu": (F.silu, [_w((3, 4), 5)]),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), [_w((3, 4), 6) + 0.05]),
    "layer_norm": (
        lambda x, w, b: F.layer_norm(x, (4,), w, b),
        [_w((3, 4), 7), _w((4,), 8), _w((4,), 9)],
    ),
    "batch_norm_train": (
        lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
        [_w((4, 2, 3), 10), _w((2,), 11), _w((2,), 12)],
    ),
    "batch_norm_eval": (
        lambda x, w: F.batch_norm(
            x, engine.tensor([0.1, -0.2]), engine.tensor([1.5, 0.5]), w, training=False
        ),
        [_w((3, 2, 2), 13), _w((2,), 14)],
    ),
    "conv2d": (
        lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2), groups=2),
        [_w((2, 4, 5, 5), 15), _w((4, 2, 2, 2), 16), _w((4,), 17)],
    ),
    "max_pool2d": (lambda x: F.max_pool2d(x, 3, 2, padding=1), [_w((1, 2, 5, 5), 18)]),
    "avg_pool2d": (
        lambda x: F.avg_pool2d(x, 3, 2, padding=1, ceil_mode=True, count_include_pad=False),
        [_w((1, 2, 6, 5), 19)],
    ),
    "embedding": (
        lambda w: F.embedding(engine.tensor([[0, 2, 2], [3, 1, 0]]), w),
        [_w((4, 3), 20)],
    ),
    "pad_reflect": (lambda x: F.pad(x, (2, 1), "reflect"), [_w((2, 4), 21)]),
    "pad_constant": (lambda x: F.pad(x, (1, -1, 2, 0), value=3.0), [_w((2, 3), 22)]),
}


def _scalar(fn: Any, arrays: list[np.ndarray], gy: np.ndarray) -> float:
    with engine.no_grad():
        out = fn(*[engine.tensor(a) for a in arrays]).numpy()
    return float(np.sum(out * gy))


@pytest.mark.parametrize("name", sorted(FD_CASES))
def test_gradient_matches_finite_differences(name: str) -> None:
    fn, arrays = FD_CASES[name]
    tensors = [engine.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    gy = np.random.default_rng(99).standard_normal(out.shape)
    (out * engine.tensor(gy)).sum().backward()
    h = 1e-6
    for i, t in enumerate(tensors):
        numeric = np.zeros_like(arrays[i])
        for k in np.ndindex(arrays[i].shape):
            plus = [a.copy() for a in arrays]
            minus = [a.copy() for a in arrays]
            plus[i][k] += h
            minus[i][k] -= h
            numeric[k] = (_scalar(fn, plus, gy) - _scalar(fn, minus, gy)) / (2 * h)
        analytic = t.grad.numpy() if t.grad is not None else np.zeros_like(numeric)
        assert analytic.dtype == np.float64
        assert_agree(analytic, numeric, rtol=1e-5, atol=1e-6, what=f"{name} input {i}")


# ---- 16-bit inputs and erf ----------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_layers_agree_with_float32(dtype: str) -> None:
    tol = {"float16": 1e-2, "bfloat16": 5e-2}[dtype]
    engine.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.GELU(),
        nn.MaxPool2d(2),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.LayerNorm(16),
        nn.SiLU(),
        nn.Linear(16, 3),
    )
    x = engine.randn(2, 2, 8, 8)
    want = model(x).detach().numpy()
    low = getattr(engine, dtype)
    model.to(low)
    xl = x.to(low).requires_grad_()
    out = model(xl)
    assert out.dtype == low
    out.float().sum().backward()
    assert xl.grad.dtype == low and model[0].weight.grad.dtype == low
    assert_agree(out.float().detach().numpy(), want, rtol=tol, atol=tol, what=dtype)


def test_erfc_is_accurate_relative_to_its_value_in_both_tails() -> None:
    x = np.concatenate([np.linspace(-7, 7, 20001), [0.0, 1e-30, -1e-8, 9.0, -30.0]])
    want = np.array([math.erfc(v) for v in x])
    got = engine.device("cpu").ops.erfc(x)
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=0)
    assert engine.device("cpu").ops.erfc(np.ones(2, np.float32)).dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_normal_cdf_is_accurate(dtype: Any) -> None:
    x = np.concatenate([np.linspace(-12, 12, 40001), [0.0, 1e-30, -1e-8]]).astype(dtype)
    want = np.array([0.5 * math.erfc(-float(v) / math.sqrt(2)) for v in x])
    got = engine.device("cpu").ops.normal_cdf(x)
    assert got.dtype == dtype
    if dtype == np.float64:
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
    else:  # interpolation (3e-8) plus float32 rounding (ulp 6e-8 near 1)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)


def test_functional_errors_name_the_op() -> None:
    with pytest.raises(engine.ShapeError, match="linear"):
        F.linear(engine.ones(2, 3), engine.ones(4, 5))
    with pytest.raises(engine.ShapeError, match="conv2d"):
        F.conv2d(engine.ones(1, 3, 5, 5), engine.ones(2, 2, 3, 3))
    with pytest.raises(IndexError, match="embedding"):
        F.embedding(engine.tensor([5]), engine.ones(3, 2))
    with pytest.raises(ValueError, match="strided"):
        nn.Conv2d(1, 1, 3, stride=2, padding="same")
    with pytest.raises(engine.ShapeError, match="layer_norm"):
        F.layer_norm(engine.ones(2, 3), (4,))
