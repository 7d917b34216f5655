"""How much of a Pixle call the net needs: the attack's own forward passes replayed alone.

For each model of ``pixle_vs_torchattacks.py`` (reference configuration), advkit's Pixle attacks the same images
while hooks record the batch size of every counted forward pass and the time inside the net. The same sequence
of batch sizes is then replayed through ``model.logits`` on real images in the attack's memory layout, with
nothing in between. ``replay / call`` is about the share of the forward-pass limit the attack reaches now;
``replay / net`` (the net's time inside the call) is the share it would reach if everything outside the net were
free; and a 70% share leaves ``replay / 0.7 - net`` for everything outside the net.

    python benchmarks/pixle_net_replay.py              # both models, 5 timed calls each (~1 min)
    python benchmarks/pixle_net_replay.py --models digits --calls 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cycled, load_average, machine_info, memory_layout, with_layout  # noqa: E402
from pixle_vs_torchattacks import CASES, prepare  # noqa: E402

from advkit.attacks.pixle import Pixle  # noqa: E402
from advkit.attacks.runner import sample_seeds  # noqa: E402
from advkit.models import ModelWrapper  # noqa: E402


def timed_call(model: ModelWrapper, attack: Pixle, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor) -> dict[str, Any]:
    """One attack call: its seconds, the seconds inside the net's counted passes, their batch sizes and layout."""
    sizes: list[int] = []
    layouts: list[str] = []
    inside, started = [0.0], [0.0]

    def before(_module: Any, _inputs: Any) -> None:
        started[0] = time.perf_counter()

    def after(_module: Any, inputs: Any, _output: Any) -> None:
        if model.counter is not None:  # a query, not the uncounted re-check
            inside[0] += time.perf_counter() - started[0]
            sizes.append(int(inputs[0].shape[0]))
            layouts.append(memory_layout(inputs[0]))

    handles = [model.net.register_forward_pre_hook(before), model.net.register_forward_hook(after)]
    try:
        start = time.perf_counter()
        attack(model, x, y, seeds=seeds)
        seconds = time.perf_counter() - start
    finally:
        for handle in handles:
            handle.remove()
    return {"seconds": seconds, "net": inside[0], "sizes": sizes, "layout": max(set(layouts), key=layouts.count)}


@torch.no_grad()
def replay(model: ModelWrapper, x: torch.Tensor, sizes: list[int], layout: str) -> float:
    """Seconds of ``model.logits`` on batches of ``sizes`` real images, one after the other."""
    batches = [with_layout(cycled(x, size, offset), layout) for offset, size in enumerate(sizes)]
    start = time.perf_counter()
    for batch in batches:
        model.logits(batch)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,mnist")
    parser.add_argument("--calls", type=int, default=5, help="timed calls per model, after 2 warm-up calls")
    parser.add_argument("--images", type=int, default=100)
    args = parser.parse_args(argv)
    machine = machine_info()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} ({machine['torch_threads']} "
          f"threads); load average before start: {load_average():.2f}")
    for case in (c for c in CASES if c.key in args.models.split(",")):
        config = case.configs[0]
        model, x, y, index, _ = prepare(case, args.images)
        attack, seeds = Pixle(**config.settings()), sample_seeds(0, "pixle", index)
        rows = []
        for call in range(args.calls + 2):
            measured = timed_call(model, attack, x, y, seeds)
            replay(model, x, measured["sizes"], measured["layout"])  # warm-up of the same shapes
            measured["replay"] = replay(model, x, measured["sizes"], measured["layout"])
            if call >= 2:
                rows.append(measured)
        median = {k: 1e3 * statistics.median(r[k] for r in rows) for k in ("seconds", "net", "replay")}
        sizes = rows[0]["sizes"]
        print(f"\n== {case.title} | {config.label} | {len(x)} images | median of {args.calls} calls")
        print(f"counted passes {len(sizes)}, rows {sum(sizes)}, layout {rows[0]['layout']}")
        print(f"call {median['seconds']:.1f} ms; inside the net {median['net']:.1f} ms "
              f"({median['net'] / median['seconds']:.0%}); the passes replayed alone through model.logits "
              f"{median['replay']:.1f} ms")
        print(f"share of the limit now ~ replay / call = {median['replay'] / median['seconds']:.0%}; with nothing outside "
              f"the net ~ replay / net = {median['replay'] / median['net']:.0%}; a 70% share needs the call within "
              f"{median['replay'] / 0.7:.1f} ms, leaving {median['replay'] / 0.7 - median['net']:.1f} ms outside the net "
              f"(now {median['seconds'] - median['net']:.1f} ms)")
    print(f"\nload average at the end: {load_average():.2f}")


if __name__ == "__main__":
    main()
