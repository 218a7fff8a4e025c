"""Utilities beside the tensor core, as under `torch.utils`: data loading
(`engine.utils.data`) and gradient checkpointing (`engine.utils.checkpoint`)."""

from engine.utils import checkpoint, data
