"""Per-layer autoencoders of Wojcik et al. (https://arxiv.org/abs/2006.10013, code: gmum/adversarial_examples_ae_layers).

Architecture rule (methods.md 3(g), ``build_ae_for_size``): three encoder convs with ``filters`` channels each; the
last ``l = min(floor(log2(min(H, W))), 3)`` are 4x4 stride 2 pad 1, the first ``3 - l`` are 3x3 stride 1 pad 1;
ReLU after each; flatten; Linear to the latent (64). The decoder mirrors it: Linear + ReLU, ConvTranspose stack
back to C channels. Three kinds:

- ``wae`` (default): WAE-MMD, loss = MSE + lambda * MMD^2(z, z_prior), inverse-multiquadric kernel
  ``k(a, b) = c / (c + |a - b|^2)`` with ``c = 2 * latent * z_var``, lambda 1e-4, prior N(0, 2 I);
- ``vae``: loss = MSE + lambda * KL(q(z|x) || N(0, I)), lambda 1e-7; ``z`` is the posterior mean when scoring;
- ``ae``: plain MSE.

Deliberate differences: the default width is 32 filters, not 128 (4,000 MNIST images must train in under a
minute on a CPU; pass ``filters=128`` for the paper's width); odd sizes are mirrored exactly with
``output_padding``; the last activation is ReLU when the layer's features are non-negative and identity
otherwise (the reference uses tanh for C <= 3, which assumes features in [-1, 1]).

    >>> ae = build_autoencoder((32, 14, 14), kind="wae", filters=8, latent=16)
    >>> x = torch.rand(4, 32, 14, 14)
    >>> recon, z = ae(x)
    >>> tuple(recon.shape), tuple(z.shape)
    ((4, 32, 14, 14), (4, 16))
    >>> bool(ae.loss(x, torch.Generator().manual_seed(0)) > 0)
    True
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

KINDS = ("wae", "ae", "vae")
DEFAULT_LAMBDA = {"wae": 1e-4, "vae": 1e-7, "ae": 0.0}


class LayerAutoencoder(nn.Module):
    """A conv autoencoder for (B, C, H, W) feature maps of one layer (see the module docstring).

    Args:
        shape: (C, H, W) of the layer's output.
        kind: "wae", "ae" or "vae".
        filters: channels of each of the three encoder convs.
        latent: size of the code z.
        lam: weight of the MMD (wae) or KL (vae) term; None takes the paper's value.
        z_var: variance of the WAE's Gaussian prior.
        nonnegative: end the decoder with ReLU (features after a ReLU) instead of identity.
    """

    def __init__(self, shape: tuple[int, int, int], *, kind: str = "wae", filters: int = 32, latent: int = 64,
                 lam: float | None = None, z_var: float = 2.0, nonnegative: bool = True) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"autoencoder kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if filters < 1 or latent < 1:
            raise ValueError(f"filters and latent must be >= 1, got {filters} and {latent}")
        c, h, w = shape
        self.shape, self.kind, self.latent, self.z_var = (c, h, w), kind, latent, z_var
        self.lam = DEFAULT_LAMBDA[kind] if lam is None else lam
        self.nonnegative = nonnegative
        strided = min(int(math.floor(math.log2(max(min(h, w), 1)))), 3)
        specs = [(3, 1, 1)] * (3 - strided) + [(4, 2, 1)] * strided  # (kernel, stride, padding)
        sizes = [(h, w)]
        enc: list[nn.Module] = []
        c_in = c
        for k, s, p in specs:
            enc.append(nn.Conv2d(c_in, filters, k, s, p))
            c_in = filters
            hh, ww = sizes[-1]
            sizes.append(((hh + 2 * p - k) // s + 1, (ww + 2 * p - k) // s + 1))
        self.encoder = nn.ModuleList(enc)
        self.inner = (filters, *sizes[-1])
        flat = filters * sizes[-1][0] * sizes[-1][1]
        self.to_latent = nn.Linear(flat, 2 * latent if kind == "vae" else latent)
        self.from_latent = nn.Linear(latent, flat)
        dec: list[nn.Module] = []
        outs = [c] + [filters] * (len(specs) - 1)  # output channels of the mirrored layers, last one first
        for i in reversed(range(len(specs))):
            k, s, p = specs[i]
            hin, win = sizes[i + 1]
            ht, wt = sizes[i]
            pad_h = ht - ((hin - 1) * s - 2 * p + k)  # output_padding that restores odd sizes exactly
            pad_w = wt - ((win - 1) * s - 2 * p + k)
            dec.append(nn.ConvTranspose2d(filters, outs[i], k, s, p, output_padding=(pad_h, pad_w)))
        self.decoder = nn.ModuleList(dec)

    def encode_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean code (B, latent), log-variance (B, latent) for the VAE else None)."""
        for conv in self.encoder:
            x = torch.relu(conv(x))
        out = self.to_latent(x.flatten(1))  # (B, F, h, w) -> (B, F*h*w) -> (B, latent or 2*latent)
        if self.kind == "vae":
            mu, logvar = out.chunk(2, dim=1)
            return mu, logvar
        return out, None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Code z (B, latent) of features x (B, C, H, W); the posterior mean for the VAE."""
        return self.encode_stats(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction (B, C, H, W) of codes z (B, latent)."""
        x = torch.relu(self.from_latent(z)).view(-1, *self.inner)  # (B, F*h*w) -> (B, F, h, w)
        for i, deconv in enumerate(self.decoder):
            x = deconv(x)
            if i < len(self.decoder) - 1:
                x = torch.relu(x)
        return torch.relu(x) if self.nonnegative else x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction (B, C, H, W), code (B, latent)), deterministic (no sampling)."""
        z = self.encode(x)
        return self.decode(z), z

    def loss(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Training loss on a batch of features x (B, C, H, W); prior/posterior samples come from ``generator``."""
        mu, logvar = self.encode_stats(x)
        if logvar is not None:  # the VAE
            eps = torch.randn(mu.shape, generator=generator, device=mu.device)
            recon = self.decode(mu + eps * torch.exp(0.5 * logvar))
            kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1))
            return F.mse_loss(recon, x) + self.lam * kl
        recon = self.decode(mu)
        mse = F.mse_loss(recon, x)
        if self.kind == "ae" or len(x) < 2:
            return mse
        prior = torch.randn(mu.shape, generator=generator, device=mu.device) * math.sqrt(self.z_var)
        return mse + self.lam * mmd_imq(prior, mu, self.z_var)


def mmd_imq(a: torch.Tensor, b: torch.Tensor, z_var: float = 2.0) -> torch.Tensor:
    """Unbiased MMD^2 between samples a (m, d) and b (n, d) with the inverse-multiquadric kernel (c = 2 d z_var).

        >>> g = torch.Generator().manual_seed(0)
        >>> same = mmd_imq(torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g))
        >>> shifted = mmd_imq(torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g) + 2)
        >>> bool(abs(same) < 0.02 < shifted)
        True
    """
    c = 2.0 * a.shape[1] * z_var

    def k(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return c / (c + torch.cdist(x, y).pow(2))

    m, n = len(a), len(b)
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    return ((kaa.sum() - kaa.diagonal().sum()) / (m * (m - 1)) + (kbb.sum() - kbb.diagonal().sum()) / (n * (n - 1))
            - 2 * kab.sum() / (m * n))


def build_autoencoder(shape: tuple[int, int, int], *, kind: str = "wae", filters: int = 32, latent: int = 64,
                      lam: float | None = None, nonnegative: bool = True) -> LayerAutoencoder:
    """The autoencoder for one layer's (C, H, W) output (see :class:`LayerAutoencoder`)."""
    return LayerAutoencoder(shape, kind=kind, filters=filters, latent=latent, lam=lam, nonnegative=nonnegative)


class InputAutoencoder(nn.Module):
    """MagNet's detector autoencoder (Meng & Chen 2017, https://arxiv.org/abs/1705.09064) on (B, C, H, W) pixels in [0, 1].

    Conv 3x3 (3 filters) + sigmoid, average pool 2, conv + sigmoid, conv + sigmoid, upsample, conv + sigmoid,
    conv to C + sigmoid: MagNet's MNIST "detector I". The score is the mean absolute reconstruction error (p = 1).

        >>> ae = InputAutoencoder(1)
        >>> tuple(ae(torch.rand(2, 1, 28, 28)).shape)
        (2, 1, 28, 28)
    """

    def __init__(self, channels: int, filters: int = 3) -> None:
        super().__init__()
        self.enc1 = nn.Conv2d(channels, filters, 3, padding=1)
        self.enc2 = nn.Conv2d(filters, filters, 3, padding=1)
        self.dec1 = nn.Conv2d(filters, filters, 3, padding=1)
        self.dec2 = nn.Conv2d(filters, filters, 3, padding=1)
        self.out = nn.Conv2d(filters, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        h = torch.sigmoid(self.enc1(x))
        h = F.avg_pool2d(h, 2, ceil_mode=True)
        h = torch.sigmoid(self.enc2(h))
        h = torch.sigmoid(self.dec1(h))
        h = F.interpolate(h, size=size, mode="nearest")
        h = torch.sigmoid(self.dec2(h))
        return torch.sigmoid(self.out(h))

    def loss(self, x: torch.Tensor, generator: torch.Generator, noise: float = 0.1) -> torch.Tensor:
        """MagNet's training: reconstruct x from x + N(0, noise^2) clipped to [0, 1] (MSE)."""
        noisy = (x + noise * torch.randn(x.shape, generator=generator, device=x.device)).clamp(0, 1)
        return F.mse_loss(self(noisy), x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) mean |x - AE(x)|: higher means further from the clean-data manifold."""
        return (x - self(x)).abs().flatten(1).mean(1)
