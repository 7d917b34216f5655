"""``advkit report show|compare|plot|export``: read HDF5 reports, put runs side by side, draw and export them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.markup import escape

from advkit.cli.common import JsonOpt, check_choice, emit_json, fmt, kv_table, out, table, to_toml, warn

FIGURE_NAMES = ("cdf", "norms", "images", "corruptions", "roc", "transfer")  # advkit.report.plots.FIGURES, without importing matplotlib
app = typer.Typer(help="Read HDF5 reports.", no_args_is_help=True)

TABLE_ROWS = 20  # rows of a run table `report show` prints
HEADLINE = ("test_accuracy", "clean_accuracy", "robust_accuracy", "attack_success_rate", "queries_median",
            "source_success_rate", "transfer_rate", "random.transfer_rate", "corruption_accuracy", "mCE")
BEFORE_AFTER = ("clean_accuracy", "success_rate")  # fine-tune summaries: before.<...> and after.<...> of these


@app.command("show")
def show(
    path: Annotated[Path, typer.Argument(help="Report file (.h5).")],
    run: Annotated[str | None, typer.Argument(help="One run to show in detail (default: all runs).")] = None,
    config_only: Annotated[bool, typer.Option("--config", help="Print the run's config as TOML (JSON with --json), for --config replay.")] = False,
    every: Annotated[bool, typer.Option("--all", help="Every run in detail (command, config, summary, tables, per class).")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Every run in a report with its status and summary; one run (or --all) in detail with command, config, tables
    and a per-class breakdown."""
    from advkit.errors import ReportError
    from advkit.report import Report

    if not path.exists():
        raise ReportError(f"no such report: {path}")
    report = Report(path)
    if run is None:
        if config_only:
            raise typer.BadParameter("--config needs a RUN", param_hint="--config")
        if every:
            details = [_details(report.read(r.id)) for r in report.runs()]
            if json_output:
                emit_json(details)
                return
            for detail in details:
                _print_details(detail)
            return
        _show_all(report, json_output)
        return
    data = report.read(run)
    if config_only and json_output:  # the same replay file as JSON (--config reads .json too)
        emit_json({k: v for k, v in data.config.items() if v is not None})
        return
    if config_only:
        typer.echo(to_toml(data.config), nl=False)
        return
    if json_output:
        emit_json(_details(data))
        return
    _print_details(_details(data))


def _details(data: Any) -> dict[str, Any]:
    return {"run": data.id, "attrs": data.attrs, "config": data.config, "summary": data.summary, "tables": data.tables,
            "per_class": per_class(data.samples)}


def _print_details(detail: dict[str, Any]) -> None:
    out.rule(escape(f"run {detail['run']}"))
    # stored text is shown as written: Rich markup would eat "[block1]" in "ae[block1]", telling three rows apart
    out.print(kv_table(f"run {detail['run']}", {k: v for k, v in detail["attrs"].items() if k != "config"}, literal=True))
    out.print(kv_table("config", detail["config"], literal=True))
    if detail["summary"]:
        out.print(kv_table("summary", detail["summary"], literal=True))
    else:
        out.print(f"no summary yet: the run is {escape(str(detail['attrs'].get('status', 'not complete')))} (its summary is written when it finishes)")
    for name, columns in detail["tables"].items():
        keys = list(columns)
        rows = list(zip(*(np.asarray(columns[k]).tolist() for k in keys)))
        shown = rows if len(rows) <= TABLE_ROWS else rows[:TABLE_ROWS]
        title = name if len(rows) <= TABLE_ROWS else f"{name} (first {TABLE_ROWS} of {len(rows)} rows; report export has all)"
        out.print(table(title, keys, shown, literal=True))
    rows = detail["per_class"]
    if rows:
        keys = list(rows[0])
        out.print(table("per class", keys, [[r.get(k, float("nan")) for k in keys] for r in rows], literal=True))


@app.command("compare")
def compare(
    specs: Annotated[list[str], typer.Argument(help="Reports or runs: FILE (all its runs), FILE:RUN or FILE:RUN1,RUN2.")],
    perspective: Annotated[str, typer.Option("--perspective", help="Whose 'better': model, attack, or auto.")] = "auto",
    all_samples: Annotated[bool, typer.Option("--all-samples", help="Stored summaries over each run's own samples, not the common ones.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Runs side by side; each value is coloured better (green) or worse (red) than the first run's.

    Attack runs of the same data are compared on the sample indices they share (the caption says how many).
    """
    from advkit.report.compare import PERSPECTIVES, compare_runs

    check_choice(perspective, PERSPECTIVES, "--perspective")
    comparison = compare_runs(specs, perspective=perspective, common=not all_samples)
    unfinished = [f"{ref.label} ({status})" for ref, status in zip(comparison.refs, comparison.statuses) if status != "complete"]
    if unfinished:
        warn(f"not complete, so over the samples done so far: {', '.join(unfinished)}")
    if comparison.data_differs:
        warn("the attack runs attacked different data (dataset, split or --data-param), so their samples are not "
             "paired: each shows its stored summary over its own samples")
    if json_output:
        emit_json({"runs": [{"label": r.label, "report": str(r.path), "run": r.run, "kind": k, "samples": n, "status": st}
                            for r, k, n, st in zip(comparison.refs, comparison.kinds, comparison.sample_counts,
                                                   comparison.statuses)],
                   "perspective": comparison.perspective, "common_samples": comparison.common,
                   "data_differs": comparison.data_differs, "caption": comparison.caption(),
                   "metrics": {row.key: {"values": row.values, "verdicts": row.verdicts} for row in comparison.rows}})
        return
    styles = {"better": "green", "worse": "red", "same": "dim"}
    rows = []
    for row in comparison.rows:
        cells: list[Any] = [row.key.replace("_", " "), escape(fmt(row.values[0]))]
        for j in range(1, len(row.values)):
            delta = row.delta(j)
            text = fmt(row.values[j]) + (f" ({delta:+.3g})" if delta is not None and delta != 0 else "")
            style = styles.get(row.verdicts[j] or "")
            cells.append(f"[{style}]{escape(text)}[/]" if style else escape(text))
        rows.append(cells)
    tab = table(f"{len(comparison.refs)} runs compared", ["", *(escape(label) for label in comparison.labels)], rows)
    tab.caption = comparison.caption()
    tab.caption_justify = "left"
    out.print(tab)


@app.command("plot")
def plot(
    path: Annotated[Path, typer.Argument(help="Report file (.h5).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the PNG figures.")] = Path("advkit-figures"),
    run: Annotated[list[str] | None, typer.Option("--run", help="Only this run (repeat for several; default all complete runs).")] = None,
    figure: Annotated[list[str] | None, typer.Option("--figure", help=f"Only this figure: {', '.join(FIGURE_NAMES)} (repeatable; missing data is an error).")] = None,
    max_images: Annotated[int, typer.Option("--max-images", min=1, help="Samples per image grid.")] = 6,
    json_output: JsonOpt = False,
) -> None:
    """PNG figures of everything the report has data for; says which figures were skipped and why.

    success rate vs queries, L0/L2/Linf histograms, clean | adversarial | difference grids (pixel moves drawn for
    Pixle, WhitePixle and transfer runs), accuracy vs corruption severity, detector ROC curves, the cross-domain
    transfer matrix. A damaged run is a one-line error naming it.
    """
    from advkit.report import Report
    from advkit.report.plots import plot_report

    check_choice(figure, FIGURE_NAMES, "--figure")
    run = list(dict.fromkeys(run)) if run else run  # a repeated --run is drawn once
    result = plot_report(Report(path), out_dir, runs=run, figures=figure, max_images=max_images)
    if result.incomplete:
        warn(f"not complete, so not drawn (name them with --run to draw them): {', '.join(result.incomplete)}")
    if json_output:
        emit_json({"written": {k: [str(p) for p in v] for k, v in result.written.items()}, "skipped": result.skipped,
                   "left_out": result.left_out, "incomplete": result.incomplete})
        return
    rows: list[list[Any]] = [
        [name, ", ".join(str(p) for p in paths) + (f"\n[dim]without {escape(result.left_out[name])}[/]" if name in result.left_out else "")]
        for name, paths in result.written.items()
    ]
    rows += [[name, f"[dim]skipped: {escape(reason)}[/]"] for name, reason in result.skipped.items()]
    where = f" in {out_dir}" if result.paths else ""
    out.print(table(f"{len(result.paths)} figure(s) from {path}{where}", ["figure", "file"], rows))


@app.command("export")
def export(
    path: Annotated[Path, typer.Argument(help="Report file (.h5).")],
    format_: Annotated[str, typer.Option("--format", help="csv (per-sample tables, one file per run) or json (RobustBench-style summary).")] = "csv",
    out_path: Annotated[Path | None, typer.Option("--out", help="csv: directory (default FILE-csv/); json: file (default FILE.json, - for stdout).")] = None,
    run: Annotated[list[str] | None, typer.Option("--run", help="Only this run (repeatable; default all runs).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace files of an earlier export (never the report itself).")] = False,
) -> None:
    """Per-sample tables as CSV (a row per sample; image columns left out) or run summaries as JSON."""
    from advkit.report import Report
    from advkit.report.export import export as export_report, summary_json

    check_choice(format_, ("csv", "json"), "--format")
    run = list(dict.fromkeys(run)) if run else run  # a repeated --run is exported once
    if format_ == "csv" and out_path == Path("-"):
        raise typer.BadParameter("- (standard output) is for --format json; CSV export writes a directory of files",
                                 param_hint="--out")
    report = Report(path)
    if format_ == "json" and out_path == Path("-"):
        if not report.exists():
            from advkit.errors import ReportError

            raise ReportError(f"no such report: {path}")
        emit_json(summary_json(report, run))
        return
    result = export_report(report, format_, out_path, run, overwrite=overwrite)
    rows: list[list[Any]] = [[str(p), "written"] for p in result.paths]
    rows += [[name, f"left out: {reason}"] for name, reason in result.skipped.items()]
    out.print(table(f"{path} exported as {format_}", ["file / column", ""], rows))


def _show_all(report: Any, json_output: bool) -> None:
    runs = report.runs(unreadable=True)  # a run of a newer schema is a row saying so, not the end of the listing
    if json_output:
        emit_json([{"run": r.id, "problem": r.problem} if r.problem else
                   {"run": r.id, "kind": r.kind, "status": r.status, "created": r.created, "samples": r.n_samples,
                    "summary": r.summary} for r in runs])
        return
    rows = [[r.id, "", "unreadable", "", "", r.problem] if r.problem else
            [r.id, r.kind, r.status, r.n_samples, r.created[:16].replace("T", " "), _headline(r.summary)] for r in runs]
    out.print(table(f"{report.path}: {len(runs)} run(s)", ["run", "kind", "status", "samples", "created", "result"], rows, literal=True))


def _headline(summary: dict[str, Any]) -> str:
    """The few numbers that say how a run went: accuracies and success rates, a fine-tune's before -> after, a
    detector evaluation's best AUROC.

    >>> _headline({"before.clean_accuracy": 0.9, "after.clean_accuracy": 0.8, "auroc_ae_clean": 0.7, "auroc_ae_noisy": 0.75})
    'clean accuracy 0.9 -> 0.8, best auroc 0.75 (ae noisy)'
    """
    from advkit.report.store import is_number  # here: importing the report package loads h5py

    parts = [f"{k.replace('_', ' ')} {fmt(summary[k])}" for k in HEADLINE if k in summary]
    for key, before in summary.items():
        name = key.removeprefix("before.")
        if key.startswith("before.") and name.endswith(BEFORE_AFTER) and f"after.{name}" in summary:
            parts.append(f"{name.replace('.', ' ').replace('_', ' ')} {fmt(before)} -> {fmt(summary[f'after.{name}'])}")
    aurocs = {k.removeprefix("auroc").strip("_").replace("_", " "): float(v) for k, v in summary.items()
              if k.startswith("auroc") and is_number(v)}
    if aurocs:
        best = max(aurocs, key=lambda k: aurocs[k])
        parts.append(f"best auroc {fmt(aurocs[best])}" + (f" ({best})" if best else ""))
    return ", ".join(parts)


def per_class(samples: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per-label counts, clean accuracy (from ``pred``), attack success rate over attacked samples the model
    classified correctly (as in the run summary), and the mean
    of every other boolean per-sample column (e.g. a transfer run's ``tgt_success``, a robustness run's
    ``model_correct`` over all corruptions and severities)."""
    from advkit.report.summary import scored

    if "label" not in samples or len(samples["label"]) == 0:
        return []
    attack = "success" in samples and "attacked" in samples
    flags = [k for k, v in samples.items() if np.asarray(v).dtype == np.bool_ and k not in ("attacked", "success" if attack else "")
             and (np.asarray(v).ndim == 1 or k.endswith("_correct"))]  # (N, C, S) correctness: mean over corruptions
    if "pred" not in samples and not attack and not flags:
        return []
    rows = []
    for label in np.unique(samples["label"]):
        mask = samples["label"] == label
        row: dict[str, Any] = {"class": int(label), "samples": int(mask.sum())}
        if "pred" in samples:
            row["clean_accuracy"] = float((samples["pred"][mask] == label).mean())
        if attack:
            row["attacked"] = int((mask & samples["attacked"].astype(bool)).sum())
            counted = mask & scored(samples)  # as in the summary: images the model got wrong are no success
            row["success_rate"] = float(samples["success"][counted].mean()) if counted.any() else float("nan")
        for name in flags:
            row[name] = float(np.asarray(samples[name])[mask].mean())
        rows.append(row)
    return rows
