"""Tiny dataset fixtures written in the real on-disk formats (no network), shared by the dataset tests."""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from advkit.datasets import PairedDataset
from advkit.datasets.synthetic import generate_rgbir

CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def _pixels(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def write_cifar_batch(path: Path, data: np.ndarray, labels: dict[bytes, list[int]], label: bytes) -> None:
    """A batch as the real files have it: a dict with bytes keys, data (N, 3072) uint8 and lists of ints."""
    batch = {
        b"batch_label": label,
        b"data": data,
        b"filenames": [b"img_%d.png" % i for i in range(len(data))],
        **labels,
    }
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cifar-10-batches-py with 5 train batches of 6 images and a test batch of 4."""
    root = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(10)
    for i in range(1, 6):
        write_cifar_batch(
            root / f"data_batch_{i}",
            _pixels(rng, 6, 3072),
            {b"labels": [int(v) for v in rng.integers(0, 10, 6)]},
            b"training batch %d of 5" % i,
        )
    write_cifar_batch(root / "test_batch", _pixels(rng, 4, 3072), {b"labels": [0, 1, 2, 3]}, b"testing batch 1 of 1")
    with open(root / "batches.meta", "wb") as handle:
        pickle.dump({b"num_cases_per_batch": 6, b"label_names": CIFAR10_NAMES, b"num_vis": 3072}, handle, protocol=2)
    return root


@pytest.fixture(scope="session")
def cifar100_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cifar-100-python with 8 train and 4 test images, fine and coarse labels."""
    root = tmp_path_factory.mktemp("cifar100") / "cifar-100-python"
    root.mkdir()
    rng = np.random.default_rng(100)
    for name, n in (("train", 8), ("test", 4)):
        labels = {
            b"fine_labels": [int(v) for v in rng.integers(0, 100, n)],
            b"coarse_labels": [int(v) for v in rng.integers(0, 20, n)],
        }
        write_cifar_batch(root / name, _pixels(rng, n, 3072), labels, name.encode())
    meta = {
        b"fine_label_names": [b"fine%d" % i for i in range(100)],
        b"coarse_label_names": [b"coarse%d" % i for i in range(20)],
    }
    with open(root / "meta", "wb") as handle:
        pickle.dump(meta, handle, protocol=2)
    return root


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file: 0x00 0x00, type code 0x08 (unsigned byte), ndim, big-endian uint32 sizes, values."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MNIST idx files: gzipped train (12 images), plain t10k (5 images)."""
    root = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(28)
    train_x, train_y = _pixels(rng, 12, 28, 28), np.arange(12) % 10
    test_x, test_y = _pixels(rng, 5, 28, 28), np.arange(5)
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(train_x)))
    (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(train_y)))
    (root / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(test_x))
    (root / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(test_y))
    np.save(root / "expected_train.npy", train_x)
    return root


@pytest.fixture(scope="session")
def svhn_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train_32x32.mat (6 images) and test_32x32.mat (4), X (32, 32, 3, N) and y in 1..10."""
    from scipy.io import savemat

    root = tmp_path_factory.mktemp("svhn")
    rng = np.random.default_rng(32)
    for name, labels in (("train", [10, 1, 2, 3, 10, 9]), ("test", [10, 5, 6, 7])):
        x = _pixels(rng, 32, 32, 3, len(labels))
        savemat(root / f"{name}_32x32.mat", {"X": x, "y": np.array(labels, np.uint8)[:, None]})
    return root


def write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image).save(path)


@pytest.fixture(scope="session")
def imagefolder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/test class folders mixing PNG, TIFF and NPY RGB images of 10x12 px."""
    import tifffile

    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(3)
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                image = _pixels(rng, 10, 12, 3)
                if i % 3 == 0:
                    write_png(folder / f"{i}.png", image)
                elif i % 3 == 1:
                    tifffile.imwrite(folder / f"{i}.tif", image)
                else:
                    np.save(folder / f"{i}.npy", image)
    return root


@pytest.fixture(scope="session")
def small_pair() -> PairedDataset:
    """30 synthetic aligned pairs of 16x16 (3 per class)."""
    return generate_rgbir(n_per_class=3, size=16)


@pytest.fixture(scope="session")
def pair_content() -> Callable[[PairedDataset], dict[bytes, tuple[bytes, str, int]]]:
    """Maps a paired dataset to {rgb bytes: (ir bytes, class name, split)}, independent of item order."""

    def content(ds: PairedDataset) -> dict[bytes, tuple[bytes, str, int]]:
        return {
            np.asarray(ds.rgb[i]).tobytes(): (
                np.asarray(ds.ir[i]).tobytes(),
                ds.class_names[int(ds.labels[i])],
                int(ds.split[i]),
            )
            for i in range(len(ds))
        }

    return content


@pytest.fixture(scope="session")
def epfl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An EPFL nirscene1-style tree: <class>/<NNNN>_rgb.tiff (RGB) + <NNNN>_nir.tiff (1 channel), 12x16 px."""
    import tifffile

    root = tmp_path_factory.mktemp("epfl") / "nirscene1"
    rng = np.random.default_rng(1)
    number = 0
    for cls in ("country", "field", "forest"):
        (root / cls).mkdir(parents=True)
        for _ in range(4):
            number += 1
            tifffile.imwrite(root / cls / f"{number:04d}_rgb.tiff", _pixels(rng, 12, 16, 3))
            tifffile.imwrite(root / cls / f"{number:04d}_nir.tiff", _pixels(rng, 12, 16))
    return root
