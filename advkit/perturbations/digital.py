"""Digital corruptions of CIFAR-10-C (https://arxiv.org/abs/1903.12261): contrast, elastic transform, pixelate, JPEG.

Inputs are (B, C, H, W) float batches in [0, 1]. Three channels are RGB; any other channel count is a stack of
independent grey channels.
"""

from __future__ import annotations

import kornia
import torch
from torch import Tensor

from advkit.perturbations import _ops
from advkit.perturbations.base import DIGITAL, PERTURBATIONS, RANDOM
from advkit.perturbations.params import Contrast, ElasticTransform, JpegCompression, Pixelate


def _per_channel(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B * C, 1, H, W): each channel as its own grey image."""
    return x.reshape(-1, 1, *x.shape[-2:])


@PERTURBATIONS.register("contrast", tags=(DIGITAL,))
def contrast(x: Tensor, p: Contrast, gen: torch.Generator) -> Tensor:
    """Contrast: (x - mean) * factor + mean with each channel's own mean (kornia.enhance).

    kornia's adjust_contrast_with_mean_subtraction uses the luma mean on RGB input; applying it to each channel
    as a grey image gives the original's per-channel mean instead.
    """
    adjusted = kornia.enhance.adjust_contrast_with_mean_subtraction(_per_channel(x), p.factor)
    return adjusted.reshape(x.shape)


def random_affine(x: Tensor, jitter: float, gen: torch.Generator) -> Tensor:
    """Warp each image by the affine map moving three control points by up to ``jitter`` pixels.

    The points sit a third of the shorter side from the centre, as in the original; borders are reflected
    (kornia.geometry.transform.warp_affine).
    """
    batch, _, height, width = x.shape
    half = max(min(height, width) // 3, 1)
    cx, cy = float(width // 2), float(height // 2)
    src = torch.tensor(
        [[cx + half, cy + half], [cx + half, cy - half], [cx - half, cy - half]], device=x.device, dtype=x.dtype
    )
    dst = src + _ops.uniform((batch, 3, 2), -jitter, jitter, gen, x)
    system = torch.cat([src, torch.ones(3, 1, device=x.device, dtype=x.dtype)], dim=1)
    matrices = torch.linalg.solve(system, dst).transpose(1, 2)  # (B, 2, 3), forward map src -> dst
    return kornia.geometry.transform.warp_affine(x, matrices, (height, width), padding_mode="reflection")


@PERTURBATIONS.register("elastic_transform", tags=(DIGITAL, RANDOM))
def elastic_transform(x: Tensor, p: ElasticTransform, gen: torch.Generator) -> Tensor:
    """Random affine warp, then a smooth random displacement field (kornia warp_affine, elastic_transform2d).

    Sizes scale with the shorter side s (the original's fractions of IMSIZE): control-point jitter ``affine * s``,
    a field of uniform(-1, 1) noise smoothed by a Gaussian of sigma ``sigma * s`` (truncated at 3 sigma) and
    scaled by ``alpha * s`` pixels. Severity 1 has alpha = 0 (affine only), as in the original. kornia smooths the
    field with zero padding where the original reflects, so displacements fade slightly near the border.
    """
    x = random_affine(x, p.affine * min(x.shape[-2:]), gen)
    if p.alpha == 0:
        return x
    batch, _, height, width = x.shape
    side = min(height, width)
    sigma, alpha = p.sigma * side, p.alpha * side
    size = 2 * int(3 * sigma + 0.5) + 1
    noise = _ops.uniform((batch, 2, height, width), -1, 1, gen, x)
    # kornia displaces in grid units: one pixel is 2 / width horizontally and 2 / height vertically
    return kornia.geometry.transform.elastic_transform2d(
        x, noise, (size, size), (sigma, sigma), (2 * alpha / width, 2 * alpha / height), padding_mode="reflection"
    )


@PERTURBATIONS.register("pixelate", tags=(DIGITAL,))
def pixelate(x: Tensor, p: Pixelate, gen: torch.Generator) -> Tensor:
    """Pixelation: box-downsample each side by ``factor`` (int(side * factor) pixels), box-upsample back (torch).

    Reimplements PIL's BOX resampling (used by the original) as two small matrices, since kornia's resize has no
    box mode; unlike PIL it does not round to 8 bits between and after the passes.
    """
    height, width = x.shape[-2:]
    small = _ops.box_resize(x, max(1, int(height * p.factor)), max(1, int(width * p.factor)))
    return _ops.box_resize(small, height, width)


@PERTURBATIONS.register("jpeg_compression", tags=(DIGITAL,))
def jpeg_compression(x: Tensor, p: JpegCompression, gen: torch.Generator) -> Tensor:
    """JPEG at ``quality`` (kornia.enhance.jpeg_codec_differentiable; grey channels coded as grey JPEGs).

    kornia's codec follows JPEG (IJG quality scaling, 8x8 DCT, 4:2:0 chroma) but rounds with the differentiable
    round(v) + (v - round(v))^3, so it is close to, not bit-equal with, PIL/libjpeg. It takes RGB only: a grey
    channel is coded as an RGB image with three equal channels, whose chroma is constant and survives exactly.
    """
    quality = torch.tensor([float(p.quality)], device=x.device, dtype=x.dtype)
    if x.shape[1] == 3:
        return kornia.enhance.jpeg_codec_differentiable(x, quality)
    grey = _per_channel(x).expand(-1, 3, -1, -1)
    coded = kornia.enhance.jpeg_codec_differentiable(grey, quality)
    return coded.mean(dim=1).reshape(x.shape)
