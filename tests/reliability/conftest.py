"""Helpers of the reliability tests: advkit in a subprocess (to interrupt it), and user models as factories."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def advkit_env(*extra_paths: Path) -> dict[str, str]:
    """Environment of an advkit subprocess: this checkout, one thread (comparable floats), unbuffered."""
    paths = [str(REPO), *map(str, extra_paths), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def run_advkit(args: list[str], cwd: Path, *, timeout: float = 120, extra_paths: tuple[Path, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``python -m advkit ARGS`` to completion."""
    return subprocess.run([sys.executable, "-m", "advkit", *args], cwd=cwd, env=advkit_env(*extra_paths),
                          capture_output=True, text=True, timeout=timeout)


def start_advkit(args: list[str], cwd: Path, *, extra_paths: tuple[Path, ...] = ()) -> subprocess.Popen[str]:
    """``python -m advkit ARGS`` in the background (stderr captured for the interrupted-run message)."""
    return subprocess.Popen([sys.executable, "-m", "advkit", *args], cwd=cwd, env=advkit_env(*extra_paths),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def write_module(folder: Path, name: str, source: str) -> Path:
    """A user module ``name`` in ``folder`` (for ``--model name:factory`` specs); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return folder


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path for user model modules written by the test."""
    folder = tmp_path / "user_models"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder
