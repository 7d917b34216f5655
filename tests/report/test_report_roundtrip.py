"""Writing runs and reading them back: every column type, tables, attributes, several runs per file."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from advkit.errors import ReportError
from advkit.report import SCHEMA_VERSION, Report
from advkit.report.schema import SAMPLE_COLUMNS

ColumnsFn = Callable[..., dict[str, np.ndarray]]


@pytest.mark.parametrize("images", ["uint8", "float16", "float32"])
def test_roundtrip_all_column_types(report: Report, report_path: Path, images: str, columns: ColumnsFn) -> None:
    run = report.start_run("attack-pixle", kind="attack", config={"eps": 0.1, "steps": 10}, seed=7,
                           command="advkit attack --attack pixle")
    run.append(columns([5, 1, 3], images=images) | {"note": np.array(["a", "bb", "ccc"])})
    run.append(columns([0, 4, 2], images=images) | {"note": np.array(["d", "e", "f"])})
    info = run.finish(summary={"robust_accuracy": 0.5, "n": 6, "attack": "pixle"})
    assert (info.status, info.n_samples) == ("complete", 6)

    data = report.read("attack-pixle", images=True)
    expected = columns(np.arange(6), images=images)
    assert list(data.samples)[0] == "index"
    for name, values in expected.items():
        stored = np.dtype(images) if name == "adv_images" else np.dtype(SAMPLE_COLUMNS[name].cast_to)
        assert data.samples[name].dtype == stored, name
        np.testing.assert_allclose(data.samples[name], values.astype(data.samples[name].dtype), err_msg=name)
    assert data.samples["l2"].dtype == np.float32 and data.samples["success"].dtype == np.bool_
    assert data.samples["note"].tolist() == ["d", "bb", "f", "ccc", "e", "a"]
    assert "adv_images" not in report.read("attack-pixle").samples  # images are opt-in
    assert data.summary == {"robust_accuracy": 0.5, "n": 6, "attack": "pixle"}
    assert data.config == {"eps": 0.1, "steps": 10}
    assert data.n_samples == 6 and {"python", "numpy", "h5py"} <= set(data.versions)

    with h5py.File(report_path, "r") as f:  # the layout as plain h5py sees it
        assert f.attrs["format"] == "advkit-report"
        group = f["runs/attack-pixle"]
        assert group.attrs["status"] == "complete" and group.attrs["seed"] == 7
        assert json.loads(group.attrs["config"]) == {"eps": 0.1, "steps": 10}
        assert group.attrs["command"] == "advkit attack --attack pixle"
        assert group.attrs["schema_version"] == SCHEMA_VERSION
        versions = json.loads(group.attrs["versions"])
        assert {"python", "numpy", "h5py"} <= set(versions)
        assert re.fullmatch(r"unknown|[0-9a-f]{40,64}", group.attrs["git_sha"])
        assert group.attrs["created"].endswith("+00:00") and group.attrs["finished"] >= group.attrs["created"]
        ds = group["samples/adv_images"]
        assert ds.chunks == (1, *ds.shape[1:]) and ds.compression == "gzip"
        assert group["samples/index"].dtype == np.int64 and group["samples/queries"].dtype == np.int64


def test_tables_and_several_runs(report: Report, columns: ColumnsFn) -> None:
    with report.start_run("train", kind="train", config={"epochs": 3}) as run:
        run.add_table("history", {"epoch": [1, 2], "train_loss": [1.0, 0.5]})
        run.add_table("history", {"epoch": np.arange(1, 4), "train_loss": [1.0, 0.5, 0.25],
                                  "train_acc": [0.5, 0.7, 0.9], "val_acc": [0.4, 0.6, np.nan]})  # last write wins
        run.finish(summary={"val_acc": 0.6})
    with report.start_run("attack", kind="attack", config={"eps": 0.1}) as run:
        run.append(columns([0, 1]))
        run.finish()

    infos = report.runs()
    assert [(r.id, r.kind, r.status, r.n_samples) for r in infos] == [
        ("train", "train", "complete", 0), ("attack", "attack", "complete", 2)]
    train = report.read("train")
    assert train.samples["index"].shape == (0,) and train.samples["index"].dtype == np.int64
    history = train.tables["history"]
    np.testing.assert_array_equal(history["epoch"], [1, 2, 3])
    np.testing.assert_array_equal(history["val_acc"], [0.4, 0.6, np.nan])
    assert report.read("attack").tables == {}


def test_running_run_is_visible_with_journaled_samples(report: Report, report_path: Path, columns: ColumnsFn) -> None:
    run = report.start_run("attack", kind="attack", config={})
    run.append(columns([3, 1]))
    run.add_table("progress", {"step": [1]})
    with h5py.File(report_path, "r") as f:
        assert f["runs/attack"].attrs["status"] == "running"
        assert len(f["runs/attack/samples"]) == 0  # samples live in the journal until finish()
    assert sorted(p.name for p in (report_path.parent / "report.h5.parts" / "attack").iterdir()) == [
        "chunk-000000.npz", "table-progress.npz"]
    [info] = report.runs()
    assert (info.status, info.n_samples, info.finished) == ("running", 2, "")
    data = report.read("attack")
    np.testing.assert_array_equal(data.samples["index"], [1, 3])
    assert data.tables == {"progress": {"step": np.array([1])}}
    run.finish()
    assert not (report_path.parent / "report.h5.parts").exists()


def test_numpy_scalars_in_summary_and_config_roundtrip(report: Report) -> None:
    config = {"eps": np.float32(0.5), "steps": np.int64(3), "flag": np.bool_(True), "shape": (2, 3),
              "nested": {"norm": "linf", "arr": np.arange(2)}, "none": None}
    with report.start_run("r", kind="attack", config=config, seed=np.int64(5)) as run:
        run.finish(summary={"acc": np.float64(0.25), "n": np.int32(4), "ok": np.bool_(False), "flag": True,
                            "skipped": None, "hist": np.array([1, 2, 3]), "name": np.str_("x")})
    data = report.read("r")
    assert data.config == {"eps": 0.5, "steps": 3, "flag": True, "shape": [2, 3],
                           "nested": {"norm": "linf", "arr": [0, 1]}, "none": None}
    assert data.attrs["seed"] == 5 and type(data.attrs["seed"]) is int
    summary = dict(data.summary)
    np.testing.assert_array_equal(summary.pop("hist"), [1, 2, 3])
    assert summary == {"acc": 0.25, "n": 4, "ok": False, "flag": True, "name": "x"}
    assert [type(summary[k]) for k in ("acc", "n", "ok", "flag")] == [float, int, bool, bool]
    # the same config, given as numpy values again, is the same run (resumable, not a conflict)
    with pytest.raises(ReportError, match="already has a complete run 'r'"):
        report.start_run("r", kind="attack", config=config, seed=5)


def test_a_summary_reads_back_in_the_order_it_was_written(report: Report) -> None:
    """Summaries came back sorted by key, so a finished run's re-run printed its --json keys in another order."""
    with report.start_run("r", kind="attack", config={}, seed=0) as run:
        run.finish(summary={"n": 3, "clean_accuracy": 1.0, "attack_success_rate": 0.5, "b": 1, "a": 2})
    assert list(report.read("r").summary) == ["n", "clean_accuracy", "attack_success_rate", "b", "a"]
    assert list(next(r for r in report.runs() if r.id == "r").summary) == ["n", "clean_accuracy", "attack_success_rate", "b", "a"]


def test_torch_tensors_are_accepted(report: Report) -> None:
    torch = pytest.importorskip("torch")
    with report.start_run("t", kind="attack", config={}) as run:
        run.append({"index": torch.tensor([1, 0]), "success": torch.tensor([True, False]),
                    "l2": torch.tensor([0.5, 1.0], dtype=torch.float64)})
        run.finish()
    data = report.read("t")
    np.testing.assert_array_equal(data.samples["success"], [False, True])
    assert data.samples["l2"].dtype == np.float32


@pytest.mark.parametrize(("bad", "message"), [
    ({"label": [1]}, "needs a dict of columns including 'index'"),
    ({"index": [0, 1], "label": [1]}, "column 'label' has 1 rows but 'index' has 2"),
    ({"index": [0], "success": [1]}, "column 'success' must be bool, got int64"),
    ({"index": [0.5]}, "column 'index' must be int64, got float64"),
    ({"index": [-1]}, "negative values"),
    ({"index": 3}, "one row per sample, got a scalar"),
    ({"index": [0], "adv_images": np.zeros((1, 4, 4))}, "'adv_images' must have 4 dimension"),
    ({"index": [0], "adv_images": np.full((1, 1, 2, 2), 7.0, np.float32)}, "float pixels outside [0, 1]"),
    ({"index": [0], "adv_images": np.full((1, 1, 2, 2), np.nan, np.float32)}, "float pixels outside [0, 1] (or NaN)"),
    ({"index": [0], "bad name": [1]}, "invalid column name 'bad name'"),
    ({"index": [0], "obj": np.array([{}], dtype=object)}, "use bool, integer, float or str"),
])
def test_append_rejects_bad_columns(report: Report, bad: dict, message: str) -> None:
    with report.start_run("r", kind="attack", config={}) as run, pytest.raises(ReportError, match=re.escape(message)):
        run.append(bad)


def test_columns_must_stay_consistent_across_chunks(report: Report) -> None:
    with report.start_run("r", kind="attack", config={}) as run:
        run.append({"index": [0], "l2": [0.5], "extra": np.array([1], np.int32)})
        with pytest.raises(ReportError, match=r"missing: l2; new: linf"):
            run.append({"index": [1], "linf": [0.5], "extra": [1]})
        with pytest.raises(ReportError, match="'extra' is float64 here but int32"):
            run.append({"index": [1], "l2": [0.5], "extra": [1.5]})
        run.append({"index": [1], "l2": [0.5], "extra": np.array([2], np.int64)})  # same kind: cast
        run.finish()
    with report.start_run("images", kind="attack", config={}) as run:  # a cast would keep 200 in a [0, 1] column
        run.append({"index": [0], "adv_images": np.full((1, 1, 2, 2), 0.5, np.float32)})
        with pytest.raises(ReportError, match=r"adv_images are uint8 here but float32 in earlier chunks"):
            run.append({"index": [1], "adv_images": np.full((1, 1, 2, 2), 200, np.uint8)})
    assert report.read("r").samples["extra"].dtype == np.int32


def test_bad_tables_and_summaries(report: Report) -> None:
    with report.start_run("r", kind="attack", config={}) as run:
        with pytest.raises(ReportError, match="different lengths"):
            run.add_table("history", {"epoch": [1, 2], "loss": [1.0]})
        with pytest.raises(ReportError, match="invalid table name"):
            run.add_table("../x", {"epoch": [1]})
        with pytest.raises(ReportError, match="summary value 'per_class' has type dict"):
            run.finish(summary={"per_class": {"cat": 0.5}})
        run.finish(summary={"ok": 1})  # a rejected summary leaves the writer usable
        with pytest.raises(ReportError, match="already finished"):
            run.append({"index": [0]})
    assert report.read("r").summary == {"ok": 1}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"run_id": "a/b"}, "invalid run id 'a/b'"),
    ({"run_id": ""}, "invalid run id ''"),
    ({"kind": "at tack"}, "invalid kind"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"config": {"f": object()}}, "config value 'f' has type object"),
    ({"config": [1, 2]}, "config must be a dict"),
])
def test_start_run_rejects_bad_arguments(report: Report, report_path: Path, kwargs: dict, message: str) -> None:
    args = {"run_id": "r", "kind": "attack", "config": {}} | kwargs
    with pytest.raises(ReportError, match=re.escape(message)):
        report.start_run(args.pop("run_id"), **args)
    assert not report_path.exists()


def test_unknown_run_lists_available_ids(report: Report) -> None:
    for run_id in ("b", "a"):
        with report.start_run(run_id, kind="attack", config={}) as run:
            run.finish()
    with pytest.raises(ReportError, match=r"has no run 'c'; runs: a, b$"):
        report.read("c")
    with report.start_run("attack-fgsm", kind="attack", config={}) as run:
        run.finish()
    with pytest.raises(ReportError, match=r"has no run 'attack-fgms' \(did you mean attack-fgsm\?\); runs: a, attack-fgsm, b$"):
        report.read("attack-fgms")


def test_missing_report(report: Report) -> None:
    assert not report.exists()
    with pytest.raises(ReportError, match="report.h5 does not exist"):
        report.runs()


def test_report_directory_is_created_and_symlink_kept(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "dir" / "real.h5"
    with Report(target).start_run("r", kind="attack", config={}) as run:
        run.finish()
    link = tmp_path / "link.h5"
    link.symlink_to(target)
    with Report(link).start_run("s", kind="attack", config={}) as run:
        run.finish()
    assert link.is_symlink() and [r.id for r in Report(target).runs()] == ["r", "s"]


def test_check_start_refuses_an_invalid_run_id_before_any_work(report: Report) -> None:
    """transfer checks its runs before attacking: a bad --run was found only after the first direction's attack."""
    with pytest.raises(ReportError, match=r"invalid run id 'a b/c-rgb-ir'"):
        report.check_start("a b/c-rgb-ir", kind="transfer", config={})


def test_a_rewrite_the_disk_cannot_hold_is_refused_before_hdf5_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a full disk HDF5 failed while closing the copy, and h5py crashed the process (exit 139) instead of raising;
    the report and the journal survived, so the same command resumed once space was freed."""
    import shutil
    from collections import namedtuple

    import advkit.report.store as store

    report = Report(tmp_path / "r.h5")
    writer = report.start_run("a", kind="attack", config={})
    writer.append({"index": np.arange(4), "label": np.zeros(4, np.int64), "success": np.ones(4, bool),
                   "adv_images": np.zeros((4, 1, 64, 64), np.float32)})
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(store.shutil, "disk_usage", lambda _path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(ReportError, match=r"could not write .*r.h5: 0.0 MB free on its disk, about [\d.]+ MB needed"):
        writer.finish({})
    writer.close()
    monkeypatch.setattr(store.shutil, "disk_usage", shutil.disk_usage)
    assert [(r.id, r.status, r.n_samples) for r in report.runs()] == [("a", "running", 4)]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
