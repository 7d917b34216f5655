"""``advkit models info CKPT``: what a checkpoint holds and where hooks can attach."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from advkit.cli.common import (
    ArchOpt, ArchParamOpt, JsonOpt, UnsafePickleOpt, arch_settings, emit_json, has_preprocessing, kv_table, no_preprocessing, out,
    table, warn,
)
from advkit.errors import AdvkitError, DetectorError

if TYPE_CHECKING:
    from torch import nn

app = typer.Typer(help="Inspect model checkpoints.", no_args_is_help=True)


@app.command("info")
def info(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint file (.safetensors/.pt/TorchScript) or module:factory.")],
    arch: ArchOpt = None,
    arch_param: ArchParamOpt = None,
    unsafe_pickle: UnsafePickleOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Architecture, parameter count, preprocessing and layer names usable as hook points."""
    from advkit.models import layer_table, load_checkpoint

    loaded = load_checkpoint(checkpoint, architecture=arch, arch_kwargs=arch_settings(arch, arch_param), unsafe_pickle=unsafe_pickle)
    pre = loaded.preprocessing
    shape = (pre.channels, *pre.input_size) if pre.channels and pre.input_size else None
    try:
        layers = layer_table(loaded.net, shape)
        tapped = _detect_defaults(loaded.net, shape)
    except RuntimeError as exc:  # --arch/--arch-param built a net that cannot take the recorded input
        if shape is None:
            raise
        raise AdvkitError(f"{loaded.source}: the net cannot take its recorded {shape[0]}x{shape[1]}x{shape[2]} input "
                          f"(check --arch and --arch-param): {str(exc).splitlines()[0]}") from None
    described = has_preprocessing(loaded)  # else mean 0, std 1 and rgb are advkit's defaults, not the checkpoint's
    if not described:
        warn(no_preprocessing(loaded.source, "its normalisation, domain and classes are unknown (advkit attack would "
                              "feed it [0, 1] pixels)"))
    summary = {
        "checkpoint": loaded.source,
        "kind": loaded.kind,
        "architecture": loaded.architecture,
        "arch_kwargs": loaded.arch_kwargs,
        "parameters": sum(p.numel() for p in loaded.net.parameters()),
        "channels": pre.channels,
        "input_size": list(pre.input_size) if pre.input_size else None,
        "mean": list(pre.mean) if described else None,
        "std": list(pre.std) if described else None,
        "domain": pre.domain if described else None,
        "classes": list(pre.class_names) if described else None,
        **{f"extra.{k}": v for k, v in loaded.extra.items()},
    }
    if json_output:
        emit_json({**summary, "layers": [{"name": l.name, "type": l.type, "output_shape": l.output_shape, "params": l.params,
                                          "detect_default": l.name in tapped} for l in layers]})
        return
    out.print(kv_table("model", {k: ("unknown" if v is None else v) for k, v in summary.items()}))
    out.print(table("layers (hook points; 'default': what advkit detect fit taps without --layers)",
                    ["name", "type", "output shape", "params", "detect fit"],
                    [(l.name, l.type, "x".join(map(str, l.output_shape)) if l.output_shape else "?", l.params,
                      "default" if l.name in tapped else "") for l in layers]))


def _detect_defaults(net: nn.Module, shape: tuple[int, ...] | None) -> set[str]:
    """The layers ``advkit detect fit`` taps by default; none when it cannot tell (it then asks for --layers)."""
    from advkit.detectors.taps import default_layers
    from advkit.models.hooks import is_torchscript

    if is_torchscript(net):  # no hooks, so detectors cannot tap it at all
        return set()
    try:
        return set(default_layers(net, shape))
    except DetectorError:
        return set()
