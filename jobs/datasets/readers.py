"""Reading data sets from files and built-ins into plain NumPy arrays or text.

Nothing here runs code from a file: `.npz` archives load with `allow_pickle=False` (an
object array is refused), `.safetensors` files through `safetensors.numpy`, CSV through
the `csv` module, text as UTF-8. Every problem is a `DataError` naming the file and what
is wrong with it, with the line number where a line is to blame.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_safetensors

from jobs.errors import DataError

BUILTIN = "builtin:"
_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
ARRAY_SUFFIXES = (".npz", ".safetensors", ".csv")
TEXT_SUFFIXES = (".txt", ".jsonl")
# bool, signed and unsigned ints, floats: what a feature or label array may hold
_NUMERIC_KINDS = "biuf"
# digits: 8x8 images of pixel counts 0..16, flattened to 64 features per row
DIGITS_IMAGE_SHAPE = (1, 8, 8)


@dataclass
class Table:
    """Samples with labels, as read: `x` numbers of shape (N, ...), `y` of shape (N, ...)
    holding ints, floats or strings; for CSV, `lines[i]` is the file line of sample i and
    `columns` the feature columns' names."""

    x: np.ndarray
    y: np.ndarray
    lines: np.ndarray | None = None
    columns: list[str] | None = None
    image_shape: tuple[int, ...] | None = None

    def where(self, i: int) -> str:
        """Sample i as a person finds it in the file."""
        return f"line {self.lines[i]}" if self.lines is not None else f"sample {i}"


def read(source: str, *, label_column: str) -> Table | str:
    """The samples of an array source, or the text of a text source."""
    if source.startswith(BUILTIN):
        return _read_builtin(source)
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix not in ARRAY_SUFFIXES + TEXT_SUFFIXES:
        known = ", ".join(ARRAY_SUFFIXES + TEXT_SUFFIXES)
        raise DataError(source, f"unknown file type {suffix or '(no extension)'!r}; known: {known}")
    if not path.is_file():
        raise DataError(source, "no such file")
    if suffix == ".npz":
        return _check_arrays(source, *_read_npz(source, path))
    if suffix == ".safetensors":
        return _check_arrays(source, *_read_safetensors(source, path))
    if suffix == ".csv":
        return _read_csv(source, path, label_column)
    if suffix == ".jsonl":
        return _read_jsonl(source, path)
    return _read_utf8(source, path)


def _read_builtin(source: str) -> Table | str:
    name = source.removeprefix(BUILTIN)
    if name == "digits":
        raw = _digits()
        return Table(raw[:, :-1], raw[:, -1], image_shape=DIGITS_IMAGE_SHAPE)
    if name == "pydocs":
        return _pydocs()
    raise DataError(source, "unknown built-in data set; known: builtin:digits, builtin:pydocs")


# Parsed once a process: the API validates every POST /jobs against its data, and parsing
# the digits CSV (~3 ms) was half the cost of a create. Read-only, so no caller can change
# what the next one reads.
@functools.cache
def _digits() -> np.ndarray:
    # no header: 64 pixel columns then the digit
    raw = np.loadtxt(_DATA_DIR / "digits.csv.gz", delimiter=",", dtype=np.int64)
    raw.flags.writeable = False
    return raw


@functools.cache
def _pydocs() -> str:
    return (_DATA_DIR / "pydocs.txt").read_text(encoding="utf-8")


def _read_npz(source: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataError(source, "not an .npz archive (a single .npy array?)")
        with loaded as archive:
            missing = [k for k in ("x", "y") if k not in archive.files]
            if missing:
                raise DataError(
                    source, f"no array {' or '.join(missing)}; the archive has {archive.files}"
                )
            return archive["x"], archive["y"]
    except DataError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DataError(
                source, "holds pickled objects (an object array); refused, loading runs no code"
            ) from None
        raise DataError(source, f"malformed .npz file ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(source, f"malformed .npz file ({e})") from None


def _read_safetensors(source: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        arrays = load_safetensors(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(source, f"malformed .safetensors file ({e})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(source, f"no tensor {' or '.join(missing)}; the file has {sorted(arrays)}")
    return arrays["x"], arrays["y"]


def _check_arrays(source: str, x: np.ndarray, y: np.ndarray) -> Table:
    if x.dtype.kind not in _NUMERIC_KINDS:
        raise DataError(source, f"x holds {x.dtype}, not numbers")
    if y.dtype.kind not in _NUMERIC_KINDS + "U":
        raise DataError(source, f"y holds {y.dtype}, not numbers or strings")
    if x.ndim < 2:
        raise DataError(
            source, f"x has shape {x.shape}; it needs a sample axis and a feature axis, (N, ...)"
        )
    if y.ndim < 1:
        raise DataError(source, "y is a scalar; it needs one label per sample")
    if len(x) != len(y):
        raise DataError(source, f"x has {len(x)} samples but y has {len(y)}")
    return Table(x, y)


def _read_csv(source: str, path: Path, label_column: str) -> Table:
    reader = csv.reader(io.StringIO(_read_utf8(source, path), newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except csv.Error as e:
        raise DataError(source, f"line {reader.line_num + 1}: malformed CSV ({e})") from None
    if not header:
        raise DataError(source, "empty file; a header row naming the columns comes first")
    if all(_is_number(name) for name in header):
        raise DataError(
            source, "line 1 is all numbers; a header row naming the columns comes first"
        )
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise DataError(source, f"line 1: column {duplicated[0]!r} appears more than once")
    if label_column not in header:
        raise DataError(source, f"no label column {label_column!r}; the columns are {header}")
    label_at = header.index(label_column)
    features = [name for name in header if name != label_column]
    if not features:
        raise DataError(source, f"no feature columns besides the label column {label_column!r}")
    cells, labels, lines = [], [], []
    for line, row in rows:
        if len(row) != len(header):
            raise DataError(source, f"line {line}: {len(row)} fields, the header has {len(header)}")
        label = row[label_at].strip()
        if not label:
            raise DataError(source, f"line {line}: the label column {label_column!r} is empty")
        labels.append(label)
        cells.append(row[:label_at] + row[label_at + 1 :])
        lines.append(line)
    try:
        x = np.array(cells, dtype=np.float64).reshape(len(cells), len(features))
    except ValueError:
        # NumPy does not say which cell it choked on; find it for the message
        for line, row in zip(lines, cells, strict=True):
            for name, cell in zip(features, row, strict=True):
                if not _is_number(cell):
                    raise DataError(
                        source, f"line {line}: column {name!r}: {cell!r} is not a number"
                    ) from None
        raise
    return Table(x, _parse_labels(labels), np.array(lines, dtype=np.int64), features)


def _parse_labels(labels: list[str]) -> np.ndarray:
    """Integer labels as int64, other numbers as float64, anything else as strings."""
    for dtype in (np.int64, np.float64):
        try:
            return np.array(labels, dtype=dtype).reshape(len(labels))
        except ValueError:
            continue
    return np.array(labels, dtype=str).reshape(len(labels))


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_jsonl(source: str, path: Path) -> str:
    documents = []
    for number, line in enumerate(_read_utf8(source, path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(source, f"line {number}: invalid JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise DataError(source, f'line {number}: expected an object {{"text": "..."}}')
        documents.append(record["text"])
    # one document per line of the corpus: the model learns where documents end
    return "\n".join(documents)


def _read_utf8(source: str, path: Path) -> str:
    # decoded whole, not line by line: a decoder reading ahead would blame the wrong line
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(
            source, f"line {line}: not UTF-8 text (byte {e.start}: {e.reason})"
        ) from None
