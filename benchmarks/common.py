"""Shared helpers for advkit's benchmarks: machine line, load check, forward throughput, pass recording.

Benchmarks are scripts, never part of the test suite; they import advkit but advkit never imports them.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advkit.models import ModelWrapper


def machine_info() -> dict[str, Any]:
    """CPU model (from /proc/cpuinfo), logical cores, torch threads and library versions."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import numpy
    import torchattacks

    return {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "torchattacks": getattr(torchattacks, "__version__", "?"), "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def load_average() -> float:
    """The 1-minute load average (0 where the OS does not report it)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_ticks() -> tuple[int, int]:
    """(busy ticks of the whole machine, ticks of this process) from /proc; (0, 0) where /proc is missing."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
        with open("/proc/self/stat", encoding="utf-8") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return user + nice + system + irq + softirq + steal, int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return 0, 0


class ForeignLoad:
    """Cores used by *other* processes during a block (machine busy time minus this process's CPU time / wall time).

    Granularity is one clock tick (10 ms), so short blocks read a little noisy; other processes on a 2-core
    machine slow torch's two threads a lot, which is why timed runs are repeated when this is high.
    """

    def __enter__(self) -> ForeignLoad:
        self._busy, self._own = _cpu_ticks()
        self._start = time.perf_counter()
        self.cores = 0.0
        return self

    def __exit__(self, *_exc: object) -> None:
        busy, own = _cpu_ticks()
        wall = time.perf_counter() - self._start
        self.cores = max(0.0, ((busy - self._busy) - (own - self._own)) / _TICK / max(wall, 1e-9))


def wait_quiet(*, threshold: float = 0.1, probe: float = 0.5, max_wait: float = 60.0) -> bool:
    """Wait (up to ``max_wait`` s) until other processes use less than ``threshold`` cores; True if they do."""
    deadline = time.perf_counter() + max_wait
    while True:
        with ForeignLoad() as load:
            time.sleep(probe)
        if load.cores < threshold:
            return True
        if time.perf_counter() > deadline:
            return False


def cycled(images: torch.Tensor, size: int, offset: int = 0) -> torch.Tensor:
    """``size`` rows of ``images`` taken cyclically from row ``offset`` (a batch of real images of any size)."""
    return images[(torch.arange(size) + offset) % len(images)]


@torch.no_grad()
def forward_throughput(
    model: ModelWrapper, images: torch.Tensor, batch_size: int, *, window: float = 0.4, windows: int = 5, max_foreign: float = 0.25
) -> float:
    """Images/s of uncounted ``model.logits`` on batches of ``batch_size`` real images: median over timed windows.

    Batches are cut cyclically from ``images`` at different offsets, so the content varies as in an attack.
    Windows during which other processes used more than ``max_foreign`` cores are discarded and re-measured.
    """
    batches = [cycled(images, batch_size, offset * batch_size) for offset in range(min(len(images), 16))]
    for batch in batches[:3]:  # warm-up
        model.logits(batch)
    clean: list[float] = []
    disturbed: list[float] = []
    for _ in range(4 * windows):  # windows disturbed by other processes are measured again
        with ForeignLoad() as load:
            done, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < window:
                model.logits(batches[done % len(batches)])
                done += 1
        (clean if load.cores <= max_foreign else disturbed).append(done * batch_size / elapsed)
        if len(clean) == windows:
            return statistics.median(clean)
    return statistics.median(clean or disturbed)


def memory_layout(x: torch.Tensor) -> str:
    """The tensor's memory layout: "NHWC" for channels-last strides, else "NCHW".

    oneDNN runs convolutions channels-last on NHWC tensors; 1-channel tensors made by permuting (N, H, W, 1)
    arrays have NHWC strides.
    """
    return "NHWC" if x.dim() == 4 and x.stride(1) == 1 and x.stride(3) == x.shape[1] else "NCHW"


def with_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """A copy of (N, C, H, W) ``x`` with NHWC or NCHW strides (works for C == 1, unlike ``.contiguous``)."""
    n, c, h, w = x.shape
    if layout == "NHWC":
        return torch.empty(n, h, w, c, dtype=x.dtype).copy_(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return torch.empty(n, c, h, w, dtype=x.dtype).copy_(x)


@dataclass
class PassStats:
    """Forward passes of a net seen while a query counter was active: count, input rows, seconds inside the net,
    and the input rows the net received per memory layout."""

    passes: int = 0
    rows: int = 0
    seconds: float = 0.0
    layouts: dict[str, int] = field(default_factory=dict)

    @property
    def mean_batch(self) -> float:
        return self.rows / self.passes if self.passes else 0.0

    @property
    def main_layout(self) -> str:
        """The memory layout most input rows had."""
        return max(self.layouts, key=self.layouts.__getitem__) if self.layouts else "NCHW"


@contextmanager
def recording_passes(model: ModelWrapper) -> Iterator[PassStats]:
    """Count the counted forward passes of ``model`` (hooks on its net) and time spent inside the net."""
    stats, started = PassStats(), [0.0]

    def before(_module: nn.Module, _inputs: Any) -> None:
        started[0] = time.perf_counter()

    def after(_module: nn.Module, inputs: Sequence[Any], _output: Any) -> None:
        if model.counter is not None:  # the attack's queries, not an uncounted re-check
            stats.passes += 1
            stats.rows += int(inputs[0].shape[0])
            stats.seconds += time.perf_counter() - started[0]
            layout = memory_layout(inputs[0])
            stats.layouts[layout] = stats.layouts.get(layout, 0) + int(inputs[0].shape[0])

    handles = [model.net.register_forward_pre_hook(before), model.net.register_forward_hook(after)]
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, min and max of per-seed values."""
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}
