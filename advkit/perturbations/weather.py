"""Weather corruptions of CIFAR-10-C (https://arxiv.org/abs/1903.12261): snow, frost, fog and brightness.

Inputs are (B, C, H, W) float batches in [0, 1]. Three channels are RGB; any other channel count is a stack of
independent grey channels (a 1-channel IR image is one grey image). Snow, frost and fog layers are colourless and
added to every channel alike.
"""

from __future__ import annotations

import kornia
import torch
from torch import Tensor

from advkit.perturbations import _ops
from advkit.perturbations.base import PERTURBATIONS, RANDOM, WEATHER
from advkit.perturbations.params import Brightness, Fog, Frost, Snow

# Pale blue-white, the colour of the frost photographs the original overlays (an estimate, not measured).
FROST_TINT = (0.86, 0.93, 1.0)


def _grey(x: Tensor) -> Tensor:
    """Luma (ITU-R BT.601, as OpenCV's RGB2GRAY) of RGB batches; other channel counts are grey already."""
    return kornia.color.rgb_to_grayscale(x) if x.shape[1] == 3 else x


@PERTURBATIONS.register("snow", tags=(WEATHER, RANDOM))
def snow(x: Tensor, p: Snow, gen: torch.Generator) -> Tensor:
    """Falling snow: thresholded Gaussian flakes streaked by motion blur over a whitened image (torch/kornia ops).

    As the original: a N(mean, std) layer, zoomed in (kornia.geometry.transform.remap), values below
    ``threshold`` removed, streaked by the ImageMagick-style motion blur at a random angle in [-135, -45) degrees
    (mostly vertical), then added twice (once rotated by 180 degrees) to the image blended with max(image,
    1.5 grey + 0.5). Unlike the original, the layer is not rounded to 8 bits between steps.
    """
    batch, _, height, width = x.shape
    layer = p.mean + p.std * _ops.normal((batch, 1, height, width), gen, x)
    layer = _ops.clipped_zoom(layer, p.zoom)
    layer = torch.where(layer < p.threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    angles = _ops.uniform((batch,), -135, -45, gen, x)
    layer = _ops.motion_blur(layer, p.blur_radius, p.blur_sigma, angles)
    whitened = p.blend * x + (1 - p.blend) * torch.maximum(x, _grey(x) * 1.5 + 0.5)
    return whitened + layer + layer.flip(-2, -1)


def _stretch(t: Tensor) -> Tensor:
    """Each image of (B, 1, H, W) mapped linearly onto [0, 1]."""
    low = t.amin(dim=(1, 2, 3), keepdim=True)
    span = (t.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-12)
    return (t - low) / span


def frost_texture(batch: int, height: int, width: int, gen: torch.Generator, like: Tensor) -> Tensor:
    """(B, 1, H, W) procedural frost in [0, 1]: a soft haze plus straight ice needles in three directions.

    The original overlays crops of six frost photographs; those textures are not bundled, so this one is
    synthesised from seeded noise. Haze: white noise blurred over a tenth of the shorter side. Needles: about
    H * W / (3 * side) random seeds per direction streaked into lines a quarter of the shorter side (side) long,
    in three random directions per image. The mix (mean about 0.45) is a visual estimate of the photographs.
    """
    side = min(height, width)
    shape = (batch, 1, height, width)
    haze_sigma = max(side / 10, 0.5)
    haze_size = 2 * int(3 * haze_sigma + 0.5) + 1
    haze = kornia.filters.gaussian_blur2d(
        _ops.uniform(shape, 0, 1, gen, like), (haze_size, haze_size), (haze_sigma, haze_sigma), border_type="replicate"
    )
    needles = torch.zeros(shape, device=like.device, dtype=like.dtype)
    length = max(3, side // 4)
    density = 1 / (3 * side)  # needles cover about a quarter of the image per direction
    for _ in range(3):
        seeds = (_ops.uniform(shape, 0, 1, gen, like) < density) * _ops.uniform(shape, 0.5, 1, gen, like)
        kernels = _ops.line_kernels(length, _ops.uniform((batch,), 0, 180, gen, like), like)
        streaks = kornia.filters.filter2d(seeds, kernels, border_type="constant") * length
        needles = torch.maximum(needles, streaks.clamp(max=1))
    return _ops.skimage_gaussian(0.6 * _stretch(haze) + 0.7 * needles, 0.5).clamp(0, 1)


@PERTURBATIONS.register("frost", tags=(WEATHER, RANDOM))
def frost(x: Tensor, p: Frost, gen: torch.Generator) -> Tensor:
    """Frost on a window: image_weight * x + frost_weight * a procedural frost texture (torch/kornia ops).

    The texture is synthesised (see ``frost_texture``) instead of cropped from the original's frost photographs,
    and tinted pale blue on RGB images.
    """
    texture = frost_texture(x.shape[0], x.shape[2], x.shape[3], gen, x)
    if x.shape[1] == 3:
        texture = texture * torch.tensor(FROST_TINT, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return p.image_weight * x + p.frost_weight * texture


@PERTURBATIONS.register("fog", tags=(WEATHER, RANDOM))
def fog(x: Tensor, p: Fog, gen: torch.Generator) -> Tensor:
    """Fog: a diamond-square plasma fractal added to the image, rescaled to keep its maximum (torch ops).

    The fractal is made on the smallest power-of-two square covering the image (32 for CIFAR-10, as the
    original) and cropped to it.
    """
    batch, _, height, width = x.shape
    size = _ops.next_power_of_two(max(height, width))
    layer = _ops.plasma_fractal(batch, size, p.decay, gen, x)[:, None, :height, :width]
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + p.strength * layer) * peak / (peak + p.strength)


@PERTURBATIONS.register("brightness", tags=(WEATHER,))
def brightness(x: Tensor, p: Brightness, gen: torch.Generator) -> Tensor:
    """Brightness: ``delta`` added to the HSV value (kornia.color HSV conversions; grey: adjust_brightness).

    A grey pixel has saturation 0 and value equal to itself, so on 1-channel (and non-RGB) images this is
    kornia.enhance.adjust_brightness: ``delta`` added to each channel, clipped.
    """
    if x.shape[1] != 3:
        return kornia.enhance.adjust_brightness(x, p.delta)
    hsv = kornia.color.rgb_to_hsv(x)
    value = (hsv[:, 2:] + p.delta).clamp(0, 1)
    return kornia.color.hsv_to_rgb(torch.cat([hsv[:, :2], value], dim=1))
