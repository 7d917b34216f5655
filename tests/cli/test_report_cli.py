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
        (("report", "plot", attacked, "--figure", "roc"), "cannot draw roc"),
        (("report", "plot", attacked, "--run", "nope"), "has no run 'nope'"),
        (("report", "export", attacked, "--format", "xml"), "unknown export format 'xml'"),
        (("report", "export", "missing.h5"), "no such report"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.code == 1, (args, result.stdout)
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
