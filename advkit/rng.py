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
