"""POST /jobs with specs mutated at random: every answer is a 201 or a 4xx with a JSON
detail, never a 500, and no request takes long (a spec cannot make the API allocate or
compute without bound before it answers).

Each case starts from one of the examples and changes a few places in it: a value
replaced by junk of another type or an extreme number, a key deleted or added, a layer
swapped for another with odd arguments. The random stream is seeded, so a failure names
the case to replay; the slow tier runs many more cases.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from jobs.settings import Settings
from server.app import create_app

API = "/api/v1"
TOKEN = "fuzz-" + "k" * 40
EXAMPLES = Path(__file__).parent.parent / "examples"
SEEDS = ("digits-mlp", "digits-cnn", "char-lm")
SLOW_REQUEST_SECONDS = 5.0  # a 2-core machine running other tests; far above a normal POST

JUNK: list[Any] = [
    None,
    True,
    0,
    -1,
    1,
    2**31,
    10**18,
    -(10**18),
    1e308,
    -1e-308,
    0.5,
    math.inf,
    math.nan,
    "",
    "x" * 5000,
    "\x00",
    "dataset:../../etc/passwd",
    "builtin:nothing",
    [],
    [1, 2, 3],
    [[[[]]]],
    {},
    {"type": "Linear"},
    {"a": {"b": {"c": None}}},
]
LAYER_TYPES = [
    "Linear",
    "Conv2d",
    "Conv1d",
    "Embedding",
    "LayerNorm",
    "BatchNorm1d",
    "BatchNorm2d",
    "MultiheadAttention",
    "TransformerEncoderLayer",
    "Dropout",
    "ReLU",
    "GELU",
    "Flatten",
    "MaxPool2d",
    "AvgPool2d",
    "Sequential",
    "Module",
    "Parameter",
    "__class__",
    "os.system",
]
ARG_NAMES = [
    "in_features",
    "out_features",
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "num_embeddings",
    "embedding_dim",
    "normalized_shape",
    "num_features",
    "embed_dim",
    "num_heads",
    "d_model",
    "nhead",
    "dim_feedforward",
    "p",
    "bias",
    "device",
    "dtype",
]
# 1000 and 5000: as a Conv2d's padding, activations the API once ran a sample through
NUMBERS = [0, 1, 3, 64, 1000, 5000, 10**5, 10**9, -3, 2.5]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


def _junk(rng: random.Random, extra: list[Any] | None = None) -> Any:
    # a copy: a later mutation may change it in place
    return copy.deepcopy(rng.choice(JUNK + (extra or [])))


def _random_layer(rng: random.Random) -> dict[str, Any]:
    layer: dict[str, Any] = {"type": rng.choice(LAYER_TYPES)}
    for name in rng.sample(ARG_NAMES, rng.randint(0, 4)):
        layer[name] = rng.choice(NUMBERS + JUNK[:6])  # numbers: nothing to share
    return layer


def mutate(doc: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(doc) if p]
        path = rng.choice(paths)
        parent = _parent(doc, path)
        action = rng.random()
        if action < 0.45:
            parent[path[-1]] = _junk(rng)
        elif action < 0.6:
            value = parent[path[-1]]
            if isinstance(value, int | float) and not isinstance(value, bool):
                parent[path[-1]] = rng.choice([value * 1000, -value, value + 1, 0])
            else:
                parent[path[-1]] = rng.choice(NUMBERS)
        elif action < 0.75 and isinstance(parent, dict):
            del parent[path[-1]]
        elif action < 0.85 and isinstance(parent, dict):
            parent[rng.choice([*ARG_NAMES, "extra", "__proto__"])] = _junk(rng, NUMBERS)
        else:
            model = doc.get("model")
            layers = model.get("layers") if isinstance(model, dict) else None
            if isinstance(layers, list):
                layers.insert(rng.randint(0, len(layers)), _random_layer(rng))
            else:
                parent[path[-1]] = rng.choice(NUMBERS)
    return doc


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("fuzz"),
        database_url="",
        api_key=TOKEN,
        max_concurrent_jobs_per_key=100_000,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def _examples() -> list[dict[str, Any]]:
    docs = []
    for name in SEEDS:
        doc = json.loads((EXAMPLES / f"{name}.json").read_text())
        doc["training"].pop("epochs", None)
        doc["training"]["max_steps"] = 5
        doc["scheduler"]["warmup_steps"] = 2  # within the 5 steps: the rest mutates it
        docs.append(doc)
    return docs


def _run(client: TestClient, cases: int, seed: int) -> dict[int, int]:
    rng = random.Random(seed)
    examples = _examples()
    statuses: dict[int, int] = {}
    for case in range(cases):
        spec = mutate(rng.choice(examples), rng)
        body = json.dumps(spec, allow_nan=True)  # NaN and Infinity as Python's json reads
        start = time.perf_counter()
        response = client.post(
            f"{API}/jobs",
            content=body,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        took = time.perf_counter() - start
        where = f"seed {seed} case {case}: {body[:2000]}"
        assert response.status_code < 500, f"{where}\n-> {response.text}"
        assert response.status_code in (201, 413, 422), f"{where}\n-> {response.text}"
        if response.status_code != 201:
            detail = response.json()["detail"]
            assert detail, where
        assert took < SLOW_REQUEST_SECONDS, f"{where}\n-> took {took:.1f} s"
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    return statuses


def test_mutated_specs_get_a_201_or_a_clear_422(client: TestClient) -> None:
    statuses = _run(client, cases=120, seed=1)
    # the mutations reach both sides: not everything refused, not everything accepted
    assert statuses.get(201, 0) > 0 and statuses.get(422, 0) > 0, statuses


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 8))
def test_many_more_mutated_specs(client: TestClient, seed: int) -> None:
    _run(client, cases=400, seed=seed)
