"""Proves that checkpoints move between the engine and PyTorch, and writes the fixtures
that let CI (without torch) keep checking it. Run by hand, never in CI:

    PYTHONPATH=/work/main /work/torchenv/bin/python tests/make_interop_fixtures.py

(any environment with torch 2.13.0, safetensors and the engine's dependencies will do).
For every model below whose layers engine.nn has, built alike from `torch.nn` and
`engine.nn`, it checks both directions and fails loudly if either breaks:

1. the engine model saved with `engine.checkpoint.save_checkpoint` loads into the
   PyTorch model through `safetensors.torch.load_file` + `load_state_dict(strict=True)`,
   and both give the same output on a fixed input;
2. the PyTorch model's state dict saved with `safetensors.torch.save_file` loads into
   the engine model with `engine.load`, and again the outputs agree.

It writes the PyTorch-saved weights to tests/fixtures/interop.<model>.safetensors, a
tensor of every engine dtype saved by PyTorch to interop.dtypes.safetensors, and to
interop.json each model's PyTorch state-dict keys, shapes and dtypes and its output, with
the provenance that `fixture_meta.check_meta` checks. tests/test_checkpoint.py imports
`ENGINE_MODELS` and `input_for` from here, so nothing at module level may import torch.
"""

from __future__ import annotations

import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fixture_meta import FIXTURES, write_meta  # noqa: E402

import engine  # noqa: E402
import engine.nn  # noqa: E402

SOURCES = ("make_interop_fixtures.py",)
# torch's state-dict dtypes as safetensors writes them
SAFETENSORS_CODES = {
    "float32": "F32",
    "float64": "F64",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "bool": "BOOL",
}


def mlp(nn: ModuleType) -> Any:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.LayerNorm(16), nn.Linear(16, 4))


def bn_mlp(nn: ModuleType) -> Any:
    # running statistics and the int64 num_batches_tracked are buffers in the state dict
    return nn.Sequential(
        nn.Linear(8, 16), nn.BatchNorm1d(16), nn.GELU(), nn.Linear(16, 4, bias=False)
    )


def cnn(nn: ModuleType) -> Any:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 5),
    )


def embedding(nn: ModuleType) -> Any:
    return nn.Sequential(nn.Embedding(20, 8, padding_idx=0), nn.LayerNorm(8), nn.Linear(8, 3))


def attention(nn: ModuleType) -> Any:
    class SelfAttention(nn.Module):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 4, batch_first=True)

        def forward(self, x: Any) -> Any:
            return self.attn(x, x, x, need_weights=False)[0]

    return SelfAttention()


def transformer(nn: ModuleType) -> Any:
    return nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)


# name: (builder, the engine.nn layers it needs, input shape, integer inputs below this)
MODELS: dict[str, tuple[Callable[[ModuleType], Any], tuple[str, ...], tuple[int, ...], int]] = {
    "mlp": (mlp, ("Linear", "ReLU", "LayerNorm"), (5, 8), 0),
    "bn_mlp": (bn_mlp, ("Linear", "BatchNorm1d", "GELU"), (6, 8), 0),
    "cnn": (
        cnn,
        ("Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Flatten", "Linear"),
        (2, 3, 8, 8),
        0,
    ),
    "embedding": (embedding, ("Embedding", "LayerNorm", "Linear"), (3, 7), 20),
    "attention": (attention, ("MultiheadAttention",), (2, 5, 16), 0),
    "transformer": (transformer, ("TransformerEncoderLayer",), (2, 5, 16), 0),
}


def available(name: str) -> bool:
    return all(hasattr(engine.nn, layer) for layer in MODELS[name][1])


ENGINE_MODELS: dict[str, Callable[[], Any]] = {
    name: (lambda build=spec[0]: build(engine.nn)) for name, spec in MODELS.items()
}


def input_for(name: str, lib: ModuleType) -> Any:
    """The fixed input of model `name` as a tensor of `lib` (torch or engine)."""
    _, _, shape, vocab = MODELS[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    if vocab:
        return lib.tensor(rng.integers(0, vocab, shape, dtype=np.int64))
    return lib.tensor(rng.standard_normal(shape).astype(np.float32))


def _warm_up(model: Any, name: str, lib: ModuleType) -> None:
    """Two training-mode passes, so running statistics differ from their initial values."""
    model.train()
    with lib.no_grad():
        for _ in range(2):
            model(input_for(name, lib))
    model.eval()


def _agree(a: np.ndarray, b: np.ndarray, what: str) -> None:
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=what)


def engine_to_torch(torch: ModuleType, name: str, tmp: Path) -> None:
    from safetensors.torch import load_file

    from engine.checkpoint import Checkpoint, save_checkpoint

    engine.manual_seed(1)
    model = ENGINE_MODELS[name]()
    _warm_up(model, name, engine)
    path = tmp / f"{name}.engine.safetensors"
    save_checkpoint(
        Checkpoint(
            model_state_dict=model.state_dict(),
            epoch=1,
            rng_state=engine.get_rng_state(),
            metadata={"model": name},
        ),
        path,
    )
    # the checkpoint's own tensors (here the RNG state) sit under "__" prefixes
    state = {k: v for k, v in load_file(str(path)).items() if not k.startswith("__")}
    theirs = MODELS[name][0](torch.nn)
    theirs.load_state_dict(state, strict=True)
    theirs.eval()
    with torch.no_grad():
        expected = theirs(input_for(name, torch)).numpy()
    with engine.no_grad():
        got = model(input_for(name, engine)).numpy()
    _agree(got, expected, f"{name}: engine checkpoint loaded into PyTorch")


def torch_to_engine(torch: ModuleType, name: str) -> dict[str, Any]:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    theirs = MODELS[name][0](torch.nn)
    _warm_up(theirs, name, torch)
    state = theirs.state_dict()
    path = FIXTURES / f"interop.{name}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with torch.no_grad():
        expected = theirs(input_for(name, torch)).numpy()
    model = ENGINE_MODELS[name]()
    model.load_state_dict(engine.load(path), strict=True)
    model.eval()
    with engine.no_grad():
        got = model(input_for(name, engine)).numpy()
    _agree(got, expected, f"{name}: PyTorch state dict loaded into the engine")
    return {
        "state_dict": {
            k: {
                "shape": list(v.shape),
                "dtype": SAFETENSORS_CODES[str(v.dtype).removeprefix("torch.")],
            }
            for k, v in state.items()
        },
        "output": expected.tolist(),
    }


def dtypes_both_ways(torch: ModuleType, tmp: Path) -> dict[str, Any]:
    """Every engine dtype written by PyTorch (kept as a fixture) and by the engine (read
    back by PyTorch here), bit for bit; bfloat16 is the one safetensors.numpy cannot do."""
    from safetensors.torch import load_file, save_file

    values = [1.5, -2.25, 3.0e-3, 65504.0, 0.0]
    theirs = {
        "float32": torch.tensor(values, dtype=torch.float32),
        "float16": torch.tensor(values, dtype=torch.float16),
        "bfloat16": torch.tensor(values, dtype=torch.bfloat16),
        "float64": torch.tensor(values, dtype=torch.float64),
        "int64": torch.tensor([2**62, -5, 0, 7, 1], dtype=torch.int64),
        "int32": torch.tensor([2**30, -5, 0, 7, 1], dtype=torch.int32),
        "bool": torch.tensor([True, False, True, True, False]),
    }
    save_file(theirs, str(FIXTURES / "interop.dtypes.safetensors"))

    def host(v: Any) -> np.ndarray:  # NumPy has no bfloat16 of torch's: go through bits
        if v.dtype == torch.bfloat16:
            return v.view(torch.int16).numpy().view(engine.bfloat16.np)
        return v.numpy()

    ours = {k: engine.from_numpy(host(v)) for k, v in theirs.items()}
    engine.save(ours, tmp / "dtypes.engine.safetensors")
    back = load_file(str(tmp / "dtypes.engine.safetensors"))
    for k, v in theirs.items():
        assert back[k].dtype == v.dtype, k
        assert torch.equal(back[k].view(torch.uint8), v.view(torch.uint8)), k
    return {k: (v.float().tolist() if k == "bfloat16" else v.tolist()) for k, v in theirs.items()}


def main() -> None:
    import torch

    torch.set_num_threads(1)
    models = {}
    skipped = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            if not available(name):
                skipped.append(name)
                continue
            engine_to_torch(torch, name, Path(tmp))
            models[name] = torch_to_engine(torch, name)
        dtypes = dtypes_both_ways(torch, Path(tmp))
    for stale in FIXTURES.glob("interop.*.safetensors"):
        if stale.name.split(".")[1] not in (*models, "dtypes"):
            stale.unlink()
    write_meta("interop", SOURCES, torch.__version__, models=models, dtypes=dtypes)
    print(f"interop fixtures: {', '.join(models)}; engine.nn lacks layers for: {skipped}")


if __name__ == "__main__":
    main()
