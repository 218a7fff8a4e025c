"""jobs.datasets: every format, the built-ins, the seeded split, standardisation on the
training part only, apply_preprocessing, and a clear DataError for every bad input."""

from __future__ import annotations

import gzip
import json
import pickle
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

import engine
from engine.utils.data import DataLoader, Subset
from jobs.datasets import apply_preprocessing, decode_tokens, load_data
from jobs.errors import DataError
from jobs.spec import DataSpec

DATA_DIR = Path(__file__).resolve().parent.parent / "jobs" / "data"


def spec(train: Any, **kw: Any) -> SimpleNamespace:
    """A data section with load_data's own defaults (None: no split, char, 128, on)."""
    fields = {
        "validation": None,
        "validation_split": None,
        "label_column": None,
        "tokenizer": None,
        "context": None,
        "standardize": None,
    }
    fields.update(kw)
    return SimpleNamespace(train=str(train), **{k: _str(v) for k, v in fields.items()})


def _str(v: Any) -> Any:
    return str(v) if isinstance(v, Path) else v


def arrays(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return np.stack([t.numpy() for t in x]), np.stack([t.numpy() for t in y])


def fails(match: str, data: Any, **kw: Any) -> DataError:
    with pytest.raises(DataError, match=match) as info:
        load_data(data, seed=0, **kw)
    assert str(info.value).count(info.value.source) == 1  # named once, not wrapped twice
    return info.value


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def blobs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(3.0, 2.0, (40, 5)).astype(np.float32), rng.integers(0, 4, 40)


# --- formats ---------------------------------------------------------------------------


def test_npz_round_trip(tmp_path: Path, blobs: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = blobs
    np.savez(tmp_path / "d.npz", x=x, y=y)
    b = load_data(spec(tmp_path / "d.npz", standardize=False), seed=0)
    assert (b.task, b.input_shape, b.num_classes, b.vocab_size, b.context) == (
        "classification",
        (5,),
        4,
        None,
        None,
    )
    assert b.validation is None
    got_x, got_y = arrays(b.train)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    assert got_x.dtype == np.float32
    assert got_y.dtype == np.int64
    assert b.preprocessing["classes"] == [0, 1, 2, 3]
    assert b.preprocessing["standardize"] is None
    json.dumps(b.preprocessing)


def test_safetensors_round_trip(tmp_path: Path, blobs: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = blobs
    save_file({"x": x.reshape(40, 1, 5), "y": y.astype(np.int64)}, str(tmp_path / "d.safetensors"))
    b = load_data(spec(tmp_path / "d.safetensors", standardize=False), seed=0)
    assert b.input_shape == (1, 5)
    got_x, got_y = arrays(b.train)
    np.testing.assert_array_equal(got_x, x.reshape(40, 1, 5))
    np.testing.assert_array_equal(got_y, y)


def test_uint8_images_become_float(tmp_path: Path) -> None:
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    save_file({"x": x, "y": np.array([0, 1], dtype=np.int64)}, str(tmp_path / "d.safetensors"))
    got_x, _ = arrays(load_data(spec(tmp_path / "d.safetensors", standardize=False), seed=0).train)
    np.testing.assert_array_equal(got_x, x.astype(np.float32))


def test_csv_with_string_labels(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "a, species ,b\n1,cat,2\n3,dog,4\n\n5,ant,6\n7,cat,8\n")
    b = load_data(spec(path, label_column="species", standardize=False), seed=0)
    assert b.preprocessing["classes"] == ["ant", "cat", "dog"]
    assert b.num_classes == 3
    got_x, got_y = arrays(b.train)
    np.testing.assert_array_equal(got_x, [[1, 2], [3, 4], [5, 6], [7, 8]])
    np.testing.assert_array_equal(got_y, [1, 2, 0, 1])


def test_csv_regression(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "a,b,label\n1,2,0.5\n3,4,1.5\n5,6,-2\n")
    b = load_data(spec(path, standardize=False), seed=0)
    assert (b.task, b.num_classes, b.preprocessing["target_shape"]) == ("regression", None, [1])
    _, got_y = arrays(b.train)
    np.testing.assert_array_equal(got_y, [[0.5], [1.5], [-2.0]])
    assert got_y.dtype == np.float32


def test_task_hint(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "a,label\n1,0\n2,3\n3,1\n")
    b = load_data(spec(path), seed=0, task_hint="regression")
    assert b.task == "regression"
    np.savez(tmp_path / "f.npz", x=np.ones((3, 2)), y=np.array([0.0, 2.0, 1.0]))
    b = load_data(spec(tmp_path / "f.npz"), seed=0, task_hint="classification")
    assert (b.task, b.num_classes) == ("classification", 3)
    np.savez(tmp_path / "g.npz", x=np.ones((2, 2)), y=np.array([0.5, 1.0]))
    fails(
        r"g\.npz: sample 0: label 0\.5 is not a class id",
        spec(tmp_path / "g.npz"),
        task_hint="classification",
    )
    fails(r"language model trains on text", spec(path), task_hint="language_model")
    fails(r"text trains a language model", spec("builtin:pydocs"), task_hint="classification")


def test_txt_windows(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("abcabcabcab", encoding="utf-8")
    b = load_data(spec(tmp_path / "t.txt", context=3), seed=0)
    assert (b.task, b.input_shape, b.context, b.vocab_size) == ("language_model", (3,), 3, 3)
    assert b.preprocessing["vocab"] == ["a", "b", "c"]
    x, y = arrays(b.train)
    # 11 tokens: 3 non-overlapping windows of 3, each with its targets shifted by one
    np.testing.assert_array_equal(x, [[0, 1, 2]] * 3)
    np.testing.assert_array_equal(y, [[1, 2, 0]] * 3)
    assert x.dtype == y.dtype == np.int64


def test_jsonl_byte_tokenizer(tmp_path: Path) -> None:
    lines = [json.dumps({"text": "hé"}), "", json.dumps({"text": "yo", "id": 3})]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    b = load_data(spec(tmp_path / "t.jsonl", tokenizer="byte", context=2), seed=0)
    assert b.vocab_size == 256
    assert "vocab" not in b.preprocessing
    x, y = arrays(b.train)
    ids = list("hé\nyo".encode())  # documents joined by a newline
    # 6 tokens make 2 windows of 2: the last token is only a target
    np.testing.assert_array_equal(x.ravel(), ids[:4])
    np.testing.assert_array_equal(y.ravel(), ids[1:5])
    assert decode_tokens(b.preprocessing, engine.tensor(ids)) == "hé\nyo"


def test_text_validation_file_shares_the_vocabulary(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("aaaaaaa", encoding="utf-8")
    (tmp_path / "b.txt").write_text("abababa", encoding="utf-8")
    b = load_data(spec(tmp_path / "a.txt", validation=tmp_path / "b.txt", context=2), seed=0)
    assert b.preprocessing["vocab"] == ["a", "b"]
    assert len(b.train) == len(b.validation) == 3


def test_accepts_the_specs_data_section() -> None:
    b = load_data(DataSpec(train="builtin:digits"), seed=0)
    assert len(b.train) + len(b.validation) == 1797


def test_batches_through_a_dataloader() -> None:
    b = load_data(spec("builtin:digits", validation_split=0.2), seed=0)
    x, y = next(iter(DataLoader(b.train, batch_size=32, shuffle=True)))
    assert (tuple(x.shape), x.dtype, tuple(y.shape), y.dtype) == (
        (32, 64),
        engine.float32,
        (32,),
        engine.int64,
    )


# --- built-ins --------------------------------------------------------------------------


def test_digits() -> None:
    start = time.perf_counter()
    b = load_data(spec("builtin:digits", standardize=False), seed=0)
    assert time.perf_counter() - start < 0.2
    assert (b.task, b.input_shape, b.num_classes) == ("classification", (64,), 10)
    assert b.preprocessing["image_shape"] == [1, 8, 8]
    assert b.preprocessing["source"] == "builtin:digits"
    x, y = arrays(b.train)
    assert x.shape == (1797, 64)
    assert (x.min(), x.max()) == (0.0, 16.0)
    np.testing.assert_array_equal(np.bincount(y), np.bincount(y, minlength=10))
    assert np.bincount(y).min() > 170  # about 180 of each digit
    with gzip.open(DATA_DIR / "digits.csv.gz", "rt") as f:
        first = [int(v) for v in f.readline().split(",")]
    np.testing.assert_array_equal(x[0], first[:64])
    assert y[0] == first[64] == 0


def test_pydocs_corpus() -> None:
    text = (DATA_DIR / "pydocs.txt").read_text(encoding="utf-8")
    assert 200_000 <= len(text.encode()) <= 500_000
    b = load_data(spec("builtin:pydocs", context=64, validation_split=0.1), seed=0)
    assert (b.task, b.input_shape, b.vocab_size) == ("language_model", (64,), len(set(text)))
    assert len(b.train) + len(b.validation) == (len(text) - 1) // 64
    x, y = b.train[0]
    window = decode_tokens(b.preprocessing, x)
    assert window in text
    assert decode_tokens(b.preprocessing, y)[:-1] == window[1:]
    np.testing.assert_array_equal(apply_preprocessing(b.preprocessing, window).numpy(), x.numpy())


def test_pydocs_has_structure_beyond_unigrams() -> None:
    # a bigram model fitted on the training windows beats the unigram baseline on the
    # validation ones by a wide margin: a small char-level LM has something to learn
    b = load_data(spec("builtin:pydocs", context=64, validation_split=0.1), seed=0)
    v = b.vocab_size
    train_x, train_y = arrays(b.train)
    val_x, val_y = arrays(b.validation)
    unigram = np.bincount(train_y.ravel(), minlength=v) + 1.0
    unigram /= unigram.sum()
    bigram = np.ones((v, v))
    np.add.at(bigram, (train_x.ravel(), train_y.ravel()), 1.0)
    bigram /= bigram.sum(axis=1, keepdims=True)
    unigram_nats = -np.log(unigram[val_y.ravel()]).mean()
    bigram_nats = -np.log(bigram[val_x.ravel(), val_y.ravel()]).mean()
    assert unigram_nats > 3.0
    assert bigram_nats < unigram_nats - 0.5


# --- split and standardisation -----------------------------------------------------------


def test_split_is_seeded_disjoint_and_complete() -> None:
    def split(seed: int) -> tuple[list[int], list[int]]:
        b = load_data(spec("builtin:digits", validation_split=0.2), seed=seed)
        assert isinstance(b.train, Subset)
        assert isinstance(b.validation, Subset)
        return list(b.train.indices), list(b.validation.indices)

    train, val = split(0)
    assert (len(train), len(val)) == (1438, 359)  # PyTorch's floor for the fractions
    assert not set(train) & set(val)
    assert sorted(train + val) == list(range(1797))
    assert split(0) == (train, val)
    assert split(1) != (train, val)


def test_standardisation_uses_the_training_part_only() -> None:
    b = load_data(spec("builtin:digits", validation_split=0.25), seed=3)
    raw, _ = arrays(load_data(spec("builtin:digits", standardize=False), seed=0).train)
    raw = raw.astype(np.float64)
    fit = raw[b.train.indices]
    std = fit.std(axis=0)
    np.testing.assert_array_equal(b.preprocessing["standardize"]["mean"], fit.mean(axis=0))
    np.testing.assert_array_equal(b.preprocessing["standardize"]["std"], np.where(std > 0, std, 1))
    assert fit.mean(axis=0).tolist() != raw.mean(axis=0).tolist()
    train_x, _ = arrays(b.train)
    np.testing.assert_allclose(train_x.mean(axis=0), 0, atol=1e-5)
    varying = std > 0
    np.testing.assert_allclose(train_x.std(axis=0)[varying], 1, atol=1e-5)
    val_x, _ = arrays(b.validation)
    assert np.abs(val_x.mean(axis=0)).max() > 1e-3  # not fitted to the validation part


def test_standardisation_with_a_validation_file(
    tmp_path: Path, blobs: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = blobs
    np.savez(tmp_path / "t.npz", x=x[:30], y=y[:30])
    np.savez(tmp_path / "v.npz", x=x[30:], y=y[30:])
    b = load_data(
        spec(tmp_path / "t.npz", validation=tmp_path / "v.npz", validation_split=0.5), seed=0
    )
    assert (len(b.train), len(b.validation)) == (30, 10)  # the file, not the split
    mean = x[:30].astype(np.float64).mean(axis=0)
    np.testing.assert_array_equal(b.preprocessing["standardize"]["mean"], mean)


def test_apply_preprocessing_repeats_the_training_transform(
    tmp_path: Path, blobs: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = blobs
    np.savez(tmp_path / "d.npz", x=x, y=y)
    b = load_data(spec(tmp_path / "d.npz", validation_split=0.3), seed=0)
    preprocessing = json.loads(json.dumps(b.preprocessing))  # as a saved model carries it
    val_x, _ = arrays(b.validation)
    raw = x[b.validation.indices]
    np.testing.assert_array_equal(apply_preprocessing(preprocessing, raw).numpy(), val_x)
    one = apply_preprocessing(preprocessing, raw[0].tolist())
    assert one.dtype == engine.float32
    np.testing.assert_array_equal(one.numpy(), val_x[0])
    with pytest.raises(DataError, match=r"input: shape \(4,\): expected \(5,\)"):
        apply_preprocessing(preprocessing, [1, 2, 3, 4])
    with pytest.raises(DataError, match="input: features hold 1 NaN"):
        apply_preprocessing(preprocessing, [1, 2, float("nan"), 4, 5])


def test_apply_preprocessing_text(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("hello world", encoding="utf-8")
    b = load_data(spec(tmp_path / "t.txt", context=4), seed=0)
    ids = apply_preprocessing(b.preprocessing, "hold")
    assert ids.dtype == engine.int64
    assert decode_tokens(b.preprocessing, ids) == "hold"
    with pytest.raises(DataError, match=r"input: character 'z' at offset 2 is not in the"):
        apply_preprocessing(b.preprocessing, "hoz")


# --- errors -----------------------------------------------------------------------------


def test_missing_file_and_unknown_extension(tmp_path: Path) -> None:
    e = fails("no such file", spec(tmp_path / "gone.npz"))
    assert (e.source, e.reason) == (str(tmp_path / "gone.npz"), "no such file")
    (tmp_path / "d.parquet").write_bytes(b"")
    fails(r"d\.parquet: unknown file type '\.parquet'; known: \.npz", spec(tmp_path / "d.parquet"))
    fails(r"builtin:mnist: unknown built-in data set", spec("builtin:mnist"))
    e = fails("validation.npz: no such file", spec("builtin:digits", validation="validation.npz"))
    assert e.source == "validation.npz"


def test_malformed_npz(tmp_path: Path, blobs: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = blobs
    np.savez(tmp_path / "d.npz", x=x, y=y)
    blob = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(blob[: len(blob) // 2])
    fails(r"cut\.npz: malformed \.npz file", spec(tmp_path / "cut.npz"))
    np.savez(tmp_path / "noy.npz", x=x, labels=y)
    fails(r"noy\.npz: no array y; the archive has \['x', 'labels'\]", spec(tmp_path / "noy.npz"))
    np.save(tmp_path / "one.npy", x)
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    fails(r"one\.npz: not an \.npz archive", spec(tmp_path / "one.npz"))


def test_malformed_safetensors(tmp_path: Path) -> None:
    (tmp_path / "d.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    fails(r"d\.safetensors: malformed \.safetensors file", spec(tmp_path / "d.safetensors"))


def test_object_arrays_are_refused_without_running_code(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (Path.touch, (str(tmp_path / "pwned"),))

    x = np.empty((2, 1), dtype=object)
    x[0, 0], x[1, 0] = Boom(), Boom()
    np.savez(tmp_path / "evil.npz", x=x, y=np.array([0, 1]))
    fails(r"evil\.npz: holds pickled objects .* refused", spec(tmp_path / "evil.npz"))
    assert not (tmp_path / "pwned").exists()


def test_bad_csv(tmp_path: Path) -> None:
    ragged = write_csv(tmp_path / "ragged.csv", "a,b,label\n1,2,0\n3,4\n")
    fails(r"ragged\.csv: line 3: 2 fields, the header has 3", spec(ragged))
    words = write_csv(tmp_path / "words.csv", "a,b,label\n1,2,0\n\n3,x7,1\n")
    fails(r"words\.csv: line 4: column 'b': 'x7' is not a number", spec(words))
    empty_cell = write_csv(tmp_path / "gap.csv", "a,b,label\n1,,0\n")
    fails(r"gap\.csv: line 2: column 'b': '' is not a number", spec(empty_cell))
    headless = write_csv(tmp_path / "headless.csv", "1,2,0\n3,4,1\n")
    fails(r"headless\.csv: line 1 is all numbers; a header row", spec(headless))
    nolabel = write_csv(tmp_path / "nolabel.csv", "a,b,y\n1,2,0\n")
    fails(
        r"nolabel\.csv: no label column 'label'; the columns are \['a', 'b', 'y'\]", spec(nolabel)
    )
    blank_label = write_csv(tmp_path / "blank.csv", "a,label\n1,0\n2, \n")
    fails(r"blank\.csv: line 3: the label column 'label' is empty", spec(blank_label))
    twice = write_csv(tmp_path / "twice.csv", "a,a,label\n1,2,0\n")
    fails(r"twice\.csv: line 1: column 'a' appears more than once", spec(twice))
    (tmp_path / "latin.csv").write_bytes(b"a,label\n1,caf\xe9\n")
    fails(r"latin\.csv: line 2: not UTF-8 text \(byte 13", spec(tmp_path / "latin.csv"))


def test_bad_text(tmp_path: Path) -> None:
    bad = [json.dumps({"text": "fine"}), '{"text": "cut', json.dumps({"text": "x"})]
    (tmp_path / "bad.jsonl").write_text("\n".join(bad), encoding="utf-8")
    fails(r"bad\.jsonl: line 2: invalid JSON \(", spec(tmp_path / "bad.jsonl"))
    (tmp_path / "notext.jsonl").write_text('{"text": "a"}\n{"body": "b"}\n', encoding="utf-8")
    fails(r'notext\.jsonl: line 2: expected an object \{"text"', spec(tmp_path / "notext.jsonl"))
    (tmp_path / "bin.txt").write_bytes(b"ok\xff\xfe")
    fails(r"bin\.txt: line 1: not UTF-8 text \(byte 2", spec(tmp_path / "bin.txt"))
    (tmp_path / "short.txt").write_text("abc", encoding="utf-8")
    fails(
        r"short\.txt: 3 tokens make no window: a context of 8 needs 9",
        spec(tmp_path / "short.txt", context=8),
    )
    fails(r"tokenizer 'word'", spec(tmp_path / "short.txt", tokenizer="word", context=2))
    np.savez(tmp_path / "a.npz", x=np.ones((2, 2)), y=np.array([0, 1]))
    fails(
        r"a\.npz: holds arrays but the training data is text",
        spec(tmp_path / "short.txt", validation=tmp_path / "a.npz", context=2),
    )
    fails(
        r"short\.txt: is text but the training data holds arrays",
        spec(tmp_path / "a.npz", validation=tmp_path / "short.txt"),
    )


def test_shapes_and_lengths(tmp_path: Path) -> None:
    np.savez(tmp_path / "long.npz", x=np.ones((5, 2)), y=np.zeros(4, dtype=np.int64))
    fails(r"long\.npz: x has 5 samples but y has 4", spec(tmp_path / "long.npz"))
    np.savez(tmp_path / "flat.npz", x=np.ones(5), y=np.zeros(5, dtype=np.int64))
    fails(r"flat\.npz: x has shape \(5,\); it needs a sample axis", spec(tmp_path / "flat.npz"))
    np.savez(tmp_path / "text.npz", x=np.array([["a", "b"]]), y=np.array([0]))
    fails(r"text\.npz: x holds <U1, not numbers", spec(tmp_path / "text.npz"))
    np.savez(tmp_path / "train.npz", x=np.ones((4, 3)), y=np.array([0, 1, 0, 1]))
    np.savez(tmp_path / "val.npz", x=np.ones((2, 4)), y=np.array([0, 1]))
    fails(
        r"val\.npz: samples of shape \(4,\); the training data's are \(3,\)",
        spec(tmp_path / "train.npz", validation=tmp_path / "val.npz"),
    )
    np.savez(tmp_path / "multi.npz", x=np.ones((2, 3)), y=np.zeros((2, 2), dtype=np.int64))
    fails(r"multi\.npz: labels have shape \(2, 2\)", spec(tmp_path / "multi.npz"))


def test_non_finite_features(tmp_path: Path) -> None:
    x = np.ones((4, 3))
    x[2, 1] = np.inf
    x[3, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.array([0, 1, 0, 1]))
    fails(
        r"nan\.npz: features hold 2 NaN or infinite values; the first, inf, at sample 2",
        spec(tmp_path / "nan.npz"),
    )
    path = write_csv(tmp_path / "nan.csv", "a,b,label\n1,2,0\n1,nan,1\n")
    fails(r"nan\.csv: .* at line 3, column 'b'", spec(path))
    np.savez(tmp_path / "y.npz", x=np.ones((2, 2)), y=np.array([0.5, np.nan]))
    fails(r"y\.npz: targets hold 1 NaN", spec(tmp_path / "y.npz"))


def test_labels_out_of_range(tmp_path: Path) -> None:
    np.savez(tmp_path / "neg.npz", x=np.ones((3, 2)), y=np.array([0, -1, 1]))
    fails(r"neg\.npz: sample 1: label -1 is negative", spec(tmp_path / "neg.npz"))
    np.savez(tmp_path / "t.npz", x=np.ones((3, 2)), y=np.array([0, 2, 1]))
    np.savez(tmp_path / "v.npz", x=np.ones((2, 2)), y=np.array([1, 3]))
    fails(
        r"v\.npz: sample 1: label 3 is out of range: the training data has classes 0\.\.2",
        spec(tmp_path / "t.npz", validation=tmp_path / "v.npz"),
    )
    train = write_csv(tmp_path / "t.csv", "a,label\n1,cat\n2,dog\n")
    val = write_csv(tmp_path / "v.csv", "a,label\n1,cat\n2,cow\n")
    fails(
        r"v\.csv: line 3: label 'cow' is not one of the training labels",
        spec(train, validation=val),
    )
    np.savez(tmp_path / "n.npz", x=np.ones((2, 1)), y=np.array([0, 1]))
    fails(
        r"n\.npz: labels are numbers but the training labels are strings",
        spec(train, validation=tmp_path / "n.npz"),
    )


def test_empty_data_and_empty_split(tmp_path: Path) -> None:
    np.savez(tmp_path / "none.npz", x=np.ones((0, 2)), y=np.zeros(0, dtype=np.int64))
    fails(r"none\.npz: no samples", spec(tmp_path / "none.npz"))
    header = write_csv(tmp_path / "header.csv", "a,label\n")
    fails(r"header\.csv: no samples", spec(header))
    write_csv(tmp_path / "blank.csv", "")
    fails(r"blank\.csv: empty file; a header row", spec(tmp_path / "blank.csv"))
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    fails(r"empty\.txt: 0 tokens make no window", spec(tmp_path / "empty.txt"))
    np.savez(tmp_path / "four.npz", x=np.ones((4, 2)), y=np.array([0, 1, 0, 1]))
    fails(
        r"four\.npz: validation_split 0\.2 of 4 samples leaves the validation part empty",
        spec(tmp_path / "four.npz", validation_split=0.2),
    )
    fails(
        r"validation_split 1\.5 is not in \[0, 1\)",
        spec(tmp_path / "four.npz", validation_split=1.5),
    )


def test_data_errors_survive_pickling() -> None:
    e = pickle.loads(pickle.dumps(DataError("d.csv", "line 3: bad")))
    assert (e.source, e.reason, str(e)) == ("d.csv", "line 3: bad", "d.csv: line 3: bad")
