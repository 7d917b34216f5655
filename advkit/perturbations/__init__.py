"""Natural perturbations: the 15 CIFAR-10-C corruptions at 5 severities, computed on the fly with kornia and torch.

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations",
ICLR 2019, https://arxiv.org/abs/1903.12261. ``corrupt`` takes any (B, C, H, W) float batch in [0, 1] (any size;
3 channels are RGB, other counts are independent grey channels, e.g. 1-channel IR) and returns a batch of the same
shape, dtype and device in [0, 1]. Random corruptions draw only from the ``torch.Generator`` passed in, so the same
generator state gives the same output. ``load_cifar10c`` reads the published CIFAR-10-C arrays. Parameters per
severity are in ``advkit.perturbations.params`` and docs/perturbations.md.

    >>> import torch
    >>> from advkit.rng import generator
    >>> x = torch.linspace(0, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
    >>> y = corrupt(x, "gaussian_noise", 3, generator=generator(0, "corrupt"))
    >>> y.shape, y.dtype, bool(y.min() >= 0 and y.max() <= 1)
    (torch.Size([2, 3, 32, 32]), torch.float32, True)
    >>> bool(torch.equal(y, corrupt(x, "gaussian_noise", 3, generator=generator(0, "corrupt"))))
    True
    >>> perturbation_names()[:4]
    ['gaussian_noise', 'shot_noise', 'impulse_noise', 'defocus_blur']
    >>> corrupt(x, "gausian_noise", 3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    advkit.errors.AdvkitError: unknown perturbation 'gausian_noise'; did you mean gaussian_noise, ...?
"""

from __future__ import annotations

from advkit.perturbations import blur, digital, noise, weather  # noqa: F401  (they register the corruptions)
from advkit.perturbations.base import PERTURBATIONS, corrupt, corrupt_samples, is_random, perturbation_names
from advkit.perturbations.cifar10c import CIFAR10C_FILES, load_cifar10c
from advkit.perturbations.params import SEVERITY_PARAMS, parameter_table

__all__ = [
    "CIFAR10C_FILES",
    "PERTURBATIONS",
    "SEVERITY_PARAMS",
    "corrupt",
    "corrupt_samples",
    "is_random",
    "load_cifar10c",
    "parameter_table",
    "perturbation_names",
]
