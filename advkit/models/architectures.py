"""Architecture registry: small classifiers trained from scratch, plus torchvision's when it imports.

Every factory takes ``num_classes``, ``in_channels`` and ``input_size`` (side in pixels) and returns an
``nn.Module`` mapping (B, in_channels, input_size, input_size) normalised images to (B, num_classes) logits.

    >>> net = create_architecture("small-cnn", num_classes=10, in_channels=1, input_size=28)
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advkit.errors import CheckpointError, SettingsError
from advkit.registry import Registry, check_settings

ARCHITECTURES: Registry[nn.Module] = Registry("architecture")


def create_architecture(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered architecture (``advkit list models``); an unknown setting, or a ``num_classes``,
    ``in_channels`` or ``input_size`` that is not a positive int (``input_size``: or a pair of them), is a
    one-line SettingsError (a ValueError), not an error from deep inside torch."""
    _register_torchvision()
    check_settings(ARCHITECTURES.entry(name).factory, kwargs, name)
    for key in ("num_classes", "in_channels"):
        if kwargs.get(key) is not None and not _positive_int(kwargs[key]):
            raise SettingsError(f"{name}: {key} must be an int >= 1, got {kwargs[key]!r}")
    size = kwargs.get("input_size")
    if size is not None and not (_positive_int(size) or (isinstance(size, (list, tuple)) and len(size) == 2
                                                           and all(_positive_int(s) for s in size))):
        raise SettingsError(f"{name}: input_size must be an int >= 1 or a [height, width] pair of them, got {size!r}")
    return ARCHITECTURES.create(name, **kwargs)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def architecture_names() -> list[str]:
    _register_torchvision()
    return ARCHITECTURES.names()


def _conv_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Two conv blocks (32, 64 channels) and a 128-unit head, for 8-32 px inputs (digits, MNIST, CIFAR).

    The second block pools only when the input is at least 16 px, so 8x8 digits keep a 4x4 map.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int | tuple[int, int] = 28) -> None:
        super().__init__()
        h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
        if not (8 <= h <= 64 and 8 <= w <= 64):
            raise ValueError(f"small-cnn takes 8-64 px inputs, got input_size={input_size}")
        second_pool = min(h, w) >= 16
        div = 4 if second_pool else 2
        self.block1 = _conv_block(in_channels, 32, pool=True)
        self.block2 = _conv_block(32, 64, pool=second_pool)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * (h // div) * (w // div), 128), nn.ReLU(inplace=True))
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(self.block2(self.block1(x))))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for small images: 3x3 stem without max-pool, stages of BasicBlocks, global average pool."""

    def __init__(self, widths: list[int], depths: list[int], num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages: list[nn.Module] = []
        c_in = widths[0]
        for i, (width, depth) in enumerate(zip(widths, depths)):
            blocks = [BasicBlock(c_in if j == 0 else width, width, 2 if (i > 0 and j == 0) else 1) for j in range(depth)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.layers = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.layers:
            x = stage(x)
        return self.fc(torch.flatten(self.pool(x), 1))  # (B, C, 1, 1) -> (B, C)


class VGG(nn.Module):
    """VGG with batch norm for small images: max-pools are skipped once the map is 1 px, then global pooling."""

    def __init__(self, config: list[int | str], num_classes: int, in_channels: int, input_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, side = in_channels, input_size
        for item in config:
            if item == "M":
                if side >= 2:
                    layers.append(nn.MaxPool2d(2))
                    side //= 2
                continue
            layers += [nn.Conv2d(c_in, int(item), 3, padding=1), nn.BatchNorm2d(int(item)), nn.ReLU(inplace=True)]
            c_in = int(item)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))  # (B, C, 1, 1) -> (B, C)


@ARCHITECTURES.register("small-cnn")
def small_cnn(num_classes: int = 10, in_channels: int = 1, input_size: int | tuple[int, int] = 28) -> nn.Module:
    """Small 4-conv CNN for 8-64 px inputs (digits, MNIST, synthetic RGB-IR); trains in seconds on a CPU."""
    return SmallCNN(num_classes, in_channels, input_size)


@ARCHITECTURES.register("resnet20")
def resnet20(num_classes: int = 10, in_channels: int = 3, input_size: int | tuple[int, int] = 32) -> nn.Module:
    """ResNet-20 for 32 px CIFAR-style inputs (He et al. 2016, 3x3 blocks of 16/32/64 channels)."""
    del input_size  # global pooling makes it size-agnostic
    return CifarResNet([16, 32, 64], [3, 3, 3], num_classes, in_channels)


@ARCHITECTURES.register("resnet18")
def resnet18(num_classes: int = 10, in_channels: int = 3, input_size: int | tuple[int, int] = 32) -> nn.Module:
    """ResNet-18 with a CIFAR-style 3x3 stem (no max-pool), as used in the Pixle paper's CIFAR-10 runs."""
    del input_size
    return CifarResNet([64, 128, 256, 512], [2, 2, 2, 2], num_classes, in_channels)


@ARCHITECTURES.register("vgg11")
def vgg11(num_classes: int = 10, in_channels: int = 3, input_size: int | tuple[int, int] = 32) -> nn.Module:
    """VGG-11 with batch norm for small inputs, as used in the Pixle paper's CIFAR-10 runs."""
    side = input_size if isinstance(input_size, int) else min(input_size)  # pools stop at 1 px on the shorter side
    return VGG([64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"], num_classes, in_channels, side)


_TORCHVISION_MODELS = ("resnet18", "resnet50", "resnext50_32x4d", "vgg11_bn", "vgg16_bn", "convnext_tiny",
                       "mobilenet_v3_small", "efficientnet_b0")


def _register_torchvision() -> None:
    """Register ``tv-<name>`` entries when torchvision imports cleanly (it often does not beside a CPU torch)."""
    if "tv-resnet18" in ARCHITECTURES or getattr(_register_torchvision, "tried", False):
        return
    _register_torchvision.tried = True  # type: ignore[attr-defined]
    try:
        import torchvision.models as tvm
    except Exception:  # a broken torchvision raises RuntimeError, not ImportError
        return
    for name in _TORCHVISION_MODELS:
        ARCHITECTURES.add(f"tv-{name}", _torchvision_factory(tvm, name), tags=("torchvision",))


def _torchvision_factory(tvm: Any, name: str) -> Any:
    def build(num_classes: int = 1000, in_channels: int = 3, input_size: int | tuple[int, int] = 224) -> nn.Module:
        del input_size
        if in_channels != 3:
            raise CheckpointError(f"tv-{name} takes 3-channel inputs; 1-channel images are replicated by the wrapper")
        return tvm.get_model(name, weights=None, num_classes=num_classes)

    build.__doc__ = f"torchvision {name} (random init; load weights from a checkpoint)."
    return build
