"""Autograd machinery: accumulation, graph freeing, grad mode, hooks, aliasing, versions.

Expected behaviour is PyTorch 2.x's, except where docs/API.md's "Deliberate differences"
says otherwise (in-place ops take part in no graph and raise outside no_grad).
"""

from __future__ import annotations

import gc
import math
import threading
import weakref
from collections.abc import Callable, Iterator

import numpy as np
import pytest

import engine


@pytest.fixture(autouse=True)
def _grad_mode_restored() -> Iterator[None]:
    # A failing grad-mode test must not leave grad switched off for the tests after it.
    yield
    engine.autograd.grad_mode.enabled = True


def leaf(values: list[float]) -> engine.Tensor:
    return engine.tensor(values, requires_grad=True)


# ---- accumulation and backward's arguments ------------------------------------------------
def test_gradients_accumulate_across_backward_calls() -> None:
    x = leaf([1.0, 2.0])
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    assert x.grad.tolist() == [5.0, 5.0]


def test_grad_can_be_reset_between_backward_calls() -> None:
    x = leaf([1.0, 2.0])
    (x * 2).sum().backward()
    x.grad = None
    (x * 3).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_retain_graph_allows_a_second_backward() -> None:
    x, w = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    y = (x * w).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.tolist() == [6.0, 8.0]
    assert w.grad.tolist() == [2.0, 4.0]


def test_second_backward_through_a_freed_graph_raises() -> None:
    x, w = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    y = (x * w).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()
    assert x.grad.tolist() == [3.0, 4.0]  # the failed call added nothing


def test_graph_that_saved_nothing_can_be_backpropagated_twice() -> None:
    # As in PyTorch: add and sum save no tensors, so nothing is freed.
    x, w = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    y = (x + w).sum()
    y.backward()
    y.backward()
    assert x.grad.tolist() == [2.0, 2.0]
    assert w.grad.tolist() == [2.0, 2.0]


def test_backward_on_non_scalar_without_gradient_raises() -> None:
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="scalar"):
        (x * 2).backward()


def test_backward_with_explicit_gradient() -> None:
    x = leaf([1.0, 2.0])
    (x * 2).backward(engine.tensor([1.0, 10.0]))
    assert x.grad.tolist() == [2.0, 20.0]


def test_backward_with_gradient_of_wrong_shape_raises_shape_error() -> None:
    x = leaf([1.0, 2.0])
    with pytest.raises(engine.ShapeError, match=r"\(3,\).*\(2,\)"):
        (x * 2).backward(engine.ones(3))


def test_backward_on_tensor_not_requiring_grad_raises() -> None:
    with pytest.raises(RuntimeError, match="does not require grad"):
        engine.ones(()).backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        (engine.ones(2) * 3).sum().backward()


def test_backward_runs_under_no_grad() -> None:
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    with engine.no_grad():
        y.backward()
    assert x.grad.tolist() == [2.0, 4.0]


def test_explicit_gradient_of_another_dtype_is_cast() -> None:
    x = leaf([1.0, 2.0])
    (x * 2).backward(engine.tensor([1.0, 1.0], dtype=engine.float64))
    assert x.grad.dtype == engine.float32
    assert x.grad.tolist() == [2.0, 2.0]


def test_grad_has_the_leafs_dtype() -> None:
    h = engine.tensor([1.0, 2.0], dtype=engine.float16, requires_grad=True)
    (h * h).sum().backward()
    assert h.grad.dtype == engine.float16
    assert h.grad.tolist() == [2.0, 4.0]
    x = leaf([1.0, 2.0])
    y = x.to(engine.float64)
    (y * y).sum().backward()
    assert x.grad.dtype == engine.float32
    assert x.grad.tolist() == [2.0, 4.0]


def test_backward_gradient_must_be_a_tensor() -> None:
    with pytest.raises(TypeError, match="gradient"):
        (leaf([1.0, 2.0]) * 2).backward([1.0, 1.0])


def test_backward_on_a_leaf_fills_its_own_grad() -> None:
    x = leaf([1.0, 2.0])
    x.backward(engine.tensor([3.0, 4.0]))
    assert x.grad.tolist() == [3.0, 4.0]


# ---- grad mode ----------------------------------------------------------------------------
def test_no_grad_context_records_no_graph() -> None:
    x = leaf([1.0])
    assert engine.is_grad_enabled()
    with engine.no_grad():
        assert not engine.is_grad_enabled()
        y = x * 2
    assert engine.is_grad_enabled()
    assert not y.requires_grad
    assert y.grad_fn is None


def test_no_grad_as_decorator_with_and_without_parentheses() -> None:
    x = leaf([1.0])

    @engine.no_grad
    def bare() -> tuple[bool, engine.Tensor]:
        return engine.is_grad_enabled(), x * 2

    @engine.no_grad()
    def called() -> tuple[bool, engine.Tensor]:
        return engine.is_grad_enabled(), x * 2

    for fn in (bare, called):
        enabled, y = fn()
        assert not enabled
        assert not y.requires_grad
        assert engine.is_grad_enabled()
    assert bare.__name__ == "bare"


def test_no_grad_restores_the_mode_when_the_block_raises() -> None:
    with pytest.raises(ValueError), engine.no_grad():
        raise ValueError
    assert engine.is_grad_enabled()


def test_enable_grad_inside_no_grad() -> None:
    x = leaf([1.0])
    with engine.no_grad():
        with engine.enable_grad():
            assert engine.is_grad_enabled()
            y = x * 2
        assert not engine.is_grad_enabled()
    assert y.requires_grad


def test_enable_grad_as_decorator() -> None:
    @engine.enable_grad()
    def called() -> bool:
        return engine.is_grad_enabled()

    @engine.enable_grad
    def bare() -> bool:
        return engine.is_grad_enabled()

    with engine.no_grad():
        assert called()
        assert bare()
        assert not engine.is_grad_enabled()


def test_set_grad_enabled_as_context_manager() -> None:
    with engine.set_grad_enabled(False):
        assert not engine.is_grad_enabled()
    assert engine.is_grad_enabled()
    # Entering with the mode that is already on must not flip it afterwards.
    with engine.set_grad_enabled(True):
        assert engine.is_grad_enabled()
    assert engine.is_grad_enabled()
    with engine.no_grad():
        with engine.set_grad_enabled(False):
            pass
        assert not engine.is_grad_enabled()
        with engine.set_grad_enabled(True):
            assert engine.is_grad_enabled()
        assert not engine.is_grad_enabled()


def test_set_grad_enabled_as_plain_call() -> None:
    try:
        engine.set_grad_enabled(False)
        assert not engine.is_grad_enabled()
        engine.set_grad_enabled(True)
        assert engine.is_grad_enabled()
    finally:
        engine.set_grad_enabled(True)


def test_set_grad_enabled_as_decorator_leaves_the_mode_alone_outside() -> None:
    @engine.set_grad_enabled(False)
    def inside() -> bool:
        return engine.is_grad_enabled()

    assert engine.is_grad_enabled()  # decorating did not switch grad off
    assert not inside()
    assert engine.is_grad_enabled()


def test_grad_mode_is_thread_local() -> None:
    entered, release = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def worker() -> None:
        with engine.no_grad():
            seen["worker"] = engine.is_grad_enabled()
            entered.set()
            release.wait(5)

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert entered.wait(5)
        seen["main"] = engine.is_grad_enabled()
        y = leaf([1.0]) * 2
    finally:
        release.set()
        t.join()
    assert seen == {"worker": False, "main": True}
    assert y.requires_grad


def test_a_new_thread_starts_with_grad_enabled() -> None:
    seen = []
    with engine.no_grad():
        t = threading.Thread(target=lambda: seen.append(engine.is_grad_enabled()))
        t.start()
        t.join()
    assert seen == [True]


# ---- detach, data, leaves -----------------------------------------------------------------
def test_detach_shares_storage_and_cuts_the_graph() -> None:
    x = leaf([1.0, 2.0])
    y = x * 2
    d = y.detach()
    assert not d.requires_grad
    assert d.is_leaf
    assert d.grad_fn is None
    z = d * 3 + y
    z.sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]  # nothing flowed through the detached branch
    with engine.no_grad():
        d.fill_(7.0)
    assert y.tolist() == [7.0, 7.0]


def test_data_is_a_detached_view_of_the_same_storage() -> None:
    x = leaf([1.0, 2.0])
    d = x.data
    assert not d.requires_grad
    assert d.grad_fn is None
    d.mul_(3)  # allowed outside no_grad: d requires no grad
    assert x.tolist() == [3.0, 6.0]
    assert x.requires_grad


def test_data_setter_replaces_values_and_keeps_requires_grad() -> None:
    x = leaf([1.0, 2.0])
    x.data = engine.tensor([5.0, 6.0])
    assert x.tolist() == [5.0, 6.0]
    assert x.requires_grad
    (x * x).sum().backward()
    assert x.grad.tolist() == [10.0, 12.0]


def test_is_leaf_and_grad_fn() -> None:
    x = leaf([1.0, 2.0])
    c = engine.tensor([1.0, 2.0])
    assert x.is_leaf and x.grad_fn is None
    assert c.is_leaf and c.grad_fn is None
    y = x * c
    assert not y.is_leaf
    assert y.grad_fn is not None
    assert isinstance(y.grad_fn.name(), str)
    assert "Mul" in y.grad_fn.name()
    assert "Add" in (x + c).grad_fn.name()
    s = y.sum()
    assert s.grad_fn.name() != y.grad_fn.name()
    # Ops on tensors that need no grad record nothing.
    assert (c * 2).is_leaf
    assert (c * 2).grad_fn is None


def test_non_leaf_gets_no_grad() -> None:
    x = leaf([1.0, 2.0])
    y = x * 2
    (y * 3).sum().backward()
    assert y.grad is None
    assert x.grad.tolist() == [6.0, 6.0]


# ---- hooks --------------------------------------------------------------------------------
def test_hook_on_a_leaf_sees_its_gradient() -> None:
    x = leaf([1.0, 2.0, 3.0])
    seen = []
    x.register_hook(lambda g: seen.append(g.tolist()))
    (x * 2).sum().backward()
    assert seen == [[2.0, 2.0, 2.0]]
    assert x.grad.tolist() == [2.0, 2.0, 2.0]


def test_hook_on_a_non_leaf_sees_its_gradient() -> None:
    x = leaf([1.0, 2.0, 3.0])
    y = x * 2
    seen = []
    y.register_hook(lambda g: seen.append(g.tolist()))
    (y * 3).sum().backward()
    assert seen == [[3.0, 3.0, 3.0]]
    assert x.grad.tolist() == [6.0, 6.0, 6.0]


def test_hook_may_return_a_replacement_gradient() -> None:
    x = leaf([1.0, 2.0])
    x.register_hook(lambda g: g * 0 + 7)
    (x * 2).sum().backward()
    assert x.grad.tolist() == [7.0, 7.0]

    x = leaf([1.0, 2.0])
    y = x * 2
    y.register_hook(lambda g: g * 10)
    y.sum().backward()
    assert x.grad.tolist() == [20.0, 20.0]  # the replacement flowed on through y's node


def test_hook_returning_none_keeps_the_gradient() -> None:
    x = leaf([1.0, 2.0])
    x.register_hook(lambda g: None)
    (x * 2).sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]


def test_hooks_chain_in_registration_order() -> None:
    x = leaf([1.0])
    x.register_hook(lambda g: g + 1)
    x.register_hook(lambda g: g * 10)
    (x * 2).sum().backward()
    assert x.grad.tolist() == [30.0]


def test_handle_remove_stops_the_hook() -> None:
    x = leaf([1.0, 2.0])
    calls = []
    handle = x.register_hook(lambda g: calls.append(1))
    (x * 2).sum().backward()
    handle.remove()
    (x * 2).sum().backward()
    assert calls == [1]

    y = x * 2
    calls.clear()
    handle = y.register_hook(lambda g: calls.append(1) or g * 100)
    handle.remove()
    x.grad = None
    y.sum().backward()
    assert calls == []
    assert x.grad.tolist() == [2.0, 2.0]


def test_handle_works_as_context_manager() -> None:
    x = leaf([1.0])
    calls = []
    with x.register_hook(lambda g: calls.append(1)):
        (x * 2).sum().backward()
    (x * 2).sum().backward()
    assert calls == [1]


def test_hook_sees_the_summed_gradient_once_when_a_tensor_is_used_twice() -> None:
    x = leaf([1.0, 2.0])
    seen_leaf = []
    x.register_hook(lambda g: seen_leaf.append(g.tolist()))
    y = x * 2
    seen_mid = []
    y.register_hook(lambda g: seen_mid.append(g.tolist()))
    (y + y * 3 + x).sum().backward()
    assert seen_mid == [[4.0, 4.0]]
    assert seen_leaf == [[9.0, 9.0]]
    assert x.grad.tolist() == [9.0, 9.0]


def test_register_hook_on_tensor_not_requiring_grad_raises() -> None:
    with pytest.raises(RuntimeError):
        engine.ones(2).register_hook(lambda g: g)


# ---- what nodes keep ----------------------------------------------------------------------
def test_node_frees_saved_arrays_after_backward() -> None:
    x, w = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    y = x * w
    node = y.grad_fn
    assert "Mul" in node.name()
    assert node.saved is not None
    y.sum().backward()
    assert node.saved is None


def test_node_keeps_saved_arrays_with_retain_graph() -> None:
    x, w = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    y = x * w
    y.sum().backward(retain_graph=True)
    assert y.grad_fn.saved is not None


def test_freed_arrays_are_really_released() -> None:
    x, w = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    h = x * 2  # an intermediate the mul below saves
    ref = weakref.ref(h._data)
    y = (h * w).sum()
    del h
    gc.collect()
    assert ref() is not None  # the graph holds it for backward
    y.backward()
    gc.collect()
    assert ref() is None  # and lets it go after


@pytest.mark.parametrize("op", ["relu", "exp", "sigmoid", "tanh", "sqrt"])
def test_unary_nodes_that_need_their_output_keep_only_the_output(op: str) -> None:
    x = leaf([0.5, 1.0, 2.0])
    h = x * 2  # the input of op: a non-leaf nothing else keeps
    ref = weakref.ref(h._data)
    y = getattr(h, op)()
    saved = y.grad_fn.saved
    assert len(saved) == 1
    assert saved[0] is y._data
    del h
    gc.collect()
    assert ref() is None  # the node did not keep its input alive


def test_ops_that_need_no_values_save_no_arrays() -> None:
    x = leaf([1.0, 2.0])
    h = x * 1  # a non-leaf: only the nodes below could keep its array alive
    ref = weakref.ref(h._data)
    outs = [h * 2, h + 1, h / 4, -h, h.sum(), h.sum(0, keepdim=True), h + x]
    for y in outs:
        assert not y.grad_fn.saved
    del h
    gc.collect()
    assert ref() is None
    sum(o.sum() for o in outs).backward()
    assert x.grad.tolist() == [6.25, 6.25]


# ---- graph shapes -------------------------------------------------------------------------
def test_diamond_graph_gives_the_chain_rule_sum() -> None:
    x = leaf([1.0, 2.0])
    u = x * 3
    v = x.exp()
    (u * v).sum().backward()
    # d/dx (3x e^x) = 3 e^x (1 + x)
    expected = [3 * math.exp(a) * (1 + a) for a in (1.0, 2.0)]
    np.testing.assert_allclose(x.grad.tolist(), expected, rtol=1e-6)


def test_diamond_through_a_shared_intermediate() -> None:
    x = leaf([2.0])
    h = x * x  # used by two branches that meet again
    a = h * 3
    b = h.exp()
    (a + b).sum().backward()
    # d/dx (3x^2 + e^{x^2}) = 6x + 2x e^{x^2}
    np.testing.assert_allclose(x.grad.tolist(), [12.0 + 4.0 * math.exp(4.0)], rtol=1e-6)


def test_tensor_used_as_both_operands() -> None:
    x = leaf([1.0, 2.0])
    (x * x).sum().backward()
    assert x.grad.tolist() == [2.0, 4.0]


def test_broadcast_operand_gets_summed_gradient() -> None:
    x = engine.ones(3, 2, requires_grad=True)
    b = leaf([1.0, 2.0])
    (x * b).sum().backward()
    assert b.grad.tolist() == [3.0, 3.0]
    assert x.grad.tolist() == [[1.0, 2.0]] * 3


def test_deep_chain_does_not_hit_the_recursion_limit() -> None:
    x = leaf([1.0])
    y = x
    for _ in range(2000):
        y = y + 1
    for _ in range(2000):
        y = y * 1.0
    y.sum().backward()
    assert x.grad.tolist() == [1.0]
    assert y.tolist() == [2001.0]


def test_deep_graph_can_be_freed() -> None:
    x = leaf([1.0])
    y = x
    for _ in range(20000):
        y = y + 1
    del y
    gc.collect()  # no RecursionError while tearing the chain down


# ---- aliasing of .grad --------------------------------------------------------------------
def test_leaf_grads_never_alias_each_other_or_the_given_gradient() -> None:
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    g = engine.tensor([1.0, 1.0])
    (a + b).backward(g)
    with engine.no_grad():
        a.grad.mul_(5)
    assert a.grad.tolist() == [5.0, 5.0]
    assert b.grad.tolist() == [1.0, 1.0]
    assert g.tolist() == [1.0, 1.0]


def test_leaf_root_grad_does_not_alias_the_given_gradient() -> None:
    a = leaf([1.0, 2.0])
    g = engine.tensor([1.0, 1.0])
    a.backward(g)
    with engine.no_grad():
        a.grad.add_(1)
    assert g.tolist() == [1.0, 1.0]


def test_grad_through_identity_ops_does_not_alias() -> None:
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (a + b.clone().reshape(2)).sum().backward()
    with engine.no_grad():
        a.grad.mul_(5)
    assert b.grad.tolist() == [1.0, 1.0]


def test_accumulating_does_not_write_into_a_gradient_the_caller_gave() -> None:
    a = leaf([1.0, 2.0])
    (a * 1).sum().backward()
    first = a.grad
    g = engine.tensor([2.0, 3.0])
    (a * 1).backward(g)
    assert a.grad.tolist() == [3.0, 4.0]
    assert first.tolist() == [3.0, 4.0]  # accumulates in place, as PyTorch
    assert g.tolist() == [2.0, 3.0]


@pytest.mark.parametrize("where", ["leaf", "non-leaf"])
def test_hook_replacement_is_not_aliased_by_grad(where: str) -> None:
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    r = engine.tensor([5.0, 5.0])
    y = a + b
    (a if where == "leaf" else y).register_hook(lambda g: r)
    y.sum().backward()
    assert a.grad.tolist() == [5.0, 5.0]
    with engine.no_grad():
        a.grad.mul_(2)
        if where == "non-leaf":
            b.grad.mul_(3)
    assert r.tolist() == [5.0, 5.0]
    if where == "non-leaf":
        assert a.grad.tolist() == [10.0, 10.0]
        assert b.grad.tolist() == [15.0, 15.0]


@pytest.mark.parametrize("where", ["leaf", "non-leaf"])
def test_gradient_a_hook_kept_is_not_aliased_by_grad(where: str) -> None:
    x = leaf([1.0, 2.0])
    y = x + 0  # add hands its gradient on unchanged
    kept: list[engine.Tensor] = []
    (x if where == "leaf" else y).register_hook(kept.append)
    (y * 2).sum().backward()
    with engine.no_grad():
        x.grad.zero_()
    assert kept[0].tolist() == [2.0, 2.0]


def test_scalar_leaf_grad_accepts_accumulation() -> None:
    x = engine.tensor(2.0, requires_grad=True)
    (x * x).backward()
    (x * 3).backward()
    assert x.grad.item() == 7.0
    assert x.grad.shape == ()


# ---- version counter ----------------------------------------------------------------------
def test_modifying_a_saved_leaf_under_no_grad_makes_backward_raise() -> None:
    x, w = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    y = x * w
    with engine.no_grad():
        x.mul_(2)
    with pytest.raises(RuntimeError, match="in-place"):
        y.sum().backward()


def test_modifying_a_saved_non_leaf_makes_backward_raise() -> None:
    x = leaf([1.0, 2.0])
    h = x * 1
    y = h * h
    with engine.no_grad():
        h.add_(1)
    with pytest.raises(RuntimeError, match="in-place"):
        y.sum().backward()


def test_modifying_a_saved_output_makes_backward_raise() -> None:
    x = leaf([1.0, 2.0])
    y = x.exp()  # exp's backward reads its output
    with engine.no_grad():
        y.mul_(2)
    with pytest.raises(RuntimeError, match="in-place"):
        y.sum().backward()


@pytest.mark.parametrize(
    "make_view",
    [
        lambda t: t[1:3],
        lambda t: t.view(2, 2),
        lambda t: t.reshape(2, 2),
        lambda t: t.unsqueeze(0),
        lambda t: t.detach(),
        lambda t: t.permute(0),
    ],
    ids=["slice", "view", "reshape", "unsqueeze", "detach", "permute"],
)
def test_views_share_the_version_counter(make_view: object) -> None:
    x, w = leaf([1.0, 2.0, 3.0, 4.0]), leaf([3.0, 4.0, 5.0, 6.0])
    with engine.no_grad():
        v = make_view(x)  # type: ignore[operator]
    y = x * w
    with engine.no_grad():
        v.mul_(2)
    assert x._version == v._version == 1
    with pytest.raises(RuntimeError, match="in-place"):
        y.sum().backward()


def test_a_view_made_after_saving_also_bumps() -> None:
    x, w = leaf([1.0, 2.0, 3.0, 4.0]), leaf([3.0, 4.0, 5.0, 6.0])
    y = x * w
    with engine.no_grad():
        x[1:3].fill_(0.0)
    with pytest.raises(RuntimeError, match="in-place"):
        y.sum().backward()


def test_setitem_on_a_saved_constant_makes_backward_raise() -> None:
    x, w = leaf([1.0, 2.0]), engine.tensor([3.0, 4.0])
    y = x * w  # saves w for x's gradient; w itself needs no grad
    w[0] = 5.0
    with pytest.raises(RuntimeError, match="in-place"):
        y.sum().backward()


def test_modifying_max_indices_makes_backward_raise() -> None:
    # max(dim)'s backward scatters through its indices, as PyTorch's does.
    x = engine.tensor([[1.0, 5.0, 2.0], [7.0, 3.0, 4.0]], requires_grad=True)
    values, indices = x.max(1)
    with engine.no_grad():
        indices.fill_(0)
    with pytest.raises(RuntimeError, match="in-place"):
        values.sum().backward()


@pytest.mark.parametrize(
    "make_index",
    [lambda: engine.tensor([0, 1]), lambda: engine.tensor([True, False])],
    ids=["int", "bool"],
)
def test_modifying_an_index_tensor_makes_backward_raise(make_index: Callable) -> None:
    x = engine.tensor([[1.0, 5.0], [7.0, 3.0]], requires_grad=True)
    index = make_index()
    y = x[index]
    with engine.no_grad():
        index.fill_(1)
    with pytest.raises(RuntimeError, match="in-place"):
        y.sum().backward()
    assert x.grad is None


def test_modifying_the_output_of_var_does_not_block_backward() -> None:
    # var's backward reads the centred input it computed, not its output (as PyTorch).
    x = leaf([1.0, 2.0, 4.0])
    v = x.var()
    with engine.no_grad():
        v.mul_(2)
    v.backward()
    mean = 7.0 / 3.0
    np.testing.assert_allclose(x.grad.tolist(), [(a - mean) for a in (1.0, 2.0, 4.0)], rtol=1e-6)


def test_modifying_the_output_of_std_makes_backward_raise() -> None:
    x = leaf([1.0, 2.0, 4.0])
    s = x.std()
    with engine.no_grad():
        s.mul_(2)
    with pytest.raises(RuntimeError, match="in-place"):
        s.backward()


def test_modifying_an_unsaved_tensor_does_not_block_backward() -> None:
    x = leaf([1.0, 2.0])
    y = x * 2 + 1  # neither op saves x
    with engine.no_grad():
        x.mul_(10)
    y.sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]


def test_clone_does_not_share_the_version_counter() -> None:
    x, w = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    y = x * w
    c = x.detach().clone()
    c.mul_(2)
    y.sum().backward()
    assert x.grad.tolist() == [3.0, 4.0]


# ---- in-place ops and autograd ------------------------------------------------------------
@pytest.mark.parametrize(
    ("op", "name"),
    [
        (lambda t: t.add_(1), "add_"),
        (lambda t: t.sub_(1), "sub_"),
        (lambda t: t.mul_(2), "mul_"),
        (lambda t: t.div_(2), "div_"),
        (lambda t: t.zero_(), "zero_"),
        (lambda t: t.fill_(1.0), "fill_"),
        (lambda t: t.copy_(engine.ones(2)), "copy_"),
        (lambda t: t.clamp_(0, 1), "clamp_"),
        (lambda t: t.uniform_(), "uniform_"),
        (lambda t: t.normal_(), "normal_"),
        (lambda t: t.__setitem__(0, 5.0), "setitem"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_in_place_on_tensor_requiring_grad_raises_naming_the_op(op: object, name: str) -> None:
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match=name):
        op(x)  # type: ignore[operator]
    assert x.tolist() == [1.0, 2.0]
    assert x._version == 0


def test_augmented_assignment_on_tensor_requiring_grad_raises() -> None:
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="add_"):
        x += 1
    with pytest.raises(RuntimeError, match="mul_"):
        x *= 2
    assert x.tolist() == [1.0, 2.0]


def test_in_place_on_non_leaf_requiring_grad_raises() -> None:
    y = leaf([1.0, 2.0]) * 2
    with pytest.raises(RuntimeError, match="mul_"):
        y.mul_(2)


def test_in_place_on_tensor_requiring_grad_works_under_no_grad() -> None:
    x = leaf([1.0, 2.0])
    with engine.no_grad():
        x.add_(1)
        x.mul_(2)
        x[0] = 10.0
        x += 1
    assert x.tolist() == [11.0, 7.0]
    assert x.requires_grad
    assert x.is_leaf
    assert x._version == 4
    (x * 2).sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]


def test_sgd_step_pattern() -> None:
    w = leaf([1.0, -1.0])
    for _ in range(3):
        loss = (w * w).sum()
        loss.backward()
        with engine.no_grad():
            w.sub_(w.grad, alpha=0.25)
        w.grad.zero_()
    np.testing.assert_allclose(w.tolist(), [0.125, -0.125])


def test_requires_grad_of_a_non_leaf_cannot_be_changed() -> None:
    x = engine.ones(2, requires_grad=True)
    y = x * 2
    for flag in (True, False):
        with pytest.raises(RuntimeError, match="leaf"):
            y.requires_grad = flag


def test_index_arrays_are_freed_with_the_graph_and_copied_from_the_caller() -> None:
    x = engine.ones(4, requires_grad=True)
    index = np.array([0, 0, 3])
    y = x[index]
    index[:] = 1  # the caller's array changing later must not move the gradient
    node = y.grad_fn
    y.sum().backward()
    assert node.saved is None
    assert x.grad.tolist() == [2.0, 0.0, 0.0, 1.0]
