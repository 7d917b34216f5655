"""Attack a dataset: choose samples, attack them in batches, yield per-sample report columns.

Samples are scanned in a seeded order of the chosen split; by default only correctly classified ones are
attacked until ``n`` are found, and misclassified ones are recorded as not attacked (they count against
clean and robust accuracy, not against the attack). Each sample's random stream is seeded by (seed, attack,
dataset index), so results do not depend on the batch size or on resuming.

    >>> from advkit.datasets import open_dataset
    >>> from advkit.models import ModelWrapper, Preprocessing, create_architecture
    >>> ds = open_dataset("digits")
    >>> model = ModelWrapper(create_architecture("small-cnn", in_channels=1, input_size=8), Preprocessing())
    >>> plan = select_samples(model, ds, split="test", n=4, seed=0, only_correct=False)
    >>> len(plan.attack_index)
    4
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from advkit.attacks.base import Attack
from advkit.datasets import ImageDataset
from advkit.errors import AdvkitError
from advkit.models import ModelWrapper
from advkit.rng import derive_seed, generator
from advkit.runtime import ProgressEvent, ProgressFn, no_progress


@dataclass
class SamplePlan:
    """Scanned samples (dataset indices, in scan order) with clean predictions, and the ones to attack."""

    scanned_index: np.ndarray
    label: np.ndarray
    clean_pred: np.ndarray
    attack_index: np.ndarray


@torch.no_grad()
def select_samples(
    model: ModelWrapper,
    dataset: ImageDataset,
    *,
    split: str = "test",
    n: int | None = None,
    seed: int = 0,
    only_correct: bool = True,
    batch_size: int = 256,
) -> SamplePlan:
    """Scan ``split`` in a seeded order until ``n`` attackable samples are found (all when ``n`` is None)."""
    pool = dataset.indices(split)
    if len(pool) == 0:
        raise AdvkitError(f"{dataset.name} has no {split} samples")
    if n is not None and n < 1:
        raise AdvkitError(f"--n must be >= 1, got {n}")
    order = pool[torch.randperm(len(pool), generator=generator(seed, "selection")).numpy()]
    scanned, preds, chosen = [], [], []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        x, y = dataset.batch(idx)
        pred = model.logits(x.to(model.device)).argmax(1).cpu().numpy()
        for i, p, label in zip(idx, pred, y.numpy()):
            if n is not None and len(chosen) >= n:
                break
            scanned.append(i)
            preds.append(p)
            if p == label or not only_correct:
                chosen.append(i)
        if n is not None and len(chosen) >= n:
            break
    scanned_arr = np.asarray(scanned, np.int64)
    return SamplePlan(scanned_arr, dataset.labels[scanned_arr], np.asarray(preds, np.int64), np.asarray(chosen, np.int64))


def sample_seeds(seed: int, attack_name: str, indices: np.ndarray) -> torch.Tensor:
    """(B,) per-sample seeds from (run seed, attack, dataset index)."""
    return torch.tensor([derive_seed(seed, attack_name, int(i)) for i in indices], dtype=torch.long)


def skipped_columns(plan: SamplePlan, done: set[int], dataset: ImageDataset, save_images: bool = False) -> dict[str, np.ndarray]:
    """Report rows of scanned samples that are not attacked (misclassified clean), not yet recorded.

    With ``save_images`` their "adversarial" image is the clean one, so every row has an image.
    """
    attacked = set(plan.attack_index.tolist())
    keep = np.array([i not in done and i not in attacked for i in plan.scanned_index.tolist()], bool)
    idx, label, pred = plan.scanned_index[keep], plan.label[keep], plan.clean_pred[keep]
    n = len(idx)
    images = {"adv_images": dataset.batch(idx)[0].numpy()} if save_images else {}
    return {**images,
        "index": idx, "label": label, "pred": pred, "attacked": np.zeros(n, bool), "adv_pred": pred,
        "success": np.zeros(n, bool), "queries": np.zeros(n, np.int64), "iterations": np.zeros(n, np.int64),
        "l0": np.zeros(n, np.int64), "l2": np.zeros(n, np.float32), "linf": np.zeros(n, np.float32),
        "time": np.zeros(n, np.float32),
    }


def attack_batches(
    attack: Attack,
    model: ModelWrapper,
    dataset: ImageDataset,
    plan: SamplePlan,
    *,
    done: set[int],
    seed: int = 0,
    batch_size: int = 64,
    max_queries: int | None = None,
    save_images: bool = False,
    progress: ProgressFn = no_progress,
) -> Iterator[dict[str, np.ndarray]]:
    """Attack the planned samples not in ``done``, yielding one dict of per-sample columns per batch."""
    todo = np.array([i for i in plan.attack_index if int(i) not in done], np.int64)
    clean = dict(zip(plan.scanned_index.tolist(), plan.clean_pred.tolist()))
    total, finished, successes, queries = len(plan.attack_index), len(plan.attack_index) - len(todo), 0, []
    for start in range(0, len(todo), batch_size):
        idx = todo[start : start + batch_size]
        x, y = dataset.batch(idx)
        began = time.perf_counter()
        result = attack(model, x, y, seeds=sample_seeds(seed, attack.name, idx), max_queries=max_queries)
        elapsed = (time.perf_counter() - began) / len(idx)
        columns = {
            "index": idx, "label": y.numpy(), "pred": np.array([clean[int(i)] for i in idx], np.int64),
            "attacked": np.ones(len(idx), bool), "adv_pred": result.adv_pred.cpu().numpy(),
            "success": result.success.cpu().numpy(), "queries": result.queries.cpu().numpy(),
            "iterations": result.iterations.cpu().numpy(), "l0": result.l0.cpu().numpy(),
            "l2": result.l2.cpu().numpy(), "linf": result.linf.cpu().numpy(),
            "time": np.full(len(idx), elapsed, np.float32),
        }
        if save_images:
            columns["adv_images"] = result.x_adv.cpu().numpy().astype(np.float32)
        finished += len(idx)
        successes += int(columns["success"].sum())
        queries.extend(columns["queries"].tolist())
        progress(ProgressEvent(f"attack {attack.name}", finished, total, {
            "success": successes / max(finished - (total - len(todo)), 1),
            "median queries": float(np.median(queries)),
            "img/s": 1.0 / max(elapsed, 1e-9),
        }))
        yield columns
