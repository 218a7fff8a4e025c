"""Data sets for jobs: files and built-ins to engine datasets, with their preprocessing.

`load_data(spec.data, seed=..., task_hint=...)` gives a `DataBundle`: the training and
validation datasets, the task (classification, regression or language_model), one
sample's input shape, the class count or vocabulary size, and `preprocessing`, a JSON
dict that a saved model carries so that `apply_preprocessing` repeats on new inputs
exactly what training did.

Sources: `.npz` and `.safetensors` (arrays `x` and `y`), `.csv` (a header row, numeric
feature columns and a label column), `.txt` and `.jsonl` (`{"text": ...}` per line) text
for language models, and the built-ins `builtin:digits` (1,797 8x8 handwritten digits as
64 features; `preprocessing["image_shape"]` is (1, 8, 8)) and `builtin:pydocs` (400 KB of
Python standard library docstrings). jobs/data/README.md says where they come from.
"""

from jobs.datasets.load import (
    DEFAULT_CONTEXT,
    DataBundle,
    DataSpecLike,
    apply_preprocessing,
    decode_tokens,
    load_data,
)

__all__ = [
    "DEFAULT_CONTEXT",
    "DataBundle",
    "DataSpecLike",
    "apply_preprocessing",
    "decode_tokens",
    "load_data",
]
