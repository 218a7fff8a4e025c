"""engine.nn.Module's behaviour: registration, traversal, state dicts, modes, moves, hooks."""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import numpy as np
import pytest

import engine
from engine import nn


class Affine(nn.Module):
    """A minimal layer made only of core ops, so these tests need no layer library."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(engine.randn(n_out, n_in))
        self.bias = nn.Parameter(engine.zeros(n_out))
        self.register_buffer("calls", engine.zeros((), dtype=engine.int64))
        self.register_buffer("scratch", engine.zeros(2), persistent=False)

    def forward(self, x: engine.Tensor) -> engine.Tensor:
        return x @ self.weight.T + self.bias


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = Affine(4, 3)
        self.blocks = nn.Sequential(Affine(3, 3), nn.Identity())
        self.heads = nn.ModuleDict({"a": Affine(3, 2)})
        self.shared = self.fc1  # the same module twice: listed once

    def forward(self, x: engine.Tensor) -> engine.Tensor:
        return self.heads["a"](self.blocks(self.fc1(x)))


def test_assignment_registers_parameters_buffers_and_children() -> None:
    net = Net()
    assert [n for n, _ in net.named_parameters()] == [
        "fc1.weight",
        "fc1.bias",
        "blocks.0.weight",
        "blocks.0.bias",
        "heads.a.weight",
        "heads.a.bias",
    ]
    assert [n for n, _ in net.named_buffers()] == [
        "fc1.calls",
        "fc1.scratch",
        "blocks.0.calls",
        "blocks.0.scratch",
        "heads.a.calls",
        "heads.a.scratch",
    ]
    assert [n for n, _ in net.named_children()] == ["fc1", "blocks", "heads"]
    assert [n for n, _ in net.named_modules()] == [
        "",
        "fc1",
        "blocks",
        "blocks.0",
        "blocks.1",
        "heads",
        "heads.a",
    ]
    assert len(list(net.parameters())) == 6
    assert "weight" not in net.fc1.__dict__  # lives in _parameters, found by __getattr__
    assert net.get_submodule("blocks.0") is net.blocks[0]
    assert net.get_parameter("heads.a.bias") is net.heads["a"].bias


def test_state_dict_holds_persistent_tensors_detached_under_dotted_keys() -> None:
    net = Net()
    sd = net.state_dict()
    # a shared module appears under each of its names, as in PyTorch's state dicts
    expected = [
        f"{m}.{t}"
        for m in ("fc1", "blocks.0", "heads.a", "shared")
        for t in ("weight", "bias", "calls")
    ]
    assert list(sd) == expected
    assert not sd["fc1.weight"].requires_grad
    assert net.state_dict(keep_vars=True)["fc1.weight"] is net.fc1.weight


def test_load_state_dict_copies_values_and_reports_keys() -> None:
    src, dst = Net(), Net()
    assert dst.load_state_dict(src.state_dict()) == ([], [])
    np.testing.assert_array_equal(dst.fc1.weight.detach().numpy(), src.fc1.weight.detach().numpy())
    partial = {"fc1.weight": src.fc1.weight.detach(), "extra.weight": engine.zeros(1)}
    result = dst.load_state_dict(partial, strict=False)
    assert result.unexpected_keys == ["extra.weight"]
    assert "fc1.bias" in result.missing_keys and "fc1.weight" not in result.missing_keys
    with pytest.raises(RuntimeError, match=r'Missing key\(s\).*"fc1.bias"'):
        dst.load_state_dict(partial)
    with pytest.raises(RuntimeError, match=r"size mismatch for fc1\.weight"):
        dst.load_state_dict({**src.state_dict(), "fc1.weight": engine.zeros(2, 2)})


def test_load_state_dict_accepts_numpy_arrays_and_keeps_the_parameter_objects() -> None:
    net = Net()
    weight = net.fc1.weight
    arrays = {k: np.asarray(v.numpy() + 1) for k, v in net.state_dict().items()}
    net.load_state_dict(arrays)
    assert net.fc1.weight is weight
    np.testing.assert_array_equal(weight.detach().numpy(), arrays["fc1.weight"])


def test_train_and_eval_reach_every_submodule() -> None:
    net = Net()
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_to_dtype_moves_floats_only_and_keeps_parameters() -> None:
    net = Net()
    weight = net.fc1.weight
    net.fc1.weight.grad = engine.ones(3, 4)
    net.to(engine.float64)
    assert net.fc1.weight is weight and weight.dtype is engine.float64
    assert weight.grad.dtype is engine.float64
    assert net.fc1.calls.dtype is engine.int64
    assert net.double().half().fc1.bias.dtype is engine.float16
    with pytest.raises(TypeError, match="floating point"):
        net.to(engine.int64)


def test_zero_grad_sets_none_or_zeros() -> None:
    net = Net()
    net(engine.randn(2, 4)).sum().backward()
    net.zero_grad(set_to_none=False)
    assert all(float(p.grad.abs().sum()) == 0.0 for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_apply_visits_children_before_parents() -> None:
    order: list[str] = []
    Net().apply(lambda m: order.append(type(m).__name__))
    assert order == ["Affine", "Affine", "Identity", "Sequential", "Affine", "ModuleDict", "Net"]


def test_registration_errors_are_clear() -> None:
    class Early(nn.Module):
        def __init__(self) -> None:
            self.w = nn.Parameter(engine.zeros(1))

    with pytest.raises(AttributeError, match=r"before Module\.__init__"):
        Early()
    net = Net()
    with pytest.raises(TypeError, match="parameter 'weight'"):
        net.fc1.weight = engine.zeros(3, 4)
    with pytest.raises(KeyError, match="attribute 'forward' already exists"):
        net.register_buffer("forward", engine.zeros(1))
    with pytest.raises(KeyError, match="contain"):
        net.register_parameter("a.b", None)
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        _ = net.missing
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(engine.zeros(1))


def test_deleting_and_reassigning_attributes() -> None:
    net = Net()
    del net.fc1
    assert "fc1" not in dict(net.named_children())
    net.fc1 = None  # a plain attribute now
    net.blocks = None  # a registered child may be set to None
    assert net.blocks is None and "blocks" not in dict(net.named_children())


def test_forward_pre_hook_and_forward_hook_rewrite_args_and_output() -> None:
    layer = Affine(2, 2)
    x = engine.ones(1, 2)
    pre = layer.register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    post = layer.register_forward_hook(lambda m, args, out: out + 1)
    np.testing.assert_array_equal(
        layer(x).detach().numpy(), np.ones((1, 2))
    )  # bias 0, input zeroed
    pre.remove()
    post.remove()
    np.testing.assert_allclose(layer(x).detach().numpy(), layer.forward(x).detach().numpy())


def test_full_backward_hook_sees_and_replaces_input_gradients() -> None:
    layer = Affine(3, 2)
    x = engine.randn(4, 3, requires_grad=True)
    seen: dict[str, Any] = {}

    def hook(module: nn.Module, grad_input: tuple[Any, ...], grad_output: tuple[Any, ...]) -> Any:
        seen["in"], seen["out"] = grad_input, grad_output
        return (grad_input[0] * 3,)

    handle = layer.register_full_backward_hook(hook)
    upstream = engine.randn(4, 2)
    layer(x).backward(upstream)
    expected = upstream.numpy() @ layer.weight.detach().numpy()
    np.testing.assert_allclose(seen["out"][0].numpy(), upstream.numpy())
    np.testing.assert_allclose(seen["in"][0].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), 3 * expected, rtol=1e-6)
    handle.remove()
    x.grad = None
    layer(x).backward(upstream)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-6)


def test_full_backward_hook_on_a_module_of_several_inputs() -> None:
    class Mix(nn.Module):
        def forward(self, a: engine.Tensor, b: engine.Tensor, scale: float) -> engine.Tensor:
            return a * b * scale

    mix = Mix()
    calls: list[tuple[Any, ...]] = []
    mix.register_full_backward_hook(lambda m, gi, go: calls.append(gi) or (gi[0], gi[1] * 0))
    a = engine.tensor([1.0, 2.0], requires_grad=True)
    b = engine.tensor([3.0, 4.0], requires_grad=True)
    mix(a, b, 2.0).sum().backward()
    assert len(calls) == 1
    assert calls[0][0].tolist() == [6.0, 8.0] and calls[0][1].tolist() == [2.0, 4.0]
    assert a.grad.tolist() == [6.0, 8.0] and b.grad.tolist() == [0.0, 0.0]


def test_call_without_hooks_goes_straight_to_forward() -> None:
    layer = Affine(2, 2)
    y = layer(engine.ones(1, 2, requires_grad=True))
    assert type(y.grad_fn).__name__ == "AddBackward"  # no hook plumbing in the graph


def test_containers_index_slice_and_iterate() -> None:
    seq = nn.Sequential(OrderedDict([("first", Affine(2, 2)), ("second", nn.Identity())]))
    assert isinstance(seq[-1], nn.Identity) and len(seq[:1]) == 1
    assert [n for n, _ in seq.named_children()] == ["first", "second"]
    layers = nn.ModuleList([Affine(2, 2) for _ in range(3)])
    layers.append(Affine(2, 2))
    del layers[0]
    assert len(layers) == 3 and [n for n, _ in layers.named_children()] == ["0", "1", "2"]
    with pytest.raises(IndexError):
        _ = layers[5]
    heads = nn.ModuleDict({"x": Affine(2, 1)})
    heads["y"] = nn.Identity()
    assert list(heads.keys()) == ["x", "y"] and "x" in heads


def test_repr_nests_like_pytorchs() -> None:
    assert repr(nn.Sequential(nn.Identity())) == "Sequential(\n  (0): Identity()\n)"


def test_deepcopy_gives_an_independent_module() -> None:
    net = Net()
    clone = copy.deepcopy(net)
    assert clone.fc1.weight is not net.fc1.weight
    assert clone.shared is clone.fc1  # sharing inside the tree survives the copy
    with engine.no_grad():
        clone.fc1.weight.zero_()
    assert float(net.fc1.weight.abs().sum()) > 0
