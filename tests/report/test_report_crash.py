"""Real crashes: a writer process SIGKILLed at random moments, and a writer holding the lock in another process."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from advkit.errors import ReportError
from advkit.report import Report

N = 40  # samples per run
CHUNK = 4  # samples per append

# Starts or resumes runs run-000, run-001, ... forever: every run journals N samples in chunks of CHUNK (with a
# tiny image each, so finish() has a compressed dataset to stream) and finishes. Values depend only on the
# sample index, so the parent can check any merged row.
WRITER = """
import sys
import numpy as np
from advkit.report import Report

path, n, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
report = Report(path, lock_timeout=10)
i = sum(r.status == "complete" for r in report.runs()) if report.exists() else 0
print("ready", flush=True)
while True:
    run = report.start_run(f"run-{i:03d}", kind="attack", config={"n": n}, seed=i, command="kill test")
    done = set(run.done_indices.tolist())
    todo = np.array([k for k in range(n) if k not in done], np.int64)
    for start in range(0, len(todo), chunk):
        idx = todo[start:start + chunk]
        run.append({"index": idx, "label": idx % 10, "success": idx % 2 == 0, "l2": idx * 0.5,
                    "adv_images": np.broadcast_to(idx.astype(np.uint8)[:, None, None, None], (len(idx), 1, 4, 4))})
    run.finish(summary={"n": n})
    i += 1
"""


def _spawn(code: str, *args: str, repo_root: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _rows(idx: np.ndarray) -> dict[str, np.ndarray]:
    """The rows WRITER appends for these sample indices."""
    images = np.broadcast_to(idx.astype(np.uint8)[:, None, None, None], (len(idx), 1, 4, 4))
    return {"index": idx, "label": idx % 10, "success": idx % 2 == 0, "l2": idx * 0.5, "adv_images": images}


def _check_rows(samples: dict[str, np.ndarray]) -> None:
    idx = samples["index"]
    assert np.all(np.diff(idx) > 0) and np.all((idx >= 0) & (idx < N))
    if not idx.size:  # a run killed before its first append has no columns yet
        return
    np.testing.assert_array_equal(samples["label"], idx % 10)
    np.testing.assert_array_equal(samples["success"], idx % 2 == 0)
    np.testing.assert_allclose(samples["l2"], idx * 0.5)


def _check_consistent(path: Path) -> tuple[int, list[str]]:
    """The report opens with plain h5py, complete runs hold all N samples, running ones read back sanely."""
    with h5py.File(path, "r") as f:
        statuses = {name: run.attrs["status"] for name, run in f["runs"].items()}
        for name, status in statuses.items():
            if status == "complete":
                samples = {k: v[()] for k, v in f[f"runs/{name}/samples"].items()}
                np.testing.assert_array_equal(samples["index"], np.arange(N), err_msg=name)
                _check_rows(samples)
                np.testing.assert_array_equal(samples["adv_images"][:, 0, 0, 0], np.arange(N, dtype=np.uint8))
    report = Report(path)
    running = [r.id for r in report.runs() if r.status == "running"]
    for run_id in running:
        _check_rows(report.read(run_id).samples)
    return sum(s == "complete" for s in statuses.values()), running


def test_sigkill_never_corrupts_or_loses_data(tmp_path: Path, repo_root: Path) -> None:
    path = tmp_path / "report.h5"
    rng = random.Random(int(os.environ.get("KILL_SEED", "1234")))  # KILL_SEED=n replays other kill timings
    complete, kills_mid_run = 0, 0
    for _ in range(16):  # 10 kills sometimes landed only twice mid-run on a loaded machine (the writes are fast)
        proc = _spawn(WRITER, str(path), str(N), str(CHUNK), repo_root=repo_root)
        time.sleep(rng.uniform(0.02, 0.45))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        if not path.exists():  # killed before the first header was written
            continue
        now_complete, running = _check_consistent(path)
        assert now_complete >= complete  # a finished run never goes back
        assert len(running) <= 1
        complete, kills_mid_run = now_complete, kills_mid_run + bool(running)
    assert complete >= 3 and kills_mid_run >= 3  # the kills really hit both finishing and appending

    # resume whatever was interrupted, in this process, and finish it
    report = Report(path)
    for info in report.runs():
        if info.status == "running":
            run = report.start_run(info.id, kind="attack", config={"n": N}, seed=int(info.id[4:]), command="")
            assert run.resumed
            journaled = report.read(info.id).samples["index"]
            np.testing.assert_array_equal(run.done_indices, journaled)
            run.append(_rows(np.setdiff1d(np.arange(N), journaled)))
            run.finish()
    with report.start_run("last", kind="attack", config={}) as run:  # any new writer sweeps dead writers' leftovers
        run.append(_rows(np.arange(N)))
        run.finish()
    assert _check_consistent(path) == (len(report.runs()), [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.h5", "report.h5.lock"]


HOLDER = """
import sys, time
from advkit.report import Report
run = Report(sys.argv[1]).start_run("holder", kind="attack", config={})
run.append({"index": [0, 1]})
print("ready", flush=True)
time.sleep(60)
"""


def test_lock_held_by_another_process(tmp_path: Path, repo_root: Path) -> None:
    path = tmp_path / "report.h5"
    proc = _spawn(HOLDER, str(path), repo_root=repo_root)
    try:
        began = time.monotonic()
        with pytest.raises(ReportError) as err:
            Report(path, lock_timeout=0.3).start_run("other", kind="attack", config={})
        assert str(err.value) == f"{path} is being written by another advkit process (pid {proc.pid})"
        assert 0.25 < time.monotonic() - began < 3  # it waited briefly before giving up
        assert [r.n_samples for r in Report(path).runs()] == [2]  # reading needs no lock
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
    with Report(path, lock_timeout=0.3).start_run("holder", kind="attack", config={}) as run:  # lock died with it
        assert run.resumed and run.done_indices.tolist() == [0, 1]
        run.finish()
