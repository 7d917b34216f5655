"""`advkit.report.export` round trips (CSV rows = samples, JSON = the stored summary) and `advkit.report.compare`."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from advkit.errors import AdvkitError, ReportError
from advkit.report import Report, attack_summary
from advkit.report.compare import compare_runs, parse_specs
from advkit.report.export import export, flat_columns, summary_json, threat_model
from advkit.runtime import write_atomically


def _attack(report: Report, run_id: str, index: np.ndarray, success: np.ndarray, *, attack: str = "pixle",
            model: str = "m", params: dict | None = None, summary: dict | None = None) -> dict[str, np.ndarray]:
    n = len(index)
    cols = {"index": index, "label": index % 3, "pred": index % 3, "attacked": np.ones(n, bool), "success": success,
            "queries": index * 2 + 1, "l0": np.where(success, index % 7 + 1, 0), "l2": (index / 10).astype(np.float32),
            "adv_images": np.zeros((n, 1, 4, 4), np.float32)}
    config = {"model": model, "data": "digits", "attack": attack, "attack_params": params or {}}
    with report.start_run(run_id, kind="attack", config=config) as writer:
        writer.append(cols)
        writer.finish(summary if summary is not None else attack_summary(cols))
    return cols


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_csv_has_a_row_per_sample_and_the_values_of_the_report(tmp_path: Path) -> None:
    report = Report(tmp_path / "r.h5")
    index = np.array([4, 1, 9, 7, 2])
    _attack(report, "attack-pixle", index, index % 2 == 0)
    with report.start_run("worst", kind="worst-case", config={}) as writer:
        writer.append({"index": np.arange(3), "success_by_attack": np.array([[True, False], [False, False], [True, True]]),
                       "score": np.array([0.5, float("nan"), 2.0])})
        writer.add_table("history", {"epoch": np.array([1, 2]), "train_loss": np.array([0.7, 0.3])})
        writer.finish({})
    result = export(report, "csv", tmp_path / "out")
    assert [p.name for p in result.paths] == ["r-attack-pixle.csv", "r-worst.csv", "r-worst-history.csv"]
    assert result.skipped == {"attack-pixle/adv_images": "saved images (read them from the report with h5py)"}  # not read, but said

    rows = _read_csv(result.paths[0])
    data = report.read("attack-pixle")
    assert len(rows) == data.n_samples == 5
    assert "adv_images" not in rows[0]
    for name, values in data.samples.items():
        got = [r[name] for r in rows]
        if values.dtype == np.bool_:
            assert got == ["true" if v else "false" for v in values]
        elif values.dtype.kind == "f":
            assert np.array_equal(np.array(got, np.float64), values.astype(np.float64))
        else:
            assert [int(v) for v in got] == values.tolist()

    worst = _read_csv(result.paths[1])
    assert len(worst) == 3
    assert [(r["success_by_attack_0"], r["success_by_attack_1"]) for r in worst] == [("true", "false"), ("false", "false"), ("true", "true")]
    assert worst[1]["score"] == ""  # NaN is an empty cell
    assert [r["train_loss"] for r in _read_csv(result.paths[2])] == ["0.7", "0.3"]



def test_csv_names_two_outputs_would_share_are_refused_before_writing(tmp_path: Path) -> None:
    """Run 'train-history' and table 'history' of run 'train' both map to r-train-history.csv: one overwrote the
    other and the table was lost without a word."""
    report = Report(tmp_path / "r.h5")
    with report.start_run("train", kind="train", config={}) as writer:
        writer.add_table("history", {"epoch": np.array([1, 2])})
        writer.finish({})
    _attack(report, "train-history", np.arange(3), np.ones(3, bool))
    with pytest.raises(ReportError, match=r"^table 'history' of run 'train' and run 'train-history' would both be "
                                          r"exported as r-train-history.csv; export one of the runs at a time"):
        export(report, "csv", tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert [p.name for p in export(report, "csv", tmp_path / "one", ["train"]).paths] == ["r-train.csv", "r-train-history.csv"]


def test_flat_columns_name_every_value_and_skip_images() -> None:
    cols, skipped = flat_columns({"index": np.arange(2), "grid": np.arange(12).reshape(2, 2, 3),
                                  "adv_images": np.zeros((2, 3, 32, 32))})
    assert list(cols) == ["index", "grid_0_0", "grid_0_1", "grid_0_2", "grid_1_0", "grid_1_1", "grid_1_2"]
    assert cols["grid_1_2"].tolist() == [5, 11]
    assert list(skipped) == ["adv_images"]


def test_json_summary_matches_the_report(tmp_path: Path) -> None:
    report = Report(tmp_path / "r.h5")
    index = np.arange(6)
    _attack(report, "attack-pgd", index, index < 2, attack="pgd", params={"eps": 0.3, "steps": 10})
    _attack(report, "attack-pixle", index, index < 4, summary={**attack_summary({"label": index % 3, "pred": index % 3,
                                                                                 "success": index < 4}), "l2_mean": float("nan")})
    path = export(report, "json", tmp_path / "s.json").paths[0]
    document = json.loads(path.read_text())  # strict JSON: NaN became null
    assert "NaN" not in path.read_text()
    entries = {e["run"]: e for e in document["runs"]}
    assert list(entries) == ["attack-pgd", "attack-pixle"]
    for run_id, entry in entries.items():
        data = report.read(run_id)
        assert entry["summary"].keys() == data.summary.keys()
        for key, value in data.summary.items():
            assert entry["summary"][key] == (None if isinstance(value, float) and math.isnan(value) else value)
        assert entry["clean_accuracy"] == data.summary["clean_accuracy"]
        assert entry["robust_accuracy"] == data.summary["robust_accuracy"]
        assert entry["n_samples"] == data.n_samples
        assert entry["config"] == data.config
    assert entries["attack-pgd"]["threat_model"] == "Linf" and entries["attack-pgd"]["eps"] == 0.3
    assert entries["attack-pgd"]["attack"] == {"name": "pgd", "params": {"eps": 0.3, "steps": 10}}
    assert entries["attack-pixle"]["threat_model"] == "L0"
    assert entries["attack-pixle"]["model"] == "m" and entries["attack-pixle"]["dataset"] == "digits"


def test_threat_models() -> None:
    assert threat_model("white-pixle", {}) == "L0"
    assert threat_model("pgdl2", {"eps": 1.0}) == "L2"
    assert threat_model("apgd", {"eps": 0.03, "norm": "L2"}) == "L2"
    assert threat_model("fgsm", {"eps": 0.03}) == "Linf"
    assert threat_model("deepfool", {"steps": 50}) == threat_model("cw", {}) == "L2"  # the sanity checks' table
    assert threat_model("ta-pixle", {}) == "L0" and threat_model("eadl1", {}) == "L1"
    assert threat_model("gn", {"std": 0.1}) == threat_model(None, {}) == "unknown"


def test_export_mistakes_are_report_errors(tmp_path: Path) -> None:
    report = Report(tmp_path / "r.h5")
    with pytest.raises(ReportError, match="no such report"):
        export(report, "csv")
    _attack(report, "a", np.arange(3), np.ones(3, bool))
    with pytest.raises(ReportError, match="unknown export format 'xml'; choose from csv, json"):
        export(report, "xml")
    with pytest.raises(ReportError, match="has no run 'b'; runs: a"):
        export(report, "csv", tmp_path / "o", runs=["b"])
    (tmp_path / "folder").mkdir()
    with pytest.raises(AdvkitError, match="folder is a folder, not a file"):
        export(report, "json", tmp_path / "folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "r.h5", "r.h5.lock"]  # no temporary file left


def test_export_replaces_files_only_when_told_and_never_the_report(tmp_path: Path) -> None:
    report = Report(tmp_path / "r.h5")
    _attack(report, "a", np.arange(3), np.ones(3, bool))
    original = (tmp_path / "r.h5").read_bytes()
    for fmt, out in (("json", tmp_path / "r.h5"), ("json", tmp_path / "." / "r.h5")):
        for overwrite in (False, True):
            with pytest.raises(ReportError, match="is the report being exported; choose another --out"):
                export(report, fmt, out, overwrite=overwrite)
    assert (tmp_path / "r.h5").read_bytes() == original
    (tmp_path / "weights.safetensors").write_bytes(b"precious")
    with pytest.raises(ReportError, match="weights.safetensors already exists; pass --overwrite to replace"):
        export(report, "json", tmp_path / "weights.safetensors")
    assert (tmp_path / "weights.safetensors").read_bytes() == b"precious"

    first = export(report, "csv", tmp_path / "csv")
    with pytest.raises(ReportError, match=r"r-a.csv already exists; pass --overwrite"):
        export(report, "csv", tmp_path / "csv")
    assert export(report, "csv", tmp_path / "csv", overwrite=True).paths == first.paths


def test_atomic_writes_leave_nothing_when_the_writer_fails(tmp_path: Path) -> None:
    """A refused write is one line (torch.save and safetensors wrap the OS error in their own types, which showed as
    tracebacks), the old file stays, and the hidden sibling is gone; its name carries the process id, so two
    processes writing the same --out never write into one temporary file."""
    import errno
    import os

    seen: list[str] = []

    def fail(error: BaseException):  # type: ignore[no-untyped-def]
        def write(tmp: Path) -> None:
            seen.append(tmp.name)
            tmp.write_text("half")
            raise error
        return write

    (tmp_path / "keep.json").write_text("old")
    cases = [(OSError(errno.ENOSPC, "No space left on device"), "could not write .*keep.json: No space left on device$"),
             (RuntimeError("[enforce fail at inline_container.cc:747] . open file failed with strerror: Operation not permitted"),
              "could not write .*keep.json: .*open file failed with strerror: Operation not permitted$")]
    for error, message in cases:
        with pytest.raises(AdvkitError, match=message):
            write_atomically(tmp_path / "keep.json", fail(error))
        assert [p.name for p in tmp_path.iterdir()] == ["keep.json"] and (tmp_path / "keep.json").read_text() == "old"
    assert seen[0] == f".keep.tmp-{os.getpid()}.json"


def test_a_csv_export_that_fails_part_way_leaves_every_file_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each CSV was replaced as soon as it was written, so a failure at a later one (a full disk, a name too long for
    the file system) left an export of some runs, or of some new and some old files, beside a one-line error."""
    import errno

    from advkit.report import export as export_module

    stem = "s" * 150  # r-<run>.csv fits in 255 bytes, r-<run>-history.csv does not
    report = Report(tmp_path / f"{stem}.h5")
    with report.start_run("r" * 100, kind="train", config={}) as writer:
        writer.append({"index": np.arange(3), "label": np.arange(3)})
        writer.add_table("history", {"epoch": np.array([1, 2])})
        writer.finish({})
    with pytest.raises(AdvkitError, match=r"-history.csv: its name is longer than the 255 bytes a file name can have"):
        export(report, "csv", tmp_path / "long")
    assert list((tmp_path / "long").iterdir()) == []

    report = Report(tmp_path / "r.h5")
    _attack(report, "a", np.arange(3), np.ones(3, bool))
    _attack(report, "b", np.arange(3), np.zeros(3, bool))
    before = {p.name: p.stat().st_ino for p in export(report, "csv", tmp_path / "csv").paths}
    _attack(report, "c", np.arange(3), np.ones(3, bool))
    real, cells = export_module._cell, []

    def full_disk(value: object) -> str:
        cells.append(value)
        if len(cells) > 60:  # 24 cells a file: in the third one
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(value)

    monkeypatch.setattr(export_module, "_cell", full_disk)
    with pytest.raises(AdvkitError, match=r"could not write .*r-c.csv: No space left on device$"):
        export(report, "csv", tmp_path / "csv", overwrite=True)
    assert {p.name: p.stat().st_ino for p in (tmp_path / "csv").iterdir()} == before  # none replaced, no temporaries


def test_an_export_never_replaces_a_file_another_process_created_meanwhile(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Files were checked to be absent before writing, then replaced at the end: another export (or any process)
    that created one meanwhile lost it without --overwrite. Now nothing of theirs is replaced and nothing of ours
    is left: the export is still all or none."""
    from advkit.report import export as export_module

    report = Report(tmp_path / "r.h5")
    for run in ("a", "b", "c"):
        _attack(report, run, np.arange(3), np.ones(3, bool))
    real = export_module._csv_writer

    def racing(columns: dict, path: Path):  # type: ignore[no-untyped-def]
        write = real(columns, path)

        def write_then_race(tmp: Path) -> None:
            write(tmp)
            if path.name == "r-c.csv":  # after all checks passed, while this export writes
                (tmp_path / "csv" / "r-b.csv").write_text("theirs")
        return write_then_race

    monkeypatch.setattr(export_module, "_csv_writer", racing)
    with pytest.raises(ReportError, match=r"r-b.csv appeared while exporting \(another export\?\) and was left as it "
                                          r"is; nothing was written; pass --overwrite to replace$"):
        export(report, "csv", tmp_path / "csv")
    assert [(p.name, p.read_text()) for p in (tmp_path / "csv").iterdir()] == [("r-b.csv", "theirs")]

    def race_then_write(path: Path, write, *, replace: bool) -> Path:  # type: ignore[no-untyped-def]
        Path(path).write_text("theirs")
        return write_atomically(path, write, replace=replace)

    monkeypatch.setattr(export_module, "write_atomically", race_then_write)
    with pytest.raises(ReportError, match=r"r.json appeared while exporting"):
        export(report, "json", tmp_path / "r.json")
    assert (tmp_path / "r.json").read_text() == "theirs"
    assert export(report, "json", tmp_path / "r.json", overwrite=True).paths == [tmp_path / "r.json"]
    assert json.loads((tmp_path / "r.json").read_text())


@pytest.mark.parametrize(("summary", "params", "message"), [
    ({"robust_accuracy": "high"}, {}, "run a: summary 'robust_accuracy' is 'high', expected a number"),
    ({"clean_accuracy": [1, 2]}, {}, "run a: summary 'clean_accuracy' is array([1, 2]), expected a number"),
    ({"test_accuracy": True}, {}, "run a: summary 'test_accuracy' is True, expected a number"),
    ({}, {"eps": "8/255"}, "run a: config 'attack_params.eps' is '8/255', expected a number"),
])
def test_json_export_refuses_non_numbers_where_robustbench_wants_numbers(tmp_path: Path, summary: dict, params: dict,
                                                                         message: str) -> None:
    report = Report(tmp_path / "r.h5")
    _attack(report, "a", np.arange(3), np.ones(3, bool), params=params, summary=summary)
    with pytest.raises(ReportError, match=re.escape(message)):
        export(report, "json", tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


def test_compare_colours_per_attack_per_corruption_and_detector_keys(tmp_path: Path) -> None:
    """robust_accuracy.<attack>, <corruption>.accuracy and auroc_<section>_<detector>_<setting> were never coloured."""
    report = Report(tmp_path / "r.h5")
    for run_id, value in (("one", 0.5), ("two", 0.7)):
        with report.start_run(run_id, kind="robustness", config={"model": run_id}) as writer:
            writer.append({"index": np.arange(2)})
            writer.finish({"robust_accuracy.pixle": value, "fog.accuracy": value, "auroc_clean_ae_x": value,
                           "sanity.black_box_robust_accuracy": value})
    c = compare_runs([f"{tmp_path / 'r.h5'}:one,two"], perspective="model")
    for key in ("robust_accuracy.pixle", "fog.accuracy", "auroc_clean_ae_x"):
        assert c.row(key).verdicts == [None, "better"], key
    assert c.row("sanity.black_box_robust_accuracy").verdicts == [None, None]  # a diagnostic, not a score


def test_compare_uses_the_common_samples_and_colours_by_perspective(tmp_path: Path) -> None:
    a, b = Report(tmp_path / "before.h5"), Report(tmp_path / "after.h5")
    _attack(a, "attack-pixle", np.arange(10), np.arange(10) < 9, model="before")
    _attack(b, "attack-pixle", np.arange(0, 20, 2), np.arange(0, 20, 2) < 4, model="after")  # shares 0, 2, 4, 6, 8
    c = compare_runs([str(tmp_path / "before.h5"), str(tmp_path / "after.h5")])
    assert c.labels == ["before:attack-pixle", "after:attack-pixle"]
    assert c.perspective == "model"  # different models: models compared
    assert c.common == 5 and c.sample_counts == [10, 10]
    assert "recomputed on the 5 sample indices they share" in c.caption()
    rate = c.row("attack_success_rate")
    assert rate.values == [1.0, 0.4]  # before: 0 2 4 6 8 all < 9; after: 0 2 of 0 2 4 6 8
    assert rate.verdicts == [None, "better"] and rate.delta(1) == pytest.approx(-0.6)
    assert c.row("robust_accuracy").verdicts == [None, "better"]

    flipped = compare_runs([str(tmp_path / "before.h5"), str(tmp_path / "after.h5")], perspective="attack")
    assert flipped.row("attack_success_rate").verdicts == [None, "worse"]
    stored = compare_runs([str(tmp_path / "before.h5"), str(tmp_path / "after.h5")], common=False)
    assert stored.common is None and stored.row("attack_success_rate").values == [0.9, 0.2]


def test_compare_sees_one_checkpoint_under_two_spellings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that recorded the checkpoint relative to the report's directory and one that recorded its absolute path
    attacked the same model, so the attacks are compared (from the attack's side); another file is another model."""
    (tmp_path / "m.safetensors").write_bytes(b"weights")
    (tmp_path / "other.safetensors").write_bytes(b"weights")
    (tmp_path / "sub").mkdir()
    report = Report(tmp_path / "r.h5")
    _attack(report, "relative", np.arange(4), np.ones(4, bool), model="m.safetensors")
    _attack(report, "absolute", np.arange(4), np.ones(4, bool), model=str(tmp_path / "sub" / ".." / "m.safetensors"))
    _attack(report, "other", np.arange(4), np.ones(4, bool), model=str(tmp_path / "other.safetensors"))
    monkeypatch.chdir(tmp_path.parent)  # the relative spelling means the report's directory, not the current one
    assert compare_runs([f"{tmp_path / 'r.h5'}:relative,absolute"]).perspective == "attack"
    assert compare_runs([f"{tmp_path / 'r.h5'}:relative,other"]).perspective == "model"


def test_compare_run_specs(tmp_path: Path) -> None:
    report = Report(tmp_path / "r.h5")
    for name in ("x", "y", "z"):
        _attack(report, name, np.arange(4), np.arange(4) < 2)
    assert [r.label for r in parse_specs([f"{tmp_path}/r.h5:x,z"])] == ["x", "z"]
    assert [r.label for r in parse_specs([f"{tmp_path}/r.h5"])] == ["x", "y", "z"]
    same = compare_runs([f"{tmp_path}/r.h5:x,y"])
    assert same.perspective == "attack"  # same model and data: attacks compared
    assert same.row("attack_success_rate").verdicts == [None, "same"]
    assert "on the same 4 samples" in same.caption()
    cases = [([f"{tmp_path}/r.h5:q"], "has no run 'q'; runs: x, y, z"), ([f"{tmp_path}/nope.h5"], "no such report"),
             ([f"{tmp_path}/r.h5:x"], "need at least two runs"), ([f"{tmp_path}/r.h5:x", f"{tmp_path}/r.h5:x"], "named twice"),
             ([f"{tmp_path}/r.h5:"], "name a run after the ':'")]
    for specs, message in cases:
        with pytest.raises(ReportError, match=message):
            compare_runs(specs)
    with pytest.raises(ReportError, match="unknown perspective"):
        compare_runs([f"{tmp_path}/r.h5"], perspective="defender")


def test_compare_does_not_pair_the_samples_of_different_data(tmp_path: Path) -> None:
    """Index 3 of digits and index 3 of the MNIST subset are different images: such attack runs keep their stored
    summaries (and the caption says so), while the RGB and IR sides of one paired dataset stay paired by index."""
    report = Report(tmp_path / "r.h5")
    _attack(report, "digits", np.arange(10), np.arange(10) < 9)
    with report.start_run("mnist", kind="attack", config={"model": "m", "data": "mnist-subset", "attack": "pixle"}) as writer:
        cols = {"index": np.arange(0, 20, 2), "label": np.zeros(10, int), "pred": np.zeros(10, int),
                "success": np.arange(10) < 2}
        writer.append(cols)
        writer.finish(attack_summary(cols))
    c = compare_runs([f"{tmp_path / 'r.h5'}:digits,mnist"])
    assert c.data_differs and c.common is None and c.recomputed == [False, False]
    assert c.row("attack_success_rate").values == [0.9, 0.2]  # each over its own 10 samples
    assert c.perspective == "model"
    assert "attack runs on different data: stored summaries" in c.caption()

    for side in ("rgb", "ir"):
        with report.start_run(side, kind="attack", config={"model": "m", "data": "pairs", "domain": side, "attack": "pixle"}) as w:
            cols = {"index": np.arange(4), "label": np.zeros(4, int), "pred": np.zeros(4, int),
                    "success": np.arange(4) < (1 if side == "rgb" else 3)}
            w.append(cols)
            w.finish(attack_summary(cols))
    with report.start_run("worst", kind="worst-case", config={"model": "m", "data": "mnist-subset", "attacks": ["a", "b"]}) as w:
        w.append({"index": np.arange(3), "label": np.zeros(3, int), "pred": np.zeros(3, int), "success": np.ones(3, bool)})
        w.finish({"robust_accuracy": 0.0})
    assert compare_runs([f"{tmp_path / 'r.h5'}:digits,worst"]).data_differs  # a worst-case run of other data
    sides = compare_runs([f"{tmp_path / 'r.h5'}:rgb,ir"])
    assert not sides.data_differs and sides.common == 4 and sides.recomputed == [True, True]


def test_json_entry_of_a_finetune_run_describes_the_fine_tuned_model(tmp_path: Path) -> None:
    report = Report(tmp_path / "r.h5")
    with report.start_run("finetune-fast", kind="finetune", config={"model": "before.safetensors", "data": "digits"}) as writer:
        writer.append({"index": np.arange(2), "label": np.zeros(2, int)})
        writer.finish({"before.clean_accuracy": 0.86, "after.clean_accuracy": 0.41, "checkpoint": "after.safetensors"})
    entry = summary_json(report)["runs"][0]
    assert (entry["model"], entry["clean_accuracy"]) == ("after.safetensors", 0.41)  # not the model it started from


def test_json_entry_of_a_worst_case_run_has_its_attacks_threat_model_and_eps(tmp_path: Path) -> None:
    """A worst-case run records its attacks as attacks and params_by_attack, not attack and attack_params: its entry
    had threat_model, eps and attack null although the report holds them."""
    report = Report(tmp_path / "r.h5")
    runs = {"linf": (["fgsm", "pgd"], {"fgsm": {"eps": 0.3}, "pgd": {"eps": 0.3, "steps": 10}}),
            "budgets": (["fgsm", "pgd"], {"fgsm": {"eps": 0.1}, "pgd": {"eps": 0.3}}),
            "mixed": (["pixle", "pgd"], {"pixle": {"restarts": 5}, "pgd": {"eps": 0.3}})}
    for run_id, (names, by_attack) in runs.items():
        config = {"model": "m", "data": "digits", "attacks": names, "params_by_attack": by_attack}
        with report.start_run(run_id, kind="worst-case", config=config) as writer:
            writer.append({"index": np.arange(3), "label": np.zeros(3, int), "success": np.ones(3, bool)})
            writer.finish({"clean_accuracy": 1.0, "robust_accuracy": 0.0})
    entries = {e["run"]: e for e in summary_json(report)["runs"]}
    assert (entries["linf"]["threat_model"], entries["linf"]["eps"]) == ("Linf", 0.3)
    assert entries["linf"]["attack"] == {"name": "worst-case", "attacks": ["fgsm", "pgd"], "params": runs["linf"][1]}
    assert (entries["budgets"]["threat_model"], entries["budgets"]["eps"]) == ("Linf", None)  # no one eps: none given
    assert (entries["mixed"]["threat_model"], entries["mixed"]["eps"]) == ("mixed", None)
    assert all(e["n_samples"] == 3 and e["robust_accuracy"] == 0.0 for e in entries.values())


def test_compare_says_which_runs_are_not_complete(tmp_path: Path, cli) -> None:
    report = Report(tmp_path / "r.h5")
    _attack(report, "done", np.arange(6), np.ones(6, bool))
    writer = report.start_run("cut", kind="attack", config={"model": "m", "data": "digits", "attack": "pgd"})
    writer.append({"index": np.arange(3), "label": np.zeros(3, int), "pred": np.zeros(3, int), "success": np.ones(3, bool)})
    writer.close()  # interrupted: resumable, 3 samples so far
    assert compare_runs([str(tmp_path / "r.h5")]).statuses == ["complete", "running"]
    result = cli("report", "compare", tmp_path / "r.h5")
    assert result.code == 0 and "not complete, so over the samples done so far: cut (running)" in result.stderr, result.stderr


def test_plot_names_the_runs_it_leaves_out_because_they_are_not_complete(tmp_path: Path, cli) -> None:
    report = Report(tmp_path / "r.h5")
    writer = report.start_run("cut", kind="attack", config={"model": "m", "data": "digits", "attack": "pgd"})
    writer.append({"index": np.arange(3), "label": np.zeros(3, int), "pred": np.zeros(3, int), "success": np.ones(3, bool),
                   "queries": np.ones(3, int)})
    writer.close()  # interrupted
    result = cli("report", "plot", tmp_path / "r.h5", "--out", tmp_path / "figs", "--json")
    assert result.code == 0 and result.json()["incomplete"] == ["cut"], result.stderr
    assert "not complete, so not drawn (name them with --run to draw them): cut" in result.stderr


def test_atomic_writes_give_files_the_usual_mode(tmp_path: Path) -> None:
    """safetensors creates its file 0600, so checkpoints and detectors were unreadable to colleagues on shared
    machines while reports were 0644: a new file gets 0666 less the umask, a replaced one keeps its mode."""
    import os

    def private(tmp: Path) -> None:
        tmp.write_text("x")
        tmp.chmod(0o600)

    umask = os.umask(0o022)
    try:
        assert write_atomically(tmp_path / "new.bin", private).stat().st_mode & 0o777 == 0o644
        (tmp_path / "old.bin").write_text("old")
        (tmp_path / "old.bin").chmod(0o640)
        assert write_atomically(tmp_path / "old.bin", private).stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)


def test_compare_recomputes_a_worst_case_runs_per_attack_robust_accuracy_on_the_common_samples(tmp_path: Path) -> None:
    """The worst case's robust_accuracy was recomputed on the shared samples, but its robust_accuracy.<attack>
    and sanity.* rows kept the stored values over all its samples: one column over two sample sets."""
    from advkit.attacks.runner import worst_case
    from advkit.attacks.sanity import attack_mix_flags

    report = Report(tmp_path / "r.h5")
    index = np.arange(6)
    params = {"square": {"eps": 0.1}, "pgd": {"eps": 0.1}}
    per_attack = {name: _attack(report, f"attack-{name}", index, hits, attack=name, params=params[name])
                  for name, hits in (("square", index % 2 == 0), ("pgd", index < 2))}
    combined = worst_case(per_attack)
    stored = {"robust_accuracy.square": 0.5, "robust_accuracy.pgd": 2 / 3}
    with report.start_run("attack-worst-case", kind="worst-case",
                          config={"model": "m", "data": "digits", "attacks": ["square", "pgd"],
                                  "params_by_attack": params}) as writer:
        writer.append(combined)
        writer.finish({**attack_summary(combined), **stored, **attack_mix_flags(stored, params)})
    _attack(Report(tmp_path / "few.h5"), "attack-square", index[3:], index[3:] % 2 == 0)
    c = compare_runs([str(tmp_path / "few.h5"), f"{tmp_path / 'r.h5'}:attack-worst-case"])
    assert c.common == 3  # samples 3, 4, 5: square fools 4, pgd none
    assert c.row("robust_accuracy").values[1] == pytest.approx(2 / 3)
    assert c.row("robust_accuracy.square").values[1] == pytest.approx(2 / 3)
    assert c.row("robust_accuracy.pgd").values[1] == 1.0
    assert c.row("sanity.black_box_robust_accuracy").values[1] == pytest.approx(2 / 3)
    full = compare_runs([f"{tmp_path / 'r.h5'}:attack-square,attack-worst-case"])  # every sample: the stored values
    assert full.row("robust_accuracy.square").values[1] == 0.5 and full.row("robust_accuracy.pgd").values[1] == pytest.approx(2 / 3)
