"""Adversarial fine-tuning protocols side by side on the MNIST subset (docs/benchmarks.md, fine-tuning rows).

Each protocol fine-tunes the same pre-trained small CNN (advkit's built-in checkpoint) for the same epochs:
`plain` (the control: no adversarial examples), the RGB/IR paper's one-shot `paper-white`, Madry `pgd` (PGD-7),
`fast` (FGSM with random start) and `trades`. Every model is then measured on the same test images:
clean accuracy (whole test split), robust accuracy under PGD (eps 0.3, 40 steps, step 0.01), and Pixle
(restarts 10 x iterations 10) success rate averaged over seeds, with pixels changed and queries for the
successes, plus wall time per epoch relative to plain fine-tuning.

Each protocol keeps its best epoch exactly as `advkit finetune` does by default (advkit.defenses.selection: robust
accuracy on val images carved out of the training split, against PGD for pgd/fast/trades and a 5 x 5 Pixle for the
paper's protocols, clean accuracy for plain); the time that selection takes is reported apart from the epoch time.
`--last` keeps the last epoch and trains on the whole training split instead, which is how the rows now in
docs/benchmarks.md were measured.

    .venv/bin/python benchmarks/finetune_protocols.py --epochs 5 --images 100 --seeds 2
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable

import numpy as np
import torch

from advkit.attacks import create_attack
from advkit.attacks.runner import sample_seeds
from advkit.cli.attack_cmd import builtin_checkpoint
from advkit.datasets import open_dataset
from advkit.defenses import FinetuneMethod
from advkit.defenses.evaluate import common_correct
from advkit.defenses.selection import epoch_selection, with_validation_split
from advkit.models import ModelWrapper, load_checkpoint
from advkit.training import TrainSettings, predict, train_classifier

COLLAPSED = 0.5  # clean accuracy below which a fine-tuned model is reported as diverged
PROTOCOLS = ("plain", "paper-white", "paper-black", "pgd", "fast", "trades")


def fine_tune(method: str, epochs: int, seed: int, lr: float, schedule: str, last: bool) -> tuple[ModelWrapper, float, str]:
    """The fine-tuned model, its training seconds per epoch (selection excluded) and how its epoch was chosen."""
    loaded = load_checkpoint(builtin_checkpoint())
    spec = FinetuneMethod(method, eps=0.3, steps=7, seed=seed)  # PGD-7 with step 2.5 eps / 7
    settings = TrainSettings(epochs=epochs, batch_size=32, lr=lr, schedule=schedule, seed=seed)
    ds = open_dataset("mnist-subset")
    selection, spent = None, [0.0]
    if not last:  # the CLI default: carve val images, keep the best epoch by the method's criterion
        ds = with_validation_split(ds, seed=seed)
        selection = epoch_selection(spec, ds, ModelWrapper(copy.deepcopy(loaded.net), loaded.preprocessing), seed=seed)
    began = time.perf_counter()
    outcome = train_classifier(loaded.net, ds, settings, preprocessing=loaded.preprocessing, objective=spec.objective(),
                               validate=_timed(selection.score, spent) if selection else None, fingerprint=spec.fingerprint())
    seconds = (time.perf_counter() - began - spent[0]) / epochs
    how = (f"epoch {outcome.best_epoch} of {epochs} by {selection.criterion} (selection {spent[0] / epochs:.1f} s/epoch, "
           "not in the epoch time)") if selection else f"last epoch of {epochs}"
    return ModelWrapper(loaded.net, loaded.preprocessing), seconds, how


def _timed(score: Callable[[ModelWrapper], float], spent: list[float]) -> Callable[[ModelWrapper], float]:
    """``score``, adding its seconds to spent[0] (selection is not part of a protocol's epoch cost)."""
    def timed(model: ModelWrapper) -> float:
        started = time.perf_counter()
        try:
            return score(model)
        finally:
            spent[0] += time.perf_counter() - started
    return timed


def evaluate(models: dict[str, ModelWrapper], images: int, seeds: int) -> dict[str, dict[str, float]]:
    ds = open_dataset("mnist-subset")
    test = ds.indices("test")
    clean = {name: float((predict(model, ds, test) == ds.labels[test]).mean()) for name, model in models.items()}
    # a fine-tune that diverged (near-constant predictions) would restrict the common images to the one class it
    # still predicts and bias every other row: it is reported with its clean accuracy only
    usable = {name: model for name, model in models.items() if clean[name] >= COLLAPSED}
    index = common_correct(usable, ds, n=images, seed=0)
    x, y = ds.batch(index)
    pgd = create_attack("pgd", eps=0.3, alpha=0.01, steps=40, random_start=True)
    pixle = create_attack("pixle", restarts=10, max_iterations=10)
    rows: dict[str, dict[str, float]] = {name: {"clean_accuracy": clean[name]} for name in models}
    for name, model in usable.items():
        row = rows[name]
        row["pgd_robust_accuracy"] = float((~pgd(model, x, y, seeds=sample_seeds(0, "pgd", index)).success).float().mean())
        success, l0, queries = [], [], []
        for s in range(seeds):
            result = pixle(model, x, y, seeds=sample_seeds(s, "pixle", index))
            success.append(float(result.success.float().mean()))
            l0.extend(result.l0[result.success].tolist())
            queries.extend(result.queries[result.success].tolist())
        row.update(pixle_success_rate=float(np.mean(success)), pixle_l0=float(np.mean(l0)) if l0 else float("nan"),
                   pixle_queries=float(np.mean(queries)) if queries else float("nan"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--protocols", nargs="*", default=list(PROTOCOLS))
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (the paper fine-tunes at 0.01)")
    parser.add_argument("--schedule", default="cosine", help="cosine, onecycle or constant")
    parser.add_argument("--seed", type=int, default=0, help="fine-tuning seed")
    parser.add_argument("--last", action="store_true", help="keep the last epoch, train on the whole train split (no selection)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    pre = load_checkpoint(builtin_checkpoint())
    models = {"pre-trained": ModelWrapper(pre.net, pre.preprocessing)}
    seconds: dict[str, float] = {}
    for method in args.protocols:
        models[method], seconds[method], how = fine_tune(method, args.epochs, args.seed, args.lr, args.schedule, args.last)
        print(f"fine-tuned {method}: {seconds[method]:.1f} s/epoch; kept {how}", flush=True)
    rows = evaluate(models, args.images, args.seeds)
    for method, s in seconds.items():
        rows[method]["seconds_per_epoch"] = s
        rows[method]["epoch_cost_vs_plain"] = s / seconds["plain"] if "plain" in seconds else float("nan")
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    keys = ["clean_accuracy", "pgd_robust_accuracy", "pixle_success_rate", "pixle_l0", "pixle_queries", "seconds_per_epoch", "epoch_cost_vs_plain"]
    print(f"{'model':<12}" + "".join(f"{k:>21}" for k in keys))
    for name, row in rows.items():
        print(f"{name:<12}" + "".join(f"{row.get(k, float('nan')):>21.4g}" for k in keys))
    for name, row in rows.items():
        if row["clean_accuracy"] < COLLAPSED:
            print(f"{name} diverged (clean accuracy {row['clean_accuracy']:.3g} < {COLLAPSED}): left out of the common images")
    kept = "last epoch, whole train split" if args.last else "best epoch on carved val images, as advkit finetune's default"
    print(f"(epochs {args.epochs}, Adam lr {args.lr} {args.schedule}, fine-tuning seed {args.seed}, {kept}; {args.images} test images"
          f" all models classify correctly, Pixle over {args.seeds} seeds)")


if __name__ == "__main__":
    main()
