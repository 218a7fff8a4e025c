"""Every differentiable op against PyTorch's fixtures and against finite differences.

Cases live in op_cases.py; the fixtures come from make_fixtures.py run with PyTorch.
Each case runs on contiguous and on non-contiguous inputs holding the same values.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agree import assert_agree
from conftest import DEVICES
from fixture_meta import FIXTURES, check_meta
from op_cases import CASES, INPLACE, Case

import engine

HERE = Path(__file__).resolve().parent
BY_NAME = {c.name: c for c in CASES + INPLACE}


@pytest.fixture(scope="module")
def ref() -> Any:
    return np.load(FIXTURES / "ops.npz")


def test_fixtures_match_the_script_that_made_them() -> None:
    meta = check_meta("ops")
    assert meta["cases"] == [c.name for c in CASES + INPLACE]


# Tensor-section names that are no differentiable op of their own, and why.
NOT_OPS = {
    "shape",
    "dtype",
    "device",
    "ndim",
    "requires_grad",
    "grad",
    "is_leaf",
    "grad_fn",
    "data",  # attributes: tests/test_tensor.py
    "numpy()",
    "tolist()",
    "item()",
    "cpu()",
    "cuda(index=None)",
    "to_device(device)",
    "size(dim=None)",
    "numel()",
    "dim()",  # conversions and sizes: tests/test_tensor.py
    "__setitem__",
    "uniform_",
    "normal_",
    "requires_grad_()",  # tests/test_inplace.py
    "backward(gradient=None, retain_graph=False)",
    "register_hook(fn) -> handle",
    "handle.remove()",
    ".grad",  # autograd itself: tests/test_autograd.py
    "engine.ShapeError",
    "engine.DeviceError",
    "TypeError",
    "RuntimeError",
    "dim",
    "keepdim",
    "(values, indices)",  # arguments and results named in the prose
}
OPERATORS = {"+", "-", "*", "/", "**", "@", "==", "!=", "<", "<=", ">", ">="}


def _api_tensor_names() -> set[str]:
    text = (HERE.parent / "docs" / "API.md").read_text()
    section = text.split("## `Tensor`", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for token in re.findall(r"`([^`]+)`", section):
        if token.startswith("unary"):
            names.add("unary -")
            continue
        parts = token.split() if set(token.split()) <= OPERATORS else [token]
        names.update(parts)
    names.update(["unary -"])
    return names


def _bare(name: str) -> str:
    return re.sub(r"\(.*$", "", name)


def test_every_public_tensor_op_has_a_case() -> None:
    covered = {n for c in CASES + INPLACE for n in c.covers}
    missing = sorted(
        n
        for n in _api_tensor_names()
        if n not in NOT_OPS and _bare(n) not in covered and n not in covered
    )
    assert not missing, f"API.md Tensor ops with no case in tests/op_cases.py: {missing}"


def _inputs(case: Case, ref: Any, device: str, layout: str, dtype: Any = None) -> list[Any]:
    tensors = []
    for i, spec in enumerate(case.inputs):
        a = ref[f"{case.name}/in{i}"]
        if dtype is not None and a.dtype == np.float32:
            a = a.astype(dtype)
        if layout == "strided" and a.ndim >= 1 and a.size > 1:
            wide = np.zeros((*a.shape, 2), dtype=a.dtype)
            wide[..., 0] = a
            t = engine.from_numpy(wide).to(device)[..., 0].detach()
            assert not t.is_contiguous()
        else:
            t = engine.tensor(a, device=device)
        if spec.grad and t.dtype.is_floating_point:
            t.requires_grad_()
        tensors.append(t)
    return tensors


def _outputs(out: Any) -> list[Any]:
    return list(out) if isinstance(out, tuple | list) else [out]


def _run(case: Case, ref: Any, device: str, layout: str) -> tuple[list[Any], list[Any]]:
    tensors = _inputs(case, ref, device, layout)
    outs = _outputs(case.fn(engine, *tensors))
    total = None
    for j, o in enumerate(outs):
        key = f"{case.name}/gy{j}"
        if key in ref:
            assert o.requires_grad, f"output {j} should require grad"
            gy = engine.tensor(ref[key], device=device)
            term = (o * gy).sum()
            total = term if total is None else total + term
        else:
            assert not o.requires_grad, f"output {j} should not require grad"
    if total is not None:
        total.backward()
    return tensors, outs


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_op_matches_pytorch(name: str, layout: str, device: str, ref: Any) -> None:
    case = BY_NAME[name]
    tensors, outs = _run(case, ref, device, layout)
    for j, o in enumerate(outs):
        expected = ref[f"{name}/out{j}"]
        assert str(o.dtype) == f"engine.{expected.dtype}", f"output {j} dtype"
        assert_agree(o.detach().cpu().numpy(), expected, what=f"{name} output {j}")
    for i, t in enumerate(tensors):
        key = f"{name}/grad{i}"
        if key in ref:
            assert t.grad is not None, f"input {i} got no gradient"
            assert t.grad.shape == t.shape and t.grad.dtype == t.dtype
            assert_agree(t.grad.cpu().numpy(), ref[key], what=f"{name} grad of input {i}")
        elif t.requires_grad:
            assert t.grad is None, f"input {i} got a gradient PyTorch does not give"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", [c.name for c in INPLACE])
def test_inplace_matches_pytorch(name: str, device: str, ref: Any) -> None:
    case = BY_NAME[name]
    tensors = [engine.tensor(ref[f"{name}/in{i}"], device=device) for i in range(len(case.inputs))]
    out = case.fn(engine, *tensors)
    assert_agree(out.cpu().numpy(), ref[f"{name}/out0"], what=name)


def _loss(case: Case, args: list[Any], gys: dict[int, np.ndarray]) -> float:
    with engine.no_grad():
        outs = _outputs(case.fn(engine, *args))
    return float(sum(np.sum(outs[j].numpy().astype(np.float64) * g) for j, g in gys.items()))


def _differentiable() -> list[str]:
    keys = np.load(FIXTURES / "ops.npz").files
    return [c.name for c in CASES if c.fd and any(k.startswith(f"{c.name}/grad") for k in keys)]


@pytest.mark.parametrize("name", _differentiable())
def test_gradient_matches_finite_differences(name: str, ref: Any) -> None:
    case = BY_NAME[name]
    tensors = _inputs(case, ref, "cpu", "contiguous", dtype=np.float64)
    outs = _outputs(case.fn(engine, *tensors))
    gys = {
        j: ref[f"{name}/gy{j}"].astype(np.float64)
        for j in range(len(outs))
        if f"{name}/gy{j}" in ref
    }
    total = sum((outs[j] * engine.tensor(g)).sum() for j, g in gys.items())
    total.backward()
    h = 1e-6
    for i, t in enumerate(tensors):
        if not t.requires_grad:
            continue
        base = t.detach().numpy()
        numeric = np.zeros_like(base)
        for k in np.ndindex(base.shape):
            args = [x.detach() for x in tensors]
            plus, minus = base.copy(), base.copy()
            plus[k] += h
            minus[k] -= h
            args[i] = engine.tensor(plus)
            f_plus = _loss(case, args, gys)
            args[i] = engine.tensor(minus)
            numeric[k] = (f_plus - _loss(case, args, gys)) / (2 * h)
        analytic = t.grad.numpy() if t.grad is not None else np.zeros_like(base)
        assert_agree(analytic, numeric, rtol=1e-5, atol=1e-6, what=f"{name} input {i}")
