"""Shared test setup: the `gpu` marker skips where CuPy sees no GPU; a seeded engine."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if engine.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU visible to CuPy")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    engine.manual_seed(0)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
