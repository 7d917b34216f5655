"""Attack a dataset: choose samples and targets, attack them in batches, yield per-sample report columns.

Samples are scanned in a seeded order of the chosen split; by default only correctly classified ones are
attacked until ``n`` (or ``per_class`` per class) are found, and misclassified ones are recorded as not
attacked: they count against clean and robust accuracy, not against the attack. Each sample's random stream
is seeded by (seed, attack, dataset index), so results do not depend on the batch size, on resuming, or on
how samples are sharded across torchrun ranks.

    >>> from advkit.datasets import open_dataset
    >>> from advkit.models import ModelWrapper, Preprocessing, create_architecture
    >>> ds = open_dataset("digits")
    >>> model = ModelWrapper(create_architecture("small-cnn", in_channels=1, input_size=8), Preprocessing())
    >>> plan = select_samples(model, ds, split="test", n=4, seed=0, only_correct=False)
    >>> len(plan.attack_index), plan.target is None
    (4, True)
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from advkit.attacks.base import Attack, check_finite
from advkit.attacks.moves import moves_table
from advkit.datasets import ImageDataset
from advkit.errors import AdvkitError
from advkit.models import ModelWrapper
from advkit.rng import derive_seed, generator

TARGET_MODES = ("random", "least-likely")


@dataclass
class SamplePlan:
    """Scanned samples (dataset indices in scan order) with clean predictions; the ones to attack, with targets."""

    scanned_index: np.ndarray
    label: np.ndarray
    clean_pred: np.ndarray
    attack_index: np.ndarray
    target: np.ndarray | None = None  # (len(attack_index),) for targeted attacks

    def target_of(self, indices: np.ndarray) -> np.ndarray | None:
        if self.target is None:
            return None
        lookup = dict(zip(self.attack_index.tolist(), self.target.tolist()))
        return np.array([lookup[int(i)] for i in indices], np.int64)


def parse_target(spec: str | None, class_names: Sequence[str]) -> str | int | None:
    """``--targeted`` value -> None, "random", "least-likely" or a class index (given as index or name)."""
    if spec is None or spec in TARGET_MODES:
        return spec
    if spec in class_names:
        return list(class_names).index(spec)
    try:
        label = int(spec)
    except ValueError:
        raise AdvkitError(f"--targeted takes random, least-likely, a class index or a class name; got {spec!r}") from None
    if not 0 <= label < len(class_names):
        raise AdvkitError(f"target label {label} is outside the {len(class_names)} classes (0-{len(class_names) - 1})")
    return label


@torch.no_grad()
def select_samples(
    model: ModelWrapper,
    dataset: ImageDataset,
    *,
    split: str = "test",
    n: int | None = None,
    per_class: int | None = None,
    seed: int = 0,
    only_correct: bool = True,
    target: str | int | None = None,
    batch_size: int = 256,
) -> SamplePlan:
    """Scan ``split`` in a seeded order until ``n`` attackable samples (and ``per_class`` per class) are found.

    With ``per_class``, a sample met once its class is full is not scanned: the report's clean and robust
    accuracies are over the scanned samples, and a correct sample that was never attacked would count as robust.

    ``target`` is None (untargeted), "random" (a seeded class other than the label), "least-likely" (the
    class other than the label the model finds least likely on the clean image) or a class index; with a fixed class, samples of
    that class are skipped.
    """
    pool = dataset.indices(split, required=True)
    for name, value in (("--n", n), ("--per-class", per_class)):
        if value is not None and value < 1:
            raise AdvkitError(f"{name} must be >= 1, got {value}")
    if isinstance(target, int):
        pool = pool[dataset.labels[pool] != target]
    order = pool[torch.randperm(len(pool), generator=generator(seed, "selection")).numpy()]
    taken = np.zeros(dataset.num_classes, np.int64)
    scanned, preds, chosen, least = [], [], [], []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        x, y = dataset.batch(idx)
        with model.evaluating():
            logits = model.logits(x.to(model.device))
        check_finite(logits, "clean images")
        if int(y.max()) >= logits.shape[1]:
            raise AdvkitError(f"{dataset.name} has class {int(y.max())} but the model outputs {logits.shape[1]} classes")
        # the least likely class other than the label: a misclassified sample's label may be the least likely
        others = logits.scatter(1, y.to(logits.device).unsqueeze(1), float("inf"))
        for i, p, low, label in zip(idx, logits.argmax(1).tolist(), others.argmin(1).tolist(), y.tolist()):
            if _full(len(chosen), taken, n, per_class):
                break
            if per_class is not None and taken[label] >= per_class:
                continue  # its class is full: outside the population the run's accuracies are over
            scanned.append(i)
            preds.append(p)
            if p == label or not only_correct:
                chosen.append(i)
                least.append(low)
                taken[label] += 1
        if _full(len(chosen), taken, n, per_class):
            break
    attack_index = np.asarray(chosen, np.int64)
    targets = _targets(target, attack_index, dataset.labels[attack_index], np.asarray(least, np.int64), dataset.num_classes, seed)
    scanned_arr = np.asarray(scanned, np.int64)
    return SamplePlan(scanned_arr, dataset.labels[scanned_arr], np.asarray(preds, np.int64), attack_index, targets)


def _full(count: int, taken: np.ndarray, n: int | None, per_class: int | None) -> bool:
    if n is not None and count >= n:
        return True
    return per_class is not None and bool((taken >= per_class).all())


def _targets(mode: str | int | None, index: np.ndarray, label: np.ndarray, least: np.ndarray, k: int, seed: int) -> np.ndarray | None:
    if mode is None:
        return None
    if isinstance(mode, int):
        return np.full(len(index), mode, np.int64)
    if mode == "least-likely":
        return least
    if k < 2:
        raise AdvkitError("a targeted attack needs at least 2 classes")
    offset = np.array([derive_seed(seed, "target", int(i)) % (k - 1) for i in index], np.int64)
    return offset + (offset >= label)  # uniform over the classes other than the label


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
    targets = {"target": np.full(n, -1, np.int64)} if plan.target is not None else {}  # no attack, no target
    return {
        **images, **targets,
        "index": idx, "label": label, "pred": pred, "attacked": np.zeros(n, bool), "adv_pred": pred,
        "success": np.zeros(n, bool), "queries": np.zeros(n, np.int64), "iterations": np.zeros(n, np.int64),
        "l0": np.zeros(n, np.int64), "l2": np.zeros(n, np.float32), "linf": np.zeros(n, np.float32),
        "time": np.zeros(n, np.float32),
    }


def batches(indices: np.ndarray, batch_size: int, rounds: int | None = None) -> list[np.ndarray]:
    """Split into batches; pad with empty batches up to ``rounds`` (torchrun ranks advance in lockstep)."""
    parts = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    return parts + [indices[:0]] * max(0, (rounds or 0) - len(parts))


def attack_batches(
    attack: Attack,
    model: ModelWrapper,
    dataset: ImageDataset,
    plan: SamplePlan,
    todo: list[np.ndarray],
    *,
    seed: int = 0,
    max_queries: int | None = None,
    save_images: bool = False,
) -> Iterator[dict[str, np.ndarray] | None]:
    """Attack each batch of dataset indices in ``todo``, yielding its per-sample columns (None for an empty batch).

    An attack that records pixel moves (Pixle, WhitePixle) adds its programs as ``moves/<column>`` entries: rows of
    the ``moves`` table (:func:`~advkit.attacks.moves.moves_table`), which ``RunWriter.append`` takes as they are.
    """
    from advkit.report.schema import MOVES, TABLE_SEP  # here: importing the report package loads h5py

    clean = dict(zip(plan.scanned_index.tolist(), plan.clean_pred.tolist()))
    for idx in todo:
        if len(idx) == 0:
            yield None
            continue
        x, y = dataset.batch(idx)
        target = plan.target_of(idx)
        began = time.perf_counter()
        result = attack(model, x, y, target=None if target is None else torch.from_numpy(target),
                        seeds=sample_seeds(seed, attack.name, idx), max_queries=max_queries)
        elapsed = (time.perf_counter() - began) / len(idx)
        columns = {
            "index": idx, "label": y.numpy(), "pred": np.array([clean[int(i)] for i in idx], np.int64),
            "attacked": np.ones(len(idx), bool), "adv_pred": result.adv_pred.cpu().numpy(),
            "success": result.success.cpu().numpy(), "queries": result.queries.cpu().numpy(),
            "iterations": result.iterations.cpu().numpy(), "l0": result.l0.cpu().numpy(),
            "l2": result.l2.cpu().numpy(), "linf": result.linf.cpu().numpy(),
            "time": np.full(len(idx), elapsed, np.float32),
        }
        if target is not None:
            columns["target"] = target
        if save_images:
            columns["adv_images"] = result.x_adv.cpu().numpy().astype(np.float32)
        if result.moves is not None:
            columns.update({f"{MOVES}{TABLE_SEP}{k}": v for k, v in moves_table(idx, result.moves).items()})
        yield columns


def worst_case(per_attack: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-sample worst case over attacks run on the same samples: robust only if every attack failed.

    Returns columns index, label, pred, attacked, success (any attack), success_by_attack (N, A) and
    best_attack (index into the attack order of the first successful attack, -1 if none).
    """
    names = list(per_attack)
    first = per_attack[names[0]]
    for name in names[1:]:
        if not np.array_equal(per_attack[name]["index"], first["index"]):
            raise AdvkitError(f"attacks {names[0]} and {name} were run on different samples; cannot combine them")
    by_attack = np.stack([per_attack[n]["success"] & per_attack[n]["attacked"] for n in names], axis=1)
    any_success = by_attack.any(axis=1)
    return {
        "index": first["index"], "label": first["label"], "pred": first["pred"],
        "attacked": np.stack([per_attack[n]["attacked"] for n in names], 1).any(1),
        "success": any_success, "success_by_attack": by_attack,
        "best_attack": np.where(any_success, by_attack.argmax(1), -1).astype(np.int64),
    }
