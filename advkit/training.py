"""Supervised training of a classifier in pixel space, with per-epoch checkpoints and exact resume.

Data order and augmentation of epoch e come from a generator seeded by (seed, e), so a run resumed from the
checkpoint of epoch k continues exactly as the uninterrupted run would have.

    >>> from advkit.datasets import open_dataset
    >>> from advkit.models import create_architecture, Preprocessing
    >>> ds = open_dataset("digits")
    >>> net = create_architecture("small-cnn", num_classes=10, in_channels=1, input_size=8)
    >>> out = train_classifier(net, ds, TrainSettings(epochs=2), preprocessing=fit_preprocessing(ds))
    >>> out.test_accuracy > 0.8
    True
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advkit.datasets import ImageDataset
from advkit.distributed import World, shard
from advkit.errors import AdvkitError, CheckpointError
from advkit.models import ModelWrapper, Preprocessing
from advkit.rng import generator
from advkit.runtime import ProgressEvent, ProgressFn, no_progress, write_atomically

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("onecycle", "cosine", "constant")


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of :func:`train_classifier` (recorded in the report; changing them breaks resume)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "onecycle"
    translate: int = 0
    hflip: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise AdvkitError(f"epochs and batch size must be >= 1, got {self.epochs} and {self.batch_size}")
        if not 0 < self.lr < math.inf:  # also refuses NaN
            raise AdvkitError(f"learning rate must be positive and finite, got {self.lr}")
        if not 0 <= self.weight_decay < math.inf or not 0 <= self.momentum < math.inf:
            raise AdvkitError(f"weight decay and momentum must be finite and >= 0, got {self.weight_decay} and {self.momentum}")
        if self.optimizer not in OPTIMIZERS:
            raise AdvkitError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise AdvkitError(f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        if self.translate < 0:
            raise AdvkitError(f"translate must be >= 0 pixels, got {self.translate}")


@dataclass
class TrainOutcome:
    """History per epoch, and the final model's predictions on the test split."""

    history: dict[str, list[float]]
    test_accuracy: float
    test_index: np.ndarray
    test_label: np.ndarray
    test_pred: np.ndarray
    resumed_from_epoch: int = 0
    settings: dict[str, object] = field(default_factory=dict)
    best_epoch: int = 0


def fit_preprocessing(dataset: ImageDataset, *, channels: int | None = None, normalise: bool = True) -> Preprocessing:
    """Input contract for a net trained on ``dataset``: its size, channels, class names, train-split mean/std."""
    if channels is not None and channels not in (dataset.channels, 3 if dataset.channels == 1 else dataset.channels):
        raise AdvkitError(f"{dataset.name} has {dataset.channels}-channel images; a net for them takes {dataset.channels}"
                          f"{' or 3 (the channel replicated)' if dataset.channels == 1 else ''} input channels, not {channels}")
    channels = channels or dataset.channels
    mean, std = (0.0,), (1.0,)
    if normalise:
        x, _ = dataset.batch(dataset.indices("train")[:5000])
        x = x.expand(-1, channels, -1, -1)  # 1-channel data for a 3-channel net is replicated
        mean = tuple(round(float(v), 4) for v in x.mean(dim=(0, 2, 3)))
        std = tuple(round(max(float(v), 1e-3), 4) for v in x.std(dim=(0, 2, 3)))
    return Preprocessing(channels, dataset.size, mean, std, tuple(dataset.class_names), dataset.domain)


def augment(x: torch.Tensor, settings: TrainSettings, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``translate`` px (zero padding) and optional horizontal flips."""
    if settings.translate:
        t = settings.translate
        padded = F.pad(x, (t, t, t, t))
        shifts = torch.randint(0, 2 * t + 1, (x.shape[0], 2), generator=gen)
        h, w = x.shape[2:]
        rows = shifts[:, :1] + torch.arange(h)  # (B, H) source row of each output row
        cols = shifts[:, 1:] + torch.arange(w)  # (B, W)
        batch = torch.arange(x.shape[0]).view(-1, 1, 1)
        x = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
    if settings.hflip:
        flip = torch.rand(x.shape[0], generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    return x


def _optimizer(net: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    if s.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    cls = torch.optim.AdamW if s.optimizer == "adamw" else torch.optim.Adam
    return cls(net.parameters(), lr=s.lr, weight_decay=s.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, s: TrainSettings, steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    total = s.epochs * steps_per_epoch
    if s.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=total)
    if s.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _step: 1.0)


@torch.no_grad()
def predict(model: ModelWrapper, dataset: ImageDataset, indices: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Predicted labels (N,) for the given dataset indices (uncounted forward passes, the net in eval mode)."""
    with model.evaluating():
        preds = [
            model.logits(dataset.batch(indices[i : i + batch_size])[0].to(model.device)).argmax(1).cpu()
            for i in range(0, len(indices), batch_size)
        ]
    return torch.cat(preds).numpy() if preds else np.zeros(0, np.int64)


class Objective(Protocol):
    """A training loss: (model, pixel batch, labels, dataset indices, epoch) -> (loss, logits on what was trained).

    The net is in train mode when it is called; objectives that attack the model switch it to eval mode for the
    attack (see ``advkit.defenses.finetune``).
    """

    def __call__(self, model: ModelWrapper, x: torch.Tensor, y: torch.Tensor, index: np.ndarray, epoch: int) -> tuple[torch.Tensor, torch.Tensor]: ...


def cross_entropy(model: ModelWrapper, x: torch.Tensor, y: torch.Tensor, index: np.ndarray, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain supervised training."""
    logits = model.logits(x)
    return F.cross_entropy(logits, y), logits


def train_classifier(
    net: nn.Module,
    dataset: ImageDataset,
    settings: TrainSettings,
    *,
    preprocessing: Preprocessing,
    device: torch.device | str = "cpu",
    state_path: Path | None = None,
    progress: ProgressFn = no_progress,
    objective: Objective = cross_entropy,
    validate: Callable[[ModelWrapper], float] | None = None,
    fingerprint: dict[str, object] | None = None,
    world: World | None = None,
    replace_state: bool = True,
) -> TrainOutcome:
    """Train ``net`` on the train split of ``dataset``; evaluate on val (or test) each epoch and on test at the end.

    With ``state_path``, the full training state is saved there after every epoch and, if the file exists
    when training starts, training resumes after its last epoch (``fingerprint``, e.g. an adversarial method's
    settings, must match too). With ``validate`` (a score of the model on val images, higher is better, e.g.
    robust validation accuracy), the best epoch's weights are kept and restored at the end: epochs rank by the
    score, ties by clean accuracy on the whole val split, remaining ties by the later epoch. ``validate`` needs a
    val split, so that selection never sees test images. Under torchrun (``world`` of several ranks) the net is
    wrapped in DistributedDataParallel, each rank trains on every size-th image of each epoch's seeded order,
    and only rank 0 writes the state file. With ``replace_state=False``, a state file that training did not resume
    from (one another process made after the caller checked there was none) is never replaced: FileExistsError.
    """
    device = torch.device(device)
    world = world or World()
    net.to(device)
    trained: nn.Module = net
    if world.size > 1:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    model = ModelWrapper(trained, preprocessing).to(device)
    train_idx, eval_split = dataset.indices("train"), "val" if len(dataset.indices("val")) else "test"
    if len(train_idx) == 0:
        raise AdvkitError(f"{dataset.name} has no training images")
    present = np.unique(dataset.labels[train_idx])
    if len(present) < 2:  # a one-class classifier scores accuracy 1 and robustness 1: numbers that mean nothing
        raise AdvkitError(f"the train split of {dataset.name} holds one class ({dataset.class_names[int(present[0])]}); "
                          "a classifier needs at least 2")
    if settings.translate >= min(dataset.size):  # shifts that large leave (nearly) blank images, and pad them hugely
        raise AdvkitError(f"translate {settings.translate} px would shift the {dataset.size[0]}x{dataset.size[1]} images of "
                          f"{dataset.name} out of the frame; use less than {min(dataset.size)}")
    if validate and eval_split != "val":
        raise AdvkitError(f"{dataset.name} has no val split to select the best epoch on (test images must not choose it)")
    steps = (len(train_idx) // world.size + settings.batch_size - 1) // settings.batch_size
    opt = _optimizer(net, settings)
    history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "train_acc": [], "eval_acc": [], "val_score": []}
    sched = _scheduler(opt, settings, steps)
    # what training starts from is part of the state too: a state file of another model (weights, preprocessing) or
    # of other data (name, labels, split) must not be resumed under a new --run or --report
    signature = {**asdict(settings), **(fingerprint or {}), "start.model": model.unwrapped().fingerprint(),
                 "start.data": _data_digest(dataset)}
    if world.size > 1:  # the batch size is per rank: another rank count trains another way
        signature["ranks"] = world.size
    best: dict[str, object] = {}
    start = _resume(state_path, net, opt, sched, history, signature, best, selecting=validate is not None) if state_path else 0
    for epoch in range(start, settings.epochs):
        loss, acc = _train_epoch(model, dataset, train_idx, settings, opt, sched, epoch, progress, objective, world)
        if not math.isfinite(loss):  # before anything is saved: the last good epoch's state stays resumable
            raise AdvkitError(f"training diverged: the loss is {loss} in epoch {epoch + 1}; lower the learning rate")
        eval_idx = dataset.indices(eval_split)
        # no val or test images (test_fraction=0): NaN, without NumPy's "mean of empty slice" warning
        eval_acc = float((predict(model, dataset, eval_idx) == dataset.labels[eval_idx]).mean()) if len(eval_idx) else float("nan")
        score = validate(model) if validate else float("nan")
        if validate and _at_least_as_good(score, eval_acc, best):
            best.update(score=score, clean=eval_acc, epoch=epoch + 1, net={k: v.detach().clone() for k, v in net.state_dict().items()})
        for key, value in zip(history, (epoch + 1, loss, acc, eval_acc, score)):
            history[key].append(value)
        done = (epoch + 1) * len(train_idx)
        stats = {"epoch": epoch + 1, "loss": loss, "acc": acc, f"{eval_split}_acc": eval_acc, **({"val_score": score} if validate else {})}
        progress(ProgressEvent("train", done, settings.epochs * len(train_idx), stats))
        if state_path and world.is_root:
            # after the first epoch (or once resumed from) the state is this training's own: each epoch replaces it
            _save_state(state_path, net, opt, sched, history, signature, best, replace=replace_state or epoch > 0)
    if best:
        net.load_state_dict(best["net"])  # type: ignore[arg-type]
    test_idx = dataset.indices("test")
    pred = predict(model, dataset, test_idx)
    accuracy = float((pred == dataset.labels[test_idx]).mean()) if len(test_idx) else float("nan")
    outcome = TrainOutcome(history, accuracy, test_idx, dataset.labels[test_idx], pred, start, asdict(settings))
    outcome.best_epoch = int(best.get("epoch", settings.epochs))  # type: ignore[arg-type]
    return outcome


def _at_least_as_good(score: float, clean: float, best: dict[str, object]) -> bool:
    """Rank by (score, clean val accuracy); an exact tie goes to the later epoch, which has trained longer."""
    if not best:
        return True
    # states saved before the clean tie-break have no "clean": such a best loses only on a tie
    return (score, clean) >= (float(best["score"]), float(best.get("clean", float("-inf"))))  # type: ignore[arg-type]


def _train_epoch(
    model: ModelWrapper,
    dataset: ImageDataset,
    train_idx: np.ndarray,
    s: TrainSettings,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    progress: ProgressFn,
    objective: Objective,
    world: World,
) -> tuple[float, float]:
    gen = generator(s.seed, f"epoch-{epoch}")
    order = train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]  # the same order on every rank
    order = shard(order[: len(order) - len(order) % world.size], world)  # equal shares: DDP ranks step in lockstep
    model.net.train()
    total_loss = correct = seen = 0.0
    for start in range(0, len(order), s.batch_size):
        index = order[start : start + s.batch_size]
        x, y = dataset.batch(index)
        x = augment(x, s, gen).to(model.device)
        y = y.to(model.device)
        loss, logits = objective(model, x, y, index, epoch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total_loss += float(loss.detach()) * len(y)
        correct += float((logits.argmax(1) == y).sum())
        seen += len(y)
        progress(ProgressEvent("train", epoch * len(order) + int(seen), s.epochs * len(order), {"epoch": epoch + 1, "loss": total_loss / seen}))
    model.net.eval()
    return total_loss / seen, correct / seen


def _data_digest(dataset: ImageDataset) -> str:
    """SHA-256 of a dataset's name, domain, image shape, labels and split: what resuming a training must match."""
    h = hashlib.sha256(json.dumps([dataset.name, dataset.domain, list(dataset.images.shape), list(dataset.class_names)]).encode())
    h.update(np.ascontiguousarray(dataset.labels, np.int64).tobytes())
    h.update(np.ascontiguousarray(dataset.split, np.uint8).tobytes())
    return h.hexdigest()


def _save_state(path: Path, net: nn.Module, opt: torch.optim.Optimizer, sched: object, history: dict[str, list[float]],
                signature: dict[str, object], best: dict[str, object], *, replace: bool = True) -> None:
    state = {
        "settings": signature,
        "history": history,
        "net": net.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),  # type: ignore[attr-defined]
        "best": best,
    }
    write_atomically(path, lambda tmp: torch.save(state, tmp), replace=replace)  # a kill mid-save leaves the previous epoch's state


def _resume(path: Path, net: nn.Module, opt: torch.optim.Optimizer, sched: object, history: dict[str, list[float]],
            signature: dict[str, object], best: dict[str, object], *, selecting: bool = False) -> int:
    if not path.exists():
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = state["settings"]
        if saved != signature:
            diff = next(k for k in {**saved, **signature} if saved.get(k) != signature.get(k))
            if diff == "ranks":
                raise CheckpointError(f"{path} holds the state of a training on {saved.get('ranks', 1)} process(es), this one "
                                      f"runs on {signature.get('ranks', 1)}; resume it with as many torchrun ranks, or "
                                      "delete it to start over")
            if diff.startswith("start."):
                what = "another model (other weights or preprocessing)" if diff == "start.model" else "other data (name, labels or split)"
                raise CheckpointError(f"{path} holds the state of a training that started from {what}; delete it to start over")
            raise CheckpointError(
                f"{path} was written with different settings ({diff}: {saved.get(diff)} vs {signature[diff]}); "
                "delete it or train with the same settings to resume"
            )
        # a state keeps a best epoch exactly when it selects (one is set from the first epoch on): resumed the other
        # way, the kept weights would be its best epoch under a keep-the-last run, or a best of the later epochs only
        if state["history"]["epoch"] and bool(state.get("best")) != selecting:
            was, now = ("the last", "the best") if selecting else ("the best", "the last")
            raise CheckpointError(f"{path} holds the state of a training that keeps {was} epoch, this one keeps {now} "
                                  "(--select-best or --last in advkit finetune); resume it the same way, or delete it to start over")
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])  # type: ignore[attr-defined]
        for key in history:
            history[key][:] = state["history"][key]
        best.update(state.get("best", {}))
    except (KeyError, RuntimeError, EOFError, ValueError, StopIteration) as exc:
        raise CheckpointError(f"cannot resume from {path} ({type(exc).__name__}: {exc}); delete it to start over") from None
    return len(history["epoch"])
