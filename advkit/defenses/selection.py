"""Which fine-tuning epoch to keep: robust validation accuracy against the method's own threat.

:func:`advkit.training.train_classifier` calls the :class:`Selection`'s ``score`` after every epoch and keeps the
best epoch; ties go to clean accuracy on the whole val split, then to the later epoch. The criterion per method
(docs/methods.md, "Adversarial fine-tuning"):

- ``pgd``, ``fast``, ``trades``: robust accuracy under L-inf PGD (the method's eps, 10 steps of eps / 4);
- ``paper-white``, ``paper-black``: robust accuracy under a cheap Pixle (restarts 5 x iterations 5). Both
  protocols defend against pixel rearrangements, and the issue's evaluation attack is Pixle (10 x 10); PGD
  accuracy stays 0 for these models, and a cheap WhitePixle (1 pixel per move) fails on nearly every image, so
  neither can rank epochs, while 5 x 5 Pixle leaves about a third of the built-in MNIST model's val images robust;
- ``plain``: clean accuracy (there is no threat).

Selection never sees test images: datasets without a val split get one carved out of their training split
(:func:`with_validation_split`). Attacks are seeded per image from (seed, criterion, dataset index), so every
epoch, and every torchrun rank, scores the same attack draws.

    >>> import numpy as np
    >>> from advkit.datasets import ImageDataset
    >>> ds = ImageDataset("toy", np.zeros((100, 4, 4, 1), np.uint8), np.arange(100) % 2, ["even", "odd"])
    >>> [len(with_validation_split(ds, seed=0).indices(s)) for s in ("train", "val", "test")]
    [72, 8, 20]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from advkit.attacks import create_attack
from advkit.attacks.base import Attack
from advkit.attacks.runner import sample_seeds
from advkit.datasets import ImageDataset
from advkit.datasets.readers import carve_val
from advkit.defenses.evaluate import common_correct
from advkit.defenses.finetune import FinetuneMethod
from advkit.errors import DatasetError
from advkit.models import ModelWrapper
from advkit.training import predict

VAL_FRACTION = 0.1  # share of the training split carved out for selection when a dataset has no val split
VAL_IMAGES = 200  # val images the pre-trained model classifies correctly, attacked after every epoch
SELECTION_PIXLE = {"restarts": 5, "max_iterations": 5}
SELECTION_PGD_STEPS = 10
TIES = "ties: clean val accuracy, then the later epoch"


@dataclass(frozen=True)
class Selection:
    """How epochs are ranked: ``score(model)`` (higher is better) and a description for logs and reports."""

    criterion: str
    score: Callable[[ModelWrapper], float]


def with_validation_split(ds: ImageDataset, *, seed: int, fraction: float = VAL_FRACTION) -> ImageDataset:
    """``ds`` itself if it has a val split, else a copy whose val split is a stratified ``fraction`` of its train split.

    The carve depends only on the labels and ``seed`` (the readers' own ``val_fraction`` carve), so every torchrun
    rank gets the same split; the images moved to val are no longer trained on.
    """
    if len(ds.indices("val")):
        return ds
    carved = dataclasses.replace(ds, split=carve_val(ds.split, ds.labels, fraction, seed))
    if not len(carved.indices("val")):
        raise DatasetError(f"{ds.name} has too few training images per class to carve a val split from; use a "
                           "dataset with a val split (--data-param val_fraction=0.1 where the dataset takes it)")
    return carved


def epoch_selection(method: FinetuneMethod, ds: ImageDataset, pre_trained: ModelWrapper, *, seed: int,
                    n: int = VAL_IMAGES) -> Selection:
    """The keep-best criterion of ``method`` on ``ds``'s val split (see the module docstring)."""
    if method.method == "plain":
        val = ds.indices("val")
        return Selection(f"clean accuracy on {len(val)} val images; ties: the later epoch",
                         lambda model: float((predict(model, ds, val) == ds.labels[val]).mean()))
    index = common_correct({"pre-trained": pre_trained}, ds, split="val", n=n, seed=seed + 1)
    if method.method.startswith("paper"):
        attack: Attack = create_attack("pixle", **SELECTION_PIXLE)
        threat = f"pixle (restarts {SELECTION_PIXLE['restarts']} x iterations {SELECTION_PIXLE['max_iterations']})"
    else:
        attack = create_attack("pgd", eps=method.eps, alpha=method.eps / 4, steps=SELECTION_PGD_STEPS)
        threat = f"pgd (eps {method.eps:g}, {SELECTION_PGD_STEPS} steps)"
    seeds = sample_seeds(seed, f"select-{attack.name}", index)
    return Selection(f"robust accuracy under {threat} on {len(index)} val images; {TIES}",
                     lambda model: _robust_accuracy(attack, model, ds, index, seeds))


def _robust_accuracy(attack: Attack, model: ModelWrapper, ds: ImageDataset, index: np.ndarray, seeds: torch.Tensor) -> float:
    x, y = ds.batch(index)
    result = attack(model.unwrapped(), x, y, seeds=seeds)  # unwrapped: attack queries must not sync DDP gradients
    return float((~result.success.cpu()).float().mean())
