"""``advkit report show FILE [RUN]``: runs, configs and summaries of an HDF5 report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from advkit.cli.common import JsonOpt, emit_json, fmt, kv_table, out, table, to_toml

app = typer.Typer(help="Read HDF5 reports.", no_args_is_help=True)

HEADLINE = ("test_accuracy", "clean_accuracy", "robust_accuracy", "attack_success_rate", "queries_median",
            "source_success_rate", "transfer_rate", "random.transfer_rate")


@app.command("show")
def show(
    path: Annotated[Path, typer.Argument(help="Report file (.h5).")],
    run: Annotated[str | None, typer.Argument(help="One run to show in detail (default: all runs).")] = None,
    config_only: Annotated[bool, typer.Option("--config", help="Print the run's config as TOML, for --config replay.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Every run in a report with its status and summary; one run in detail with config and tables."""
    from advkit.errors import ReportError
    from advkit.report import Report

    if not path.exists():
        raise ReportError(f"no such report: {path}")
    report = Report(path)
    if run is None:
        if config_only:
            raise typer.BadParameter("--config needs a RUN", param_hint="--config")
        _show_all(report, json_output)
        return
    data = report.read(run)
    if config_only:
        typer.echo(to_toml(data.config), nl=False)
        return
    if json_output:
        emit_json({"run": run, "attrs": data.attrs, "config": data.config, "summary": data.summary,
                   "tables": data.tables, "per_class": per_class(data.samples)})
        return
    out.print(kv_table(f"run {run}", {k: v for k, v in data.attrs.items() if k != "config"}))
    out.print(kv_table("config", data.config))
    out.print(kv_table("summary", data.summary))
    for name, columns in data.tables.items():
        keys = list(columns)
        out.print(table(name, keys, list(zip(*(np.asarray(columns[k]).tolist() for k in keys)))))
    rows = per_class(data.samples)
    if rows:
        keys = list(rows[0])
        out.print(table("per class", keys, [[r[k] for k in keys] for r in rows]))


def _show_all(report: Any, json_output: bool) -> None:
    runs = report.runs()
    if json_output:
        emit_json([{"run": r.id, "kind": r.kind, "status": r.status, "created": r.created, "samples": r.n_samples,
                    "summary": r.summary} for r in runs])
        return
    rows = [[r.id, r.kind, r.status, r.n_samples, r.created[:16].replace("T", " "), _headline(r.summary)] for r in runs]
    out.print(table(f"{report.path}: {len(runs)} run(s)", ["run", "kind", "status", "samples", "created", "result"], rows))


def _headline(summary: dict[str, Any]) -> str:
    """The few numbers that say how a run went."""
    return ", ".join(f"{k.replace('_', ' ')} {fmt(summary[k])}" for k in HEADLINE if k in summary)


def per_class(samples: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per-label counts, clean accuracy and (for attack runs) attack success rate."""
    if "label" not in samples or "pred" not in samples or len(samples["label"]) == 0:
        return []
    rows = []
    for label in np.unique(samples["label"]):
        mask = samples["label"] == label
        row: dict[str, Any] = {"class": int(label), "samples": int(mask.sum()),
                               "clean_accuracy": float((samples["pred"][mask] == label).mean())}
        if "success" in samples and "attacked" in samples:
            attacked = mask & samples["attacked"].astype(bool)
            row["attacked"] = int(attacked.sum())
            row["success_rate"] = float(samples["success"][attacked].mean()) if attacked.any() else float("nan")
        rows.append(row)
    return rows
