"""Unreadable, foreign or damaged files: one-line ReportErrors naming what is wrong, and never a write."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from advkit.errors import ReportError
from advkit.report import Report

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
    (lambda g: _replace(g["samples"], "adv_images", np.zeros((3, 1, 2, 2), np.float32)),
     "/runs/r/samples/adv_images has dtype float32, expected uint8 or float16"),
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
