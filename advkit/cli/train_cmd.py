"""``advkit train``: supervised training of a registry architecture on any dataset or domain."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from advkit.cli.common import (
    ConfigOpt, DataParamOpt, DeviceOpt, JsonOpt, SeedOpt, command_line, emit_json, finished_run, training_state_path, kept_if_appeared,
    kv_table, log, log_complete, out, parse_params, progress_bar, recorded_config, start_training_run, usage_mistakes,
)
from advkit.errors import AdvkitError


class Domain(str, Enum):
    rgb = "rgb"
    ir = "ir"


def train(
    ctx: typer.Context,
    data: Annotated[str, typer.Option("--data", help="Dataset name, FORMAT:PATH or PATH.")],
    out_path: Annotated[Path, typer.Option("--out", help="Checkpoint to write (.safetensors or .pt).")],
    arch: Annotated[str, typer.Option("--arch", help="Architecture (advkit list models).")] = "small-cnn",
    domain: Annotated[Domain | None, typer.Option("--domain", help="Side of a paired RGB-IR dataset.")] = None,
    channels: Annotated[int | None, typer.Option("--channels", min=1, help="Net input channels (default: the data's; 3 replicates gray/IR).")] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 10,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 1e-3,
    optimizer: Annotated[str, typer.Option("--optimizer", help="adam, adamw or sgd.")] = "adam",
    schedule: Annotated[str, typer.Option("--schedule", help="onecycle, cosine or constant.")] = "onecycle",
    momentum: Annotated[float, typer.Option("--momentum")] = 0.9,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 0.0,
    translate: Annotated[int, typer.Option("--translate", help="Random shift augmentation, pixels.")] = 0,
    hflip: Annotated[bool, typer.Option("--hflip/--no-hflip", help="Random horizontal flips (not for digits or shapes).")] = False,
    normalise: Annotated[bool, typer.Option("--normalise/--no-normalise", help="Standardise with train-split mean/std.")] = True,
    data_param: DataParamOpt = None,
    report: Annotated[Path | None, typer.Option("--report", help="Report file (default: OUT with .h5).")] = None,
    run: Annotated[str, typer.Option("--run", help="Run name inside the report.")] = "train",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing checkpoint and report run.")] = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Train a classifier; checkpoints every epoch and resumes when re-run after an interruption."""
    from advkit.datasets import open_images
    from advkit.models import create_architecture, save_checkpoint
    from advkit.report import Report
    from advkit.rng import derive_seed, seeded_globals
    from advkit.runtime import resolve_device
    from advkit.training import TrainSettings, fit_preprocessing, train_classifier

    with usage_mistakes():  # a learning rate, optimizer or schedule the training refuses is a bad option value
        settings = TrainSettings(epochs, batch_size, lr, optimizer, momentum, weight_decay, schedule, translate, hflip, seed)
    dev = resolve_device(device)
    state_path, replace_out = training_state_path(out_path, overwrite, report)
    ds = open_images(data, None if domain is None else domain.value, **parse_params(data_param or [], "--data-param"))
    pre = fit_preprocessing(ds, channels=channels, normalise=normalise)
    arch_kwargs = {"num_classes": ds.num_classes, "in_channels": pre.channels, "input_size": list(ds.size) if ds.size[0] != ds.size[1] else ds.size[0]}
    try:
        with seeded_globals(derive_seed(seed, "init")):
            net = create_architecture(arch, **arch_kwargs)
    except (TypeError, ValueError) as exc:
        raise AdvkitError(f"cannot build {arch} for {ds.size[0]}x{ds.size[1]}x{pre.channels} images: {exc}") from None
    report_path = report or out_path.with_suffix(".h5")
    # a run killed after finishing its report but before deleting its state file: done, not a conflict
    finished = finished_run(Report(report_path), run, recorded_config(ctx.params)) if not overwrite and state_path.exists() else None
    if finished is not None:
        state_path.unlink()
        log_complete(run, report_path)
        _print(finished, arch, ds.name, report_path, run, json_output)
        return
    with start_training_run(
        Report(report_path), run, state_path, kind="train", config=recorded_config(ctx.params), seed=seed,
        command=command_line(), overwrite=overwrite,
    ) as writer:
        log(f"training {arch} on {ds.name} ({ds.domain}, {len(ds.indices('train'))} train images) on {dev}")
        began = time.perf_counter()
        try:
            with progress_bar() as progress, kept_if_appeared(writer, state_path, "train"):
                outcome = train_classifier(net, ds, settings, preprocessing=pre, device=dev, state_path=state_path, progress=progress,
                                           replace_state=overwrite)
        except AdvkitError:  # diverged, or unreadable images: the corrected command starts a fresh report run
            writer.abandon()
            raise
        seconds = time.perf_counter() - began
        extra = {"dataset": ds.name, "domain": ds.domain, "epochs": epochs, "seed": seed, "test_accuracy": outcome.test_accuracy}
        with kept_if_appeared(writer, state_path, "train"):
            save_checkpoint(out_path, net, arch, arch_kwargs, pre, extra, overwrite=replace_out)
        writer.add_table("history", {k: np.asarray(v) for k, v in outcome.history.items()})
        writer.append({"index": outcome.test_index, "label": outcome.test_label, "pred": outcome.test_pred})
        summary = {
            "test_accuracy": outcome.test_accuracy,
            "train_loss": outcome.history["train_loss"][-1],
            "train_accuracy": outcome.history["train_acc"][-1],
            "epochs": epochs,
            "resumed_from_epoch": outcome.resumed_from_epoch,
            "parameters": sum(p.numel() for p in net.parameters()),
            "train_seconds": round(seconds, 2),
            "checkpoint": str(out_path),
        }
        writer.finish(summary)
    state_path.unlink(missing_ok=True)
    _print(summary, arch, ds.name, report_path, run, json_output)


def _print(summary: dict[str, Any], arch: str, data: str, report_path: Path, run: str, json_output: bool) -> None:
    if json_output:
        emit_json({"report": str(report_path), "run": run, **summary})
    else:
        out.print(kv_table(f"trained {arch} on {data}", {**summary, "report": f"{report_path} (run {run})"}))
