"""`engine.nn`: modules, layers, losses, initialisers and utilities, as `torch.nn`."""

from engine.nn.containers import Identity, ModuleDict, ModuleList, Sequential
from engine.nn.module import Module
from engine.nn.parameter import Parameter

# --- layers: linear, conv/pool, shape, dropout, embedding, normalization, activations ---
# isort: split
from engine.nn import init
from engine.nn.activation import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Tanh
from engine.nn.conv import AvgPool2d, Conv2d, MaxPool2d
from engine.nn.dropout import Dropout
from engine.nn.flatten import Flatten, Unflatten
from engine.nn.linear import Linear
from engine.nn.normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from engine.nn.sparse import Embedding

# --- losses, attention, transformer, utils ---
# isort: split
from engine.nn import utils
from engine.nn.attention import MultiheadAttention
from engine.nn.loss import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    FocalLoss,
    HuberLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)
from engine.nn.transformer import TransformerEncoderLayer
