"""Model and dataset specs recorded in reports and detector files: absolute when written, resolved when read back.

A command records the ``--model`` and ``--data`` it was given, and a relative path there only means something in
the directory the command ran in. Writers record absolute paths (:func:`absolute_spec`); for files written
before that, readers try a relative path against the directories it may have been relative to
(:func:`resolve_spec`): typically the file's own directory, then the current one. Dataset names and
``module:factory`` specs are not paths and stay as they are.

    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> open(os.path.join(folder, "m.safetensors"), "w").close()
    >>> resolve_spec("m.safetensors", "model", [Path(folder)]) == os.path.join(os.path.realpath(folder), "m.safetensors")
    True
    >>> absolute_spec("digits", "data"), resolve_spec("pkg.models:build", "model", [Path(folder)])
    ('digits', 'pkg.models:build')
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

SpecKind = Literal["model", "data"]


def _split(spec: str, kind: SpecKind) -> tuple[str, Path] | None:
    """(prefix, path) of a spec that may name a file (prefix ``FORMAT:`` or ""); None for a registered dataset name."""
    if kind == "data":
        from advkit.datasets import dataset_factories

        names, formats = dataset_factories()
        if spec in names:
            return None
        fmt, sep, rest = spec.partition(":")
        if sep and fmt in formats:
            return f"{fmt}:", Path(rest).expanduser()
    return "", Path(spec).expanduser()


def absolute_spec(spec: str | None, kind: SpecKind) -> str | None:
    """``spec`` with the file it names spelled as an absolute path, so that the record means the same from anywhere.

    A spec that names no existing file (a dataset name, ``module:factory``, None for the built-in model) is
    returned unchanged. Symlinks are kept: the record says what the user named.
    """
    parts = None if spec is None else _split(spec, kind)
    if parts is None or not parts[1].exists():
        return spec
    return parts[0] + os.path.abspath(parts[1])


def resolve_spec(spec: str | None, kind: SpecKind, bases: Sequence[Path]) -> str | None:
    """A recorded spec whose relative path is made absolute against the first of ``bases`` where it exists.

    Absolute paths, non-paths and relative paths found under none of ``bases`` are returned unchanged (the
    loader then reports the missing file).
    """
    parts = None if spec is None else _split(spec, kind)
    if parts is None or parts[1].is_absolute():
        return spec
    for base in bases:
        candidate = base / parts[1]
        if candidate.exists():
            return parts[0] + str(candidate.resolve())
    return spec


RECORDED_SPECS: dict[str, SpecKind] = {"model": "model", "baseline": "model", "source_model": "model",
                                       "target_model": "model", "data": "data", "detector": "model",
                                       "adversarial": "model"}
"""Config keys of the commands that name a checkpoint or a dataset (or, as files like checkpoints, detect eval's
detector and adversarial report), and which kind each is."""


def absolute_specs(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the :data:`RECORDED_SPECS` keys it has spelled by :func:`absolute_spec` (a new dict)."""
    return {k: absolute_spec(v, RECORDED_SPECS[k]) if k in RECORDED_SPECS and isinstance(v, str) else v
            for k, v in config.items()}


def resolve_recorded(spec: str | None, kind: SpecKind, recorded_in: Path) -> str | None:
    """A spec read back from the file ``recorded_in``: a relative path (older advkit) is tried next to that file,
    then in the current directory (:func:`resolve_spec`)."""
    return resolve_spec(spec, kind, [recorded_in.resolve().parent, Path.cwd()])


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two path spellings name the same existing file (symlinks, ``..`` and hard links included)."""
    try:
        return os.path.samefile(Path(a).expanduser(), Path(b).expanduser())
    except OSError:
        return False


__all__ = ["RECORDED_SPECS", "absolute_spec", "absolute_specs", "resolve_recorded", "resolve_spec", "same_file"]
