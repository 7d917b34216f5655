"""docs/reliability.md names the test behind each guarantee: every file and test it names must exist."""

from __future__ import annotations

import re

from tests.reliability.conftest import REPO


def test_every_test_named_in_the_reliability_doc_exists() -> None:
    doc = (REPO / "docs" / "reliability.md").read_text()
    paths = set(re.findall(r"tests/[\w/]+\.py", doc))
    names = set(re.findall(r"\b(test_\w+)\b", doc)) - {p.rsplit("/", 1)[-1].removesuffix(".py") for p in paths}
    assert paths and names
    missing = [p for p in sorted(paths) if not (REPO / p).is_file()]
    assert not missing, f"files named in docs/reliability.md do not exist: {missing}"
    defined = {m for f in (REPO / "tests").rglob("test_*.py") for m in re.findall(r"^def (test_\w+)", f.read_text(), re.M)}
    assert not sorted(names - defined), f"tests named in docs/reliability.md do not exist: {sorted(names - defined)}"
