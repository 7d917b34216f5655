"""The per-severity parameters of the 15 CIFAR-10-C corruptions: the one place they are written down.

Values follow ``make_cifar_c.py`` of https://github.com/hendrycks/robustness (Hendrycks & Dietterich, ICLR 2019,
https://arxiv.org/abs/1903.12261), the script that made CIFAR-10-C from the 32x32 CIFAR-10 test set. Unless a field
says otherwise, sizes are in pixels and were chosen for 32x32 images: they are applied unchanged to other sizes.
``docs/perturbations.md`` shows this table as rendered by ``parameter_table()`` (a test keeps the two equal).

    >>> SEVERITY_PARAMS["contrast"][4]
    Contrast(factor=0.15)
    >>> zoom_factors(SEVERITY_PARAMS["zoom_blur"][0])
    (1.0, 1.01, 1.02, 1.03, 1.04, 1.05, 1.06)
"""

from __future__ import annotations

from typing import Any, NamedTuple


class GaussianNoise(NamedTuple):
    std: float  # of the additive noise, in [0, 1] intensity units


class ShotNoise(NamedTuple):
    photons: float  # Poisson rate at intensity 1: fewer photons, more noise


class ImpulseNoise(NamedTuple):
    amount: float  # fraction of pixel values set to 0 or 1 (half each)


class DefocusBlur(NamedTuple):
    radius: float  # of the aliased disk kernel
    alias_sigma: float  # of the 3x3 Gaussian that smooths the disk


class GlassBlur(NamedTuple):
    sigma: float  # of the Gaussian blur before and after shuffling
    max_delta: int  # rounds of neighbour swaps per iteration (the original's swap distance)
    iterations: int


class MotionBlur(NamedTuple):
    radius: float  # the streak has 2 * ceil(radius) + 1 taps
    sigma: float  # of the one-sided Gaussian weighting the taps


class ZoomBlur(NamedTuple):
    step: float  # zoom factors are 1, 1 + step, ..., 1 + (n_zooms - 1) * step
    n_zooms: int


class Snow(NamedTuple):
    mean: float  # of the Gaussian snow layer
    std: float
    zoom: float  # centre zoom of the layer (bigger flakes)
    threshold: float  # layer values below it are no snow
    blur_radius: float  # motion blur of the flakes (as MotionBlur)
    blur_sigma: float
    blend: float  # weight of the image against its whitened version


class Frost(NamedTuple):
    image_weight: float
    frost_weight: float


class Fog(NamedTuple):
    strength: float  # weight of the plasma-fractal fog
    decay: float  # roughness decay per octave: smaller means rougher fog


class Brightness(NamedTuple):
    delta: float  # added to HSV value


class Contrast(NamedTuple):
    factor: float  # deviations from the per-channel mean are scaled by it


class ElasticTransform(NamedTuple):
    alpha: float  # displacement scale, as a fraction of the shorter side
    sigma: float  # smoothing of the displacement field, as a fraction of the shorter side
    affine: float  # random jitter of the affine control points, as a fraction of the shorter side


class Pixelate(NamedTuple):
    factor: float  # downsampling factor of each side before box upsampling back


class JpegCompression(NamedTuple):
    quality: int  # JPEG quality (IJG scale, 1..100)


# Benchmark order (noise, blur, weather, digital), as in the paper's tables.
SEVERITY_PARAMS: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": tuple(GaussianNoise(c) for c in (0.04, 0.06, 0.08, 0.09, 0.10)),
    "shot_noise": tuple(ShotNoise(c) for c in (500, 250, 100, 75, 50)),
    "impulse_noise": tuple(ImpulseNoise(c) for c in (0.01, 0.02, 0.03, 0.05, 0.07)),
    "defocus_blur": tuple(DefocusBlur(*c) for c in ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))),
    "glass_blur": tuple(GlassBlur(*c) for c in ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))),
    "motion_blur": tuple(MotionBlur(*c) for c in ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))),
    # The original uses np.arange(1, 1 + m, 0.01) with m = .06, .11, .16, .21, .26; float rounding makes the first
    # two include their end point, so the ranges hold 7, 12, 16, 21 and 26 zooms.
    "zoom_blur": tuple(ZoomBlur(0.01, n) for n in (7, 12, 16, 21, 26)),
    "snow": tuple(
        Snow(*c)
        for c in (
            (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
            (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
            (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
            (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
            (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
        )
    ),
    "frost": tuple(Frost(*c) for c in ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))),
    "fog": tuple(Fog(*c) for c in ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))),
    "brightness": tuple(Brightness(c) for c in (0.05, 0.1, 0.15, 0.2, 0.3)),
    "contrast": tuple(Contrast(c) for c in (0.75, 0.5, 0.4, 0.3, 0.15)),
    # The original writes these as IMSIZE * fraction with IMSIZE = 32.
    "elastic_transform": tuple(
        ElasticTransform(*c)
        for c in ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))
    ),
    "pixelate": tuple(Pixelate(c) for c in (0.95, 0.9, 0.85, 0.75, 0.65)),
    "jpeg_compression": tuple(JpegCompression(c) for c in (80, 65, 58, 50, 40)),
}

SEVERITIES = (1, 2, 3, 4, 5)


def zoom_factors(params: ZoomBlur) -> tuple[float, ...]:
    """The zoom factors of one zoom_blur severity, rounded to the step's precision."""
    return tuple(round(1 + k * params.step, 6) for k in range(params.n_zooms))


def _cell(params: Any) -> str:
    return ", ".join(f"{field}={value:g}" for field, value in zip(params._fields, params, strict=True))


def parameter_table() -> str:
    """The table as Markdown: one row per corruption, one column per severity."""
    lines = ["| corruption | 1 | 2 | 3 | 4 | 5 |", "|---|---|---|---|---|---|"]
    for name, rows in SEVERITY_PARAMS.items():
        lines.append(f"| `{name}` | " + " | ".join(_cell(p) for p in rows) + " |")
    return "\n".join(lines)
