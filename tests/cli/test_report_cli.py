"""`advkit report show|compare|plot|export` on a report written by `advkit attack` itself, and their one-line errors."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from advkit.report import Report

Cli = Callable[..., Any]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def attacked(cli: Cli, digits_checkpoint: Path) -> Path:
    """Pixle (with images) and PGD on 12 digits images, in r.h5 of the test's directory."""
    result = cli("attack", "pixle", "pgd", "--model", digits_checkpoint, "--data", "digits", "--n", "12", "--save-images",
                 "--param", "pixle.restarts=4", "--param", "pixle.max_iterations=5", "--param", "pgd.eps=0.3",
                 "--param", "pgd.steps=5", "--out", "r.h5", "--json")
    assert result.code == 0, result.stderr
    return Path("r.h5").resolve()


def test_show_all_runs_in_detail(cli: Cli, attacked: Path) -> None:
    result = cli("report", "show", attacked, "--all", "--json")
    assert result.code == 0, result.stderr
    details = result.json()
    assert [d["run"] for d in details] == ["attack-pixle", "attack-pgd", "attack-worst-case"]
    for detail in details:
        stored = Report(attacked).read(detail["run"])
        assert detail["attrs"]["command"] == stored.attrs["command"] != ""  # in-process runs record pytest's argv
        assert detail["config"] == stored.config and detail["summary"] == stored.summary
        per_class = detail["per_class"]
        assert sum(row["samples"] for row in per_class) == detail["summary"]["n"]
    text = cli("report", "show", attacked, "--all")
    assert text.code == 0 and text.stdout.count("per class") == 3 and "command" in text.stdout


def test_compare_prints_runs_side_by_side(cli: Cli, attacked: Path) -> None:
    result = cli("report", "compare", f"{attacked}:attack-pixle,attack-pgd", "--json")
    assert result.code == 0, result.stderr
    data = result.json()
    assert [r["label"] for r in data["runs"]] == ["attack-pixle", "attack-pgd"]
    assert data["perspective"] == "attack"
    report = Report(attacked)
    for j, run in enumerate(("attack-pixle", "attack-pgd")):
        assert data["metrics"]["attack_success_rate"]["values"][j] == pytest.approx(report.read(run).summary["attack_success_rate"])
    table = cli("report", "compare", f"{attacked}:attack-pixle", f"{attacked}:attack-pgd")
    assert table.code == 0 and "attack success rate" in table.stdout and "same 12 samples" in table.stdout
    # the whole report, its worst-case run included, still compares attacks (it took the model's side)
    whole = cli("report", "compare", attacked, "--json")
    assert whole.code == 0 and whole.json()["perspective"] == "attack", whole.stdout
    assert [r["label"] for r in whole.json()["runs"]] == ["attack-pixle", "attack-pgd", "attack-worst-case"]



def test_compare_warns_when_the_attack_runs_attacked_different_data(cli: Cli, attacked: Path, digits_checkpoint: Path) -> None:
    train = cli("attack", "pgd", "--model", digits_checkpoint, "--data", "digits", "--split", "train", "--n", "12",
                "--param", "eps=0.3", "--param", "steps=2", "--out", "train.h5", "--json")
    assert train.code == 0, train.stderr
    result = cli("report", "compare", f"{attacked}:attack-pgd", "train.h5", "--json")
    assert result.code == 0, result.stderr
    assert "attacked different data" in result.stderr
    data = result.json()
    assert data["data_differs"] and data["common_samples"] is None
    stored = [Report(attacked).read("attack-pgd").summary, Report("train.h5").read("attack-pgd").summary]
    assert data["metrics"]["attack_success_rate"]["values"] == pytest.approx([s["attack_success_rate"] for s in stored])

def test_plot_writes_pngs_and_names_the_skipped(cli: Cli, attacked: Path, tmp_path: Path) -> None:
    result = cli("report", "plot", attacked, "--out", "figs", "--json")
    assert result.code == 0, result.stderr
    data = result.json()
    assert set(data["written"]) == {"cdf", "norms", "images"}
    assert set(data["skipped"]) == {"corruptions", "roc", "transfer"}
    files = [Path(p) for paths in data["written"].values() for p in paths]
    assert {f.name for f in files} == {"success-vs-queries.png", "perturbation-norms.png", "images-attack-pixle.png",
                                       "images-attack-pgd.png"}
    for f in files:
        assert f.read_bytes()[:8] == PNG and f.stat().st_size > 0


def test_export_csv_and_json_round_trip(cli: Cli, attacked: Path) -> None:
    result = cli("report", "export", attacked, "--format", "csv", "--out", "csv")
    assert result.code == 0, result.stderr
    report = Report(attacked)
    for info in report.runs():
        with open(Path("csv") / f"r-{info.id}.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == info.n_samples
        assert [int(r["index"]) for r in rows] == report.read(info.id).samples["index"].tolist()
    assert cli("report", "export", attacked, "--format", "json").code == 0
    document = json.loads(Path("r.json").read_text())
    for entry in document["runs"]:
        summary = report.read(entry["run"]).summary
        assert entry["summary"] == {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in summary.items()}
    assert cli("report", "export", attacked, "--format", "json", "--out", "-").json() == document


def test_report_mistakes_are_one_line(cli: Cli, attacked: Path) -> None:
    cases = [
        (("report", "compare", f"{attacked}:attack-nope", f"{attacked}:attack-pgd"), "has no run 'attack-nope'"),
        (("report", "compare", "missing.h5", f"{attacked}"), "no such report: missing.h5"),
        (("report", "plot", attacked, "--figure", "roc", "--out", "never"), "cannot draw roc"),
        (("report", "plot", attacked, "--run", "nope"), "has no run 'nope'"),
        (("report", "export", "missing.h5"), "no such report"),
        (("report", "export", attacked, "--format", "json", "--out", attacked, "--overwrite"), "is the report being exported"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.code == 1, (args, result.stdout)
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    usage = [  # bad option values are usage mistakes: exit 2, as everywhere else
        (("report", "export", attacked, "--format", "xml"), "Invalid value for --format: 'xml' is not one of csv, json"),
        (("report", "compare", f"{attacked}", "--perspective", "bogus"), "'bogus' is not one of auto, model, attack"),
        (("report", "plot", attacked, "--figure", "nope", "--out", "never"), "'nope' is not one of cdf, norms"),
        (("report", "export", attacked, "--out", "-"), "- (standard output) is for --format json"),  # made a folder '-'
    ]
    for args, message in usage:
        result = cli(*args)
        assert result.code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not Path("-").exists()
    assert Report(attacked).read("attack-pixle").status == "complete"  # the report survived --out REPORT
    assert not Path("never").exists()  # the failed plot left no empty folder
    assert cli("report", "export", attacked, "--format", "json", "--out", "s.json").code == 0
    again = cli("report", "export", attacked, "--format", "json", "--out", "s.json")
    assert again.code == 1 and "s.json already exists; pass --overwrite to replace" in again.stderr
    assert cli("report", "export", attacked, "--format", "json", "--out", "s.json", "--overwrite").code == 0


def test_a_run_of_a_newer_schema_is_refused_in_one_line(cli: Cli, attacked: Path, digits_checkpoint: Path) -> None:
    """The file's schema_version was checked, each run's never: a run written by a newer advkit was shown, compared,
    exported and resumed as if this advkit knew its layout."""
    import h5py

    with h5py.File(attacked, "r+") as f:
        f["runs/attack-pgd"].attrs["schema_version"] = np.int64(2)
    refused = "r.h5: run 'attack-pgd' uses report schema 2; this advkit reads up to 1: upgrade advkit"
    for args in [("report", "show", attacked, "--all"), ("report", "show", attacked, "attack-pgd"),
                 ("report", "compare", f"{attacked}:attack-pixle,attack-pgd"), ("report", "compare", attacked),
                 ("report", "export", attacked, "--format", "json", "--out", "-"), ("report", "export", attacked),
                 ("report", "export", attacked, "--run", "attack-pgd"), ("report", "plot", attacked),
                 ("attack", "pgd", "--model", digits_checkpoint, "--data", "digits", "--n", "12", "--param", "eps=0.3",
                  "--param", "steps=5", "--out", attacked, "--run", "attack-pgd")]:
        result = cli(*args)
        assert result.code == 1 and result.stderr.strip().splitlines()[-1].endswith(refused), (args, result.stderr)
        assert "Traceback" not in result.stderr and result.stderr.count("error:") == 1 and not result.stdout, result.stderr
    assert not Path("r-csv").exists()
    other = cli("report", "show", attacked, "attack-pixle", "--json")  # the file's other runs still read by name
    assert other.code == 0 and other.json()["run"] == "attack-pixle", other.stderr


@pytest.mark.parametrize(("attr", "value", "problem"), [
    ("schema_version", np.int64(2), "written by a newer advkit (schema 2): upgrade advkit to read it"),
    ("status", "done", "damaged: /runs/attack-pgd has status 'done', expected one of running, complete"),
])
def test_listing_marks_an_unreadable_run_and_the_other_runs_still_work(cli: Cli, attacked: Path, digits_checkpoint: Path,
                                                                       attr: str, value: Any, problem: str) -> None:
    """One run written by a newer advkit, or damaged, made `report show FILE` fail as a whole, and so `report export
    --run` and `report compare FILE:RUN` of the other runs, which looked their names up in that listing."""
    import h5py

    with h5py.File(attacked, "r+") as f:
        f["runs/attack-pgd"].attrs[attr] = value
    listing = cli("report", "show", attacked, "--json")
    assert listing.code == 0, listing.stderr
    rows = {row["run"]: row for row in listing.json()}
    assert list(rows) == ["attack-pixle", "attack-pgd", "attack-worst-case"]
    assert rows["attack-pgd"] == {"run": "attack-pgd", "problem": problem}
    assert rows["attack-pixle"]["status"] == "complete" and rows["attack-pixle"]["samples"] == 12
    text = cli("report", "show", attacked)
    assert text.code == 0 and "3 run(s)" in text.stdout, text.stderr
    pgd = next(line for line in text.stdout.splitlines() if "attack-pgd" in line)  # its row's first line
    assert "unreadable" in pgd and problem.split()[0] in pgd, text.stdout

    exported = cli("report", "export", attacked, "--format", "json", "--out", "-", "--run", "attack-pixle")
    assert exported.code == 0, exported.stderr
    assert [r["run"] for r in exported.json()["runs"]] == ["attack-pixle"]
    assert cli("report", "export", attacked, "--run", "attack-pixle", "--run", "attack-worst-case").code == 0
    assert sorted(p.name for p in Path("r-csv").iterdir()) == ["r-attack-pixle-moves.csv", "r-attack-pixle.csv",
                                                             "r-attack-worst-case.csv"]
    compared = cli("report", "compare", f"{attacked}:attack-pixle,attack-worst-case", "--json")
    assert compared.code == 0 and [r["run"] for r in compared.json()["runs"]] == ["attack-pixle", "attack-worst-case"]
    beside = cli("attack", "pgd", "--model", digits_checkpoint, "--data", "digits", "--n", "12", "--param", "eps=0.3",
                 "--param", "steps=5", "--out", attacked, "--run", "pgd-again")  # a new run beside it is still written
    assert beside.code == 0, beside.stderr
    assert Report(attacked).read("pgd-again").status == "complete"


def test_pixle_runs_record_their_moves_and_plot_them(cli: Cli, digits_checkpoint: Path) -> None:
    """`advkit attack pixle` stores each sample's move program; replayed on the clean image it gives the stored
    adversarial image, and `report plot` draws the grid from the moves even without --save-images."""
    from advkit.attacks.moves import programs_from_table
    from advkit.datasets import open_dataset

    for name, images in (("with.h5", ["--save-images"]), ("without.h5", [])):
        result = cli("attack", "pixle", "--model", digits_checkpoint, "--data", "digits", "--n", "6", *images,
                     "--param", "restarts=4", "--param", "max_iterations=5", "--out", name)
        assert result.code == 0, result.stderr
    run = Report("with.h5").read("attack-pixle", images=True)
    moves = run.tables["moves"]
    assert set(moves) == {"sample", "step", "dst", "src", "from_clean"} and np.all(np.diff(moves["sample"]) >= 0)
    clean = open_dataset("digits").batch(run.samples["index"])[0]
    for j, index in enumerate(run.samples["index"].tolist()):
        replayed = programs_from_table(moves, index, 8, 8).apply(clean[j]).numpy()
        np.testing.assert_allclose(replayed, run.samples["adv_images"][j].astype(np.float32), atol=1e-3)
    without = Report("without.h5").read("attack-pixle")
    for key, values in moves.items():
        assert np.array_equal(without.tables["moves"][key], values), key
    plotted = cli("report", "plot", "without.h5", "--figure", "images", "--out", "figs", "--json")
    assert plotted.code == 0, plotted.stderr
    assert [Path(p).name for p in plotted.json()["written"]["images"]] == ["images-attack-pixle.png"]


def test_attacks_without_moves_store_no_moves_table(cli: Cli, attacked: Path) -> None:
    assert "moves" in Report(attacked).read("attack-pixle").tables
    assert Report(attacked).read("attack-pgd").tables == {}


def test_run_list_shows_a_result_for_every_kind_of_run(cli: Cli, tmp_path: Path) -> None:
    """`report show`'s result column says how fine-tune, detect and robustness runs went, not only attacks."""
    from advkit.cli.report_cmd import _headline

    summaries = {
        "finetune": {"before.clean_accuracy": 0.98, "after.clean_accuracy": 0.95, "before.pixle.success_rate": 1.0,
                     "after.pixle.success_rate": 0.4, "best_epoch": 2},
        "detect": {"auroc_unsupervised_ae_clean": 0.81, "auroc_unsupervised_magnet_clean": 0.9, "auroc_x": float("nan")},
        "robustness": {"clean_accuracy": 0.97, "corruption_accuracy": 0.7},
    }
    assert _headline(summaries["finetune"]) == "clean accuracy 0.98 -> 0.95, pixle success rate 1 -> 0.4"
    assert _headline(summaries["detect"]) == "best auroc 0.9 (unsupervised magnet clean)"
    assert _headline(summaries["robustness"]) == "clean accuracy 0.97, corruption accuracy 0.7"
    report = Report(tmp_path / "k.h5")
    for kind, summary in summaries.items():
        with report.start_run(kind, kind=kind, config={}) as writer:
            writer.append({"index": np.arange(2)})
            writer.finish(summary)
    shown = cli("report", "show", "k.h5")
    words = shown.stdout.split()  # the narrow test terminal wraps cells at spaces
    assert shown.code == 0 and "->" in words and "best" in words and "corruption" in words, shown.stdout


def test_show_says_a_running_run_has_no_summary_yet(cli: Cli, tmp_path: Path) -> None:
    """An interrupted run printed an empty, headerless summary box."""
    writer = Report(tmp_path / "r.h5").start_run("attack-pixle", kind="attack", config={"attack": "pixle"})
    writer.append({"index": np.arange(2), "label": np.zeros(2, np.int64), "success": np.ones(2, bool)})
    writer.close()  # interrupted: no finish
    shown = cli("report", "show", tmp_path / "r.h5", "attack-pixle")
    assert shown.code == 0 and "no summary yet: the run is running" in " ".join(shown.stdout.split()), shown.stdout


def test_show_prints_stored_text_as_written(cli: Cli, tmp_path: Path) -> None:
    """Rich markup ate '[block1]': a detect eval's results rows ae[block1], ae[block2] and ae all printed as 'ae'."""
    report = Report(tmp_path / "d.h5")
    with report.start_run("detect-x", kind="detect", config={"layers": "[block1]"}, seed=0) as run:
        run.add_table("results", {"detector": np.array(["ae[block1]", "ae[block2]", "ae"]), "auroc": np.array([0.9, 0.8, 0.95])})
        run.finish({"note": "see [bold]"})
    shown = cli("report", "show", "d.h5", "detect-x")
    assert shown.code == 0, shown.stderr
    assert "ae[block1]" in shown.stdout and "ae[block2]" in shown.stdout and "see [bold]" in shown.stdout


def test_a_repeated_run_is_drawn_and_exported_once(cli: Cli, attacked: Path, tmp_path: Path) -> None:
    """--run X --run X crashed plot with numpy's 'truth value of an array is ambiguous' and exported X twice."""
    plot = cli("report", "plot", attacked, "--run", "attack-pgd", "--run", "attack-pgd", "--figure", "cdf", "--out", "f")
    assert plot.code == 0 and "Traceback" not in plot.stderr, plot.stderr
    exported = cli("report", "export", attacked, "--format", "json", "--run", "attack-pgd", "--run", "attack-pgd", "--out", "-")
    assert exported.code == 0 and len(exported.json()["runs"]) == 1, exported.stdout[:500]
