"""In-memory view of a labelled image dataset, one domain or an aligned RGB-IR pair.

Images are stored as they come from disk (uint8 HWC, or float HWC in [0, 1]) and become float CHW tensors in
[0, 1] only when a batch is taken, so a dataset of 50k CIFAR images stays 150 MB. Every sample keeps its index
in the full dataset: reports record that index, so a run can be resumed, sharded or compared across models.

    >>> import numpy as np
    >>> ds = ImageDataset("toy", np.zeros((10, 4, 4, 1), np.uint8), np.arange(10) % 2, ["even", "odd"])
    >>> x, y = ds.batch(ds.indices("test"))
    >>> tuple(x.shape), x.dtype, len(ds.indices("train")) + len(ds.indices("test"))
    ((2, 1, 4, 4), torch.float32, 10)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from advkit.errors import DatasetError

SPLITS = {"train": 0, "val": 1, "test": 2}
DOMAINS = ("rgb", "ir", "gray")


class ImageSource(Protocol):
    """Anything indexable giving HWC images of one size: a numpy array, or a lazy reader of files."""

    shape: tuple[int, ...]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


def make_split(labels: np.ndarray, *, test_fraction: float = 0.2, val_fraction: float = 0.0, seed: int = 0) -> np.ndarray:
    """Deterministic stratified split: (N,) uint8 codes 0 train, 1 val, 2 test.

    Each class is shuffled with its own seeded permutation, so the split of one class does not move when
    another class gains samples, and both domains of a pair (which share ``labels``) get the same split.
    Labels that are not class indices (negative, fractional, NaN, text) stay train: readers split before they
    build the dataset, whose ``check_labels`` then refuses them in one line naming the file.
    """
    if not 0 <= test_fraction < 1 or not 0 <= val_fraction < 1 or test_fraction + val_fraction >= 1:
        raise DatasetError(f"split fractions must leave training data: test={test_fraction}, val={val_fraction}")
    labels = np.asarray(labels)
    split = np.zeros(len(labels), np.uint8)
    for cls in np.unique(labels[_class_indices(labels)]):
        members = np.flatnonzero(labels == cls)
        order = members[np.random.default_rng([seed, int(cls)]).permutation(len(members))]
        n_test = int(round(test_fraction * len(members)))
        n_val = int(round(val_fraction * len(members)))
        split[order[:n_test]] = SPLITS["test"]
        split[order[n_test : n_test + n_val]] = SPLITS["val"]
    return split


def _class_indices(labels: np.ndarray) -> np.ndarray:
    """Mask of the labels that are whole numbers >= 0 (of an integer, bool or float array; none of any other)."""
    if labels.dtype.kind in "biu":
        return labels >= 0
    if labels.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            return np.isfinite(labels) & (labels == np.round(labels)) & (labels >= 0)
    return np.zeros(labels.shape, bool)


def check_labels(labels: np.ndarray | Sequence[int], name: str, num_classes: int | None) -> np.ndarray:
    """(N,) int64 labels, after a one-line DatasetError unless every label is a class index 0..num_classes-1
    (``num_classes`` None: any index >= 0, for readers that learn the classes from the labels).

        >>> check_labels(np.array([0, 2, -1]), "toy.npz", 3)
        Traceback (most recent call last):
        advkit.errors.DatasetError: toy.npz: labels must be >= 0, got -1
    """
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DatasetError(f"{name}: labels must be a 1-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise DatasetError(f"{name}: labels must be integers, got {arr.dtype} values")
    if arr.dtype.kind == "f":
        bad = ~(np.isfinite(arr) & (arr == np.round(arr)))
        if bad.any():
            raise DatasetError(f"{name}: labels must be integers, got {arr[bad][0]!s}")  # !s: float32 0.4, not 0.4000000059604645
    if len(arr) and arr.min() < 0:
        raise DatasetError(f"{name}: labels must be >= 0, got {arr.min()}")
    if len(arr) and arr.dtype.kind in "uf" and arr.max() >= 2.0**63:  # the int64 cast would wrap it to a negative
        raise DatasetError(f"{name}: label {arr.max()} is too large to be a class index")
    if num_classes is not None and len(arr) and arr.max() >= num_classes:
        raise DatasetError(f"{name}: labels must lie in [0, {num_classes - 1}], got [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64)


def _split_counts(split: np.ndarray | None) -> str:
    """'train/val/test 1438/0/359' for reprs."""
    counts = np.bincount(np.asarray(split, dtype=np.int64), minlength=len(SPLITS)) if split is not None else [0] * 3
    return "train/val/test " + "/".join(str(int(n)) for n in counts[: len(SPLITS)])


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, C) uint8 or float array -> (B, C, H, W) float32 tensor in [0, 1]."""
    arr = np.asarray(images)
    if not arr.flags.writeable:  # PIL and np.load give read-only arrays, which torch.from_numpy warns about
        arr = arr.copy()
    if arr.dtype == np.uint8:
        out = torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0)
    elif arr.dtype == np.uint16:
        out = torch.from_numpy(arr.astype(np.float32) / 65535.0)
    else:
        out = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return out.permute(0, 3, 1, 2).contiguous()  # (B, H, W, C) -> (B, C, H, W)


def check_indices(indices: Sequence[int] | np.ndarray, n: int, name: str) -> np.ndarray:
    """Dataset indices as int64, each in 0..n-1; a one-line error otherwise (NumPy would wrap -1 to the last
    sample and truncate 1.7 to 1 without a word)."""
    idx = np.asarray(indices)
    if idx.size == 0:
        return np.zeros(0, np.int64)
    if idx.ndim != 1 or idx.dtype.kind not in "ui":
        raise DatasetError(f"{name}: indices must be a 1-D sequence of integers, got {idx.dtype} of shape {idx.shape}")
    if idx.min() < 0 or idx.max() >= n:
        bad = int(idx.min()) if idx.min() < 0 else int(idx.max())
        raise DatasetError(f"{name}: index {bad} is outside the dataset's {n} samples (0-{n - 1})")
    return idx.astype(np.int64, copy=False)


@dataclass
class ImageDataset:
    """Labelled images of one domain with a fixed train/val/test split.

    Attributes:
        name: how the dataset was opened (registry name or path).
        images: (N, H, W, C) uint8 / uint16 / float-in-[0, 1] source.
        labels: (N,) int64 class indices into ``class_names``.
        class_names: K names; K may exceed the classes present.
        split: (N,) uint8 codes (0 train, 1 val, 2 test); a seeded stratified 80/20 split when omitted.
        domain: "rgb", "ir" or "gray".
    """

    name: str
    images: ImageSource
    labels: np.ndarray
    class_names: Sequence[str]
    split: np.ndarray | None = None
    domain: str = "rgb"
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = check_labels(self.labels, self.name, len(self.class_names))
        if len(self.images) != len(self.labels):
            raise DatasetError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")
        if len(self.labels) == 0:
            raise DatasetError(f"{self.name}: the dataset has no images")
        if len(self.images.shape) != 4:
            raise DatasetError(f"{self.name}: images must be (N, H, W, C), got shape {tuple(self.images.shape)}")
        if self.domain not in DOMAINS:
            raise DatasetError(f"{self.name}: domain must be one of {', '.join(DOMAINS)}, got {self.domain!r}")
        dtype = np.dtype(getattr(self.images, "dtype", np.uint8))
        if dtype.kind not in "uif" or (dtype.kind in "ui" and dtype not in (np.uint8, np.uint16)):
            raise DatasetError(f"{self.name}: pixels must be uint8, uint16 or float in [0, 1], got {dtype}")
        self.split = make_split(self.labels) if self.split is None else np.asarray(self.split)
        if self.split.shape != self.labels.shape:
            raise DatasetError(f"{self.name}: split has {len(self.split)} entries for {len(self.labels)} images")
        if self.split.dtype.kind not in "ui" or not np.isin(self.split, list(SPLITS.values())).all():
            raise DatasetError(f"{self.name}: split codes must be {', '.join(f'{v} ({k})' for k, v in SPLITS.items())}")
        self.split = self.split.astype(np.uint8)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:  # the default dataclass repr would print every pixel
        h, w, c = self.images.shape[1:]
        dtype = getattr(self.images, "dtype", "?")
        return (
            f"ImageDataset({self.name!r}, {len(self)} {self.domain} images {h}x{w}x{c} {dtype}, "
            f"{self.num_classes} classes, {_split_counts(self.split)})"
        )

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def indices(self, split: str = "all", *, required: bool = False) -> np.ndarray:
        """Sorted dataset indices of a split ("train", "val", "test" or "all"); ``required``: a one-line error if
        the split is empty."""
        if split not in (*SPLITS, "all"):
            raise DatasetError(f"unknown split {split!r}; choose from all, {', '.join(SPLITS)}")
        found = np.arange(len(self)) if split == "all" else np.flatnonzero(self.split == SPLITS[split])
        if required and len(found) == 0:
            raise DatasetError(f"{self.name} has no {split} samples")
        return found

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) float32 in [0, 1] and labels (B,) int64 for the given dataset indices."""
        idx = check_indices(indices, len(self), self.name)
        if isinstance(self.images, np.ndarray):
            raw = self.images[idx]
        else:
            raw = np.stack([self.images[int(i)] for i in idx]) if len(idx) else np.zeros((0, *self.images.shape[1:]))
        return to_tensor(raw), torch.from_numpy(self.labels[idx])


@dataclass
class PairedDataset:
    """Aligned RGB and IR images of the same scenes: one label, one split, identical H x W.

    ``rgb`` is (N, H, W, 3) and ``ir`` is (N, H, W, 1); item i of both is the same scene.
    """

    name: str
    rgb: ImageSource
    ir: ImageSource
    labels: np.ndarray
    class_names: Sequence[str]
    split: np.ndarray | None = None
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.rgb) != len(self.ir):
            raise DatasetError(f"{self.name}: {len(self.rgb)} RGB images but {len(self.ir)} IR images")
        if tuple(self.rgb.shape[1:3]) != tuple(self.ir.shape[1:3]):
            raise DatasetError(
                f"{self.name}: RGB images are {self.rgb.shape[1]}x{self.rgb.shape[2]} but IR images are "
                f"{self.ir.shape[1]}x{self.ir.shape[2]}; aligned pairs need the same size"
            )
        if self.ir.shape[3] != 1:
            raise DatasetError(f"{self.name}: IR images must have 1 channel, got {self.ir.shape[3]}")
        # validates labels and fixes the split once, shared by both domains
        rgb = self.domain("rgb")
        self.labels, self.split = rgb.labels, rgb.split

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        h, w = self.rgb.shape[1:3]
        dtypes = f"{getattr(self.rgb, 'dtype', '?')}/{getattr(self.ir, 'dtype', '?')}"
        return (
            f"PairedDataset({self.name!r}, {len(self)} RGB-IR pairs {h}x{w} {dtypes}, "
            f"{len(self.class_names)} classes, {_split_counts(self.split)})"
        )

    def domain(self, domain: str) -> ImageDataset:
        """One side of the pair as an ImageDataset with the shared labels and split."""
        if domain not in ("rgb", "ir"):
            raise DatasetError(f"a paired dataset has domains rgb and ir, not {domain!r}")
        images = self.rgb if domain == "rgb" else self.ir
        return ImageDataset(self.name, images, self.labels, self.class_names, self.split, domain, dict(self.meta))
