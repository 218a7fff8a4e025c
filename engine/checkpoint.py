"""Training checkpoints: `Checkpoint`, `save_checkpoint`, `load_checkpoint`.

One safetensors file per checkpoint. The model's tensors go under their plain state-dict
keys, so `safetensors.torch.load_file` plus PyTorch's `load_state_dict` reads them into
an equivalent PyTorch model (drop the keys that start with "__" first when the checkpoint
also holds optimizer or other state). Every tensor found anywhere else (optimizer,
scheduler and scaler state dicts, the RNG state, metadata) goes under a prefix no module
can produce, such as "__optimizer__/state/0/exp_avg". Everything else, with the nesting
that puts those tensors back in place, is one JSON document in the safetensors metadata
under "descent.checkpoint".

The JSON keeps Python's types exactly: dicts with non-string keys (an optimizer's
integer state keys) and tuples (Adam's betas) are tagged, so a state dict comes back
equal to the one saved; floats are written with `repr`, which round-trips every value
including inf and nan.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from engine.serialization import (
    CheckpointError,
    host_array,
    read_safetensors,
    to_device,
    write_safetensors,
)
from engine.tensor import Tensor

__all__ = ["Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint"]

METADATA_KEY = "descent.checkpoint"
FORMAT_VERSION = 1
# where each non-model field's tensors live; "__" + a name + "__/" cannot be a module's key
# prefix that PyTorch or the engine produces (attribute names hold no "/")
PREFIXES = {
    "epoch": "__epoch__/",
    "step": "__step__/",
    "optimizer_state_dict": "__optimizer__/",
    "scheduler_state_dict": "__scheduler__/",
    "scaler_state_dict": "__scaler__/",
    "rng_state": "__rng__/",
    "loss": "__loss__/",
    "metadata": "__meta__/",
}
# JSON tags for what plain JSON would lose; a one-key dict with a tag as its key is a tag
_TENSOR, _TUPLE, _DICT = "__tensor__", "__tuple__", "__dict__"
_TAGS = frozenset((_TENSOR, _TUPLE, _DICT))


@dataclass(kw_only=True)
class Checkpoint:
    """What a training run needs to resume: weights, optimizer and friends, RNG, progress."""

    model_state_dict: dict[str, Tensor]
    epoch: int | None = None
    step: int | None = None
    optimizer_state_dict: dict[str, Any] | None = None
    scheduler_state_dict: dict[str, Any] | None = None
    scaler_state_dict: dict[str, Any] | None = None
    rng_state: Any = None
    loss: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class _Encoder:
    """Turns a field's value into JSON-able data, collecting its tensors under names."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.field = ""  # the Checkpoint field being encoded, for error messages

    def encode(self, value: Any, path: str) -> Any:
        if value is None or isinstance(value, bool | str):
            return value
        if isinstance(value, int | float):
            return value
        if isinstance(value, np.generic):  # a NumPy scalar stands for its Python value
            return self.encode(value.item(), path)
        if isinstance(value, Tensor):
            # a field that is one tensor (rng_state, say) still gets a name under its prefix
            name = path if "/" in path else f"{path}/tensor"
            base = name
            n = 1
            while name in self.arrays:  # keys holding "/" could make two paths alike
                name = f"{base}#{n}"
                n += 1
            self.arrays[name] = host_array(name, value, "save_checkpoint")
            return {_TENSOR: name}
        if isinstance(value, tuple):
            return {_TUPLE: [self.encode(v, f"{path}/{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self.encode(v, f"{path}/{i}") for i, v in enumerate(value)]
        if isinstance(value, dict):
            plain = all(isinstance(k, str) for k in value) and not (
                len(value) == 1 and next(iter(value)) in _TAGS
            )
            if plain:
                return {k: self.encode(v, f"{path}/{k}") for k, v in value.items()}
            return {
                _DICT: [
                    [self.encode(k, f"{path}/key{i}"), self.encode(v, f"{path}/{k}")]
                    for i, (k, v) in enumerate(value.items())
                ]
            }
        where = self.field + path[len(PREFIXES[self.field].rstrip("/")) :]
        raise TypeError(
            f"save_checkpoint: {where} holds a "
            f"{type(value).__name__}; a checkpoint takes tensors, numbers, strings, None, "
            "and lists, tuples and dicts of them (no pickle)"
        )


def _decode(value: Any, tensors: dict[str, Tensor], path: str) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors, path) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        tag, body = next(iter(value.items()))
        if tag == _TENSOR:
            if body not in tensors:
                raise CheckpointError(
                    f"{path} is not a valid checkpoint: its metadata names tensor {body!r}, "
                    "which the file lacks"
                )
            return tensors[body]
        if tag == _TUPLE:
            return tuple(_decode(v, tensors, path) for v in body)
        if tag == _DICT:
            out = {}
            for k, v in body:
                key = _decode(k, tensors, path)
                if isinstance(key, list | dict):  # save_checkpoint never writes these as keys
                    raise CheckpointError(
                        f"{path} is not a valid checkpoint: its metadata has a "
                        f"{type(key).__name__} where a dict key belongs"
                    )
                out[key] = _decode(v, tensors, path)
            return out
    return {k: _decode(v, tensors, path) for k, v in value.items()}


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike[str]) -> None:
    """Write `checkpoint` as one safetensors file, atomically (temp file, fsync, rename)."""
    if not isinstance(checkpoint, Checkpoint):
        raise TypeError(
            f"save_checkpoint: expected an engine.checkpoint.Checkpoint, got "
            f"{type(checkpoint).__name__}"
        )
    model = checkpoint.model_state_dict
    if not isinstance(model, dict):
        raise TypeError(
            f"save_checkpoint: model_state_dict must be a dict of str -> Tensor, got "
            f"{type(model).__name__}"
        )
    arrays: dict[str, np.ndarray] = {}
    for key, t in model.items():
        if isinstance(key, str) and key.startswith(tuple(PREFIXES.values())):
            raise ValueError(
                f"save_checkpoint: model key {key!r} starts with one of the prefixes the "
                f"checkpoint keeps for its other tensors ({', '.join(PREFIXES.values())})"
            )
        arrays[key] = host_array(key, t, "save_checkpoint")
    encoder = _Encoder(arrays)
    doc: dict[str, Any] = {"format_version": FORMAT_VERSION, "model_keys": list(model)}
    for f in fields(Checkpoint):
        if f.name != "model_state_dict":
            encoder.field = f.name
            doc[f.name] = encoder.encode(getattr(checkpoint, f.name), PREFIXES[f.name].rstrip("/"))
    write_safetensors(arrays, path, {METADATA_KEY: json.dumps(doc)})


def load_checkpoint(path: str | os.PathLike[str], device: Any = None) -> Checkpoint:
    """Read a file written by `save_checkpoint`, its tensors on `device` (default cpu)."""
    path = os.fspath(path)
    arrays, metadata = read_safetensors(path)
    text = metadata.get(METADATA_KEY)
    if text is None:
        raise CheckpointError(
            f"{path} is not a checkpoint: its safetensors metadata has no "
            f"{METADATA_KEY!r} entry (for a plain state dict use engine.load)"
        )
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise CheckpointError(
            f"{path} is not a valid checkpoint: its metadata is not valid JSON ({e})"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("model_keys"), list):
        raise CheckpointError(f"{path} is not a valid checkpoint: metadata lacks model_keys")
    if not all(isinstance(k, str) for k in doc["model_keys"]):  # a list there is unhashable
        raise CheckpointError(f"{path} is not a valid checkpoint: model_keys holds a non-string")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}; this engine reads "
            f"version {FORMAT_VERSION}"
        )
    tensors = {name: to_device(a, device) for name, a in arrays.items()}
    missing = [k for k in doc["model_keys"] if k not in tensors]
    if missing:
        raise CheckpointError(
            f"{path} is not a valid checkpoint: model tensors {missing[:5]} are missing"
        )
    try:
        values = {
            f.name: _decode(doc.get(f.name), tensors, path)
            for f in fields(Checkpoint)
            if f.name != "model_state_dict"
        }
    except (TypeError, ValueError) as e:  # a tag whose body has the wrong shape
        raise CheckpointError(
            f"{path} is not a valid checkpoint: malformed metadata ({e})"
        ) from None
    if values["metadata"] is None:
        values["metadata"] = {}
    return Checkpoint(model_state_dict={k: tensors[k] for k in doc["model_keys"]}, **values)
