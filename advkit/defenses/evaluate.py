"""Before/after evaluation of a defence: clean accuracy and attacks on the same images for two models.

    >>> from advkit.defenses.evaluate import robustness_columns
    >>> callable(robustness_columns)
    True
"""

from __future__ import annotations

import numpy as np
import torch

from advkit.attacks.base import Attack
from advkit.attacks.runner import sample_seeds
from advkit.attacks.transfer import predictions
from advkit.datasets import ImageDataset
from advkit.errors import AdvkitError
from advkit.models import ModelWrapper
from advkit.rng import generator


def common_correct(models: dict[str, ModelWrapper], ds: ImageDataset, *, split: str = "test", n: int = 100, seed: int = 0) -> np.ndarray:
    """Up to n ``split`` indices (seeded order) that every model classifies correctly: attacks compare on the same images."""
    pool = ds.indices(split)
    order = pool[torch.randperm(len(pool), generator=generator(seed, "defence-eval")).numpy()]
    x, y = ds.batch(order)
    correct = torch.ones(len(order), dtype=torch.bool)
    for model in models.values():
        correct &= predictions(model, x) == y
    kept = order[correct.numpy()][:n]
    if len(kept) == 0:
        raise AdvkitError(f"no {split} image is classified correctly by every model")
    return kept


def column(model: str, attack: str, key: str) -> str:
    """Report column name for one model/attack/metric (report names allow letters, digits and _)."""
    return f"{model}_{attack}_{key}".replace("-", "_")


def robustness_columns(
    models: dict[str, ModelWrapper], attacks: dict[str, Attack], ds: ImageDataset, index: np.ndarray, *, seed: int = 0, batch_size: int = 128,
) -> dict[str, np.ndarray]:
    """Per-image columns ``<model>_<attack>_{success,queries,l0}`` for every model and attack on the same images."""
    columns: dict[str, np.ndarray] = {"index": index, "label": ds.labels[index]}
    for model_name, model in models.items():
        for attack_name, attack in attacks.items():
            parts = []
            for start in range(0, len(index), batch_size):
                idx = index[start : start + batch_size]
                x, y = ds.batch(idx)
                result = attack(model, x, y, seeds=sample_seeds(seed, attack_name, idx))
                parts.append((result.success.cpu().numpy(), result.queries.cpu().numpy(), result.l0.cpu().numpy()))
            for k, key in enumerate(("success", "queries", "l0")):
                columns[column(model_name, attack_name, key)] = np.concatenate([p[k] for p in parts])
    return columns


def robustness_summary(columns: dict[str, np.ndarray], models: list[str], attacks: list[str]) -> dict[str, float]:
    """Success rate of each attack on each model, and the pixels changed / queries of its successes."""
    summary: dict[str, float] = {}
    for m in models:
        for a in attacks:
            hit = columns[column(m, a, "success")]
            summary[f"{m}.{a}.success_rate"] = float(hit.mean())
            summary[f"{m}.{a}.l0_mean"] = float(columns[column(m, a, "l0")][hit].mean()) if hit.any() else float("nan")
            summary[f"{m}.{a}.queries_mean"] = float(columns[column(m, a, "queries")][hit].mean()) if hit.any() else float("nan")
    return summary
