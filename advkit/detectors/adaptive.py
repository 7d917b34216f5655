"""Adaptive check: PGD against the classifier and the detector together (Carlini & Wagner, https://arxiv.org/abs/1705.07263).

An oblivious attack ignores the detector; an adaptive one also lowers a differentiable proxy of the detector's
score, so the result shows what a detector is worth against an attacker who knows it. The proxy for the layer-wise
autoencoder detector (https://arxiv.org/abs/2006.10013) is the sum over layers of the standardised reconstruction
error plus the absolute standardised latent norm (and log-variance norm, for the VAE), with statistics of clean
training images; the attack maximises ``CE(f(x), y) - weight * proxy(x)`` with L-infinity PGD (sign steps, random
start, projection). The default step is Madry et al.'s ``2.5 * eps / steps`` (https://arxiv.org/abs/1706.06083),
so that any number of steps can cross the eps-ball.

    >>> from advkit.datasets import open_dataset
    >>> from advkit.detectors.detector import DetectorSettings, LayerwiseDetector
    >>> from advkit.models import ModelWrapper, Preprocessing, create_architecture
    >>> ds = open_dataset("digits")
    >>> model = ModelWrapper(create_architecture("small-cnn", in_channels=1, input_size=8), Preprocessing())
    >>> det = LayerwiseDetector.fit(model, ds, ds.indices("train")[:200], settings=DetectorSettings(epochs=1, filters=4, n_estimators=10))
    >>> x, y = ds.batch(ds.indices("test")[:4])
    >>> x_adv = adaptive_pgd(det, x, y, eps=0.1, steps=3, weight=1.0, generator=torch.Generator().manual_seed(0))
    >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6), tuple(detector_proxy(det, x_adv).shape), default_step(0.3, 40)
    (True, (4,), 0.01875)
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
from torch.nn import functional as F

from advkit.attacks.base import check_inputs, check_linf_budget
from advkit.attacks.base import madry_step as default_step
from advkit.detectors.detector import LayerwiseDetector, layer_stats
from advkit.detectors.features import layer_features
from advkit.models.wrapper import deployed


def _proxy_and_logits(det: LayerwiseDetector, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    feats, logits = layer_features(det.model, det.layers, x, grad=True)
    stats = {k: torch.as_tensor(v, dtype=x.dtype, device=x.device) for k, v in det.standardisation().items()}
    total = torch.zeros(len(x), dtype=x.dtype, device=x.device)
    for i, name in enumerate(det.layers):
        s = layer_stats(det.autoencoders[name], feats[name], det.norms[name])
        total = total + ((s.mse if det.settings.error == "mse" else s.rel_l1) - stats["err_mean"][i]) / stats["err_std"][i]
        total = total + ((s.znorm - stats["znorm_mean"][i]) / stats["znorm_std"][i]).abs()
        if det.scores_logvar:
            total = total + ((s.logvar - stats["logvar_mean"][i]) / stats["logvar_std"][i]).abs()
    return total, logits


def detector_proxy(det: LayerwiseDetector, x: torch.Tensor) -> torch.Tensor:
    """(B,) differentiable detector score of images x (B, C, H, W) in [0, 1]; higher = more anomalous."""
    return _proxy_and_logits(det, x)[0]


def adaptive_pgd(det: LayerwiseDetector, x: torch.Tensor, y: torch.Tensor, *, eps: float = 0.3, alpha: float | None = None,
                 steps: int = 40, weight: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """L-infinity PGD on ``CE - weight * detector_proxy``; returns (B, C, H, W) images in [0, 1] within ``eps`` of x.

    ``alpha`` is the step (default :func:`default_step`). ``weight`` 0 is plain (oblivious) PGD with the same
    budget, the control an adaptive result is read against: give both runs the same settings.
    """
    if eps < 0 or (alpha is not None and alpha <= 0) or steps < 1 or weight < 0:
        raise ValueError(f"need eps >= 0, alpha > 0, steps >= 1, weight >= 0; got {eps}, {alpha}, {steps}, {weight}")
    check_linf_budget("adaptive_pgd", "eps", eps)
    check_inputs(x, y, None)
    alpha = default_step(eps, steps) if alpha is None else alpha
    model = det.model
    x, y = x.detach().to(model.device), y.to(model.device, torch.long)
    start = (torch.rand(x.shape, generator=generator) * 2 - 1).to(x.device) * eps
    x_adv = (x + start).clamp(0, 1)
    with ExitStack() as frozen:  # the autoencoders as the classifier: no gradients left on their weights
        for ae in det.autoencoders.values():
            frozen.enter_context(deployed(ae))
        for _ in range(steps):
            x_adv = x_adv.detach().requires_grad_(True)
            proxy, logits = _proxy_and_logits(det, x_adv)
            objective = F.cross_entropy(logits, y, reduction="sum") - weight * proxy.sum()
            (grad,) = torch.autograd.grad(objective, x_adv)
            x_adv = x_adv.detach() + alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()
