"""Kill-safe runs: ``advkit attack``, ``transfer``, ``finetune`` and ``detect fit`` interrupted by SIGINT and SIGKILL at
seeded random moments, then re-run with the same command, end with exactly the results of an uninterrupted run.

Each test runs the command once uninterrupted (the reference, and the measure of how long its work takes), then
interrupts fresh runs of it in subprocesses while they work: after the command's "started" line on stderr, a seeded
random delay within the reference's working time, then the signal. After every interruption the report must open, and the
final re-run must give per-sample rows equal to the reference: same indices (none duplicated or missing), same
values (only wall-clock columns differ). KILL_SEED=n replays other kill moments.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from advkit.datasets import ImageDataset, PairedDataset, open_dataset
from advkit.datasets.synthetic import write_paired
from advkit.models import Preprocessing, create_architecture, load_checkpoint, save_checkpoint
from advkit.report import Report
from advkit.cli import main
from tests.reliability.conftest import start_advkit

SEED = int(os.environ.get("KILL_SEED", "8"))
TIMED = ("time", "seconds")  # wall-clock columns and summary keys: the only values allowed to differ


def _launch(args: list[str], cwd: Path, ready: str) -> tuple[subprocess.Popen[str], str]:
    """Start advkit and return once its stderr shows ``ready`` (the work has begun) or it exited."""
    proc = start_advkit(args, cwd)
    seen = []
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if ready in line:
            break
    return proc, "".join(seen)


def _in_process(args: list[str], cwd: Path) -> float:
    """Run advkit in this process, one thread like the subprocesses (so floats compare exactly); returns seconds.

    The reference and the final re-run need no interruption, so they skip a subprocess's start-up time.
    """
    here, threads = Path.cwd(), torch.get_num_threads()
    os.chdir(cwd)
    torch.set_num_threads(1)
    began = time.monotonic()
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(here)
        torch.set_num_threads(threads)
    assert code == 0, f"advkit {' '.join(args)} exited with {code}"
    return time.monotonic() - began


def _interrupt(args: list[str], cwd: Path, ready: str, sig: signal.Signals, delay: float) -> tuple[int, str]:
    proc, head = _launch(args, cwd, ready)
    time.sleep(delay)
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=120)
    return proc.returncode, head + rest


def _check_readable(path: Path) -> None:
    """After any interruption the report is absent or a whole, readable report (plain h5py and advkit)."""
    if not path.exists():
        return
    with h5py.File(path, "r") as f:
        assert "runs" in f
    for info in Report(path).runs():
        samples = Report(path).read(info.id).samples
        index = samples["index"]
        assert np.all(np.diff(index) > 0), f"{info.id}: duplicated or unsorted indices after an interruption"


def _interrupted_then_resumed(args: list[str], cwd: Path, ready: str, window: float, signals: list[signal.Signals],
                              outputs: list[Path], rng: random.Random) -> None:
    """Interrupt fresh runs of ``args`` with each signal in turn, check the leftovers, then run to the end."""
    for i, sig in enumerate(signals):
        delay = rng.uniform(0.05, 0.8 if i == 0 else 0.4) * window  # resumed runs have less left to do
        for _ in range(4):
            code, stderr = _interrupt(args, cwd, ready, sig, delay)
            assert "Traceback" not in stderr, stderr
            # exit 0, or death by SIGINT in the interpreter's shutdown after the command returned: the run beat
            # the signal, which proves nothing; the first interruption starts over with a shorter delay
            finished = code in (0, -signal.SIGINT)
            if not finished or i > 0:
                break
            for path in outputs:
                path.unlink(missing_ok=True)
            delay /= 3
        print(f"{sig.name} {delay:.2f} s into a {window:.2f} s run: exit {code}")  # shown when a test fails
        assert not (finished and i == 0), "every attempt finished before its signal: nothing was interrupted"
        if finished:  # a later run finished before its signal: earlier interruptions were the test
            break
        if sig == signal.SIGINT:
            assert code == 130, stderr
            resumes = {"attack": "to resume", "finetune": "to resume", "transfer": "to resume",
                       "detect": "nothing half-done was kept; re-run the same command to start over"}
            last = stderr.strip().splitlines()[-1]
            assert last.startswith("interrupted: re-run the same command") or last.startswith("interrupted: nothing"), stderr
            assert resumes[args[0]] in last, last  # detect fit keeps no partial fit: it must not promise a resume
        else:
            assert code == -signal.SIGKILL, stderr
        for path in outputs:
            if path.suffix == ".h5":
                _check_readable(path)
    _in_process(args, cwd)  # the same command, re-run to the end


def _assert_same_report(reference: Path, resumed: Path) -> None:
    want, got = Report(reference), Report(resumed)
    assert [(r.id, r.kind, r.status) for r in got.runs()] == [(r.id, r.kind, r.status) for r in want.runs()]
    for info in want.runs():
        a, b = want.read(info.id, images=True), got.read(info.id, images=True)
        assert info.status == "complete" and a.config == b.config and a.attrs["seed"] == b.attrs["seed"]
        np.testing.assert_array_equal(b.samples["index"], a.samples["index"], err_msg=f"{info.id}: samples lost or added")
        assert set(b.samples) == set(a.samples)
        for key, column in a.samples.items():
            if not key.startswith(TIMED):
                np.testing.assert_array_equal(b.samples[key], column, err_msg=f"{info.id}/{key}")
        assert set(b.tables) == set(a.tables)
        for name, table in a.tables.items():
            for key, column in table.items():
                np.testing.assert_array_equal(b.tables[name][key], column, err_msg=f"{info.id} table {name}/{key}")
        timed = [k for k in a.summary if any(t in k for t in TIMED)]
        assert {k: v for k, v in b.summary.items() if k not in timed} == pytest.approx(
            {k: v for k, v in a.summary.items() if k not in timed}, nan_ok=True), info.id


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    """Folders of the reference and the interrupted runs: the same relative --out, so configs compare equal."""
    ref, run = tmp_path / "reference", tmp_path / "interrupted"
    ref.mkdir()
    run.mkdir()
    return ref, run


@pytest.mark.slow
def test_attack_survives_sigint_and_repeated_sigkill(digits_checkpoint: Path, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    args = ["attack", "pixle", "white-pixle", "--model", str(digits_checkpoint), "--data", "digits", "--n", "40",
            "--batch-size", "4", "--save-images",
            "--param", "pixle.restarts=8", "--param", "pixle.max_iterations=8",
            "--param", "white-pixle.restarts=3", "--param", "white-pixle.max_iterations=20"]
    ref, run = _dirs(tmp_path)
    args += ["--out", "r.h5"]
    window = _in_process(args, ref)
    _interrupted_then_resumed(args, run, " against ", window, [signal.SIGINT, signal.SIGKILL, signal.SIGKILL], [run / "r.h5"], rng)
    _assert_same_report(ref / "r.h5", run / "r.h5")
    assert sorted(p.name for p in run.iterdir()) == ["r.h5", "r.h5.lock"]  # no journal or temp file left


def _pairs_and_models(digits_checkpoint: Path, folder: Path) -> tuple[Path, Path, Path]:
    """Aligned pairs from digits (RGB = the gray image in 3 channels) and a model for each side, without training:
    the RGB model is the gray one with its first convolution spread over 3 channels (the same function on pairs)."""
    digits = open_dataset("digits")
    assert isinstance(digits, ImageDataset)
    gray = np.asarray(digits.images)
    pairs = PairedDataset("digit-pairs", np.repeat(gray, 3, axis=3), gray, digits.labels, digits.class_names, digits.split)
    data = write_paired(pairs, folder / "pairs.npz", "D")
    loaded = load_checkpoint(digits_checkpoint)
    state = loaded.net.state_dict()
    first = next(k for k, v in state.items() if v.dim() == 4 and v.shape[1] == 1)
    state[first] = state[first].repeat(1, 3, 1, 1) / 3
    kwargs = {**loaded.arch_kwargs, "in_channels": 3}
    rgb_net = create_architecture(loaded.architecture, **kwargs)
    rgb_net.load_state_dict(state)
    pre = loaded.preprocessing
    rgb = folder / "rgb.safetensors"
    save_checkpoint(rgb, rgb_net, loaded.architecture, kwargs,
                    Preprocessing(3, pre.input_size, pre.mean, pre.std, pre.class_names, "rgb"))
    return data, rgb, digits_checkpoint


@pytest.mark.slow
def test_transfer_survives_sigint_and_sigkill(digits_checkpoint: Path, tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    data, rgb, ir = _pairs_and_models(digits_checkpoint, tmp_path)
    args = ["transfer", "--source-model", str(rgb), "--target-model", str(ir), "--data", str(data), "--n", "24",
            "--batch-size", "4", "--param", "restarts=4", "--param", "max_iterations=10", "--control-eps", "0.1"]
    ref, run = _dirs(tmp_path)
    args += ["--out", "t.h5"]
    ready = "pairs both models classify correctly"
    window = _in_process(args, ref)
    _interrupted_then_resumed(args, run, ready, window, [signal.SIGINT, signal.SIGKILL], [run / "t.h5"], rng)
    _assert_same_report(ref / "t.h5", run / "t.h5")
    full = Report(ref / "t.h5").read("transfer-white-pixle-rgb-ir").samples
    assert len(full["index"]) == 24 and full["src_success"].any()  # the runs did real work


@pytest.mark.slow
def test_finetune_survives_sigint_and_sigkill(digits_checkpoint: Path, tmp_path: Path) -> None:
    rng = random.Random(SEED + 2)
    args = ["finetune", "--model", str(digits_checkpoint), "--data", "digits", "--method", "pgd", "--epochs", "2",
            "--batch-size", "64", "--eps", "0.1", "--steps", "2", "--eval-attack", "fgsm", "--eval-attack", "pixle",
            "--eval-n", "16", "--no-corruptions"]
    ref, run = _dirs(tmp_path)
    args += ["--out", "f.safetensors"]
    window = _in_process(args, ref)
    _interrupted_then_resumed(args, run, "fine-tuning ", window, [signal.SIGINT, signal.SIGKILL],
                              [run / "f.safetensors", run / "f.h5", run / "f.safetensors.state.pt"], rng)
    _assert_same_report(ref / "f.h5", run / "f.h5")
    a, b = load_file(str(ref / "f.safetensors")), load_file(str(run / "f.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (run / "f.safetensors.state.pt").exists()


@pytest.mark.parametrize("command", ["finetune", "train"])
def test_killed_after_its_report_before_its_state_cleanup_is_done(command: str, digits_checkpoint: Path, tmp_path: Path) -> None:
    """The one moment a random kill rarely hits: the report is complete but the per-epoch state file is still there.
    (train refused the re-run as a clash with its own complete run, and kept the state file forever.)"""
    args = {"finetune": ["finetune", "--model", str(digits_checkpoint), "--data", "digits", "--method", "plain", "--epochs", "1",
                         "--eval-attack", "fgsm", "--eval-n", "8", "--no-corruptions", "--last"],
            "train": ["train", "--data", "digits", "--epochs", "1"]}[command] + ["--out", "f.safetensors"]
    run_id = {"finetune": "finetune-plain", "train": "train"}[command]
    _in_process(args, tmp_path)
    weights = (tmp_path / "f.safetensors").read_bytes()
    state = tmp_path / "f.safetensors.state.pt"
    before = Report(tmp_path / "f.h5").read(run_id)
    state.write_bytes(b"state file of the killed run")
    _in_process(args, tmp_path)
    assert not state.exists() and (tmp_path / "f.safetensors").read_bytes() == weights
    after = Report(tmp_path / "f.h5").read(run_id)
    assert [r.id for r in Report(tmp_path / "f.h5").runs()] == [run_id]
    assert after.attrs["finished"] == before.attrs["finished"] and after.summary == pytest.approx(before.summary, nan_ok=True)


@pytest.mark.slow
def test_detect_fit_survives_sigint_and_sigkill(digits_checkpoint: Path, tmp_path: Path) -> None:
    """``detect fit`` has no per-epoch state: an interrupted fit leaves no detector file (it is written whole, at
    the end) and the re-run fits the same detector as an uninterrupted run."""
    from advkit.detectors.detector import LayerwiseDetector

    rng = random.Random(SEED + 3)
    args = ["detect", "fit", "--model", str(digits_checkpoint), "--data", "digits", "--epochs", "3", "--filters", "8",
            "--latent", "16", "--n", "300", "--out", "det.safetensors"]
    ref, run = _dirs(tmp_path)
    window = _in_process(args, ref)
    want = load_file(str(ref / "det.safetensors"))
    out = run / "det.safetensors"
    interrupted = 0
    for sig in (signal.SIGINT, signal.SIGKILL):
        delay = rng.uniform(0.05, 0.8) * window
        for _ in range(4):  # the window includes loading the data before "fitting a": on a fast, idle machine the
            code, stderr = _interrupt(args, run, "fitting a ", sig, delay)  # fit itself can beat the signal
            print(f"{sig.name} after {delay:.2f} s: exit {code}")
            beaten = code in (0, -signal.SIGINT) or out.exists()
            assert "Traceback" not in stderr, stderr  # also from a signal in the interpreter's exit (advkit.__main__)
            if interrupted or not beaten:
                break
            out.unlink(missing_ok=True)  # whole (the check below reads it), but the test needs an interrupted fit
            delay /= 3
        if code in (0, -signal.SIGINT) or out.exists():  # a later fit beat the signal: its file must be whole
            break
        interrupted += 1
        assert code == (130 if sig == signal.SIGINT else -signal.SIGKILL), stderr
        assert not out.exists(), "an interrupted fit left a detector file"
    assert interrupted, "no run was interrupted while fitting"
    if not out.exists():
        _in_process(args, run)
    got = load_file(str(out))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    meta, ref_meta = LayerwiseDetector.read_meta(out), LayerwiseDetector.read_meta(ref / "det.safetensors")
    assert {k: v for k, v in meta.items() if k not in ("train_seconds", "command")} == \
        {k: v for k, v in ref_meta.items() if k not in ("train_seconds", "command")}
    assert sorted(p.name for p in run.iterdir()) == ["det.safetensors"]
