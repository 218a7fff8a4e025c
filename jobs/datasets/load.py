"""`load_data`: a job's data spec to training and validation datasets plus the preprocessing
that every predict path repeats through `apply_preprocessing`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from engine import Generator, from_numpy
from engine.tensor import Tensor
from engine.utils.data import Dataset, Subset, TensorDataset, random_split
from jobs.datasets import readers, text
from jobs.errors import DataError

Task = Literal["classification", "regression", "language_model"]
TASKS: tuple[Task, ...] = ("classification", "regression", "language_model")
DEFAULT_CONTEXT = 128
DEFAULT_LABEL_COLUMN = "label"
# the source name of inputs given to apply_preprocessing, for its errors
INPUT = "input"


class DataSpecLike(Protocol):
    """What load_data reads from a job's `data` section (jobs.spec.DataSpec has it)."""

    train: str
    validation: str | None
    validation_split: float | None
    label_column: str | None
    tokenizer: str | None
    context: int | None
    standardize: bool | None


@dataclass
class DataBundle:
    """The datasets a job trains and evaluates on, and what it takes to feed a model.

    `train`/`validation` yield (input, target) pairs: float32 features of `input_shape` and
    an int64 class id (classification) or a float32 target (regression), or int64 token
    windows of (context,) for both (language_model). `preprocessing` is JSON and is what
    `apply_preprocessing` needs.
    """

    train: Dataset[Any]
    validation: Dataset[Any] | None
    task: Task
    input_shape: tuple[int, ...]
    num_classes: int | None
    vocab_size: int | None
    context: int | None
    preprocessing: dict[str, Any]

    def model_sizes(self) -> dict[str, Any]:
        """What a model built for this data needs to know of it: the keyword arguments
        of jobs.models.build_model and check_model."""
        return {
            "input_shape": self.input_shape,
            "num_classes": self.num_classes,
            "vocab_size": self.vocab_size,
            "context": self.context,
        }


def load_data(data: DataSpecLike, *, seed: int, task_hint: str | None = None) -> DataBundle:
    """Read `data.train` (a file or `builtin:NAME`) and the validation part: `data.validation`
    when given (then `validation_split` is not applied), else a seeded `validation_split`
    of the training data.

    `task_hint` ("classification", "regression", "language_model" or None to infer from
    the data) decides what array labels are: integer labels are classes unless the hint is
    regression, float labels are regression targets unless it is classification (then they
    must be whole numbers). Text data is always a language model's.
    """
    if task_hint is not None and task_hint not in TASKS:
        raise ValueError(f"task_hint must be one of {TASKS} or None, got {task_hint!r}")
    split = data.validation_split or 0.0
    if not 0.0 <= split < 1.0:
        raise DataError(data.train, f"validation_split {split} is not in [0, 1)")
    label_column = data.label_column or DEFAULT_LABEL_COLUMN
    train_raw = readers.read(data.train, label_column=label_column)
    val_raw = readers.read(data.validation, label_column=label_column) if data.validation else None
    if isinstance(train_raw, str):
        if task_hint not in {None, "language_model"}:
            raise DataError(data.train, f"text trains a language model, not {task_hint}")
        if val_raw is not None and not isinstance(val_raw, str):
            raise DataError(str(data.validation), "holds arrays but the training data is text")
        return _language_model(data, train_raw, val_raw, split, seed)
    if task_hint == "language_model":
        raise DataError(
            data.train, "a language model trains on text (.txt, .jsonl, builtin:pydocs)"
        )
    if val_raw is not None and not isinstance(val_raw, readers.Table):
        raise DataError(str(data.validation), "is text but the training data holds arrays")
    return _supervised(data, train_raw, val_raw, split, seed, task_hint)


def apply_preprocessing(preprocessing: dict[str, Any], raw: Any) -> Tensor:
    """What training applied to its inputs, applied to new ones: text (a str) becomes int64
    token ids of shape (L,); features (anything np.asarray takes, one sample of
    `input_shape` or a batch of them) become float32, standardised as in training."""
    if preprocessing["task"] == "language_model":
        if not isinstance(raw, str):
            raise DataError(INPUT, f"a language model takes text, got {type(raw).__name__}")
        ids = text.encode(INPUT, raw, preprocessing["tokenizer"], preprocessing.get("vocab"))
        return from_numpy(ids)
    shape = tuple(preprocessing["input_shape"])
    try:
        x = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(INPUT, f"not an array of numbers ({e})") from None
    if x.shape[x.ndim - len(shape) :] != shape or x.ndim not in {len(shape), len(shape) + 1}:
        raise DataError(INPUT, f"shape {x.shape}: expected {shape} or (N, *{shape})")
    _check_finite(INPUT, x, None)
    return from_numpy(_transform(x, preprocessing.get("standardize")))


def decode_tokens(preprocessing: dict[str, Any], ids: Any) -> str:
    """Text of a language model's token ids (a Tensor, array or list), for predict output."""
    if isinstance(ids, Tensor):
        ids = ids.numpy()
    return text.decode(ids, preprocessing["tokenizer"], preprocessing.get("vocab"))


def _transform(x: np.ndarray, standardize: dict[str, Any] | None) -> np.ndarray:
    # in float64, then float32: training and apply_preprocessing give the same bits
    if standardize is not None:
        x = (x - np.asarray(standardize["mean"])) / np.asarray(standardize["std"])
    return np.ascontiguousarray(x, dtype=np.float32)


def _split_indices(
    source: str, n: int, split: float, seed: int
) -> tuple[list[int], list[int] | None]:
    """Training and validation sample indices; the validation ones None without a split."""
    if not split:
        return list(range(n)), None
    n_val = math.floor(n * split)  # PyTorch's rounding for random_split's fractions
    if n_val in {0, n}:
        part = "validation" if n_val == 0 else "training"
        raise DataError(
            source, f"validation_split {split} of {n} samples leaves the {part} part empty"
        )
    generator = Generator().manual_seed(seed)
    # random_split only needs the length; splitting a range gives the indices themselves
    train, val = random_split(range(n), [n - n_val, n_val], generator=generator)
    return list(train.indices), list(val.indices)


def _language_model(
    data: DataSpecLike, train_text: str, val_text: str | None, split: float, seed: int
) -> DataBundle:
    tokenizer = data.tokenizer or "char"
    if tokenizer not in text.TOKENIZERS:
        raise DataError(data.train, f"unknown tokenizer {tokenizer!r}; known: {text.TOKENIZERS}")
    context = data.context or DEFAULT_CONTEXT
    if context < 1:
        raise DataError(data.train, f"context {context} is not a positive number of tokens")
    vocab: list[str] | None = None
    if tokenizer == "char":
        # from every text the job reads, so each validation character has an id
        vocab = text.build_vocab([train_text] if val_text is None else [train_text, val_text])
    inputs, targets = text.windows(
        data.train, text.encode(data.train, train_text, tokenizer, vocab), context
    )
    full = TensorDataset(from_numpy(inputs), from_numpy(targets))
    validation: Dataset[Any] | None = None
    if val_text is not None:
        val_in, val_tg = text.windows(
            data.validation, text.encode(data.validation, val_text, tokenizer, vocab), context
        )
        train: Dataset[Any] = full
        validation = TensorDataset(from_numpy(val_in), from_numpy(val_tg))
    else:
        train_idx, val_idx = _split_indices(data.train, len(inputs), split, seed)
        train = Subset(full, train_idx) if val_idx is not None else full
        validation = Subset(full, val_idx) if val_idx is not None else None
    preprocessing: dict[str, Any] = {
        "source": data.train,
        "task": "language_model",
        "tokenizer": tokenizer,
        "context": context,
        "input_shape": [context],
    }
    if vocab is not None:
        preprocessing["vocab"] = vocab
    return DataBundle(
        train=train,
        validation=validation,
        task="language_model",
        input_shape=(context,),
        num_classes=None,
        vocab_size=len(vocab) if vocab is not None else text.BYTE_VOCAB_SIZE,
        context=context,
        preprocessing=preprocessing,
    )


def _supervised(
    data: DataSpecLike,
    table: readers.Table,
    val_table: readers.Table | None,
    split: float,
    seed: int,
    task_hint: str | None,
) -> DataBundle:
    source = data.train
    if len(table.x) == 0:
        raise DataError(source, "no samples")
    x = table.x.astype(np.float64)
    _check_finite(source, x, table)
    task = _task(source, table.y, task_hint)
    preprocessing: dict[str, Any] = {
        "source": source,
        "task": task,
        "input_shape": list(x.shape[1:]),
    }
    if table.image_shape is not None:
        # the cnn architecture unflattens the features to this
        preprocessing["image_shape"] = list(table.image_shape)
    if task == "classification":
        y, classes = _class_ids(source, table, None)
        preprocessing["classes"] = classes
    else:
        y = _targets(source, table)
        preprocessing["target_shape"] = list(y.shape[1:])

    if val_table is not None:
        val_source = str(data.validation)
        if len(val_table.x) == 0:
            raise DataError(val_source, "no samples")
        if val_table.x.shape[1:] != x.shape[1:]:
            raise DataError(
                val_source,
                f"samples of shape {val_table.x.shape[1:]}; the training data's are {x.shape[1:]}",
            )
        val_x = val_table.x.astype(np.float64)
        _check_finite(val_source, val_x, val_table)
        if task == "classification":
            val_y, _ = _class_ids(val_source, val_table, preprocessing["classes"])
        else:
            val_y = _targets(val_source, val_table)
            if val_y.shape[1:] != y.shape[1:]:
                raise DataError(
                    val_source,
                    f"targets of shape {val_y.shape[1:]}; the training data's are {y.shape[1:]}",
                )
        train_idx, val_idx = list(range(len(x))), None
    else:
        train_idx, val_idx = _split_indices(source, len(x), split, seed)

    standardize = None
    if data.standardize is not False:  # None: the default, on
        # statistics of the training part only: the validation part stays unseen
        fit = x[train_idx]
        std = fit.std(axis=0)
        # a constant feature (digits' border pixels) is centred and left unscaled
        standardize = {
            "mean": fit.mean(axis=0).tolist(),
            "std": np.where(std > 0, std, 1.0).tolist(),
        }
    preprocessing["standardize"] = standardize

    full = TensorDataset(from_numpy(_transform(x, standardize)), from_numpy(y))
    validation: Dataset[Any] | None = None
    if val_table is not None:
        train: Dataset[Any] = full
        validation = TensorDataset(from_numpy(_transform(val_x, standardize)), from_numpy(val_y))
    elif val_idx is not None:
        train, validation = Subset(full, train_idx), Subset(full, val_idx)
    else:
        train = full
    return DataBundle(
        train=train,
        validation=validation,
        task=task,
        input_shape=tuple(x.shape[1:]),
        num_classes=len(preprocessing["classes"]) if task == "classification" else None,
        vocab_size=None,
        context=None,
        preprocessing=preprocessing,
    )


def _task(source: str, y: np.ndarray, task_hint: str | None) -> Task:
    if task_hint == "regression":
        return "regression"
    if task_hint == "classification" or y.dtype.kind in "biuU":
        return "classification"
    return "regression"


def _class_ids(
    source: str, table: readers.Table, classes: list[Any] | None
) -> tuple[np.ndarray, list[Any]]:
    """int64 class ids of the labels and the class labels in id order.

    String labels map to their index in `classes` (sorted, when this is the training
    data); integer labels are the ids themselves, 0..K-1, K = the largest + 1.
    """
    y = table.y
    if y.ndim != 1:
        raise DataError(source, f"labels have shape {y.shape}; classification needs one per sample")
    if y.dtype.kind == "U":
        if classes is None:
            classes = sorted(set(y.tolist()))
        elif not all(isinstance(c, str) for c in classes):
            raise DataError(source, "labels are strings but the training labels are numbers")
        lookup = {c: i for i, c in enumerate(classes)}
        for i, label in enumerate(y.tolist()):
            if label not in lookup:
                raise DataError(
                    source, f"{table.where(i)}: label {label!r} is not one of the training labels"
                )
        return np.array([lookup[label] for label in y.tolist()], dtype=np.int64), classes
    if y.dtype.kind == "f":
        whole = np.isfinite(y) & (y == np.round(y))
        if not whole.all():
            i = int(np.argmin(whole))
            raise DataError(source, f"{table.where(i)}: label {y[i]} is not a class id (0, 1, ...)")
    if classes is not None and not all(isinstance(c, int) for c in classes):
        raise DataError(source, "labels are numbers but the training labels are strings")
    ids = y.astype(np.int64)
    if (ids < 0).any():
        i = int(np.argmax(ids < 0))
        raise DataError(
            source, f"{table.where(i)}: label {ids[i]} is negative; class ids are 0..K-1"
        )
    if classes is None:
        classes = list(range(int(ids.max()) + 1))
    elif (ids >= len(classes)).any():
        i = int(np.argmax(ids >= len(classes)))
        raise DataError(
            source,
            f"{table.where(i)}: label {ids[i]} is out of range: "
            f"the training data has classes 0..{len(classes) - 1}",
        )
    return ids, classes


def _targets(source: str, table: readers.Table) -> np.ndarray:
    """float32 regression targets, one row per sample: (N,) becomes (N, 1) to match a
    model's (N, 1) output under MSELoss."""
    if table.y.dtype.kind == "U":
        raise DataError(source, "labels are strings; a regression needs numeric targets")
    y = table.y.astype(np.float64)
    _check_finite(source, y, table, "targets")
    y = y.reshape(len(y), -1) if y.ndim == 1 else y
    return np.ascontiguousarray(y, dtype=np.float32)


def _check_finite(
    source: str, a: np.ndarray, table: readers.Table | None, what: str = "features"
) -> None:
    finite = np.isfinite(a)
    if finite.all():
        return
    bad = np.argwhere(~finite)[0]
    row = int(bad[0])
    where = table.where(row) if table is not None else f"sample {row}"
    if table is not None and table.columns is not None and what == "features":
        where += f", column {table.columns[int(bad[1])]!r}"
    value = a[tuple(bad)]
    count = int((~finite).sum())
    raise DataError(
        source, f"{what} hold {count} NaN or infinite values; the first, {value}, at {where}"
    )
