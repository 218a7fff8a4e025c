"""jobs.models: layer lists and architectures build, dry-run on their input shapes, name
the layer that does not fit, and match their PyTorch twins (examples/torch_models.py)
key for key and output for output, through fixtures made by tests/make_model_fixtures.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixture_meta import FIXTURES, check_meta
from make_model_fixtures import CASES, sample_input

import engine
from engine import nn
from engine.backends.meta import MetaUnsupportedError
from jobs.errors import SpecError
from jobs.models import (
    MAX_PARAMETERS_ENV,
    Limits,
    ResNet,
    TransformerLM,
    build_model,
    check_limits,
    check_model,
    check_size,
    count_parameters,
    dry_run,
    estimate_memory_mb,
    input_dtype,
)
from jobs.spec import ModelSpec

META = check_meta("models")


def build(name: str) -> nn.Module:
    spec, shape, num_classes, vocab, context = CASES[name]
    return build_model(
        ModelSpec.model_validate(spec),
        input_shape=shape,
        num_classes=num_classes,
        vocab_size=vocab,
        context=context,
    )


def layers_model(*layers: dict[str, Any]) -> nn.Module:
    return build_model(
        ModelSpec.model_validate({"layers": list(layers)}), input_shape=(64,), num_classes=10
    )


@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_and_parameter_count_match_the_torch_twin(name: str) -> None:
    want = META["cases"][name]
    model = build(name)
    got = {
        k: [list(v.shape), str(v.dtype).removeprefix("engine.")]
        for k, v in model.state_dict().items()
    }
    assert got == want["keys"]
    assert count_parameters(model) == want["parameters"]


@pytest.mark.parametrize("name", list(CASES))
def test_twin_weights_load_and_predict_the_same(name: str) -> None:
    model = build(name)
    model.load_state_dict(engine.load(FIXTURES / f"models.{name}.safetensors"))
    model.eval()
    x = sample_input(name)
    np.testing.assert_array_equal(x, np.asarray(META["cases"][name]["input"], dtype=x.dtype))
    with engine.no_grad():
        out = model(engine.tensor(x)).numpy()
    np.testing.assert_allclose(out, np.asarray(META["cases"][name]["output"]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("spec", "shape", "out"),
    [
        ({"architecture": "mlp"}, (64,), (10,)),
        ({"architecture": "mlp", "args": {"hidden": [], "dropout": 0.2}}, (1, 8, 8), (10,)),
        ({"architecture": "cnn"}, (1, 8, 8), (10,)),
        ({"architecture": "cnn", "args": {"channels": [4, 4, 4]}}, (3, 16, 12), (10,)),
        ({"architecture": "resnet"}, (1, 8, 8), (10,)),
        ({"architecture": "resnet", "args": {"channels": [4]}}, (3, 5, 7), (10,)),
    ],
)
def test_classifiers_dry_run_on_their_input_shapes(
    spec: dict[str, Any], shape: tuple[int, ...], out: tuple[int, ...]
) -> None:
    model = build_model(ModelSpec.model_validate(spec), input_shape=shape, num_classes=10)
    assert input_dtype(model) == engine.float32
    assert dry_run(model, shape, dtype=engine.float32) == out


def test_transformer_lm_is_causal_and_sized_by_the_data() -> None:
    spec = ModelSpec.model_validate({"architecture": "transformer_lm", "args": {"dropout": 0.0}})
    model = build_model(spec, input_shape=(16,), num_classes=None, vocab_size=40, context=16)
    assert isinstance(model, TransformerLM)
    assert input_dtype(model) == engine.int64
    assert dry_run(model, (16,), dtype=engine.int64) == (16, 40)
    assert dry_run(model, (5,), dtype=engine.int64) == (5, 40)  # shorter windows work too
    a = engine.randint(0, 40, (2, 16))
    b = a.clone()
    b[:, 9:] = 0
    with engine.no_grad():
        la, lb = model(a), model(b)
    # the logits at positions 0..8 see only tokens 0..8, which a and b share
    np.testing.assert_allclose(la[:, :9].numpy(), lb[:, :9].numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(la[:, 9:].numpy(), lb[:, 9:].numpy())
    with pytest.raises(SpecError, match=r"^model: .*longer than its context \(16\)"):
        dry_run(model, (17,), dtype=engine.int64)


@pytest.mark.parametrize("name", ["resnet", "transformer_lm"])
def test_gradient_checkpointing_gives_the_same_gradients(name: str) -> None:
    grads = []
    for enabled in (False, True):
        engine.manual_seed(1)
        model = build(name)
        model.gradient_checkpointing = enabled
        x = engine.tensor(sample_input(name))
        model(x).float().pow(2).mean().backward()
        grads.append([p.grad.numpy() for p in model.parameters()])
    for plain, recomputed in zip(*grads, strict=True):
        np.testing.assert_allclose(recomputed, plain, rtol=1e-5, atol=1e-7)


def test_dry_run_names_the_layer_and_both_numbers() -> None:
    model = layers_model(
        {"type": "Linear", "in_features": 64, "out_features": 128},
        {"type": "ReLU"},
        {"type": "Dropout", "p": 0.1},
        {"type": "Linear", "in_features": 64, "out_features": 10},
    )
    with pytest.raises(SpecError) as info:
        dry_run(model, (64,), dtype=engine.float32)
    assert str(info.value) == (
        "model.layers[3]: Linear expects 64 input features, the previous layer gives 128"
    )
    with pytest.raises(SpecError) as info:
        dry_run(model, (32,), dtype=engine.float32)
    assert str(info.value) == "model.layers[0]: Linear expects 64 input features, the data gives 32"


def test_dry_run_names_nested_layers_and_leaves_the_model_as_it_was() -> None:
    model = layers_model(
        {"type": "Linear", "in_features": 64, "out_features": 32},
        {"type": "BatchNorm1d", "num_features": 32},
        {
            "type": "Sequential",
            "layers": [
                {"type": "Linear", "in_features": 32, "out_features": 16},
                {"type": "LayerNorm", "normalized_shape": [8]},
            ],
        },
    )
    bn = model[1]
    before = bn.running_mean.numpy().copy()
    with pytest.raises(SpecError) as info:
        dry_run(model, (64,), dtype=engine.float32)
    assert info.value.path == "model.layers[2].layers[1]"
    assert (
        info.value.reason == "LayerNorm expects trailing shape (8,), the previous layer gives (16,)"
    )
    assert model.training and bn.training
    np.testing.assert_array_equal(bn.running_mean.numpy(), before)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize(
    ("layers", "shape", "path", "reason"),
    [
        (
            [{"type": "Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3}],
            (1, 8, 8),
            "model.layers[0]",
            "Conv2d expects 3 input channels, the data gives 1",
        ),
        (
            [{"type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3}],
            (64,),
            "model.layers[0]",
            "Conv2d expects images (C, H, W), the data gives shape (64,)",
        ),
        (
            [{"type": "Flatten"}, {"type": "BatchNorm1d", "num_features": 5}],
            (1, 8, 8),
            "model.layers[1]",
            "BatchNorm1d expects 5 features, the previous layer gives 64",
        ),
        (
            [{"type": "MaxPool2d", "kernel_size": 16}],
            (1, 8, 8),
            "model.layers[0]",
            "MaxPool2d cannot take the data's samples of shape (1, 8, 8)",
        ),
    ],
)
def test_dry_run_other_mismatches(
    layers: list[dict[str, Any]], shape: tuple[int, ...], path: str, reason: str
) -> None:
    model = build_model(
        ModelSpec.model_validate({"layers": layers}), input_shape=shape, num_classes=10
    )
    with pytest.raises(SpecError) as info:
        dry_run(model, shape, dtype=engine.float32)
    assert info.value.path == path and info.value.reason.startswith(reason), info.value


@pytest.mark.parametrize(
    ("layer", "path", "reason"),
    [
        ({"type": "Linearr"}, "model.layers[1].type", "unknown layer 'Linearr'; engine.nn has"),
        ({"type": "CrossEntropyLoss"}, "model.layers[1].type", "unknown layer"),
        ({"type": "ModuleList"}, "model.layers[1].type", "unknown layer"),
        ({"type": "Linear", "in_features": 8}, "model.layers[1].out_features", "required argument"),
        (
            {"type": "Linear", "in_features": 8, "out_features": 2, "bias_": True},
            "model.layers[1].bias_",
            "unexpected argument for Linear",
        ),
        (
            {"type": "Linear", "in_features": 8, "out_features": 2, "dtype": "float64"},
            "model.layers[1].dtype",
            "set by the job",
        ),
        (
            {"type": "Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3,
             "padding_mode": "mirror"},
            "model.layers[1].padding_mode",
            "Conv2d: padding_mode must be one of",
        ),
        ({"type": "Dropout", "p": 2}, "model.layers[1]", "Dropout: dropout probability"),
        (
            {"type": "Sequential", "layers": [{"type": "ReLU"}, {"type": "Tanhh"}]},
            "model.layers[1].layers[1].type",
            "unknown layer",
        ),
    ],
)  # fmt: skip
def test_bad_layers_name_their_path(layer: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(SpecError) as info:
        layers_model({"type": "ReLU"}, layer)
    assert info.value.path == path and info.value.reason.startswith(reason), info.value


def test_layer_arguments_from_json_lists() -> None:
    model = layers_model(
        {"type": "Unflatten", "dim": 1, "unflattened_size": [1, 8, 8]},
        {"type": "Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": [3, 5]},
    )
    assert dry_run(model, (64,), dtype=engine.float32) == (2, 6, 4)


CANNOT_TAKE = [
    ({"architecture": "cnn"}, (64,), 10, None, "model.architecture", "cnn takes images"),
    ({"architecture": "resnet"}, (8, 8), 10, None, "model.architecture", "resnet takes images"),
    (
        {"architecture": "cnn", "args": {"channels": [4, 4, 4, 4]}},
        (1, 8, 8),
        10,
        None,
        "model.args.channels",
        "4 pooling stages halve 8x8 images to nothing",
    ),
    ({"architecture": "mlp"}, (64,), None, None, "model.architecture", "mlp is a classifier"),
    (
        {"architecture": "transformer_lm"},
        (16,),
        None,
        30,
        "model.architecture",
        "transformer_lm needs token data",
    ),
]


@pytest.mark.parametrize(("spec", "shape", "classes", "vocab", "path", "reason"), CANNOT_TAKE)
def test_architectures_refuse_data_they_cannot_take(
    spec: dict[str, Any],
    shape: tuple[int, ...],
    classes: int | None,
    vocab: int | None,
    path: str,
    reason: str,
) -> None:
    with pytest.raises(SpecError) as info:
        build_model(
            ModelSpec.model_validate(spec), input_shape=shape, num_classes=classes, vocab_size=vocab
        )
    assert info.value.path == path and info.value.reason.startswith(reason), info.value


def test_resnet_tree() -> None:
    spec = ModelSpec.model_validate(
        {"architecture": "resnet", "args": {"channels": [8, 16], "blocks_per_stage": 2}}
    )
    model = build_model(spec, input_shape=(3, 8, 8), num_classes=5)
    assert isinstance(model, ResNet)
    strides = [b.conv1.stride for b in model.blocks]
    assert strides == [(1, 1), (1, 1), (2, 2), (1, 1)]
    assert [b.downsample is not None for b in model.blocks] == [False, False, True, False]


def test_memory_estimate() -> None:
    model = build("mlp")  # 64 -> 128 -> 128 -> 10
    params = count_parameters(model)
    assert params == 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    # leaf outputs of one sample: Flatten 64, (Linear, ReLU, Dropout) 3 * 128 twice, Linear 10
    activations = 64 + 6 * 128 + 10
    fp32 = estimate_memory_mb(model, 32, (64,), "fp32")
    assert fp32 == pytest.approx((16 * params + 2 * 4 * 32 * activations) / 2**20)
    bf16 = estimate_memory_mb(model, 32, (64,), "bf16")
    assert bf16 == pytest.approx((18 * params + 2 * 2 * 32 * activations) / 2**20)
    assert estimate_memory_mb(model, 64, (64,), "fp32") > fp32
    # each attention's scores count: heads * T * T a sample, per layer
    lm = build("transformer_lm")  # 2 layers of 4 heads
    short, long = (estimate_memory_mb(lm, 8, (t,), "fp32") for t in (4, 12))
    assert (long - short) * 2**20 > 2 * 4 * (12 * 12 - 4 * 4) * 8 * 4 * 2


# ---- sizing on the meta device, before anything is allocated -----------------------------------
HUGE_LAYER = {"layers": [{"type": "Linear", "in_features": 200_000, "out_features": 200_000}]}


def size(spec: dict[str, Any], input_shape: tuple[int, ...] = (200_000,), **kwargs: Any) -> int:
    return check_size(
        ModelSpec.model_validate(spec),
        input_shape=input_shape,
        num_classes=10,
        **{"precision": "fp32", "memory_limit_mb": None, **kwargs},
    )


@pytest.mark.parametrize("name", list(CASES))
def test_sizing_on_meta_counts_what_the_build_allocates_and_draws_nothing(name: str) -> None:
    spec, shape, num_classes, vocab, context = CASES[name]
    state = engine.get_rng_state().numpy()
    sized = check_size(
        ModelSpec.model_validate(spec),
        input_shape=shape,
        num_classes=num_classes,
        vocab_size=vocab,
        context=context,
        precision="fp32",
        memory_limit_mb=None,
    )
    # the seeded build that follows gets the weights it would have got without the sizing
    np.testing.assert_array_equal(engine.get_rng_state().numpy(), state)
    assert sized == count_parameters(build(name))


def test_a_model_over_the_parameter_limit_is_refused_before_it_is_built() -> None:
    start = time.perf_counter()
    with pytest.raises(SpecError) as info:
        size(HUGE_LAYER)  # 40 billion parameters, 160 GB of float32
    assert time.perf_counter() - start < 1
    assert info.value.path == "model"
    assert info.value.reason == (
        f"40,000,200,000 parameters exceed the limit of 1,000,000,000 ({MAX_PARAMETERS_ENV})"
    )
    with pytest.raises(SpecError, match="exceed the limit of 1,000 "):
        size(HUGE_LAYER, limits=Limits(max_parameters=1000))


def test_sizing_checks_the_memory_the_state_takes_whatever_the_batch() -> None:
    with pytest.raises(SpecError) as info:
        size(HUGE_LAYER, limits=Limits(max_parameters=10**12, max_memory_mb=1000))
    assert info.value.path == "resources.memory_limit_mb"
    # 16 bytes a parameter: weights, gradients and Adam's two moments
    state_mb = 16 * 40_000_200_000 / 2**20
    assert f"about {state_mb:,.0f} MB, over the limit of 1,000 MB (DESCENT_MAX_MEMORY_MB)" in (
        info.value.reason
    )
    mlp = {"architecture": "mlp", "args": {"hidden": [512, 128]}}
    params = size(mlp, (64,))
    assert params == 64 * 512 + 512 + 512 * 128 + 128 + 128 * 10 + 10
    with pytest.raises(SpecError, match=r"about 2 MB.*limit of 1 MB \(resources.memory_limit_mb\)"):
        size(mlp, (64,), memory_limit_mb=1)
    # 18 bytes a parameter under bf16 (the half-precision copies): over where fp32 fits
    fits_fp32 = Limits(max_memory_mb=16 * params / 2**20 + 0.01)
    assert size(mlp, (64,), limits=fits_fp32) == params
    with pytest.raises(SpecError, match="alone need"):
        size(mlp, (64,), precision="bf16", limits=fits_fp32)


def test_sizing_allocates_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1.6 GB of float32 if it were built: the limit refuses it with no more than a few kB
    monkeypatch.setenv(MAX_PARAMETERS_ENV, "1000")
    wide = {"layers": [{"type": "Linear", "in_features": 20_000, "out_features": 20_000}]}
    tracemalloc.start()
    try:
        with pytest.raises(SpecError, match="parameters exceed the limit of 1,000 "):
            size(wide)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_sizing_a_160_gb_layer_leaves_the_process_rss_flat() -> None:
    script = f"""
import json, resource, time
from jobs.errors import SpecError
from jobs.models import check_size
from jobs.spec import ModelSpec

spec = ModelSpec.model_validate({HUGE_LAYER!r})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    check_size(spec, input_shape=(200_000,), num_classes=10, precision="fp32", memory_limit_mb=None)
except SpecError as e:
    print(json.dumps({{"path": e.path, "reason": e.reason, "seconds": time.perf_counter() - start,
        "grew_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
        env={"PATH": "/usr/bin:/bin"},
    )
    result = json.loads(out.stdout)
    assert result["path"] == "model" and "parameters exceed the limit" in result["reason"]
    assert result["seconds"] < 1
    assert result["grew_kb"] < 20_000  # ru_maxrss is in kB on Linux


def test_check_limits_takes_the_services_limits() -> None:
    model = build("mlp")
    params, memory = check_limits(
        model, batch_size=8, input_shape=(64,), precision="fp32", memory_limit_mb=None
    )
    assert params == count_parameters(model) and memory > 0
    with pytest.raises(SpecError, match=rf"exceed the limit of 100 \({MAX_PARAMETERS_ENV}\)"):
        check_limits(
            model,
            batch_size=8,
            input_shape=(64,),
            precision="fp32",
            memory_limit_mb=None,
            limits=Limits(max_parameters=100),
        )
    with pytest.raises(
        SpecError, match=r"the run needs about 0 MB at batch size 8, over the limit"
    ):
        check_limits(
            model,
            batch_size=8,
            input_shape=(64,),
            precision="fp32",
            memory_limit_mb=None,
            limits=Limits(max_memory_mb=0.01),
        )


@pytest.mark.parametrize(
    ("spec", "path", "reason"),
    [
        # JSON's Infinity reaches a constructor as a float size
        (
            {"layers": [{"type": "Linear", "in_features": float("inf"), "out_features": 4}]},
            "model.layers[0]",
            "Linear: cannot convert float infinity",
        ),
        # a dim out of range is an IndexError in the forward
        (
            {"layers": [{"type": "Unflatten", "dim": 2**31, "unflattened_size": [8, 8]}]},
            "model.layers[0]",
            "dimension out of range",
        ),
        # more elements than int64 counts, found on the meta device
        (
            {"architecture": "transformer_lm", "args": {"d_model": 10**18}},
            "model.args",
            "more elements than int64 counts",
        ),
    ],
)
def test_odd_sizes_are_spec_errors_at_their_path(
    spec: dict[str, Any], path: str, reason: str
) -> None:
    model = ModelSpec.model_validate(spec)
    sizes: dict[str, Any] = {"input_shape": (64,), "num_classes": 10}
    if model.architecture == "transformer_lm":
        sizes = {"input_shape": (16,), "num_classes": None, "vocab_size": 50, "context": 16}
    with pytest.raises(SpecError) as info:
        check_size(model, **sizes, precision="fp32", memory_limit_mb=None)
        dry_run(build_model(model, **sizes), sizes["input_shape"], dtype=engine.float32)
    assert info.value.path == path
    assert reason in info.value.reason


# ---- checking on the meta device only: what the API and `descent validate` run --------------
def check_on_meta(spec: dict[str, Any], shape: tuple[int, ...], **kwargs: Any) -> Any:
    return check_model(
        ModelSpec.model_validate(spec),
        input_shape=shape,
        num_classes=10,
        **{"batch_size": 32, "precision": "fp32", "memory_limit_mb": None, **kwargs},
    )


@pytest.mark.parametrize("name", list(CASES))
def test_checking_on_meta_gives_the_numbers_of_the_built_model(name: str) -> None:
    spec, shape, num_classes, vocab, context = CASES[name]
    model = build(name)
    dry_run(model, shape, dtype=input_dtype(model))
    want = check_limits(
        model, batch_size=16, input_shape=shape, precision="bf16", memory_limit_mb=None
    )
    state = engine.get_rng_state().numpy()
    got = check_model(
        ModelSpec.model_validate(spec),
        input_shape=shape,
        num_classes=num_classes,
        vocab_size=vocab,
        context=context,
        batch_size=16,
        precision="bf16",
        memory_limit_mb=None,
    )
    assert got == want
    np.testing.assert_array_equal(engine.get_rng_state().numpy(), state)


MISMATCHES = [
    (
        [
            {"type": "Linear", "in_features": 64, "out_features": 128},
            {"type": "ReLU"},
            {"type": "Linear", "in_features": 64, "out_features": 10},
        ],
        (64,),
    ),
    ([{"type": "Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3}], (1, 8, 8)),
    ([{"type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3}], (64,)),
    ([{"type": "Flatten"}, {"type": "BatchNorm1d", "num_features": 5}], (1, 8, 8)),
    ([{"type": "MaxPool2d", "kernel_size": 16}], (1, 8, 8)),
    ([{"type": "LayerNorm", "normalized_shape": [4]}], (8,)),
    ([{"type": "Unflatten", "dim": 2**31, "unflattened_size": [8, 8]}], (64,)),
    ([{"type": "Softmax", "dim": 2}], (64,)),
    ([{"type": "MultiheadAttention", "embed_dim": 8, "num_heads": 2}], (4, 8)),
    ([{"type": "TransformerEncoderLayer", "d_model": 8, "nhead": 2}], (4, 6)),
]  # fmt: skip


@pytest.mark.parametrize(("layers", "shape"), MISMATCHES)
def test_checking_on_meta_names_the_layer_as_the_cpu_dry_run(
    layers: list[dict[str, Any]], shape: tuple[int, ...]
) -> None:
    spec = {"layers": layers}
    model = build_model(ModelSpec.model_validate(spec), input_shape=shape, num_classes=10)
    with pytest.raises(SpecError) as on_cpu:
        dry_run(model, shape, dtype=input_dtype(model))
    with pytest.raises(SpecError) as on_meta:
        check_on_meta(spec, shape)
    assert (on_meta.value.path, on_meta.value.reason) == (on_cpu.value.path, on_cpu.value.reason)


def test_an_empty_embedding_table_is_refused_on_meta_too() -> None:
    spec = {"layers": [{"type": "Embedding", "num_embeddings": 0, "embedding_dim": 4}]}
    model = build_model(ModelSpec.model_validate(spec), input_shape=(5,), num_classes=None)
    with pytest.raises(SpecError) as on_cpu:
        dry_run(model, (5,), dtype=engine.int64)
    with pytest.raises(SpecError) as on_meta:
        check_model(
            ModelSpec.model_validate(spec),
            input_shape=(5,),
            num_classes=None,
            batch_size=1,
            precision="fp32",
            memory_limit_mb=None,
        )
    # no values on meta to quote, but the same layer and the same complaint
    assert on_meta.value.path == on_cpu.value.path == "model.layers[0]"
    prefix = "Embedding cannot take the data's samples of shape (5,): embedding: index out of range"
    assert on_cpu.value.reason.startswith(prefix) and on_meta.value.reason.startswith(prefix)


def digits_cnn(padding: int, pool: int) -> dict[str, Any]:
    """The digits-cnn example's model with its second Conv2d padded by `padding` and the
    pooling after it of kernel `pool`."""
    model = json.loads((Path(__file__).parent.parent / "examples" / "digits-cnn.json").read_text())
    layers = model["model"]["layers"]
    layers[4]["padding"], layers[6]["kernel_size"] = padding, pool
    return model["model"]


@pytest.mark.parametrize("padding", [1000, 5000])
def test_activations_over_the_limit_are_refused_without_being_allocated(padding: int) -> None:
    # 64 maps of (4 + 2 * padding - 2)**2 floats a sample: 1 GB at padding 1000, 26 GB at
    # 5000; a pooling of kernel padding + 1 takes them back to the 2 x 2 the Linear wants
    spec = digits_cnn(padding, padding + 1)
    tracemalloc.start()
    try:
        start = time.perf_counter()
        with pytest.raises(SpecError) as info:
            check_on_meta(spec, (64,), limits=Limits(max_memory_mb=4096))
        seconds = time.perf_counter() - start
        # with no limit anywhere the spec passes, still on meta: the worker's own
        # resources.memory_limit_mb and DESCENT_MAX_MEMORY_MB are what bound the run
        params, memory = check_on_meta(spec, (64,))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.path == "resources.memory_limit_mb"
    assert info.value.reason.startswith(f"the run needs about {memory:,.0f} MB at batch size 32")
    assert "over the limit of 4,096 MB (DESCENT_MAX_MEMORY_MB)" in info.value.reason
    side = 4 + 2 * padding - 2
    assert memory > 2 * 2 * 64 * side * side * 4 * 32 / 2**20  # conv and ReLU outputs, x2
    assert params == count_parameters(
        build_model(ModelSpec.model_validate(spec), input_shape=(64,), num_classes=10)
    )
    assert seconds < 1
    assert peak < 2**20


def test_a_model_without_tensors_is_checked_on_meta_too() -> None:
    # 256 MB of float32 if the sample were real; a model of only an activation has no
    # parameter to say where it lives
    tracemalloc.start()
    try:
        params, memory = check_on_meta({"layers": [{"type": "ReLU"}]}, (64_000_000,))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert params == 0 and memory == pytest.approx(64_000_000 * 32 * 4 * 2 / 2**20)
    assert peak < 2**20


def test_a_layer_meta_cannot_run_falls_back_to_the_real_dry_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a forward that reads a value, as no engine layer does today
    def tanh_reading_a_value(self: nn.Module, x: engine.Tensor) -> engine.Tensor:
        return x.tanh() * (x.abs().max().item() >= 0)

    monkeypatch.setattr(nn.Tanh, "forward", tanh_reading_a_value)
    spec = {
        "layers": [
            {"type": "Linear", "in_features": 64, "out_features": 8},
            {"type": "Tanh"},
            {"type": "Linear", "in_features": 8, "out_features": 10},
        ]
    }
    with engine.device("meta"):
        meta = build_model(ModelSpec.model_validate(spec), input_shape=(64,), num_classes=10)
    # the meta device's limit, never reported as the spec's mistake
    with pytest.raises(MetaUnsupportedError, match="Cannot copy out of meta tensor"):
        dry_run(meta, (64,), dtype=engine.float32)
    model = build_model(ModelSpec.model_validate(spec), input_shape=(64,), num_classes=10)
    want = check_limits(
        model, batch_size=32, input_shape=(64,), precision="fp32", memory_limit_mb=None
    )
    assert check_on_meta(spec, (64,)) == want
    spec["layers"][2]["in_features"] = 9  # and the real dry run names what does not fit
    with pytest.raises(SpecError, match=r"^model.layers\[2\]: Linear expects 9 input features"):
        check_on_meta(spec, (64,))
