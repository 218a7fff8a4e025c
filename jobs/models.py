"""Models from a spec: `engine.nn` layer lists and the named architectures.

`build_model` turns a ModelSpec into an `engine.nn.Module`; `dry_run` pushes one zero
sample through it and names the layer whose shapes do not fit; `count_parameters` and
`estimate_memory_mb` size it. `check_size` sizes a spec's model on the meta device before
it is built, `check_limits` the built one, against the same limits; `check_model` does
all of it on the meta device (what the API and `descent validate` run: they never build
the real model, so a spec whose activations would take gigabytes costs nothing to
refuse). Every architecture's module tree (so its state-dict keys) is documented on its
builder and mirrored in PyTorch by `examples/torch_models.py`, which loads the engine's
trained weights unchanged.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from dataclasses import dataclass
from typing import Any

import engine
from engine import nn
from engine.backends.meta import MetaUnsupportedError
from engine.nn.functional import relu
from engine.utils.checkpoint import checkpoint
from jobs.errors import SpecError
from jobs.spec import (
    CNNArgs,
    LayerSpec,
    MLPArgs,
    ModelSpec,
    ResNetArgs,
    TransformerLMArgs,
    constructor_parameters,
)

# A layer's tensors follow the job (resources.device, training.precision), never the spec.
_JOB_OWNED_ARGS = ("device", "dtype")
# Containers whose arguments are modules, and losses, are no layers a spec can name.
_NOT_LAYERS = ("Module", "ModuleList", "ModuleDict")
# The attribute that tags a module built from a layer spec with its JSON path, so that
# `dry_run` can say which layer failed.
_SPEC_PATH = "_spec_path"
_PRECISION_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
# What a constructor or a forward given odd arguments from a spec raises: the user's
# mistake, reported as a SpecError at its path (OverflowError for an infinite size,
# IndexError for a dim out of range, engine.ShapeError is a RuntimeError)
_BAD_ARGUMENTS = (TypeError, ValueError, RuntimeError, ArithmeticError, LookupError)


def layer_classes() -> dict[str, type[nn.Module]]:
    """The engine.nn classes a layer spec may name."""
    return {
        name: obj
        for name, obj in vars(nn).items()
        if isinstance(obj, type)
        and issubclass(obj, nn.Module)
        and name not in _NOT_LAYERS
        and not name.endswith("Loss")
    }


# ------------------------------------------------------------------ layer lists


def _arg_path(base: str, kwargs: dict[str, Any], message: str) -> str:
    """`base.<arg>` when the constructor's message names exactly one given argument."""
    named = [k for k in kwargs if re.search(rf"\b{re.escape(k)}\b", message)]
    return f"{base}.{named[0]}" if len(named) == 1 else base


def _build_layer(layer: LayerSpec, path: str, classes: dict[str, type[nn.Module]]) -> nn.Module:
    if layer.type == "Sequential":
        assert layer.layers is not None  # LayerSpec's validator guarantees it
        module: nn.Module = nn.Sequential(
            *(
                _build_layer(child, f"{path}.layers[{j}]", classes)
                for j, child in enumerate(layer.layers)
            )
        )
    else:
        cls = classes.get(layer.type)
        if cls is None:
            raise SpecError(
                f"{path}.type",
                f"unknown layer {layer.type!r}; engine.nn has {', '.join(sorted(classes))}",
            )
        kwargs = layer.kwargs
        params = constructor_parameters(cls)
        for key in kwargs:
            if key in _JOB_OWNED_ARGS:
                raise SpecError(
                    f"{path}.{key}",
                    "set by the job (resources.device, training.precision), not per layer",
                )
            if key not in params or key.startswith("_"):
                raise SpecError(f"{path}.{key}", f"unexpected argument for {layer.type}")
        for name, p in params.items():
            if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD and name not in kwargs:
                raise SpecError(f"{path}.{name}", f"required argument of {layer.type}")
        # JSON has no tuples; sizes such as kernel_size=[3, 3] mean one
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
        try:
            module = cls(**args)
        except _BAD_ARGUMENTS as e:
            raise SpecError(_arg_path(path, kwargs, str(e)), f"{layer.type}: {e}") from None
    setattr(module, _SPEC_PATH, path)
    return module


# ------------------------------------------------------------------ architectures


def build_mlp(args: MLPArgs, in_features: int, num_classes: int) -> nn.Sequential:
    """`mlp`: Sequential(Flatten, then per hidden width h: Linear(prev, h), ReLU or GELU,
    Dropout(dropout); then Linear(last, num_classes)). Dropout is there even at p=0 so the
    state-dict keys ("1.weight", "4.weight", ...) do not depend on it."""
    act = nn.ReLU if args.activation == "relu" else nn.GELU
    layers: list[nn.Module] = [nn.Flatten()]
    prev = in_features
    for h in args.hidden:
        layers += [nn.Linear(prev, h), act(), nn.Dropout(args.dropout)]
        prev = h
    layers.append(nn.Linear(prev, num_classes))
    return nn.Sequential(*layers)


def build_cnn(args: CNNArgs, input_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """`cnn`: Sequential(per channel count c: Conv2d(prev, c, 3, padding=1), ReLU,
    MaxPool2d(2); then Flatten, Dropout(dropout), Linear(c_last * H' * W', num_classes))
    with H' = H // 2**len(channels), likewise W'. Input (C, H, W)."""
    c, h, w = _image_shape("cnn", input_shape)
    h_out, w_out = h // 2 ** len(args.channels), w // 2 ** len(args.channels)
    if h_out == 0 or w_out == 0:
        raise SpecError(
            "model.args.channels",
            f"{len(args.channels)} pooling stages halve {h}x{w} images to nothing",
        )
    layers: list[nn.Module] = []
    prev = c
    for ch in args.channels:
        layers += [nn.Conv2d(prev, ch, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        prev = ch
    layers += [nn.Flatten(), nn.Dropout(args.dropout), nn.Linear(prev * h_out * w_out, num_classes)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet's basic block: conv1 (3x3, stride), bn1, ReLU, conv2 (3x3), bn2, plus the
    input (through `downsample` = Sequential(Conv2d 1x1 stride, BatchNorm2d) when the
    shape changes), then ReLU. Convolutions have no bias: BatchNorm follows each."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = (
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x: engine.Tensor) -> engine.Tensor:
        out = relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return relu(out + identity)


class ResNet(nn.Module):
    """`resnet`, small, for images (C, H, W):

    - `stem`: Sequential(Conv2d(C, channels[0], 3, padding=1, bias=False),
      BatchNorm2d(channels[0]), ReLU);
    - `blocks`: Sequential of BasicBlocks, `blocks_per_stage` per entry of `channels`;
      the first block of every stage after the first has stride 2;
    - global average pool (the mean over H and W, so any image size works);
    - `fc`: Linear(channels[-1], num_classes).

    With `gradient_checkpointing` set, training recomputes each block in backward.
    """

    def __init__(self, args: ResNetArgs, in_channels: int, num_classes: int) -> None:
        super().__init__()
        first = args.channels[0]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, first, 3, padding=1, bias=False),
            nn.BatchNorm2d(first),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        prev = first
        for stage, ch in enumerate(args.channels):
            for i in range(args.blocks_per_stage):
                blocks.append(BasicBlock(prev, ch, 2 if stage > 0 and i == 0 else 1))
                prev = ch
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(prev, num_classes)
        self.gradient_checkpointing = False

    def forward(self, x: engine.Tensor) -> engine.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = _maybe_checkpoint(self, block, x)
        return self.fc(x.mean(dim=(2, 3)))


class TransformerLM(nn.Module):
    """`transformer_lm`: a decoder-only causal language model.

    - `token_embedding`: Embedding(vocab_size, d_model);
    - `position_embedding`: Embedding(context, d_model), learned positions;
    - `blocks`: ModuleList of n_layers TransformerEncoderLayer(d_model, n_heads, d_ff,
      dropout, activation="gelu", batch_first=True, norm_first=True), each called with a
      causal mask (-inf above the diagonal) and is_causal=True;
    - `norm`: LayerNorm(d_model); `head`: Linear(d_model, vocab_size).

    forward(idx (N, T) int64, T <= context) -> logits (N, T, vocab_size). With
    `gradient_checkpointing` set, training recomputes each block in backward.
    """

    def __init__(self, args: TransformerLMArgs, vocab_size: int, context: int) -> None:
        super().__init__()
        d, d_ff = args.d_model, args.d_ff or 4 * args.d_model
        self.context = context
        self.token_embedding = nn.Embedding(vocab_size, d)
        self.position_embedding = nn.Embedding(context, d)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d,
                args.n_heads,
                d_ff,
                args.dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(args.n_layers)
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab_size)
        self.gradient_checkpointing = False

    def forward(self, idx: engine.Tensor) -> engine.Tensor:
        t = idx.shape[1]
        if t > self.context:
            raise engine.ShapeError(
                f"transformer_lm: sequence of {t} tokens, longer than its context ({self.context})"
            )
        positions = engine.arange(t, device=idx.device)
        x = self.token_embedding(idx) + self.position_embedding(positions)
        above = engine.arange(t, device=idx.device)[None, :] > positions[:, None]
        mask = engine.zeros((t, t), dtype=x.dtype, device=idx.device).masked_fill(
            above, float("-inf")
        )
        for block in self.blocks:
            x = _maybe_checkpoint(self, block, x, src_mask=mask, is_causal=True)
        return self.head(self.norm(x))


def _maybe_checkpoint(owner: nn.Module, block: nn.Module, x: Any, **kwargs: Any) -> Any:
    if owner.gradient_checkpointing and owner.training and engine.is_grad_enabled():
        return checkpoint(block, x, **kwargs)
    return block(x, **kwargs)


def _image_shape(arch: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise SpecError(
            "model.architecture",
            f"{arch} takes images (C, H, W); the data set's samples have shape {input_shape}",
        )
    c, h, w = input_shape
    return c, h, w


def build_model(
    model: ModelSpec,
    *,
    input_shape: tuple[int, ...],
    num_classes: int | None,
    vocab_size: int | None = None,
    context: int | None = None,
) -> nn.Module:
    """The engine model a ModelSpec describes, for samples of `input_shape` (no batch dim).

    A layers model is an nn.Sequential of the layers as given (their shapes are checked by
    `dry_run`, not here). Architectures size themselves from the data: `mlp`, `cnn` and
    `resnet` need `num_classes`, `transformer_lm` needs `vocab_size` and `context`.
    Raises SpecError naming the JSON path of what is wrong.
    """
    if model.layers is not None:
        classes = layer_classes()
        return nn.Sequential(
            *(
                _build_layer(layer, f"model.layers[{i}]", classes)
                for i, layer in enumerate(model.layers)
            )
        )
    try:
        return _build_architecture(model, input_shape, num_classes, vocab_size, context)
    except SpecError:
        raise
    except _BAD_ARGUMENTS as e:  # sizes no tensor can have, e.g. d_model 10**18
        raise SpecError("model.args", f"{model.architecture}: {e}") from None


def _build_architecture(
    model: ModelSpec,
    input_shape: tuple[int, ...],
    num_classes: int | None,
    vocab_size: int | None,
    context: int | None,
) -> nn.Module:
    arch, args = model.architecture, model.architecture_args()
    if arch == "transformer_lm":
        if vocab_size is None or context is None:
            raise SpecError(
                "model.architecture", "transformer_lm needs token data (a vocabulary and a context)"
            )
        return TransformerLM(args, vocab_size, context)
    if num_classes is None:
        raise SpecError(
            "model.architecture", f"{arch} is a classifier; the data set has no classes"
        )
    if arch == "mlp":
        return build_mlp(args, math.prod(input_shape), num_classes)
    if arch == "cnn":
        return build_cnn(args, input_shape, num_classes)
    return ResNet(args, _image_shape("resnet", input_shape)[0], num_classes)


# ------------------------------------------------------------------ checks and sizes


def input_dtype(model: nn.Module) -> engine.dtype:
    """What the model eats: int64 token ids when its first layer is an Embedding, else
    float32."""
    first_leaf = next((m for m in model.modules() if not any(True for _ in m.children())), None)
    return engine.int64 if isinstance(first_leaf, nn.Embedding) else engine.float32


def _model_device(model: nn.Module) -> Any:
    """Where the model's tensors are; None (the default device: that of an enclosing
    `with engine.device(...)`, else the CPU) for a model with none."""
    return next((t.device for t in itertools.chain(model.parameters(), model.buffers())), None)


def _mismatch(module: nn.Module, x: Any, source: str) -> str | None:
    """The specific complaint for the layers whose expected input size is an attribute."""
    name = type(module).__name__
    shape = tuple(x.shape)
    if isinstance(module, nn.Linear):
        return f"Linear expects {module.in_features} input features, {source} gives {shape[-1]}"
    if isinstance(module, nn.Conv2d | nn.BatchNorm2d) and len(shape) != 4:
        return f"{name} expects images (C, H, W), {source} gives shape {shape[1:]}"
    if isinstance(module, nn.Conv2d):
        return f"Conv2d expects {module.in_channels} input channels, {source} gives {shape[1]}"
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d) and len(shape) > 1:
        return f"{name} expects {module.num_features} features, {source} gives {shape[1]}"
    if isinstance(module, nn.LayerNorm):
        want = tuple(module.normalized_shape)
        return f"LayerNorm expects trailing shape {want}, {source} gives {shape[-len(want) :]}"
    return None


def _forward_one(model: nn.Module, input_shape: tuple[int, ...], dtype: Any) -> Any:
    """The model's output on one zero sample, in eval mode under no_grad (so no batch-norm
    statistics move and no dropout draws from the job's random stream), or a SpecError
    naming the spec layer that failed."""
    tagged = [m for m in model.modules() if getattr(m, _SPEC_PATH, None) is not None]
    entered: list[tuple[nn.Module, Any]] = []
    completed = [0]

    def before(module: nn.Module, args: tuple[Any, ...]) -> None:
        entered.append((module, args[0] if args else None))

    def after(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        entered.pop()
        completed[0] += 1

    handles = [m.register_forward_pre_hook(before) for m in tagged]
    handles += [m.register_forward_hook(after) for m in tagged]
    was_training = model.training
    model.eval()
    try:
        with engine.no_grad():
            return model(engine.zeros((1, *input_shape), dtype=dtype, device=_model_device(model)))
    except MetaUnsupportedError:
        raise  # a limit of the meta device, not the spec's mistake (it is a RuntimeError)
    except _BAD_ARGUMENTS as e:
        if not entered:
            raise SpecError("model", f"on samples of shape {input_shape}: {e}") from None
        module, x = entered[-1]
        source = "the data" if completed[0] == 0 else "the previous layer"
        reason = _mismatch(module, x, source) if x is not None else None
        if reason is None:
            shape = tuple(x.shape[1:]) if x is not None else "?"
            reason = f"{type(module).__name__} cannot take {source}'s samples of shape {shape}: {e}"
        raise SpecError(getattr(module, _SPEC_PATH), reason) from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def dry_run(model: nn.Module, input_shape: tuple[int, ...], *, dtype: Any) -> tuple[int, ...]:
    """The output shape of one sample (without the batch dim) of `input_shape` and `dtype`,
    from a forward on zeros in eval mode under no_grad, on the model's device (meta: shapes
    only, nothing allocated). A layer that cannot take its input raises SpecError naming
    it: "model.layers[3]: Linear expects 64 input features, the previous layer gives 128";
    an op the meta device cannot run raises MetaUnsupportedError."""
    return tuple(_forward_one(model, input_shape, dtype).shape[1:])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _count_buffers(model: nn.Module) -> int:
    return sum(b.numel() for b in model.buffers())


def state_memory_mb(params: int, buffers: int, precision: str) -> float:
    """The part of `estimate_memory_mb` no batch size changes: parameters and buffers in
    float32 (AMP keeps float32 master weights), their float32 gradients and Adam's two
    float32 moments, 16 bytes a parameter; under fp16/bf16 2 bytes more a parameter for
    the half-precision copies autocast makes."""
    half = precision in ("fp16", "bf16")
    return (params * (16 + (2 if half else 0)) + buffers * 4) / 2**20


def estimate_memory_mb(
    model: nn.Module, batch_size: int, input_shape: tuple[int, ...], precision: str
) -> float:
    """A rough training-memory estimate, in MiB, for the caller to check against limits.

    - the model's state (`state_memory_mb`): 16 bytes a parameter, 18 under fp16/bf16;
    - activations: the outputs of every leaf module, plus each attention's score matrix,
      measured by a forward of one sample, times `batch_size`, at the precision's element
      size, times 2 for what backward keeps beyond module outputs (functional
      activations, residual sums, softmax inputs).

    Gradient checkpointing and the allocator's overhead are not counted.
    """
    per_sample = [0]

    def count_output(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        outs = output if isinstance(output, tuple) else (output,)
        per_sample[0] += sum(o.numel() for o in outs if isinstance(o, engine.Tensor))
        if isinstance(module, nn.MultiheadAttention) and args:
            length = args[0].shape[1] if module.batch_first else args[0].shape[0]
            per_sample[0] += module.num_heads * length * length

    watched = [
        m
        for m in model.modules()
        if isinstance(m, nn.MultiheadAttention) or not any(True for _ in m.children())
    ]
    handles = [m.register_forward_hook(count_output) for m in watched]
    try:
        _forward_one(model, input_shape, input_dtype(model))
    finally:
        for h in handles:
            h.remove()
    activation_bytes = per_sample[0] * batch_size * _PRECISION_BYTES[precision] * 2
    return (
        state_memory_mb(count_parameters(model), _count_buffers(model), precision)
        + activation_bytes / 2**20
    )


# Service-wide ceilings, set by whoever runs the service; a spec's own
# resources.memory_limit_mb can only be lower.
MAX_PARAMETERS_ENV, MAX_MEMORY_ENV = "DESCENT_MAX_PARAMETERS", "DESCENT_MAX_MEMORY_MB"
DEFAULT_MAX_PARAMETERS = 1_000_000_000


@dataclass(frozen=True)
class Limits:
    """The service-wide ceilings: DESCENT_MAX_PARAMETERS and DESCENT_MAX_MEMORY_MB (None:
    no memory ceiling). The API passes its Settings' values, read from the same variables;
    everything else reads the environment (`from_env`)."""

    max_parameters: int = DEFAULT_MAX_PARAMETERS
    max_memory_mb: float | None = None

    @classmethod
    def from_env(cls) -> Limits:
        memory = os.environ.get(MAX_MEMORY_ENV)
        return cls(
            int(os.environ.get(MAX_PARAMETERS_ENV, DEFAULT_MAX_PARAMETERS)),
            None if memory is None else float(memory),
        )


def _check_parameters(params: int, limits: Limits) -> None:
    if params > limits.max_parameters:
        raise SpecError(
            "model",
            f"{params:,} parameters exceed the limit of {limits.max_parameters:,} "
            f"({MAX_PARAMETERS_ENV})",
        )


def _check_memory(
    memory: float, memory_limit_mb: float | None, limits: Limits, needs: str, remedy: str
) -> None:
    """`needs` says what takes `memory` MiB, `remedy` what to do when it is too much."""
    for limit, source in (
        (memory_limit_mb, "resources.memory_limit_mb"),
        (limits.max_memory_mb, MAX_MEMORY_ENV),
    ):
        if limit is not None and memory > limit:
            raise SpecError(
                "resources.memory_limit_mb",
                f"{needs}, over the limit of {limit:,.0f} MB ({source}); {remedy}",
            )


def check_size(
    model: ModelSpec,
    *,
    input_shape: tuple[int, ...],
    num_classes: int | None,
    vocab_size: int | None = None,
    context: int | None = None,
    precision: str,
    memory_limit_mb: float | None,
    limits: Limits | None = None,
) -> int:
    """The parameter count of the model a spec describes, sized before anything is
    allocated: the model is built on the meta device (shapes, no storage), so a spec
    asking for a 160 GB layer costs nothing to refuse. Raises SpecError as `check_limits`
    does when the parameters, or the memory their state takes whatever the batch size
    (`state_memory_mb`), break a limit; `build_model`'s SpecErrors come through as they
    are. Run it before `build_model`, and `check_limits` after (activations)."""
    with engine.device("meta"):
        sized = build_model(
            model,
            input_shape=input_shape,
            num_classes=num_classes,
            vocab_size=vocab_size,
            context=context,
        )
    return _check_state(sized, precision, memory_limit_mb, limits or Limits.from_env())


def _check_state(
    sized: nn.Module, precision: str, memory_limit_mb: float | None, limits: Limits
) -> int:
    params = count_parameters(sized)
    _check_parameters(params, limits)
    state = state_memory_mb(params, _count_buffers(sized), precision)
    _check_memory(
        state,
        memory_limit_mb,
        limits,
        f"the model's weights, gradients and optimizer state alone need about {state:,.0f} MB",
        "make the model smaller",
    )
    return params


def check_limits(
    model: nn.Module,
    *,
    batch_size: int,
    input_shape: tuple[int, ...],
    precision: str,
    memory_limit_mb: float | None,
    limits: Limits | None = None,
) -> tuple[int, float]:
    """(parameters, estimated MiB) of a training run, or a SpecError naming the limit the
    run would break: the spec's resources.memory_limit_mb, DESCENT_MAX_MEMORY_MB or
    DESCENT_MAX_PARAMETERS (default 10**9), from `limits` or else the environment."""
    limits = limits or Limits.from_env()
    params = count_parameters(model)
    _check_parameters(params, limits)
    memory = estimate_memory_mb(model, batch_size, input_shape, precision)
    _check_memory(
        memory,
        memory_limit_mb,
        limits,
        f"the run needs about {memory:,.0f} MB at batch size {batch_size}",
        "lower data.batch_size or the model's size",
    )
    return params, memory


def check_model(
    model: ModelSpec,
    *,
    input_shape: tuple[int, ...],
    num_classes: int | None,
    vocab_size: int | None = None,
    context: int | None = None,
    batch_size: int,
    precision: str,
    memory_limit_mb: float | None,
    limits: Limits | None = None,
) -> tuple[int, float]:
    """(parameters, estimated MiB) of a training run of the model a spec describes, all
    checked on the meta device: `check_size`'s limits on its state, then `dry_run` and
    `check_limits` on one meta sample, so neither the weights nor the activations are
    allocated (a Conv2d with padding 5000 is refused, not run). Raises the SpecErrors
    those raise, in that order."""
    limits = limits or Limits.from_env()
    sizes: dict[str, Any] = {
        "input_shape": input_shape,
        "num_classes": num_classes,
        "vocab_size": vocab_size,
        "context": context,
    }
    activations: dict[str, Any] = {
        "batch_size": batch_size,
        "input_shape": input_shape,
        "precision": precision,
        "memory_limit_mb": memory_limit_mb,
        "limits": limits,
    }
    # the context too, so that a model with no tensors (only activations, pooling, ...)
    # runs its sample on meta as well
    with engine.device("meta"):
        checked = build_model(model, **sizes)
        _check_state(checked, precision, memory_limit_mb, limits)
        try:
            dry_run(checked, input_shape, dtype=input_dtype(checked))
            return check_limits(checked, **activations)
        except MetaUnsupportedError:
            pass
    # A layer the meta device cannot run yet: check the real model instead, as before
    # there was a meta device (its state, sized above, fits the limits).
    built = build_model(model, **sizes)
    dry_run(built, input_shape, dtype=input_dtype(built))
    return check_limits(built, **activations)
