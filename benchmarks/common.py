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
from dataclasses import dataclass
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


def cycled(images: torch.Tensor, size: int, offset: int = 0) -> torch.Tensor:
    """``size`` rows of ``images`` taken cyclically from row ``offset`` (a batch of real images of any size)."""
    return images[(torch.arange(size) + offset) % len(images)]


@torch.no_grad()
def forward_throughput(model: ModelWrapper, images: torch.Tensor, batch_size: int, *, window: float = 0.25, windows: int = 5) -> float:
    """Images/s of uncounted ``model.logits`` on batches of ``batch_size`` real images: median over timed windows.

    Batches are cut cyclically from ``images`` at different offsets, so the content varies as in an attack.
    """
    batches = [cycled(images, batch_size, offset * batch_size) for offset in range(min(len(images), 16))]
    for batch in batches[:3]:  # warm-up
        model.logits(batch)
    rates = []
    for _ in range(windows):
        done, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < window:
            model.logits(batches[done % len(batches)])
            done += 1
        rates.append(done * batch_size / elapsed)
    return statistics.median(rates)


@dataclass
class PassStats:
    """Forward passes of a net seen while a query counter was active: count, input rows, seconds inside the net."""

    passes: int = 0
    rows: int = 0
    seconds: float = 0.0

    @property
    def mean_batch(self) -> float:
        return self.rows / self.passes if self.passes else 0.0


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

    handles = [model.net.register_forward_pre_hook(before), model.net.register_forward_hook(after)]
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, min and max of per-seed values."""
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}
