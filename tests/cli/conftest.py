"""Run the CLI in-process and capture its streams and exit code."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from advkit.cli import main


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


Runner = Callable[..., Outcome]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runner:
    """``cli("train", "--data", ...)`` runs ``advkit ...`` in tmp_path and returns code, stdout, stderr."""
    monkeypatch.chdir(tmp_path)

    def run(*args: str | Path) -> Outcome:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN trained on digits by ``advkit train`` itself (2 epochs, about 2 s)."""
    path = tmp_path_factory.mktemp("ckpt") / "digits.safetensors"
    try:
        main(["train", "--data", "digits", "--epochs", "3", "--out", str(path), "--json"])
    except SystemExit as exc:
        if exc.code:
            raise RuntimeError(f"training the fixture model failed with exit code {exc.code}") from None
    return path
