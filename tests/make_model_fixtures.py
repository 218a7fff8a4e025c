"""Checks the PyTorch twins in examples/torch_models.py against the engine's job models
(jobs/models.py), and writes the fixtures that let CI (without torch) keep checking
them. Run by hand, never in CI:

    PYTHONPATH=/work/main /work/torchenv/bin/python tests/make_model_fixtures.py

For every case below it builds the engine model (seeded) and its twin, loads the
engine's weights into the twin with `load_state_dict(strict=True)` (so the keys and
shapes agree exactly) and fails loudly unless both give the same output, in eval mode,
on a fixed input. It writes those weights, as PyTorch saves them, to
tests/fixtures/models.<case>.safetensors, and to models.json each case's PyTorch
state-dict keys, shapes and dtypes, its parameter count, input and output, with the
provenance that `fixture_meta.check_meta` checks. tests/test_models.py imports `CASES`
and `sample_input` from here, so nothing at module level may import torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fixture_meta import FIXTURES, write_meta  # noqa: E402

SOURCES = ("make_model_fixtures.py", "../examples/torch_models.py")
DIGITS_MLP = {
    "layers": [
        {"type": "Linear", "in_features": 64, "out_features": 128},
        {"type": "ReLU"},
        {"type": "Dropout", "p": 0.1},
        {"type": "Linear", "in_features": 128, "out_features": 10},
    ]
}
# name: (model spec, input shape of one sample, num_classes, vocab_size, context)
CASES: dict[str, tuple[dict[str, Any], tuple[int, ...], int | None, int | None, int | None]] = {
    "layers_digits_mlp": (DIGITS_MLP, (64,), 10, None, None),
    "layers_nested": (
        {
            "layers": [
                {"type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": [3, 3]},
                {"type": "BatchNorm2d", "num_features": 4},
                {"type": "Flatten"},
                {
                    "type": "Sequential",
                    "layers": [
                        {"type": "Linear", "in_features": 144, "out_features": 16},
                        {"type": "GELU"},
                        {"type": "LayerNorm", "normalized_shape": [16]},
                    ],
                },
                {"type": "Linear", "in_features": 16, "out_features": 10},
            ]
        },
        (1, 8, 8),
        10,
        None,
        None,
    ),
    "mlp": ({"architecture": "mlp"}, (64,), 10, None, None),
    "mlp_gelu": (
        {"architecture": "mlp", "args": {"hidden": [32, 16, 8], "activation": "gelu"}},
        (1, 8, 8),
        10,
        None,
        None,
    ),
    "cnn": ({"architecture": "cnn"}, (1, 8, 8), 10, None, None),
    "resnet": (
        {"architecture": "resnet", "args": {"channels": [8, 16], "blocks_per_stage": 2}},
        (1, 8, 8),
        10,
        None,
        None,
    ),
    "transformer_lm": (
        {"architecture": "transformer_lm", "args": {"d_model": 32, "n_heads": 4}},
        (12,),
        None,
        30,
        12,
    ),
}


def sample_input(name: str) -> np.ndarray:
    """Two samples for case `name`: token ids for language models, else normal floats."""
    _, shape, _, vocab, _ = CASES[name]
    rng = np.random.default_rng(0)
    if vocab is not None:
        return rng.integers(0, vocab, (2, *shape)).astype(np.int64)
    return rng.standard_normal((2, *shape)).astype(np.float32)


def main() -> None:
    import torch
    from safetensors.torch import save_file

    import engine
    from examples.torch_models import build_torch_model
    from jobs.models import build_model, count_parameters
    from jobs.spec import ModelSpec

    cases: dict[str, Any] = {}
    for name, (spec, shape, num_classes, vocab, context) in CASES.items():
        engine.manual_seed(0)
        ours = build_model(
            ModelSpec.model_validate(spec),
            input_shape=shape,
            num_classes=num_classes,
            vocab_size=vocab,
            context=context,
        )
        twin = build_torch_model(spec, shape, num_classes, vocab, context)
        weights = {k: torch.from_numpy(v.numpy()) for k, v in ours.state_dict().items()}
        twin.load_state_dict(weights, strict=True)
        ours.eval()
        twin.eval()
        x = sample_input(name)
        with engine.no_grad():
            want = ours(engine.tensor(x)).numpy()
        with torch.no_grad():
            got = twin(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)
        n_twin = sum(p.numel() for p in twin.parameters())
        assert n_twin == count_parameters(ours), (name, n_twin, count_parameters(ours))
        state = twin.state_dict()
        save_file(
            {k: v.contiguous() for k, v in state.items()}, FIXTURES / f"models.{name}.safetensors"
        )
        cases[name] = {
            "keys": {
                k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state.items()
            },
            "parameters": n_twin,
            "input": x.tolist(),
            "output": got.tolist(),
        }
        print(f"{name}: {n_twin} parameters, {len(state)} tensors, outputs agree")
    write_meta("models", SOURCES, torch.__version__, cases=cases)


if __name__ == "__main__":
    main()
