"""The meta device: tensors with a shape, a dtype and no storage, as PyTorch's.

Factories and modules on meta cost nothing whatever their size, initialisers and fills do
nothing, shapes propagate through views, elementwise ops and matmul exactly as on the
CPU, and whatever needs values raises naming the operation.
"""

from __future__ import annotations

import math
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from layer_cases import CASES, make_input
from make_model_fixtures import CASES as MODEL_CASES
from make_model_fixtures import sample_input

import engine
from engine import nn
from engine.backends.meta import META_AWARE, MetaArray, MetaUnsupportedError, meta_array
from engine.backends.numpy_ops import ArrayOps
from engine.nn import init
from jobs.models import build_model
from jobs.spec import ModelSpec

META = engine.device("meta")
COPY_OUT = "Cannot copy out of meta tensor; no data!"
HUGE = 10**6  # a (HUGE, HUGE) float32 tensor would take 4 TB


@pytest.fixture
def peak_memory() -> Iterator[Callable[[], int]]:
    """The peak bytes traced since the test started (NumPy reports its buffers too)."""
    tracemalloc.start()
    yield lambda: tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()


def same_stream(state: engine.Tensor) -> bool:
    """Whether the default generator is where `state` (get_rng_state()) says it was."""
    return bool(np.array_equal(engine.get_rng_state().numpy(), state.numpy()))


# ---- factories ------------------------------------------------------------------------------
FACTORIES: list[tuple[str, Callable[[], engine.Tensor], tuple[int, ...], engine.dtype]] = [
    ("empty", lambda: engine.empty(HUGE, HUGE, device="meta"), (HUGE, HUGE), engine.float32),
    ("zeros", lambda: engine.zeros((HUGE, 3), device=META), (HUGE, 3), engine.float32),
    ("ones", lambda: engine.ones(HUGE, dtype=engine.int64, device="meta"), (HUGE,), engine.int64),
    ("full", lambda: engine.full((2, HUGE), 1.5, device="meta"), (2, HUGE), engine.float32),
    ("full_int", lambda: engine.full((HUGE,), 7, device="meta"), (HUGE,), engine.int64),
    ("rand", lambda: engine.rand(HUGE, HUGE, device="meta"), (HUGE, HUGE), engine.float32),
    (
        "randn",
        lambda: engine.randn(HUGE, dtype=engine.bfloat16, device="meta"),
        (HUGE,),
        engine.bfloat16,
    ),
    ("eye", lambda: engine.eye(HUGE, 3, device="meta"), (HUGE, 3), engine.float32),
    ("tensor", lambda: engine.tensor([[1, 2]], device="meta"), (1, 2), engine.int64),
    (
        "like_of_meta",
        lambda: engine.zeros_like(engine.empty(HUGE, HUGE, dtype=engine.float16, device="meta")),
        (HUGE, HUGE),
        engine.float16,
    ),
    (
        "like_to_meta",
        lambda: engine.ones_like(engine.zeros(2, 3), device="meta"),
        (2, 3),
        engine.float32,
    ),
    (
        "full_like",
        lambda: engine.full_like(engine.empty(HUGE, device="meta"), 2.0),
        (HUGE,),
        engine.float32,
    ),
    (
        "empty_like",
        lambda: engine.empty_like(engine.empty(HUGE, device="meta")),
        (HUGE,),
        engine.float32,
    ),
    (
        "rand_like",
        lambda: engine.rand_like(engine.empty(HUGE, device="meta")),
        (HUGE,),
        engine.float32,
    ),
    ("randn_like", lambda: engine.randn_like(engine.empty(3, device="meta")), (3,), engine.float32),
    ("to_meta", lambda: engine.ones(2, 3).to("meta"), (2, 3), engine.float32),
    # the index factories make no host array of their length and draw nothing either
    ("arange", lambda: engine.arange(HUGE * HUGE, device="meta"), (HUGE * HUGE,), engine.int64),
    ("arange_step", lambda: engine.arange(1, 10, 4, device="meta"), (3,), engine.int64),
    (
        "arange_float",
        lambda: engine.arange(0.0, 1.0, 2**-30, device="meta"),
        (2**30,),
        engine.float32,
    ),
    (
        "linspace",
        lambda: engine.linspace(0, 1, HUGE * HUGE, device="meta"),
        (HUGE * HUGE,),
        engine.float32,
    ),
    (
        "randint",
        lambda: engine.randint(0, 5, (HUGE, HUGE), dtype=engine.int32, device="meta"),
        (HUGE, HUGE),
        engine.int32,
    ),
    ("randperm", lambda: engine.randperm(HUGE * HUGE, device="meta"), (HUGE * HUGE,), engine.int64),
]


@pytest.mark.parametrize(
    ("make", "shape", "dtype"), [f[1:] for f in FACTORIES], ids=[f[0] for f in FACTORIES]
)
def test_factories_on_meta_have_shape_and_dtype_but_no_storage(
    make: Callable[[], engine.Tensor],
    shape: tuple[int, ...],
    dtype: engine.dtype,
    peak_memory: Callable[[], int],
) -> None:
    state = engine.get_rng_state()
    t = make()
    assert t.device is META and t.shape == shape and t.dtype == dtype
    assert t.numel() == int(np.prod(shape)) and t.dim() == len(shape)
    assert t.element_size() == np.dtype(dtype.np).itemsize
    assert peak_memory() < 2**20
    assert same_stream(state), "a meta draw moved the random stream"


def test_requires_grad_and_repr_on_meta() -> None:
    t = engine.randn(2, 3, device="meta", requires_grad=True)
    assert t.requires_grad and t.is_leaf
    assert repr(t) == "tensor(..., device='meta', size=(2, 3), requires_grad=True)"
    half = engine.zeros(4, dtype=engine.float16, device="meta")
    assert repr(half) == "tensor(..., device='meta', size=(4,), dtype=engine.float16)"
    with pytest.raises(RuntimeError, match="only floating-point"):
        engine.zeros(2, dtype=engine.int64, device="meta", requires_grad=True)


def test_meta_device_is_parsed_and_interned() -> None:
    assert engine.device("meta") is META and str(META) == "meta"
    assert repr(META) == "device(type='meta')"
    with pytest.raises(RuntimeError, match="meta has no index 1"):
        engine.device("meta:1")


# ---- initialisers and in-place writes: no-ops --------------------------------------------------
INITS: list[tuple[str, Callable[[engine.Tensor], engine.Tensor]]] = [
    ("uniform_", lambda t: init.uniform_(t, -1, 1)),
    ("normal_", lambda t: init.normal_(t, 0, 2)),
    ("trunc_normal_", lambda t: init.trunc_normal_(t, std=0.02)),
    ("constant_", lambda t: init.constant_(t, 3.0)),
    ("ones_", init.ones_),
    ("zeros_", init.zeros_),
    ("xavier_uniform_", init.xavier_uniform_),
    ("xavier_normal_", init.xavier_normal_),
    ("kaiming_uniform_", init.kaiming_uniform_),
    ("kaiming_normal_", init.kaiming_normal_),
    ("fill_", lambda t: t.fill_(1.0)),
    ("zero_", lambda t: t.zero_()),
    ("tensor.uniform_", lambda t: t.uniform_()),
    ("tensor.normal_", lambda t: t.normal_()),
    ("copy_ from cpu", lambda t: t.copy_(engine.ones(1))),
    ("copy_ from meta", lambda t: t.copy_(engine.empty(HUGE, HUGE, device="meta"))),
    ("setitem", lambda t: t.__setitem__((0, slice(None)), 2.0) or t),
]


@pytest.mark.parametrize("fill", [f[1] for f in INITS], ids=[f[0] for f in INITS])
def test_initialisers_and_fills_do_nothing_on_meta(
    fill: Callable[[engine.Tensor], engine.Tensor], peak_memory: Callable[[], int]
) -> None:
    t = engine.empty(HUGE, HUGE, device="meta", requires_grad=True)
    state = engine.get_rng_state()
    with engine.no_grad():
        assert fill(t) is t
    assert t.shape == (HUGE, HUGE) and t.device is META
    assert same_stream(state)
    assert peak_memory() < 2**20


def test_a_write_that_does_not_fit_still_fails_on_meta() -> None:
    t = engine.empty(3, 4, device="meta")
    with pytest.raises(engine.ShapeError, match="copy_"):
        t.copy_(engine.ones(5))
    with pytest.raises(RuntimeError, match="in-place operation on a tensor that requires grad"):
        engine.empty(3, device="meta", requires_grad=True).fill_(0)


# ---- modules ---------------------------------------------------------------------------------
def _attention(nn: Any) -> Any:
    return nn.MultiheadAttention(8, 2, batch_first=True)


def _encoder(nn: Any) -> Any:
    return nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)


BUILDERS = {c.name: c.build for c in CASES} | {"attention": _attention, "encoder": _encoder}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_a_module_built_on_meta_has_meta_state_of_the_cpu_shapes(name: str) -> None:
    build = BUILDERS[name]
    cpu = build(nn)
    with engine.device("meta"):
        meta = build(nn)
    cpu_state, meta_state = cpu.state_dict(), meta.state_dict()
    assert list(meta_state) == list(cpu_state)
    for key, value in meta_state.items():
        assert value.device is META, key
        assert (value.shape, value.dtype) == (cpu_state[key].shape, cpu_state[key].dtype), key
    assert [p.requires_grad for p in meta.parameters()] == [
        p.requires_grad for p in cpu.parameters()
    ]
    assert sum(p.numel() for p in meta.parameters()) == sum(p.numel() for p in cpu.parameters())


@pytest.mark.parametrize(
    "build",
    [
        lambda: nn.Linear(3, 4, device="meta"),
        lambda: nn.Conv2d(3, 4, 3, device="meta"),
        lambda: nn.Embedding(10, 4, padding_idx=2, device="meta"),
        lambda: nn.LayerNorm(4, device="meta"),
        lambda: nn.BatchNorm1d(4, device="meta"),
        lambda: nn.BatchNorm2d(4, device="meta"),
        lambda: nn.MultiheadAttention(8, 2, kdim=4, vdim=6, device="meta"),
        lambda: nn.TransformerEncoderLayer(8, 2, 16, device="meta"),
    ],
    ids=["Linear", "Conv2d", "Embedding", "LayerNorm", "BatchNorm1d", "BatchNorm2d", "MHA", "TEL"],
)
def test_layers_take_device_meta(build: Callable[[], nn.Module]) -> None:
    module = build()
    tensors = [*module.parameters(), *module.buffers()]
    assert tensors and all(t.device is META for t in tensors)


def test_a_huge_meta_linear_builds_instantly_in_no_memory(peak_memory: Callable[[], int]) -> None:
    start = time.perf_counter()
    layer = nn.Linear(HUGE, HUGE, device="meta")
    assert time.perf_counter() - start < 0.5
    assert peak_memory() < 2**20
    assert sum(p.numel() for p in layer.parameters()) == HUGE * HUGE + HUGE
    assert layer.weight.shape == (HUGE, HUGE) and isinstance(layer.weight, nn.Parameter)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_to_empty_then_load_state_dict_gives_the_cpu_module(name: str) -> None:
    build = BUILDERS[name]
    cpu = build(nn).eval()
    with engine.device("meta"):
        meta = build(nn).eval()
    params = list(meta.parameters())
    assert meta.to_empty(device="cpu") is meta
    # the same Parameter objects (an optimizer may hold them), now with storage
    assert list(meta.parameters()) == params and all(p.device.type == "cpu" for p in params)
    assert all(b.device.type == "cpu" for b in meta.buffers())
    meta.load_state_dict(cpu.state_dict())
    case = next((c for c in CASES if c.name == name), None)
    x = engine.tensor(make_input(case)) if case else engine.randn(2, 3, 8)
    args = (x, x, x) if name == "attention" else (x,)
    with engine.no_grad():
        want, got = cpu(*args), meta(*args)
    if name == "attention":
        want, got = want[0], got[0]
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_reset_parameters_after_to_empty_initialises_in_place() -> None:
    layer = nn.Linear(5, 3, device="meta").to_empty(device="cpu")
    layer.reset_parameters()
    bound = 1 / np.sqrt(5)
    assert np.all(np.abs(layer.weight.detach().numpy()) <= bound)
    assert layer.weight.detach().numpy().std() > 0


# ---- the default-device context -----------------------------------------------------------
def test_the_device_context_sets_the_default_device_of_factories() -> None:
    with engine.device("meta") as d:
        assert d is META
        assert engine.zeros(2).device is META
        assert engine.tensor([1.0]).device is META
        assert engine.zeros(2, device="cpu").device.type == "cpu"  # an explicit device wins
        assert engine.from_numpy(np.ones(2)).device.type == "cpu"  # shares host memory
        with engine.device("cpu"):
            assert engine.zeros(2).device.type == "cpu"
        assert engine.zeros(2).device is META
    assert engine.zeros(2).device.type == "cpu"


def test_the_device_context_is_left_on_an_exception() -> None:
    with pytest.raises(ValueError, match="boom"), engine.device("meta"):
        raise ValueError("boom")
    assert engine.zeros(1).device.type == "cpu"


def test_the_device_context_is_the_current_threads_only() -> None:
    inside, other = threading.Event(), threading.Event()
    seen: list[engine.device] = []

    def elsewhere() -> None:
        inside.wait(5)
        seen.append(engine.zeros(1).device)
        other.set()

    thread = threading.Thread(target=elsewhere)
    thread.start()
    with engine.device("meta"):
        inside.set()
        other.wait(5)
        assert engine.zeros(1).device is META
    thread.join()
    assert [d.type for d in seen] == ["cpu"]


# ---- ops: shapes through, values refused ----------------------------------------------------
SHAPE_OPS: list[tuple[str, Callable[..., Any], list[tuple[tuple[int, ...], Any]]]] = [
    ("add_broadcast", lambda a, b: a + b, [((3, 1), engine.float32), ((4,), engine.float64)]),
    ("mul_scalar", lambda a: a * 2.5, [((2, 3), engine.float16)]),
    ("int_plus_float", lambda a: a + 0.5, [((2,), engine.int64)]),
    ("true_div_ints", lambda a, b: a / b, [((2, 2), engine.int64), ((2,), engine.int64)]),
    ("compare", lambda a, b: a < b, [((2, 3), engine.float32), ((3,), engine.float32)]),
    ("exp_bf16", lambda a: a.exp(), [((5,), engine.bfloat16)]),
    ("relu", engine.relu, [((2, 3), engine.float32)]),
    ("matmul", lambda a, b: a @ b, [((5, 2, 3), engine.float32), ((3, 4), engine.float32)]),
    ("matmul_vec", lambda a, b: a @ b, [((3,), engine.float32), ((2, 3, 4), engine.float32)]),
    ("matvec", lambda a, b: a @ b, [((2, 3), engine.float32), ((3,), engine.float32)]),
    ("dot", lambda a, b: a @ b, [((3,), engine.float32), ((3,), engine.float32)]),
    (
        "linear",
        nn.functional.linear,
        [((2, 5, 3), engine.float32), ((4, 3), engine.float32)],
    ),
    ("reshape", lambda a: a.reshape(3, -1), [((2, 3, 4), engine.float32)]),
    ("transpose", lambda a: a.transpose(0, 2).T, [((2, 3, 4), engine.float32)]),
    ("index", lambda a: a[1, :, None, ::2], [((2, 3, 4), engine.float32)]),
    ("index_list", lambda a: a[[0, 1, 1]], [((2, 3), engine.float32)]),
    ("expand", lambda a: a.unsqueeze(0).expand(5, 2, 3), [((2, 3), engine.float32)]),
    (
        "cat",
        lambda a, b: engine.cat([a, b], 1),
        [((2, 3), engine.float32), ((2, 1), engine.float32)],
    ),
    (
        "where",
        lambda a, b: engine.where(a > 0, a, b),
        [((2, 3), engine.float32), ((3,), engine.float32)],
    ),
    ("cast", lambda a: a.half(), [((2, 3), engine.float32)]),
    # reductions: NumPy's result shapes and dtypes, no values
    ("sum_all", lambda a: a.sum(), [((2, 3), engine.float32)]),
    ("sum_dims_keepdim", lambda a: a.sum((0, 2), keepdim=True), [((2, 3, 4), engine.float32)]),
    ("sum_ints", lambda a: a.sum(-1), [((2, 3), engine.int32)]),
    ("sum_bools", lambda a: (a > 0).sum(0), [((2, 3), engine.float32)]),
    ("sum_half", lambda a: a.sum(1), [((2, 3), engine.float16)]),
    ("mean_bf16", lambda a: a.mean((1, 2)), [((2, 3, 4), engine.bfloat16)]),
    ("var", lambda a: a.var(0), [((5, 3), engine.float32)]),
    ("std_keepdim", lambda a: a.std(1, keepdim=True), [((5, 3), engine.float64)]),
    ("max_all", lambda a: a.max(), [((2, 3), engine.float32)]),
    ("max_dim", lambda a: a.max(1).values, [((2, 3, 4), engine.float32)]),
    ("min_dim_indices", lambda a: a.min(0, keepdim=True).indices, [((2, 3), engine.float32)]),
    ("amax", lambda a: engine.amax(a, (0, 1)), [((2, 3, 4), engine.float16)]),
    ("argmax", lambda a: a.argmax(-1), [((2, 3), engine.float32)]),
    ("argmax_flat", lambda a: a.argmax(), [((2, 3), engine.float32)]),
    ("prod_int", lambda a: a.prod(1), [((2, 3), engine.int32)]),
    ("cumsum", lambda a: a.cumsum(1), [((2, 3), engine.int64)]),
    ("all", lambda a: (a > 0).all(1), [((2, 3), engine.float32)]),
    ("norm", lambda a: a.norm(dim=1), [((2, 3), engine.float32)]),
    ("softmax", lambda a: a.softmax(0), [((2, 3), engine.float16)]),
    ("log_softmax", lambda a: a.log_softmax(-1), [((2, 3), engine.float32)]),
    # padding, gathers and windows: their shapes by formula
    ("pad", lambda a: nn.functional.pad(a, (1, 2, 0, 3)), [((2, 3, 4), engine.float32)]),
    ("pad_crop", lambda a: nn.functional.pad(a, (-1, 2)), [((2, 3, 4), engine.float32)]),
    ("pad_reflect", lambda a: nn.functional.pad(a, (2, 1), "reflect"), [((2, 4), engine.float32)]),
    (
        "embedding",
        nn.functional.embedding,
        [((3, 5), engine.int64), ((10, 4), engine.float32)],
    ),
    (
        "conv2d",
        lambda x, w: nn.functional.conv2d(x, w, stride=2, padding=1, dilation=(1, 2)),
        [((2, 4, 9, 8), engine.float32), ((6, 4, 3, 2), engine.float32)],
    ),
    ("max_pool", lambda a: nn.functional.max_pool2d(a, 3, 2, 1), [((2, 3, 9, 8), engine.float32)]),
    (
        "avg_pool",
        lambda a: nn.functional.avg_pool2d(a, 3, 2, ceil_mode=True),
        [((3, 8, 8), engine.float32)],
    ),
    (
        "causal_attention",
        lambda q, k: nn.functional.scaled_dot_product_attention(q, k, k, is_causal=True),
        [((2, 5, 4), engine.float32), ((2, 6, 4), engine.float32)],
    ),
    ("masked_fill", lambda a: a.masked_fill(a > 0, 0.5), [((4, 4), engine.float32)]),
]


@pytest.mark.parametrize(
    ("op", "operands"), [o[1:] for o in SHAPE_OPS], ids=[o[0] for o in SHAPE_OPS]
)
def test_ops_on_meta_give_the_shape_and_dtype_the_cpu_gives(
    op: Callable[..., Any], operands: list[tuple[tuple[int, ...], Any]]
) -> None:
    want = op(*(engine.ones(shape, dtype=dtype) for shape, dtype in operands))
    got = op(*(engine.ones(shape, dtype=dtype, device="meta") for shape, dtype in operands))
    assert got.device is META
    assert (got.shape, got.dtype) == (want.shape, want.dtype)


def test_shapes_that_do_not_fit_fail_on_meta_as_on_cpu() -> None:
    a, b = engine.empty(2, 3, device="meta"), engine.empty(4, 5, device="meta")
    with pytest.raises(engine.ShapeError, match="add"):
        a + b
    with pytest.raises(engine.ShapeError, match="matmul"):
        a @ b
    with pytest.raises(engine.DeviceError):
        a + engine.ones(2, 3)


def test_a_graph_of_meta_tensors_records_shapes() -> None:
    w = engine.empty(HUGE, HUGE, device="meta", requires_grad=True)
    y = engine.relu(w @ engine.empty(HUGE, 2, device="meta"))
    assert y.shape == (HUGE, 2) and y.requires_grad and y.grad_fn is not None


@pytest.mark.parametrize(
    "read",
    [
        lambda t: t.numpy(),
        lambda t: t.detach().numpy(),
        lambda t: t.item(),
        lambda t: t.tolist(),
        lambda t: t.cpu(),
        lambda t: t.to("cpu"),
        np.asarray,
        lambda t: bool(t > 0),
        float,
        lambda t: nn.Linear(2, 2, device="meta").to("cpu"),
    ],
    ids=[
        "numpy",
        "detach_numpy",
        "item",
        "tolist",
        "cpu",
        "to",
        "asarray",
        "bool",
        "float",
        "module_to",
    ],
)
def test_copying_values_out_of_meta_raises_as_pytorch(read: Callable[[engine.Tensor], Any]) -> None:
    with pytest.raises(NotImplementedError, match=COPY_OUT):
        read(engine.empty(1, device="meta"))


@pytest.mark.parametrize(
    ("name", "use"),
    [
        ("indexing with a boolean meta mask", lambda t: t[t > 0]),
        ("a masked write of several values", lambda t: t.__setitem__(t > 0, t)),
        ("int", lambda t: nn.functional.one_hot(t.long())),  # its width is the largest value
        ("isclose", lambda t: engine.allclose(t, t)),
        ("cross_entropy_rows", lambda t: nn.functional.cross_entropy(t, t[:, 0].long())),
    ],
)
def test_ops_that_need_values_raise_naming_the_op(name: str, use: Callable[..., Any]) -> None:
    t = engine.empty(3, 4, device="meta")
    with pytest.raises(MetaUnsupportedError, match=rf"^{name}: not supported on meta tensors"):
        use(t)


@pytest.mark.parametrize(
    "name",
    sorted(
        n
        for n, f in vars(ArrayOps).items()
        if callable(f) and not n.startswith("_") and n not in META_AWARE
    ),
)
def test_every_backend_op_that_computes_refuses_meta_by_name(name: str) -> None:
    with pytest.raises(NotImplementedError, match=rf"^{name}: not supported on meta tensors"):
        getattr(META.ops, name)(engine.empty(2, device="meta")._data)


# ---- forwards: every layer and architecture, shapes as on the CPU ----------------------------
def _on(device: str, build: Callable[[], nn.Module], train: bool) -> nn.Module:
    with engine.device(device):
        return build().train(train)


def _outputs(out: Any) -> list[tuple[tuple[int, ...], engine.dtype]]:
    outs = out if isinstance(out, tuple) else (out,)
    return [(o.shape, o.dtype) for o in outs if o is not None]


# BatchNorm with momentum=None trains with the factor 1 / batches seen: a value
TRAINING_READS_VALUES = frozenset(("batchnorm1d_3d_cumulative",))


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_layer_case_runs_forward_on_meta_as_on_cpu(case: Any, train: bool) -> None:
    x = engine.tensor(make_input(case))
    with engine.no_grad():
        want = _on("cpu", lambda: case.build(nn), train)(x)
        state = engine.get_rng_state()
        meta = _on("meta", lambda: case.build(nn), train)
        if train and case.name in TRAINING_READS_VALUES:
            with pytest.raises(MetaUnsupportedError, match=COPY_OUT):
                meta(x.to("meta"))
            return
        got = meta(x.to("meta"))
    assert all(o.device is META for o in (got if isinstance(got, tuple) else (got,)))
    assert _outputs(got) == _outputs(want)
    assert same_stream(state), "a meta forward drew from the random stream (dropout)"


def _model_case(name: str) -> tuple[Callable[[], nn.Module], Callable[..., Any]]:
    spec, shape, classes, vocab, context = MODEL_CASES[name]

    def build() -> nn.Module:
        sizes = {"num_classes": classes, "vocab_size": vocab, "context": context}
        return build_model(ModelSpec.model_validate(spec), input_shape=shape, **sizes)

    return build, lambda m, d: m(engine.tensor(sample_input(name)).to(d))


def _randn(*shape: int) -> Callable[[str], engine.Tensor]:
    return lambda d: engine.randn(*shape).to(d)


ABOVE_DIAGONAL = engine.arange(5)[None, :] > engine.arange(5)[:, None]
ATTENTION: dict[str, tuple[Callable[[], nn.Module], Callable[..., Any]]] = {
    "mha_kdim_vdim_masks": (
        lambda: nn.MultiheadAttention(8, 2, batch_first=True, kdim=4, vdim=6),
        lambda m, d: m(
            _randn(2, 5, 8)(d),
            _randn(2, 6, 4)(d),
            _randn(2, 6, 6)(d),
            key_padding_mask=engine.zeros(2, 6, dtype=engine.bool).to(d),
            attn_mask=engine.zeros(5, 6).to(d),
            average_attn_weights=False,
        ),
    ),
    "mha_unbatched": (
        lambda: nn.MultiheadAttention(8, 4),
        lambda m, d: m(*(_randn(5, 8)(d),) * 3),
    ),
    "encoder_norm_first_causal": (
        lambda: nn.TransformerEncoderLayer(
            8, 2, 16, activation="gelu", batch_first=True, norm_first=True
        ),
        lambda m, d: m(
            _randn(2, 5, 8)(d),
            src_mask=engine.zeros(5, 5).masked_fill(ABOVE_DIAGONAL, -math.inf).to(d),
            is_causal=True,
        ),
    ),
    "encoder_seq_first_padding": (
        lambda: nn.TransformerEncoderLayer(8, 2, 16),
        lambda m, d: m(
            _randn(5, 2, 8)(d), src_key_padding_mask=engine.zeros(2, 5, dtype=engine.bool).to(d)
        ),
    ),
}
ARCHITECTURES = {name: _model_case(name) for name in MODEL_CASES} | ATTENTION


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_architecture_runs_forward_on_meta_as_on_cpu(name: str, train: bool) -> None:
    build, call = ARCHITECTURES[name]
    with engine.no_grad():
        want = call(_on("cpu", build, train), "cpu")
        got = call(_on("meta", build, train), "meta")
    assert _outputs(got) == _outputs(want)


# What the layers check of their input, as a dry run meets it: the same error on meta
MISFITS: list[tuple[str, Callable[[], nn.Module], tuple[int, ...], engine.dtype]] = [
    ("linear", lambda: nn.Linear(5, 4), (3, 6), engine.float32),
    ("linear_ints", lambda: nn.Linear(5, 4), (3, 5), engine.int64),
    ("conv_channels", lambda: nn.Conv2d(3, 4, 3), (2, 2, 7, 6), engine.float32),
    ("conv_2d_input", lambda: nn.Conv2d(3, 4, 3), (3, 7), engine.float32),
    ("conv_kernel_too_big", lambda: nn.Conv2d(3, 4, 5), (1, 3, 3, 3), engine.float32),
    ("maxpool_too_small", lambda: nn.MaxPool2d(3), (1, 1, 2, 2), engine.float32),
    ("avgpool_too_small", lambda: nn.AvgPool2d(3), (1, 1, 2, 2), engine.float32),
    ("pool_2d_input", lambda: nn.MaxPool2d(2), (4, 4), engine.float32),
    ("batchnorm_channels", lambda: nn.BatchNorm2d(3), (2, 4, 5, 5), engine.float32),
    ("batchnorm_dims", lambda: nn.BatchNorm2d(3), (2, 3), engine.float32),
    ("batchnorm1d_features", lambda: nn.BatchNorm1d(3), (2, 4), engine.float32),
    ("layernorm", lambda: nn.LayerNorm(6), (3, 5), engine.float32),
    ("embedding_floats", lambda: nn.Embedding(10, 4), (3, 5), engine.float32),
    ("unflatten", lambda: nn.Unflatten(1, (2, 4)), (3, 6), engine.float32),
    ("softmax_dim", lambda: nn.Softmax(dim=3), (3, 6), engine.float32),
    ("softmax_ints", lambda: nn.Softmax(1), (3, 5), engine.int64),
    ("flatten_dim", lambda: nn.Flatten(2, 3), (3, 6), engine.float32),
    ("gelu_ints", nn.GELU, (3, 5), engine.int64),
    ("encoder_width", lambda: nn.TransformerEncoderLayer(8, 2, 16), (2, 5, 6), engine.float32),
]


@pytest.mark.parametrize(
    ("build", "shape", "dtype"), [m[1:] for m in MISFITS], ids=[m[0] for m in MISFITS]
)
def test_an_input_a_layer_cannot_take_fails_on_meta_as_on_cpu(
    build: Callable[[], nn.Module], shape: tuple[int, ...], dtype: engine.dtype
) -> None:
    errors = []
    for device in ("cpu", "meta"):
        with pytest.raises(Exception) as info, engine.no_grad():
            _on(device, build, False)(engine.zeros(shape, dtype=dtype, device=device))
        errors.append((type(info.value), str(info.value)))
    assert errors[1] == errors[0]
    assert not issubclass(errors[1][0], MetaUnsupportedError)


def test_activations_of_any_size_cost_nothing_on_meta(peak_memory: Callable[[], int]) -> None:
    # 64 maps of 10002 x 10002 floats (26 GB), then a 5001 x 5001 pooling window: a pass
    # per tap would be 25 million of them
    with engine.device("meta"):
        model = nn.Sequential(
            nn.Conv2d(32, 64, 3, padding=5000), nn.ReLU(), nn.MaxPool2d(5001), nn.AvgPool2d(2)
        ).eval()
    start = time.perf_counter()
    with engine.no_grad():
        y = model(engine.zeros(1, 32, 4, 4, device="meta"))
    assert time.perf_counter() - start < 0.5
    assert y.shape == (1, 64, 1, 1) and y.device is META
    assert peak_memory() < 2**20


# ---- the backend's rules against NumPy's own -------------------------------------------------
NUMPY_RULES: list[tuple[str, Callable[[Any, Any], Any]]] = [
    ("sum", lambda a, i: a.sum()),
    ("sum_axes_keepdims", lambda a, i: a.sum(axis=(0, 2), keepdims=True)),
    ("sum_positional_axis", lambda a, i: np.sum(a, 1)),
    ("sum_dtype", lambda a, i: a.sum(axis=0, dtype=np.complex128)),
    ("prod", lambda a, i: a.prod(axis=-1)),
    ("mean", lambda a, i: a.mean(axis=1)),
    ("var", lambda a, i: np.var(a, axis=0)),
    ("std", lambda a, i: a.std()),
    ("max", lambda a, i: a.max(axis=2)),
    ("min", lambda a, i: np.min(a, axis=(1,))),
    ("argmax", lambda a, i: a.argmax()),
    ("argmin_keepdims", lambda a, i: a.argmin(axis=1, keepdims=True)),
    ("all", lambda a, i: a.all(axis=0)),
    ("any", lambda a, i: np.any(a)),
    ("cumsum", lambda a, i: a.cumsum(axis=1)),
    ("cumprod_flat", lambda a, i: np.cumprod(a)),
    ("pad", lambda a, i: np.pad(a, ((1, 2), (0, 0), (3, 1)))),
    ("pad_int", lambda a, i: np.pad(a, 2, mode="edge")),
    ("take", lambda a, i: np.take(a, i, axis=1)),
    ("take_flat", np.take),
    ("take_along_axis", lambda a, i: np.take_along_axis(a, i.reshape(1, 5, 1), axis=1)),
    ("float64_scalar", lambda a, i: a / np.float64(2)),
]
NUMPY_DTYPES = ["bool", "int8", "uint16", "int64", "float16", "float32", "complex64"]


@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
@pytest.mark.parametrize("rule", [r[1] for r in NUMPY_RULES], ids=[r[0] for r in NUMPY_RULES])
def test_meta_arrays_follow_numpys_shape_and_dtype_rules(
    rule: Callable[[Any, Any], Any], dtype: str
) -> None:
    want = np.asarray(rule(np.ones((2, 3, 4), dtype), np.zeros(5, np.int64)))
    got = rule(meta_array((2, 3, 4), dtype), meta_array((5,), np.int64))
    assert isinstance(got, MetaArray)
    assert (got.shape, got.dtype) == (want.shape, want.dtype)


@pytest.mark.parametrize(
    "rule",
    [
        lambda a: a.sum(axis=3),
        lambda a: a.argmax(axis=(0, 1)),
        lambda a: a[:, :0].max(axis=1),
        lambda a: a[:0].argmin(),
        lambda a: np.pad(a, -1),
        lambda a: np.take_along_axis(a, np.zeros((2, 1), np.int64), axis=1),
    ],
    ids=["axis", "arg_axes", "empty_max", "empty_argmin", "negative_pad", "take_dims"],
)
def test_meta_arrays_fail_where_numpy_fails(rule: Callable[[Any], Any]) -> None:
    with pytest.raises(Exception) as on_host:
        rule(np.ones((2, 3, 4), np.float32))
    with pytest.raises(type(on_host.value)) as on_meta:
        rule(meta_array((2, 3, 4), np.float32))
    assert str(on_meta.value) == str(on_host.value)
