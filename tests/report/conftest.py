"""Fixtures for the report tests: a fresh report path, deterministic per-sample columns."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from advkit.report import Report

ColumnsFn = Callable[..., dict[str, np.ndarray]]


@pytest.fixture
def report_path(tmp_path: Path) -> Path:
    return tmp_path / "report.h5"


@pytest.fixture
def report(report_path: Path) -> Report:
    return Report(report_path, lock_timeout=0.5)


@pytest.fixture
def repo_root() -> Path:
    """The repository, so subprocesses import this checkout of advkit."""
    return Path(__file__).resolve().parents[2]


@pytest.fixture
def columns() -> ColumnsFn:
    return attack_columns


def attack_columns(indices: np.ndarray | list[int], *, images: str | None = None) -> dict[str, np.ndarray]:
    """Columns whose every value is a function of the sample index, so merged results can be checked."""
    idx = np.asarray(indices, np.int64)
    cols: dict[str, np.ndarray] = {
        "index": idx,
        "label": idx % 10,
        "pred": idx % 10,
        "adv_pred": (idx + 1) % 10,
        "target": np.full(len(idx), -1),
        "success": idx % 2 == 0,
        "queries": idx * 3,
        "iterations": idx + 1,
        "l0": idx % 5,
        "l2": idx * 0.25,
        "linf": idx / 255.0,
    }
    if images == "uint8":
        cols["adv_images"] = np.broadcast_to((idx % 256).astype(np.uint8)[:, None, None, None], (len(idx), 3, 4, 5))
    elif images in ("float16", "float32"):  # float16: what reports before 2026-12-02 stored
        cols["adv_images"] = np.broadcast_to((idx / 1000.0).astype(images)[:, None, None, None], (len(idx), 1, 6, 6))
    return cols
