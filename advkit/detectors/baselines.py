"""Baselines shown beside advkit's detector: Mahalanobis (Lee et al. 2018) and a MagNet-style input autoencoder.

Mahalanobis (https://arxiv.org/abs/1807.03888): per tapped layer, features are globally average-pooled to (C,);
class-conditional Gaussians share one (tied) covariance; the layer's score is the distance to the closest class
mean, ``min_k (f - mu_k)^T P (f - mu_k)`` (higher = more anomalous). Layers are combined by a sum of standardised
scores (unsupervised) or by logistic regression on adversarial data (supervised, in :mod:`advkit.detectors.evaluate`).
Differences from Lee et al.: no input pre-processing (noise magnitude 0), and the covariance is inverted with a
pseudo-inverse. MagNet (https://arxiv.org/abs/1705.09064): see :class:`advkit.detectors.autoencoders.InputAutoencoder`.

    >>> g = torch.Generator().manual_seed(0)
    >>> feats, labels = torch.randn(100, 4, generator=g), torch.arange(100) % 2
    >>> means, precision = fit_mahalanobis(feats, labels, 2)
    >>> tuple(means.shape), tuple(precision.shape)
    ((2, 4), (4, 4))
    >>> d = mahalanobis_score(torch.stack([means[0], means[0] + 10]), means, precision)
    >>> bool(d[0] < d[1])
    True
"""

from __future__ import annotations

import torch


def pooled(features: torch.Tensor) -> torch.Tensor:
    """Global average pool: (B, C, H, W) -> (B, C)."""
    return features.mean(dim=(2, 3))


def fit_mahalanobis(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means (K, C) and tied precision (C, C) from pooled clean features (N, C) and labels (N,).

    Classes absent from ``labels`` get an infinite mean, so they are never the closest class.
    """
    f = features.double()
    means = torch.full((num_classes, f.shape[1]), float("inf"), dtype=torch.float64)
    centred = torch.empty_like(f)
    for k in range(num_classes):
        mask = labels == k
        if bool(mask.any()):
            means[k] = f[mask].mean(0)
            centred[mask] = f[mask] - means[k]
    cov = centred.T @ centred / max(len(f), 1)
    return means.float(), torch.linalg.pinv(cov).float()


def mahalanobis_score(features: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """(B,) squared Mahalanobis distance of pooled features (B, C) to the closest class mean (differentiable)."""
    diff = features[:, None, :] - means[None, :, :]  # (B, K, C)
    finite = torch.isfinite(means).all(1)
    diff = diff[:, finite]
    dist = torch.einsum("bkc,cd,bkd->bk", diff, precision, diff)
    return dist.min(dim=1).values
