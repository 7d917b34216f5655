"""``advkit robustness --model CKPT --data DATASET``: accuracy under the 15 natural corruptions at 5 severities."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from advkit.cli.common import (
    ConfigOpt, DataParamOpt, DeviceOpt, JsonOpt, SeedOpt, UnsafePickleOpt, check_compatible, emit_json, log, log_complete,
    out, parse_params, progress_bar, recorded_config, require_preprocessing, start_or_finished, table, warn,
)
from advkit.cli.train_cmd import Domain

if TYPE_CHECKING:
    from advkit.datasets import ImageDataset
    from advkit.models import ModelWrapper


def robustness(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="Checkpoint to evaluate.")],
    data: Annotated[str, typer.Option("--data", help="Dataset name, FORMAT:PATH or PATH.")],
    baseline: Annotated[str | None, typer.Option("--baseline", help="Reference checkpoint for mCE and the accuracy ratio.")] = None,
    domain: Annotated[Domain | None, typer.Option("--domain", help="Side of a paired RGB-IR dataset.")] = None,
    corruption: Annotated[list[str] | None, typer.Option("--corruption", help="Corruptions to apply (default: all 15).")] = None,
    severity: Annotated[list[int] | None, typer.Option("--severity", help="Severities 1-5 (default: all).")] = None,
    cifar10c: Annotated[Path | None, typer.Option("--cifar10c", help="Folder of the published CIFAR-10-C (or -100-C) .npy files: "
                        "read the corrupted images there instead of computing them; --data is the matching clean set.")] = None,
    n: Annotated[int, typer.Option("--n", min=0, help="Test images (0 = all).")] = 500,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 128,
    out_path: Annotated[Path, typer.Option("--out", help="HDF5 report.")] = Path("advkit-robustness.h5"),
    plot: Annotated[Path | None, typer.Option("--plot", help="PNG of accuracy vs severity (default: OUT with .png).")] = None,
    run: Annotated[str, typer.Option("--run", help="Run name.")] = "robustness",
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    data_param: DataParamOpt = None,
    unsafe_pickle: UnsafePickleOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Accuracy per corruption and severity; with --baseline, Hendrycks' mCE and the paper's accuracy ratio."""
    from advkit.datasets import open_images
    from advkit.models import ModelWrapper, load_checkpoint
    from advkit.perturbations import PERTURBATIONS, perturbation_names
    from advkit.perturbations.robustness import mean_corruption_error, ratio_excluded, relative_accuracy
    from advkit.report import Report
    from advkit.report.plots import check_figure_path
    from advkit.runtime import resolve_device

    names = list(dict.fromkeys(corruption or perturbation_names()))  # a repeated --corruption runs once
    for name in names:
        PERTURBATIONS.entry(name)  # unknown names fail here, with close matches
    severities = sorted(set(severity or [1, 2, 3, 4, 5]))
    if any(not 1 <= s <= 5 for s in severities):
        raise typer.BadParameter(f"severities must be 1-5, got {severities}", param_hint="--severity")
    dev = resolve_device(device)
    ds = open_images(data, None if domain is None else domain.value, **parse_params(data_param or [], "--data-param"))
    ds.indices("test", required=True)  # an empty test split fails before any model is loaded or file written
    models = {"model": model} | ({"baseline": baseline} if baseline else {})
    wrapped = {}
    for role, spec in models.items():
        loaded = load_checkpoint(spec, unsafe_pickle=unsafe_pickle, map_location=dev)
        require_preprocessing(loaded, spec, "its accuracies would be measured on wrongly normalised inputs")
        wrapped[role] = ModelWrapper(loaded.net, loaded.preprocessing).to(dev)
        check_compatible(wrapped[role], ds, f"the {role}")
    cfg = {**recorded_config(ctx.params, {"batch_size", "out_path", "plot", "run"}, wrapped), "corruptions": list(names),
           "severities": severities}
    if cifar10c is not None:
        cfg["cifar10c"] = str(cifar10c.resolve())
    else:  # which test images: before 2026-12-03 the first --n, so such a run is not this one's to reuse
        cfg["subset"] = "seeded"
    png = check_figure_path(plot or out_path.with_suffix(".png"))
    report = Report(out_path)
    # the run is opened before the work, so a bad --out or --run fails at once
    writer, finished = start_or_finished(report, run, "robustness", cfg, seed, overwrite)
    if writer is None:  # re-running a finished command (also one another process just finished) measures nothing
        log_complete(run, out_path)  # again, but draws and shows it as the first did
        _show(report.read(run).samples, dict(finished or {}), names, severities, png, f"{Path(model).name} on {ds.name}",
              out_path, json_output)
        return
    try:
        columns, accuracy, clean = _measure(wrapped, ds, names, severities, n, cifar10c, seed, batch_size)
    except BaseException:
        writer.abandon()
        raise
    summary: dict[str, Any] = {"clean_accuracy": clean["model"], "corruption_accuracy": float(accuracy["model"].mean())}
    for ci, name in enumerate(names):
        summary[f"{name}.accuracy"] = float(accuracy["model"][ci].mean())
    if baseline:
        ce, mce = mean_corruption_error(accuracy["model"], accuracy["baseline"])
        ratio = relative_accuracy(accuracy["model"], accuracy["baseline"])
        summary.update({"baseline.clean_accuracy": clean["baseline"], "baseline.corruption_accuracy": float(accuracy["baseline"].mean()),
                        "mCE": mce, "relative_accuracy": float(np.nanmean(ratio)) if np.isfinite(ratio).any() else float("nan")})
        for ci, name in enumerate(names):
            summary[f"{name}.CE"], summary[f"{name}.relative_accuracy"] = float(ce[ci]), float(ratio[ci])
        excluded = [name for ci, name in enumerate(names) if not np.isfinite(ce[ci])]
        if excluded:  # CE divides by the baseline's errors: none on a corruption leaves it out of the mean
            summary["mCE_excluded"] = ", ".join(excluded)
            warn(f"mCE is over {len(names) - len(excluded)} of {len(names)} corruptions: the baseline makes no error on "
                 f"{', '.join(excluded)}, so their CE is undefined")
        undefined = ratio_excluded(accuracy["baseline"], names, severities)
        if undefined:  # the ratio divides by the baseline's accuracy: a severity it gets all wrong has none
            summary["relative_accuracy_excluded"] = ", ".join(undefined)
            warn(f"the accuracy ratio leaves out {', '.join(undefined)}: the baseline gets every image wrong there, so "
                 "acc(model) / acc(baseline) is undefined")
    with writer:
        writer.append(columns)
        writer.add_table("accuracy", {"severity": np.array(severities), **{name: accuracy["model"][ci] for ci, name in enumerate(names)}})
        writer.finish(summary)
    _show(columns, summary, names, severities, png, f"{Path(model).name} on {ds.name}", out_path, json_output)


def _show(columns: dict[str, np.ndarray], summary: dict[str, Any], names: list[str], severities: list[int], png: Path,
          title: str, out_path: Path, json_output: bool) -> None:
    """Draw the plot and print the table (or JSON) of a run from its per-sample columns and summary."""
    from advkit.report.plots import plot_corruptions

    accuracy = {role: columns[f"{role}_correct"].mean(0) for role in ("model", "baseline") if f"{role}_correct" in columns}
    clean = float(columns["model_clean_correct"].mean())
    plot_corruptions(accuracy["model"], names, severities, png, clean=clean, baseline=accuracy.get("baseline"), title=title)
    if json_output:
        emit_json({"report": str(out_path), "plot": str(png), **summary})
        return
    baseline = "baseline" in accuracy
    header = ["corruption", *[f"s{s}" for s in severities], "mean"] + (["CE", "acc. ratio"] if baseline else [])
    rows = []
    for ci, name in enumerate(names):
        row: list[Any] = [name, *accuracy["model"][ci].tolist(), float(accuracy["model"][ci].mean())]
        if baseline:
            row += [summary[f"{name}.CE"], summary[f"{name}.relative_accuracy"]]
        rows.append(row)
    over = f" (over {len(names) - len(summary['mCE_excluded'].split(', '))} of {len(names)} corruptions)" if "mCE_excluded" in summary else ""
    extra = f", mCE {summary['mCE']:.3f}{over}, accuracy ratio {summary['relative_accuracy']:.3f}" if baseline else ""
    out.print(table(f"accuracy under corruption (clean {clean:.4f}{extra}; report {out_path}, plot {png})", header, rows))


def _measure(wrapped: dict[str, ModelWrapper], ds: ImageDataset, names: list[str], severities: list[int], n: int, cifar10c: Path | None,
             seed: int, batch_size: int) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, float]]:
    """Per-sample correctness under every corruption and severity, and on the clean images, for each model."""
    from advkit.perturbations.robustness import corruption_correct, published_correct
    from advkit.rng import seeded_subset
    from advkit.training import predict

    # not empty: robustness() checked it before any work. The published CIFAR-10-C arrays follow the test split's
    # order, so they take its first n images; otherwise a seeded subset, which spans the classes of a split in blocks
    test = ds.indices("test")
    index = test[: n or None] if cifar10c is not None else seeded_subset(test, n or None, seed, "robustness-subset")
    columns: dict[str, Any] = {"index": index, "label": ds.labels[index]}
    accuracy: dict[str, np.ndarray] = {}
    clean: dict[str, float] = {}
    for role, m in wrapped.items():
        log(f"{role}: {len(names)} corruptions x {len(severities)} severities on {len(index)} {ds.name} test images")
        with progress_bar() as show:
            if cifar10c is None:
                correct = corruption_correct(m, ds, index, names, severities, seed=seed, batch_size=batch_size, progress=show)
            else:  # the published arrays hold the test split in order: the first n of it are the first n rows
                correct = published_correct(m, cifar10c, ds.labels[index], names, severities, batch_size=batch_size, progress=show)
        columns[f"{role}_correct"] = correct
        columns[f"{role}_clean_correct"] = predict(m, ds, index) == ds.labels[index]
        accuracy[role] = correct.mean(0)
        clean[role] = float(columns[f"{role}_clean_correct"].mean())
    return columns, accuracy, clean
