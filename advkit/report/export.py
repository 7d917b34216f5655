"""Take report data elsewhere: per-sample tables as CSV, run summaries as RobustBench-style JSON.

CSV: one file per run, one row per sample (sorted by ``index``), one column per 1-D per-sample dataset. A
column with more values per sample (e.g. a worst-case run's ``success_by_attack`` (N, A), or a robustness
run's ``model_correct`` (N, corruptions, severities)) becomes one CSV column per value, named
``<name>_<i>`` / ``<name>_<i>_<j>``; columns with more than :data:`MAX_FLAT_VALUES` values per sample
(images) are left out and listed in :attr:`ExportResult.skipped`.

JSON: for each run, the fields of a RobustBench model entry that a report can answer (model, dataset,
threat model, clean and robust accuracy as fractions in [0, 1], attack settings) plus the run's full
summary, config, seed, command, versions and git commit. A worst-case run's threat model and eps are those its
attacks share (``mixed`` and null where they differ), and its attack entry lists them with their settings.

    >>> import tempfile, pathlib
    >>> from advkit.report import Report
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> with Report(tmp / "r.h5").start_run("a", kind="attack", config={"attack": "pixle"}) as run:
    ...     run.append({"index": np.array([0, 1]), "label": np.array([3, 4]), "success": np.array([True, False])})
    ...     _ = run.finish({"clean_accuracy": 1.0, "robust_accuracy": 0.5})
    >>> result = export_csv(Report(tmp / "r.h5"), tmp / "csv")
    >>> [p.name for p in result.paths]
    ['r-a.csv']
    >>> print(result.paths[0].read_text().strip())
    index,label,success
    0,3,true
    1,4,false
    >>> summary_json(Report(tmp / "r.h5"))["runs"][0]["threat_model"]
    'L0'
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from advkit.errors import ReportError
from advkit.report.store import IMAGES, Report, RunData, check_number, check_text, missing_run
from advkit.runtime import write_all_atomically, write_atomically

FORMATS = ("csv", "json")
MAX_FLAT_VALUES = 256
"""A per-sample column with more values than this per sample (an image) is not written to CSV."""



@dataclass
class ExportResult:
    """Files written and what was left out of them (``{"run/column": reason}``)."""

    paths: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _selected(report: Report, runs: Sequence[str] | None) -> list[str]:
    known = [r.id for r in report.runs(unreadable=True)]  # a run of a newer schema refuses when read, not the others
    if not runs:
        return known
    for run in runs:
        if run not in known:
            raise missing_run(report.path, run, known)
    return list(runs)


def _cell(value: Any) -> str:
    """One CSV cell: booleans as true/false, NaN as empty, floats round-trip exactly."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else repr(float(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)


def flat_columns(samples: dict[str, np.ndarray], where: str = "") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Per-sample columns as 1-D arrays: multi-valued columns split per value, image-sized ones skipped.

    Returns (columns in order, ``{where/name: reason}`` for the skipped ones).
    """
    out: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    for name, values in samples.items():
        arr = np.asarray(values)
        if arr.ndim <= 1:
            out[name] = arr
            continue
        per_sample = int(np.prod(arr.shape[1:]))
        if name == IMAGES or per_sample > MAX_FLAT_VALUES:
            skipped[f"{where}/{name}" if where else name] = f"{per_sample} values per sample (shape {arr.shape[1:]})"
            continue
        flat = arr.reshape(arr.shape[0], -1)  # (N, d1, d2, ...) -> (N, d1 * d2 * ...)
        for k, position in enumerate(np.ndindex(*arr.shape[1:])):
            out[f"{name}_{'_'.join(str(i) for i in position)}"] = flat[:, k]
    return out, skipped


def write_csv(columns: dict[str, np.ndarray], path: Path) -> None:
    """Write equal-length 1-D columns as a CSV file with a header row (atomically)."""
    write_atomically(path, _csv_writer(columns, path))


def _csv_writer(columns: dict[str, np.ndarray], path: Path) -> Callable[[Path], None]:
    """What writes equal-length 1-D columns, with a header row, as the CSV file ``path`` (into the file it is given)."""
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ReportError(f"cannot write {path}: columns have different lengths {sorted(lengths)}")

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(list(columns))
            for row in zip(*(v.tolist() for v in columns.values())):
                writer.writerow([_cell(v) for v in row])

    return write


def export_csv(report: Report, out_dir: Path, runs: Sequence[str] | None = None, *, overwrite: bool = False) -> ExportResult:
    """One CSV per run (``<report stem>-<run>.csv`` in ``out_dir``), one row per sample.

    Tables of a run (e.g. ``history``, ``moves``, ROC curves) go to ``<report stem>-<run>-<table>.csv``. Existing
    files are replaced only with ``overwrite``, and then every file is checked before the first is written. The files
    are written all or none: a failure part-way (a full disk, a name too long) leaves every file as it was.
    """
    result = ExportResult()
    stem, planned = report.path.stem, []
    for run_id in _selected(report, runs):
        data = report.read(run_id)
        columns, skipped = flat_columns(data.samples, run_id)
        result.skipped.update(skipped)
        if data.has_images:  # not even read: a CSV cell per pixel helps nobody
            result.skipped[f"{run_id}/{IMAGES}"] = "saved images (read them from the report with h5py)"
        planned.append((Path(out_dir) / f"{stem}-{run_id}.csv", columns, f"run {run_id!r}"))
        for name, table in data.tables.items():
            table_columns, table_skipped = flat_columns(table, f"{run_id}/tables/{name}")
            result.skipped.update(table_skipped)
            planned.append((Path(out_dir) / f"{stem}-{run_id}-{name}.csv", table_columns, f"table {name!r} of run {run_id!r}"))
    _check_unique(planned)
    check_targets(report, [path for path, _, _ in planned], overwrite)
    with _appeared_meanwhile():
        result.paths = write_all_atomically([(path, _csv_writer(columns, path)) for path, columns, _ in planned],
                                            replace=overwrite)
    return result


@contextlib.contextmanager
def _appeared_meanwhile() -> Iterator[None]:
    """A file that another process created after :func:`check_targets` looked, as one line: it is never replaced."""
    try:
        yield
    except FileExistsError as exc:
        raise ReportError(f"{exc.filename} appeared while exporting (another export?) and was left as it is; nothing "
                          "was written; pass --overwrite to replace") from None


def _check_unique(planned: Sequence[tuple[Path, Any, str]]) -> None:
    """Run ``a-b`` and table ``b`` of run ``a`` share a file name: refuse instead of writing one over the other."""
    first: dict[Path, str] = {}
    for path, _, what in planned:
        if path in first:
            raise ReportError(f"{first[path]} and {what} would both be exported as {path.name}; export one of the "
                              "runs at a time with --run and another --out")
        first[path] = what


def check_targets(report: Report, paths: Sequence[Path], overwrite: bool) -> None:
    """Refuse to write over the report itself (always) or over any existing file (unless ``overwrite``)."""
    existing = [p for p in paths if p.exists()]
    for path in existing:
        if path.is_dir():
            raise ReportError(f"{path} is a folder, not a file")
        if os.path.samefile(path, report.path):
            raise ReportError(f"{path} is the report being exported; choose another --out")
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more of the {len(paths)} files)" if len(existing) > 1 else ""
        raise ReportError(f"{existing[0]} already exists{more}; pass --overwrite to replace")


_NORM_NAMES = {"l0": "L0", "l1": "L1", "l2": "L2", "linf": "Linf"}  # RobustBench spells norms this way


def threat_model(attack: str | None, params: dict[str, Any]) -> str:
    """The norm of :func:`advkit.attacks.sanity.threat_model` in RobustBench's spelling (``L0``, ``L1``, ``L2``,
    ``Linf``), or ``unknown`` (no attack, or one without a budget such as Gaussian noise)."""
    from advkit.attacks.sanity import threat_model as norm_and_eps  # lazily: it imports torch

    found = norm_and_eps(attack.lower(), params) if attack else None
    return "unknown" if found is None else _NORM_NAMES.get(found[0], found[0])


def _json_number(value: Any) -> Any:
    """NaN/inf -> None, so the document is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _attack_of(data: RunData) -> tuple[str | None, dict[str, Any]]:
    """The attack name and settings a run records, checked to be a string and an object."""
    attack = data.config.get("attack") or data.config.get("attack_name")  # transfer runs record --attack as attack_name
    params = data.config.get("attack_params") or {}
    check_text(data.id, "config 'attack'", attack)
    if not isinstance(params, dict):
        raise ReportError(f"run {data.id}: config 'attack_params' is {params!r}, expected an object")
    return attack, params


def _worst_case_of(data: RunData) -> dict[str, dict[str, Any]] | None:
    """The settings of each attack a worst-case run combines (its config's ``params_by_attack``, else ``{}`` each),
    checked, in the order of ``attacks``; None for any other run."""
    names = data.config.get("attacks")
    if data.kind != "worst-case" or names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ReportError(f"run {data.id}: config 'attacks' is {names!r}, expected a list of attack names")
    by_attack = data.config.get("params_by_attack") or {}
    if not isinstance(by_attack, dict) or not all(isinstance(by_attack.get(name, {}), dict) for name in names):
        raise ReportError(f"run {data.id}: config 'params_by_attack' is {by_attack!r}, expected an object per attack")
    return {name: by_attack.get(name, {}) for name in names}


def _threat_fields(data: RunData, attack: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """``threat_model``, ``eps`` and ``attack`` of a run's entry. A worst-case run's are those its attacks share:
    ``threat_model`` is ``mixed`` when they differ, and ``eps`` null unless all have the same one."""
    by_attack = _worst_case_of(data)
    if by_attack is None:
        return {"threat_model": threat_model(attack, params) if attack else None,
                "eps": check_number(data.id, "config 'attack_params.eps'", params.get("eps")),
                "attack": {"name": attack, "params": params} if attack else None}
    models = {threat_model(name, settings) for name, settings in by_attack.items()}
    budgets = {check_number(data.id, f"config 'params_by_attack.{name}.eps'", settings.get("eps"))
               for name, settings in by_attack.items()}
    return {"threat_model": models.pop() if len(models) == 1 else "mixed" if models else None,
            "eps": budgets.pop() if len(budgets) == 1 else None,
            "attack": {"name": "worst-case", "attacks": list(by_attack), "params": by_attack}}


def _run_entry(report: Report, data: RunData) -> dict[str, Any]:
    config, summary = data.config, data.summary
    attack, params = _attack_of(data)
    threat = _threat_fields(data, attack, params)
    clean = next((data.number(k) for k in ("clean_accuracy", "test_accuracy") if k in summary), None)
    robust = data.number("robust_accuracy")
    model = config.get("model") or config.get("source_model") or summary.get("checkpoint")
    if data.kind == "finetune":  # the entry describes what the run made: the fine-tuned checkpoint, after
        model, clean = summary.get("checkpoint") or config.get("out_path"), data.number("after.clean_accuracy")
    dataset = config.get("data")
    if data.kind in ("attack", "worst-case") and model is None and dataset is None:
        model, dataset = "built-in:mnist-subset-small-cnn", "mnist-subset"  # `advkit attack` without --model/--data
    entry: dict[str, Any] = {
        "run": data.id,
        "kind": data.kind,
        "status": data.status,
        "model": model,
        "dataset": dataset,
        "domain": config.get("domain"),
        "threat_model": threat["threat_model"],
        "eps": threat["eps"],
        "clean_accuracy": clean,
        "robust_accuracy": robust,
        "n_samples": data.n_samples,
        "attack": threat["attack"],
        "seed": data.attrs.get("seed"),
        "command": data.attrs.get("command"),
        "git_sha": data.attrs.get("git_sha"),
        "versions": data.versions,
        "created": data.attrs.get("created"),
        "finished": data.attrs.get("finished"),
        "config": config,
        "summary": summary,
    }
    return entry


def summary_json(report: Report, runs: Sequence[str] | None = None) -> dict[str, Any]:
    """RobustBench-style summary of each run (see the module docstring); plain JSON-able Python."""
    entries = [_run_entry(report, report.read(run_id)) for run_id in _selected(report, runs)]
    return {"format": "advkit-summary", "report": str(report.path), "runs": _strict(entries)}


def _strict(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, np.ndarray):
        return _strict(value.tolist())
    if isinstance(value, np.generic):
        return _strict(value.item())
    return _json_number(value)


def export_json(report: Report, path: Path, runs: Sequence[str] | None = None, *, overwrite: bool = False) -> ExportResult:
    """Write :func:`summary_json` to ``path`` (strict JSON: NaN becomes null); an existing file only with ``overwrite``."""
    check_targets(report, [Path(path)], overwrite)
    document = summary_json(report, runs)
    text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    with _appeared_meanwhile():
        return ExportResult([write_atomically(path, lambda tmp: tmp.write_text(text), replace=overwrite)])


def export(report: Report, fmt: str, out: Path | None = None, runs: Sequence[str] | None = None, *,
           overwrite: bool = False) -> ExportResult:
    """``fmt`` "csv" (``out`` a directory, default beside the report) or "json" (``out`` a file, default
    ``<report>.json``); files that exist are replaced only with ``overwrite``, and the report itself never."""
    if fmt not in FORMATS:
        raise ReportError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    if not report.exists():
        raise ReportError(f"no such report: {report.path}")
    if fmt == "csv":
        return export_csv(report, out if out is not None else report.path.parent / f"{report.path.stem}-csv", runs,
                          overwrite=overwrite)
    return export_json(report, out if out is not None else report.path.with_suffix(".json"), runs, overwrite=overwrite)
