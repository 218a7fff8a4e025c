"""engine.utils.data: datasets, samplers, collation, DataLoader with workers, and resuming.

Expected values that PyTorch defines (DistributedSampler's padding, random_split's sizes,
collate dtypes) are written out by hand from PyTorch 2.13's rules; shuffled orders follow
the documented rule (the engine's randperm from a generator of the stated seed).
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

import engine
from engine.utils.data import (
    BatchSampler,
    ConcatDataset,
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    Subset,
    SubsetRandomSampler,
    TensorDataset,
    default_collate,
    default_convert,
    get_worker_info,
    random_split,
)
from engine.utils.data.worker import POLL_S

ROOT = Path(__file__).parent.parent
Point = namedtuple("Point", ["x", "y"])


def ints(n: int) -> TensorDataset:
    return TensorDataset(engine.arange(n), engine.arange(n).float() * 0.5)


def batches(loader: DataLoader) -> list[list[int]]:
    return [b[0].tolist() for b in loader]


class Noisy(Dataset):
    """Each item adds a draw from the default generator: a random transform."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> engine.Tensor:
        return engine.rand(2) + i


class Failing(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> int:
        if i == 5:
            raise ValueError("bad item 5")
        return i


class Sharded(IterableDataset):
    """range(n), split between workers by id."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        info = get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        return iter(range(start, self.n, step))


class Pid(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> int:
        return os.getpid()


class KillsWorker(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> int:
        if i == 4 and get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return i


class Slow(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> int:
        time.sleep(1.0)
        return i


# ---- datasets -----------------------------------------------------------------------------
def test_tensor_dataset_items_and_size_check():
    ds = ints(5)
    x, y = ds[3]
    assert (x.item(), y.item(), len(ds)) == (3, 1.5, 5)
    with pytest.raises(AssertionError, match="Size mismatch"):
        TensorDataset(engine.zeros(3), engine.zeros(4))


def test_concat_and_subset():
    both = ints(3) + ints(4)
    assert isinstance(both, ConcatDataset)
    assert len(both) == 7
    assert [both[i][0].item() for i in range(7)] == [0, 1, 2, 0, 1, 2, 3]
    assert both[-1][0].item() == 3
    sub = Subset(both, [6, 0, 4])
    assert [s[0].item() for s in sub.__getitems__([0, 1, 2])] == [3, 0, 1]
    assert len(sub) == 3


def test_random_split_sizes_disjoint_deterministic():
    parts = random_split(range(11), [0.3, 0.3, 0.4], generator=engine.Generator().manual_seed(1))
    assert [len(p) for p in parts] == [4, 3, 4]  # floor 3,3,4 plus the remainder at index 0
    seen = [i for p in parts for i in p.indices]
    assert sorted(seen) == list(range(11))
    assert seen == engine.randperm(11, generator=engine.Generator().manual_seed(1)).tolist()
    again = random_split(range(11), [4, 3, 4], generator=engine.Generator().manual_seed(1))
    assert [p.indices for p in again] == [p.indices for p in parts]
    other = random_split(range(11), [4, 3, 4], generator=engine.Generator().manual_seed(2))
    assert [p.indices for p in other] != [p.indices for p in parts]
    with pytest.raises(ValueError, match="Sum of input lengths"):
        random_split(range(11), [5, 5])


# ---- samplers -----------------------------------------------------------------------------
def test_random_sampler_draws_the_engine_permutation():
    s = RandomSampler(range(7), generator=engine.Generator().manual_seed(4))
    g = engine.Generator().manual_seed(4)
    assert list(s) == engine.randperm(7, generator=g).tolist()
    engine.randperm(7, generator=g)  # PyTorch draws one more for num_samples % n (here 0)
    assert list(s) == engine.randperm(7, generator=g).tolist()  # the stream continues
    long = RandomSampler(range(3), num_samples=7, generator=engine.Generator().manual_seed(0))
    drawn = list(long)
    assert len(drawn) == 7 and sorted(drawn[:3]) == [0, 1, 2] and sorted(drawn[3:6]) == [0, 1, 2]
    rep = list(RandomSampler(range(3), replacement=True, num_samples=50))
    assert len(rep) == 50 and set(rep) <= {0, 1, 2}
    with pytest.raises(ValueError, match="num_samples"):
        RandomSampler(range(3), num_samples=0)


def test_batch_sampler_and_subset_random_sampler():
    assert list(BatchSampler(SequentialSampler(range(10)), 3, False)) == [
        [0, 1, 2],
        [3, 4, 5],
        [6, 7, 8],
        [9],
    ]
    assert list(BatchSampler(range(10), 3, True)) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert len(BatchSampler(range(10), 3, False)) == 4
    assert len(BatchSampler(range(10), 3, True)) == 3
    with pytest.raises(ValueError, match="batch_size"):
        BatchSampler(range(10), 0, False)
    s = SubsetRandomSampler([10, 20, 30, 40], generator=engine.Generator().manual_seed(3))
    order = engine.randperm(4, generator=engine.Generator().manual_seed(3)).tolist()
    assert list(s) == [[10, 20, 30, 40][i] for i in order]


@pytest.mark.parametrize(
    ("n", "replicas", "drop_last", "expected"),
    [
        # 10 over 3: 4 each, padded with indices 0, 1 from the start
        (10, 3, False, [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]),
        # drop_last: ceil((10 - 3) / 3) = 3 each, the tail (9) dropped
        (10, 3, True, [[0, 3, 6], [1, 4, 7], [2, 5, 8]]),
        # padding longer than the data: the indices repeated, [0, 1, 0, 1, 0]
        (2, 5, False, [[0], [1], [0], [1], [0]]),
    ],
)
def test_distributed_sampler_unshuffled(n, replicas, drop_last, expected):
    got = [
        list(DistributedSampler(range(n), replicas, r, shuffle=False, drop_last=drop_last))
        for r in range(replicas)
    ]
    assert got == expected
    assert len(DistributedSampler(range(n), replicas, 0, drop_last=drop_last)) == len(expected[0])


def test_distributed_sampler_shuffle_seed_plus_epoch():
    samplers = [DistributedSampler(range(10), 4, r, seed=5) for r in range(4)]
    for s in samplers:
        s.set_epoch(2)
    perm = engine.randperm(10, generator=engine.Generator().manual_seed(7)).tolist()
    padded = perm + perm[:2]  # 3 each, 12 in all
    assert [list(s) for s in samplers] == [padded[r:12:4] for r in range(4)]
    epoch3 = DistributedSampler(range(10), 4, 0, seed=5)
    epoch3.load_state_dict(json.loads(json.dumps({"epoch": 3})))
    assert epoch3.state_dict() == {"epoch": 3}
    assert list(epoch3) != list(samplers[0])
    with pytest.raises(ValueError, match="Invalid rank 4"):
        DistributedSampler(range(10), 4, 4)
    with pytest.raises(ValueError, match="Invalid rank -1"):
        DistributedSampler(range(10), 4, -1)
    assert list(DistributedSampler(range(3), shuffle=False)) == [0, 1, 2]  # 1 replica, rank 0


# ---- collate ------------------------------------------------------------------------------
def test_default_collate_nested_and_dtypes():
    sample = {
        "f": 1.5,
        "pair": (1, True),
        "np32": np.float32(2.0),
        "arr": np.arange(3, dtype=np.int32),
        "t": engine.ones(2),
        "s": "x",
        "p": Point(1.0, [2, 3]),
    }
    out = default_collate([sample, sample])
    assert out["f"].dtype == engine.float64 and out["f"].tolist() == [1.5, 1.5]
    assert isinstance(out["pair"], list)  # tuples collate to lists, as PyTorch's
    assert out["pair"][0].dtype == engine.int64 and out["pair"][1].dtype == engine.bool
    assert out["np32"].dtype == engine.float32
    assert out["arr"].dtype == engine.int32 and out["arr"].shape == (2, 3)
    assert out["t"].shape == (2, 2) and out["t"].dtype == engine.float32
    assert out["s"] == ["x", "x"]
    assert isinstance(out["p"], Point) and out["p"].x.dtype == engine.float64
    assert [c.tolist() for c in out["p"].y] == [[2, 2], [3, 3]]
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([[1, 2], [1]])
    with pytest.raises(TypeError, match="default_collate"):
        default_collate([object(), object()])


def test_default_convert():
    out = default_convert({"a": np.zeros(2, dtype=np.float64), "b": (np.int64(3), "s")})
    assert out["a"].dtype == engine.float64
    assert isinstance(out["b"], list) and out["b"][0].item() == 3 and out["b"][1] == "s"
    assert default_convert(5) == 5


# ---- DataLoader ---------------------------------------------------------------------------
def test_len_drop_last_and_no_batching():
    assert len(DataLoader(ints(10), batch_size=3)) == 4
    assert len(DataLoader(ints(10), batch_size=3, drop_last=True)) == 3
    assert batches(DataLoader(ints(10), batch_size=3, drop_last=True)) == [
        [0, 1, 2],
        [3, 4, 5],
        [6, 7, 8],
    ]
    unbatched = list(DataLoader(ints(3), batch_size=None))
    assert [x.item() for x, _ in unbatched] == [0, 1, 2]


def test_argument_validation():
    ds = ints(4)
    for kwargs, msg in [
        ({"num_workers": -1}, "non-negative"),
        ({"timeout": -1}, "timeout"),
        ({"prefetch_factor": 2}, "prefetch_factor"),
        ({"persistent_workers": True}, "persistent_workers"),
        ({"sampler": SequentialSampler(ds), "shuffle": True}, "mutually exclusive"),
        ({"batch_sampler": [[0]], "batch_size": 2}, "batch_sampler"),
        ({"batch_size": None, "drop_last": True}, "drop_last"),
        ({"multiprocessing_context": "fork"}, "multiprocessing_context"),
        ({"worker_method": "greenlet", "num_workers": 1}, "worker_method"),
    ]:
        with pytest.raises(ValueError, match=msg):
            DataLoader(ds, **kwargs)
    with pytest.raises(ValueError, match="shuffle"):
        DataLoader(Sharded(4), shuffle=True)
    loader = DataLoader(ds)
    with pytest.raises(ValueError, match="should not be set"):
        loader.batch_size = 2


def test_seeded_shuffle_is_reproducible():
    def run(seed):
        engine.manual_seed(seed)
        loader = DataLoader(ints(10), batch_size=4, shuffle=True)
        return [batches(loader) for _ in range(2)]

    first = run(3)
    assert first == run(3)
    assert first[0] != first[1]  # a new order each epoch
    assert sorted(i for b in first[0] for i in b) == list(range(10))
    g = engine.Generator().manual_seed(9)
    with_gen = batches(DataLoader(ints(10), batch_size=4, shuffle=True, generator=g))
    g.manual_seed(9)
    assert with_gen == batches(DataLoader(ints(10), batch_size=4, shuffle=True, generator=g))


@pytest.mark.parametrize("method", ["multiprocessing", "thread"])
def test_workers_give_the_same_batches_in_order(method):
    def run(workers):
        g = engine.Generator().manual_seed(5)
        kw = {"num_workers": workers, "worker_method": method} if workers else {}
        loader = DataLoader(ints(23), batch_size=3, shuffle=True, generator=g, **kw)
        return [(x.tolist(), y.tolist()) for _ in range(2) for x, y in loader]

    assert run(2) == run(0)


def test_worker_seeds_and_init_fn_are_deterministic():
    def run():
        engine.manual_seed(11)
        loader = DataLoader(
            Noisy(), batch_size=3, num_workers=2, worker_init_fn=lambda i: engine.rand(i + 1)
        )
        return [b.tolist() for b in loader]

    assert run() == run()
    seeds = DataLoader(range(4), batch_size=None, num_workers=2, collate_fn=_worker_seed)
    got = list(seeds)
    assert got[1] == got[0] + 1  # worker i seeds with base_seed + i


def _worker_seed(_):
    return get_worker_info().seed


def test_iterable_dataset_with_workers_interleaves_shards():
    loader = DataLoader(Sharded(10), batch_size=2, num_workers=2)
    assert batches_of(loader) == [[0, 2], [1, 3], [4, 6], [5, 7], [8], [9]]
    assert batches_of(DataLoader(Sharded(10), batch_size=2, drop_last=True)) == [
        [0, 1],
        [2, 3],
        [4, 5],
        [6, 7],
        [8, 9],
    ]
    assert len(DataLoader(Sharded(10), batch_size=4)) == 3


def batches_of(loader):
    return [b.tolist() for b in loader]


def test_worker_exception_is_reraised_with_its_traceback():
    loader = DataLoader(Failing(), batch_size=2, num_workers=2)
    with pytest.raises(ValueError, match="bad item 5") as info:
        list(loader)
    assert "Caught ValueError in DataLoader worker process 0" in str(info.value)
    assert "Traceback" in str(info.value) and "__getitem__" in str(info.value)
    del info  # its traceback holds the iterator, which may go on after an error
    gc.collect()
    assert multiprocessing.active_children() == []


def test_workers_exit_once_a_worker_error_is_handled_without_a_gc_run():
    # found by tests/test_fuzz.py: reraise's local `err` and err's traceback made a cycle
    # that kept the iterator, and so its worker processes, alive until the next gc run
    loader = DataLoader(Failing(), batch_size=2, num_workers=2)
    gc.disable()
    try:
        with pytest.raises(ValueError, match="bad item 5"):
            list(loader)
        assert multiprocessing.active_children() == []
    finally:
        gc.enable()


def test_killed_worker_raises_instead_of_hanging():
    loader = DataLoader(KillsWorker(), batch_size=2, num_workers=2)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        list(loader)
    assert time.monotonic() - start < 10
    assert multiprocessing.active_children() == []


def test_timeout():
    loader = DataLoader(Slow(), batch_size=1, num_workers=1, timeout=0.3)
    with pytest.raises(RuntimeError, match="timed out"):
        next(iter(loader))


def test_no_processes_left_after_break_or_delete():
    loader = DataLoader(ints(40), batch_size=2, num_workers=2)
    for _ in loader:
        break
    gc.collect()
    assert multiprocessing.active_children() == []
    it = iter(loader)
    next(it)
    assert len(multiprocessing.active_children()) == 2
    del it
    gc.collect()
    assert multiprocessing.active_children() == []


def test_persistent_workers_are_reused():
    loader = DataLoader(Pid(), batch_size=2, num_workers=2, persistent_workers=True)
    first = {p for b in loader for p in b.tolist()}
    second = {p for b in loader for p in b.tolist()}
    assert first == second and len(first) == 2 and os.getpid() not in first
    assert batches(DataLoader(ints(9), batch_size=2, num_workers=2, persistent_workers=True)) == [
        [0, 1],
        [2, 3],
        [4, 5],
        [6, 7],
        [8],
    ]
    del loader
    gc.collect()
    assert multiprocessing.active_children() == []


# ---- resuming -----------------------------------------------------------------------------
def _resume_matches(make, stop_epoch=1, stop_batch=2, epochs=3, restore_rng=False):
    """An uninterrupted run equals one stopped after `stop_batch` batches of `stop_epoch`,
    saved (through JSON, as a checkpoint stores it) and continued by a new loader."""
    engine.manual_seed(0)
    loader = make()
    full = [[b.tolist() for b in loader] for _ in range(epochs)]

    engine.manual_seed(0)
    loader = make()
    for _ in range(stop_epoch):
        list(loader)
    it = iter(loader)
    head = [next(it).tolist() for _ in range(stop_batch)]
    state = json.loads(json.dumps(loader.state_dict()))
    rng = engine.get_rng_state()
    del it, loader
    assert state["epoch"] == stop_epoch and state["batches_yielded"] == stop_batch

    engine.manual_seed(123)  # a fresh process: nothing carried over but the state
    resumed = make()
    if restore_rng:
        engine.set_rng_state(rng)
    resumed.load_state_dict(state)
    rest = [[b.tolist() for b in resumed] for _ in range(stop_epoch, epochs)]
    assert head + rest[0] == full[stop_epoch]
    assert rest[1:] == full[stop_epoch + 1 :]


class Pairs(Dataset):
    """x and its noise from the default generator: a random transform."""

    def __len__(self) -> int:
        return 11

    def __getitem__(self, i: int) -> engine.Tensor:
        return engine.stack([engine.tensor(float(i)), engine.rand(())])


def test_resume_shuffle_with_workers_and_random_transforms():
    _resume_matches(
        lambda: DataLoader(
            Pairs(),
            batch_size=2,
            shuffle=True,
            num_workers=2,
            generator=engine.Generator().manual_seed(7),
        ),
        stop_batch=3,
    )


def test_resume_shuffle_default_generator_single_process():
    _resume_matches(lambda: DataLoader(Pairs(), batch_size=3, shuffle=True), restore_rng=True)


def test_resume_sampler_with_its_own_generator_and_persistent_workers():
    def make():
        ds = Pairs()
        sampler = RandomSampler(ds, generator=engine.Generator().manual_seed(3))
        return DataLoader(ds, batch_size=2, sampler=sampler, num_workers=2, persistent_workers=True)

    _resume_matches(make, stop_epoch=1, stop_batch=1)


def test_resume_at_an_epoch_boundary():
    _resume_matches(
        lambda: DataLoader(Pairs(), batch_size=2, shuffle=True, generator=engine.Generator()),
        stop_epoch=1,
        stop_batch=0,
        restore_rng=True,  # the transforms draw from the default generator, in this process
    )


class EpochLoader:
    """A DistributedSampler loop: set_epoch before each epoch, as a training loop does."""

    def __init__(self):
        self.sampler = DistributedSampler(range(13), num_replicas=2, rank=1, seed=3)
        self.loader = DataLoader(ints(13), batch_size=2, sampler=self.sampler)
        self.epoch = 0

    def __iter__(self):
        self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        return (b[0] for b in self.loader)

    def state_dict(self):
        return self.loader.state_dict()

    def load_state_dict(self, sd):
        self.loader.load_state_dict(sd)
        self.epoch = sd["epoch"]


def test_resume_distributed_sampler():
    _resume_matches(EpochLoader, stop_epoch=1, stop_batch=2)
    loader = EpochLoader()
    list(loader)
    iter(loader)
    assert loader.state_dict()["sampler"] == {"sampler": {"epoch": 1}}  # via BatchSampler


def test_resume_iterable_dataset_with_workers():
    _resume_matches(lambda: DataLoader(Sharded(14), batch_size=2, num_workers=2), stop_batch=3)


def test_spawned_workers_give_the_same_batches():
    # the start method used where fork is unsafe: the dataset travels by pickle
    def make(**kw):
        g = engine.Generator().manual_seed(2)
        return DataLoader(Pairs(), batch_size=4, shuffle=True, generator=g, **kw)

    spawned = [b[:, 0].tolist() for b in make(num_workers=2, multiprocessing_context="spawn")]
    assert spawned == [b[:, 0].tolist() for b in make()]


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_idle_workers_wait_for_their_loader(method):
    # a long evaluation or checkpoint between two batches leaves the workers idle past
    # their poll; under forkserver their parent is the server, not the loader's process,
    # and they must not take that for the loader's death
    loader = DataLoader(ints(24), batch_size=4, num_workers=2, multiprocessing_context=method)
    got = []
    for i, (x, _) in enumerate(loader):
        got.append(x.tolist())
        if i == 1:
            time.sleep(3 * POLL_S)
    assert got == batches(DataLoader(ints(24), batch_size=4))


def test_workers_exit_when_their_loaders_process_is_killed(tmp_path):
    script = tmp_path / "loader.py"
    script.write_text(
        "import multiprocessing, time\n"
        "from engine.utils.data import DataLoader, TensorDataset\n"
        "import engine\n"
        "if __name__ == '__main__':\n"
        "    data = TensorDataset(engine.arange(100))\n"
        "    loader = DataLoader(data, batch_size=1, num_workers=2,\n"
        "                        multiprocessing_context='forkserver')\n"
        "    it = iter(loader)\n"
        "    next(it)\n"
        "    workers = multiprocessing.active_children()\n"
        "    print(' '.join(str(p.pid) for p in workers), flush=True)\n"
        "    time.sleep(60)\n"
    )
    loader = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert loader.stdout is not None
    try:
        workers = [int(p) for p in loader.stdout.readline().split()]
        assert len(workers) == 2
        loader.kill()
        loader.wait()
        deadline = time.monotonic() + 10 * POLL_S + 5
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in workers), "orphaned DataLoader workers live on"
    finally:
        loader.kill()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead: forkserver children are reaped by the server, which may lag
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"
