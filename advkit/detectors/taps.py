"""Layer taps for detectors: default layers per architecture and checked layer names.

Wojcik et al. (https://arxiv.org/abs/2006.10013) tap the stem and every stage output of the classifier. advkit's
defaults follow that rule per architecture; any other layer listed by ``advkit models info`` can be named.

    >>> from advkit.models.architectures import create_architecture
    >>> net = create_architecture("small-cnn", num_classes=10, in_channels=1, input_size=28)
    >>> default_layers(net, (1, 28, 28))
    ['block1', 'block2']
    >>> layer_shapes(net, ["block2"], (1, 28, 28))
    {'block2': (64, 7, 7)}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from advkit.errors import DetectorError
from advkit.models.hooks import capture
from advkit.models.wrapper import deployed
from advkit.registry import suggest


def default_layers(net: nn.Module, input_shape: tuple[int, ...] | None) -> list[str]:
    """The stem and each conv-stage output of ``net`` for (C, H, W) inputs (``advkit detect fit`` without ``--layers``).

    Known architectures: advkit's ``small-cnn`` (its two conv blocks: the first is also the stem), the CIFAR
    ResNets (``stem``, ``layers.i``), advkit's VGGs (each max-pool output), torchvision ResNets (``relu``,
    ``layer1``..``layer4``). Anything else: the top-level children whose output is a (C, H, W) map with H, W > 1.
    Fully connected features are left out: they carried no signal in advkit's prototype. With ``input_shape`` None
    only the known architectures have defaults (a DetectorError otherwise).
    """
    from advkit.models.architectures import VGG, CifarResNet, SmallCNN

    if isinstance(net, SmallCNN):
        return ["block1", "block2"]
    if isinstance(net, CifarResNet):
        return ["stem", *(f"layers.{i}" for i in range(len(net.layers)))]
    if isinstance(net, VGG):
        return [f"features.{i}" for i, m in enumerate(net.features) if isinstance(m, nn.MaxPool2d)] or ["features"]
    children = [name for name, _ in net.named_children()]
    if {"conv1", "relu", "layer1", "layer4"} <= set(children):  # torchvision ResNet family
        return ["relu", "layer1", "layer2", "layer3", "layer4"]
    shapes = _output_shapes(net, children, input_shape) if input_shape is not None else {}
    chosen = [n for n in children if len(shapes.get(n, ())) == 3 and min(shapes[n][1:]) > 1]
    if not chosen:
        raise DetectorError("cannot guess which layers to tap in this model: name them with --layers (see advkit models info)")
    return chosen


def check_layer_names(net: nn.Module, names: Sequence[str]) -> list[str]:
    """``names`` deduplicated in order; a DetectorError with close matches for a name the model lacks."""
    available = [n for n, _ in net.named_modules() if n]
    for name in names:
        if name not in available:
            raise DetectorError(f"the model has no layer {name!r}{suggest(name, available)} (see advkit models info)")
    if not names:
        raise DetectorError("no layers to tap: name at least one with --layers")
    return list(dict.fromkeys(names))


def layer_shapes(net: nn.Module, names: Sequence[str], input_shape: tuple[int, ...]) -> dict[str, tuple[int, int, int]]:
    """Output shape (C, H, W) of each named layer for one (C, H, W) input; flat (D,) features become (D, 1, 1)."""
    names = check_layer_names(net, names)
    shapes = _output_shapes(net, names, input_shape)
    result: dict[str, tuple[int, int, int]] = {}
    for name in names:
        shape = shapes.get(name)
        if shape is None:
            raise DetectorError(f"layer {name!r} produced no tensor output (it may not run in the forward pass)")
        if len(shape) == 1:
            shape = (shape[0], 1, 1)
        if len(shape) != 3:
            raise DetectorError(f"layer {name!r} outputs shape {shape}; detectors need (C, H, W) maps or (D,) vectors")
        result[name] = (int(shape[0]), int(shape[1]), int(shape[2]))
    return result


def _output_shapes(net: nn.Module, names: Sequence[str], input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    with torch.no_grad(), capture(net, list(names)) as feats, deployed(net):
        net(torch.zeros(1, *input_shape, device=device))
    return {k: tuple(v.shape[1:]) for k, v in feats.items()}
