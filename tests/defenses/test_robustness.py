"""`advkit robustness`: accuracy per corruption and severity, mCE and the accuracy ratio, report and PNG plot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from advkit.perturbations.robustness import mean_corruption_error, relative_accuracy
from advkit.report import Report

Cli = Callable[..., Any]


def test_mce_and_ratio_by_hand() -> None:
    model = np.array([[0.9, 0.7], [0.5, 0.5]])
    base = np.array([[0.8, 0.6], [0.5, 0.0]])
    ce, mce = mean_corruption_error(model, base)
    assert ce.tolist() == pytest.approx([(0.1 + 0.3) / (0.2 + 0.4), (0.5 + 0.5) / (0.5 + 1.0)])
    assert mce == pytest.approx(ce.mean())
    ratio = relative_accuracy(model, base)
    assert ratio.tolist() == pytest.approx([(0.9 / 0.8 + 0.7 / 0.6) / 2, 1.0])  # a zero baseline accuracy is skipped


def test_robustness_cli(cli: Cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    result = cli("robustness", "--model", digits_checkpoint, "--baseline", digits_checkpoint, "--data", "digits",
                 "--corruption", "gaussian_noise", "--corruption", "fog", "--severity", "1", "--severity", "5",
                 "--n", "40", "--out", "r.h5", "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["mCE"] == pytest.approx(1.0) and summary["relative_accuracy"] == pytest.approx(1.0)  # model == baseline
    run = Report(tmp_path / "r.h5").read("robustness")
    correct = run.samples["model_correct"]
    assert correct.shape == (40, 2, 2)
    assert summary["fog.accuracy"] == pytest.approx(correct[:, 1, :].mean())
    png = Path(summary["plot"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    again = cli("robustness", "--model", digits_checkpoint, "--data", "digits", "--corruption", "fgo")
    assert again.code == 1 and "did you mean fog" in again.stderr
    bad = cli("robustness", "--model", digits_checkpoint, "--data", "digits", "--severity", "6")
    assert bad.code == 2
