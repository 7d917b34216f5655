"""Accuracy under natural corruptions, Hendrycks' mean corruption error, and the RGB/IR paper's accuracy ratio.

- Corruption error of corruption c (Hendrycks & Dietterich, ICLR 2019): CE_c = sum_s err(model, c, s) /
  sum_s err(baseline, c, s); mCE = mean over c of CE_c (lower is better; 1 = as good as the baseline).
- Relative accuracy (the IEEE Access 2023 code's "CE", which is a ratio of accuracies, not Hendrycks' CE):
  mean over severities of acc(model, c, s) / acc(baseline, c, s) (higher is better).

Every sample's corruption depends only on (seed, corruption, severity, dataset index), never on the batch.

    >>> import numpy as np
    >>> ce, mce = mean_corruption_error(np.array([[0.9, 0.8]]), np.array([[0.8, 0.6]]))
    >>> round(mce, 6)  # errors 0.1 + 0.2 against 0.2 + 0.4
    0.5
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from advkit.datasets import ImageDataset, to_tensor
from advkit.errors import DatasetError
from advkit.models import ModelWrapper
from advkit.perturbations.base import corrupt, corrupt_samples, is_random
from advkit.perturbations.cifar10c import load_cifar10c
from advkit.rng import derive_seed
from advkit.runtime import ProgressEvent, ProgressFn, no_progress


@torch.no_grad()
def corruption_correct(
    model: ModelWrapper,
    ds: ImageDataset,
    index: np.ndarray,
    names: Sequence[str],
    severities: Sequence[int],
    *,
    seed: int = 0,
    batch_size: int = 128,
    progress: ProgressFn = no_progress,
) -> np.ndarray:
    """(N, len(names), len(severities)) bool: is image ``index[i]`` still classified correctly under corruption (c, s)?"""
    correct = np.zeros((len(index), len(names), len(severities)), bool)
    total, done = len(names) * len(severities), 0
    for ci, name in enumerate(names):
        for si, severity in enumerate(severities):
            for start in range(0, len(index), batch_size):
                idx = index[start : start + batch_size]
                x, y = ds.batch(idx)
                x = x.to(model.device)
                if is_random(name):
                    x = corrupt_samples(x, name, severity, seed=derive_seed(seed, "corruption"), indices=idx.tolist())
                else:
                    x = corrupt(x, name, severity)
                with model.evaluating():  # as deployed, like the clean accuracy beside it (a training net's BatchNorm)
                    correct[start : start + len(idx), ci, si] = (model.logits(x).argmax(1).cpu() == y).numpy()
            done += 1
            progress(ProgressEvent("corruptions", done, total, {"corruption": name, "severity": severity}))
    return correct


@torch.no_grad()
def published_correct(
    model: ModelWrapper,
    root: str | Path,
    labels: np.ndarray,
    names: Sequence[str],
    severities: Sequence[int],
    *,
    batch_size: int = 128,
    progress: ProgressFn = no_progress,
) -> np.ndarray:
    """Like :func:`corruption_correct`, on the published CIFAR-10-C (or CIFAR-100-C) arrays in ``root``
    (:func:`~advkit.perturbations.load_cifar10c`): (N, len(names), len(severities)) bool for the first N = len(labels)
    images of each severity block, whose clean versions are the first N test images of CIFAR-10 with ``labels`` (N,).

    The files' labels must equal ``labels``: a different dataset, or another order of its test split, is refused.
    """
    for name in names:  # a missing or malformed file fails now, not after the files before it were evaluated
        load_cifar10c(root, name, severities[0], n=1)
    correct = np.zeros((len(labels), len(names), len(severities)), bool)
    total, done = len(names) * len(severities), 0
    for ci, name in enumerate(names):
        for si, severity in enumerate(severities):
            images, file_labels = load_cifar10c(root, name, severity, n=len(labels))
            if len(file_labels) < len(labels):
                raise DatasetError(f"{Path(root) / name}.npy holds {len(file_labels)} images per severity, fewer than the "
                                   f"{len(labels)} test images asked for; pass --n {len(file_labels)} or less")
            if not np.array_equal(file_labels, labels):
                raise DatasetError(f"the labels of {Path(root) / name}.npy do not match the first {len(labels)} test "
                                   "images of --data: it must be the clean test set the corruptions were made from")
            for start in range(0, len(labels), batch_size):
                x = to_tensor(images[start : start + batch_size]).to(model.device)  # (B, 32, 32, 3) uint8 -> (B, 3, 32, 32)
                with model.evaluating():
                    correct[start : start + len(x), ci, si] = model.logits(x).argmax(1).cpu().numpy() == labels[start : start + len(x)]
            done += 1
            progress(ProgressEvent("corruptions", done, total, {"corruption": name, "severity": severity}))
    return correct


def mean_corruption_error(model_acc: np.ndarray, baseline_acc: np.ndarray) -> tuple[np.ndarray, float]:
    """CE per corruption and mCE from accuracies (C, S) of the model and the baseline (Hendrycks' definition)."""
    baseline_err = (1 - baseline_acc).sum(1)
    ce = (1 - model_acc).sum(1) / np.where(baseline_err > 0, baseline_err, np.nan)
    return ce, float(np.nanmean(ce)) if np.isfinite(ce).any() else float("nan")


def relative_accuracy(model_acc: np.ndarray, baseline_acc: np.ndarray) -> np.ndarray:
    """Per corruption, mean over severities of acc(model) / acc(baseline) (the RGB/IR paper's ratio), for (C, S)
    accuracies; a severity the baseline gets all wrong has no ratio and is left out (:func:`ratio_excluded`)."""
    defined = baseline_acc > 0
    ratios = np.where(defined, model_acc, 0.0) / np.where(defined, baseline_acc, 1.0)
    # a mean over the defined cells only; np.nanmean would warn on a corruption with none ("Mean of empty slice")
    return np.where(defined.any(1), ratios.sum(1) / np.maximum(defined.sum(1), 1), np.nan)


def ratio_excluded(baseline_acc: np.ndarray, names: Sequence[str], severities: Sequence[int]) -> list[str]:
    """The (corruption, severity) cells :func:`relative_accuracy` leaves out, as ``"name sN"``.

        >>> ratio_excluded(np.array([[0.5, 0.0], [1.0, 0.2]]), ["fog", "snow"], [1, 3])
        ['fog s3']
    """
    return [f"{name} s{severity}" for ci, name in enumerate(names) for si, severity in enumerate(severities)
            if baseline_acc[ci, si] == 0]
