"""Per-sample randomness: results never depend on batch size, sharding or order.

Each sample's generator is seeded from (run seed, sample index), so sample 17 draws the same numbers
whether it is attacked alone, in a batch of 256 or on rank 3 of 8.

    >>> a = torch.rand(2, generator=sample_generator(0, 17))
    >>> b = torch.rand(2, generator=sample_generator(0, 17))
    >>> bool(torch.equal(a, b))
    True
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

_MASK = (1 << 63) - 1


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed mixed from ``seed`` and any keys (sample index, stream name, ...)."""
    text = ":".join(str(k) for k in (seed, *keys)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & _MASK


def sample_generator(seed: int, index: int, stream: str = "", device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` for one sample of one run."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, stream, index))
    return gen


def generator(seed: int, stream: str = "", device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` for a whole-run stream (shuffling, splits, initialisation)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, stream))
    return gen


def seeded_subset(indices: np.ndarray, n: int | None, seed: int, stream: str) -> np.ndarray:
    """At most ``n`` of ``indices`` (all with None), drawn in a seeded order and returned sorted: a subset that
    spans the classes even when a split lists them in blocks (the MNIST subset's test split starts with 100 zeros).

        >>> seeded_subset(np.arange(10), 3, 0, "demo").tolist() == seeded_subset(np.arange(10), 3, 0, "demo").tolist()
        True
    """
    if n is None or n >= len(indices):
        return np.asarray(indices)
    return np.sort(indices[torch.randperm(len(indices), generator=generator(seed, stream)).numpy()[:n]])


@contextmanager
def seeded_globals(seed: int) -> Iterator[None]:
    """Seed torch's and NumPy's global generators inside the block and restore them afterwards.

    For code advkit does not own that draws from the globals: weight initialisation of ``nn.Module``
    constructors, third-party attacks.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(np_state)


# ---- counter-based random numbers --------------------------------------------------------------------------
# Batched attacks need per-sample random streams without a Python loop over per-sample torch.Generators: a
# number is a hash of (sample key, draw counter), computed for the whole batch at once on its device. The same
# sample at the same draw gets the same number whatever the batch, shard or device.
_M32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer mixer (Mueller's hash) on int64 tensors holding values in [0, 2^32)."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32  # products stay below 2^59: no int64 overflow
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    return (x >> 16) ^ x


def counter_bits(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """32 random bits (int64 in [0, 2^32)) for each (key, counter); ``keys`` (N,) broadcast against ``counters`` (N, ...).

        >>> keys = torch.tensor([derive_seed(0, 'a', 1), derive_seed(0, 'a', 2)])
        >>> bits = counter_bits(keys, torch.arange(3).expand(2, 3))
        >>> bool(torch.equal(bits[1], counter_bits(keys[1:], torch.arange(3)[None])[0]))
        True
    """
    keys = keys.view(-1, *([1] * (counters.dim() - 1)))
    k0, k1 = keys & _M32, (keys >> 32) & _M32
    c0, c1 = counters & _M32, (counters >> 32) & _M32
    h = _mix32(c0 ^ k0)
    h = _mix32(h ^ k1 ^ 0x9E3779B9)
    return _mix32(h ^ c1 ^ 0x7F4A7C15)


def counter_uniform(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """Floats uniform in [0, 1) (float64, so they never round up to 1) for each (key, counter)."""
    return bits_to_uniform(counter_bits(keys, counters))


def bits_to_randint(bits: torch.Tensor, high: torch.Tensor | int) -> torch.Tensor:
    """Integers uniform in [0, high) (``high`` < 2^31, broadcastable) from bits drawn with :func:`counter_bits`."""
    return (bits * high) >> 32


def bits_to_uniform(bits: torch.Tensor) -> torch.Tensor:
    """:func:`counter_uniform` from bits already drawn with :func:`counter_bits` (one hash for many uses)."""
    return bits.double() / 2.0**32
