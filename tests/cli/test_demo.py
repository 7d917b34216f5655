"""`advkit demo --quick`: the whole tour in-process, checked through the report, figures and summary it leaves."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.image

from advkit.report import Report

Cli = Callable[..., Any]


def test_quick_demo_writes_one_report_its_figures_and_summary(cli: Cli, tmp_path: Path) -> None:
    result = cli("demo", "--quick", "--out", "tour")
    assert result.code == 0, result.stderr
    folder = tmp_path / "tour"
    report = Report(folder / "demo.h5")
    runs = {r.id: r for r in report.runs()}
    assert set(runs) == {"train-digits", "train-rgb", "train-ir", "attack-pixle", "attack-white-pixle", "attack-pgd",
                         "attack-worst-case", "transfer-white-pixle-rgb-ir", "transfer-white-pixle-ir-rgb", "finetune-fast",
                         "detect-pixle", "robustness"}
    assert all(r.status == "complete" for r in runs.values())
    # the quick tour trains on digits, and its files say so (they were named mnist-cnn...)
    assert sorted(p.name for p in folder.glob("*.safetensors")) == [
        "digits-cnn-detector.safetensors", "digits-cnn-fast-at.safetensors", "digits-cnn.safetensors", "ir-cnn.safetensors",
        "rgb-cnn.safetensors"]
    for run_id in runs:  # every step recorded its own command line, ready to copy
        command = report.read(run_id).attrs["command"]
        assert command.startswith(f"advkit {runs[run_id].kind if runs[run_id].kind != 'worst-case' else 'attack'} ")
        assert "--out" in command or "--report" in command

    figures = sorted(p.name for p in (folder / "figures").glob("*.png"))
    assert figures == sorted(["success-vs-queries.png", "perturbation-norms.png", "images-attack-pixle.png",
                              "images-attack-white-pixle.png", "images-attack-pgd.png",
                              "images-transfer-white-pixle-rgb-ir.png", "images-transfer-white-pixle-ir-rgb.png",
                              "corruptions-robustness.png", "transfer-matrix.png", "roc.png"])
    for name in figures:
        path = folder / "figures" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(path).size > 0
        assert str(Path("tour") / "figures" / name) in " ".join(result.stdout.split())  # printed where it is

    summary = json.loads((folder / "demo.json").read_text())
    assert [e["run"] for e in summary["runs"]] == list(runs)
    for entry in summary["runs"]:
        stored = report.read(entry["run"]).summary
        assert entry["summary"] == {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in stored.items()}
    assert "skipped" not in result.stdout  # every figure type has its data in the tour
