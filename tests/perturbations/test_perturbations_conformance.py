"""Every registered corruption at every severity: shape, dtype, device, range, change, reproducibility, errors."""

from __future__ import annotations

import pytest
import torch

from advkit.errors import AdvkitError, SettingsError
from advkit.perturbations import (
    PERTURBATIONS,
    SEVERITY_PARAMS,
    corrupt,
    corrupt_samples,
    is_random,
    perturbation_names,
)
from advkit.rng import generator

NAMES = perturbation_names()
RANDOM = [name for name in NAMES if is_random(name)]
SHAPES = [(4, 3, 32, 32), (4, 1, 28, 28), (3, 3, 20, 36)]
# Corruptions that only move, average or rescale-around-the-mean pixel values: a constant image stays constant.
SPATIAL = ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "elastic_transform", "pixelate", "contrast"]


def test_registry_holds_exactly_the_15_cifar10c_corruptions() -> None:
    expected = [
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
        "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
    ]  # fmt: skip
    assert NAMES == expected == list(SEVERITY_PARAMS)
    assert PERTURBATIONS.names() == sorted(expected)
    assert all(entry.summary and len(entry.tags) >= 1 for entry in PERTURBATIONS.entries())
    assert all(len(rows) == 5 for rows in SEVERITY_PARAMS.values())
    assert set(RANDOM) == {
        "gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow", "frost", "fog",
        "elastic_transform",
    }  # fmt: skip


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", NAMES)
def test_conformance(name: str, shape: tuple[int, int, int, int], natural) -> None:
    x = natural(*shape)
    before = x.clone()
    for severity in range(1, 6):
        y = corrupt(x, name, severity, generator=generator(0, "a"))
        assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
        assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
        # On natural images every corruption changes the batch at every severity, mild ones included.
        assert not torch.equal(y, x), f"{name} severity {severity} left the image unchanged"
        assert torch.equal(y, corrupt(x, name, severity, generator=generator(0, "a")))
        if name in RANDOM:
            assert not torch.equal(y, corrupt(x, name, severity, generator=generator(1, "a")))
    assert torch.equal(x, before), "corrupt must not modify its input"


@pytest.mark.parametrize("name", NAMES)
def test_odd_shapes_and_dtypes(name: str) -> None:
    """Tiny images, 2 and 4 channels (independent grey channels) and float64/float16 keep shape and dtype."""
    for shape, dtype in [((2, 2, 3, 5), torch.float32), ((1, 4, 8, 8), torch.float64), ((2, 3, 16, 9), torch.float16)]:
        x = torch.rand(shape, generator=generator(0, "odd")).to(dtype)
        y = corrupt(x, name, 5, generator=generator(0, "b"))
        assert y.shape == x.shape and y.dtype == dtype
        assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    assert corrupt(torch.zeros(0, 3, 8, 8), name, 1).shape == (0, 3, 8, 8)


@pytest.mark.parametrize("name", SPATIAL)
def test_constant_image_is_left_unchanged_by_spatial_corruptions(name: str) -> None:
    x = torch.full((2, 3, 20, 24), 0.4)
    for severity in range(1, 6):
        torch.testing.assert_close(corrupt(x, name, severity, generator=generator(0, "c")), x, atol=1e-5, rtol=0)


def test_randomness_never_touches_the_global_rng(natural) -> None:
    x = natural(2, 3, 32, 32)
    state = torch.get_rng_state()
    for name in RANDOM:
        corrupt(x, name, 3, generator=generator(0, "g"))
        corrupt(x, name, 3)
    assert torch.equal(state, torch.get_rng_state())


def test_same_generator_state_same_output_and_the_generator_advances(natural) -> None:
    x = natural(2, 3, 32, 32)
    gen = generator(0, "state")
    saved = gen.get_state()
    first = corrupt(x, "snow", 4, generator=gen)
    second = corrupt(x, "snow", 4, generator=gen)  # advanced: new draws
    gen.set_state(saved)
    assert torch.equal(first, corrupt(x, "snow", 4, generator=gen)) and not torch.equal(first, second)
    # without a generator a fixed one is used: calls repeat
    assert torch.equal(corrupt(x, "fog", 2), corrupt(x, "fog", 2))


def test_corrupt_samples_does_not_depend_on_the_batch(natural) -> None:
    x = natural(4, 3, 32, 32)
    whole = corrupt_samples(x, "gaussian_noise", 2, seed=3, indices=[10, 11, 12, 13])
    alone = corrupt_samples(x[2:3], "gaussian_noise", 2, seed=3, indices=[12])
    assert torch.equal(whole[2:3], alone)
    with pytest.raises(SettingsError, match="one index per sample"):
        corrupt_samples(x, "gaussian_noise", 2, seed=3, indices=[1])


@pytest.mark.parametrize("severity", [0, 6, -1, 2.0, True, "3", None])
def test_bad_severity_is_a_settings_error(severity: object) -> None:
    with pytest.raises(SettingsError, match="severity must be an integer from 1 to 5"):
        corrupt(torch.rand(1, 3, 8, 8), "contrast", severity)  # type: ignore[arg-type]


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(AdvkitError, match=r"unknown perturbation 'motion-blur'; did you mean motion_blur"):
        corrupt(torch.rand(1, 3, 8, 8), "motion-blur", 1)
    with pytest.raises(AdvkitError, match="choose from"):
        corrupt(torch.rand(1, 3, 8, 8), "xyzzy", 1)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.rand(3, 8, 8), r"\(B, C, H, W\) batch"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "float images"),
        (torch.full((1, 3, 8, 8), 2.0), r"in \[0, 1\], got values in \[2, 2\]"),
        (torch.full((1, 3, 8, 8), float("nan")), r"in \[0, 1\]"),
    ],
)
def test_bad_images_are_user_errors(x: torch.Tensor, message: str) -> None:
    with pytest.raises(AdvkitError, match=message):
        corrupt(x, "brightness", 1)


def test_bad_generator_type() -> None:
    with pytest.raises(SettingsError, match="torch.Generator"):
        corrupt(torch.rand(1, 3, 8, 8), "fog", 1, generator=0)  # type: ignore[arg-type]
