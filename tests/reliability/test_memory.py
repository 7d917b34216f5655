"""Load: attacking thousands of samples in one run keeps memory flat (nothing per sample is kept in memory; the
report journal on disk holds the results).

Each size runs in its own subprocess: a small warm-up run first (imports, the model, the dataset, allocator
pools), then the measured run, with a thread sampling the resident set size every few milliseconds. The memory a
run needs is its sampled peak minus the resident size when it started.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.conftest import advkit_env

MEASURE = """
import json, os, sys, threading, time
from advkit.cli import main

page = os.sysconf("SC_PAGE_SIZE")

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page

def run(args):
    try:
        main(args)
    except SystemExit as exc:
        assert not exc.code, exc.code

n, common = sys.argv[1], sys.argv[2:]
run([*common, "--n", "100", "--out", "warm.h5"])
peak, done = [rss()], threading.Event()

def sample():
    while not done.is_set():
        peak.append(rss())
        time.sleep(0.002)

import tracemalloc
import advkit.cli.attack_cmd as attack_cmd

batches, update = [], attack_cmd._AttackProgress.update

def traced_update(self, columns):  # Python/NumPy memory in use after each attacked batch
    batches.append((self.done + len(columns["index"]), tracemalloc.get_traced_memory()[0]))
    return update(self, columns)

attack_cmd._AttackProgress.update = traced_update
tracemalloc.start()
start = rss()
thread = threading.Thread(target=sample, daemon=True)
thread.start()
run([*common, "--n", n, "--out", "run.h5"])
done.set()
thread.join()
traced = tracemalloc.get_traced_memory()[1]
print(json.dumps({"start": start, "peak": max(peak + [rss()]), "traced": traced, "batches": batches}))
"""

BATCH = 100
COMMON = ["attack", "fgsm", "--split", "all", "--include-misclassified", "--save-images", "--batch-size", str(BATCH)]


def _measure(n: int, folder: Path) -> dict[str, int]:
    folder.mkdir()
    done = subprocess.run([sys.executable, "-c", MEASURE, str(n), *COMMON], cwd=folder, env=advkit_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_memory_stays_flat_with_the_number_of_samples(tmp_path: Path) -> None:
    """4x the samples of the built-in MNIST attack (FGSM, 500 vs 2000, adversarial images saved) needs < 1.3x the
    peak memory; and inside the large run the Python/NumPy memory in use grows by less per attacked sample than
    the one image the report stores for it (it is on disk, in the journal)."""
    small, large = _measure(500, tmp_path / "small"), _measure(2000, tmp_path / "large")
    assert large["peak"] < 1.3 * small["peak"], (small["peak"], large["peak"])
    (first_done, first_mem), (last_done, last_mem) = large["batches"][0], large["batches"][-1]
    assert last_done == 2000 and len(large["batches"]) == 2000 // BATCH  # the large run attacked every sample
    per_sample = (last_mem - first_mem) / (last_done - first_done)
    stored_image = 28 * 28 * 2  # bytes of one MNIST image as the report stores it (float16)
    assert per_sample < stored_image, f"memory grows by {per_sample:.0f} bytes per attacked sample"
    from advkit.report import Report

    samples = Report(tmp_path / "large" / "run.h5").read("attack-fgsm", images=True).samples
    assert samples["adv_images"].shape == (2000, 1, 28, 28)
