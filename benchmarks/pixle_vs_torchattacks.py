"""advkit's batched Pixle against torchattacks.Pixle: same model, same images, same budget, one process.

For each model (a tiny CNN on sklearn digits 8x8, a 2-conv CNN on the MNIST subset 28x28, both trained here,
seeded) and each attack configuration, both implementations attack the same correctly classified test images
over several seeds; the script prints images/s, attack success rate, queries per image, L0 in pixels, the
forward-pass limit (the model's forward throughput at the batch size the attack uses / queries per image),
the share of that limit each attack reaches, the advkit/torchattacks ratios and PASS/FAIL against the targets.

    python benchmarks/pixle_vs_torchattacks.py            # full run (~4 min on an idle 2-core CPU)
    python benchmarks/pixle_vs_torchattacks.py --quick    # 1 seed, fewer images
    python benchmarks/pixle_vs_torchattacks.py --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchattacks
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ForeignLoad, PassStats, forward_throughput, load_average, machine_info, memory_layout, recording_passes, spread,
    wait_quiet, with_layout,
)

from advkit.attacks import perturbation_norms  # noqa: E402
from advkit.attacks.pixle import Pixle  # noqa: E402
from advkit.attacks.runner import sample_seeds, select_samples  # noqa: E402
from advkit.datasets import open_dataset  # noqa: E402
from advkit.models import ModelWrapper, QueryCounter  # noqa: E402
from advkit.rng import seeded_globals  # noqa: E402
from advkit.training import TrainSettings, fit_preprocessing, train_classifier  # noqa: E402

SUCCESS_MARGIN = 2.0  # points advkit's success rate may lie below torchattacks'
QUERY_RATIO = 0.55  # advkit queries per image at most this times torchattacks'
LIMIT_SHARE = 0.70  # advkit images/s at least this share of its forward-pass limit
MAX_FOREIGN = 0.15  # cores other processes may use during a timed run before it is repeated


class TinyCNN(nn.Module):
    """Digits 8x8: conv 1->16 3x3, ReLU, conv 16->32 3x3, ReLU, linear 32*4*4 -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3), nn.ReLU(), nn.Flatten())
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TwoConvCNN(nn.Module):
    """MNIST 28x28: conv 1->32 3x3, ReLU, maxpool, conv 32->64 3x3, ReLU, maxpool, linear 64*5*5 -> 128 -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()
        )
        self.head = nn.Sequential(nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class AttackConfig:
    """One attack budget, identical for both implementations."""

    label: str
    x_dimensions: tuple[int, int]
    y_dimensions: tuple[int, int]
    restarts: int
    max_iterations: int
    paper: bool = False  # the paper's slow 1x1 configuration: run on fewer images

    def settings(self) -> dict[str, Any]:
        return {"x_dimensions": self.x_dimensions, "y_dimensions": self.y_dimensions, "restarts": self.restarts,
                "max_iterations": self.max_iterations}


@dataclass(frozen=True)
class Case:
    """A model to train and attack."""

    key: str
    title: str
    dataset: str
    build: Callable[[], nn.Module]
    train: TrainSettings
    configs: tuple[AttackConfig, ...]
    speedup_target: float  # for the reference (restarts 10 x 10) configuration


CASES = (
    Case("digits", "digits tiny CNN (8x8)", "digits", TinyCNN, TrainSettings(epochs=10, lr=3e-3), (
        AttackConfig("reference: restarts 10 x 10, x/y (1, 2)", (1, 2), (1, 2), 10, 10),
        AttackConfig("paper: 1x1 patches, restarts 100 x 20", (1, 1), (1, 1), 100, 20, paper=True),
    ), 20.0),
    Case("mnist", "MNIST-subset 2-conv CNN (28x28)", "mnist-subset", TwoConvCNN, TrainSettings(epochs=5, lr=3e-3), (
        AttackConfig("reference: restarts 10 x 10, x/y (2, 10)", (2, 10), (2, 10), 10, 10),
        AttackConfig("paper: 1x1 patches, restarts 100 x 20", (1, 1), (1, 1), 100, 20, paper=True),
    ), 4.0),
)


@dataclass
class Run:
    """One implementation on one seed."""

    seed: int
    seconds: float
    images_per_s: float
    success: float  # percent, re-verified with an independent forward pass
    queries: float  # mean per image
    l0: float  # mean changed pixels over successful images (nan if none)
    passes: int
    mean_batch: float
    model_seconds: float  # time inside the net's counted forward passes
    foreign_cores: float = 0.0  # CPU other processes used during the timed run (cores)
    attempts: int = 1  # timed runs made (repeated when other processes loaded the CPU)
    layout: str = ""  # memory layout of most of the net's input rows during the attack


def _outcome(model: ModelWrapper, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, queries: torch.Tensor,
             seed: int, seconds: float, stats: PassStats, load: ForeignLoad) -> Run:
    with torch.no_grad():
        success = model.logits(x_adv).argmax(1) != y
    l0 = perturbation_norms(x, x_adv)[0][success].float()
    return Run(seed, seconds, len(x) / seconds, 100.0 * float(success.float().mean()), float(queries.float().mean()),
               float(l0.mean()) if len(l0) else float("nan"), stats.passes, stats.mean_batch, stats.seconds, load.cores,
               layout=stats.main_layout)


def run_torchattacks(model: ModelWrapper, x: torch.Tensor, y: torch.Tensor, config: AttackConfig, seed: int) -> Run:
    """torchattacks.Pixle, one image at a time (as it works), each image under its own query counter."""
    attack = torchattacks.Pixle(model, **config.settings())
    np.random.seed(seed)
    adv, queries = [], []
    with recording_passes(model) as stats, ForeignLoad() as load:
        start = time.perf_counter()
        for i in range(len(x)):
            with model.counting(QueryCounter(1)) as counter:
                adv.append(attack(x[i : i + 1], y[i : i + 1]))
            queries.append(int(counter.counts[0]))
        seconds = time.perf_counter() - start
    return _outcome(model, x, y, torch.cat(adv), torch.tensor(queries), seed, seconds, stats, load)


def run_advkit(model: ModelWrapper, x: torch.Tensor, y: torch.Tensor, index: np.ndarray, config: AttackConfig,
               seed: int, candidates_per_pass: int | str) -> Run:
    """advkit's Pixle on the whole batch in one call, with per-sample seeds."""
    attack = Pixle(**config.settings(), candidates_per_pass=candidates_per_pass)
    seeds = sample_seeds(seed, "pixle", index)
    with recording_passes(model) as stats, ForeignLoad() as load:
        start = time.perf_counter()
        result = attack(model, x, y, seeds=seeds)
        seconds = time.perf_counter() - start
    run = _outcome(model, x, y, result.x_adv, result.queries, seed, seconds, stats, load)
    if abs(run.success - 100.0 * float(result.success.float().mean())) > 1e-9:
        raise RuntimeError("advkit's own success flags disagree with the independent re-check")
    return run


def measured(run: Callable[[], Run], retries: int) -> Run:
    """Time ``run`` on a quiet CPU: wait for other processes to go idle, repeat a disturbed run (up to
    ``retries`` more times) and keep the least disturbed one. Attacks are seeded, so only the time differs."""
    runs: list[Run] = []
    while len(runs) <= retries and (not runs or runs[-1].foreign_cores > MAX_FOREIGN):
        wait_quiet()
        runs.append(run())
    best = min(runs, key=lambda r: r.foreign_cores)
    best.attempts = len(runs)
    return best


def summarise(runs: list[Run]) -> dict[str, dict[str, float]]:
    keys = ("images_per_s", "success", "queries", "l0", "mean_batch", "model_seconds", "seconds", "foreign_cores")
    return {k: spread([getattr(r, k) for r in runs]) for k in keys}


@dataclass
class Comparison:
    """Both implementations on one model and configuration, with forward-pass limits and target checks."""

    model: str
    config: str
    images: int
    seeds: list[int]
    runs: dict[str, list[Run]]
    summary: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    throughput: dict[str, dict[str, Any]] = field(default_factory=dict)  # impl -> batch size, forwards/s, layouts
    limit: dict[str, float] = field(default_factory=dict)  # impl -> images/s
    share: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)


def compare(case: Case, config: AttackConfig, model: ModelWrapper, x: torch.Tensor, y: torch.Tensor, index: np.ndarray,
            seeds: list[int], candidates_per_pass: int | str, reference: bool, retries: int) -> Comparison:
    # one untimed warm-up call each on all the images, with a seed outside the measured ones: advkit feeds the net
    # batches of every size up to len(x), and oneDNN builds its kernels per input shape on first use (a warm-up
    # on 8 images left the first timed seed paying for that: 1413 images/s against 2303 once warm, on digits)
    np.random.seed(10_000)
    torchattacks.Pixle(model, **config.settings())(x, y)
    Pixle(**config.settings(), candidates_per_pass=candidates_per_pass)(model, x, y, seeds=sample_seeds(10_000, "pixle", index))
    runs: dict[str, list[Run]] = {"torchattacks": [], "advkit": []}
    for seed in seeds:
        runs["torchattacks"].append(measured(partial(run_torchattacks, model, x, y, config, seed), retries))
        runs["advkit"].append(measured(partial(run_advkit, model, x, y, index, config, seed, candidates_per_pass), retries))
    cmp = Comparison(case.title, config.label, len(x), seeds, runs, {k: summarise(v) for k, v in runs.items()})
    for impl in runs:
        batch = max(1, round(cmp.summary[impl]["mean_batch"]["mean"]))
        wait_quiet()
        rate = forward_throughput(model, x, batch)
        cmp.throughput[impl] = {"batch": batch, "forwards_per_s": rate, "images_layout": memory_layout(model.normalise(x))}
        seen = sorted({r.layout for r in runs[impl]} - {cmp.throughput[impl]["images_layout"]})
        if seen:  # the attack feeds the net another memory layout than the images have
            cmp.throughput[impl]["attack_layout_forwards_per_s"] = {
                layout: forward_throughput(model, with_layout(x, layout), batch) for layout in seen
            }
        cmp.limit[impl] = rate / cmp.summary[impl]["queries"]["mean"]
        cmp.share[impl] = cmp.summary[impl]["images_per_s"]["mean"] / cmp.limit[impl]
    ta, ak = cmp.summary["torchattacks"], cmp.summary["advkit"]
    cmp.ratios = {
        "speedup": ak["images_per_s"]["mean"] / ta["images_per_s"]["mean"],
        "queries": ak["queries"]["mean"] / ta["queries"]["mean"],
        "success_points": ak["success"]["mean"] - ta["success"]["mean"],
    }
    cmp.targets = {
        "success": {"want": f">= torchattacks - {SUCCESS_MARGIN:g} pts", "ok": cmp.ratios["success_points"] >= -SUCCESS_MARGIN},
        "queries": {"want": f"<= {QUERY_RATIO:g}x torchattacks", "ok": cmp.ratios["queries"] <= QUERY_RATIO},
        "limit_share": {"want": f">= {LIMIT_SHARE:.0%} of forward limit", "ok": cmp.share["advkit"] >= LIMIT_SHARE},
    }
    if reference:
        cmp.targets["speedup"] = {"want": f">= {case.speedup_target:g}x torchattacks", "ok": cmp.ratios["speedup"] >= case.speedup_target}
    return cmp


def _cell(stat: dict[str, float], fmt: str) -> str:
    if len({round(stat["min"], 6), round(stat["max"], 6)}) == 1:
        return format(stat["mean"], fmt)
    return f"{format(stat['mean'], fmt)} ({format(stat['min'], fmt)}-{format(stat['max'], fmt)})"


def print_comparison(cmp: Comparison) -> None:
    print(f"\n== {cmp.model} | {cmp.config} | {cmp.images} images | seeds {cmp.seeds} (mean (min-max) over seeds)")
    header = ("implementation", "images/s", "success %", "queries/img", "L0 px", "fwd batch", "fwd/s @batch",
              "limit img/s", "share", "in model", "other load")
    rows = []
    for impl, s in cmp.summary.items():
        rows.append((
            impl, _cell(s["images_per_s"], ".1f"), _cell(s["success"], ".1f"), _cell(s["queries"], ".1f"),
            _cell(s["l0"], ".2f"), f"{s['mean_batch']['mean']:.1f}", f"{cmp.throughput[impl]['forwards_per_s']:.0f}",
            f"{cmp.limit[impl]:.1f}", f"{cmp.share[impl]:.0%}",
            f"{s['model_seconds']['mean'] / s['seconds']['mean']:.0%}", f"{s['foreign_cores']['max']:.2f}",
        ))
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, *rows):
        print("  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(r, widths))))
    r = cmp.ratios
    print(f"advkit / torchattacks: speed-up {r['speedup']:.1f}x, queries {r['queries']:.3f}x, "
          f"success {r['success_points']:+.1f} pts")
    fw = {impl: f"{t['forwards_per_s']:.0f}/s at batch {t['batch']}" for impl, t in cmp.throughput.items()}
    print(f"forward throughput (model.logits, real images): {fw['torchattacks']} (torchattacks' batch: it attacks one "
          f"image at a time), {fw['advkit']} (advkit's mean images per pass)")
    for impl, t in cmp.throughput.items():
        for layout, rate in t.get("attack_layout_forwards_per_s", {}).items():
            print(f"note: the images reach the net with {t['images_layout']} strides, {impl}'s candidates with {layout} "
                  f"strides; model.logits at batch {t['batch']} with {layout} strides: {rate:.0f}/s")
    print("targets: " + "; ".join(f"{k} {t['want']}: {'PASS' if t['ok'] else 'FAIL'}" for k, t in cmp.targets.items()))


def prepare(case: Case, n_images: int) -> tuple[ModelWrapper, torch.Tensor, torch.Tensor, np.ndarray, float]:
    """Train the case's model (seeded) and pick the first ``n_images`` correctly classified test images."""
    ds = open_dataset(case.dataset)
    preprocessing = fit_preprocessing(ds)
    with seeded_globals(0):  # weight initialisation
        net = case.build()
    outcome = train_classifier(net, ds, case.train, preprocessing=preprocessing)
    model = ModelWrapper(net, preprocessing)
    plan = select_samples(model, ds, n=n_images, seed=0)
    x, y = ds.batch(plan.attack_index)
    return model, x, y, plan.attack_index, outcome.test_accuracy


def _per_pass(text: str) -> int | str:
    return text if text == "auto" else int(text)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 seed, 30 images (10 for the 1x1 configuration)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per configuration (default 5)")
    parser.add_argument("--images", type=int, default=100, help="images for the reference configuration (default 100)")
    parser.add_argument("--paper-images", type=int, default=50, help="images for the slow 1x1 configuration (default 50)")
    parser.add_argument("--models", default="digits,mnist", help="comma-separated: digits, mnist")
    parser.add_argument("--skip-paper", action="store_true", help="only the reference configuration")
    parser.add_argument("--candidates-per-pass", type=_per_pass, default="auto",
                        help="advkit Pixle candidates_per_pass: an int or auto (default auto, the attack's default)")
    parser.add_argument("--retries", type=int, default=2, help="extra timed runs when other processes load the CPU (default 2)")
    parser.add_argument("--json", type=Path, help="also write all per-seed numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.images, args.paper_images = 1, 30, 10
    seeds = list(range(args.seeds))
    machine = machine_info()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} ({machine['torch_threads']} "
          f"threads), torchattacks {machine['torchattacks']}, numpy {machine['numpy']}, python {machine['python']}")
    machine["advkit_pixle_md5"] = hashlib.md5(Path(inspect.getfile(Pixle)).read_bytes()).hexdigest()
    print(f"advkit/attacks/pixle.py md5 {machine['advkit_pixle_md5']}; load average before start: {load_average():.2f}; "
          f"advkit candidates_per_pass={args.candidates_per_pass}")
    print("columns: images/s, success % (re-verified), queries/img and L0 px (changed pixels, mean over successful "
          "images) as mean (min-max) over seeds; fwd batch = mean images per forward pass of the attack; fwd/s @batch = "
          "model.logits throughput at that batch size; limit = fwd/s @batch / queries per image; share = images/s / "
          "limit; in model = share of attack time inside the net's forward; other load = most cores other processes "
          "used during a timed run (disturbed runs are repeated)")
    began = time.perf_counter()
    out: dict[str, Any] = {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()}, "models": {}, "comparisons": []}
    for case in CASES:
        if case.key not in args.models.split(","):
            continue
        model, x, y, index, accuracy = prepare(case, max(args.images, args.paper_images))
        print(f"\n# {case.title}: test accuracy {accuracy:.4f}; attacking the first correctly classified test images")
        out["models"][case.key] = {"title": case.title, "test_accuracy": accuracy}
        for config in case.configs:
            if config.paper and args.skip_paper:
                continue
            n = args.paper_images if config.paper else args.images
            cmp = compare(case, config, model, x[:n], y[:n], index[:n], seeds, args.candidates_per_pass, not config.paper,
                          args.retries)
            print_comparison(cmp)
            if config.paper:
                print(f"(the 1x1 restarts 100 x 20 configuration runs on {n} images to keep torchattacks' time bounded; "
                      "the speed-up target is defined for the reference configuration only)")
            out["comparisons"].append({**asdict(cmp), "runs": {k: [asdict(r) for r in v] for k, v in cmp.runs.items()}})
    total = time.perf_counter() - began
    print(f"\ntotal time {total:.0f} s; load average at the end: {load_average():.2f}")
    out["seconds"] = total
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float))
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
