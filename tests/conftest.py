"""Shared fixtures: small models trained in seconds on real offline data, and the CLI run in-process."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import os

import pytest
import torch
from hypothesis import settings

# The suite replays the same hypothesis examples on every run (CI must not go red on a case found by chance);
# HYPOTHESIS_PROFILE=explore searches new examples, with ADVKIT_FUZZ_SCALE=n for n times more of them.
settings.register_profile("replay", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "replay"))

from advkit.cli import main
from advkit.datasets import ImageDataset, open_dataset
from advkit.models import ModelWrapper, create_architecture
from advkit.report import Report, RunData
from advkit.training import TrainSettings, fit_preprocessing, train_classifier


@pytest.fixture(scope="session")
def digits() -> ImageDataset:
    ds = open_dataset("digits")
    assert isinstance(ds, ImageDataset)
    return ds


@pytest.fixture(scope="session")
def digits_model(digits: ImageDataset) -> ModelWrapper:
    """A small CNN trained on sklearn's digits (about 2 s on a CPU, ~95% test accuracy)."""
    torch.manual_seed(0)
    net = create_architecture("small-cnn", num_classes=10, in_channels=1, input_size=8)
    pre = fit_preprocessing(digits)
    train_classifier(net, digits, TrainSettings(epochs=4, seed=0), preprocessing=pre)
    return ModelWrapper(net, pre)


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


FinishingElsewhere = Callable[..., Callable[[], None]]


@pytest.fixture
def finishing_elsewhere() -> Iterator[FinishingElsewhere]:
    """``finishing_elsewhere(path, run)`` writes ``run`` (read from another report) into the report at ``path`` as a
    second process running the same command would: started at once, so it holds the report's lock, and finished half
    a second later from a thread (joined when the test ends). With ``delay=None`` no thread finishes it: the returned
    function does, for a test to call at the moment it wants (from a patched step of the command)."""
    threads: list[threading.Thread] = []

    def start(path: Path, run: RunData, delay: float | None = 0.5) -> Callable[[], None]:
        writer = Report(path).start_run(run.id, kind=run.kind, config=run.config, seed=run.attrs["seed"],
                                        command=run.attrs["command"])

        def finish() -> None:
            writer.append(run.samples)
            for name, columns in run.tables.items():
                writer.add_table(name, columns)
            writer.finish(run.summary)

        if delay is not None:
            threads.append(threading.Thread(target=lambda: (time.sleep(delay), finish())))
            threads[-1].start()
        return finish

    yield start
    for thread in threads:
        thread.join()


AppearsMeanwhile = Callable[[Path, str, str], Callable[[Outcome], None]]


@pytest.fixture
def appears_meanwhile(monkeypatch: pytest.MonkeyPatch) -> AppearsMeanwhile:
    """``appears_meanwhile(path, when, command)``: while a command trains, another process writes ``path`` (b"theirs")
    after the command checked its --out was free: in the first epoch, before the training state is first saved
    (``when="epoch"``), or once training is done, before the checkpoint is saved (``when="end"``). Returns the check
    of the command's outcome: one error line, their file as it was, and nothing of the command's own left beside it."""
    from advkit import training

    real = training.train_classifier

    def arrange(path: Path, when: str, command: str) -> Callable[[Outcome], None]:
        def train_classifier(*args: Any, **kwargs: Any) -> Any:
            progress = kwargs.get("progress", training.no_progress)

            def theirs_in_epoch(event: Any) -> None:
                progress(event)
                if when == "epoch" and not path.exists():
                    path.write_bytes(b"theirs")

            outcome = real(*args, **{**kwargs, "progress": theirs_in_epoch})
            if when == "end":
                path.write_bytes(b"theirs")
            return outcome

        def check(result: Outcome) -> None:
            assert result.code == 1 and "Traceback" not in result.stderr and result.stderr.count("error:") == 1, result.stderr
            assert result.stderr.strip().splitlines()[-1] == (
                f"error: {path.name} appeared while training (another advkit {command} with this --out?) and was left as "
                "it is; this training was not kept: write another --out, or pass --overwrite to replace it"), result.stderr
            assert path.read_bytes() == b"theirs"
            left = sorted(p.name for p in path.parent.iterdir() if p.suffix != ".lock")  # a report's lock file stays
            assert left == [path.name], left  # no report, state or temporary file of the command's own

        monkeypatch.setattr(training, "train_classifier", train_classifier)
        return check

    return arrange
