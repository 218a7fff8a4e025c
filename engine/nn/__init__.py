"""`engine.nn`: modules, layers, losses, initialisers and utilities, as `torch.nn`."""

from engine.nn.containers import Identity, ModuleDict, ModuleList, Sequential
from engine.nn.module import Module
from engine.nn.parameter import Parameter

# --- layers: linear, conv/pool, shape, dropout, embedding, normalization, activations ---

# --- losses, attention, transformer, utils ---
