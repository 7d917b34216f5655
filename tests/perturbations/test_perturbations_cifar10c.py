"""The CIFAR-10-C reader on a tiny fixture in the release's layout (5 severities x 4 images), no network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from advkit.errors import AdvkitError, DatasetError, SettingsError
from advkit.perturbations import load_cifar10c

PER_SEVERITY = 4


def fake_release(root: Path, name: str = "fog", labels: np.ndarray | None = None) -> Path:
    """``<name>.npy`` (20, 32, 32, 3) uint8 whose pixels encode 10 * severity + image, and ``labels.npy``."""
    root.mkdir(parents=True, exist_ok=True)
    codes = np.array([10 * s + i for s in range(1, 6) for i in range(PER_SEVERITY)], dtype=np.uint8)
    np.save(root / f"{name}.npy", np.broadcast_to(codes[:, None, None, None], (20, 32, 32, 3)).copy())
    if labels is None:
        labels = np.tile(np.array([3, 1, 4, 1], dtype=np.uint8), 5)  # the test labels once per severity
    np.save(root / "labels.npy", labels)
    return root


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_reads_one_severity_block(tmp_path: Path, severity: int) -> None:
    images, labels = load_cifar10c(fake_release(tmp_path), "fog", severity)
    assert images.shape == (PER_SEVERITY, 32, 32, 3) and images.dtype == np.uint8
    assert images[:, 0, 0, 0].tolist() == [10 * severity + i for i in range(PER_SEVERITY)]
    assert labels.dtype == np.int64 and labels.tolist() == [3, 1, 4, 1]
    assert images.flags.writeable  # a copy, not a read-only memory map


def test_labels_of_one_severity_and_extra_corruptions(tmp_path: Path) -> None:
    fake_release(tmp_path, "saturate", labels=np.array([7, 8, 9, 0], dtype=np.int64))
    images, labels = load_cifar10c(str(tmp_path), "saturate", 2)
    assert images[0, 0, 0, 0] == 20 and labels.tolist() == [7, 8, 9, 0]


def test_missing_folder_and_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_cifar10c(tmp_path / "nowhere", "fog", 1)
    fake_release(tmp_path)
    with pytest.raises(DatasetError, match=r"no snow.npy in"):
        load_cifar10c(tmp_path, "snow", 1)
    (tmp_path / "labels.npy").unlink()
    with pytest.raises(DatasetError, match="no labels.npy"):
        load_cifar10c(tmp_path, "fog", 1)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((20, 32, 32), np.uint8), "expected uint8 images of shape"),
        (np.zeros((20, 28, 28, 3), np.uint8), "expected uint8 images of shape"),
        (np.zeros((19, 32, 32, 3), np.uint8), "expected uint8 images of shape"),
        (np.zeros((20, 32, 32, 3), np.float32), "expected uint8 images of shape"),
        (np.array([{"pickled": 1}], dtype=object), "cannot read"),
    ],
)
def test_wrong_image_arrays(tmp_path: Path, images: np.ndarray, message: str) -> None:
    fake_release(tmp_path)
    np.save(tmp_path / "fog.npy", images, allow_pickle=True)
    with pytest.raises(DatasetError, match=message):
        load_cifar10c(tmp_path, "fog", 1)


@pytest.mark.parametrize(
    ("labels", "message"),
    [(np.zeros(7, np.uint8), "expected 20 or 4 labels"), (np.zeros(20, np.float32), "integer labels")],
)
def test_wrong_labels(tmp_path: Path, labels: np.ndarray, message: str) -> None:
    fake_release(tmp_path, labels=labels)
    with pytest.raises(DatasetError, match=message):
        load_cifar10c(tmp_path, "fog", 1)


def test_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(AdvkitError, match="did you mean gaussian_noise") as info:
        load_cifar10c(tmp_path, "gaussian-noise", 1)
    assert "\n" not in str(info.value)
    with pytest.raises(SettingsError, match="severity"):
        load_cifar10c(fake_release(tmp_path), "fog", 0)
