"""Unreadable, foreign or damaged files: one-line ReportErrors naming what is wrong, and never a write."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from advkit.errors import ReportError
from advkit.report import Report

SCALE = int(os.environ.get("ADVKIT_FUZZ_SCALE", "1"))

ColumnsFn = Callable[..., dict[str, np.ndarray]]


def _attempts(report: Report) -> list[Callable[[], object]]:
    return [report.runs, lambda: report.read("r"), lambda: report.start_run("r", kind="attack", config={}),
            lambda: report.start_run("new", kind="attack", config={}, overwrite=True)]


def _assert_untouched(report_path: Path, before: bytes) -> None:
    assert report_path.read_bytes() == before
    leftovers = sorted(p.name for p in report_path.parent.iterdir())
    assert leftovers in (["report.h5"], ["report.h5", "report.h5.lock"])


def test_garbage_file_is_refused_and_left_alone(report: Report, report_path: Path) -> None:
    garbage = bytes(range(256)) * 40
    report_path.write_bytes(garbage)
    for attempt in _attempts(report):
        with pytest.raises(ReportError, match=r"report\.h5 is not a readable HDF5 file: .*signature") as err:
            attempt()
        assert "\n" not in str(err.value)
    _assert_untouched(report_path, garbage)


def test_truncated_report_is_refused(report: Report, report_path: Path, columns: ColumnsFn) -> None:
    with report.start_run("r", kind="attack", config={}) as run:
        run.append(columns(np.arange(50), images="uint8"))
        run.finish()
    truncated = report_path.read_bytes()[: report_path.stat().st_size // 2]
    report_path.write_bytes(truncated)
    for attempt in _attempts(report):
        with pytest.raises(ReportError, match=r"report\.h5 is not a readable HDF5 file: .*truncated"):
            attempt()
    _assert_untouched(report_path, truncated)


def test_other_hdf5_files_are_not_written_into(report: Report, report_path: Path) -> None:
    with h5py.File(report_path, "w") as f:
        f["images"] = np.zeros((2, 3))
    before = report_path.read_bytes()
    for attempt in _attempts(report):
        with pytest.raises(ReportError, match="is an HDF5 file but not an advkit report"):
            attempt()
    _assert_untouched(report_path, before)


def test_newer_schema_is_refused(report: Report, report_path: Path) -> None:
    with report.start_run("r", kind="attack", config={}) as run:
        run.finish()
    with h5py.File(report_path, "r+") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(ReportError, match="uses report schema 99; this advkit reads up to 1"):
        report.runs()


@pytest.mark.parametrize(("version", "message"), [
    (2, r"report\.h5: run 'r' uses report schema 2; this advkit reads up to 1: upgrade advkit$"),
    (0, r"report\.h5: run 'r' uses report schema 0, which no advkit writes \(versions start at 1\)$"),
])
def test_a_run_of_an_unknown_schema_is_refused(report: Report, report_path: Path, columns: ColumnsFn, version: int,
                                               message: str) -> None:
    """Each run records the schema it was written with, but only the file's was checked: a run of a newer schema
    (say, one copied into this file by h5py) was read, resumed and exported as if it were of this one."""
    with report.start_run("r", kind="attack", config={}) as run:
        run.append(columns([0, 1, 2]))
        run.finish()
    report.start_run("running", kind="attack", config={}).close()
    with h5py.File(report_path, "r+") as f:
        f["runs/r"].attrs["schema_version"] = np.int64(version)
    before = report_path.read_bytes()
    attempts = [report.runs, lambda: report.read("r"), lambda: report.start_run("r", kind="attack", config={}),
                lambda: report.start_run("r", kind="attack", config={}, overwrite=True),
                lambda: report.check_start("r", kind="attack", config={})]
    for attempt in attempts:
        with pytest.raises(ReportError, match=message):
            attempt()
    _assert_untouched(report_path, before)
    assert report.read("running").status == "running"  # reading another run by name still works
    listed = report.runs(unreadable=True)  # the listing says what it cannot read rather than failing as a whole
    assert [(r.id, r.status, bool(r.problem)) for r in listed] == [("r", "", True), ("running", "running", False)]
    assert listed[0].problem == ("schema 0, which no advkit writes" if version < 1 else
                                 "written by a newer advkit (schema 2): upgrade advkit to read it")


def _damage(path: Path, edit: Callable[[h5py.Group], None]) -> None:
    with h5py.File(path, "r+") as f:
        edit(f["runs/r"])


def _replace(group: h5py.Group, name: str, data: np.ndarray) -> None:
    del group[name]
    group[name] = data


@pytest.mark.parametrize(("edit", "message"), [
    (lambda g: g["samples"].__delitem__("index"), "/runs/r/samples/index is missing"),
    (lambda g: _replace(g["samples"], "success", np.zeros(3)),
     "/runs/r/samples/success has dtype float64, expected bool"),
    (lambda g: _replace(g["samples"], "adv_images", np.zeros((3, 1, 2, 2), np.float64)),
     "/runs/r/samples/adv_images has dtype float64, expected uint8 or float16 or float32"),
    (lambda g: _replace(g["samples"], "label", np.zeros(2, np.int64)),
     "datasets in /runs/r/samples have different lengths"),
    (lambda g: _replace(g["samples"], "index", np.array([2, 1, 0])), "/runs/r/samples/index is not sorted and unique"),
    (lambda g: _replace(g["samples"], "label", np.int64(3)), "/runs/r/samples/label is not a dataset with one row"),
    (lambda g: g.__delitem__("samples"), "/runs/r/samples is missing or not a group"),
    (lambda g: g.attrs.__delitem__("kind"), "/runs/r has no attribute 'kind'"),
    (lambda g: g.attrs.__setitem__("seed", "zero"), "attribute 'seed' of /runs/r is str, expected int"),
    (lambda g: g.attrs.__setitem__("config", "{eps: 1"), "attribute 'config' of /runs/r is not a JSON object"),
    (lambda g: g.attrs.__setitem__("status", "done"), "/runs/r has status 'done', expected one of running, complete"),
    (lambda g: g["tables"].create_dataset("loose", data=[1]), "/runs/r/tables/loose is not a group of columns"),
])
def test_damaged_run_names_the_path(report: Report, report_path: Path, columns: ColumnsFn,
                                    edit: Callable[[h5py.Group], None], message: str) -> None:
    with report.start_run("r", kind="attack", config={}) as run:
        run.append(columns([0, 1, 2], images="uint8"))
        run.add_table("history", {"epoch": [1]})
        run.finish()
    _damage(report_path, edit)
    before = report_path.read_bytes()
    with pytest.raises(ReportError, match=re.escape(message)):
        report.read("r")
    if "samples" not in message and "tables" not in message:  # attributes are checked when listing too
        with pytest.raises(ReportError, match=re.escape(message)):
            report.runs()
        listed = report.runs(unreadable=True)  # or the listing says so in the run's row, not failing as a whole
        assert [(r.id, r.status) for r in listed] == [("r", "")] and listed[0].problem.startswith("damaged: ")
        assert message in listed[0].problem
        with pytest.raises(ReportError, match=re.escape(message)):
            report.start_run("r", kind="attack", config={}, overwrite=True)
    assert report_path.read_bytes() == before


def test_unreadable_journal_chunk_columns_are_reported(report: Report, report_path: Path) -> None:
    run = report.start_run("r", kind="attack", config={})
    run.append({"index": [0], "label": [1]})
    run.close()
    # a chunk with other columns than the first one can only come from outside advkit
    np.savez(report_path.parent / "report.h5.parts" / "r" / "chunk-000001.npz", index=np.array([1]))
    with pytest.raises(ReportError, match=r"chunk-000001\.npz has columns \['index'\], earlier chunks have"):
        report.read("r")


# ------------------------------------------------------------------ every report command on a damaged report

ROBUSTNESS, TRANSFER = "/runs/robustness", "/runs/transfer-white-pixle-rgb-ir"


@pytest.fixture(scope="module")
def figure_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report with data for every figure type (tests/report/test_report_figures.py), to copy and damage."""
    from tests.report.test_report_figures import write_full_report

    path = tmp_path_factory.mktemp("figures") / "all.h5"
    write_full_report(path)
    return path


def _set_config(key: str, value: object) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        config = json.loads(f[ROBUSTNESS].attrs["config"])
        f[ROBUSTNESS].attrs["config"] = json.dumps({**config, key: value})

    return edit


def _delete(path: str) -> Callable[[h5py.File], None]:
    return lambda f: f.__delitem__(path)


def _report_commands(cli: Callable[..., object], path: Path) -> list[object]:
    """Every `advkit report` command on ``path``, each run once."""
    runs = [r.id for r in Report(path).runs()] if _readable(path) else ["robustness"]
    return [cli("report", "plot", path, "--out", path.parent / "figs", "--max-images", "2"), cli("report", "show", path),
            *(cli("report", "show", path, run) for run in runs), cli("report", "export", path, "--out", path.parent / "csv"),
            cli("report", "export", path, "--format", "json", "--out", path.parent / "r.json"), cli("report", "compare", path)]


def _readable(path: Path) -> bool:
    try:
        Report(path).runs()
    except ReportError:
        return False
    return True


def _ok_or_one_line(result: object) -> None:
    code, stderr = result.code, result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert code == 0 or (code == 1 and len(lines) == 1 and lines[0].startswith("error: ")), (code, stderr)


@pytest.mark.parametrize(("edit", "message"), [
    (_set_config("corruptions", 5), "run robustness: config 'corruptions' is 5, expected a non-empty list of str"),
    (_set_config("severities", ["high"]), "run robustness: config 'severities' is [\"high\"], expected a non-empty list of int"),
    (_set_config("corruptions", ["fog", "contrast", "snow"]),
     "run robustness: per-sample column 'model_correct' has 2 x 3 corruptions x severities per sample, but the config lists 3 x 3"),
    (_delete(f"{TRANSFER}/tables/moves/dst"), f"{TRANSFER}/tables/moves has no column 'dst'"),
    (lambda f: f[f"{TRANSFER}/tables/moves/dst"].__setitem__(0, 10**6),
     "run transfer-white-pixle-rgb-ir: table 'moves': move program has positions outside a 16x16 image"),
    (_delete(f"{TRANSFER}/samples/src_adv_pred"), "run transfer-white-pixle-rgb-ir: has no per-sample column 'src_adv_pred'"),
    (lambda f: f[f"{TRANSFER}/summary"].attrs.__setitem__("transfer_rate", "high"),
     "run transfer-white-pixle-rgb-ir: summary 'transfer_rate' is 'high', expected a number"),
    (lambda f: f[f"{ROBUSTNESS}/summary"].attrs.__setitem__("clean_accuracy", "x"),
     "run robustness: summary 'clean_accuracy' is 'x', expected a number"),
    (lambda f: f[f"{TRANSFER}/summary"].attrs.__setitem__("transfer_rate", np.zeros((2, 2))),  # hypothesis found it
     "run transfer-white-pixle-rgb-ir: summary 'transfer_rate' is array([[0., 0.], [0., 0.]]), expected a number"),
])
def test_plot_of_a_damaged_report_is_one_line_naming_the_run(cli: Callable[..., object], figure_report: Path, tmp_path: Path,
                                                             edit: Callable[[h5py.File], None], message: str) -> None:
    path = tmp_path / "all.h5"
    shutil.copyfile(figure_report, path)
    with h5py.File(path, "r+") as f:
        edit(f)
    result = cli("report", "plot", path, "--out", tmp_path / "figs")
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert result.code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith(message), lines  # type: ignore[attr-defined]
    assert [p.name for p in (tmp_path / "figs").glob("*")] == []  # all figures or none (and no staging folder left)
    for other in _report_commands(cli, path):
        _ok_or_one_line(other)


FIGURE_OBJECTS = [f"{ROBUSTNESS}/samples/model_correct", f"{TRANSFER}/tables/moves/src",
                  f"{TRANSFER}/tables/moves/sample", f"{TRANSFER}/tables/moves/from_clean", f"{TRANSFER}/samples/src_success",
                  f"{TRANSFER}/samples/tgt_adv_pred", "/runs/detect-ae/tables/roc/fpr", "/runs/attack-pixle/samples/adv_images",
                  "/runs/attack-pixle/samples/success", "/runs/attack-pgd/samples/l2", f"{TRANSFER}/tables/moves"]
FIGURE_ATTRS = [f"{ROBUSTNESS}:config", f"{TRANSFER}:config", "/runs/attack-pixle:config", f"{TRANSFER}/summary:transfer_rate",
                f"{ROBUSTNESS}/summary:clean_accuracy", "/runs/detect-ae:kind"]
CONFIGS = [{"corruptions": 5}, {"severities": [1]}, {"corruptions": ["fog"]}, {"severities": "1"}, {"data": 5},
           {"data_param": "size=16"}, {"domain": [1]}, {"direction": 7}, {"direction": "ir->rgb"}, {"data": "no-such-data"}]


DAMAGE = ["delete", "string", "float", "2-D", "short", "huge", "reversed"]


@pytest.mark.slow
@settings(max_examples=20 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(FIGURE_OBJECTS + FIGURE_ATTRS), how=st.sampled_from(DAMAGE), config=st.sampled_from(CONFIGS))
def test_report_commands_on_damaged_figure_data(cli: Callable[..., object], figure_report: Path, target: str, how: str,
                                                config: dict[str, object]) -> None:
    """Damage anything a figure reads: plot, show, export and compare each end with exit 0 or one `error:` line."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "all.h5"
        shutil.copyfile(figure_report, path)
        with h5py.File(path, "r+") as f:
            _damage_figure_data(f, target, how, config)
        for result in _report_commands(cli, path):
            _ok_or_one_line(result)


def _damage_figure_data(f: h5py.File, target: str, how: str, config: dict[str, object]) -> None:
    """A config attribute gets ``config`` merged in; other attributes and datasets are damaged as ``how`` says."""
    if target.endswith(":config"):
        owner = target.split(":")[0]
        f[owner].attrs["config"] = json.dumps({**json.loads(f[owner].attrs["config"]), **config})
    elif ":" in target:
        owner, attr = target.split(":")
        if how == "delete":
            del f[owner].attrs[attr]
        else:
            f[owner].attrs[attr] = {"string": "nonsense", "float": 1.5, "2-D": np.zeros((2, 2)), "short": "", "huge": 1e300,
                                    "reversed": "[]"}[how]
    else:
        old = f[target]
        data = old[()] if isinstance(old, h5py.Dataset) else np.arange(3)
        del f[target]
        rows = max(len(np.atleast_1d(data)), 1)
        replacement = {"delete": None, "string": np.array([b"x"] * rows), "float": np.asarray(data, np.float64) + 0.5,
                       "2-D": np.zeros((rows, 2)), "short": np.asarray(data)[:1], "huge": np.full(np.shape(data), 2**40),
                       "reversed": np.asarray(data)[::-1]}[how]
        if replacement is not None:
            f.create_dataset(target, data=replacement)
