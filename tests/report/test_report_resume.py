"""Interrupted runs: resuming, deduplication, conflicts with existing runs, overwrite, the write lock."""

from __future__ import annotations

import gc
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advkit.errors import ReportError
from advkit.report import Report

ColumnsFn = Callable[..., dict[str, np.ndarray]]
CONFIG = {"attack": "pixle", "eps": 0.1, "params": {"steps": 10}}


def test_resume_after_crash(report: Report, report_path: Path, columns: ColumnsFn) -> None:
    run = report.start_run("attack", kind="attack", config=CONFIG, seed=3, command="first")
    assert not run.resumed and run.done_indices.size == 0
    run.append(columns([7, 2, 9], images="uint8"))
    run.append(columns([0, 5], images="uint8"))
    created = report.runs()[0].created
    del run
    gc.collect()  # a forgotten writer releases the lock, as a dead process does

    [info] = report.runs()
    assert (info.status, info.n_samples) == ("running", 5)
    run = report.start_run("attack", kind="attack", config=CONFIG, seed=3, command="second")
    assert run.resumed
    np.testing.assert_array_equal(run.done_indices, [0, 2, 5, 7, 9])
    todo = [i for i in range(12) if i not in set(run.done_indices.tolist())]
    run.append(columns(todo[:4] + [2], images="uint8"))  # 2 again: the journaled row wins
    run.append(columns(todo[4:], images="uint8"))
    np.testing.assert_array_equal(run.done_indices, np.arange(12))
    run.finish(summary={"n": 12})

    data = report.read("attack", images=True)
    expected = columns(np.arange(12), images="uint8")
    for name in ("index", "label", "queries", "success"):
        np.testing.assert_array_equal(data.samples[name], expected[name], err_msg=name)
    np.testing.assert_array_equal(data.samples["adv_images"], expected["adv_images"])
    assert (data.status, data.attrs["created"], data.attrs["command"]) == ("complete", created, "first")
    assert not (report_path.parent / "report.h5.parts").exists()


def test_duplicates_keep_the_first_row(report: Report) -> None:
    with report.start_run("r", kind="attack", config={}) as run:
        run.append({"index": [3, 1, 3], "label": [30, 10, 31]})
        run.append({"index": [1, 0], "label": [11, 0]})
        np.testing.assert_array_equal(run.done_indices, [0, 1, 3])
        np.testing.assert_array_equal(run.samples()["label"], [0, 10, 30])
        run.finish()
    np.testing.assert_array_equal(report.read("r").samples["label"], [0, 10, 30])


def test_leaving_the_block_with_an_exception_does_not_finish(report: Report) -> None:
    with pytest.raises(KeyboardInterrupt), report.start_run("r", kind="attack", config={}) as run:
        run.append({"index": [0, 1]})
        raise KeyboardInterrupt
    assert report.runs()[0].status == "running"
    with report.start_run("r", kind="attack", config={}) as run:
        assert run.resumed and run.done_indices.tolist() == [0, 1]
        run.finish()
    assert report.runs()[0].status == "complete"


def test_complete_run_is_not_restarted(report: Report) -> None:
    with report.start_run("attack-pgd", kind="attack", config=CONFIG) as run:
        run.finish()
    with pytest.raises(ReportError) as err:
        report.start_run("attack-pgd", kind="attack", config=CONFIG)
    assert str(err.value) == (f"{report.path} already has a complete run 'attack-pgd'; "
                              "use --run NAME for a new run or --overwrite")


@pytest.mark.parametrize("status", ["running", "complete"])
@pytest.mark.parametrize(("change", "detail"), [
    ({"config": {**CONFIG, "eps": 0.3}}, "(eps: 0.1 vs 0.3 now)"),
    ({"config": {**CONFIG, "params": {"steps": 20}}}, "(params.steps: 10 vs 20 now)"),
    ({"config": {"attack": "pixle", "eps": 0.1}}, "(params: {\"steps\": 10} vs <unset> now)"),
    ({"config": {**CONFIG, "attack": "square"}}, "(attack: \"pixle\" vs \"square\" now)"),
    ({"seed": 1}, "(seed: 0 vs 1 now)"),
])
def test_different_config_is_refused(report: Report, status: str, change: dict, detail: str) -> None:
    run = report.start_run("attack-pgd", kind="attack", config=CONFIG, seed=0)
    run.finish() if status == "complete" else run.close()
    with pytest.raises(ReportError) as err:
        report.start_run("attack-pgd", **{"kind": "attack", "config": CONFIG, "seed": 0, **change})
    assert str(err.value) == (f"{report.path} already has run 'attack-pgd' with a different config {detail}; "
                              "pass --run NAME or --overwrite")


def test_a_relative_path_recorded_by_older_advkit_resumes_as_the_same_file(report: Report, report_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("model.safetensors", "other.safetensors", "cifar"):
        (report_path.parent / name).write_bytes(b"")
    monkeypatch.chdir(report_path.parent.parent)  # the old relative spelling is found next to the report, not here
    old = {"model": "model.safetensors", "data": "cifar10:cifar", "eps": 0.1}
    report.start_run("r", kind="attack", config=old).close()
    absolute = {"model": str(report_path.parent / "model.safetensors"), "data": f"cifar10:{report_path.parent / 'cifar'}"}
    with report.start_run("r", kind="attack", config={**old, **absolute}) as run:
        assert run.resumed
    other = {**old, **absolute, "model": str(report_path.parent / "other.safetensors")}
    with pytest.raises(ReportError, match='with a different config \\(model: "model.safetensors" vs'):
        report.start_run("r", kind="attack", config=other)


def test_different_kind_is_refused(report: Report) -> None:
    report.start_run("r", kind="train", config={}).close()
    with pytest.raises(ReportError, match="already has run 'r' of kind 'train', not 'attack'; pass --run NAME"):
        report.start_run("r", kind="attack", config={})


def test_overwrite_keeps_the_complete_run_until_finish(report: Report, report_path: Path, columns: ColumnsFn) -> None:
    with report.start_run("r", kind="attack", config={"eps": 0.1}) as run:
        run.append(columns([0, 1, 2]))
        run.finish(summary={"version": 1})
    new = report.start_run("r", kind="attack", config={"eps": 0.3}, overwrite=True)
    new.append(columns([5]))
    old = report.read("r")
    assert (old.status, old.config, old.summary, old.samples["index"].tolist()) == (
        "complete", {"eps": 0.1}, {"version": 1}, [0, 1, 2])
    del new  # an interrupted overwrite leaves the old run as it was
    gc.collect()  # a forgotten writer releases the lock, as a dead process does
    with h5py.File(report_path, "r") as f:
        assert f["runs/r"].attrs["status"] == "complete" and f["runs/r/samples/index"].shape == (3,)

    new = report.start_run("r", kind="attack", config={"eps": 0.3}, overwrite=True)
    assert new.done_indices.size == 0  # an overwrite starts from scratch
    new.append(columns([7, 8]))
    new.finish(summary={"version": 2})
    data = report.read("r")
    assert (data.config, data.summary, data.samples["index"].tolist()) == ({"eps": 0.3}, {"version": 2}, [7, 8])
    assert [r.id for r in report.runs()] == ["r"]


def test_overwrite_of_running_run_drops_its_journal(report: Report, columns: ColumnsFn) -> None:
    run = report.start_run("r", kind="attack", config={"eps": 0.1})
    run.append(columns([0, 1]))
    del run
    gc.collect()  # a forgotten writer releases the lock, as a dead process does
    run = report.start_run("r", kind="attack", config={"eps": 0.1}, overwrite=True)
    assert run.done_indices.size == 0 and not run.resumed
    info = report.runs()[0]
    assert (info.status, info.n_samples) == ("running", 0)
    run.finish()


def test_overwrite_replaces_in_place_and_keeps_other_runs(report: Report, columns: ColumnsFn) -> None:
    for run_id in ("c", "a", "b"):
        with report.start_run(run_id, kind="attack", config={}) as run:
            run.append(columns([1]))
            run.finish()
    with report.start_run("a", kind="attack", config={"x": 1}, overwrite=True) as run:
        run.finish()
    assert [(r.id, r.n_samples) for r in report.runs()] == [("c", 1), ("a", 0), ("b", 1)]


def test_stray_temp_files_are_ignored_and_removed(report: Report, report_path: Path, columns: ColumnsFn) -> None:
    run = report.start_run("r", kind="attack", config={})
    run.append(columns([0, 1]))
    del run
    gc.collect()  # a forgotten writer releases the lock, as a dead process does
    journal = report_path.parent / "report.h5.parts" / "r"
    half = journal / ".chunk-000001.npz.tmp-99999"
    half.write_bytes(b"PK\x03\x04 half a zip")
    stale_copy = report_path.parent / "report.h5.tmp-99999"
    stale_copy.write_bytes(b"\x89HDF half a copy")
    assert report.read("r").samples["index"].tolist() == [0, 1]
    run = report.start_run("r", kind="attack", config={})
    assert run.done_indices.tolist() == [0, 1]
    assert not half.exists() and not stale_copy.exists()
    run.append(columns([2]))
    run.finish()
    assert report.read("r").samples["index"].tolist() == [0, 1, 2]


def test_damaged_chunk_is_redone_on_resume(report: Report, report_path: Path, columns: ColumnsFn) -> None:
    run = report.start_run("r", kind="attack", config={})
    run.append(columns([0, 1]))
    run.append(columns([2, 3]))
    del run
    gc.collect()  # a forgotten writer releases the lock, as a dead process does
    (report_path.parent / "report.h5.parts" / "r" / "chunk-000001.npz").write_bytes(b"garbage")
    assert report.runs()[0].n_samples == 2  # readers skip it
    run = report.start_run("r", kind="attack", config={})
    assert run.done_indices.tolist() == [0, 1]  # its samples count as not done
    run.append(columns([2, 3]))
    run.finish()
    assert report.read("r").samples["index"].tolist() == [0, 1, 2, 3]


def test_journal_of_a_finished_run_left_by_a_crash_is_swept(report: Report, report_path: Path,
                                                             columns: ColumnsFn) -> None:
    with report.start_run("r", kind="attack", config={}) as run:
        run.append(columns([0]))
        run.finish()
    stale = report_path.parent / "report.h5.parts" / "r"  # as if killed between the replace and the cleanup
    stale.mkdir(parents=True)
    (stale / "chunk-000000.npz").write_bytes(b"whatever")
    assert report.read("r").samples["index"].tolist() == [0]  # complete runs never look at journals
    report.start_run("other", kind="attack", config={}).close()
    assert not stale.exists()


def test_second_writer_in_this_process_is_refused(report: Report) -> None:
    first = report.start_run("a", kind="attack", config={})
    with pytest.raises(ReportError, match=r"already being written by this process \(pid \d+\)"):
        report.start_run("b", kind="attack", config={})
    first.close()
    report.start_run("b", kind="attack", config={}).close()


def test_second_writer_waits_briefly_for_the_lock(report_path: Path) -> None:
    first = Report(report_path).start_run("a", kind="attack", config={})
    timer = threading.Timer(0.2, first.close)
    timer.start()
    began = time.monotonic()
    Report(report_path, lock_timeout=5).start_run("b", kind="attack", config={}).close()
    timer.join()
    assert 0.15 < time.monotonic() - began < 4


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.integers(0, 30), max_size=8), max_size=6), st.integers(0, 6))
def test_any_chunking_merges_to_first_rows_sorted(chunks: list[list[int]], crash_after: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        report = Report(Path(tmp) / "report.h5")
        run = report.start_run("r", kind="attack", config={})
        expected: dict[int, int] = {}
        for k, chunk in enumerate(chunks):
            if k == crash_after:  # resume halfway through
                run.close()
                run = report.start_run("r", kind="attack", config={})
                assert run.done_indices.tolist() == sorted(expected)
            run.append({"index": np.array(chunk, np.int64), "label": np.arange(len(chunk)) + 100 * k})
            for pos, index in enumerate(chunk):
                expected.setdefault(index, pos + 100 * k)
        run.finish()
        samples = report.read("r").samples
        assert samples["index"].tolist() == sorted(expected)
        if expected:
            assert samples["label"].tolist() == [expected[i] for i in sorted(expected)]


def test_abandon_removes_what_start_run_wrote(report: Report, report_path: Path, columns: ColumnsFn) -> None:
    run = report.start_run("first", kind="attack", config={})
    run.append(columns([0, 1]))
    run.abandon()  # the run created the file: nothing is left
    assert not report_path.exists() and not (report_path.parent / "report.h5.parts").exists()
    with report.start_run("keep", kind="attack", config={}) as run:
        run.append(columns([0, 1]))
        run.finish()
    for overwrite in (False, True):  # a new run, and an overwrite of the complete one
        run = report.start_run("new" if not overwrite else "keep", kind="attack", config={"x": 1}, overwrite=overwrite)
        run.append(columns([5]))
        run.abandon()
        assert [(r.id, r.status, r.n_samples) for r in report.runs()] == [("keep", "complete", 2)]
    run = report.start_run("resumed", kind="attack", config={})
    run.append(columns([3]))
    run.close()
    run = report.start_run("resumed", kind="attack", config={})
    run.append(columns([4]))
    run.abandon()  # a resumed run keeps its journal: those samples are valid and the same command resumes them
    assert report.read("resumed").samples["index"].tolist() == [3, 4]
    report.start_run("resumed", kind="attack", config={}).close()  # and the lock was released


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.integers(0, 30), max_size=8), max_size=6), st.integers(0, 6))
def test_per_sample_table_rows_follow_their_samples(chunks: list[list[int]], crash_after: int) -> None:
    """Rows of a per-sample table (sample i has i % 3 rows) are kept with the row of their sample that wins, and the
    table comes out sorted by sample, whatever the chunking, duplicates and resumes."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Report(Path(tmp) / "report.h5")
        run = report.start_run("r", kind="attack", config={})
        winner: dict[int, int] = {}
        for k, chunk in enumerate(chunks):
            if k == crash_after:
                run.close()
                run = report.start_run("r", kind="attack", config={})
            sample = np.array([i for i in chunk for _ in range(i % 3)], np.int64)
            run.append({"index": np.array(chunk, np.int64)}, tables={"hits": {"sample": sample, "chunk": np.full(len(sample), k)}})
            for index in chunk:
                winner.setdefault(index, k)
        running = report.read("r").tables.get("hits")
        run.finish()
        table = report.read("r").tables.get("hits")
        if not chunks or not any(chunks):
            assert table is None or len(table["sample"]) == 0
            return
        # a sample repeated inside its winning chunk contributes its rows once per occurrence there
        expected = [(i, winner[i]) for i in sorted(winner) for _ in range(chunks[winner[i]].count(i) * (i % 3))]
        assert list(zip(table["sample"].tolist(), table["chunk"].tolist())) == expected
        assert running is not None and running["sample"].tolist() == table["sample"].tolist()


def test_per_sample_tables_must_name_samples_of_their_chunk(report: Report) -> None:
    with report.start_run("r", kind="attack", config={}) as run:
        with pytest.raises(ReportError, match="rows for samples that are not in this chunk"):
            run.append({"index": [1, 2]}, tables={"moves": {"sample": [3]}})
        with pytest.raises(ReportError, match="needs an integer column 'sample'"):
            run.append({"index": [1, 2]}, tables={"moves": {"dst": [3]}})


def test_a_folder_is_not_a_report(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="is a folder, not a report file"):
        Report(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no lock file beside it either


def test_a_worst_case_run_recorded_without_its_attack_settings_is_the_same_run(tmp_path: Path) -> None:
    """Worst-case runs of older advkit did not record params_by_attack (their attack runs did): re-running the command
    must find them complete, not clash; any other difference still counts."""
    from advkit.report.store import config_difference

    old = {"attacks": ["pgd", "fgsm"], "runs": ["attack-pgd", "attack-fgsm"], "data": "digits"}
    new = {**old, "params_by_attack": {"pgd": {"eps": 0.1}, "fgsm": {"eps": 0.1}}}
    assert config_difference(old, new, tmp_path / "r.h5") is None
    assert config_difference({**old, "params_by_attack": {"pgd": {"eps": 0.3}}}, new, tmp_path / "r.h5") is not None
    assert config_difference({**old, "data": "mnist-subset"}, new, tmp_path / "r.h5")[0] == "data"
