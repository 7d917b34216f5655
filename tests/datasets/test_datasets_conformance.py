"""Every named dataset conforms: labels in range, a complete split, batches of floats in [0, 1], paired views aligned."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advkit.datasets import SPLITS, ImageDataset, PairedDataset, dataset_factories, make_split, open_dataset
from advkit.errors import DatasetError, SettingsError

NAMED, _ = dataset_factories()


@pytest.mark.parametrize("name", NAMED.names())
def test_named_dataset_conforms(name: str) -> None:
    ds = open_dataset(name)
    views = [ds.domain("rgb"), ds.domain("ir")] if isinstance(ds, PairedDataset) else [ds]
    for view in views:
        assert isinstance(view, ImageDataset)
        assert view.labels.min() >= 0 and view.labels.max() < view.num_classes
        assert set(np.unique(view.split)) <= set(SPLITS.values())
        assert len(view.indices("train")) > 0 and len(view.indices("test")) > 0
        x, y = view.batch(view.indices("test")[:16])
        assert x.dtype == torch.float32 and x.shape == (16, view.channels, *view.size)
        assert float(x.min()) >= 0 and float(x.max()) <= 1 and y.dtype == torch.int64
    if isinstance(ds, PairedDataset):
        rgb, ir = views
        assert rgb.size == ir.size and np.array_equal(rgb.split, ir.split) and np.array_equal(rgb.labels, ir.labels)
        assert (rgb.channels, ir.channels) == (3, 1)


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64])
@pytest.mark.parametrize("name", NAMED.names())
def test_seed_out_of_range_is_one_line(name: str, seed: int) -> None:
    with pytest.raises(SettingsError, match=rf"^{name} \(--data-param\): seed must be in 0\.\.{2**63 - 1}, got {seed}$"):
        open_dataset(name, seed=seed)


def test_largest_seed_is_accepted() -> None:
    assert len(open_dataset("digits", seed=2**63 - 1).indices("test")) > 0


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.array([0, 1, -1, 1]), "toy: labels must be >= 0, got -1"),
        (np.array([0.0, 1.5, 1.0, 0.0]), "toy: labels must be integers, got 1.5"),
        (np.array([0.0, np.nan, 1.0, 0.0]), "toy: labels must be integers, got nan"),
        (np.array(["a", "b", "a", "b"]), "toy: labels must be integers, got <U1 values"),
        (np.array([0, 1, 2, 1]), r"toy: labels must lie in \[0, 1\], got \[0, 2\]"),
        (np.zeros((4, 1), np.int64), r"toy: labels must be a 1-D array, got shape \(4, 1\)"),
    ],
)
def test_labels_must_be_class_indices(labels: np.ndarray, message: str) -> None:
    images = np.zeros((4, 2, 2, 1), np.uint8)
    make_split(labels)  # readers split before they build the dataset: that must not be where bad labels fail
    with pytest.raises(DatasetError, match=f"^{message}$"):
        ImageDataset("toy", images, labels, ["a", "b"])
    with pytest.raises(DatasetError, match=f"^{message}$"):
        PairedDataset("toy", np.zeros((4, 2, 2, 3), np.uint8), images, labels, ["a", "b"])


def test_whole_float_labels_become_int64() -> None:
    ds = ImageDataset("toy", np.zeros((4, 2, 2, 1), np.uint8), np.array([0.0, 1.0, 1.0, 0.0]), ["a", "b"])
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [0, 1, 1, 0]


def test_batch_indices_pixels_and_split_codes_are_checked() -> None:
    """Found by a library sweep: -1 gave the last sample, 1.7 sample 1, int64 pixels stayed 0-255 as "[0, 1]" floats."""
    images = np.zeros((4, 2, 2, 1), np.uint8)
    ds = ImageDataset("tiny", images, np.array([0, 1, 0, 1]), ["a", "b"], split=np.array([0, 0, 2, 2]))
    for indices, message in [([-1], "index -1 is outside the dataset's 4 samples"), ([4], "index 4 is outside"),
                             ([1.7], "indices must be a 1-D sequence of integers"), ([[0, 1]], "1-D sequence")]:
        with pytest.raises(DatasetError, match=message):
            ds.batch(indices)
    assert ds.batch([])[0].shape == (0, 1, 2, 2) and ds.batch(np.array([3], np.uint8))[1].tolist() == [1]
    with pytest.raises(DatasetError, match="pixels must be uint8, uint16 or float in \\[0, 1\\], got int64"):
        ImageDataset("tiny", images.astype(np.int64), np.array([0, 1, 0, 1]), ["a", "b"])
    with pytest.raises(DatasetError, match=r"split codes must be 0 \(train\), 1 \(val\), 2 \(test\)"):
        ImageDataset("tiny", images, np.array([0, 1, 0, 1]), ["a", "b"], split=np.array([0, 7, 2, 2]))
