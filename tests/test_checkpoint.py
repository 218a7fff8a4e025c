"""engine.save/engine.load and engine.checkpoint: safetensors round trips, corrupt files,
atomic writes, full training-state checkpoints, resume, and interop with PyTorch's files.

The interop tests read tests/fixtures/interop.* (made by tests/make_interop_fixtures.py
with torch 2.13.0); nothing here imports torch.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DEVICES
from fixture_meta import FIXTURES, check_meta
from safetensors.numpy import load_file as np_load_file

import engine
from engine import nn, optim
from engine.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint


def _sample(d: engine.dtype, shape: tuple[int, ...]) -> engine.Tensor:
    if d is engine.bool_:
        return engine.rand(*shape) > 0.5
    if not d.is_floating_point:
        return engine.randint(-1000, 1000, shape, dtype=d)
    return engine.randn(*shape, dtype=d)


def _bits(t: engine.Tensor) -> tuple[str, tuple[int, ...], bytes]:
    a = t.detach().cpu().numpy()
    return a.dtype.str, a.shape, a.tobytes()


def _same(a: Any, b: Any, where: str = "value") -> None:
    """Equal with types kept exactly: tuples stay tuples, ints ints, tensors bit for bit."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, engine.Tensor):
        assert a.dtype is b.dtype, where
        assert _bits(a) == _bits(b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    elif isinstance(a, float):
        assert a == b and math.copysign(1, a) == math.copysign(1, b), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# ---- engine.save / engine.load ---------------------------------------------------------
@pytest.mark.parametrize("d", list(engine.dtypes.ALL), ids=lambda d: d.name)
def test_save_load_round_trips_every_dtype_and_shape(tmp_path: Path, d: engine.dtype) -> None:
    sd = {
        "matrix": _sample(d, (3, 5)),
        "scalar": _sample(d, ()),
        "empty": _sample(d, (0, 4)),
        "cube": _sample(d, (2, 3, 4)),
        "transposed": _sample(d, (4, 6)).T,  # non-contiguous
        "strided": _sample(d, (8, 5))[::2, 1:],
    }
    assert not sd["transposed"].is_contiguous()
    path = tmp_path / f"{d.name}.safetensors"
    engine.save(sd, path)
    back = engine.load(path)
    assert list(back) == list(sd)  # the caller's order comes back
    for k, v in sd.items():
        assert back[k].dtype is d, k
        assert back[k].device == engine.device("cpu")
        assert _bits(back[k]) == _bits(v.contiguous()), k


def test_saved_files_load_with_safetensors_numpy(tmp_path: Path) -> None:
    # safetensors.numpy has no bfloat16 (its dtype table lacks it), so it gets the rest;
    # the interop fixtures check bfloat16 both ways through safetensors.torch
    sd = {d.name: _sample(d, (2, 3)) for d in engine.dtypes.ALL if d is not engine.bfloat16}
    sd["zero_d"] = engine.tensor(2.5)
    sd["non_contiguous"] = engine.randn(3, 4).T
    path = tmp_path / "np.safetensors"
    engine.save(sd, path)
    arrays = np_load_file(str(path))
    assert set(arrays) == set(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(arrays[k], v.numpy(), err_msg=k)
        assert arrays[k].dtype == v.numpy().dtype
        assert arrays[k].shape == v.shape


def test_load_reads_a_file_written_by_safetensors_numpy(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array(7, np.int64)}
    save_file(arrays, str(tmp_path / "theirs.safetensors"), metadata={"k": "v"})
    back = engine.load(tmp_path / "theirs.safetensors")
    for k, a in arrays.items():
        np.testing.assert_array_equal(back[k].numpy(), a)
        assert back[k].shape == a.shape


def test_save_rejects_what_safetensors_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="no pickle"):
        engine.save({"x": [1, 2]}, tmp_path / "a.safetensors")
    with pytest.raises(TypeError, match="flat dict"):
        engine.save([engine.ones(2)], tmp_path / "b.safetensors")  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


@pytest.mark.gpu
def test_cuda_tensors_are_saved_from_the_host_and_loaded_onto_the_device(tmp_path: Path) -> None:
    sd = {"w": engine.randn(3, 4, device="cuda").T, "h": engine.ones(2, dtype=engine.bfloat16)}
    path = tmp_path / "cuda.safetensors"
    engine.save(sd, path)
    on_cpu = engine.load(path)
    assert on_cpu["w"].device == engine.device("cpu")
    on_gpu = engine.load(path, device="cuda")
    assert on_gpu["w"].is_cuda and on_gpu["h"].is_cuda
    assert _bits(on_gpu["w"]) == _bits(sd["w"].contiguous())


# ---- corrupt and truncated files -------------------------------------------------------
def _good_file(tmp_path: Path) -> Path:
    path = tmp_path / "good.safetensors"
    engine.save({"w": engine.randn(4, 4), "b": engine.zeros(4, dtype=engine.float64)}, path)
    return path


def _raw(header: dict[str, Any], data: bytes, pad_to: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    if pad_to is not None:
        text = text.ljust(pad_to)
    return struct.pack("<Q", len(text)) + text + data


def _assert_clear_error(path: Path, match: str) -> None:
    with pytest.raises(CheckpointError, match=match) as info:
        engine.load(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, RuntimeError)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_truncated_files_raise_a_clear_error_at_every_cut(tmp_path: Path) -> None:
    good = _good_file(tmp_path).read_bytes()
    (n,) = struct.unpack("<Q", good[:8])
    for cut in (0, 3, 8, 9, 8 + n // 2, 8 + n - 1, 8 + n, 8 + n + 5, len(good) - 1):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(good[:cut])
        _assert_clear_error(path, "truncated|not valid JSON")


def test_corrupt_headers_raise_a_clear_error(tmp_path: Path) -> None:
    good = _good_file(tmp_path).read_bytes()
    (n,) = struct.unpack("<Q", good[:8])
    header = json.loads(good[8 : 8 + n])
    data = good[8 + n :]
    cases = {
        "huge_length": (struct.pack("<Q", 2**62) + good[8:], "implausible"),
        "length_past_end": (struct.pack("<Q", len(good)) + good[8:], "truncated"),
        "bad_json": (good[:8] + b"x" + good[9:], "not valid JSON"),
        "not_utf8": (good[:8] + b"\xff" * n + data, "not valid JSON"),
        "json_list": (_raw([1, 2], data), "not an object"),  # type: ignore[arg-type]
        "garbage": (os.urandom(200), "implausible|truncated|JSON"),
    }
    beyond = json.loads(json.dumps(header))
    beyond["w"]["data_offsets"] = [len(data), len(data) + 64]
    cases["offsets_beyond_file"] = (_raw(beyond, data), "truncated")
    wrong_count = json.loads(json.dumps(header))
    wrong_count["w"]["shape"] = [4, 5]
    cases["bytes_not_shape_times_dtype"] = (_raw(wrong_count, data), "needs 80")
    bad_dtype = json.loads(json.dumps(header))
    bad_dtype["w"]["dtype"] = "U8"
    cases["unknown_dtype"] = (_raw(bad_dtype, data), "dtype 'U8'")
    bad_shape = json.loads(json.dumps(header))
    bad_shape["w"]["shape"] = [4, -4]
    cases["negative_shape"] = (_raw(bad_shape, data), "shape")
    gap = json.loads(json.dumps(header))
    gap["b"]["data_offsets"] = [o + 8 for o in gap["b"]["data_offsets"]]
    gap["w"]["data_offsets"] = [o + 8 for o in gap["w"]["data_offsets"]]
    cases["gap_in_data"] = (_raw(gap, b"\0" * 8 + data), "starts at byte 8")
    cases["trailing_bytes"] = (_raw(header, data + b"junk"), "belong to none")
    bad_meta = json.loads(json.dumps(header))
    bad_meta["__metadata__"] = {"k": 1}
    cases["metadata_not_strings"] = (_raw(bad_meta, data), "__metadata__")
    for name, (blob, match) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(blob)
        _assert_clear_error(path, match)


def test_a_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        engine.load(tmp_path / "nothing.safetensors")


# ---- atomic writes -------------------------------------------------------------------
def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _good_file(tmp_path)
    before = path.read_bytes()

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        engine.save({"w": engine.ones(1000)}, path)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(Checkpoint(model_state_dict={"w": engine.ones(3)}), path)
    with pytest.raises(OSError, match="No space"):
        engine.save({"w": engine.ones(3)}, tmp_path / "new.safetensors")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.safetensors"]


def test_an_interrupted_rename_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _good_file(tmp_path)
    before = path.read_bytes()

    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        engine.save({"w": engine.ones(3)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["good.safetensors"]


def test_writes_sync_the_file_before_the_rename_and_the_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        assert Path(src).parent == Path(dst).parent == tmp_path  # same directory: atomic
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    engine.save({"w": engine.ones(3)}, tmp_path / "a.safetensors")
    assert events == ["fsync-file", "replace", "fsync-dir"]


# ---- Checkpoint ----------------------------------------------------------------------
def _pytorch_layout_adam_state() -> dict[str, Any]:
    """An Adam state dict in PyTorch's layout, as torch.optim.Adam(...).state_dict() gives."""
    return {
        "state": {
            0: {
                "step": engine.tensor(3.0),
                "exp_avg": engine.randn(4, 3),
                "exp_avg_sq": engine.rand(4, 3),
            },
            1: {
                "step": engine.tensor(3.0),
                "exp_avg": engine.randn(4),
                "exp_avg_sq": engine.rand(4),
            },
        },
        "param_groups": [
            {
                "lr": 0.001,
                "betas": (0.9, 0.999),
                "eps": 1e-08,
                "weight_decay": 0.0,
                "amsgrad": False,
                "maximize": False,
                "foreach": None,
                "capturable": False,
                "differentiable": False,
                "fused": None,
                "decoupled_weight_decay": False,
                "params": [0, 1],
            }
        ],
    }


def test_checkpoint_is_keyword_built_with_pytorch_like_defaults() -> None:
    with pytest.raises(TypeError):
        Checkpoint({"w": engine.ones(1)})  # type: ignore[misc]
    ck = Checkpoint(model_state_dict={})
    assert ck.epoch is ck.step is ck.loss is ck.rng_state is None
    assert ck.optimizer_state_dict is ck.scheduler_state_dict is ck.scaler_state_dict is None
    assert ck.metadata == {}
    assert Checkpoint(model_state_dict={}).metadata is not ck.metadata


def test_checkpoint_round_trips_every_field_exactly(tmp_path: Path) -> None:
    model = {
        "0.weight": engine.randn(4, 3),
        "0.bias": engine.randn(4),
        "bn.running_mean": engine.zeros(4),
        "bn.num_batches_tracked": engine.tensor(7),
        "half": engine.randn(2, 2, dtype=engine.bfloat16),
    }
    optimizer = _pytorch_layout_adam_state()
    scheduler = {
        "base_lrs": [0.1, 0.01],
        "last_epoch": 5,
        "_step_count": 6,
        "_get_lr_called_within_step": False,
        "_last_lr": [0.05, 0.005],
        "lr_lambdas": [None],
    }
    scaler = {
        "scale": 65536.0,
        "growth_factor": 2.0,
        "backoff_factor": 0.5,
        "growth_interval": 2000,
        "_growth_tracker": 0,
    }
    loader = {
        "epoch": 2,
        "batches_yielded": 17,
        "generator_state": [1, -2, 3, 4, 0, 0],
        "base_seed": 2**63 - 1,
        "worker_rng_states": None,
        "sampler": {"epoch": 2, "seed": 0},
    }
    metadata = {
        "dataloader": loader,
        "config": {"model": "mlp", "hidden": [64, 64], "dropout": 0.1},
        "odd floats": [float("inf"), -0.0, 1 / 3, 1e-310, float("nan")],
        "int keys": {1: "a", -2: "b"},
        "mixed keys": {"1": "str", 1: "int", (2, "x"): "tuple", None: "none"},
        "tags as data": {"__tensor__": "not a tensor"},
        "nested tuples": ((1, 2), [3, (4,)]),
        "a tensor": engine.arange(5),
        "unicode": "naïve ✓",
    }
    ck = Checkpoint(
        model_state_dict=model,
        epoch=3,
        step=1234,
        optimizer_state_dict=optimizer,
        scheduler_state_dict=scheduler,
        scaler_state_dict=scaler,
        rng_state=engine.get_rng_state(),
        loss=0.6931471805599453,
        metadata=metadata,
    )
    path = tmp_path / "ck.safetensors"
    save_checkpoint(ck, path)
    back = load_checkpoint(path)
    assert isinstance(back, Checkpoint)
    for name in Checkpoint.__dataclass_fields__:
        _same(getattr(ck, name), getattr(back, name), name)
    # the weights sit under their plain keys, everything else under prefixes
    keys = set(np_load_file_keys(path))
    assert set(model) <= keys
    assert "__optimizer__/state/0/exp_avg" in keys
    assert all(k in model or k.startswith("__") for k in keys)


def np_load_file_keys(path: Path) -> list[str]:
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    header = json.loads(path.read_bytes()[8 : 8 + n])
    return [k for k in header if k != "__metadata__"]


def test_checkpoint_refuses_what_it_cannot_store(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="metadata/bad holds a set"):
        save_checkpoint(
            Checkpoint(model_state_dict={}, metadata={"bad": {1, 2}}), tmp_path / "a.st"
        )
    with pytest.raises(ValueError, match="prefixes"):
        save_checkpoint(
            Checkpoint(model_state_dict={"__optimizer__/x": engine.ones(1)}), tmp_path / "b.st"
        )
    with pytest.raises(TypeError, match="Checkpoint"):
        save_checkpoint({"model_state_dict": {}}, tmp_path / "c.st")  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


def test_load_checkpoint_refuses_a_plain_state_dict_file(tmp_path: Path) -> None:
    path = _good_file(tmp_path)
    with pytest.raises(CheckpointError, match=r"not a checkpoint.*engine\.load"):
        load_checkpoint(path)


def test_load_checkpoint_reports_bad_checkpoint_metadata(tmp_path: Path) -> None:
    path = tmp_path / "ck.safetensors"
    save_checkpoint(
        Checkpoint(model_state_dict={"w": engine.ones(2)}, metadata={"k": {1: 2}}), path
    )
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    text = header["__metadata__"]["descent.checkpoint"]
    cases = {
        "ghost": text.replace('"model_keys": ["w"]', '"model_keys": ["w", "ghost"]'),
        "not valid JSON": text[:-3],
        "malformed metadata": text.replace("[[1, 2]]", "[1]"),
        "format version 99": text.replace('"format_version": 1', '"format_version": 99'),
    }
    for match, doc in cases.items():
        assert doc != text, match
        header["__metadata__"]["descent.checkpoint"] = doc
        path.write_bytes(_raw(header, blob[8 + n :]))
        with pytest.raises(CheckpointError, match=match):
            load_checkpoint(path)


def test_load_checkpoint_refuses_model_keys_that_are_not_strings(tmp_path: Path) -> None:
    # found by tests/test_fuzz.py: a list or dict among model_keys raised TypeError
    # (unhashable type) instead of CheckpointError
    path = tmp_path / "ck.safetensors"
    save_checkpoint(Checkpoint(model_state_dict={"w": engine.ones(2)}), path)
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    text = header["__metadata__"]["descent.checkpoint"]
    for key in ("[]", '{"w": 1}', "3"):
        doc = text.replace('"model_keys": ["w"]', f'"model_keys": ["w", {key}]')
        assert doc != text
        header["__metadata__"]["descent.checkpoint"] = doc
        path.write_bytes(_raw(header, blob[8 + n :]))
        with pytest.raises(CheckpointError, match="model_keys"):
            load_checkpoint(path)


def test_rng_state_restored_from_a_checkpoint_gives_the_same_draws(tmp_path: Path) -> None:
    engine.manual_seed(123)
    engine.randn(17)  # somewhere in the middle of the stream
    path = tmp_path / "rng.safetensors"
    save_checkpoint(Checkpoint(model_state_dict={}, rng_state=engine.get_rng_state()), path)
    expected = [engine.randn(5).tolist(), engine.rand(3).tolist(), engine.randperm(9).tolist()]
    engine.manual_seed(999)
    engine.set_rng_state(load_checkpoint(path).rng_state)
    got = [engine.randn(5).tolist(), engine.rand(3).tolist(), engine.randperm(9).tolist()]
    assert got == expected


@pytest.mark.parametrize("device", DEVICES)
def test_load_checkpoint_puts_every_tensor_on_the_device(tmp_path: Path, device: str) -> None:
    path = tmp_path / "ck.safetensors"
    save_checkpoint(
        Checkpoint(
            model_state_dict={"w": engine.ones(2)},
            optimizer_state_dict=_pytorch_layout_adam_state(),
        ),
        path,
    )
    back = load_checkpoint(path, device=device)
    want = engine.device(device).type
    assert back.model_state_dict["w"].device.type == want
    assert back.optimizer_state_dict["state"][1]["exp_avg"].device.type == want  # type: ignore[index]


# ---- resuming a real run -------------------------------------------------------------
def _model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.LayerNorm(16), nn.Linear(16, 3)
    )


@pytest.mark.parametrize("opt_name", ["Adam", "SGD"])
def test_resuming_from_a_checkpoint_ends_bit_identical(tmp_path: Path, opt_name: str) -> None:
    from engine.utils.data import DataLoader, TensorDataset

    def make() -> tuple[nn.Module, Any, Any]:
        engine.manual_seed(0)
        model = _model()
        opt = (
            optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.99), amsgrad=True)
            if opt_name == "Adam"
            else optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
        )
        data = TensorDataset(engine.randn(40, 6), engine.randn(40, 3))
        loader = DataLoader(
            data, batch_size=8, shuffle=True, generator=engine.Generator().manual_seed(5)
        )
        return model, opt, loader

    def batches(loader: Any) -> Iterator[Any]:
        while True:
            yield from loader

    def train(model: nn.Module, opt: Any, stream: Iterator[Any], steps: int) -> None:
        for _ in range(steps):
            x, y = next(stream)
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()

    model, opt, loader = make()
    train(model, opt, batches(loader), 13)
    expected = {k: _bits(v) for k, v in model.state_dict().items()}

    model, opt, loader = make()
    stream = batches(loader)
    train(model, opt, stream, 7)  # stops mid-epoch: 5 batches an epoch
    path = tmp_path / "resume.safetensors"
    save_checkpoint(
        Checkpoint(
            model_state_dict=model.state_dict(),
            step=7,
            optimizer_state_dict=opt.state_dict(),
            rng_state=engine.get_rng_state(),
            metadata={"dataloader": loader.state_dict()},
        ),
        path,
    )
    stream.close()

    model, opt, loader = make()
    engine.manual_seed(4321)  # the restored state must win over whatever came before
    ck = load_checkpoint(path)
    model.load_state_dict(ck.model_state_dict)
    opt.load_state_dict(ck.optimizer_state_dict)
    engine.set_rng_state(ck.rng_state)
    loader.load_state_dict(ck.metadata["dataloader"])
    train(model, opt, batches(loader), 13 - ck.step)  # type: ignore[operator]
    got = {k: _bits(v) for k, v in model.state_dict().items()}
    assert got == expected


def test_a_real_optimizer_state_dict_round_trips(tmp_path: Path) -> None:
    model = _model()
    opt = optim.Adam(
        [
            {"params": list(model.parameters())[:2]},
            {"params": list(model.parameters())[2:], "lr": 0.1},
        ]
    )
    model(engine.randn(4, 6)).sum().backward()
    opt.step()
    path = tmp_path / "opt.safetensors"
    save_checkpoint(
        Checkpoint(model_state_dict=model.state_dict(), optimizer_state_dict=opt.state_dict()),
        path,
    )
    _same(opt.state_dict(), load_checkpoint(path).optimizer_state_dict, "optimizer")


# ---- interop with PyTorch (fixtures from tests/make_interop_fixtures.py) -------------
INTEROP = FIXTURES / "interop.json"


def _interop() -> dict[str, Any]:
    return check_meta("interop")


def _interop_models() -> list[str]:
    return list(json.loads(INTEROP.read_text())["models"])


def test_interop_fixtures_are_current() -> None:
    _interop()


@pytest.mark.parametrize("name", _interop_models())
def test_a_pytorch_written_state_dict_loads_into_the_engine_model(name: str) -> None:
    from make_interop_fixtures import ENGINE_MODELS, input_for

    spec = _interop()["models"][name]
    model = ENGINE_MODELS[name]()
    state = engine.load(FIXTURES / f"interop.{name}.safetensors")
    model.load_state_dict(state, strict=True)
    model.eval()
    with engine.no_grad():
        out = model(input_for(name, engine))
    np.testing.assert_allclose(
        out.numpy(), np.array(spec["output"], dtype=np.float32), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("name", _interop_models())
def test_an_engine_saved_checkpoint_has_pytorchs_keys_shapes_and_dtypes(
    tmp_path: Path, name: str
) -> None:
    from make_interop_fixtures import ENGINE_MODELS

    spec = _interop()["models"][name]["state_dict"]
    model = ENGINE_MODELS[name]()
    path = tmp_path / f"{name}.safetensors"
    save_checkpoint(Checkpoint(model_state_dict=model.state_dict(), epoch=1), path)
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    header = json.loads(path.read_bytes()[8 : 8 + n])
    header.pop("__metadata__")
    assert list(header) == list(spec)
    for key, entry in spec.items():
        assert header[key]["shape"] == entry["shape"], key
        assert header[key]["dtype"] == entry["dtype"], key


def test_pytorch_written_tensors_of_every_dtype_load_bit_for_bit() -> None:
    expected = _interop()["dtypes"]
    back = engine.load(FIXTURES / "interop.dtypes.safetensors")
    assert set(back) == set(expected)
    for name, values in expected.items():
        t = back[name]
        assert t.dtype.name == name
        got = t.float().tolist() if t.dtype is engine.bfloat16 else t.tolist()
        assert got == values, name
