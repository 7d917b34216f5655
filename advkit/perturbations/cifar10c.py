"""Reader of the published CIFAR-10-C arrays (https://zenodo.org/record/2535967, https://arxiv.org/abs/1903.12261).

The release is a folder of ``<corruption>.npy`` files, each (50000, 32, 32, 3) uint8: the 10,000 CIFAR-10 test
images corrupted at severity 1, then the same images at severity 2, ... up to 5; and ``labels.npy``, the 50,000
labels in the same order (the test labels five times). CIFAR-100-C has the same layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from advkit.errors import DatasetError, SettingsError
from advkit.perturbations.params import SEVERITIES, SEVERITY_PARAMS
from advkit.registry import suggest

# The release also holds the four extra corruptions of the paper's appendix.
CIFAR10C_FILES = (*SEVERITY_PARAMS, "speckle_noise", "gaussian_blur", "spatter", "saturate")
IMAGE_SHAPE = (32, 32, 3)


def _load(path: Path) -> np.ndarray:
    """Memory-map a .npy file (no pickles); any failure is a one-line DatasetError."""
    if not path.is_file():
        raise DatasetError(f"no {path.name} in {path.parent}: expected the CIFAR-10-C .npy files there")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {path} as a .npy array: {exc}") from exc


def load_cifar10c(root: Path | str, name: str, severity: int, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The images (N, 32, 32, 3) uint8 and labels (N,) int64 of corruption ``name`` at ``severity`` (1..5).

    ``root`` is the folder holding ``<name>.npy`` and ``labels.npy``. N is a fifth of the file (10,000 for the
    release), or its first ``n`` images (only those are read). ``labels.npy`` may hold the labels of all five
    severities (the release) or of one.
    """
    if name not in CIFAR10C_FILES:
        raise DatasetError(f"unknown CIFAR-10-C corruption {name!r}{suggest(name, list(CIFAR10C_FILES))}")
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise SettingsError(f"severity must be an integer from 1 to 5, got {severity!r}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"CIFAR-10-C folder {root} does not exist or is not a folder")
    images = _load(root / f"{name}.npy")
    labels = _load(root / "labels.npy")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE or images.shape[0] % 5:
        raise DatasetError(
            f"{root / (name + '.npy')}: expected uint8 images of shape (5 * N, 32, 32, 3), "
            f"got {images.dtype} {images.shape}"
        )
    per_severity = images.shape[0] // 5
    if labels.ndim != 1 or labels.shape[0] not in (images.shape[0], per_severity):
        raise DatasetError(
            f"{root / 'labels.npy'}: expected {images.shape[0]} or {per_severity} labels, got shape {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{root / 'labels.npy'}: expected integer labels, got {labels.dtype}")
    start, count = (severity - 1) * per_severity, per_severity if n is None else min(n, per_severity)
    rows = slice(start, start + count)
    label_rows = rows if labels.shape[0] == images.shape[0] else slice(0, count)
    return np.array(images[rows]), np.array(labels[label_rows], dtype=np.int64)
