"""Noise corruptions of CIFAR-10-C (https://arxiv.org/abs/1903.12261): Gaussian, shot (Poisson) and impulse noise.

Inputs are (B, C, H, W) float batches in [0, 1]; the noise is drawn independently for every pixel of every channel,
as in the original, from the generator passed in.
"""

from __future__ import annotations

import torch
from torch import Tensor

from advkit.perturbations._ops import normal, poisson, uniform
from advkit.perturbations.base import NOISE, PERTURBATIONS, RANDOM
from advkit.perturbations.params import GaussianNoise, ImpulseNoise, ShotNoise


@PERTURBATIONS.register("gaussian_noise", tags=(NOISE, RANDOM))
def gaussian_noise(x: Tensor, p: GaussianNoise, gen: torch.Generator) -> Tensor:
    """Additive Gaussian noise of standard deviation ``std``, clipped to [0, 1] (torch primitives)."""
    return x + p.std * normal(tuple(x.shape), gen, x)


@PERTURBATIONS.register("shot_noise", tags=(NOISE, RANDOM))
def shot_noise(x: Tensor, p: ShotNoise, gen: torch.Generator) -> Tensor:
    """Photon (Poisson) noise: Poisson(x * photons) / photons (torch primitives)."""
    return poisson(x * p.photons, gen) / p.photons


@PERTURBATIONS.register("impulse_noise", tags=(NOISE, RANDOM))
def impulse_noise(x: Tensor, p: ImpulseNoise, gen: torch.Generator) -> Tensor:
    """Salt-and-pepper noise: a fraction ``amount`` of values set to 0 or 1, half each (torch primitives).

    Like skimage's ``random_noise(mode='s&p')`` used by the original, each channel value is hit independently, so
    hits on colour images are coloured. A tiny image can legitimately come out unchanged: no value is hit with
    probability (1 - amount) ** (C * H * W).
    """
    hit = uniform(tuple(x.shape), 0, 1, gen, x) < p.amount
    salt = uniform(tuple(x.shape), 0, 1, gen, x) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)
