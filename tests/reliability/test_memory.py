"""Load: attacking thousands of samples in one run keeps memory flat (nothing per sample is kept in memory; the
report journal on disk holds the results).

Each size runs in its own subprocess: a small warm-up run first (imports, the model, the dataset, allocator
pools), then the measured run, with a thread sampling the resident set size every few milliseconds. The memory a
run needs is its sampled peak minus the resident size when it started (after the warm-up: about 360 MB of the
process is torch and the loaded model, the same at every size, so absolute peaks would hide any growth).

glibc keeps freed heap pages and reuses them, so a leak could grow inside memory the run had freed without the
resident size moving. The subprocesses therefore serve every allocation of 64 KiB or more (any batch of images)
from its own mapping, returned to the system when freed (``MALLOC_MMAP_THRESHOLD_``): the resident size then
tracks the memory actually in use, torch tensors included (which tracemalloc does not see).
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

start = rss()
thread = threading.Thread(target=sample, daemon=True)
thread.start()
run([*common, "--n", n, "--out", "run.h5"])
done.set()
thread.join()
print(json.dumps({"start": start, "peak": max(peak + [rss()])}))
"""

BATCH = 100
COMMON = ["attack", "fgsm", "--split", "all", "--include-misclassified", "--save-images", "--batch-size", str(BATCH)]


STORED_IMAGE = 28 * 28 * 2  # bytes of one MNIST image as the report stores it (float16)


def _measure(n: int, folder: Path) -> int:
    """Bytes the run of ``n`` samples needs above the process after imports, model load and a warm-up run."""
    folder.mkdir()
    env = {**advkit_env(), "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}  # see the module docstring
    done = subprocess.run([sys.executable, "-c", MEASURE, str(n), *COMMON], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return measured["peak"] - measured["start"]


@pytest.mark.slow
def test_memory_stays_flat_with_the_number_of_samples(tmp_path: Path) -> None:
    """Attacking 4x the samples of the built-in MNIST model (FGSM, 500 vs 2000, adversarial images saved) needs less
    extra memory per extra sample than the one image the report stores for it: results live in the journal on disk.

    Measured on the 2-core build machine: about 94 MB needed at both sizes, 290-400 bytes per extra sample; a leak
    that keeps each batch's adversarial images alive as tensors (8 channels, 25 KB a sample) needs 104 and 142 MB,
    25 KB per extra sample.
    """
    small, large = _measure(500, tmp_path / "small"), _measure(2000, tmp_path / "large")
    per_sample = (large - small) / 1500
    assert per_sample < STORED_IMAGE, f"{small / 1e6:.1f} MB at 500 samples, {large / 1e6:.1f} MB at 2000: " \
                                      f"{per_sample:.0f} bytes per extra sample"
    from advkit.report import Report

    samples = Report(tmp_path / "large" / "run.h5").read("attack-fgsm", images=True).samples
    assert samples["adv_images"].shape == (2000, 1, 28, 28)
