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
