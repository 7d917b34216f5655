"""The docs match the code: generated schema tables are in docs/report-format.md, docstring examples run."""

from __future__ import annotations

import doctest
from pathlib import Path

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
