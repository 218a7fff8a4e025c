"""PyTorch twins of the job architectures (jobs/models.py): the same module trees, so the
same state-dict keys, so a model.safetensors trained by Descent loads unchanged:

    model = build_torch_model(spec["model"], input_shape=(1, 8, 8), num_classes=10)
    load_engine_weights(model, "jobs/<id>/model.safetensors")
    model.eval()

Needs torch (and safetensors); nothing in `jobs` or the tests' CI tier imports this file.
The architectures' arguments are read through `jobs.spec`, so their defaults are the
engine's. tests/make_model_fixtures.py checks the twins against the engine models.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn.functional import relu
from torch.utils.checkpoint import checkpoint

from jobs.spec import CNNArgs, MLPArgs, ModelSpec, ResNetArgs, TransformerLMArgs


def build_mlp(args: MLPArgs, in_features: int, num_classes: int) -> nn.Sequential:
    act = nn.ReLU if args.activation == "relu" else nn.GELU
    layers: list[nn.Module] = [nn.Flatten()]
    prev = in_features
    for h in args.hidden:
        layers += [nn.Linear(prev, h), act(), nn.Dropout(args.dropout)]
        prev = h
    layers.append(nn.Linear(prev, num_classes))
    return nn.Sequential(*layers)


def build_cnn(args: CNNArgs, input_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    c, h, w = input_shape
    h_out, w_out = h // 2 ** len(args.channels), w // 2 ** len(args.channels)
    layers: list[nn.Module] = []
    prev = c
    for ch in args.channels:
        layers += [nn.Conv2d(prev, ch, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        prev = ch
    layers += [nn.Flatten(), nn.Dropout(args.dropout), nn.Linear(prev * h_out * w_out, num_classes)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return relu(out + identity)


class ResNet(nn.Module):
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = _maybe_checkpoint(self, block, x)
        return self.fc(x.mean(dim=(2, 3)))


class TransformerLM(nn.Module):
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

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        positions = torch.arange(t, device=idx.device)
        x = self.token_embedding(idx) + self.position_embedding(positions)
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=idx.device, dtype=x.dtype)
        for block in self.blocks:
            x = _maybe_checkpoint(self, block, x, src_mask=mask, is_causal=True)
        return self.head(self.norm(x))


def _maybe_checkpoint(owner: nn.Module, block: nn.Module, x: Any, **kwargs: Any) -> Any:
    if owner.gradient_checkpointing and owner.training and torch.is_grad_enabled():
        return checkpoint(block, x, use_reentrant=False, **kwargs)
    return block(x, **kwargs)


def _build_layer(layer: Any) -> nn.Module:
    if layer.type == "Sequential":
        return nn.Sequential(*(_build_layer(child) for child in layer.layers))
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in layer.kwargs.items()}
    return getattr(nn, layer.type)(**args)


def build_torch_model(
    spec_dict: dict[str, Any],
    input_shape: tuple[int, ...],
    num_classes: int | None,
    vocab_size: int | None = None,
    context: int | None = None,
) -> nn.Module:
    """The PyTorch twin of `jobs.models.build_model` for a job spec's `model` section (or
    a whole job spec, whose `model` is taken)."""
    spec = ModelSpec.model_validate(spec_dict.get("model", spec_dict))
    if spec.layers is not None:
        return nn.Sequential(*(_build_layer(layer) for layer in spec.layers))
    args = spec.architecture_args()
    if spec.architecture == "transformer_lm":
        assert vocab_size is not None and context is not None, "transformer_lm needs both"
        return TransformerLM(args, vocab_size, context)
    assert num_classes is not None, f"{spec.architecture} needs num_classes"
    if spec.architecture == "mlp":
        return build_mlp(args, math.prod(input_shape), num_classes)
    if spec.architecture == "cnn":
        return build_cnn(args, input_shape, num_classes)
    return ResNet(args, input_shape[0], num_classes)


def load_engine_weights(model: nn.Module, path: str | Path) -> None:
    """Loads a Descent model.safetensors or checkpoint: the weights sit under their plain
    state-dict keys; the `__`-prefixed entries (optimizer, RNG, ...) are not the model's."""
    tensors = load_file(str(path))
    model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("__")})
