"""The quick start's main job: the example training run learns its task."""

from __future__ import annotations

import runpy
from pathlib import Path


def test_example_mlp_learns_the_spirals() -> None:
    example = runpy.run_path(str(Path(__file__).parents[1] / "examples" / "train_mlp.py"))
    assert example["main"]() > 0.95
