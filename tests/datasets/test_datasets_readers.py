"""Single-domain readers on fixtures in the real formats: CIFAR pickles, MNIST idx, SVHN .mat, image folders."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advkit.datasets import SPLITS, open_dataset
from advkit.datasets.readers import ImageFiles, load_array_pickle, read_idx, read_image
from advkit.errors import DatasetError


def write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def idx_bytes(array: np.ndarray) -> bytes:
    """Unsigned-byte idx: 0x00 0x00 0x08 ndim, big-endian uint32 sizes, values."""
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


# ------------------------------------------------------------------------------------------------------ CIFAR


def test_cifar10_reads_batches_and_split(cifar10_dir: Path) -> None:
    ds = open_dataset(f"cifar10:{cifar10_dir}")
    assert len(ds) == 34 and ds.images.shape == (34, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.class_names[0] == "airplane" and len(ds.class_names) == 10
    assert len(ds.indices("train")) == 30 and len(ds.indices("test")) == 4
    assert ds.labels[ds.indices("test")].tolist() == [0, 1, 2, 3]
    # channel-planar rows become HWC: pixel (0, 0) of image 0 is data[0], data[1024], data[2048]
    raw = load_array_pickle(cifar10_dir / "data_batch_1")["data"]
    assert ds.images[0, 0, 0].tolist() == [raw[0, 0], raw[0, 1024], raw[0, 2048]]


def test_cifar10_accepts_the_parent_folder(cifar10_dir: Path) -> None:
    assert len(open_dataset(f"cifar10:{cifar10_dir.parent}")) == 34


def test_cifar10_val_fraction_carves_from_train(cifar10_dir: Path) -> None:
    ds = open_dataset(f"cifar10:{cifar10_dir}", val_fraction=0.5)
    assert len(ds.indices("test")) == 4 and len(ds.indices("val")) > 0
    assert len(ds.indices("train")) + len(ds.indices("val")) == 30


def test_cifar100_fine_and_coarse(cifar100_dir: Path) -> None:
    fine = open_dataset(f"cifar100:{cifar100_dir}")
    assert len(fine) == 12 and len(fine.class_names) == 100 and fine.class_names[5] == "fine5"
    coarse = open_dataset(f"cifar100:{cifar100_dir}", labels="coarse")
    assert len(coarse.class_names) == 20 and np.array_equal(fine.images, coarse.images)
    with pytest.raises(DatasetError, match="fine"):
        open_dataset(f"cifar100:{cifar100_dir}", labels="medium")


def test_cifar_missing_batch_is_named(cifar10_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(cifar10_dir, tmp_path / "partial")
    (copy / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3"):
        open_dataset(f"cifar10:{copy}")


class _Exploit:
    """Unpickling this would run a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_cifar_pickle_with_forbidden_global_is_refused_without_running(cifar10_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(cifar10_dir, tmp_path / "evil")
    marker = tmp_path / "pwned"
    with open(copy / "data_batch_2", "wb") as handle:
        pickle.dump({b"data": _Exploit(marker), b"labels": [0]}, handle, protocol=2)
    with pytest.raises(DatasetError, match="refusing to unpickle .*system"):
        open_dataset(f"cifar10:{copy}")
    assert not marker.exists()


def test_cifar_pickle_refuses_builtins_too(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": eval}))  # a reference to builtins.eval
    with pytest.raises(DatasetError, match="builtins.eval"):
        load_array_pickle(path)


def test_cifar_truncated_and_wrong_shape(cifar10_dir: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated"
    truncated.write_bytes((cifar10_dir / "data_batch_1").read_bytes()[:300])
    with pytest.raises(DatasetError, match="truncated"):
        load_array_pickle(truncated)
    copy = shutil.copytree(cifar10_dir, tmp_path / "bad")
    with open(copy / "test_batch", "wb") as handle:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, handle, protocol=2)
    with pytest.raises(DatasetError, match="3072"):
        open_dataset(f"cifar10:{copy}")


@pytest.mark.parametrize(("labels", "message"), [
    ([b"cat", b"dog"], "labels must be integers, got |S3 values"),  # was int()'s ValueError
    ([[0], [1]], r"labels must be a 1-D array, got shape \(2, 1\)"),
    ([4.5, 1.0], "labels must be integers, got 4.5"),  # was truncated to 4
])
def test_cifar_labels_that_are_not_class_indices_are_one_line(cifar10_dir: Path, tmp_path: Path, labels: list,
                                                               message: str) -> None:
    copy = shutil.copytree(cifar10_dir, tmp_path / "bad")
    with open(copy / "test_batch", "wb") as handle:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": labels}, handle, protocol=2)
    with pytest.raises(DatasetError, match=message):
        open_dataset(f"cifar10:{copy}")


def test_mnist_float_images_name_their_dtype(mnist_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(mnist_dir, tmp_path / "float")
    values = np.zeros((5, 28, 28), ">f4")  # idx type 0x0D: big-endian float32
    (copy / "t10k-images-idx3-ubyte").write_bytes(struct.pack(">BBBB", 0, 0, 0x0D, 3) + struct.pack(">3I", 5, 28, 28) + values.tobytes())
    with pytest.raises(DatasetError, match=r"needs uint8 \(N, H, W\) images and N labels, got >?f(loat32|4) \(5, 28, 28\)"):
        open_dataset(f"mnist-idx:{copy}")


def test_mnist_splits_of_different_sizes_are_one_line(mnist_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(mnist_dir, tmp_path / "mixed")
    (copy / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((5, 14, 14), np.uint8)))  # was a concatenate error
    with pytest.raises(DatasetError, match="the splits' images differ in size"):
        open_dataset(f"mnist-idx:{copy}")


def test_cifar_pickles_written_by_python3_protocols_load(tmp_path: Path) -> None:
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072) % 251
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}"
        path.write_bytes(pickle.dumps({"data": data, "labels": np.array([1, 2])}, protocol=protocol))
        loaded = load_array_pickle(path)
        assert np.array_equal(loaded["data"], data) and list(loaded["labels"]) == [1, 2]


# -------------------------------------------------------------------------------------------------- MNIST idx


def test_mnist_idx_plain_and_gz(mnist_dir: Path) -> None:
    ds = open_dataset(f"mnist-idx:{mnist_dir}")
    assert len(ds) == 17 and ds.images.shape == (17, 28, 28, 1) and ds.domain == "gray"
    assert len(ds.indices("train")) == 12 and ds.labels[ds.indices("test")].tolist() == [0, 1, 2, 3, 4]
    assert np.array_equal(ds.images[:12, ..., 0], np.load(mnist_dir / "expected_train.npy"))


def test_mnist_idx_with_no_images_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((0, 28, 28), np.uint8)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(0, np.uint8)))
    with pytest.raises(DatasetError, match="the idx files hold no images"):
        open_dataset(f"mnist-idx:{tmp_path}")


def test_mnist_idx_header_is_parsed(tmp_path: Path) -> None:
    values = np.arange(24, dtype=">i2").reshape(2, 3, 4)
    path = tmp_path / "shorts.idx"
    path.write_bytes(struct.pack(">BBBB", 0, 0, 0x0B, 3) + struct.pack(">3I", 2, 3, 4) + values.tobytes())
    assert np.array_equal(read_idx(path), values) and read_idx(path).dtype == np.int16
    (tmp_path / "g.gz").write_bytes(gzip.compress(path.read_bytes()))
    assert np.array_equal(read_idx(tmp_path / "g.gz"), values)


@settings(max_examples=25, deadline=None)
@given(
    code_dtype=st.sampled_from(
        [(0x08, ">u1"), (0x09, ">i1"), (0x0B, ">i2"), (0x0C, ">i4"), (0x0D, ">f4"), (0x0E, ">f8")]
    ),
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
)
def test_idx_round_trips_any_type_and_rank(code_dtype: tuple[int, str], shape: list[int]) -> None:
    import tempfile

    code, dtype = code_dtype
    values = (np.arange(int(np.prod(shape))) % 100).astype(dtype).reshape(shape)
    payload = struct.pack(">BBBB", 0, 0, code, len(shape)) + struct.pack(f">{len(shape)}I", *shape) + values.tobytes()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x-idx"
        path.write_bytes(payload)
        parsed = read_idx(path)
    assert parsed.shape == tuple(shape) and parsed.dtype == np.dtype(dtype).newbyteorder("=")
    assert np.array_equal(parsed, values)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x08\x03\x00\x00junk", "magic"),
        (idx_bytes(np.zeros((2, 4, 4), np.uint8))[:-5], "header says"),
        (b"\x1f\x8b\x08\x00garbage", "gzip"),
    ],
)
def test_mnist_idx_corrupt_files_raise(tmp_path: Path, payload: bytes, message: str) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(payload)
    with pytest.raises(DatasetError, match=message):
        read_idx(path)


def test_mnist_idx_images_without_labels_raise(mnist_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(mnist_dir, tmp_path / "m")
    (copy / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match="t10k"):
        open_dataset(f"mnist-idx:{copy}")


@pytest.mark.parametrize(("labels", "expected"), [([0, 1, 255], r"reach 255 but no image has label 10 \(nor 244 other"),
                                                ([3, 12], r"reach 12 but no image has label 10 \(nor 1 other"),
                                                ([0, 11], r"reach 11 but no image has label 10; is")])
def test_mnist_idx_labels_with_a_gap_above_nine_are_refused(tmp_path: Path, labels: list[int], expected: str) -> None:
    """A damaged labels byte (255) made a 256-class dataset whose models had 246 classes no image ever had."""
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((len(labels), 28, 28), np.uint8)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.array(labels, np.uint8)))
    with pytest.raises(DatasetError, match=expected):
        open_dataset(f"mnist-idx:{tmp_path}")


def test_mnist_idx_class_counts_of_subsets_and_emnist(tmp_path: Path) -> None:
    for labels, classes in [([0, 5], 10), ([1, *range(10, 27)], 27), (list(range(47)), 47)]:  # a subset, letters, balanced
        folder = tmp_path / str(classes)
        folder.mkdir()
        (folder / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((len(labels), 28, 28), np.uint8)))
        (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.array(labels, np.uint8)))
        assert open_dataset(f"mnist-idx:{folder}").num_classes == classes


# ------------------------------------------------------------------------------------------------------- SVHN


def test_svhn_folder_maps_ten_to_zero(svhn_dir: Path) -> None:
    ds = open_dataset(f"svhn:{svhn_dir}")
    assert ds.images.shape == (10, 32, 32, 3)
    assert ds.labels.tolist() == [0, 1, 2, 3, 0, 9, 0, 5, 6, 7]
    assert ds.split.tolist() == [SPLITS["train"]] * 6 + [SPLITS["test"]] * 4
    from scipy.io import loadmat

    x = loadmat(svhn_dir / "train_32x32.mat")["X"]
    assert np.array_equal(ds.images[1], x[..., 1])


def test_svhn_single_file(svhn_dir: Path) -> None:
    ds = open_dataset(f"svhn:{svhn_dir / 'test_32x32.mat'}")
    assert len(ds) == 4 and set(ds.split.tolist()) == {SPLITS["test"]}


def test_svhn_bad_mat_raises(tmp_path: Path) -> None:
    from scipy.io import savemat

    savemat(tmp_path / "train_32x32.mat", {"X": np.zeros((3, 3), np.uint8), "y": np.ones((1, 1))})
    with pytest.raises(DatasetError, match="X must be"):
        open_dataset(f"svhn:{tmp_path}")
    (tmp_path / "train_32x32.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(DatasetError, match="train_32x32.mat"):
        open_dataset(f"svhn:{tmp_path}")


# ----------------------------------------------------------------------------------------------- image folder


def test_imagefolder_mixed_png_tiff_npy_with_splits(imagefolder_dir: Path) -> None:
    ds = open_dataset(f"imagefolder:{imagefolder_dir}")
    assert isinstance(ds.images, ImageFiles)
    assert ds.images.shape == (10, 10, 12, 3) and ds.domain == "rgb"
    assert list(ds.class_names) == ["cat", "dog"]
    assert len(ds.indices("train")) == 6 and len(ds.indices("test")) == 4
    x, y = ds.batch(ds.indices("all"))
    assert tuple(x.shape) == (10, 3, 10, 12) and y.tolist() == [0, 0, 1, 1, 0, 0, 0, 1, 1, 1]
    assert {p.suffix for p in ds.images.paths} == {".png", ".tif", ".npy"}


def test_imagefolder_channels_and_resize(imagefolder_dir: Path) -> None:
    gray = open_dataset(f"imagefolder:{imagefolder_dir}", channels=1, size=8)
    assert gray.images.shape == (10, 8, 8, 1) and gray.domain == "gray"
    assert gray.images[0].shape == (8, 8, 1) and gray.images[0].dtype == np.uint8


def test_imagefolder_without_split_folders_uses_make_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        for i in range(5):
            write_png(tmp_path / cls / f"{i}.png", rng.integers(0, 256, (6, 6), dtype=np.uint8))
    first, second = open_dataset(str(tmp_path)), open_dataset(str(tmp_path))
    assert first.images.shape == (10, 6, 6, 1) and first.domain == "gray"
    assert np.array_equal(first.split, second.split) and len(first.indices("test")) == 2


def test_imagefolder_rgba_drops_alpha_and_gray_expands(tmp_path: Path) -> None:
    rgba = np.random.default_rng(1).integers(0, 256, (5, 5, 4), dtype=np.uint8)
    write_png(tmp_path / "x" / "a_rgba.png", rgba)
    write_png(tmp_path / "x" / "b_gray.png", rgba[..., 0])
    ds = open_dataset(f"imagefolder:{tmp_path}", test_fraction=0.0)
    assert ds.images.shape == (2, 5, 5, 3)  # RGB as soon as one image is (alpha dropped)
    assert np.array_equal(ds.images[0], rgba[..., :3])
    assert np.array_equal(ds.images[1], np.repeat(rgba[..., :1], 3, axis=2))
    gray = open_dataset(f"imagefolder:{tmp_path}", test_fraction=0.0, channels=1)
    luma = np.rint(rgba[..., :3].astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint8)
    assert np.array_equal(gray.images[0][..., 0], luma)


def test_imagefolder_sixteen_bit_tiff(tmp_path: Path) -> None:
    import tifffile

    image = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    (tmp_path / "c").mkdir()
    tifffile.imwrite(tmp_path / "c" / "deep.tiff", image)
    ds = open_dataset(f"imagefolder:{tmp_path}", test_fraction=0.0)
    assert ds.images.dtype == np.uint16 and np.array_equal(ds.images[0][..., 0], image)
    x, _ = ds.batch([0])
    assert abs(float(x.max()) - 63000 / 65535) < 1e-6


@pytest.mark.parametrize(("metadata", "axes"), [({}, "QYX"), (None, "IYX")])  # tifffile's own file, a generic one
def test_multi_page_gray_tiff_is_refused_not_read_as_rgb(tmp_path: Path, metadata: dict | None, axes: str) -> None:
    """3 gray pages, which tifffile reads as (3, H, W), were read as one RGB image of the 3 pages."""
    import tifffile

    pages = np.random.default_rng(3).integers(0, 256, (3, 8, 10), dtype=np.uint8)
    (tmp_path / "c").mkdir()
    tifffile.imwrite(tmp_path / "c" / "stack.tif", pages, photometric="minisblack", metadata=metadata)
    message = (rf"stack.tif: TIFF holds a stack of 3 images \({axes} data of shape \(3, 8, 10\)\); advkit reads one "
               "image per file: save each page as its own file$")
    with pytest.raises(DatasetError, match=message):
        open_dataset(f"imagefolder:{tmp_path}")  # at open, from the header
    with pytest.raises(DatasetError, match=message):
        read_image(tmp_path / "c" / "stack.tif")


def test_planar_rgb_tiff_is_still_one_rgb_image(tmp_path: Path) -> None:
    import tifffile

    planes = np.random.default_rng(4).integers(0, 256, (3, 8, 10), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", planes, photometric="rgb", planarconfig="separate")  # one page, SYX
    assert np.array_equal(read_image(tmp_path / "planar.tif"), planes.transpose(1, 2, 0))


def test_imagefolder_different_sizes_raise_with_hint(tmp_path: Path) -> None:
    write_png(tmp_path / "c" / "a.png", np.zeros((32, 32, 3), np.uint8))
    write_png(tmp_path / "c" / "b.png", np.zeros((28, 28, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"different sizes \(32x32 in c/a.png, 28x28 in c/b.png\); pass size=N .*--data-param size=N"):
        open_dataset(f"imagefolder:{tmp_path}")
    assert open_dataset(f"imagefolder:{tmp_path}", size=16).images.shape == (2, 16, 16, 3)


def test_imagefolder_corrupt_image_is_named(tmp_path: Path) -> None:
    write_png(tmp_path / "c" / "good.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "c" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(DatasetError, match="broken.png"):
        open_dataset(f"imagefolder:{tmp_path}")


def test_imagefolder_truncated_image_fails_on_read_naming_it(tmp_path: Path) -> None:
    image = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    write_png(tmp_path / "c" / "cut.png", image)
    data = (tmp_path / "c" / "cut.png").read_bytes()
    (tmp_path / "c" / "cut.png").write_bytes(data[: len(data) // 2])
    ds = open_dataset(f"imagefolder:{tmp_path}", test_fraction=0.0)  # the header is intact
    with pytest.raises(DatasetError, match="cut.png"):
        ds.batch([0])


def test_imagefolder_without_images_raises(tmp_path: Path) -> None:
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(DatasetError, match="no images"):
        open_dataset(f"imagefolder:{tmp_path}")
    write_png(tmp_path / "loose.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DatasetError, match="class folders"):
        open_dataset(f"imagefolder:{tmp_path}")


def test_imagefolder_a_gray_file_first_keeps_the_others_rgb(tmp_path: Path) -> None:
    """Found by a reader sweep: the first file decided, so one gray image sorted first made a whole RGB folder gray."""
    rgb = np.random.default_rng(2).integers(0, 256, (4, 5, 5, 3), dtype=np.uint8)
    write_png(tmp_path / "x" / "0_gray.png", rgb[0, ..., 0])
    for i in range(1, 4):
        write_png(tmp_path / "x" / f"{i}.png", rgb[i])
    ds = open_dataset(f"imagefolder:{tmp_path}", test_fraction=0.0)
    assert ds.images.shape == (4, 5, 5, 3) and ds.domain == "rgb"
    assert np.array_equal(ds.images[1], rgb[1]) and np.array_equal(ds.images[0], np.repeat(rgb[0, ..., :1], 3, axis=2))


def test_imagefolder_empty_classes_and_unknown_split_folders_are_refused(tmp_path: Path) -> None:
    """Found by a reader sweep: an empty class folder shifted every later label; 'valid' or a stray folder beside
    train/test made the splits the classes."""
    image = np.zeros((4, 4), np.uint8)
    for cls in ("cat", "eel"):
        write_png(tmp_path / "flat" / cls / "0.png", image)
    (tmp_path / "flat" / "dog").mkdir()
    with pytest.raises(DatasetError, match=r"class folders without image files .*: dog; add images or remove them"):
        open_dataset(f"imagefolder:{tmp_path / 'flat'}")
    for split in ("train", "valid", "test"):
        write_png(tmp_path / "splits" / split / "cat" / "0.png", image)
        write_png(tmp_path / "splits" / split / "dog" / "0.png", image)
    ds = open_dataset(f"imagefolder:{tmp_path / 'splits'}")
    assert ds.class_names == ["cat", "dog"] and len(ds.indices("val")) == 2  # 'valid' is the val split
    (tmp_path / "splits" / "__MACOSX").mkdir()
    with pytest.raises(DatasetError, match=r"holds split folders \(test, train, valid\) beside other folders \(__MACOSX\)"):
        open_dataset(f"imagefolder:{tmp_path / 'splits'}")


def test_imagefolder_unread_formats_and_broken_links_are_not_dropped_silently(tmp_path: Path) -> None:
    image = np.zeros((4, 4), np.uint8)
    for i in range(3):
        write_png(tmp_path / "gif" / "cat" / f"{i}.png", image)
    (tmp_path / "gif" / "cat" / "3.gif").write_bytes(b"GIF89a")
    with pytest.raises(DatasetError, match=r"images in a format advkit does not read .*3\.gif; convert them to PNG"):
        open_dataset(f"imagefolder:{tmp_path / 'gif'}")
    for i in range(3):
        write_png(tmp_path / "link" / "cat" / f"{i}.png", image)
    (tmp_path / "link" / "cat" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(DatasetError, match=r"image names whose file is missing \(broken symlinks\?\): .*gone\.png"):
        open_dataset(f"imagefolder:{tmp_path / 'link'}")


def test_imagefolder_bad_channels_option(imagefolder_dir: Path) -> None:
    with pytest.raises(DatasetError, match="channels must be 1 or 3"):
        open_dataset(f"imagefolder:{imagefolder_dir}", channels=2)


@pytest.mark.parametrize("value", [float("nan"), 5.0, -0.5])
def test_float_images_outside_the_unit_range_are_refused(tmp_path: Path, value: float) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, np.full((4, 4), value, np.float32))
    with pytest.raises(DatasetError, match="float pixels that are not all in \\[0, 1\\]"):
        read_image(path)
    np.save(path, np.full((4, 4), 0.5, np.float32))
    assert read_image(path).dtype == np.float32


# ------------------------------------------------------------------------- labels, names and sizes from a review


def _cifar_copy_with_names(cifar10_dir: Path, tmp_path: Path, names: list[bytes]) -> Path:
    copy = shutil.copytree(cifar10_dir, tmp_path / "names")
    with open(copy / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": names}, handle, protocol=2)
    return copy


@pytest.mark.parametrize(("names", "message"), [
    ([b"cat"] * 10, r"batches.meta \(label_names\): class names must be distinct; repeated: 'cat'$"),  # was "1 classes"
    ([b"\xff\xfe%d" % i for i in range(10)], r"batches.meta: 'label_names' holds bytes that are not UTF-8 text"),
])
def test_cifar_label_names_repeated_or_not_utf8_are_one_line(cifar10_dir: Path, tmp_path: Path, names: list[bytes],
                                                             message: str) -> None:
    copy = _cifar_copy_with_names(cifar10_dir, tmp_path, names)
    with pytest.raises(DatasetError, match=message):
        open_dataset(f"cifar10:{copy}")


def _idx_labels(tmp_path: Path, labels: np.ndarray, code: int) -> Path:
    """An idx labels file of any type code beside uint8 images, one per label."""
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((len(labels), 28, 28), np.uint8)))
    payload = struct.pack(">BBBB", 0, 0, code, 1) + struct.pack(">I", len(labels)) + labels.tobytes()
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(payload)
    return tmp_path


def test_mnist_idx_fractional_float_labels_are_refused(tmp_path: Path) -> None:
    """0.4, 1.6 in a float32 (0x0D) labels file were truncated to 0, 1 without a word."""
    root = _idx_labels(tmp_path, np.array([0.4, 1.6, 2.5, 3.9], ">f4"), 0x0D)
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte: labels must be integers, got 0\.4$"):
        open_dataset(f"mnist-idx:{root}")
    _idx_labels(tmp_path, np.array([0.0, 1.0, 2.0, 3.0], ">f4"), 0x0D)  # whole floats are fine
    assert open_dataset(f"mnist-idx:{root}").labels.tolist() == [0, 1, 2, 3]


def test_mnist_idx_huge_label_is_one_line_not_a_memory_error(tmp_path: Path) -> None:
    """2**31 - 1 in an int32 labels file: the gap check built set(range(10, 2**31 - 1)) and ran out of memory."""
    root = _idx_labels(tmp_path, np.array([0, 1, 2**31 - 1, 2], ">i4"), 0x0C)
    with pytest.raises(DatasetError, match=r"reach 2147483647 but no image has label 10 \(nor 2147483636 other"):
        open_dataset(f"mnist-idx:{root}")


def _gzip_idx_of_zeros(path: Path, chunks: int) -> tuple[int, int, int]:
    """A gzipped uint8 idx of (N, 28, 28) zeros, N * 784 = chunks * 12.8 MB, as a few KB of gzip members."""
    import gzip

    chunk = 784 * 2**14
    dims = (chunks * 2**14, 28, 28)
    zeros = gzip.compress(bytes(chunk), compresslevel=1)
    with open(path, "wb") as out:
        out.write(gzip.compress(struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">3I", *dims)))
        for _ in range(chunks):
            out.write(zeros)  # one gzip member each: decompressed they follow the first
    return dims


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to set a memory limit")
def test_gzipped_idx_declaring_more_than_fits_in_memory_is_one_line(tmp_path: Path) -> None:
    """A gzipped idx of 6M images gave a MemoryError traceback from gzip.decompress: here 411 MB against a limit of
    200 MB more than the process already uses."""
    import subprocess
    import sys

    path = tmp_path / "train-images-idx3-ubyte.gz"
    dims = _gzip_idx_of_zeros(path, 32)
    script = (
        "import resource, sys\n"
        "from advkit.datasets.readers import read_idx\n"
        "from advkit.errors import DatasetError\n"
        "used = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize'))\n"
        "resource.setrlimit(resource.RLIMIT_AS, (used + 200 * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))\n"
        "try:\n"
        "    read_idx(sys.argv[1])\n"
        "except DatasetError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stdout.strip() == f"{path}: the idx header declares {dims} values (0.411 GB), more than fits in memory"


def test_gzipped_multi_member_idx_streams_in(tmp_path: Path) -> None:
    """The streamed reader reads what gzip.decompress did: members one after another, checked against the header."""
    path = tmp_path / "x-idx.gz"
    dims = _gzip_idx_of_zeros(path, 1)
    values = read_idx(path)
    assert values.shape == dims and values.dtype == np.uint8 and not values.any()
    path.write_bytes(path.read_bytes() + gzip.compress(b"\x01"))  # one byte more than the header says
    with pytest.raises(DatasetError, match=rf"idx header says \(16384, 28, 28\) \({784 * 2**14} bytes\) but has "
                                           rf"{784 * 2**14 + 1}$"):
        read_idx(path)


def _svhn(root: Path, y: object, n: int = 4) -> Path:
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    savemat(root / "train_32x32.mat", {"X": np.zeros((32, 32, 3, n), np.uint8), "y": y})
    return root


@pytest.mark.parametrize(("y", "n", "message"), [
    (np.array([[1.5], [2.0], [3.0], [10.0]]), 4, r"labels must be integers, got 1\.5$"),  # was truncated to 1
    (np.array([[1 + 1j], [2], [3], [4]]), 4, "y must hold the labels 1..10 as numbers, got complex numbers$"),
    # 0 was read as the digit 0, which SVHN stores as 10
    (np.array([[0], [1], [2], [3]]), 4, r"SVHN labels must be 1\.\.10 \(10 means digit 0\), got 0\.\.3$"),
    (np.array(["abc"] * 4), 4, "y must hold the labels 1..10 as numbers, got text$"),  # the rest were ValueErrors
    (np.array([[1], [2]] * 2, dtype=object), 4, "y must hold the labels 1..10 as numbers, got a cell array$"),
    ({"a": 1}, 4, "y must hold the labels 1..10 as numbers, got a struct$"),
    (np.zeros((0, 1)), 0, "train_32x32.mat: the SVHN file holds no images$"),
])
def test_svhn_labels_that_are_not_digits_one_to_ten_are_one_line(tmp_path: Path, y: object, n: int,
                                                                  message: str) -> None:
    root = _svhn(tmp_path / "svhn", y, n)
    with pytest.raises(DatasetError, match=message):
        open_dataset(f"svhn:{root}")


def _classes_folder(root: Path, listing: bytes) -> Path:
    for cls in ("a", "b"):
        for i in range(2):
            write_png(root / cls / f"{i}.png", np.zeros((4, 4), np.uint8))
    (root / "classes.txt").write_bytes(listing)
    return root


@pytest.mark.parametrize(("listing", "message"), [
    (b"a\nb\na\n", r"classes.txt: class names must be distinct; repeated: 'a'$"),  # was a phantom empty class
    (b"a\n\xff\xfeb\n", r"classes.txt is not UTF-8 text \(invalid start byte at byte 2\)$"),  # was UnicodeDecodeError
])
def test_imagefolder_classes_txt_repeated_or_not_utf8_is_one_line(tmp_path: Path, listing: bytes, message: str) -> None:
    root = _classes_folder(tmp_path / "f", listing)
    with pytest.raises(DatasetError, match=message):
        open_dataset(f"imagefolder:{root}")


def test_imagefolder_classes_txt_with_a_byte_order_mark(tmp_path: Path) -> None:
    root = _classes_folder(tmp_path / "f", "\ufeffb\na\n".encode())
    assert open_dataset(f"imagefolder:{root}").class_names == ["b", "a"]


def test_imagefolder_size_beyond_the_limit_is_refused_at_open(tmp_path: Path) -> None:
    """size=200000 opened fine and then died in PIL with a MemoryError at the first batch."""
    root = _classes_folder(tmp_path / "f", b"a\nb\n")
    with pytest.raises(DatasetError, match=r"^size must be 1\.\.4096 pixels per side, got 200000$"):
        open_dataset(f"imagefolder:{root}", size=200000)
    assert open_dataset(f"imagefolder:{root}", size=4096).images.shape == (4, 4096, 4096, 1)


def test_imagefolder_out_of_memory_while_resizing_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from advkit.datasets import readers

    root = _classes_folder(tmp_path / "f", b"a\nb\n")
    ds = open_dataset(f"imagefolder:{root}", size=8)

    def out_of_memory(image: np.ndarray, height: int, width: int) -> np.ndarray:
        raise MemoryError

    monkeypatch.setattr(readers, "resize_image", out_of_memory)
    with pytest.raises(DatasetError, match=r"not enough memory to resize image .*0\.png to 8x8$"):
        ds.batch([0])


def _png16(path: Path, image: np.ndarray) -> None:
    """A 16-bit PNG (gray, or RGB as colour type 2) written by hand: Pillow cannot write 16-bit RGB."""
    import zlib

    height, width = image.shape[:2]
    colour = 2 if image.ndim == 3 else 0
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in image)  # filter 0 per scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_sixteen_bit_rgb_png_is_refused_not_read_as_eight_bit(tmp_path: Path) -> None:
    """Pillow read 40000 in a 16-bit RGB PNG as 156 (its high byte); 16-bit gray PNGs keep their 16 bits."""
    _png16(tmp_path / "rgb" / "c" / "deep.png", np.full((4, 4, 3), 40000, np.uint16))
    with pytest.raises(DatasetError, match=r"deep.png is a 16-bit RGB PNG, which Pillow reads as 8-bit; save it as"):
        open_dataset(f"imagefolder:{tmp_path / 'rgb'}")
    with pytest.raises(DatasetError, match="16-bit RGB PNG"):
        read_image(tmp_path / "rgb" / "c" / "deep.png")
    _png16(tmp_path / "gray" / "c" / "deep.png", np.full((4, 4), 40000, np.uint16))
    ds = open_dataset(f"imagefolder:{tmp_path / 'gray'}", test_fraction=0.0)
    assert ds.images.dtype == np.uint16 and int(ds.images[0][0, 0, 0]) == 40000
