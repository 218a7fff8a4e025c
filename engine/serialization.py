"""`engine.save` / `engine.load`: a flat dict of tensors to and from safetensors, never pickle.

The format is written and read here directly rather than through `safetensors.numpy`,
whose dtype table has no bfloat16 (it fails on ml_dtypes' type). A file is: the header's
byte length as 8 little-endian bytes, a JSON header `{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {str: str}}` padded with spaces to a
multiple of 8, then the tensors' raw little-endian bytes back to back. Tensors are laid
out widest dtype first, as safetensors itself does, so every one starts aligned to its
item size. Files written here load with `safetensors.numpy.load_file` (dtypes other than
bfloat16) and `safetensors.torch.load_file` (all), and files they write load here.

Writes are atomic: a temporary file in the target's directory is written, flushed,
fsynced and renamed over the target, then the directory is fsynced, so a crash leaves
either the old file or the new one. Reads validate the header against the file before
touching any data, so a truncated or corrupt file raises `CheckpointError` naming the
file and the fault.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from engine import dtypes
from engine.device import CPU, resolve
from engine.tensor import Tensor, wrap

# safetensors' dtype codes for the engine's dtypes, both ways
_CODE = {
    dtypes.float64: "F64",
    dtypes.float32: "F32",
    dtypes.float16: "F16",
    dtypes.bfloat16: "BF16",
    dtypes.int64: "I64",
    dtypes.int32: "I32",
    dtypes.bool_: "BOOL",
}
_DTYPE = {code: d for d, code in _CODE.items()}
# safetensors' own loader refuses headers over 100 MB; refusing them too keeps a garbage
# length from making us allocate gigabytes
_MAX_HEADER = 100_000_000
_METADATA = "__metadata__"


class CheckpointError(RuntimeError):
    """A checkpoint or safetensors file that is truncated, corrupt or not what was expected."""


def _fail(path: str, what: str) -> CheckpointError:
    return CheckpointError(f"{path} is not a valid safetensors file: {what}")


def write_safetensors(
    arrays: Mapping[str, np.ndarray], path: str | os.PathLike[str], metadata: Mapping[str, str]
) -> None:
    """Write host arrays (engine dtypes) and string metadata as one safetensors file, atomically."""
    path = os.fspath(path)
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"safetensors metadata must map str to str, got {key!r}: {type(value).__name__}"
            )
    header: dict[str, Any] = {_METADATA: dict(metadata)} if metadata else {}
    for name, a in arrays.items():  # the header keeps the caller's order, which load returns
        header[name] = {"dtype": _CODE[dtypes.from_np(a.dtype)], "shape": list(a.shape)}
    # the data goes widest first, then by name, so every tensor's offset is a multiple of
    # its item size
    blobs = []
    offset = 0
    for name in sorted(arrays, key=lambda n: (-arrays[n].dtype.itemsize, n)):
        a = _contiguous(arrays[name])
        if a.dtype.byteorder == ">":  # the format is little-endian
            a = a.astype(a.dtype.newbyteorder("<"))
        header[name]["data_offsets"] = [offset, offset + a.nbytes]
        offset += a.nbytes
        blobs.append(a.reshape(-1).view(np.uint8))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # pad so the data section starts 8-aligned
    _atomic_write(path, [struct.pack("<Q", len(text)), text, *blobs])


def _atomic_write(path: str, chunks: list[Any]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    # os.open with 0o666 honours the umask, so the result gets the same mode a plain open
    # would give it (mkstemp would leave it 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # leave the old file as it was and no stray temporary behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable; platforms that cannot open a directory skip it."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:  # some file systems refuse fsync on a directory; the data is synced
        pass
    finally:
        os.close(dfd)


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The host arrays (in the header's order) and string metadata of a safetensors file."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise _fail(path, f"truncated: {size} bytes, less than the 8-byte header length")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > _MAX_HEADER:
            raise _fail(path, f"header length {n} is implausible (over {_MAX_HEADER} bytes)")
        if 8 + n > size:
            raise _fail(path, f"truncated: the header needs {8 + n} bytes but the file has {size}")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, ValueError) as e:
            raise _fail(path, f"the header is not valid JSON ({e})") from None
        if not isinstance(header, dict):
            raise _fail(path, f"the header is a JSON {type(header).__name__}, not an object")
        metadata = header.pop(_METADATA, None)
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise _fail(path, "__metadata__ is not an object of strings")
        specs = {name: _parse_entry(path, name, entry) for name, entry in header.items()}
        _check_layout(path, specs, size - 8 - n)
        data_start = 8 + n
        arrays = {}
        for name, (d, shape, (begin, _)) in specs.items():
            a = np.empty(shape, dtype=d.np)
            if a.nbytes:
                f.seek(data_start + begin)
                if f.readinto(a.reshape(-1).view(np.uint8)) != a.nbytes:
                    raise _fail(path, f"tensor {name!r}: the file ended early while reading")
            arrays[name] = a
    return arrays, metadata


def _parse_entry(
    path: str, name: str, entry: Any
) -> tuple[dtypes.dtype, tuple[int, ...], tuple[int, int]]:
    if not isinstance(entry, dict):
        raise _fail(path, f"tensor {name!r}: its header entry is not an object")
    code, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    d = _DTYPE.get(code) if isinstance(code, str) else None
    if d is None:
        raise _fail(
            path,
            f"tensor {name!r}: dtype {code!r} is not one the engine has ({', '.join(_DTYPE)})",
        )
    if not (
        isinstance(shape, list)
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise _fail(path, f"tensor {name!r}: shape {shape!r} is not a list of sizes")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        and 0 <= offsets[0] <= offsets[1]
    ):
        raise _fail(path, f"tensor {name!r}: data_offsets {offsets!r} are not [begin, end]")
    expected = math.prod(shape) * d.itemsize
    if offsets[1] - offsets[0] != expected:
        raise _fail(
            path,
            f"tensor {name!r}: data_offsets {offsets} hold {offsets[1] - offsets[0]} bytes, "
            f"but shape {shape} of {code} needs {expected}",
        )
    return d, tuple(shape), (offsets[0], offsets[1])


def _check_layout(path: str, specs: dict[str, Any], data_size: int) -> None:
    """Tensors must tile the data section exactly, as safetensors itself requires."""
    end = 0
    for name, (_, _, (begin, stop)) in sorted(specs.items(), key=lambda kv: kv[1][2]):
        if stop > data_size:
            raise _fail(
                path,
                f"truncated: tensor {name!r} ends at byte {stop} of the data section, "
                f"which has only {data_size} bytes",
            )
        if begin != end:
            raise _fail(path, f"tensor {name!r} starts at byte {begin} of the data, expected {end}")
        end = stop
    if end != data_size:
        raise _fail(path, f"{data_size - end} bytes after the last tensor belong to none")


def host_array(name: str, t: Any, op: str) -> np.ndarray:
    """t's values as a contiguous host array; the graph and requires_grad are dropped."""
    if not isinstance(name, str) or not isinstance(t, Tensor):
        raise TypeError(
            f"{op}: expected str keys and Tensor values (safetensors only, no pickle), "
            f"got {name!r}: {type(t).__name__}"
        )
    # a CPU array is written as it is (to_host would copy every tensor first, doubling a
    # model's memory while it is saved); a CUDA one has to come to the host
    data = t._data
    return _contiguous(data if t._device.type == "cpu" else t._device.ops.to_host(data))


def _contiguous(a: np.ndarray) -> np.ndarray:
    # not np.ascontiguousarray: it turns a 0-d array into a 1-d one
    return a if a.flags.c_contiguous else a.copy(order="C")


def to_device(a: np.ndarray, device: Any) -> Tensor:
    dev = CPU if device is None else resolve(device)  # as torch.load: not the default device
    return wrap(dev.ops.from_host(a), dev)


def save(obj: Mapping[str, Tensor], path: str | os.PathLike[str]) -> None:
    """Write a flat {name: tensor} dict as one safetensors file, atomically.

    Any device, dtype, 0-d or non-contiguous tensor; CUDA tensors are copied to the host.
    """
    if not isinstance(obj, Mapping):
        raise TypeError(
            f"save: expected a flat dict of str -> Tensor (safetensors only, no pickle), "
            f"got {type(obj).__name__}"
        )
    write_safetensors({name: host_array(name, t, "save") for name, t in obj.items()}, path, {})


def load(path: str | os.PathLike[str], device: Any = None) -> dict[str, Tensor]:
    """Read a safetensors file (ours or PyTorch's) as {name: tensor} on `device` (cpu)."""
    arrays, _ = read_safetensors(path)
    return {name: to_device(a, device) for name, a in arrays.items()}
