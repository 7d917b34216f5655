"""Shared fixtures: small models trained in seconds on real offline data."""

from __future__ import annotations

import pytest
import torch

from advkit.datasets import ImageDataset, open_dataset
from advkit.models import ModelWrapper, create_architecture
from advkit.training import TrainSettings, fit_preprocessing, train_classifier


@pytest.fixture(scope="session")
def digits() -> ImageDataset:
    ds = open_dataset("digits")
    assert isinstance(ds, ImageDataset)
    return ds


@pytest.fixture(scope="session")
def digits_model(digits: ImageDataset) -> ModelWrapper:
    """A small CNN trained on sklearn's digits (about 2 s on a CPU, ~95% test accuracy)."""
    torch.manual_seed(0)
    net = create_architecture("small-cnn", num_classes=10, in_channels=1, input_size=8)
    pre = fit_preprocessing(digits)
    train_classifier(net, digits, TrainSettings(epochs=4, seed=0), preprocessing=pre)
    return ModelWrapper(net, pre)
