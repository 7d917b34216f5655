"""Blur corruptions of CIFAR-10-C (https://arxiv.org/abs/1903.12261): defocus, glass, motion and zoom blur.

Inputs are (B, C, H, W) float batches in [0, 1]; every channel is blurred with the same kernel.
"""

from __future__ import annotations

import math

import kornia
import torch
from torch import Tensor

from advkit.perturbations import _ops
from advkit.perturbations.base import BLUR, PERTURBATIONS, RANDOM
from advkit.perturbations.params import DefocusBlur, GlassBlur, MotionBlur, ZoomBlur, zoom_factors


def defocus_kernel(radius: float, alias_sigma: float, like: Tensor) -> Tensor:
    """(1, K, K) kernel: the pixels within ``radius`` of the centre (sum 1), smoothed by a 3x3 Gaussian.

    At CIFAR-10-C's radii the disk is one pixel (severities 1-3, so the kernel is a 3x3 Gaussian), a 5-pixel cross
    (severity 4) or a 3x3 square (severity 5).
    """
    reach = math.ceil(radius) + 1  # one pixel of margin for the 3x3 smoothing
    coords = torch.arange(-reach, reach + 1, device=like.device, dtype=like.dtype)
    disk = ((coords[:, None] ** 2 + coords[None, :] ** 2) <= radius**2).to(like.dtype)
    disk = disk / disk.sum()
    sigma = (alias_sigma, alias_sigma)
    return kornia.filters.gaussian_blur2d(disk[None, None], (3, 3), sigma, border_type="constant")[0]


@PERTURBATIONS.register("defocus_blur", tags=(BLUR,))
def defocus_blur(x: Tensor, p: DefocusBlur, gen: torch.Generator) -> Tensor:
    """Disk-kernel (out-of-focus) blur, applied with kornia.filters.filter2d."""
    kernel = defocus_kernel(p.radius, p.alias_sigma, x)
    return kornia.filters.filter2d(x, kernel, border_type=_ops.reflect_or_replicate(x, kernel.shape[-1]))


def _swap_neighbours(x: Tensor, dim: int, parity: int, gen: torch.Generator) -> Tensor:
    """Swap each pair of neighbours (i, i + 1), i = parity mod 2, along ``dim`` with probability 1/2.

    A pixel moves with all its channels, so the batch keeps exactly its pixel values, only locally permuted.
    """
    pairs = (x.shape[dim] - parity) // 2
    if pairs == 0:
        return x
    moved = x.movedim(dim, -1)
    head, body, tail = moved.split([parity, 2 * pairs, moved.shape[-1] - parity - 2 * pairs], dim=-1)
    body = body.unflatten(-1, (pairs, 2))
    swap = _ops.uniform((body.shape[0], 1, *body.shape[2:-1], 1), 0, 1, gen, x) < 0.5
    body = torch.where(swap, body.flip(-1), body).flatten(-2)
    return torch.cat([head, body, tail], dim=-1).movedim(-1, dim)


def local_shuffle(x: Tensor, gen: torch.Generator) -> Tensor:
    """One round of random neighbour swaps: even then odd pairs along the width, then along the height."""
    for dim in (-1, -2):
        for parity in (0, 1):
            x = _swap_neighbours(x, dim, parity, gen)
    return x


@PERTURBATIONS.register("glass_blur", tags=(BLUR, RANDOM))
def glass_blur(x: Tensor, p: GlassBlur, gen: torch.Generator) -> Tensor:
    """Frosted-glass blur: Gaussian blur, local pixel shuffling, Gaussian blur (kornia blur + torch swaps).

    The original swaps every pixel with a random up/left neighbour in one sequential raster sweep per iteration.
    That loop cannot run batched, so each iteration here does ``max_delta`` rounds of vectorised neighbour swaps
    (each swap with probability 1/2; even and odd pairs, width then height): symmetric, at most 2 pixels of travel
    per axis per round, and still a permutation of the pixels.
    """
    x = _ops.skimage_gaussian(x, p.sigma)
    for _ in range(p.iterations * p.max_delta):
        x = local_shuffle(x, gen)
    return _ops.skimage_gaussian(x, p.sigma)


@PERTURBATIONS.register("motion_blur", tags=(BLUR, RANDOM))
def motion_blur(x: Tensor, p: MotionBlur, gen: torch.Generator) -> Tensor:
    """Motion streak at a random angle in [-45, 45) degrees per image (own kernel, kornia.filters.filter2d).

    The kernel is ImageMagick's MotionBlurImage as we read it (the original calls it through Wand): a one-sided
    ray of 2 ceil(radius) + 1 taps weighted exp(-i^2 / (2 sigma^2)). kornia.filters.motion_blur is not used because
    its centred, linearly weighted line has no sigma to follow the table with.
    """
    angles = _ops.uniform((x.shape[0],), -45, 45, gen, x)
    return _ops.motion_blur(x, p.radius, p.sigma, angles)


@PERTURBATIONS.register("zoom_blur", tags=(BLUR,))
def zoom_blur(x: Tensor, p: ZoomBlur, gen: torch.Generator) -> Tensor:
    """Mean of the image and its zooms into it by 1, 1.01, ... (kornia.geometry.transform.remap)."""
    total = x.clone()
    for factor in zoom_factors(p):
        total += _ops.clipped_zoom(x, factor)
    return total / (p.n_zooms + 1)
