"""Seeded random streams: `Generator`, the default generator and `manual_seed`.

The engine's own stream (not PyTorch's): NumPy's PCG64 seeded through SeedSequence,
which gives the same numbers for the same seed on every machine. Draws are made in
float32 (float64 only for float64 tensors), never drawn wide and cast down; uniform
draws for float16/bfloat16 are multiples of 2**-11 / 2**-8 below 1, as PyTorch's. A draw for
a CUDA tensor (rand, randn, dropout masks) is made on the device from a counter-based
stream of the same generator (`Generator.device_draw`), seeded by the same seed but not
the same numbers as the host stream.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from engine import dtypes
from engine.device import CPU
from engine.device import device as as_device

DEFAULT_SEED = 67280421310721  # PyTorch's default initial seed
_MASK64 = (1 << 64) - 1
# rand() for 16-bit floats draws k * 2**-bits, k < 2**bits, as PyTorch does: never 1.0
_LOW_BITS = {"float16": 11, "bfloat16": 8}


class Generator:
    def __init__(self, device: Any = "cpu") -> None:
        self.device = as_device(device)
        self.manual_seed(DEFAULT_SEED)

    def manual_seed(self, seed: int) -> Generator:
        self._seed = int(seed)
        self._rng = np.random.Generator(np.random.PCG64(self._seed & _MASK64))
        self._device_draws = 0
        return self

    def seed(self) -> int:
        """Re-seed from the operating system's entropy and return the new seed."""
        s = int.from_bytes(os.urandom(8), "little") >> 1
        self.manual_seed(s)
        return s

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self) -> Any:
        """The full position of both streams as an int64 tensor of 8 values
        (safetensors-friendly): the host PCG64 state in 6, then the GPU stream's key and
        draw counter, so a restored checkpoint replays GPU dropout masks too."""
        from engine.tensor import wrap

        st = self._rng.bit_generator.state
        s, inc = st["state"]["state"], st["state"]["inc"]
        words = [
            s >> 64,
            s & _MASK64,
            inc >> 64,
            inc & _MASK64,
            st["has_uint32"],
            st["uinteger"],
            self._seed & _MASK64,
            self._device_draws,
        ]
        return wrap(np.array(words, dtype=np.uint64).view(np.int64), CPU)

    def set_state(self, state: Any) -> Generator:
        arr = np.asarray(state.numpy() if hasattr(state, "numpy") else state)
        if arr.shape not in ((6,), (8,)) or arr.dtype.kind not in "iu":
            raise ValueError(
                f"set_state: expected the int64 tensor of 8 values get_state() returns "
                f"(or the 6 of the host stream alone), got shape {arr.shape} dtype {arr.dtype}"
            )
        w = [int(x) for x in arr.astype(np.int64).view(np.uint64)]
        if len(w) == 8:  # the GPU stream's key and counter; a 6-value state leaves them be
            self._seed, self._device_draws = w[6], w[7]
        self._rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": (w[0] << 64) | w[1], "inc": (w[2] << 64) | w[3]},
            "has_uint32": w[4],
            "uinteger": w[5],
        }
        return self

    def device_draw(self) -> tuple[int, int]:
        """(key, counter) of the next draw made on a GPU: the seed and how many GPU draws
        came before since it was set. A GPU draw is Philox4x32-10 of (element, counter)
        under that key, computed on the device, so it never waits on or copies from the
        host; the host stream above is left as it was."""
        n = self._device_draws
        self._device_draws += 1
        return self._seed & _MASK64, n

    # draws, as host arrays of the requested dtype ------------------------------------------
    def uniform(
        self, shape: tuple[int, ...], d: dtypes.dtype, low: float = 0.0, high: float = 1.0
    ) -> np.ndarray:
        wide = np.float64 if d is dtypes.float64 else np.float32
        bits = _LOW_BITS.get(d.name)
        if bits is None:
            u = self._rng.random(shape, dtype=wide)
        else:  # a float32 draw near 1 would round up to 1.0: draw on the dtype's grid
            u = self._rng.integers(0, 1 << bits, shape, dtype=np.int32).astype(wide)
            u *= wide(2.0**-bits)
        if low != 0.0 or high != 1.0:
            u = u * wide(high - low) + wide(low)
        return u.astype(d.np, copy=False)

    def normal(
        self, shape: tuple[int, ...], d: dtypes.dtype, mean: float = 0.0, std: float = 1.0
    ) -> np.ndarray:
        wide = np.float64 if d is dtypes.float64 else np.float32
        z = self._rng.standard_normal(shape, dtype=wide)
        if mean != 0.0 or std != 1.0:
            z = z * wide(std) + wide(mean)
        return z.astype(d.np, copy=False)

    def integers(self, low: int, high: int, shape: tuple[int, ...]) -> np.ndarray:
        return self._rng.integers(low, high, shape, dtype=np.int64)

    def permutation(self, n: int) -> np.ndarray:
        return self._rng.permutation(n).astype(np.int64, copy=False)


default_generator = Generator()


def manual_seed(seed: int) -> Generator:
    return default_generator.manual_seed(seed)


def seed() -> int:
    return default_generator.seed()


def initial_seed() -> int:
    return default_generator.initial_seed()


def get_rng_state() -> Any:
    return default_generator.get_state()


def set_rng_state(state: Any) -> None:
    default_generator.set_state(state)


def generator_or_default(generator: Generator | None) -> Generator:
    if generator is None:
        return default_generator
    if not isinstance(generator, Generator):
        raise TypeError(f"generator must be an engine.Generator, got {type(generator).__name__}")
    return generator
