"""The docs match the code: generated schema tables are in docs/report-format.md, the documented training history
columns are the ones `advkit train` and `advkit finetune` write, docstring examples run."""

from __future__ import annotations

import doctest
import re
from pathlib import Path
from typing import Any

import h5py
import pytest

import advkit.report
from advkit.report import schema, store, summary


@pytest.mark.parametrize("table", [schema.attrs_markdown, schema.columns_markdown, schema.summary_markdown])
def test_schema_tables_are_in_the_docs(repo_root: Path, table: object) -> None:
    doc = (repo_root / "docs" / "report-format.md").read_text()
    assert table() in doc, f"regenerate docs/report-format.md from advkit.report.schema.{table.__name__}()"


@pytest.mark.parametrize("module", [advkit.report, schema, store, summary], ids=lambda m: m.__name__)
def test_docstring_examples_run(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def _documented_history_columns(doc: str) -> dict[str, str]:
    """column -> dtype from the table under "#### Training history (`tables/history`)" in docs/report-format.md."""
    heading = "#### Training history (`tables/history`)"
    assert heading in doc, f"docs/report-format.md has no section {heading!r} documenting the history columns"
    section = doc.split(heading, 1)[1].split("\n#", 1)[0]
    rows = [line.split("|") for line in section.splitlines() if line.startswith("| `")]
    return {re.fullmatch(r"`(\w+)`", row[1].strip()).group(1): row[2].strip() for row in rows}  # type: ignore[union-attr]


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_documented_history_columns_are_the_ones_written(repo_root: Path, tmp_path: Path, cli: Any,
                                                         digits_checkpoint: Path, command: str) -> None:
    """`advkit train` and `advkit finetune` write exactly the documented history columns, with those dtypes."""
    documented = _documented_history_columns((repo_root / "docs" / "report-format.md").read_text())
    if command == "train":
        report, run = digits_checkpoint.with_suffix(".h5"), "train"  # written by `advkit train` for the fixture
    else:
        result = cli("finetune", "--model", digits_checkpoint, "--data", "digits", "--out", "f.safetensors", "--method",
                     "plain", "--epochs", "1", "--eval-attack", "fgsm", "--eval-n", "5", "--no-corruptions", "--json")
        assert result.code == 0, result.stderr
        report, run = tmp_path / "f.h5", "finetune-plain"  # the cli fixture runs in tmp_path
    with h5py.File(report, "r") as f:
        history = f[f"runs/{run}/tables/history"]
        written = {name: str(history[name].dtype) for name in history}
    assert written == documented, "update the training history table in docs/report-format.md"
