"""Severity ordering and agreement with the reference operations of the original CIFAR-10-C code."""

from __future__ import annotations

import colorsys
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import zoom as scipy_zoom

from advkit.perturbations import SEVERITY_PARAMS, corrupt, parameter_table
from advkit.perturbations import _ops
from advkit.perturbations.blur import defocus_kernel, local_shuffle
from advkit.rng import generator

DOCS = Path(__file__).resolve().parents[2] / "docs" / "perturbations.md"

# Mean |x' - x| grows strictly with severity for these (fixed image, fixed seed). Not for: glass_blur (severity 4
# trades blur for a second shuffle), elastic_transform (severity 1 has the largest affine jitter by the table),
# frost (the image weight drops while the frost weight stalls), snow (flake threshold and zoom are not monotone).
MONOTONE = [
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "zoom_blur", "fog", "brightness", "contrast",
    "pixelate", "jpeg_compression",
]  # fmt: skip


def mean_change(x: torch.Tensor, name: str) -> list[float]:
    return [(corrupt(x, name, s, generator=generator(0, "m")) - x).abs().mean().item() for s in range(1, 6)]


@pytest.mark.parametrize("shape", [(4, 3, 32, 32), (4, 1, 28, 28)], ids=["rgb32", "grey28"])
def test_severity_is_monotone_where_meaningful(shape: tuple[int, int, int, int], natural) -> None:
    x = natural(*shape)
    for name in MONOTONE:
        change = mean_change(x, name)
        assert all(b > a for a, b in zip(change, change[1:], strict=False)), (name, change)
    # motion_blur: severities 3 and 4 share sigma 2; radius 6 -> 8 only adds taps weighing < 1e-8.
    change = mean_change(x, "motion_blur")
    assert change[0] < change[1] < change[2] < change[4] and abs(change[3] - change[2]) < 1e-3 * change[2]


def test_parameter_table_in_the_docs_matches_the_code() -> None:
    assert parameter_table() in DOCS.read_text(encoding="utf-8")


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def photo(natural) -> np.ndarray:
    """One 32x32 RGB uint8 photo crop (H, W, 3)."""
    return np.round(natural(1, 3, 32, 32)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def test_pixelate_matches_pil_box_resampling(photo: np.ndarray) -> None:
    for severity, params in enumerate(SEVERITY_PARAMS["pixelate"], start=1):
        side = int(32 * params.factor)
        ref = Image.fromarray(photo).resize((side, side), Image.BOX).resize((32, 32), Image.BOX)
        ours = corrupt(to_tensor(photo), "pixelate", severity)
        assert (ours - to_tensor(np.asarray(ref))).abs().max() <= 1.01 / 255  # PIL rounds to 8 bits per pass


def test_jpeg_is_close_to_pil(photo: np.ndarray) -> None:
    for severity, params in enumerate(SEVERITY_PARAMS["jpeg_compression"], start=1):
        buffer = io.BytesIO()
        Image.fromarray(photo).save(buffer, "JPEG", quality=params.quality)
        ref = to_tensor(np.asarray(Image.open(buffer)))
        ours = corrupt(to_tensor(photo), "jpeg_compression", severity)
        # kornia's codec is an approximation: it differs from libjpeg by far less than JPEG's own error
        assert (ours - ref).abs().mean() < 0.5 * (ref - to_tensor(photo)).abs().mean()


def test_brightness_matches_hsv_value_shift(photo: np.ndarray) -> None:
    for severity, params in enumerate(SEVERITY_PARAMS["brightness"], start=1):
        ref = np.empty(photo.shape)
        for i, j in np.ndindex(32, 32):
            h, s, v = colorsys.rgb_to_hsv(*(photo[i, j] / 255))
            ref[i, j] = colorsys.hsv_to_rgb(h, s, min(v + params.delta, 1))
        ours = corrupt(to_tensor(photo), "brightness", severity)[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-5)
    grey = torch.full((1, 1, 4, 4), 0.9)
    torch.testing.assert_close(corrupt(grey, "brightness", 2), torch.full((1, 1, 4, 4), 1.0))


def test_contrast_scales_around_each_channel_mean(photo: np.ndarray) -> None:
    x = photo / 255
    mean = x.mean(axis=(0, 1), keepdims=True)
    ours = corrupt(to_tensor(photo), "contrast", 4)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, np.clip((x - mean) * 0.3 + mean, 0, 1), atol=1e-6)


def scipy_clipped_zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """The original's clipped zoom of a square (H, W, C) image, as a reference."""
    side = image.shape[0]
    crop = int(np.ceil(side / factor))
    top = (side - crop) // 2
    zoomed = scipy_zoom(image[top : top + crop, top : top + crop], (factor, factor, 1), order=1)
    trim = (zoomed.shape[0] - side) // 2
    return zoomed[trim : trim + side, trim : trim + side]


@pytest.mark.parametrize("factor", [1.03, 1.06, 1.13, 1.25, 1.75, 2.25])
def test_clipped_zoom_matches_scipy(photo: np.ndarray, factor: float) -> None:
    ours = _ops.clipped_zoom(to_tensor(photo).double(), factor)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, scipy_clipped_zoom(photo / 255, factor), atol=1e-6)


def test_defocus_kernels_at_cifar_radii() -> None:
    like = torch.zeros(1, dtype=torch.float64)
    one_pixel = defocus_kernel(0.3, 0.4, like)[0]
    cross = defocus_kernel(1, 0.2, like)[0]
    square = defocus_kernel(1.5, 0.1, like)[0]
    assert all(abs(k.sum().item() - 1) < 1e-9 for k in (one_pixel, cross, square))
    assert one_pixel[2, 2] > 0.8 and one_pixel[2, 3] == one_pixel[1, 2] > 0.03
    plus = torch.tensor([[0, 0.2, 0], [0.2, 0.2, 0.2], [0, 0.2, 0]], dtype=torch.float64)
    torch.testing.assert_close(cross[1:4, 1:4], plus, atol=1e-5, rtol=0)
    torch.testing.assert_close(square[2:5, 2:5], torch.full((3, 3), 1 / 9, dtype=torch.float64), atol=1e-6, rtol=0)


def test_motion_streak_points_along_the_angle() -> None:
    weights = torch.tensor([0.5, 0.3, 0.2])
    right, down = _ops.ray_kernels(weights, torch.tensor([0.0, 90.0]))
    assert torch.equal(right[2, 2:], weights) and right.sum() == 1
    assert torch.equal(down[2:, 2], weights)
    # a bright dot streaks towards the opposite side of the sampling ray
    dot = torch.zeros(1, 1, 9, 9)
    dot[0, 0, 4, 4] = 1
    blurred = _ops.motion_blur(dot, 6, 1, torch.tensor([0.0]))
    assert blurred[0, 0, 4, 4] > blurred[0, 0, 4, 3] > blurred[0, 0, 4, 2] > 0 and blurred[0, 0, 4, 5] == 0


def test_glass_shuffle_only_permutes_pixels() -> None:
    x = torch.rand(2, 3, 10, 13, generator=generator(0, "glass"))
    shuffled = local_shuffle(x, generator(0, "swap"))
    for b in range(2):  # the same multiset of (r, g, b) pixels: pixels move whole, none is duplicated or lost
        before = sorted(map(tuple, x[b].flatten(1).T.tolist()))
        after = sorted(map(tuple, shuffled[b].flatten(1).T.tolist()))
        assert before == after
    assert not torch.equal(shuffled, x)
    assert ((shuffled - x).abs().sum(1) > 0).float().mean() > 0.5  # most pixels moved


def test_plasma_fractal_range_and_periodicity() -> None:
    maps = _ops.plasma_fractal(3, 32, 2.0, generator(0, "plasma"), torch.zeros(1))
    assert maps.shape == (3, 32, 32)
    assert torch.allclose(maps.amin(dim=(1, 2)), torch.zeros(3))
    assert torch.allclose(maps.amax(dim=(1, 2)), torch.ones(3))
    # smooth: neighbouring values differ much less than random ones would
    assert (maps - maps.roll(1, 2)).abs().mean() < 0.1
