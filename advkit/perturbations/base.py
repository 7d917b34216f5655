"""The ``PERTURBATIONS`` registry and ``corrupt``, the one entry point that checks inputs and applies a corruption.

A registered perturbation is a function ``f(x, params, generator) -> Tensor`` taking a checked (B, C, H, W) float
batch in [0, 1] (float32, or float64 when the input is), one row of ``SEVERITY_PARAMS[name]`` and a
``torch.Generator``; ``corrupt`` clips its result to [0, 1] and casts it back to the input's dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from advkit.errors import AdvkitError, SettingsError
from advkit.perturbations.params import SEVERITIES, SEVERITY_PARAMS
from advkit.registry import Registry
from advkit.rng import derive_seed, sample_generator

PERTURBATIONS: Registry[Tensor] = Registry("perturbation")

# Tags: the benchmark's category, and "random" for corruptions that draw from the generator.
NOISE, BLUR, WEATHER, DIGITAL, RANDOM = "noise", "blur", "weather", "digital", "random"


def perturbation_names() -> list[str]:
    """The 15 CIFAR-10-C corruption names in the benchmark's order (noise, blur, weather, digital)."""
    return [name for name in SEVERITY_PARAMS if name in PERTURBATIONS]


def is_random(name: str) -> bool:
    """Whether ``name`` draws from the generator (the others are deterministic functions of the image)."""
    return RANDOM in PERTURBATIONS.entry(name).tags


def corrupt(x: Tensor, name: str, severity: int, *, generator: torch.Generator | None = None) -> Tensor:
    """Apply CIFAR-10-C corruption ``name`` at ``severity`` (1..5) to a (B, C, H, W) float batch in [0, 1].

    Hendrycks & Dietterich, ICLR 2019, https://arxiv.org/abs/1903.12261. Returns a new tensor of the same shape,
    dtype and device with values in [0, 1]; ``x`` is not modified. Any channel count works: 3 channels are RGB,
    any other count is treated as independent grey channels (see docs/perturbations.md). Computed without autograd.

    Randomness comes only from ``generator`` (never torch's global RNG): the same generator state gives the same
    output, and the generator is advanced. Without a generator, a fixed one seeded from the corruption's name is
    used, so repeated calls then repeat the same draws.
    """
    entry = PERTURBATIONS.entry(name)  # unknown names fail with close matches
    params = SEVERITY_PARAMS[name][_check_severity(severity) - 1]
    work = _check_images(x)
    gen = _check_generator(generator, name)
    if x.shape[0] == 0:
        return x.clone()
    with torch.no_grad():
        out = entry.factory(work, params, gen)
    return out.clamp(0, 1).to(x.dtype)


def corrupt_samples(x: Tensor, name: str, severity: int, *, seed: int, indices: Sequence[int] | Tensor) -> Tensor:
    """``corrupt`` with one generator per sample, seeded from (seed, name, severity, dataset index).

    A sample then gets the same corruption whatever batch, shard or order it is processed in (advkit.rng's rule),
    at the cost of one call per sample.
    """
    index_list = [int(i) for i in indices]
    if len(index_list) != x.shape[0]:
        raise SettingsError(
            f"corrupt_samples needs one index per sample: {len(index_list)} for a batch of {x.shape[0]}"
        )
    stream = f"perturbations:{name}:{severity}"
    parts = [
        corrupt(x[k : k + 1], name, severity, generator=sample_generator(seed, index, stream))
        for k, index in enumerate(index_list)
    ]
    return torch.cat(parts) if parts else x.clone()


def _check_severity(severity: int) -> int:
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise SettingsError(f"severity must be an integer from 1 to 5, got {severity!r}")
    return severity


def _check_images(x: Tensor) -> Tensor:
    """The batch in the working dtype (float32, or float64 if given), after checking shape, dtype and range."""
    if not isinstance(x, Tensor):
        raise AdvkitError(f"corrupt takes a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] < 1 or x.shape[2] < 1 or x.shape[3] < 1:
        raise AdvkitError(f"corrupt takes a (B, C, H, W) batch with C, H, W >= 1, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise AdvkitError(f"corrupt takes float images in [0, 1], got dtype {x.dtype}; divide uint8 images by 255")
    if x.numel() > 0:
        low, high = torch.aminmax(x)
        if not (low >= 0 and high <= 1):  # also catches NaN
            raise AdvkitError(
                f"corrupt takes images in [0, 1], got values in [{low.item():.4g}, {high.item():.4g}]; "
                "undo any normalisation first"
            )
    return x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)


def _check_generator(generator: torch.Generator | None, name: str) -> torch.Generator:
    if generator is None:
        fixed = torch.Generator()
        fixed.manual_seed(derive_seed(0, "perturbations", name))
        return fixed
    if not isinstance(generator, torch.Generator):
        raise SettingsError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator
