"""Provenance of the PyTorch reference fixtures: which torch made them, from which sources.

Each fixture script (tests/make_*_fixtures.py, run by hand with torch 2.13.0) writes
`tests/fixtures/<name>.json` through `write_meta`; `check_meta` in the tests fails when
the script or the case files it hashed changed after the fixtures were made.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"


def sources_hash(sources: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for name in sources:
        h.update((HERE / name).read_bytes())
    return h.hexdigest()


def write_meta(name: str, sources: tuple[str, ...], torch_version: str, **extra: Any) -> None:
    meta = {
        "torch_version": torch_version,
        "sources": list(sources),
        "sources_sha256": sources_hash(sources),
        **extra,
    }
    (FIXTURES / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")


def check_meta(name: str) -> dict[str, Any]:
    """The fixture set's metadata, asserting it is current with the sources that made it."""
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    sources = tuple(meta["sources"])
    assert meta["sources_sha256"] == sources_hash(sources), (
        f"{', '.join(sources)} changed after tests/fixtures/{name}.* were made: rerun the "
        f"fixture script with torch 2.13.0 (see its docstring)"
    )
    assert meta["torch_version"].startswith("2.13.0"), meta["torch_version"]
    return meta
