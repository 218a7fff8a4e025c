"""Samplers: which indices a DataLoader fetches, in what order, and (for resuming) how to
reproduce that order.

PyTorch's samplers and index logic, with draws from the engine's stream. One difference in
timing: a sampler draws its whole epoch when `iter()` is called rather than at the first
`next()`, so that the moment an epoch's randomness is fixed is the moment the loader
records it for `state_dict()`.

Resumable samplers share one protocol. `state_dict()` returns `{"generator_state": ...,
"in_progress": ...}`: while an iteration is unfinished, the state its draws started from
(`in_progress` true); otherwise the state the next iteration will draw from. A sampler's
own generator is restored at once by `load_state_dict`. A sampler without one draws from
the engine's default generator, which a checkpoint restores by itself; an unfinished
iteration is then replayed from a private copy of the recorded state so that the default
generator is left alone.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence, Sized
from typing import Any, Generic, TypeVar

from engine.factories import randint, randperm
from engine.random import Generator, default_generator

T_co = TypeVar("T_co", covariant=True)
_SEED_HIGH = (1 << 63) - 1  # seeds are non-negative int64, as PyTorch's random_() draws


class Sampler(Generic[T_co]):
    """Base class: an iterable of dataset indices (or of index lists, for batch samplers)."""

    def __iter__(self) -> Iterator[T_co]:
        raise NotImplementedError


class SequentialSampler(Sampler[int]):
    def __init__(self, data_source: Sized) -> None:
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class _Resumable:
    """The state protocol of the module docstring, for samplers that draw their order."""

    generator: Generator | None
    _start: list[int] | None = None  # the state the current iteration drew from
    _replay: list[int] | None = None  # a default-generator iteration to replay privately
    _active: bool = False
    _iteration = 0  # tells an abandoned iteration's iterator from the current one's

    def _begin(self) -> Generator:
        """The generator this iteration draws from; records where its draws start."""
        self._iteration += 1
        self._active = True
        if self.generator is not None:
            gen = self.generator
        elif self._replay is not None:
            gen = Generator().set_state(self._replay)
            self._replay = None
        else:
            gen = default_generator
        self._start = gen.get_state().tolist()
        return gen

    def _serve(self, indices: list[int]) -> Iterator[int]:
        iteration = self._iteration
        yield from indices
        if iteration == self._iteration:
            self._active = False

    def state_dict(self) -> dict[str, Any]:
        if self._active:
            return {"generator_state": self._start, "in_progress": True}
        current = None if self.generator is None else self.generator.get_state().tolist()
        return {"generator_state": current, "in_progress": False}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict.get("generator_state")
        self._active = False
        if state is None:
            return
        if self.generator is not None:
            self.generator.set_state(state)
        elif state_dict.get("in_progress"):
            self._replay = list(state)


class RandomSampler(_Resumable, Sampler[int]):
    """A random permutation (or, with replacement, uniform draws) of the dataset's indices.

    Without a generator, each iteration seeds a fresh one from the default generator, as
    PyTorch does; `num_samples` beyond the dataset's length concatenates permutations.
    """

    def __init__(
        self,
        data_source: Sized,
        replacement: bool = False,
        num_samples: int | None = None,
        generator: Generator | None = None,
    ) -> None:
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        self.generator = generator
        if not isinstance(self.replacement, bool):
            raise TypeError(
                f"replacement should be a boolean value, but got replacement={self.replacement}"
            )
        if not isinstance(self.num_samples, int) or self.num_samples <= 0:
            raise ValueError(
                "num_samples should be a positive integer value, but got "
                f"num_samples={self.num_samples}"
            )

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self) -> Iterator[int]:
        n = len(self.data_source)
        gen = self._begin()
        if self.generator is None:
            seed = int(randint(0, _SEED_HIGH, (), generator=gen).item())
            gen = Generator().manual_seed(seed)
        if self.replacement:
            indices = randint(0, n, (self.num_samples,), generator=gen).tolist()
        else:
            indices = []
            for _ in range(self.num_samples // n):
                indices += randperm(n, generator=gen).tolist()
            indices += randperm(n, generator=gen).tolist()[: self.num_samples % n]
        return self._serve(indices)

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(_Resumable, Sampler[int]):
    """The given indices in a random order (drawn from the default generator if none given)."""

    def __init__(self, indices: Sequence[int], generator: Generator | None = None) -> None:
        self.indices = indices
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        order = randperm(len(self.indices), generator=self._begin()).tolist()
        return self._serve([self.indices[i] for i in order])

    def __len__(self) -> int:
        return len(self.indices)


class BatchSampler(Sampler[list[int]]):
    """Groups another sampler's indices into lists of `batch_size`."""

    def __init__(
        self, sampler: Sampler[int] | Iterable[int], batch_size: int, drop_last: bool
    ) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(
                f"batch_size should be a positive integer value, but got batch_size={batch_size}"
            )
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, but got drop_last={drop_last}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list[int]]:
        return self._batches(iter(self.sampler))  # the inner sampler draws now, not lazily

    def _batches(self, it: Iterator[int]) -> Iterator[list[int]]:
        if self.drop_last:
            for batch in zip(*[it] * self.batch_size, strict=False):
                yield list(batch)
        else:
            while batch := list(itertools.islice(it, self.batch_size)):
                yield batch

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        inner = getattr(self.sampler, "state_dict", None)
        return {"sampler": inner() if callable(inner) else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("sampler") is not None:
            self.sampler.load_state_dict(state_dict["sampler"])  # type: ignore[union-attr]


class DistributedSampler(Sampler[int]):
    """This rank's share of the dataset: PyTorch's index logic exactly.

    The (optionally shuffled) indices are padded by repeating them from the start until
    they divide evenly among the replicas (or, with `drop_last`, the tail is cut), and rank
    r takes every `num_replicas`-th index from position r. Shuffling permutes with a
    generator seeded `seed + epoch`, so every rank draws the same permutation; call
    `set_epoch` each epoch for a new one. Until `engine.distributed` exists, `num_replicas`
    and `rank` default to one replica of rank 0.
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        num_replicas = 1 if num_replicas is None else num_replicas
        rank = 0 if rank is None else rank
        if rank >= num_replicas or rank < 0:
            raise ValueError(
                f"Invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}]"
            )
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.drop_last = drop_last
        n = len(dataset)
        if drop_last and n % num_replicas != 0:
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.shuffle = shuffle
        self.seed = seed

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if self.shuffle:
            g = Generator().manual_seed(self.seed + self.epoch)
            indices = randperm(n, generator=g).tolist()
        else:
            indices = list(range(n))
        if not self.drop_last:
            padding = self.total_size - len(indices)
            if padding <= len(indices):
                indices += indices[:padding]
            else:
                indices += (indices * math.ceil(padding / len(indices)))[:padding]
        else:
            indices = indices[: self.total_size]
        return iter(indices[self.rank : self.total_size : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch = int(state_dict["epoch"])
