"""engine.optim against PyTorch: optimizer trajectories and state dicts, schedulers' lrs.

The references come from tests/make_optim_fixtures.py (torch 2.13.0); the configs are
read back from its json, so both sides run the same options on the same gradients.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest
from agree import assert_agree
from conftest import DEVICES
from fixture_meta import FIXTURES, check_meta

import engine
from engine import optim
from engine.optim import lr_scheduler

META = json.loads((FIXTURES / "optim.json").read_text())
DATA = np.load(FIXTURES / "optim.npz")
OPTIMIZERS = {cfg["name"]: cfg for cfg in META["optimizers"]}
SCHEDULERS = {cfg["name"]: cfg for cfg in META["schedulers"]}
STEPS = META["steps"]


def test_fixtures_are_current() -> None:
    check_meta("optim")


# ---- optimizers -------------------------------------------------------------------------


def build(cfg: dict[str, Any], arrays: list[np.ndarray], device: str = "cpu") -> Any:
    params = [engine.tensor(a, device=device, requires_grad=True) for a in arrays]
    cls = getattr(optim, cfg["cls"])
    kwargs = {k: tuple(v) if k == "betas" else v for k, v in cfg["kwargs"].items()}
    groups = cfg.get("groups")
    if groups is None:
        return params, cls(params, **kwargs)
    spec = [{**g, "params": [params[i] for i in g["params"]]} for g in groups]
    return params, cls(spec, **kwargs)


def initial(cfg: dict[str, Any]) -> list[np.ndarray]:
    return [DATA[f"{cfg['name']}/init{i}"] for i in range(len(META["shapes"]))]


def take_step(cfg: dict[str, Any], params: list[Any], opt: Any, step: int, device: str) -> None:
    skip = {tuple(s) for s in cfg.get("skip", [])}
    for i, p in enumerate(params):
        g = DATA[f"{cfg['name']}/grads{i}"][step]
        p.grad = None if (step, i) in skip else engine.tensor(g, device=device)
    opt.step()


def run(cfg: dict[str, Any], device: str = "cpu") -> tuple[list[Any], Any, list[list[Any]]]:
    params, opt = build(cfg, initial(cfg), device)
    trajectory = []
    for step in range(STEPS):
        take_step(cfg, params, opt, step, device)
        trajectory.append([p.detach().numpy() for p in params])
    return params, opt, trajectory


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_trajectory_agrees_with_pytorch(name: str) -> None:
    cfg = OPTIMIZERS[name]
    _, _, trajectory = run(cfg)
    for step, values in enumerate(trajectory):
        for i, value in enumerate(values):
            expected = DATA[f"{name}/traj{i}"][step]
            assert_agree(value, expected, what=f"{name} step {step} param {i}")


def plain(value: Any) -> Any:
    """A param group's option as the fixture's json holds it (tuples became lists)."""
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_dict_matches_pytorch(name: str) -> None:
    cfg = OPTIMIZERS[name]
    _, opt, _ = run(cfg)
    sd = opt.state_dict()
    assert list(sd["state"]) == cfg["state_order"]
    groups = [{k: plain(v) for k, v in g.items()} for g in sd["param_groups"]]
    assert groups == cfg["param_groups"]
    for idx, entry in sd["state"].items():
        assert list(entry) == cfg["state_keys"][str(idx)]
        for key, value in entry.items():
            expected = DATA[f"{name}/state/{idx}/{key}"]
            assert isinstance(value, engine.Tensor)
            assert value.dtype == engine.float32
            if key == "step":
                assert value.shape == () and value.device == engine.device("cpu")
                assert value.item() == expected.item()
            else:
                assert_agree(value.numpy(), expected, 1e-4, 1e-5, what=f"{name} {idx}/{key}")


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_dict_round_trip_continues_identically(name: str) -> None:
    cfg = OPTIMIZERS[name]
    params, opt = build(cfg, initial(cfg))
    half = STEPS // 2
    for step in range(half):
        take_step(cfg, params, opt, step, "cpu")
    saved = copy.deepcopy(opt.state_dict())
    snapshot = [p.detach().numpy() for p in params]
    for step in range(half, STEPS):
        take_step(cfg, params, opt, step, "cpu")

    resumed, opt2 = build(cfg, snapshot)
    opt2.load_state_dict(saved)
    for step in range(half, STEPS):
        take_step(cfg, resumed, opt2, step, "cpu")
    for a, b in zip(resumed, params, strict=True):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_load_state_dict_copies_and_casts() -> None:
    p = engine.zeros(3, requires_grad=True)
    opt = optim.Adam([p])
    p.grad = engine.ones(3)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][0]["exp_avg"] = sd["state"][0]["exp_avg"].double()
    q = engine.zeros(3, requires_grad=True)
    opt2 = optim.Adam([q])
    opt2.load_state_dict(sd)
    state = opt2.state[q]
    assert state["exp_avg"].dtype == engine.float32
    assert state["step"].dtype == engine.float32 and state["step"].item() == 1.0
    assert state["exp_avg_sq"] is not sd["state"][0]["exp_avg_sq"]
    q.grad = engine.ones(3)
    opt2.step()
    assert sd["state"][0]["step"].item() == 1.0  # the loaded dict is not written to


def test_load_state_dict_rejects_mismatches() -> None:
    a = engine.zeros(2, 3, requires_grad=True)
    b = engine.zeros(4, requires_grad=True)
    opt = optim.Adam([a, b])
    a.grad, b.grad = engine.ones(2, 3), engine.ones(4)
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="different number of parameter groups"):
        optim.Adam([{"params": [a]}, {"params": [b]}]).load_state_dict(sd)
    with pytest.raises(ValueError, match="doesn't match the size"):
        optim.Adam([a]).load_state_dict(sd)
    swapped = [engine.zeros(4, requires_grad=True), engine.zeros(2, 3, requires_grad=True)]
    with pytest.raises(ValueError, match=r"shape \(2, 3\), but parameter 0 has shape \(4,\)"):
        optim.Adam(swapped).load_state_dict(sd)


def test_param_groups_take_their_own_options() -> None:
    a = engine.ones(2, requires_grad=True)
    b = engine.ones(2, requires_grad=True)
    opt = optim.SGD([{"params": [a], "lr": 0.5}, {"params": b}], lr=0.1, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.1]
    assert opt.param_groups[1]["momentum"] == 0.9
    a.grad, b.grad = engine.ones(2), engine.ones(2)
    opt.step()
    np.testing.assert_allclose(a.detach().numpy(), [0.5, 0.5])
    np.testing.assert_allclose(b.detach().numpy(), [0.9, 0.9])
    c = engine.ones(1, requires_grad=True)
    opt.add_param_group({"params": [c], "lr": 0.01})
    assert opt.param_groups[2]["lr"] == 0.01 and opt.param_groups[2]["momentum"] == 0.9
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [a]})


def test_zero_grad() -> None:
    p = engine.ones(3, requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    (p * 2).sum().backward()
    grad = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is grad
    np.testing.assert_array_equal(grad.numpy(), np.zeros(3, np.float32))
    opt.zero_grad()
    assert p.grad is None


def test_step_skips_params_without_grad() -> None:
    a = engine.ones(2, requires_grad=True)
    b = engine.ones(2, requires_grad=True)
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = engine.ones(2)
    opt.step()
    assert b not in opt.state
    np.testing.assert_array_equal(b.detach().numpy(), np.ones(2, np.float32))


def test_closure_runs_with_grad_and_step_returns_its_loss() -> None:
    p = engine.tensor([1.0, -2.0], requires_grad=True)
    opt = optim.SGD([p], lr=0.1)

    def closure() -> engine.Tensor:
        assert engine.is_grad_enabled()
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with engine.no_grad():
        loss = opt.step(closure)
    assert loss.item() == 5.0
    np.testing.assert_allclose(p.detach().numpy(), [0.8, -1.6], rtol=1e-6)


def test_step_bumps_the_parameter_version() -> None:
    p = engine.ones(2, requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    y = (p * p).sum()
    p.grad = engine.ones(2)
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        y.backward()


def test_repr_is_pytorchs() -> None:
    opt = optim.SGD([engine.zeros(1, requires_grad=True)], lr=0.1)
    assert repr(opt) == (
        "SGD (\nParameter Group 0\n    dampening: 0\n    differentiable: False\n"
        "    foreach: None\n    fused: None\n    lr: 0.1\n    maximize: False\n"
        "    momentum: 0\n    nesterov: False\n    weight_decay: 0\n)"
    )


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam, optim.AdamW, optim.RMSprop, optim.Adagrad])
def test_errors(cls: Any) -> None:
    leaf = engine.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        cls([leaf], lr=-0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        cls([leaf * 2], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        cls([{"params": [leaf]}, {"params": [leaf]}], lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        cls([], lr=0.1)
    with pytest.raises(TypeError, match="iterable of Tensors"):
        cls(leaf, lr=0.1)
    with pytest.raises(TypeError, match="can only optimize Tensors"):
        cls([np.ones(2)], lr=0.1)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        cls([leaf, leaf], lr=0.1)


def test_option_errors() -> None:
    p = [engine.ones(1, requires_grad=True)]
    with pytest.raises(ValueError, match="Nesterov momentum requires"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1"):
        optim.Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="Invalid alpha"):
        optim.RMSprop(p, alpha=-1)
    with pytest.raises(ValueError, match="Invalid lr_decay"):
        optim.Adagrad(p, lr_decay=-1)
    with pytest.raises(NotImplementedError, match="differentiable"):
        optim.Adam(p, differentiable=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["sgd_momentum", "adam_amsgrad", "rmsprop_centered"])
def test_devices_agree_with_pytorch(device: str, name: str) -> None:
    cfg = OPTIMIZERS[name]
    params, opt, _ = run(cfg, device)
    for i, p in enumerate(params):
        assert p.device.type == device
        assert_agree(p.detach().numpy(), DATA[f"{name}/traj{i}"][-1], 1e-4, 1e-5)
    for entry in opt.state.values():
        # PyTorch keeps `step` on the CPU for every device: no GPU read-back per step.
        assert "step" not in entry or entry["step"].device.type == "cpu"
        assert all(v.device.type == device for k, v in entry.items() if k != "step")


# ---- schedulers ---------------------------------------------------------------------------


def inverse(epoch: int) -> float:
    """The fixture script's LambdaLR function "inverse"."""
    return 1 / (1 + 0.1 * epoch)


def make_scheduler(opt: Any, cls: str, kwargs: dict[str, Any]) -> Any:
    kwargs = dict(kwargs)
    if cls == "LambdaLR":
        kwargs["lr_lambda"] = inverse
    if cls == "SequentialLR":
        kwargs["schedulers"] = [make_scheduler(opt, c, k) for c, k in kwargs["schedulers"]]
    return getattr(lr_scheduler, cls)(opt, **kwargs)


def make_optimizer(cfg: dict[str, Any]) -> Any:
    groups = [
        {"params": [engine.zeros(2, requires_grad=True)], "lr": 0.1},
        {"params": [engine.zeros(3, requires_grad=True)], "lr": 0.02},
    ]
    if cfg.get("optimizer", "SGD") == "Adam":
        return optim.Adam(groups)
    return optim.SGD(groups, momentum=0.9)


def step_scheduler(cfg: dict[str, Any], opt: Any, sched: Any, step: int) -> None:
    opt.step()
    if "metric_values" in cfg:
        sched.step(cfg["metric_values"][step])
    else:
        sched.step()


def momenta(opt: Any) -> list[float]:
    return [g["betas"][0] if "betas" in g else g["momentum"] for g in opt.param_groups]


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_lrs_agree_with_pytorch(name: str) -> None:
    cfg = SCHEDULERS[name]
    opt = make_optimizer(cfg)
    sched = make_scheduler(opt, *cfg["sched"])
    lrs, moms = [list(sched.get_last_lr())], [momenta(opt)]
    for step in range(META["sched_steps"]):
        step_scheduler(cfg, opt, sched, step)
        lrs.append(list(sched.get_last_lr()))
        moms.append(momenta(opt))
        assert [g["lr"] for g in opt.param_groups] == lrs[-1]
    np.testing.assert_allclose(np.array(lrs), DATA[f"sched/{name}/lrs"], rtol=1e-6, atol=0)
    if f"sched/{name}/momenta" in DATA:
        np.testing.assert_allclose(np.array(moms), DATA[f"sched/{name}/momenta"], rtol=1e-6)
    if cfg["state_keys"] is not None:
        assert sorted(sched.state_dict()) == cfg["state_keys"]


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_state_dict_round_trip(name: str) -> None:
    cfg = SCHEDULERS[name]
    total = META["sched_steps"]
    opt = make_optimizer(cfg)
    sched = make_scheduler(opt, *cfg["sched"])
    for step in range(total // 2):
        step_scheduler(cfg, opt, sched, step)
    saved_opt = copy.deepcopy(opt.state_dict())
    saved = copy.deepcopy(sched.state_dict())

    opt2 = make_optimizer(cfg)
    sched2 = make_scheduler(opt2, *cfg["sched"])
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved)
    assert sched2.get_last_lr() == sched.get_last_lr()
    for step in range(total // 2, total):
        step_scheduler(cfg, opt, sched, step)
        step_scheduler(cfg, opt2, sched2, step)
        assert sched2.get_last_lr() == sched.get_last_lr()
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_lambda_lr_state_dict_stores_no_functions() -> None:
    opt = make_optimizer({})
    sched = lr_scheduler.LambdaLR(opt, [inverse, lambda e: 0.5])
    assert sched.state_dict()["lr_lambdas"] == [None, None]


def test_warmup_cosine_starts_at_zero_and_ends_at_min_lr() -> None:
    opt = make_optimizer({})
    sched = lr_scheduler.WarmupCosineLR(opt, warmup_steps=4, total_steps=8, min_lr=0.01)
    seen = [sched.get_last_lr()[0]]
    for _ in range(10):
        opt.step()
        sched.step()
        seen.append(sched.get_last_lr()[0])
    assert seen[0] == 0.0
    assert seen[4] == pytest.approx(0.1)
    assert seen[8:] == [pytest.approx(0.01)] * 3
    with pytest.raises(ValueError, match="total_steps"):
        lr_scheduler.WarmupCosineLR(opt, warmup_steps=5, total_steps=3)


def test_scheduler_warns_when_stepped_before_the_optimizer() -> None:
    opt = make_optimizer({})
    sched = lr_scheduler.StepLR(opt, step_size=2)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        sched.step()
