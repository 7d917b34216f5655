"""Layer names usable as hook points, and feature capture with hooks that are always removed.

    >>> from advkit.models.architectures import create_architecture
    >>> net = create_architecture("small-cnn", num_classes=10, in_channels=1, input_size=8)
    >>> [row.name for row in layer_table(net, (1, 8, 8))][:3]
    ['block1', 'block1.0', 'block1.1']
    >>> with capture(net, ["block2"]) as features:
    ...     _ = net(torch.zeros(2, 1, 8, 8))
    >>> tuple(features["block2"].shape)
    (2, 64, 4, 4)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from advkit.errors import AdvkitError
from advkit.models.wrapper import deployed


@dataclass(frozen=True)
class LayerInfo:
    """One named submodule: its type, output shape (without batch) and own parameter count."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    params: int


def _module(net: nn.Module, name: str) -> nn.Module:
    modules = dict(net.named_modules())
    if name not in modules:
        close = [n for n in modules if n and (name in n or n in name)][:3]
        hint = f"; did you mean {', '.join(close)}?" if close else "; see advkit models info"
        raise AdvkitError(f"the model has no layer {name!r}{hint}")
    return modules[name]


def is_torchscript(net: nn.Module) -> bool:
    """Whether ``net`` is a TorchScript module (loaded with ``torch.jit.load``), which supports no forward hooks."""
    return isinstance(net, torch.jit.ScriptModule)


def require_hooks(net: nn.Module) -> None:
    """Refuse a net whose layers' outputs cannot be read (TorchScript takes no forward hooks), in one line."""
    if is_torchscript(net):
        raise AdvkitError("a TorchScript net takes no forward hooks, so its layers' outputs cannot be read; use the "
                          "model's .safetensors or .pt checkpoint for this")


@contextmanager
def capture(net: nn.Module, names: Sequence[str], detach: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """Collect the output tensor of each named layer during forward passes inside the block.

    Hooks are removed when the block exits, even on error. Tuple outputs keep their first tensor.
    """
    require_hooks(net)
    features: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in names:
            def hook(_m: nn.Module, _i: object, out: object, name: str = name) -> None:
                tensor = out[0] if isinstance(out, (tuple, list)) else out
                if isinstance(tensor, torch.Tensor):  # a copy: a later in-place op (ReLU(inplace=True)) would rewrite it
                    features[name] = tensor.detach().clone() if detach else tensor.clone()

            handles.append(_module(net, name).register_forward_hook(hook))
        yield features
    finally:
        for handle in handles:
            handle.remove()


def layer_table(net: nn.Module, input_shape: tuple[int, ...] | None) -> list[LayerInfo]:
    """Every named submodule with its output shape for one (C, H, W) input (shapes omitted if unknown, or for a
    TorchScript net, which takes no hooks)."""
    names = [name for name, _ in net.named_modules() if name]
    shapes: dict[str, torch.Tensor] = {}
    if input_shape is not None and not is_torchscript(net):
        device = next((p.device for p in net.parameters()), torch.device("cpu"))
        with torch.no_grad(), capture(net, names) as shapes, deployed(net):
            net(torch.zeros(1, *input_shape, device=device))
    modules = dict(net.named_modules())
    return [
        LayerInfo(
            name,
            str(getattr(modules[name], "original_name", "")) if is_torchscript(modules[name]) else type(modules[name]).__name__,
            tuple(shapes[name].shape[1:]) if name in shapes else None,
            sum(p.numel() for p in modules[name].parameters(recurse=False)),
        )
        for name in names
    ]
