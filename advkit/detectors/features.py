"""Feature collection for detectors: layer outputs through hooks that are always removed, and model fingerprints.

    >>> from advkit.models import ModelWrapper, Preprocessing, create_architecture
    >>> model = ModelWrapper(create_architecture("small-cnn", in_channels=1, input_size=8), Preprocessing())
    >>> feats, logits = layer_features(model, ["block1", "block2"], torch.rand(3, 1, 8, 8))
    >>> {k: tuple(v.shape) for k, v in feats.items()}, tuple(logits.shape)
    ({'block1': (3, 32, 4, 4), 'block2': (3, 64, 4, 4)}, (3, 10))
    >>> len(model_fingerprint(model))
    64
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import torch

from advkit.errors import DetectorError
from advkit.models import ModelWrapper
from advkit.models.hooks import capture


def layer_features(model: ModelWrapper, layers: Sequence[str], x: torch.Tensor, *, grad: bool = False
                   ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Outputs of ``layers`` (each (B, C, H, W); flat (B, D) outputs become (B, D, 1, 1)) and logits (B, K).

    ``x`` is (B, C, H, W) in [0, 1] pixel space (the wrapper normalises it). Without ``grad`` the pass runs under
    ``torch.no_grad``; with it the features stay attached to ``x`` (adaptive attacks differentiate through them).
    Hooks are removed on exit, even on error.
    """
    with torch.set_grad_enabled(grad), capture(model.net, list(layers), detach=not grad) as feats:
        logits = model.logits(x)
    missing = [name for name in layers if name not in feats]
    if missing:
        raise DetectorError(f"layer(s) {', '.join(missing)} produced no tensor output in the forward pass")
    return {name: _as_map(feats[name]) for name in layers}, logits


def _as_map(t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 2:
        return t[:, :, None, None]  # (B, D) -> (B, D, 1, 1)
    if t.dim() != 4:
        raise DetectorError(f"a tapped layer produced shape {tuple(t.shape)}; detectors need (B, C, H, W) or (B, D)")
    return t


def model_fingerprint(model: ModelWrapper) -> str:
    """SHA-256 of the net's class, every weight and buffer (name, dtype, shape, bytes) and the preprocessing.

    Two models share a fingerprint only if they compute the same function on the same inputs.
    """
    h = hashlib.sha256()
    h.update(type(model.net).__name__.encode())
    pre = model.preprocessing
    h.update(json.dumps([pre.channels, list(pre.input_size) if pre.input_size else None, list(pre.mean),
                         list(pre.std)]).encode())
    for name, tensor in sorted(model.net.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
