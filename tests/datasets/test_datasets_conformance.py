"""Every named dataset conforms: labels in range, a complete split, batches of floats in [0, 1], paired views aligned."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advkit.datasets import SPLITS, ImageDataset, PairedDataset, dataset_factories, open_dataset

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
