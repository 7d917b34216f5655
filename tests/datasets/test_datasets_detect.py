"""Format detection from contents, and the three spec forms of open_dataset (name, FORMAT:PATH, bare path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from advkit.datasets import ImageDataset, PairedDataset, dataset_factories, open_dataset
from advkit.datasets.readers import detect_format
from advkit.datasets.synthetic import write_paired
from advkit.errors import AdvkitError, DatasetError

FIXTURES = [
    ("cifar10_dir", "cifar10"),
    ("cifar100_dir", "cifar100"),
    ("mnist_dir", "mnist-idx"),
    ("svhn_dir", "svhn"),
    ("imagefolder_dir", "imagefolder"),
    ("epfl_dir", "paired-a"),
]


@pytest.mark.parametrize(("fixture", "fmt"), FIXTURES)
def test_detect_format_on_fixture_folders(request: pytest.FixtureRequest, fixture: str, fmt: str) -> None:
    path = request.getfixturevalue(fixture)
    assert detect_format(path) == fmt
    by_path, by_format = open_dataset(str(path)), open_dataset(f"{fmt}:{path}")
    assert len(by_path) == len(by_format) > 0
    assert type(by_path) is type(by_format)


@pytest.mark.parametrize(
    ("layout", "fmt"), [("A", "paired-a"), ("B", "paired-b"), ("C", "paired-c"), ("D", "paired-d")]
)
def test_detect_paired_layouts(small_pair: PairedDataset, tmp_path: Path, layout: str, fmt: str) -> None:
    out = write_paired(small_pair, tmp_path / "x", layout)
    assert detect_format(out) == fmt
    assert isinstance(open_dataset(str(out)), PairedDataset)


def test_detect_single_files(
    cifar10_dir: Path, cifar100_dir: Path, mnist_dir: Path, svhn_dir: Path, small_pair: PairedDataset, tmp_path: Path
) -> None:
    assert detect_format(cifar10_dir / "test_batch") == "cifar10"
    assert detect_format(cifar100_dir / "train") == "cifar100"
    assert detect_format(mnist_dir / "train-images-idx3-ubyte.gz") == "mnist-idx"
    assert detect_format(svhn_dir / "test_32x32.mat") == "svhn"
    manifest = write_paired(small_pair, tmp_path / "c", "C") / "manifest.csv"
    assert detect_format(manifest) == "paired-c"
    assert len(open_dataset(str(manifest))) == len(small_pair)
    assert len(open_dataset(str(mnist_dir / "t10k-images-idx3-ubyte"))) == 17  # a file opens its folder


def test_torchvision_mnist_layout_is_found(mnist_dir: Path, tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in mnist_dir.glob("*-ubyte*"):
        (raw / f.name).write_bytes(f.read_bytes())
    assert detect_format(tmp_path) == "mnist-idx"
    assert len(open_dataset(str(tmp_path))) == 17


def test_undetectable_paths_raise_one_line(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(DatasetError, match="cannot tell the dataset format") as info:
        detect_format(tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(DatasetError, match="cannot tell"):
        detect_format(tmp_path / "readme.txt")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DatasetError, match="layout D needs rgb, ir, label"):
        detect_format(tmp_path / "other.npz")
    from PIL import Image

    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "one.png")
    with pytest.raises(DatasetError, match="single image"):
        detect_format(tmp_path / "one.png")
    with pytest.raises(DatasetError, match="no file or folder"):
        detect_format(tmp_path / "nowhere")


def test_open_dataset_spec_forms(cifar10_dir: Path) -> None:
    assert isinstance(open_dataset("digits"), ImageDataset)
    assert len(open_dataset(f"cifar10:{cifar10_dir}")) == len(open_dataset(str(cifar10_dir))) == 34
    with pytest.raises(AdvkitError, match="unknown dataset format 'cifar11'"):
        open_dataset(f"cifar11:{cifar10_dir}")
    with pytest.raises(DatasetError, match="no file or folder"):
        open_dataset("no-such-dataset")


def test_every_registered_entry_has_a_summary_and_format_factories_take_path() -> None:
    import inspect

    datasets, formats = dataset_factories()
    assert {"digits", "mnist-subset", "synthetic-rgbir"} <= set(datasets.names())
    assert {
        "cifar10",
        "cifar100",
        "mnist-idx",
        "svhn",
        "imagefolder",
        "paired",
        "paired-a",
        "paired-b",
        "paired-c",
        "paired-d",
    } <= set(formats.names())
    for entry in [*datasets.entries(), *formats.entries()]:
        assert entry.summary, entry.name
        params = inspect.signature(entry.factory).parameters
        assert all(p.default is not inspect.Parameter.empty for n, p in params.items() if n != "path"), entry.name
    for entry in formats.entries():
        assert next(iter(inspect.signature(entry.factory).parameters)) == "path"
