"""Datasets: a registry of named datasets and readers of on-disk formats, all giving ImageDataset/PairedDataset.

A dataset spec is one of
  - a registered name: ``digits``, ``mnist-subset``, ``synthetic-rgbir`` (``advkit list datasets``);
  - ``FORMAT:PATH`` for a reader, e.g. ``cifar10:~/data/cifar-10-batches-py``, ``paired:~/nirscene1``;
  - a bare ``PATH``, whose format is detected from its contents.

    >>> ds = open_dataset("digits")
    >>> ds.size, ds.channels, ds.num_classes
    ((8, 8), 1, 10)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advkit.datasets.base import SPLITS, ImageDataset, PairedDataset, make_split, to_tensor
from advkit.errors import DatasetError
from advkit.registry import Registry, check_settings, suggest

Dataset = ImageDataset | PairedDataset

DATASETS: Registry[Dataset] = Registry("dataset")
"""Named datasets that need no path: offline real data and generators."""

FORMATS: Registry[Dataset] = Registry("dataset format")
"""Readers of on-disk formats; each factory takes ``path`` plus options."""


def _load_entries() -> None:
    # importing the modules registers their entries
    from advkit.datasets import offline, readers, synthetic  # noqa: F401


def open_dataset(spec: str, **params: Any) -> Dataset:
    """Open a dataset by name, ``FORMAT:PATH`` or bare path (format detected). Options go to the factory."""
    _load_entries()
    if spec in DATASETS:
        return _create(DATASETS, spec, spec, params)
    fmt, sep, rest = spec.partition(":")
    if sep and fmt in FORMATS:
        return _create(FORMATS, fmt, spec, {"path": Path(rest).expanduser(), **params})
    path = Path(spec).expanduser()
    if path.exists():
        from advkit.datasets.readers import detect_format

        return _create(FORMATS, detect_format(path), spec, {"path": path, **params})
    if sep and len(fmt) > 1:
        raise DatasetError(FORMATS.unknown_message(fmt))
    if spec in FORMATS:  # `--data cifar10`: a format named without the files to read
        raise DatasetError(_format_without_path(spec))
    raise DatasetError(f"unknown dataset {spec!r}, and no file or folder {spec!r} exists{suggest(spec, DATASETS.names())}")


def _format_without_path(fmt: str) -> str:
    from advkit.datasets.readers import where_to_get

    return (f"{fmt} is a format, not a named dataset: give its files as {fmt}:PATH; it reads "
            f"{FORMATS.entry(fmt).summary.rstrip('.')}{where_to_get(fmt)}")


def _create(registry: Registry[Dataset], name: str, spec: str, params: dict[str, Any]) -> Dataset:
    """The dataset, after a one-line error for an option the reader does not have or a value of the wrong type."""
    user = {k: v for k, v in params.items() if k != "path"}
    check_settings(registry.entry(name).factory, user, f"{spec} (--data-param)", internal=("path",))
    return registry.create(name, **params)


def open_images(spec: str, domain: str | None = None, /, **params: Any) -> ImageDataset:
    """Open a dataset and pick one domain: ``domain`` is required for paired data ("rgb" or "ir")."""
    if "domain" in params:  # a reader option of that name would collide with the side: it gave a TypeError
        raise DatasetError(f"choose the side of {spec} with --domain {params['domain']}, not as a data parameter")
    ds = open_dataset(spec, **params)
    if isinstance(ds, PairedDataset):
        if domain is None:
            raise DatasetError(f"{spec} holds aligned RGB-IR pairs: choose a side with --domain rgb or --domain ir")
        return ds.domain(domain)
    if domain is not None and domain != ds.domain:
        raise DatasetError(f"{spec} has only the {ds.domain} domain, not {domain}")
    return ds


def dataset_factories() -> tuple[Registry[Dataset], Registry[Dataset]]:
    """The two registries, populated (for listings and conformance tests)."""
    _load_entries()
    return DATASETS, FORMATS


__all__ = [
    "DATASETS",
    "FORMATS",
    "SPLITS",
    "Dataset",
    "ImageDataset",
    "PairedDataset",
    "dataset_factories",
    "make_split",
    "open_dataset",
    "open_images",
    "to_tensor",
]

