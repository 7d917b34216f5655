"""Readers of on-disk dataset formats, registered in ``FORMATS``, and ``detect_format`` for bare paths.

Every reader returns an ImageDataset (or PairedDataset) of (N, H, W, C) images: uint8 0..255, uint16 0..65535
or float32 in [0, 1]. Formats:

- ``cifar10`` / ``cifar100``: the "python version" pickles of https://www.cs.toronto.edu/~kriz/cifar.html
  (``data_batch_1..5``, ``test_batch``, ``batches.meta`` / ``train``, ``test``, ``meta``), 32x32x3 uint8.
  Unpickling allows only numpy's array constructors, so a tampered file cannot run code.
- ``mnist-idx``: the idx files of https://yann.lecun.com/exdb/mnist/ (also Fashion-MNIST), plain or gzipped.
- ``svhn``: the cropped-digit ``*_32x32.mat`` files of http://ufldl.stanford.edu/housenumbers/ (label 10 -> 0).
- ``imagefolder``: ``root/[train|val|test/]<class>/*.{png,jpg,jpeg,bmp,tif,tiff,npy}``, read lazily.
- ``paired`` (auto) and ``paired-a`` .. ``paired-d``: aligned RGB-IR pairs in the layouts of datasets.md section 5:
  A ``root/[<split>/]<class>/<id>_rgb.<ext>`` + ``<id>_<ir|nir|lwir|thermal|t>.<ext>`` (the EPFL RGB-NIR
  ``nirscene1`` tree, https://www.epfl.ch/labs/ivrl/research/downloads/rgb-nir-scene-dataset/, loads as-is);
  B ``root/[<split>/]rgb/<class>/<id>.<ext>`` + ``root/[<split>/]ir/<class>/<id>.<ext>``;
  C ``root/manifest.csv`` with columns id, label, [split,] rgb, ir[, x0, y0, x1, y1] (optional ``classes.txt``);
  D one ``.npz`` / ``.h5`` / ``.hdf5`` file with keys rgb, ir, label and optional split, ids, class_names, meta.

Data without a split gets ``make_split(labels)``: seeded, stratified, identical for both domains of a pair.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import json
import math
import os
import pickle
import re
import shutil
import struct
import tarfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from advkit.datasets import FORMATS
from advkit.datasets.base import SPLITS, ImageDataset, PairedDataset, check_labels, make_split
from advkit.errors import DatasetError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy")
IR_TAGS = ("ir", "nir", "lwir", "thermal", "t")
ARRAY_EXTS = (".npz", ".h5", ".hdf5")
ALIGN_MODES = ("strict", "resize")
_PIXEL_TYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as PIL's convert("L")


def _few(items: Iterable[Any], limit: int = 3) -> str:
    """'a, b, c (and 4 more)': enough to find the culprits, short enough for one line."""
    items = [str(item) for item in items]
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _show(path: Path, root: Path | None) -> str:
    """A path relative to the dataset root when possible, for short messages."""
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return str(path)


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _distinct_names(names: list[str], source: object) -> list[str]:
    """Class names, after a one-line error if one repeats: the repeat would be a phantom class, or fold two."""
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise DatasetError(f"{source}: class names must be distinct; repeated: {_few(map(repr, repeated))}")
    return names


def _learned_classes(labels: np.ndarray, source: object, hint: str, floor: int = 0) -> int:
    """The class count of labels that come without class names: the largest label + 1 (at least ``floor``).

    Every label from ``floor`` up to the largest must occur: one damaged or mistyped value (255, 2**31 - 1) would
    otherwise make a dataset of hundreds (or billions) of classes that no image has. ``labels`` are checked
    indices >= 0 (``check_labels``)."""
    present = np.unique(labels)  # sorted, distinct
    above = present[present >= floor]
    if len(above) and int(above[-1]) - floor + 1 != len(above):
        expected = np.arange(floor, floor + len(above))
        first = int(expected[np.argmax(above != expected)])  # the first label with no image; no range() of the top
        others = int(above[-1]) - floor + 1 - len(above) - 1
        nor = f" (nor {others} other labels below it)" if others else ""
        raise DatasetError(f"{source}: the labels reach {above[-1]} but no image has label {first}{nor}; {hint}")
    return max(floor, int(present[-1]) + 1 if len(present) else 1)


# ----------------------------------------------------------------------------------------- single image files


@dataclass(frozen=True)
class ImageProbe:
    """What an image file's header says, without decoding the pixels."""

    height: int
    width: int
    channels: int
    dtype: np.dtype


# PIL mode -> (channels as read, pixel type); palette and exotic colour modes are converted to RGB(A) on read
_PIL_MODES: dict[str, tuple[int, str]] = {
    "1": (1, "uint8"),
    "L": (1, "uint8"),
    "LA": (2, "uint8"),
    "P": (3, "uint8"),
    "PA": (4, "uint8"),
    "RGB": (3, "uint8"),
    "RGBA": (4, "uint8"),
    "RGBX": (3, "uint8"),
    "CMYK": (3, "uint8"),
    "YCbCr": (3, "uint8"),
    "LAB": (3, "uint8"),
    "HSV": (3, "uint8"),
    "I;16": (1, "uint16"),
    "I;16L": (1, "uint16"),
    "I;16B": (1, "uint16"),
    "I;16N": (1, "uint16"),
    "I": (1, "uint16"),
    "F": (1, "float32"),
}
_PIL_CONVERT = {
    "1": "L",
    "P": "RGB",
    "PA": "RGBA",
    "RGBX": "RGB",
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "LAB": "RGB",
    "HSV": "RGB",
}


def _pixel_type(dtype: np.dtype, path: Path) -> np.dtype:
    """The stored type of an image: uint8, uint16 or float32 (float64 narrows)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.dtype(np.float32)
    if dtype.newbyteorder("=") in _PIXEL_TYPES:
        return dtype.newbyteorder("=")
    raise DatasetError(f"{path}: unsupported pixel type {dtype}; use uint8, uint16 or float in [0, 1]")


_TIFF_CHANNEL_AXES = "SC"  # tifffile's samples per pixel, and channels an ImageJ or OME file declares


def _tiff_axes(shape: Sequence[int], axes: str, path: Path) -> tuple[list[int], tuple[int, ...]]:
    """Axis order that turns a TIFF series into (H, W, C), and the squeezed shape it applies to."""
    keep = [i for i, axis in enumerate(axes) if axis in "YX" or shape[i] > 1]
    kept_axes = "".join(axes[i] for i in keep)
    squeezed = tuple(shape[i] for i in keep)
    stacked = [i for i in keep if axes[i] not in "YX" + _TIFF_CHANNEL_AXES]
    if stacked:  # pages (I, Q), planes (Z) or frames (T): read as channels, 3 gray pages became one RGB image
        images = math.prod(shape[i] for i in stacked)
        raise DatasetError(
            f"{path}: TIFF holds a stack of {images} images ({axes} data of shape {tuple(shape)}); advkit reads one "
            "image per file: save each page as its own file"
        )
    if "Y" not in kept_axes or "X" not in kept_axes or len(kept_axes) > 3:
        raise DatasetError(f"{path}: TIFF holds {axes} data of shape {tuple(shape)}; expected one 2-D image")
    order = [kept_axes.index("Y"), kept_axes.index("X")]
    order += [i for i in range(len(kept_axes)) if i not in order]
    return order, squeezed


def _probe_tiff(path: Path) -> ImageProbe:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shape, axes, dtype = tuple(series.shape), series.axes, series.dtype
    order, squeezed = _tiff_axes(shape, axes, path)
    hwc = [squeezed[i] for i in order] + [1]
    return ImageProbe(hwc[0], hwc[1], hwc[2], _pixel_type(dtype, path))


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        arr = series.asarray()
        order, squeezed = _tiff_axes(arr.shape, series.axes, path)
    arr = arr.reshape(squeezed).transpose(order)
    return arr if arr.ndim == 3 else arr[..., None]


def _probe_npy(path: Path) -> ImageProbe:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    if arr.ndim not in (2, 3):
        raise DatasetError(f"{path}: .npy images must be (H, W) or (H, W, C), got shape {arr.shape}")
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    return ImageProbe(arr.shape[0], arr.shape[1], channels, _pixel_type(arr.dtype, path))


def _read_npy(path: Path) -> np.ndarray:
    arr = np.load(path, allow_pickle=False)
    return arr[..., None] if arr.ndim == 2 else arr


# PNG colour types with more than one sample per pixel (RGB, gray + alpha, RGBA): at 16 bits Pillow keeps only
# the high byte of each (40000 -> 156), while 16-bit gray (type 0) stays 16-bit
_PNG_MULTI_SAMPLE = {2: "RGB", 4: "gray+alpha", 6: "RGBA"}


def _refuse_deep_colour_png(path: Path, image: Any) -> None:
    """One line for a 16-bit colour PNG, which Pillow would silently read as 8-bit."""
    if image.format != "PNG":
        return
    with open(path, "rb") as handle:
        header = handle.read(26)  # signature (8), IHDR length and type (8), width, height, bit depth, colour type
    if len(header) == 26 and header[24] == 16 and header[25] in _PNG_MULTI_SAMPLE:
        raise DatasetError(
            f"{path} is a 16-bit {_PNG_MULTI_SAMPLE[header[25]]} PNG, which Pillow reads as 8-bit; save it as a "
            "16-bit TIFF or .npy to keep its precision"
        )


def _probe_pil(path: Path) -> ImageProbe:
    from PIL import Image

    with Image.open(path) as image:
        _refuse_deep_colour_png(path, image)
        mode, (width, height) = image.mode, image.size
    if mode not in _PIL_MODES:
        raise DatasetError(f"{path}: unsupported PIL image mode {mode}")
    channels, dtype = _PIL_MODES[mode]
    return ImageProbe(height, width, channels, np.dtype(dtype))


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as opened:
        _refuse_deep_colour_png(path, opened)
        opened.load()  # decode now, inside the error handler, so truncated files fail here
        mode = opened.mode
        arr = np.asarray(opened.convert(_PIL_CONVERT[mode]) if mode in _PIL_CONVERT else opened)
    if mode == "I":  # 32-bit integer mode, used by some 16-bit files
        arr = np.clip(arr, 0, 65535).astype(np.uint16)
    elif mode.startswith("I;16"):
        arr = arr.astype(np.uint16)
    return arr if arr.ndim == 3 else arr[..., None]


def _codec(path: Path) -> tuple[Callable[[Path], ImageProbe], Callable[[Path], np.ndarray]]:
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return _probe_tiff, _read_tiff
    if suffix == ".npy":
        return _probe_npy, _read_npy
    return _probe_pil, _read_pil


def probe_image(path: Path) -> ImageProbe:
    """Size, channels and pixel type of an image file from its header; DatasetError naming the file if unreadable."""
    probe, _ = _codec(path)
    try:
        return probe(path)
    except DatasetError:
        raise
    except Exception as exc:  # decoders raise many types (OSError, ValueError, SyntaxError, TiffFileError, ...)
        raise DatasetError(f"cannot read image {path}: {exc}") from exc


def read_image(path: Path) -> np.ndarray:
    """Decode one image file to (H, W, C) uint8 / uint16 / float32; DatasetError naming the file if corrupt."""
    _, read = _codec(path)
    try:
        arr = read(path)
    except DatasetError:
        raise
    except MemoryError:  # its message is empty: say what ran out
        raise DatasetError(f"not enough memory to decode image {path}") from None
    except Exception as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from exc
    arr = arr.astype(_pixel_type(arr.dtype, path), copy=False)
    if arr.dtype.kind == "f" and arr.size and not (np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1):
        raise DatasetError(f"{path} holds float pixels that are not all in [0, 1] (NaN, infinite or out of range)")
    return arr


def _cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float values back to ``dtype``: rounded and clipped for integer types."""
    if dtype.kind == "f":
        return values.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize (PIL) of an (H, W, C) image, channel by channel in float; keeps the dtype."""
    if image.shape[:2] == (height, width):
        return image
    from PIL import Image

    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32)).resize(
                (width, height), Image.Resampling.BILINEAR
            )
        )
        for c in range(image.shape[2])
    ]
    return _cast_like(np.stack(channels, axis=-1), image.dtype)


def native_sizes(probes: Sequence[ImageProbe], boxes: np.ndarray | None = None) -> list[tuple[int, int]]:
    """(H, W) of each image before resizing: its crop box's size when it has one (x0 >= 0)."""
    sizes = [(p.height, p.width) for p in probes]
    if boxes is None:
        return sizes
    return [size if box[0] < 0 else (int(box[3] - box[1]), int(box[2] - box[0])) for size, box in zip(sizes, boxes)]


def _target_channels(native: int) -> int:
    """Channels an image keeps by default: gray (+alpha) -> 1, RGB (+alpha) -> 3."""
    return 1 if native <= 2 else 3


def _fit_channels(image: np.ndarray, channels: int, role: str, path: Path) -> np.ndarray:
    """Drop alpha, then convert to ``channels`` under the role's rule (see ImageFiles)."""
    native = image.shape[2]
    if native in (2, 4):
        image = image[..., : native - 1]  # alpha carries no scene content
    if image.shape[2] == channels:
        return image
    if role == "ir" and image.shape[2] == 3:
        if not (np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])):
            raise DatasetError(f"IR image {path} has 3 different channels; IR must be 1 channel (or 3 identical ones)")
        return image[..., :1]
    if role != "image" or image.shape[2] not in (1, 3):
        raise DatasetError(f"{path}: cannot use a {native}-channel image as {channels}-channel {role}")
    if channels == 3:
        return np.repeat(image, 3, axis=2)
    return _cast_like(image.astype(np.float64) @ _LUMA, image.dtype)[..., None]


class ImageFiles:
    """A lazy (N, H, W, C) ImageSource over image files: decoded, converted and resized on ``__getitem__``.

    Headers are read up front to fix ``shape`` and catch mixed sizes or pixel types; pixels are read per item.

    Args:
        paths: one file per item (png, jpg, jpeg, bmp via PIL; tif/tiff via tifffile; npy via numpy).
        channels: 1 or 3; by default 3 when any image is RGB, else 1 (gray images are replicated, alpha dropped).
        size: (H, W) to resize every image to (bilinear); without it all images must share one size.
        role: "image" converts gray <-> RGB freely; "rgb" needs 3 channels; "ir" needs 1, or 3 identical
            channels which collapse to 1.
        boxes: optional (N, 4) crop boxes x0, y0, x1, y1 in pixels (a row of -1 means the whole image),
            applied before resizing.
        probes: header probes already taken for ``paths``.
        root: folder that error messages show paths relative to.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        channels: int | None = None,
        size: tuple[int, int] | None = None,
        role: str = "image",
        boxes: np.ndarray | None = None,
        probes: Sequence[ImageProbe] | None = None,
        root: Path | None = None,
    ) -> None:
        if not paths:
            raise DatasetError(f"no image files in {root}" if root else "no image files")
        self.paths = [Path(p) for p in paths]
        self.role = role
        self.root = root
        self.boxes = None if boxes is None else np.asarray(boxes, dtype=np.int64).reshape(len(self.paths), 4)
        probes = list(probes) if probes is not None else [probe_image(p) for p in self.paths]
        self.dtype = self._common_dtype(probes)
        self.channels = self._channels(probes, channels)
        height, width = size if size is not None else self._common_size(self.native_sizes(probes))
        self.shape: tuple[int, ...] = (len(self.paths), int(height), int(width), self.channels)

    def _common_dtype(self, probes: Sequence[ImageProbe]) -> np.dtype:
        first = probes[0].dtype
        other = next((i for i, p in enumerate(probes) if p.dtype != first), None)
        if other is not None:
            raise DatasetError(
                f"images have different pixel types ({first} in {_show(self.paths[0], self.root)}, "
                f"{probes[other].dtype} in {_show(self.paths[other], self.root)}); convert them to one type"
            )
        return first

    def _channels(self, probes: Sequence[ImageProbe], channels: int | None) -> int:
        if channels is not None and channels not in (1, 3):
            raise DatasetError(f"channels must be 1 or 3, got {channels}")
        bad = [f"{_show(path, self.root)} ({p.channels})" for path, p in zip(self.paths, probes) if p.channels > 4]
        if bad:
            raise DatasetError(f"images need 1-4 channels (gray, RGB, optional alpha): {_few(bad)}")
        if channels is not None:
            return channels
        if self.role == "image":  # RGB as soon as one image is: a gray file sorted first must not turn every RGB one gray
            return max(_target_channels(p.channels) for p in probes)
        return _target_channels(probes[0].channels)

    def native_sizes(self, probes: Sequence[ImageProbe]) -> list[tuple[int, int]]:
        """(H, W) of each item before resizing: the crop box's size when there is one."""
        return native_sizes(probes, self.boxes)

    def _common_size(self, sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
        other = next((i for i, s in enumerate(sizes) if s != sizes[0]), None)
        if other is not None:
            (h0, w0), (h1, w1) = sizes[0], sizes[other]
            raise DatasetError(
                f"images have different sizes ({h0}x{w0} in {_show(self.paths[0], self.root)}, {h1}x{w1} in "
                f"{_show(self.paths[other], self.root)}); pass size=N to resize them (--data-param size=N on the command line)"
            )
        return sizes[0]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        path = self.paths[int(index)]
        image = read_image(path)
        if image.dtype != self.dtype:
            raise DatasetError(
                f"{path}: pixel type changed to {image.dtype} since the dataset was opened ({self.dtype})"
            )
        if self.boxes is not None and self.boxes[int(index), 0] >= 0:
            x0, y0, x1, y1 = (int(v) for v in self.boxes[int(index)])
            image = image[y0:y1, x0:x1]
        try:
            image = _fit_channels(image, self.channels, self.role, path)
            return resize_image(image, self.shape[1], self.shape[2])
        except MemoryError:
            raise DatasetError(f"not enough memory to resize image {path} to {self.shape[1]}x{self.shape[2]}") from None

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} files, shape={self.shape}, dtype={self.dtype}, role={self.role!r})"


# -------------------------------------------------------------------------------------------------- CIFAR


CIFAR_DOWNLOADS: dict[str, tuple[str, str, str]] = {
    # name: (url, md5 of the archive, folder inside it); from https://www.cs.toronto.edu/~kriz/cifar.html
    "cifar10": (
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py",
    ),
    "cifar100": (
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python",
    ),
}
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))

SOURCES: dict[str, tuple[str, str]] = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar.html", "the CIFAR-10 python version, unpacked"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar.html", "the CIFAR-100 python version, unpacked"),
    "mnist-idx": ("https://yann.lecun.com/exdb/mnist/", "or Fashion-MNIST's idx files"),
    "svhn": ("http://ufldl.stanford.edu/housenumbers/", "format 2, cropped digits"),
}
"""Where the public data each of these formats reads is published (page, which files): recorded as a dataset's
``url`` and named by the errors about missing files."""


def where_to_get(fmt: str) -> str:
    """"; get the files from URL (which)" for a format with a public source, else ""."""
    return f"; get the files from {SOURCES[fmt][0]} ({SOURCES[fmt][1]})" if fmt in SOURCES else ""

# the only globals a pickled dict of numpy arrays needs; everything else (os.system, eval, ...) is refused
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol-5 pickles of arrays
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
}
_NUMPY_CORE = "numpy._core" if importlib.util.find_spec("numpy._core") is not None else "numpy.core"


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that builds only numpy arrays, dtypes and plain containers; refuses every other global."""

    def __init__(self, file: Any, source: Path) -> None:
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise DatasetError(
                f"{self.source}: refusing to unpickle {module}.{name}; CIFAR files hold only numpy arrays"
            )
        if module.startswith(("numpy.core.", "numpy._core.")):  # same functions, either numpy major version
            module = _NUMPY_CORE + module[module.index(".", 6) :]
        return super().find_class(module, name)


def load_array_pickle(path: Path) -> dict[str, Any]:
    """A pickled dict of arrays / lists / bytes, read without running any code; str keys."""
    try:
        with open(path, "rb") as handle:
            obj = _ArrayUnpickler(handle, path).load()
    except DatasetError:
        raise
    except Exception as exc:  # truncated or not a pickle at all
        raise DatasetError(f"{path}: not a readable CIFAR pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {key.decode("latin1") if isinstance(key, bytes) else str(key): value for key, value in obj.items()}


def _decode_names(values: Any, path: Path, key: str) -> list[str]:
    if not isinstance(values, (list, tuple, np.ndarray)):
        raise DatasetError(f"{path}: {key!r} must be a list of names")
    try:
        names = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: {key!r} holds bytes that are not UTF-8 text ({exc.reason})") from exc
    return _distinct_names(names, f"{path} ({key})")


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 32, 32, 3) uint8 images and (N,) labels of one CIFAR batch file."""
    batch = load_array_pickle(path)
    if "data" not in batch or label_key not in batch:
        raise DatasetError(f"{path}: a CIFAR batch needs 'data' and {label_key!r}, found {_few(sorted(batch), 6)}")
    data = np.asarray(batch["data"])
    labels = check_labels(batch[label_key], str(path), None)  # text, 2-D or fractional labels: one line, not a cast
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DatasetError(
            f"{path}: 'data' must be uint8 (N, 3072) with N labels; got {data.dtype} {data.shape}, {len(labels)} labels"
        )
    # rows are 1024 red, 1024 green, 1024 blue values, each 32x32 row-major
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)), labels


def _cifar_root(path: Path, folder: str) -> Path:
    path = path.parent if path.is_file() else path
    return path / folder if (path / folder).is_dir() else path


def _require_files(root: Path, names: Sequence[str], what: str, fmt: str) -> None:
    if not root.exists():
        raise DatasetError(f"no folder {root}: a {what} folder holds {_few(list(names), 7)}{where_to_get(fmt)}")
    missing = [name for name in names if not (root / name).is_file()]
    if missing:
        raise DatasetError(f"{root} is not a complete {what} folder: missing {_few(missing, 7)}{where_to_get(fmt)}")


def carve_val(split: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Move a stratified ``val_fraction`` of the training items to val (formats with a fixed train/test split)."""
    if not val_fraction:
        return split
    train = np.flatnonzero(split == SPLITS["train"])
    inner = make_split(labels[train], test_fraction=val_fraction, seed=seed)
    split = split.copy()
    split[train[inner == SPLITS["test"]]] = SPLITS["val"]
    return split


def _fixed_split_dataset(
    name: str,
    parts: Sequence[tuple[int, np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    domain: str,
    val_fraction: float,
    seed: int,
    meta: dict[str, str],
) -> ImageDataset:
    """Concatenate (split code, images, labels) parts into one dataset."""
    shapes = [p[1].shape[1:] for p in parts]
    if len(set(shapes)) > 1:
        raise DatasetError(f"{name}: the splits' images differ in size ({' vs '.join('x'.join(map(str, s)) for s in shapes)})")
    try:
        # one part is used as is: a copy would double the peak memory of a large file
        images = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])
        labels = np.concatenate([p[2] for p in parts])
        split = np.concatenate([np.full(len(p[2]), p[0], np.uint8) for p in parts])
        split = carve_val(split, labels, val_fraction, seed)
        return ImageDataset(name, images, labels, list(class_names), split, domain, meta)
    except MemoryError:
        n = sum(len(p[1]) for p in parts)
        size = "x".join(map(str, shapes[0]))
        raise DatasetError(f"{name}: not enough memory to hold its {n} images of {size}") from None


@FORMATS.register("cifar10", tags=("rgb",))
def read_cifar10(path: Path, val_fraction: float = 0.0, seed: int = 0) -> ImageDataset:
    """CIFAR-10 python pickles (data_batch_1..5, test_batch, batches.meta), 32x32 RGB, 10 classes."""
    root = _cifar_root(Path(path), CIFAR_DOWNLOADS["cifar10"][2])
    _require_files(root, [*CIFAR10_TRAIN, "test_batch", "batches.meta"], "CIFAR-10", "cifar10")
    names = _decode_names(
        load_array_pickle(root / "batches.meta").get("label_names"), root / "batches.meta", "label_names"
    )
    parts = [(SPLITS["train"], *_cifar_batch(root / f, "labels")) for f in CIFAR10_TRAIN]
    parts.append((SPLITS["test"], *_cifar_batch(root / "test_batch", "labels")))
    meta = {"format": "cifar10", "url": SOURCES["cifar10"][0]}
    return _fixed_split_dataset(f"cifar10:{path}", parts, names, "rgb", val_fraction, seed, meta)


@FORMATS.register("cifar100", tags=("rgb",))
def read_cifar100(path: Path, labels: str = "fine", val_fraction: float = 0.0, seed: int = 0) -> ImageDataset:
    """CIFAR-100 python pickles (train, test, meta), 32x32 RGB, 100 fine (or 20 coarse) classes."""
    if labels not in ("fine", "coarse"):
        raise DatasetError(f"CIFAR-100 labels are 'fine' (100 classes) or 'coarse' (20), not {labels!r}")
    root = _cifar_root(Path(path), CIFAR_DOWNLOADS["cifar100"][2])
    _require_files(root, ["train", "test", "meta"], "CIFAR-100", "cifar100")
    names = _decode_names(
        load_array_pickle(root / "meta").get(f"{labels}_label_names"), root / "meta", f"{labels}_label_names"
    )
    parts = [(SPLITS[s], *_cifar_batch(root / s, f"{labels}_labels")) for s in ("train", "test")]
    meta = {"format": "cifar100", "labels": labels, "url": SOURCES["cifar100"][0]}
    return _fixed_split_dataset(f"cifar100:{path}", parts, names, "rgb", val_fraction, seed, meta)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_cifar(root: Path, which: str = "cifar10") -> Path:
    """Download and unpack CIFAR-10/100 (about 170 MB) into ``root``; returns the batches folder to open.

    Needs network access; the archive's md5 is checked before extracting. Parsing never downloads.
    """
    if which not in CIFAR_DOWNLOADS:
        raise DatasetError(f"unknown CIFAR variant {which!r}; choose from {', '.join(CIFAR_DOWNLOADS)}")
    url, md5, folder = CIFAR_DOWNLOADS[which]
    root = Path(root).expanduser()
    if (root / folder).is_dir():
        return root / folder
    root.mkdir(parents=True, exist_ok=True)
    archive = root / url.rsplit("/", 1)[1]
    if not archive.is_file() or _md5(archive) != md5:
        partial = archive.with_name(archive.name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
        except (urllib.error.URLError, OSError) as exc:
            raise DatasetError(f"cannot download {url} ({exc}); fetch it by hand and open {which}:PATH") from exc
        partial.replace(archive)
    if _md5(archive) != md5:
        raise DatasetError(f"{archive} has md5 {_md5(archive)}, expected {md5}; delete it and retry")
    _extract(archive, root)
    return root / folder


def _extract(archive: Path, root: Path) -> None:
    """Unpack a tar.gz into ``root``, refusing members that would land outside it."""
    with tarfile.open(archive, "r:gz") as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
            tar.extractall(root, filter="data")
            return
        unsafe = [
            m.name
            for m in tar.getmembers()
            if m.issym() or m.islnk() or Path(m.name).is_absolute() or ".." in Path(m.name).parts
        ]
        if unsafe:
            raise DatasetError(f"{archive}: refusing to extract unsafe members {_few(unsafe)}")
        tar.extractall(root)


# ------------------------------------------------------------------------------------------------ MNIST idx


# idx type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); multi-byte values are big-endian
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_NAME = re.compile(r"^(train|t10k)-(images|labels)[-.]idx([13])-ubyte(\.gz)?$", re.IGNORECASE)


_READ_CHUNK = 1 << 24  # bytes per read: a gzip stream is never inflated whole in memory beside its array


def read_idx(path: Path) -> np.ndarray:
    """An idx array: magic 0x00 0x00 <type code> <ndim>, ndim big-endian uint32 sizes, then the values.

    Plain or gzipped (by the gzip magic, whatever the name); the values stream into one array of the size the header
    declares, so a header declaring more than fits in memory is one line, not a MemoryError from gzip."""
    path = Path(path)
    with open(path, "rb") as plain:
        gzipped = plain.read(2) == b"\x1f\x8b"
        plain.seek(0)
        stream: Any = gzip.GzipFile(fileobj=plain) if gzipped else plain
        try:
            return _parse_idx(stream, path, None if gzipped else os.fstat(plain.fileno()).st_size)
        except (OSError, EOFError, zlib.error) as exc:  # zlib.error: a damaged deflate stream inside a valid header
            if not gzipped:
                raise
            raise DatasetError(f"{path}: corrupt gzip data ({exc})") from exc


def _parse_idx(stream: Any, path: Path, size: int | None) -> np.ndarray:
    """The idx array in ``stream``; ``size``: the file's length when known (a plain file), checked before allocating."""
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path}: not an idx file (magic bytes {magic.hex()})")
    dtype, ndim = np.dtype(_IDX_DTYPES[magic[2]]), magic[3]
    sizes = stream.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DatasetError(f"{path}: idx header truncated")
    dims = struct.unpack(f">{ndim}I", sizes)
    nbytes = math.prod(dims) * dtype.itemsize
    if size is not None and size - 4 - 4 * ndim != nbytes:  # a damaged header, not a lack of memory
        raise DatasetError(f"{path}: idx header says {dims} ({nbytes} bytes) but has {size - 4 - 4 * ndim}")
    try:
        values = np.empty(math.prod(dims), dtype.newbyteorder("="))
    except (MemoryError, ValueError):  # ValueError: more than numpy can address at all
        # a damaged header can declare up to 255 sizes of 2**32: too large an int for a float
        gigabytes = f"{nbytes / 1e9:.3g}" if nbytes < 10**300 else f"about 1e{len(str(nbytes)) - 10}"
        raise DatasetError(
            f"{path}: the idx header declares {dims} values ({gigabytes} GB), more than fits in memory"
        ) from None
    view = memoryview(values).cast("B")
    filled = 0
    while filled < nbytes:
        got = stream.readinto(view[filled : filled + _READ_CHUNK])
        if not got:
            break
        filled += got
    extra = 0
    while chunk := stream.read(_READ_CHUNK):  # counted, not kept
        extra += len(chunk)
    if filled + extra != nbytes:
        raise DatasetError(f"{path}: idx header says {dims} ({nbytes} bytes) but has {filled + extra}")
    if dtype.byteorder == ">":  # big-endian on disk, not native here: swap in place rather than copy
        values.byteswap(inplace=True)
    return values.reshape(dims)


def _idx_files(folder: Path) -> dict[tuple[str, str], Path]:
    """{(train|t10k, images|labels): path} of the idx files in a folder (plain preferred over .gz)."""
    found: dict[tuple[str, str], Path] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir(), key=lambda p: (p.suffix == ".gz", p.name)):
        match = _IDX_NAME.match(path.name)
        if match and path.is_file():
            found.setdefault((match.group(1).lower(), match.group(2).lower()), path)
    return found


def _mnist_root(path: Path) -> Path:
    path = path.parent if path.is_file() else path
    for candidate in (path, path / "raw", path / "MNIST" / "raw"):  # torchvision keeps them in MNIST/raw
        if _idx_files(candidate):
            return candidate
    raise DatasetError(f"no MNIST idx files (train-images-idx3-ubyte[.gz], ...) in {path}{where_to_get('mnist-idx')}")


@FORMATS.register("mnist-idx", tags=("gray",))
def read_mnist_idx(path: Path, val_fraction: float = 0.0, seed: int = 0) -> ImageDataset:
    """MNIST / Fashion-MNIST idx files (train-/t10k-images-idx3-ubyte[.gz] + labels), 28x28 gray."""
    root = _mnist_root(Path(path))
    files = _idx_files(root)
    parts = []
    for part, code in (("train", SPLITS["train"]), ("t10k", SPLITS["test"])):
        if (part, "images") not in files and (part, "labels") not in files:
            continue
        if (part, "images") not in files or (part, "labels") not in files:
            raise DatasetError(
                f"{root}: {part} images and labels must come together; one of the two idx files is missing"
            )
        images, labels = read_idx(files[part, "images"]), read_idx(files[part, "labels"])
        if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 or len(labels) != len(images):
            raise DatasetError(
                f"{root}: {part} needs uint8 (N, H, W) images and N labels, got {images.dtype} {images.shape} and "
                f"{labels.shape}"
            )
        if len(labels):  # a split of 0 images (valid headers) adds nothing
            # float idx types: fractional labels are one line, not truncated by a cast
            parts.append((code, images[..., None], check_labels(labels, str(files[part, "labels"]), None)))
    if not parts:
        raise DatasetError(f"{root}: the idx files hold no images")
    # 10 classes (MNIST, Fashion-MNIST, a subset of them), or up to the largest label for EMNIST's 26, 47 or 62
    count = _learned_classes(np.concatenate([p[2] for p in parts]), root, "is a labels file damaged?", floor=10)
    names = [str(i) for i in range(count)]
    meta = {"format": "mnist-idx", "url": SOURCES["mnist-idx"][0]}
    return _fixed_split_dataset(f"mnist-idx:{path}", parts, names, "gray", val_fraction, seed, meta)


# ------------------------------------------------------------------------------------------------------ SVHN


_SVHN_FILES = {"train_32x32.mat": SPLITS["train"], "test_32x32.mat": SPLITS["test"], "extra_32x32.mat": SPLITS["train"]}


# what a y that is not numbers is in MATLAB terms, by numpy kind
_MAT_KINDS = {"U": "text", "S": "text", "O": "a cell array", "V": "a struct", "c": "complex numbers"}


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 32, 32, 3) uint8 images and (N,) labels 0..9 of one SVHN .mat file (X is (32, 32, 3, N), y 1..10)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except Exception as exc:  # scipy raises ValueError, NotImplementedError (v7.3 files), OSError, ...
        raise DatasetError(f"cannot read SVHN file {path}: {exc}") from exc
    if "X" not in mat or "y" not in mat:
        raise DatasetError(f"{path}: an SVHN .mat file needs variables X and y")
    images, y = np.asarray(mat["X"]), np.asarray(mat["y"])
    if y.dtype.kind not in "biuf":
        kind = _MAT_KINDS.get(y.dtype.kind, y.dtype)
        raise DatasetError(f"{path}: y must hold the labels 1..10 as numbers, got {kind}")
    labels = check_labels(y.ravel(), str(path), None)  # 1.5 or NaN: one line, not truncated by a cast
    if images.ndim != 4 or images.shape[2] != 3 or images.dtype != np.uint8 or images.shape[3] != len(labels):
        raise DatasetError(f"{path}: X must be uint8 (H, W, 3, N) with N labels, got {images.dtype} {images.shape}")
    if not len(labels):
        raise DatasetError(f"{path}: the SVHN file holds no images")
    if labels.min() < 1 or labels.max() > 10:
        raise DatasetError(f"{path}: SVHN labels must be 1..10 (10 means digit 0), got {labels.min()}..{labels.max()}")
    labels[labels == 10] = 0  # SVHN stores digit 0 as class 10
    return np.ascontiguousarray(images.transpose(3, 0, 1, 2)), labels


@FORMATS.register("svhn", tags=("rgb",))
def read_svhn(path: Path, extra: bool = False, val_fraction: float = 0.0, seed: int = 0) -> ImageDataset:
    """SVHN cropped digits (train_32x32.mat, test_32x32.mat; a folder or one file), 32x32 RGB, 10 classes."""
    path = Path(path)
    if path.is_file():
        code = _SVHN_FILES.get(path.name.lower())
        images, labels = _read_svhn_mat(path)
        split = np.full(len(labels), code, np.uint8) if code is not None else make_split(labels, seed=seed)
        parts = [(int(s), images[split == s], labels[split == s]) for s in np.unique(split)]
    else:
        wanted = [n for n in _SVHN_FILES if (path / n).is_file() and (extra or not n.startswith("extra"))]
        if not wanted:
            raise DatasetError(f"no SVHN files (train_32x32.mat, test_32x32.mat) in {path}{where_to_get('svhn')}")
        parts = [(_SVHN_FILES[n], *_read_svhn_mat(path / n)) for n in wanted]
    meta = {"format": "svhn", "url": SOURCES["svhn"][0]}
    return _fixed_split_dataset(f"svhn:{path}", parts, [str(d) for d in range(10)], "rgb", val_fraction, seed, meta)


# ----------------------------------------------------------------------------------------------- image folder


_OTHER_IMAGE_EXTS = (".gif", ".webp", ".ppm", ".pgm", ".pbm", ".jp2", ".heic", ".avif", ".ico")


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted, skipping hidden files and folders. Images of another
    format, and image names whose file is missing (broken symlinks), are an error: they would be dropped silently."""
    found, other, broken = [], [], []
    for p in folder.rglob("*"):
        if any(_hidden(q) for q in p.relative_to(folder).parts):
            continue
        suffix = p.suffix.lower()
        if suffix in IMAGE_EXTS and p.is_file():
            found.append(p)
        elif suffix in IMAGE_EXTS and not p.exists():
            broken.append(p)
        elif suffix in _OTHER_IMAGE_EXTS:
            other.append(p)
    if other:
        raise DatasetError(f"images in a format advkit does not read ({', '.join(IMAGE_EXTS)}): {_few([str(p) for p in other])}; "
                           "convert them to PNG")
    if broken:
        raise DatasetError(f"image names whose file is missing (broken symlinks?): {_few([str(p) for p in broken])}")
    return sorted(found)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _hidden(p.name))


_SPLIT_FOLDERS = {**SPLITS, "valid": SPLITS["val"], "validation": SPLITS["val"]}


def _split_dirs(root: Path) -> list[tuple[int | None, Path]]:
    """[(split code, folder)]: the train/val(id|idation)/test sub-folders when root holds only those, else
    [(None, root)]. Split folders of class folders beside other folders are an error: the splits would silently
    become classes."""
    subdirs = _subdirs(root)
    splits = [d for d in subdirs if d.name.lower() in _SPLIT_FOLDERS]
    if subdirs and len(splits) == len(subdirs):
        return [(_SPLIT_FOLDERS[d.name.lower()], d) for d in subdirs]
    if any(_subdirs(d) for d in splits):
        others = [d.name for d in subdirs if d not in splits]
        raise DatasetError(f"{root} holds split folders ({', '.join(d.name for d in splits)}) beside other folders "
                           f"({_few(others)}); name the splits train, val and test and move the others out")
    return [(None, root)]


def _class_files(base: Path, root: Path) -> list[tuple[Path, list[Path]]]:
    """(class folder, its image files) under ``base``; a class folder without any image file is an error (it
    would shift every later class index, and a checkpoint's labels with it)."""
    found = [(d, _image_files(d)) for d in _subdirs(base)]
    empty = [_show(d, root) for d, files in found if not files]
    if empty and len(empty) < len(found):  # none with images: the caller's "no images" message says more
        raise DatasetError(f"class folders without image files ({', '.join(IMAGE_EXTS)}): {_few(empty)}; add images or "
                           "remove them")
    return found


def _class_names(root: Path, found: Iterable[str]) -> list[str]:
    """Class order: ``root/classes.txt`` (one name per line) when present, else sorted folder names."""
    found = sorted(set(found))
    listing = root / "classes.txt"
    if not listing.is_file():
        return found
    try:
        text = listing.read_text(encoding="utf-8-sig")  # -sig: a BOM would become part of the first name
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{listing} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    names = _distinct_names([line.strip() for line in text.splitlines() if line.strip()], listing)
    unknown = [name for name in found if name not in names]
    if unknown:
        raise DatasetError(f"{listing} does not list the classes {_few(unknown)}")
    return names


def _resolve_split(
    codes: Sequence[int | None], labels: np.ndarray, test_fraction: float, val_fraction: float, seed: int
) -> np.ndarray:
    """The data's own split when every item has one, else a seeded stratified split."""
    if all(code is None for code in codes):
        return make_split(labels, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)
    if any(code is None for code in codes):
        raise DatasetError("some items have a split (train/val/test) and others do not; give all or none")
    return np.asarray(codes, dtype=np.uint8)


MAX_SIZE = 4096
"""Largest ``size=`` (pixels per side): one 4096x4096 RGB image is 200 MB as floats while it is resized, and a
larger one would exhaust memory at the first batch rather than fail at open."""


def _square(size: int | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if not 1 <= int(size) <= MAX_SIZE:
        raise DatasetError(f"size must be 1..{MAX_SIZE} pixels per side, got {size}")
    return int(size), int(size)


@FORMATS.register("imagefolder")
def read_imagefolder(
    path: Path,
    size: int | None = None,
    channels: int | None = None,
    domain: str | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> ImageDataset:
    """Image files in class folders: root/[train|val|test/]<class>/*.{png,jpg,bmp,tif,npy}, read lazily."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"an image folder dataset needs a folder, got {root}")
    items: list[tuple[int | None, str, Path]] = []
    for code, base in _split_dirs(root):
        for class_dir, files in _class_files(base, root):
            items += [(code, class_dir.name, f) for f in files]
    if not items:
        loose = any(p.suffix.lower() in IMAGE_EXTS for p in root.iterdir())
        hint = "put them in class folders, root/<class>/*.png" if loose else f"looked for {', '.join(IMAGE_EXTS)} files"
        raise DatasetError(f"no images in class folders under {root}; {hint}")
    names = _class_names(root, (name for _, name, _ in items))
    index = {name: i for i, name in enumerate(names)}
    labels = np.array([index[name] for _, name, _ in items], dtype=np.int64)
    images = ImageFiles([f for _, _, f in items], channels=channels, size=_square(size), root=root)
    split = _resolve_split([code for code, _, _ in items], labels, test_fraction, val_fraction, seed)
    domain = domain or ("gray" if images.channels == 1 else "rgb")
    return ImageDataset(f"imagefolder:{path}", images, labels, names, split, domain, {"format": "imagefolder"})


# ------------------------------------------------------------------------------------------ paired RGB-IR


@dataclass(frozen=True)
class _Pair:
    """One RGB-IR sample found on disk."""

    split: int | None
    label: str
    sample_id: str
    rgb: Path
    ir: Path
    box: tuple[int, int, int, int] | None = None


def _split_tag(path: Path) -> tuple[str, str]:
    """('s_000123', 'nir') from 's_000123_nir.png': only the LAST '_<tag>' is the modality."""
    stem, sep, tag = path.stem.rpartition("_")
    return (stem, tag.lower()) if sep and stem else (path.stem, "")


def _scan_a(root: Path) -> list[_Pair]:
    """Layout A: root/[<split>/]<class>/<id>_rgb.<ext> + <id>_<irtag>.<ext>, paired by (split, class, id)."""
    pairs: list[_Pair] = []
    problems: list[str] = []
    for code, base in _split_dirs(root):
        for class_dir, files in _class_files(base, root):
            groups: dict[str, dict[str, list[Path]]] = defaultdict(lambda: {"rgb": [], "ir": []})
            for f in files:
                stem, tag = _split_tag(f)
                if tag not in ("rgb", *IR_TAGS):
                    problems.append(f"{_show(f, root)} (no _rgb/_{'/_'.join(IR_TAGS)} tag)")
                    continue
                key = (f.parent.relative_to(class_dir) / stem).as_posix()
                groups[key]["rgb" if tag == "rgb" else "ir"].append(f)
            for key in sorted(groups):
                found = groups[key]
                if len(found["rgb"]) == 1 and len(found["ir"]) == 1:
                    pairs.append(_Pair(code, class_dir.name, key, found["rgb"][0], found["ir"][0]))
                else:
                    problems.append(_pair_problem(found["rgb"], found["ir"], root))
    _raise_unpaired(root, problems)
    return pairs


def _pair_problem(rgb: Sequence[Path], ir: Sequence[Path], root: Path) -> str:
    files = ", ".join(_show(f, root) for f in [*rgb, *ir])
    if not ir:
        return f"{files} (no IR partner)"
    if not rgb:
        return f"{files} (no RGB partner)"
    return f"{files} ({len(rgb)} RGB and {len(ir)} IR files for one id)"


def _raise_unpaired(root: Path, problems: Sequence[str]) -> None:
    if problems:
        raise DatasetError(f"{root}: unpaired files: {_few(problems)}; every RGB image needs exactly one IR partner")


def _ir_tree(base: Path) -> Path | None:
    trees = [base / tag for tag in IR_TAGS if (base / tag).is_dir()]
    if len(trees) > 1:
        raise DatasetError(f"{base}: more than one IR tree ({_few(t.name for t in trees)}); keep one")
    return trees[0] if trees else None


def _tree_files(tree: Path, root: Path) -> dict[str, Path]:
    """{'<class>/<id>': path} for a B-layout tree; the extension is not part of the key."""
    found: dict[str, Path] = {}
    for f in _image_files(tree):
        rel = f.relative_to(tree)
        if len(rel.parts) < 2:
            raise DatasetError(f"{_show(f, root)} is not in a class folder; layout B is rgb/<class>/<id>.<ext>")
        key = rel.with_suffix("").as_posix()
        if key in found:
            raise DatasetError(f"{_show(found[key], root)} and {_show(f, root)} have the same id; keep one")
        found[key] = f
    return found


def _scan_b(root: Path) -> list[_Pair]:
    """Layout B: root/[<split>/]rgb/<class>/<id>.<ext> + root/[<split>/]ir/<class>/<id>.<ext>, by relative path."""
    pairs: list[_Pair] = []
    problems: list[str] = []
    for code, base in _split_dirs(root):
        ir_tree = _ir_tree(base)
        if not (base / "rgb").is_dir() or ir_tree is None:
            raise DatasetError(f"{base}: layout B needs an rgb/ folder and an ir/ (or {'/'.join(IR_TAGS[1:])}/) folder")
        rgb_files, ir_files = _tree_files(base / "rgb", root), _tree_files(ir_tree, root)
        for key in sorted(rgb_files.keys() | ir_files.keys()):
            if key in rgb_files and key in ir_files:
                class_name, sample_id = key.split("/", 1)
                pairs.append(_Pair(code, class_name, sample_id, rgb_files[key], ir_files[key]))
            else:
                problems.append(
                    _pair_problem(
                        [rgb_files[key]] if key in rgb_files else [], [ir_files[key]] if key in ir_files else [], root
                    )
                )
    _raise_unpaired(root, problems)
    return pairs


_MANIFEST_COLUMNS = ("id", "label", "rgb", "ir")
_BOX_COLUMNS = ("x0", "y0", "x1", "y1")


def _manifest_box(row: dict[str, str], line: int, csv_path: Path) -> tuple[int, int, int, int] | None:
    values = [(row.get(c) or "").strip() for c in _BOX_COLUMNS]
    if not any(values):
        return None
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        numbers = []
    if len(numbers) != 4 or not all(v.is_integer() for v in numbers):  # 0.9 would be truncated; inf, nan never fit
        raise DatasetError(
            f"{csv_path}:{line}: box x0,y0,x1,y1 must be 4 whole numbers of pixels, got {','.join(values)}"
        )
    x0, y0, x1, y1 = (int(v) for v in numbers)
    if x1 <= x0 or y1 <= y0 or x0 < 0 or y0 < 0:
        raise DatasetError(f"{csv_path}:{line}: box ({x0}, {y0}, {x1}, {y1}) is empty or negative")
    return x0, y0, x1, y1


def _manifest_split(value: str, line: int, csv_path: Path) -> int | None:
    value = value.strip().lower()
    if not value:
        return None
    if value in SPLITS:
        return SPLITS[value]
    if value in ("0", "1", "2"):
        return int(value)
    raise DatasetError(f"{csv_path}:{line}: split must be train, val or test, got {value!r}")


def _scan_c(csv_path: Path) -> list[_Pair]:
    """Layout C: manifest.csv rows id,label,[split,]rgb,ir[,x0,y0,x1,y1], paths relative to the CSV."""
    base = csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [(row, reader.line_num) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read manifest {csv_path}: {exc}") from exc
    missing = [c for c in _MANIFEST_COLUMNS if c not in columns]
    if missing:
        raise DatasetError(f"{csv_path}: missing columns {', '.join(missing)}; need id,label,[split,]rgb,ir")
    if not rows:
        raise DatasetError(f"{csv_path}: the manifest lists no samples")
    # DictReader keeps a row's extra fields under None: an unquoted comma in a path or id, or box values under a
    # header without box columns, would otherwise shift or drop fields silently (empty extras lose nothing)
    long = [line for row, line in rows if any(v.strip() for v in row.get(None, []))]
    if long:
        raise DatasetError(f"{csv_path}: line(s) {_few([str(n) for n in long])} have more fields than the header "
                           f"({','.join(columns)}); quote fields that hold commas")
    rows = [({k.strip(): (v or "") for k, v in row.items() if k is not None}, line) for row, line in rows]
    short = [line for row, line in rows if any(not row.get(c, "").strip() for c in _MANIFEST_COLUMNS)]
    if short:  # a row with too few fields: its paths would be the manifest's folder
        raise DatasetError(f"{csv_path}: line(s) {_few([str(n) for n in short])} leave {', '.join(_MANIFEST_COLUMNS)} "
                           "partly empty")
    pairs = [
        _Pair(
            _manifest_split(row.get("split", ""), line, csv_path),
            row["label"].strip(),
            row["id"].strip(),
            base / row["rgb"].strip(),
            base / row["ir"].strip(),
            _manifest_box(row, line, csv_path),
        )
        for row, line in rows
    ]
    _check_manifest_pairs(csv_path, pairs)
    return pairs


def _check_manifest_pairs(csv_path: Path, pairs: Sequence[_Pair]) -> None:
    duplicates = sorted(i for i, n in Counter(p.sample_id for p in pairs).items() if n > 1)
    if duplicates:
        raise DatasetError(f"{csv_path}: duplicate ids {_few(duplicates)}")
    missing = [_show(f, csv_path.parent) for p in pairs for f in (p.rgb, p.ir) if not f.is_file()]
    if missing:
        raise DatasetError(f"{csv_path}: the manifest lists missing files {_few(missing)}")


_CLASS_INDEX = re.compile(r"[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE)


def _manifest_labels(csv_path: Path, pairs: Sequence[_Pair]) -> tuple[np.ndarray, list[str]]:
    """Labels are all class names or all class indices (whole numbers >= 0), never a mix: one "5.0" or "-1" among
    indices would make every label a name and renumber the classes in text order ("10" before "2"). classes.txt
    (next to the CSV) fixes the names and their order: whole-number labels index it, and other labels it lists are
    names even if they look like numbers."""
    raw = [p.label for p in pairs]
    listing = csv_path.parent / "classes.txt"
    listed = _class_names(csv_path.parent, []) if listing.is_file() else None
    if all(_CLASS_INDEX.fullmatch(label) for label in raw):
        return _manifest_indices(csv_path, pairs, listed)
    if (listed is not None and set(raw) <= set(listed)) or not any(_NUMBER.fullmatch(label) for label in raw):
        names = _class_names(csv_path.parent, raw)
        index = {name: i for i, name in enumerate(names)}
        return np.array([index[label] for label in raw], dtype=np.int64), names
    name = next((p for p in pairs if not _NUMBER.fullmatch(p.label)), None)
    if name is not None:
        number = next(p for p in pairs if _NUMBER.fullmatch(p.label))
        raise DatasetError(
            f"{csv_path}: labels mix class names ({name.label!r} for id {name.sample_id}) and numbers "
            f"({number.label!r} for id {number.sample_id}); use one or the other"
        )
    number = next(p for p in pairs if not _CLASS_INDEX.fullmatch(p.label))
    raise DatasetError(
        f"{csv_path}: label {number.label!r} for id {number.sample_id} is not a class index; numeric labels must be "
        "whole numbers >= 0"
    )


def _manifest_indices(
    csv_path: Path, pairs: Sequence[_Pair], listed: list[str] | None
) -> tuple[np.ndarray, list[str]]:
    """Integer labels: indices into classes.txt when there is one, else classes 0..largest."""
    values = [int(p.label) for p in pairs]
    top = max(range(len(values)), key=values.__getitem__)
    if listed is not None and values[top] >= len(listed):
        raise DatasetError(f"{csv_path}: label {values[top]} for id {pairs[top].sample_id} but classes.txt lists only "
                           f"{len(listed)} classes")
    if values[top] > np.iinfo(np.int64).max:
        raise DatasetError(
            f"{csv_path}: label {values[top]} for id {pairs[top].sample_id} is too large to be a class index"
        )
    labels = np.array(values, dtype=np.int64)
    if listed is not None:
        return labels, listed
    count = _learned_classes(labels, csv_path, "is a label mistyped? (list the classes in classes.txt to have "
                                                "classes without images)")
    return labels, [str(i) for i in range(count)]


def _check_channels(pairs: Sequence[_Pair], rgb: Sequence[ImageProbe], ir: Sequence[ImageProbe], root: Path) -> None:
    bad_rgb = [f"{_show(p.rgb, root)} ({q.channels})" for p, q in zip(pairs, rgb) if q.channels not in (3, 4)]
    if bad_rgb:
        raise DatasetError(f"RGB images need 3 channels: {_few(bad_rgb)}")
    bad_ir = [f"{_show(p.ir, root)} ({q.channels})" for p, q in zip(pairs, ir) if q.channels > 4]
    if bad_ir:
        raise DatasetError(f"IR images need 1 channel (or 3 identical ones): {_few(bad_ir)}")


def _check_boxes(pairs: Sequence[_Pair], rgb: Sequence[ImageProbe], ir: Sequence[ImageProbe]) -> None:
    outside = [
        f"{p.sample_id} {p.box}"
        for p, r, i in zip(pairs, rgb, ir)
        if p.box is not None and (p.box[2] > min(r.width, i.width) or p.box[3] > min(r.height, i.height))
    ]
    if outside:
        raise DatasetError(f"crop boxes reach outside the images: {_few(outside)}")


def _check_pair_sizes(
    pairs: Sequence[_Pair], rgb_sizes: Sequence[tuple[int, int]], ir_sizes: Sequence[tuple[int, int]], align: str
) -> bool:
    """True when some pair differs in native size: an error unless align='resize' (then IR follows RGB)."""
    mismatched = [(p, r, i) for p, r, i in zip(pairs, rgb_sizes, ir_sizes) if r != i]
    if mismatched and align == "strict":
        examples = [f"RGB {r[0]}x{r[1]} vs IR {i[0]}x{i[1]} for id {p.sample_id}" for p, r, i in mismatched]
        raise DatasetError(
            f"pair size mismatch: {_few(examples, 2)}; pass align='resize' to resize IR to its RGB partner "
            "(--data-param align=resize on the command line)"
        )
    skewed = [p.sample_id for p, r, i in mismatched if abs(r[1] * i[0] - i[1] * r[0]) > 0.01 * r[1] * i[0]]
    if skewed:
        warnings.warn(
            f"RGB and IR aspect ratios differ by over 1% for ids {_few(skewed)}: pairs may be unregistered",
            stacklevel=4,
        )
    return bool(mismatched)


def _paired_files(
    name: str,
    root: Path,
    pairs: Sequence[_Pair],
    labels: np.ndarray,
    class_names: Sequence[str],
    options: PairedOptions,
    meta: dict[str, str],
) -> PairedDataset:
    """A lazy PairedDataset over validated file pairs (layouts A, B, C)."""
    if not pairs:
        raise DatasetError(f"no image pairs found in {root}")
    rgb_probes, ir_probes = [probe_image(p.rgb) for p in pairs], [probe_image(p.ir) for p in pairs]
    _check_channels(pairs, rgb_probes, ir_probes, root)
    boxes = None
    if any(p.box is not None for p in pairs):
        _check_boxes(pairs, rgb_probes, ir_probes)  # first: a box inside the images also fits in int64
        boxes = np.array([p.box if p.box is not None else (-1, -1, -1, -1) for p in pairs], dtype=np.int64)
    # whole images, not crop boxes: one box on a 32x32 RGB and a 16x16 IR image crops two different scenes
    rgb_sizes, ir_sizes = native_sizes(rgb_probes), native_sizes(ir_probes)
    resized = _check_pair_sizes(pairs, rgb_sizes, ir_sizes, options.align)
    boxed = [p.sample_id for p, r, i in zip(pairs, rgb_sizes, ir_sizes) if p.box is not None and r != i]
    if boxed:
        raise DatasetError(
            f"crop boxes on pairs of different sizes (ids {_few(boxed)}): a box is in one image's pixels; resize the "
            "IR files to their RGB partners' size, or drop the boxes"
        )
    rgb = ImageFiles(
        [p.rgb for p in pairs], channels=3, size=options.target, role="rgb", boxes=boxes, probes=rgb_probes, root=root
    )
    # IR follows its RGB partner's size: identical when strict, resized when align="resize"
    ir = ImageFiles(
        [p.ir for p in pairs],
        channels=1,
        size=(rgb.shape[1], rgb.shape[2]),
        role="ir",
        boxes=boxes,
        probes=ir_probes,
        root=root,
    )
    # decode one IR image now, so what is wrong with a whole dataset fails at open, not mid-run: 3-channel IR that
    # is not gray, or float IR outside [0, 1] (Kelvin, 0..255), which no header records (TIFF's SMaxSampleValue
    # is optional and rarely written); a later file alone out of range still fails when a batch reads it
    check = next((i for i, q in enumerate(ir_probes) if q.channels >= 3), 0 if ir.dtype.kind == "f" else None)
    if check is not None:
        ir[check]
    split = _resolve_split([p.split for p in pairs], labels, options.test_fraction, options.val_fraction, options.seed)
    meta = {**meta, "alignment": "resized" if resized else "native"}
    return PairedDataset(name, rgb, ir, labels, list(class_names), split, meta)


@dataclass(frozen=True)
class PairedOptions:
    """Options shared by the paired readers (see ``read_paired``)."""

    size: int | None = None
    align: str = "strict"
    test_fraction: float = 0.2
    val_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.align not in ALIGN_MODES:
            raise DatasetError(f"align must be one of {', '.join(ALIGN_MODES)}, got {self.align!r}")
        _square(self.size)

    @property
    def target(self) -> tuple[int, int] | None:
        return _square(self.size)


def _folder_dataset(
    name: str, root: Path, pairs: Sequence[_Pair], options: PairedOptions, layout: str
) -> PairedDataset:
    """Layouts A and B: the class is the folder name, ordered by classes.txt or alphabetically."""
    if not pairs:
        raise DatasetError(f"no image pairs in {root}; layout {layout} is {_LAYOUT_HELP[layout]}")
    class_names = _class_names(root, (p.label for p in pairs))
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[p.label] for p in pairs], dtype=np.int64)
    return _paired_files(name, root, pairs, labels, class_names, options, {"format": f"paired-{layout.lower()}"})


def _require_dir(path: Path, layout: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"paired layout {layout} needs a folder ({_LAYOUT_HELP[layout]}), got {path}")
    return path


_LAYOUT_HELP = {
    "A": "root/[<split>/]<class>/<id>_rgb.<ext> + <id>_nir.<ext>",
    "B": "root/[<split>/]rgb/<class>/<id>.<ext> + root/[<split>/]ir/<class>/<id>.<ext>",
    "C": "root/manifest.csv with columns id,label,[split,]rgb,ir",
    "D": "an .npz/.h5 file with keys rgb, ir, label",
}


@FORMATS.register("paired-a", tags=("paired",))
def read_paired_a(
    path: Path,
    size: int | None = None,
    align: str = "strict",
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> PairedDataset:
    """Paired RGB-IR, layout A: <class>/<id>_rgb.<ext> + <id>_nir.<ext> (the EPFL nirscene1 tree)."""
    options = PairedOptions(size, align, test_fraction, val_fraction, seed)
    root = _require_dir(Path(path), "A")
    return _folder_dataset(f"paired-a:{path}", root, _scan_a(root), options, "A")


@FORMATS.register("paired-b", tags=("paired",))
def read_paired_b(
    path: Path,
    size: int | None = None,
    align: str = "strict",
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> PairedDataset:
    """Paired RGB-IR, layout B: parallel trees rgb/<class>/<id>.<ext> and ir/<class>/<id>.<ext>."""
    options = PairedOptions(size, align, test_fraction, val_fraction, seed)
    root = _require_dir(Path(path), "B")
    return _folder_dataset(f"paired-b:{path}", root, _scan_b(root), options, "B")


@FORMATS.register("paired-c", tags=("paired",))
def read_paired_c(
    path: Path,
    size: int | None = None,
    align: str = "strict",
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> PairedDataset:
    """Paired RGB-IR, layout C: manifest.csv (id,label,split,rgb,ir[,x0,y0,x1,y1]) + image files."""
    options = PairedOptions(size, align, test_fraction, val_fraction, seed)
    path = Path(path)
    csv_path = path / "manifest.csv" if path.is_dir() else path
    if not csv_path.is_file():
        raise DatasetError(f"no manifest.csv in {path}; layout C is {_LAYOUT_HELP['C']}")
    pairs = _scan_c(csv_path)
    labels, class_names = _manifest_labels(csv_path, pairs)
    return _paired_files(
        f"paired-c:{path}", csv_path.parent, pairs, labels, class_names, options, {"format": "paired-c"}
    )


# ------------------------------------------------------------------------------------------ layout D arrays


_ARRAY_REQUIRED = ("rgb", "ir", "label")


def _open_npz(path: Path) -> Any:
    """np.load of an .npz archive; a file that is not a zip at all (truncated, or text renamed .npz) is one line
    saying so, where np.load would try it as a pickle or a bare .npy and report that instead."""
    with open(path, "rb") as handle:
        if not zipfile.is_zipfile(handle):  # a truncated zip loses its central directory, at the end
            raise DatasetError(f"{path} is not a valid .npz file (not a zip archive: truncated, or another file "
                               "renamed)")
    return np.load(path, allow_pickle=False)


def _array_keys(path: Path) -> list[str]:
    """Names of the arrays in an .npz or HDF5 file, without loading them."""
    try:
        if path.suffix.lower() == ".npz":
            with _open_npz(path) as archive:
                return list(archive.files)
        import h5py

        with h5py.File(path, "r") as handle:
            return list(handle.keys())
    except DatasetError:
        raise
    except Exception as exc:  # BadZipFile, OSError (not HDF5), ...
        raise DatasetError(f"cannot read array file {path}: {exc}") from exc


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz (never unpickling) or the top-level datasets of an HDF5 file."""
    try:
        if path.suffix.lower() == ".npz":
            with _open_npz(path) as archive:
                return {key: archive[key] for key in archive.files}
        import h5py

        with h5py.File(path, "r") as handle:
            return {key: np.asarray(handle[key][()]) for key in handle if isinstance(handle[key], h5py.Dataset)}
    except DatasetError:
        raise
    except ValueError as exc:
        raise DatasetError(f"cannot read {path}: {exc} (store strings as fixed-width unicode, not objects)") from exc
    except MemoryError:  # its message is empty: say what ran out
        raise DatasetError(f"not enough memory to load the arrays of {path}") from None
    except Exception as exc:
        raise DatasetError(f"cannot read array file {path}: {exc}") from exc


def _strings(value: np.ndarray, key: str, path: Path) -> list[str]:
    arr = np.asarray(value).reshape(-1)
    if arr.dtype.kind not in "USO":
        raise DatasetError(f"{path}: key {key!r} must hold strings, got {arr.dtype}")
    try:
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr.tolist()]
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: key {key!r} holds bytes that are not UTF-8 text ({exc.reason})") from exc


def _array_meta(arrays: dict[str, np.ndarray], path: Path) -> dict[str, str]:
    if "meta" not in arrays:
        return {}
    text = _strings(arrays["meta"], "meta", path)
    try:
        meta = json.loads(text[0]) if len(text) == 1 else None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: key 'meta' is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: key 'meta' must be one JSON object string")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def _typed(
    arrays: dict[str, np.ndarray], key: str, path: Path, ok: Callable[[np.ndarray], bool], want: str
) -> np.ndarray:
    arr = np.asarray(arrays[key])
    if not ok(arr):
        raise DatasetError(f"{path}: key {key!r} must be {want}, got {arr.dtype} {arr.shape}")
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def _array_ir(arrays: dict[str, np.ndarray], path: Path, meta: dict[str, str]) -> np.ndarray:
    """IR as (N, H, W, 1): a trailing 3-channel axis must be gray. With meta ir_range, IR of any type becomes float32
    rescaled from [lo, hi] to [0, 1]; without it float IR must be in [0, 1] and integer IR keeps its type's range."""
    ir = _typed(
        arrays,
        "ir",
        path,
        lambda a: a.dtype.newbyteorder("=") in _PIXEL_TYPES and (a.ndim == 3 or (a.ndim == 4 and a.shape[3] in (1, 3))),
        "uint8/uint16/float32 (N, H, W) or (N, H, W, 1)",
    )
    ir = ir[..., None] if ir.ndim == 3 else ir
    if ir.shape[3] == 3:
        if not (np.array_equal(ir[..., 0], ir[..., 1]) and np.array_equal(ir[..., 0], ir[..., 2])):
            raise DatasetError(f"{path}: key 'ir' has 3 different channels; IR must be 1 channel (or 3 identical ones)")
        ir = ir[..., :1]
    # integer IR too: 12-bit values in uint16 divided by 65535 would make every image nearly black
    if ir.dtype.kind == "f" or "ir_range" in meta:
        ir = _unit_range(ir, meta.get("ir_range"), path)
    return np.ascontiguousarray(ir)


def _unit_range(ir: np.ndarray, ir_range: str | None, path: Path) -> np.ndarray:
    """IR into float32 [0, 1]: rescaled from meta's ir_range [lo, hi] when given, else (float) it must be there."""
    raw_lo = raw_hi = 0.0
    if ir_range is not None:
        try:
            lo, hi = (float(v) for v in json.loads(ir_range))
        except (ValueError, TypeError) as exc:
            raise DatasetError(f"{path}: meta ir_range must be [lo, hi], got {ir_range}") from exc
        if not (math.isfinite(lo) and math.isfinite(hi - lo) and hi > lo):  # [0, Infinity] would make all IR 0
            raise DatasetError(f"{path}: meta ir_range needs finite lo < hi, got {ir_range}")
        if ir.size:  # the values as stored, for the message below
            raw_lo, raw_hi = float(ir.min()), float(ir.max())
        ir = (ir.astype(np.float32, copy=False) - lo) / (hi - lo)  # float32 first: exact for uint8/uint16
    if not np.isfinite(ir).all():  # NaN passes both range checks below
        raise DatasetError(f"{path}: float IR holds NaN or infinite values")
    lo_val, hi_val = (float(ir.min()), float(ir.max())) if ir.size else (0.0, 0.0)
    if lo_val < -1e-6 or hi_val > 1 + 1e-6:
        if ir_range is not None:
            raise DatasetError(
                f"{path}: IR values {raw_lo:.6g}..{raw_hi:.6g} reach outside meta ir_range {ir_range}; fix the range"
            )
        raise DatasetError(
            f"{path}: float IR must lie in [0, 1] (got {lo_val:.3g}..{hi_val:.3g}); add meta ir_range [lo, hi]"
        )
    return np.clip(ir, 0.0, 1.0).astype(np.float32, copy=False)


def _resize_all(images: np.ndarray, size: tuple[int, int], path: Path) -> np.ndarray:
    if images.shape[1:3] == size:
        return images
    try:
        return np.stack([resize_image(img, *size) for img in images])
    except MemoryError:
        raise DatasetError(
            f"{path}: not enough memory to resize its {len(images)} images to {size[0]}x{size[1]}"
        ) from None


def _array_images(
    arrays: dict[str, np.ndarray], path: Path, meta: dict[str, str], options: PairedOptions
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validated rgb (N, H, W, 3) and ir (N, H, W, 1) arrays at their final size; True if IR was resized."""
    rgb = _typed(
        arrays, "rgb", path, lambda a: a.dtype == np.uint8 and a.ndim == 4 and a.shape[3] == 3, "uint8 (N, H, W, 3)"
    )
    ir = _array_ir(arrays, path, meta)
    if len(ir) != len(rgb):
        raise DatasetError(f"{path}: {len(rgb)} RGB images but {len(ir)} IR images")
    resized = ir.shape[1:3] != rgb.shape[1:3]
    if resized and options.align == "strict":
        (h0, w0), (h1, w1) = rgb.shape[1:3], ir.shape[1:3]
        raise DatasetError(f"{path}: pair size mismatch: RGB {h0}x{w0} vs IR {h1}x{w1}; pass align='resize' "
                           "(--data-param align=resize on the command line)")
    ir = _resize_all(ir, rgb.shape[1:3], path)
    if options.target is not None:
        rgb, ir = _resize_all(rgb, options.target, path), _resize_all(ir, options.target, path)
    return rgb, ir, resized


@FORMATS.register("paired-d", tags=("paired",))
def read_paired_d(
    path: Path,
    size: int | None = None,
    align: str = "strict",
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> PairedDataset:
    """Paired RGB-IR, layout D: one .npz/.h5 file with rgb, ir, label[, split, ids, class_names, meta]."""
    options = PairedOptions(size, align, test_fraction, val_fraction, seed)
    path = Path(path)
    if not path.is_file() or path.suffix.lower() not in ARRAY_EXTS:
        raise DatasetError(f"paired layout D needs an .npz, .h5 or .hdf5 file, got {path}")
    arrays = _load_arrays(path)
    missing = [key for key in _ARRAY_REQUIRED if key not in arrays]
    if missing:
        raise DatasetError(f"{path}: missing keys {', '.join(missing)}; layout D needs rgb, ir, label")
    meta = _array_meta(arrays, path)
    rgb, ir, resized = _array_images(arrays, path, meta, options)
    n = len(rgb)
    labels = _typed(
        arrays, "label", path, lambda a: a.dtype.kind in "iu" and a.shape == (n,), f"integers of shape ({n},)"
    )
    name = f"paired-d:{path}"
    labels = check_labels(labels, name, None)  # before the int64 cast, which would wrap a uint64 label
    split = _array_split(arrays, path, n)
    if split is None:
        split = make_split(labels, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)
    _check_array_ids(arrays, path, n)
    if "class_names" in arrays:
        names = _distinct_names(_strings(arrays["class_names"], "class_names", path), f"{path} (class_names)")
    else:
        hint = "is a label damaged? (store class_names to have classes without images)"
        names = [str(i) for i in range(_learned_classes(labels, path, hint))]
    meta = {"format": "paired-d", **meta, "alignment": "resized" if resized else "native"}
    return PairedDataset(name, rgb, ir, labels, names, split, meta)


def _array_split(arrays: dict[str, np.ndarray], path: Path, n: int) -> np.ndarray | None:
    if "split" not in arrays:
        return None
    split = _typed(
        arrays, "split", path, lambda a: a.dtype.kind in "iu" and a.shape == (n,), f"integers 0/1/2 of shape ({n},)"
    )
    if not np.isin(split, list(SPLITS.values())).all():
        raise DatasetError(
            f"{path}: key 'split' must hold 0 (train), 1 (val) or 2 (test), got {_few(np.unique(split))}"
        )
    return split.astype(np.uint8)


def _check_array_ids(arrays: dict[str, np.ndarray], path: Path, n: int) -> None:
    if "ids" not in arrays:
        return
    ids = _strings(arrays["ids"], "ids", path)
    if len(ids) != n or len(set(ids)) != n:
        raise DatasetError(
            f"{path}: key 'ids' must hold {n} distinct strings, got {len(set(ids))} distinct of {len(ids)}"
        )


# ------------------------------------------------------------------------------------------------ detection


def _has_rgb_tag(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTS and _split_tag(p)[1] == "rgb" for p in folder.iterdir() if p.is_file())


def detect_paired_layout(path: Path) -> str | None:
    """'paired-a' .. 'paired-d' when ``path`` looks like one of the paired layouts, else None."""
    path = Path(path)
    if path.is_file():
        suffix = path.suffix.lower()
        return "paired-d" if suffix in ARRAY_EXTS else "paired-c" if suffix == ".csv" else None
    if (path / "manifest.csv").is_file():
        return "paired-c"
    bases = [base for _, base in _split_dirs(path)]
    if any((b / "rgb").is_dir() and any((b / tag).is_dir() for tag in IR_TAGS) for b in bases):
        return "paired-b"
    if any([d.name.lower() for d in _subdirs(b)] == ["rgb"] for b in bases):  # else: an image folder of one class, rgb
        raise DatasetError(f"{path} holds an rgb/ tree without its IR partner ({'/, '.join(IR_TAGS)}/); layout B needs both")
    if any(_has_rgb_tag(class_dir) for b in bases for class_dir in _subdirs(b)):
        return "paired-a"
    return None


@FORMATS.register("paired", tags=("paired",))
def read_paired(
    path: Path,
    size: int | None = None,
    align: str = "strict",
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> PairedDataset:
    """Paired RGB-IR in any layout A-D, detected from the contents.

    Args:
        path: the dataset folder (A, B, C), manifest.csv (C) or array file (D).
        size: resize both domains to size x size (bilinear); without it images must share one size.
        align: "strict" (a pair with different RGB and IR sizes is an error) or "resize" (IR is resized to its
            RGB partner; pixel-level transfer then is approximate).
        test_fraction, val_fraction, seed: the stratified split made when the data has none.
    """
    layout = detect_paired_layout(Path(path))
    if layout is None:
        raise DatasetError(f"no paired RGB-IR layout in {path}; expected {'; or '.join(_LAYOUT_HELP.values())}")
    return FORMATS.create(
        layout,
        path=Path(path),
        size=size,
        align=align,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        seed=seed,
    )  # type: ignore[return-value]


def _is_cifar10(folder: Path) -> bool:
    return (
        (folder / "batches.meta").is_file()
        or (folder / "data_batch_1").is_file()
        or (folder / "cifar-10-batches-py").is_dir()
    )


def _is_cifar100(folder: Path) -> bool:
    return ((folder / "meta").is_file() and (folder / "train").is_file()) or (folder / "cifar-100-python").is_dir()


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTS and p.is_file() for p in folder.rglob("*"))


def _detect_folder(path: Path) -> str | None:
    if _is_cifar10(path):
        return "cifar10"
    if _is_cifar100(path):
        return "cifar100"
    if any(_idx_files(c) for c in (path, path / "raw", path / "MNIST" / "raw")):
        return "mnist-idx"
    if any((path / name).is_file() for name in _SVHN_FILES):
        return "svhn"
    layout = detect_paired_layout(path)
    if layout is not None:
        return layout
    if any(_has_images(class_dir) for _, base in _split_dirs(path) for class_dir in _subdirs(base)):
        return "imagefolder"
    return None


def _detect_file(path: Path) -> str | None:
    name, suffix = path.name.lower(), path.suffix.lower()
    if suffix in ARRAY_EXTS:
        keys = _array_keys(path)
        missing = [key for key in _ARRAY_REQUIRED if key not in keys]
        if missing:  # str(): a damaged file may give a key as bytes, which does not sort with str
            raise DatasetError(f"{path} has keys {_few(sorted(map(str, keys)), 6)} but layout D needs rgb, ir, label")
        return "paired-d"
    if suffix == ".mat":
        return "svhn"
    if suffix == ".csv":
        return "paired-c"
    if _IDX_NAME.match(path.name):
        return "mnist-idx"
    if name in (*CIFAR10_TRAIN, "test_batch", "batches.meta"):
        return "cifar10"
    if name in ("train", "test", "meta") and (path.parent / "meta").is_file():
        return "cifar100"
    if suffix in IMAGE_EXTS:
        raise DatasetError(f"{path} is a single image; pass the folder that holds the dataset")
    return None


def detect_format(path: Path) -> str:
    """The FORMATS name that reads ``path``, from its contents; DatasetError when nothing matches."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"no file or folder {path}")
    fmt = _detect_file(path) if path.is_file() else _detect_folder(path)
    if fmt is None:
        raise DatasetError(
            f"cannot tell the dataset format of {path} (no CIFAR batches, MNIST idx, SVHN .mat, paired RGB-IR "
            f"layout or class folders of images); name it as FORMAT:PATH, FORMAT one of {', '.join(FORMATS.names())}"
        )
    return fmt
