"""Feature collection for detectors: layer outputs through hooks that are always removed.

    >>> from advkit.models import ModelWrapper, Preprocessing, create_architecture
    >>> model = ModelWrapper(create_architecture("small-cnn", in_channels=1, input_size=8), Preprocessing())
    >>> feats, logits = layer_features(model, ["block1", "block2"], torch.rand(3, 1, 8, 8))
    >>> {k: tuple(v.shape) for k, v in feats.items()}, tuple(logits.shape)
    ({'block1': (3, 32, 4, 4), 'block2': (3, 64, 4, 4)}, (3, 10))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from advkit.errors import DetectorError
from advkit.models import ModelWrapper
from advkit.models.hooks import capture


def layer_features(model: ModelWrapper, layers: Sequence[str], x: torch.Tensor, *, grad: bool = False
                   ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Outputs of ``layers`` (each (B, C, H, W); flat (B, D) outputs become (B, D, 1, 1)) and logits (B, K).

    ``x`` is (B, C, H, W) in [0, 1] pixel space (the wrapper normalises it). The net runs as deployed (eval mode,
    its weights taking no gradients: ``ModelWrapper.evaluating``). Without ``grad`` the pass runs under
    ``torch.no_grad``; with it the features stay attached to ``x`` (adaptive attacks differentiate through them).
    Hooks are removed on exit, even on error.
    """
    with torch.set_grad_enabled(grad), capture(model.net, list(layers), detach=not grad) as feats, model.evaluating():
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


