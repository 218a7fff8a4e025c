"""Randomness: seeding, generators, RNG state, and the draws' ranges and dtypes.

The streams are the engine's own (seeded PCG64), not PyTorch's: the same seed gives the
same numbers on every machine, which the pinned values below hold the engine to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import engine

# engine.Generator().manual_seed(0): its first draws, computed once and pinned.
SEED0_RAND3 = [0.8506242036819458, 0.6369616389274597, 0.5111364722251892]
SEED0_RANDN3 = [1.1176220178604126, -1.3871248960494995, -0.4265716075897217]

DRAWS: dict[str, Callable[..., engine.Tensor]] = {
    "rand": lambda **kw: engine.rand(4, 3, **kw),
    "randn": lambda **kw: engine.randn(4, 3, **kw),
    "randint": lambda **kw: engine.randint(0, 1000, (4, 3), **kw),
    "randperm": lambda **kw: engine.randperm(50, **kw),
}


# ---- reproducibility -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DRAWS))
def test_manual_seed_makes_draws_reproducible(name: str) -> None:
    draw = DRAWS[name]
    engine.manual_seed(123)
    a = draw()
    b = draw()
    engine.manual_seed(123)
    c = draw()
    d = draw()
    assert a.tolist() == c.tolist()
    assert b.tolist() == d.tolist()
    assert a.tolist() != b.tolist()


def test_different_seeds_give_different_draws() -> None:
    engine.manual_seed(1)
    a = engine.rand(10)
    engine.manual_seed(2)
    b = engine.rand(10)
    assert a.tolist() != b.tolist()


def test_seed_zero_gives_the_pinned_numbers() -> None:
    g = engine.Generator().manual_seed(0)
    assert engine.rand(3, generator=g).tolist() == SEED0_RAND3
    g = engine.Generator().manual_seed(0)
    assert engine.randn(3, generator=g).tolist() == SEED0_RANDN3
    engine.manual_seed(0)
    assert engine.rand(3).tolist() == SEED0_RAND3


def test_manual_seed_returns_the_default_generator_and_sets_initial_seed() -> None:
    g = engine.manual_seed(42)
    assert isinstance(g, engine.Generator)
    assert g is engine.default_generator
    assert engine.initial_seed() == 42
    assert engine.Generator().manual_seed(7).initial_seed() == 7


def test_generator_manual_seed_returns_the_generator() -> None:
    g = engine.Generator()
    assert g.manual_seed(3) is g


# ---- generators ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DRAWS))
def test_generator_streams_are_independent_of_the_default_one(name: str) -> None:
    draw = DRAWS[name]
    engine.manual_seed(5)
    expected = [draw().tolist(), draw().tolist()]

    engine.manual_seed(5)
    g = engine.Generator().manual_seed(5)
    first = draw().tolist()
    from_g = draw(generator=g).tolist()  # does not move the default stream
    second = draw().tolist()
    assert [first, second] == expected
    assert from_g == expected[0]  # same seed, same stream


def test_two_generators_with_the_same_seed_agree_and_do_not_interfere() -> None:
    g1 = engine.Generator().manual_seed(9)
    g2 = engine.Generator().manual_seed(9)
    a1 = engine.randn(5, generator=g1)
    a2 = engine.randn(5, generator=g2)
    b1 = engine.randn(5, generator=g1)
    assert a1.tolist() == a2.tolist()
    assert b1.tolist() != a1.tolist()
    assert engine.randn(5, generator=g2).tolist() == b1.tolist()


@pytest.mark.parametrize(
    "fill",
    [
        lambda t, g: t.uniform_(generator=g),
        lambda t, g: t.normal_(generator=g),
        lambda t, g: t.uniform_(-2.0, 3.0, generator=g),
        lambda t, g: t.normal_(1.0, 0.5, generator=g),
    ],
)
def test_generator_on_in_place_fills(fill: Callable[[engine.Tensor, Any], Any]) -> None:
    a = engine.zeros(6)
    b = engine.zeros(6)
    engine.manual_seed(0)
    fill(a, engine.Generator().manual_seed(11))
    after_a = engine.rand(2).tolist()
    engine.manual_seed(0)
    fill(b, engine.Generator().manual_seed(11))
    after_b = engine.rand(2).tolist()
    assert a.tolist() == b.tolist()
    assert a.tolist() != [0.0] * 6
    assert (
        after_a == after_b == engine.rand(2, generator=engine.Generator().manual_seed(0)).tolist()
    )


def test_uniform_and_rand_share_one_stream() -> None:
    t = engine.zeros(3)
    t.uniform_(generator=engine.Generator().manual_seed(0))
    assert t.tolist() == SEED0_RAND3


def test_uniform_and_normal_bounds_and_moments() -> None:
    t = engine.empty(100_000).uniform_(-2.0, 3.0)
    assert t.min().item() >= -2.0
    assert t.max().item() < 3.0
    assert abs(t.mean().item() - 0.5) < 0.05
    n = engine.empty(100_000).normal_(1.0, 0.5)
    assert abs(n.mean().item() - 1.0) < 0.01
    assert abs(n.std().item() - 0.5) < 0.01


def test_in_place_fills_need_no_grad_on_a_leaf() -> None:
    w = engine.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        w.uniform_()
    with engine.no_grad():
        w.normal_()
    assert w.tolist() != [0.0, 0.0, 0.0]


def test_generator_must_be_an_engine_generator() -> None:
    with pytest.raises(TypeError, match="Generator"):
        engine.rand(2, generator=np.random.default_rng(0))


# ---- state -----------------------------------------------------------------------------------


def test_rng_state_is_an_int64_tensor() -> None:
    st = engine.get_rng_state()
    assert isinstance(st, engine.Tensor)
    assert st.dtype is engine.int64
    assert st.device == engine.device("cpu")
    g = engine.Generator().manual_seed(1)
    assert g.get_state().dtype is engine.int64


def test_get_and_set_rng_state_restore_the_exact_stream() -> None:
    engine.rand(1)  # an odd float32 draw leaves half a 64-bit word buffered
    st = engine.get_rng_state()
    a = [engine.rand(3).tolist(), engine.randn(3).tolist(), engine.randint(0, 9, (3,)).tolist()]
    engine.set_rng_state(st)
    b = [engine.rand(3).tolist(), engine.randn(3).tolist(), engine.randint(0, 9, (3,)).tolist()]
    assert a == b


def test_generator_get_and_set_state_restore_the_exact_stream() -> None:
    g = engine.Generator().manual_seed(4)
    engine.rand(5, generator=g)
    st = g.get_state()
    a = engine.randn(7, generator=g).tolist()
    b = engine.randperm(10, generator=g).tolist()
    g.set_state(st)
    assert engine.randn(7, generator=g).tolist() == a
    assert engine.randperm(10, generator=g).tolist() == b


def test_state_moves_between_generators() -> None:
    g1 = engine.Generator().manual_seed(8)
    engine.rand(3, generator=g1)
    g2 = engine.Generator().set_state(g1.get_state())
    assert engine.rand(4, generator=g2).tolist() == engine.rand(4, generator=g1).tolist()


def test_get_state_is_a_snapshot() -> None:
    st = engine.get_rng_state()
    before = st.tolist()
    engine.rand(10)
    assert st.tolist() == before
    assert engine.get_rng_state().tolist() != before


def test_set_state_refuses_a_wrong_state() -> None:
    with pytest.raises(ValueError, match="get_state"):
        engine.set_rng_state(engine.zeros(3, dtype=engine.int64))
    with pytest.raises(ValueError, match="get_state"):
        engine.set_rng_state(engine.zeros(6))


# ---- ranges, moments and dtypes --------------------------------------------------------------


def test_rand_is_in_the_half_open_unit_interval() -> None:
    t = engine.rand(100_000)
    assert t.dtype is engine.float32
    assert t.min().item() >= 0.0
    assert t.max().item() < 1.0
    assert abs(t.mean().item() - 0.5) < 0.01


@pytest.mark.parametrize("dtype", [engine.float16, engine.bfloat16, engine.float64])
def test_rand_in_other_float_dtypes_never_reaches_one(dtype: engine.dtype) -> None:
    t = engine.rand(200_000, dtype=dtype)
    assert t.dtype is dtype
    assert t.min().item() >= 0.0
    assert t.max().item() < 1.0
    assert abs(t.float().mean().item() - 0.5) < 0.01


def test_randn_mean_and_std() -> None:
    t = engine.randn(100_000)
    assert t.dtype is engine.float32
    assert abs(t.mean().item()) < 0.01
    assert abs(t.std().item() - 1.0) < 0.01
    assert t.abs().max().item() < 6.0


@pytest.mark.parametrize("dtype", [engine.float16, engine.bfloat16, engine.float64])
def test_randn_in_other_float_dtypes(dtype: engine.dtype) -> None:
    t = engine.randn(100_000, dtype=dtype)
    assert t.dtype is dtype
    wide = t.to(engine.float64)
    assert abs(wide.mean().item()) < 0.02
    assert abs(wide.std().item() - 1.0) < 0.02


def test_rand_and_randn_size_forms() -> None:
    assert engine.rand(2, 3).shape == (2, 3)
    assert engine.rand((2, 3)).shape == (2, 3)
    assert engine.randn([4]).shape == (4,)
    assert engine.rand(()).shape == ()


@pytest.mark.parametrize("draw", [engine.rand, engine.randn])
def test_rand_and_randn_refuse_integer_dtypes(draw: Callable[..., Any]) -> None:
    with pytest.raises(TypeError):
        draw(3, dtype=engine.int64)


def test_randint_is_within_low_high() -> None:
    t = engine.randint(-3, 4, (10_000,))
    assert t.dtype is engine.int64
    assert t.min().item() == -3
    assert t.max().item() == 3
    assert set(t.tolist()) == set(range(-3, 4))


def test_randint_forms() -> None:
    a = engine.randint(5, (2, 3))  # randint(high, size)
    assert a.shape == (2, 3)
    assert a.min().item() >= 0 and a.max().item() < 5
    b = engine.randint(2, 5, (4,))  # randint(low, high, size)
    assert b.shape == (4,)
    assert b.min().item() >= 2 and b.max().item() < 5
    assert engine.randint(5, size=(3,)).shape == (3,)
    assert engine.randint(2, 5, size=(3,)).shape == (3,)
    assert engine.randint(0, 3, (2,), dtype=engine.int32).dtype is engine.int32
    assert engine.randint(0, 3, (2,), dtype=engine.float32).dtype is engine.float32


def test_randint_forms_draw_the_same_stream() -> None:
    engine.manual_seed(3)
    a = engine.randint(10, (6,))
    engine.manual_seed(3)
    b = engine.randint(0, 10, (6,))
    assert a.tolist() == b.tolist()


def test_randint_errors() -> None:
    with pytest.raises(ValueError, match="high"):
        engine.randint(5, 5, (2,))
    with pytest.raises(TypeError):
        engine.randint(5)


def test_randperm_is_a_permutation() -> None:
    p = engine.randperm(100)
    assert p.dtype is engine.int64
    assert sorted(p.tolist()) == list(range(100))
    assert p.tolist() != list(range(100))
    assert engine.randperm(0).shape == (0,)
    assert engine.randperm(5, dtype=engine.int32).dtype is engine.int32


def test_rand_like_and_randn_like() -> None:
    x = engine.zeros(2, 3, dtype=engine.float64)
    r = engine.rand_like(x)
    assert r.shape == (2, 3)
    assert r.dtype is engine.float64
    assert engine.randn_like(x, dtype=engine.float16).dtype is engine.float16


def test_state_covers_the_gpu_streams_counter_too() -> None:
    g = engine.Generator().manual_seed(5)
    g.device_draw()
    state = g.get_state()
    assert tuple(state.shape) == (8,)
    first = g.device_draw()
    g.set_state(state)
    assert g.device_draw() == first
    other = engine.Generator().manual_seed(9)
    other.set_state(state)  # another generator resumes the same GPU stream as well
    assert other.device_draw() == first


def test_a_host_only_state_of_six_values_still_loads() -> None:
    g = engine.Generator().manual_seed(3)
    host_only = g.get_state()[:6]
    expected = engine.rand(4, generator=g).tolist()
    g.manual_seed(11)
    g.set_state(host_only)
    assert engine.rand(4, generator=g).tolist() == expected
