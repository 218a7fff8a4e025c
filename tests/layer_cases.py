"""The layer cases both the PyTorch fixture script and tests/test_layers.py run.

Each case builds a module from a namespace `nn` (torch.nn or engine.nn: the API is the
same); functional ops come as a small module around `nn.functional`. Inputs are made
here, deterministically; the fixture script records PyTorch's state dict, output and
gradients, and the tests load that state dict into the engine's module.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LayerCase:
    name: str
    build: Callable[[Any], Any]  # nn -> module
    shape: tuple[int, ...]
    kind: str = "normal"  # normal | index:N
    train: bool = True
    random_stats: bool = False  # BatchNorm: random running stats before the step


def functional(nn: Any, fn: Callable[[Any, Any], Any]) -> Any:
    """A parameterless module whose forward is fn(nn.functional, x)."""

    class Fn(nn.Module):
        def forward(self, x: Any) -> Any:
            return fn(nn.functional, x)

    return Fn()


def make_input(case: LayerCase) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(f"{case.name}/in".encode()))
    if case.kind.startswith("index:"):
        return rng.integers(0, int(case.kind.split(":")[1]), case.shape).astype(np.int64)
    return rng.standard_normal(case.shape).astype(np.float32)


def upstream(case: LayerCase, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(f"{case.name}/gy".encode()))
    return rng.standard_normal(shape).astype(np.float32)


C = LayerCase
CASES = [
    C("linear", lambda nn: nn.Linear(5, 4), (3, 5)),
    C("linear_nobias_3d", lambda nn: nn.Linear(5, 4, bias=False), (2, 3, 5)),
    C("conv", lambda nn: nn.Conv2d(3, 4, 3), (2, 3, 7, 6)),
    C(
        "conv_strided_groups",
        lambda nn: nn.Conv2d(
            4, 6, (3, 2), stride=2, padding=1, dilation=(1, 2), groups=2, bias=False
        ),
        (2, 4, 9, 8),
    ),
    C("conv_same", lambda nn: nn.Conv2d(3, 4, 4, padding="same", dilation=1), (2, 3, 6, 7)),
    C(
        "conv_dilated_groups",
        lambda nn: nn.Conv2d(4, 6, (3, 2), padding=(2, 1), dilation=(2, 3), groups=2),
        (2, 4, 7, 6),
    ),
    C("conv_valid_unbatched", lambda nn: nn.Conv2d(3, 2, 2, padding="valid"), (3, 5, 5)),
    C(
        "conv_reflect",
        lambda nn: nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"),
        (2, 2, 5, 6),
    ),
    C("maxpool", lambda nn: nn.MaxPool2d(2), (2, 3, 8, 6)),
    C("maxpool_pad", lambda nn: nn.MaxPool2d(3, stride=2, padding=1), (2, 3, 9, 8)),
    C("maxpool_ceil_dil", lambda nn: nn.MaxPool2d(2, 2, dilation=2, ceil_mode=True), (2, 2, 9, 8)),
    C("avgpool", lambda nn: nn.AvgPool2d(2), (2, 3, 8, 6)),
    C(
        "avgpool_nopad_count",
        lambda nn: nn.AvgPool2d(3, 2, padding=1, count_include_pad=False),
        (2, 3, 9, 8),
    ),
    C("avgpool_ceil", lambda nn: nn.AvgPool2d(3, 2, padding=1, ceil_mode=True), (2, 3, 8, 8)),
    C("flatten", lambda nn: nn.Flatten(), (2, 3, 4, 5)),
    C("flatten_range", lambda nn: nn.Flatten(0, 1), (2, 3, 4)),
    C("unflatten", lambda nn: nn.Unflatten(1, (2, -1)), (3, 6, 2)),
    C("dropout_eval", lambda nn: nn.Dropout(0.5), (4, 5), train=False),
    C("dropout_p0", lambda nn: nn.Dropout(0.0), (4, 5)),
    C("embedding", lambda nn: nn.Embedding(10, 4), (3, 5), kind="index:10"),
    C("embedding_pad", lambda nn: nn.Embedding(10, 4, padding_idx=1), (3, 5), kind="index:4"),
    C("layernorm", lambda nn: nn.LayerNorm(6), (3, 4, 6)),
    C(
        "layernorm_2d_noaffine",
        lambda nn: nn.LayerNorm((3, 4), elementwise_affine=False),
        (2, 3, 4),
    ),
    C("layernorm_nobias", lambda nn: nn.LayerNorm(6, bias=False, eps=1e-3), (5, 6)),
    C("batchnorm1d", lambda nn: nn.BatchNorm1d(4), (6, 4)),
    C("batchnorm1d_3d_cumulative", lambda nn: nn.BatchNorm1d(4, momentum=None), (3, 4, 5)),
    C("batchnorm2d", lambda nn: nn.BatchNorm2d(3, momentum=0.3), (4, 3, 5, 4), random_stats=True),
    C(
        "batchnorm2d_eval",
        lambda nn: nn.BatchNorm2d(3),
        (4, 3, 5, 4),
        train=False,
        random_stats=True,
    ),
    C("batchnorm2d_noaffine", lambda nn: nn.BatchNorm2d(3, affine=False), (4, 3, 2, 2)),
    C("batchnorm1d_untracked", lambda nn: nn.BatchNorm1d(4, track_running_stats=False), (6, 4)),
    C(
        "batchnorm1d_untracked_eval",
        lambda nn: nn.BatchNorm1d(4, track_running_stats=False),
        (6, 4),
        train=False,
    ),
    C("relu", lambda nn: nn.ReLU(), (4, 5)),
    C("gelu", lambda nn: nn.GELU(), (4, 5)),
    C("gelu_tanh", lambda nn: nn.GELU(approximate="tanh"), (4, 5)),
    C("silu", lambda nn: nn.SiLU(), (4, 5)),
    C("tanh", lambda nn: nn.Tanh(), (4, 5)),
    C("sigmoid", lambda nn: nn.Sigmoid(), (4, 5)),
    C("softmax", lambda nn: nn.Softmax(dim=1), (3, 4, 5)),
    C("log_softmax", lambda nn: nn.LogSoftmax(dim=-1), (3, 4, 5)),
    C("leaky_relu", lambda nn: nn.LeakyReLU(0.2), (4, 5)),
    C("leaky_relu_default", lambda nn: nn.LeakyReLU(), (4, 5)),
    # functional ops with arguments the layers do not reach
    C(
        "f_linear_1d",
        lambda nn: functional(nn, lambda F, x: F.linear(x, x.unsqueeze(0) * 0.5)),
        (4,),
    ),
    C(
        "f_pad_constant",
        lambda nn: functional(nn, lambda F, x: F.pad(x, (1, 2, -1, 1), value=0.5)),
        (2, 3, 4),
    ),
    C(
        "f_pad_reflect",
        lambda nn: functional(nn, lambda F, x: F.pad(x, (2, 1, 1, 2), "reflect")),
        (2, 2, 4, 5),
    ),
    C(
        "f_pad_replicate",
        lambda nn: functional(nn, lambda F, x: F.pad(x, (2, 1), "replicate")),
        (2, 2, 4),
    ),
    C(
        "f_pad_circular",
        lambda nn: functional(nn, lambda F, x: F.pad(x, (1, 2, 2, 1), "circular")),
        (1, 2, 4, 5),
    ),
    C(
        "f_one_hot",
        lambda nn: functional(nn, lambda F, x: F.one_hot(x, 6)),
        (3, 4),
        kind="index:6",
    ),
    C(
        "f_dropout_eval",
        lambda nn: functional(nn, lambda F, x: F.dropout(x, 0.3, training=False)),
        (3, 4),
    ),
    C(
        "f_max_pool_indices",
        lambda nn: functional(
            nn, lambda F, x: F.max_pool2d(x, 3, 2, padding=1, return_indices=True)[1]
        ),
        (2, 2, 7, 6),
    ),
    C(
        "f_batch_norm_eval",
        lambda nn: functional(
            nn,
            lambda F, x: F.batch_norm(
                x, x.detach().mean((0, 2)), x.detach().var((0, 2)) + 0.5, training=False, eps=0.1
            ),
        ),
        (4, 3, 5),
    ),
    C(
        "f_conv2d_dilated",
        lambda nn: functional(
            nn, lambda F, x: F.conv2d(x, x[:2, :, :3, :3].detach() * 0.5, stride=(1, 2), dilation=2)
        ),
        (3, 2, 9, 9),
    ),
    C("f_softmax_3", lambda nn: functional(nn, lambda F, x: F.log_softmax(x, 0)), (3, 4)),
]
