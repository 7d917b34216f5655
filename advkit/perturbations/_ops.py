"""Building blocks shared by the corruptions: seeded draws, kernels, resampling, the plasma fractal.

Every random number is drawn from the ``torch.Generator`` passed in, on the generator's device, then moved to the
image's device: a CPU generator therefore also works for CUDA images, and the draws never touch torch's global RNG.
Images are (B, C, H, W) float tensors in [0, 1].
"""

from __future__ import annotations

import math

import kornia
import torch
from torch import Tensor


# ---- seeded draws ------------------------------------------------------------------------------------------
def uniform(shape: tuple[int, ...], low: float, high: float, gen: torch.Generator, like: Tensor) -> Tensor:
    """Uniform numbers in [low, high) with ``like``'s dtype and device."""
    draw = torch.rand(shape, generator=gen, device=gen.device, dtype=like.dtype)
    return (low + (high - low) * draw).to(like.device)


def normal(shape: tuple[int, ...], gen: torch.Generator, like: Tensor) -> Tensor:
    """Standard normal numbers with ``like``'s dtype and device."""
    return torch.randn(shape, generator=gen, device=gen.device, dtype=like.dtype).to(like.device)


def poisson(rates: Tensor, gen: torch.Generator) -> Tensor:
    """Poisson counts for ``rates`` (drawn on the generator's device)."""
    return torch.poisson(rates.to(gen.device), generator=gen).to(rates.device)


# ---- filtering ---------------------------------------------------------------------------------------------
def reflect_or_replicate(x: Tensor, kernel_size: int) -> str:
    """'reflect' (OpenCV's default border) when the image is large enough for it, else 'replicate'."""
    return "reflect" if min(x.shape[-2:]) > kernel_size // 2 else "replicate"


def skimage_gaussian(x: Tensor, sigma: float) -> Tensor:
    """Gaussian blur sized like ``skimage.filters.gaussian``: radius int(4 sigma + 0.5), edge pixels repeated.

    A radius of 0 (sigma < 0.125) is the identity, as in skimage.
    """
    radius = int(4 * sigma + 0.5)
    if radius == 0:
        return x
    size = 2 * radius + 1
    return kornia.filters.gaussian_blur2d(x, (size, size), (sigma, sigma), border_type="replicate")


def ray_kernels(weights: Tensor, angles_deg: Tensor) -> Tensor:
    """(B, K, K) correlation kernels: tap i of ``weights`` (T,) at offset round(i (cos a, sin a)) from the centre.

    With ``kornia.filters.filter2d`` (a correlation) each output pixel becomes the weighted sum of the pixels along
    the ray from it at angle a (degrees, x to the right, y down), as ImageMagick's MotionBlurImage does.
    """
    taps = weights.numel()
    size, centre = 2 * taps - 1, taps - 1
    steps = torch.arange(taps, device=weights.device, dtype=weights.dtype)
    radians = torch.deg2rad(angles_deg.to(weights))[:, None]
    # ceil(v - 0.5) rounds halves down, like ImageMagick's offsets
    dx = torch.ceil(steps * torch.cos(radians) - 0.5).long()
    dy = torch.ceil(steps * torch.sin(radians) - 0.5).long()
    flat = (centre + dy) * size + (centre + dx)
    kernels = torch.zeros(angles_deg.numel(), size * size, device=weights.device, dtype=weights.dtype)
    kernels.scatter_add_(1, flat, weights.expand_as(flat).contiguous())
    return kernels.view(-1, size, size)


def motion_blur(x: Tensor, radius: float, sigma: float, angles_deg: Tensor) -> Tensor:
    """ImageMagick-style motion blur: a one-sided Gaussian-weighted streak of 2 ceil(radius) + 1 taps per sample.

    kornia's ``motion_blur`` draws a centred line with linear weights and no sigma, so it cannot follow the
    (radius, sigma) table; the streak is built here and applied with ``kornia.filters.filter2d``. Edge pixels are
    repeated (ImageMagick's default edge virtual pixels), which also works for images smaller than the kernel.
    """
    steps = torch.arange(2 * math.ceil(radius) + 1, device=x.device, dtype=x.dtype)
    weights = torch.exp(-(steps**2) / (2 * sigma**2))
    kernels = ray_kernels(weights / weights.sum(), angles_deg)
    return kornia.filters.filter2d(x, kernels, border_type="replicate")


def line_kernels(length: int, angles_deg: Tensor, like: Tensor) -> Tensor:
    """(B, K, K) kernels of a centred line of ``length`` equal taps (sum 1) at each angle."""
    half = (length - 1) / 2
    offsets = torch.linspace(-half, half, length, device=like.device, dtype=like.dtype)
    radians = torch.deg2rad(angles_deg.to(like))[:, None]
    size = 2 * math.ceil(half) + 1
    dx = torch.round(offsets * torch.cos(radians)).long() + size // 2
    dy = torch.round(offsets * torch.sin(radians)).long() + size // 2
    kernels = torch.zeros(angles_deg.numel(), size * size, device=like.device, dtype=like.dtype)
    kernels.scatter_add_(1, dy * size + dx, torch.full_like(dx, 1, dtype=like.dtype) / length)
    return kernels.view(-1, size, size)


# ---- geometry ----------------------------------------------------------------------------------------------
def _zoom_axis(size: int, factor: float) -> tuple[float, float]:
    """(scale, offset) such that output pixel p samples input pixel offset + scale * p along one axis.

    Reproduces the original ``clipped_zoom``: crop ceil(size / factor) pixels starting at (size - crop) // 2,
    zoom them with ``scipy.ndimage.zoom`` (order 1: end pixel centres aligned, output length round(crop * factor)),
    and keep ``size`` pixels starting at (length - size) // 2. The integer crops make small zooms slightly
    off-centre (on 32 px, factors up to about 1.06 are anchored at the top-left pixel), which this keeps.
    """
    crop = math.ceil(size / factor)
    zoomed = round(crop * factor)
    if size == 1 or zoomed == 1:
        return 0.0, float((size - crop) // 2)
    scale = (crop - 1) / (zoomed - 1)
    return scale, (size - crop) // 2 + (zoomed - size) // 2 * scale


def clipped_zoom(x: Tensor, factor: float) -> Tensor:
    """Zoom into the image by ``factor`` >= 1 keeping its size, as the original (kornia.geometry.transform.remap).

    Height and width are zoomed independently by the same factor (the original handles square images only).
    """
    if factor == 1:
        return x
    height, width = x.shape[-2:]
    (sy, oy), (sx, ox) = _zoom_axis(height, factor), _zoom_axis(width, factor)
    rows = oy + sy * torch.arange(height, device=x.device, dtype=x.dtype)
    cols = ox + sx * torch.arange(width, device=x.device, dtype=x.dtype)
    map_y = rows[:, None].expand(height, width).expand(x.shape[0], -1, -1)
    map_x = cols[None, :].expand(height, width).expand(x.shape[0], -1, -1)
    return kornia.geometry.transform.remap(x, map_x, map_y, padding_mode="border", align_corners=True)


def box_matrix(n_in: int, n_out: int, like: Tensor) -> Tensor:
    """(n_out, n_in) row-normalised weights of a box filter resampling n_in samples to n_out.

    Follows PIL's BOX resampling: output sample i averages the input samples whose centres fall in its footprint
    [i, i + 1) * n_in / n_out, and when upsampling copies the input sample under its centre.
    """
    ratio = n_in / n_out
    width = max(ratio, 1.0)
    centres = (torch.arange(n_out, device=like.device, dtype=torch.float64) + 0.5) * ratio
    inputs = torch.arange(n_in, device=like.device, dtype=torch.float64) + 0.5
    offset = (inputs[None, :] - centres[:, None]) / width
    weights = ((offset >= -0.5) & (offset < 0.5)).to(torch.float64)
    return (weights / weights.sum(1, keepdim=True)).to(like.dtype)


def box_resize(x: Tensor, height: int, width: int) -> Tensor:
    """Separable PIL-style BOX resize of (B, C, H, W) to (B, C, height, width)."""
    rows = box_matrix(x.shape[-2], height, x)
    cols = box_matrix(x.shape[-1], width, x)
    return torch.einsum("ih,bchw,jw->bcij", rows, x, cols)


# ---- the plasma fractal (fog) ------------------------------------------------------------------------------
def plasma_fractal(batch: int, size: int, decay: float, gen: torch.Generator, like: Tensor) -> Tensor:
    """(batch, size, size) periodic diamond-square height maps in [0, 1]; ``size`` must be a power of two.

    As in the original, the first midpoints are perturbed by up to 100**2 and each halving of the step divides the
    perturbation scale (100) by ``decay``, so a smaller decay keeps more fine detail.
    """
    heights = torch.zeros(batch, size, size, device=like.device, dtype=like.dtype)
    step, wobble = size, 100.0

    def jitter(target: Tensor) -> Tensor:
        return uniform(tuple(target.shape), -wobble * wobble, wobble * wobble, gen, like)

    while step >= 2:
        half = step // 2
        corners = heights[:, ::step, ::step]
        square = corners + corners.roll(-1, 1)
        square = square + square.roll(-1, 2)
        heights[:, half::step, half::step] = square / 4 + jitter(corners)
        centres = heights[:, half::step, half::step]
        # edge midpoints: two corners along the edge, two square centres across it (wrapping around)
        top = corners + corners.roll(-1, 2) + centres + centres.roll(1, 1)
        heights[:, ::step, half::step] = top / 4 + jitter(top)
        left = corners + corners.roll(-1, 1) + centres + centres.roll(1, 2)
        heights[:, half::step, ::step] = left / 4 + jitter(left)
        step, wobble = half, wobble / decay
    low = heights.amin(dim=(1, 2), keepdim=True)
    span = (heights.amax(dim=(1, 2), keepdim=True) - low).clamp_min(torch.finfo(like.dtype).tiny)
    return (heights - low) / span


def next_power_of_two(n: int) -> int:
    return 1 << max(1, math.ceil(math.log2(max(n, 2))))
