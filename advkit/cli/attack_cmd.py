"""``advkit attack NAME --model CKPT --data DATASET``: attack a checkpoint and write a per-sample report."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from advkit.cli.common import (
    ArchOpt, ConfigOpt, DataParamOpt, DeviceOpt, JsonOpt, SeedOpt, UnsafePickleOpt, command_line, emit_json, finished_run,
    kv_table,
    log, out, parse_params, progress_bar, recorded_config,
)
from advkit.cli.train_cmd import Domain
from advkit.errors import AdvkitError

if TYPE_CHECKING:
    from advkit.datasets import ImageDataset
    from advkit.models import ModelWrapper

DEFAULT_ATTACK = "pgd"
BUILTIN_MODEL = "mnist-subset-small-cnn.safetensors"
BUILTIN_DATA = "mnist-subset"
# MNIST needs a larger budget than torchattacks' CIFAR defaults (eps 8/255 barely moves MNIST): Madry et al.'s settings
BUILTIN_PARAMS = {"pgd": {"eps": 0.3, "alpha": 0.01, "steps": 40}}


def builtin_checkpoint() -> Path:
    """The small CNN shipped with advkit (trained on the MNIST subset by ``advkit train``; see README)."""
    return Path(str(resources.files("advkit.models") / "pretrained" / BUILTIN_MODEL))


def attack(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Attack name (advkit list attacks).")] = DEFAULT_ATTACK,
    model: Annotated[str | None, typer.Option("--model", help="Checkpoint or module:factory (default: built-in MNIST CNN).")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Dataset name, FORMAT:PATH or PATH (default: mnist-subset).")] = None,
    domain: Annotated[Domain | None, typer.Option("--domain", help="Side of a paired RGB-IR dataset to attack.")] = None,
    split: Annotated[str, typer.Option("--split", help="Split to attack: test, val, train or all.")] = "test",
    n: Annotated[int | None, typer.Option("--n", help="Number of samples to attack (default 100; 0 = all).")] = 100,
    include_misclassified: Annotated[bool, typer.Option("--include-misclassified", help="Also attack samples the model already gets wrong.")] = False,
    param: Annotated[list[str] | None, typer.Option("--param", help="Attack setting key=value (e.g. eps=8/255, steps=20).")] = None,
    max_queries: Annotated[int | None, typer.Option("--max-queries", help="Per-sample budget of model evaluations.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 64,
    out_path: Annotated[Path, typer.Option("--out", help="HDF5 report to write or resume.")] = Path("advkit-report.h5"),
    run: Annotated[str | None, typer.Option("--run", help="Run name inside the report (default: attack-NAME).")] = None,
    save_images: Annotated[bool, typer.Option("--save-images", help="Store adversarial images in the report.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a finished run of the same name.")] = False,
    data_param: DataParamOpt = None,
    arch: ArchOpt = None,
    unsafe_pickle: UnsafePickleOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Attack correctly classified samples and report success, queries and perturbation sizes per sample.

    With neither --model nor --data, attacks advkit's built-in small CNN on the MNIST subset.
    """
    from advkit.attacks import create_attack
    from advkit.attacks.runner import attack_batches, select_samples, skipped_columns
    from advkit.datasets import open_images
    from advkit.models import ModelWrapper, load_checkpoint
    from advkit.report import Report, attack_summary
    from advkit.runtime import resolve_device

    if (model is None) != (data is None):
        raise typer.BadParameter("pass both --model and --data, or neither to use the built-in MNIST model", param_hint="--model/--data")
    if batch_size < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--batch-size")
    dev = resolve_device(device)
    settings = parse_params(param or [])
    if model is None:
        settings = {**BUILTIN_PARAMS.get(name, {}), **settings}
        log(f"built-in demo: {name} {settings} against a small CNN trained on {BUILTIN_DATA} (advkit train)")
    attack_obj = create_attack(name, **settings)
    loaded = load_checkpoint(model or builtin_checkpoint(), architecture=arch, unsafe_pickle=unsafe_pickle, map_location=dev)
    ds = open_images(data or BUILTIN_DATA, None if domain is None else domain.value, **parse_params(data_param or [], "--data-param"))
    wrapped = ModelWrapper(loaded.net, loaded.preprocessing).to(dev)
    _check_compatible(wrapped, ds)
    run_id = run or f"attack-{name}"
    cfg = {**recorded_config(ctx.params, exclude={"batch_size"}), "attack_params": attack_obj.params()}
    report = Report(out_path)
    finished = finished_run(report, run_id, cfg) if not overwrite else None
    if finished is not None:
        log(f"run {run_id} in {out_path} is already complete with this config (use --overwrite to redo it)")
        _print_summary(name, ds.name, out_path, run_id, finished, json_output)
        return
    with report.start_run(run_id, kind="attack", config=cfg, seed=seed, command=command_line(), overwrite=overwrite) as writer:
        done = set(int(i) for i in writer.done_indices)
        if done:
            log(f"resuming {run_id} in {out_path}: {len(done)} samples already recorded")
        plan = select_samples(wrapped, ds, split=split, n=None if n == 0 else n, seed=seed, only_correct=not include_misclassified)
        skipped = skipped_columns(plan, done, ds, save_images)
        if len(skipped["index"]):
            writer.append(skipped)
        log(f"{name} on {len(plan.attack_index)} of {len(plan.scanned_index)} scanned {split} samples of {ds.name} ({dev})")
        with progress_bar() as progress:
            for columns in attack_batches(attack_obj, wrapped, ds, plan, done=done, seed=seed, batch_size=batch_size,
                                          max_queries=max_queries, save_images=save_images, progress=progress):
                writer.append(columns)
        summary = attack_summary(writer.samples())
        writer.finish(summary)
    _print_summary(name, ds.name, out_path, run_id, summary, json_output)


def _check_compatible(model: ModelWrapper, ds: ImageDataset) -> None:
    """Fail early, in one line, when the data cannot feed the model."""
    pre = model.preprocessing
    if pre.input_size is not None and tuple(pre.input_size) != ds.size:
        raise AdvkitError(f"the model takes {pre.input_size[0]}x{pre.input_size[1]} images but {ds.name} has {ds.size[0]}x{ds.size[1]}")
    if pre.channels is not None and ds.channels not in (1, pre.channels):
        raise AdvkitError(f"the model takes {pre.channels}-channel images but {ds.name} has {ds.channels} channels")
    if pre.num_classes is not None and ds.num_classes > pre.num_classes:
        raise AdvkitError(f"{ds.name} has {ds.num_classes} classes but the model outputs {pre.num_classes}")


def _print_summary(name: str, data: str, path: Path, run_id: str, summary: dict[str, object], json_output: bool) -> None:
    if json_output:
        emit_json({"report": str(path), "run": run_id, **summary})
        return
    out.print(kv_table(f"{name} on {data}", {**summary, "report": f"{path} (run {run_id})"}))


