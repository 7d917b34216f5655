"""Run-time plumbing shared by library functions: device choice and progress events (never printing).

    >>> resolve_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from advkit.errors import AdvkitError


Writer = Callable[[Path], object]
"""Fills the file it is given (a temporary sibling of the file being written)."""


def write_atomically(path: str | Path, write: Writer, *, replace: bool = True) -> Path:
    """Write the file ``path`` whole or not at all: ``write(tmp)`` fills a hidden sibling with the same suffix (so
    writers that go by the extension pick the right format) and this process's id (so two processes never share
    it), which then replaces ``path``. On failure the sibling is removed; a folder at ``path`` or a name too long for
    its file system is a one-line error before anything is written, and a file system that refuses the write (full,
    read-only) one after.

    With ``replace=False`` an existing ``path`` is never replaced, not even one that another process created while
    ``write`` ran: the sibling is linked to ``path`` only if there is none, else FileExistsError (and nothing changes).
    """
    return write_all_atomically([(path, write)], replace=replace)[0]


def write_all_atomically(files: Sequence[tuple[str | Path, Writer]], *, replace: bool = True) -> list[Path]:
    """Write several files as :func:`write_atomically` writes one, and all of them or none: every ``write(tmp)`` fills
    its sibling first, and only once all have succeeded do the siblings replace their paths. A failure part-way (a
    writer's error, a full disk, a name too long) removes every sibling and leaves every path as it was; only the
    renames at the end, which write no data, could still fail between two files.

    With ``replace=False``, a file found at one of the paths at the end (another process made it meanwhile) raises
    FileExistsError after removing the files this call had already published: still all or none, and never theirs."""
    staged: list[tuple[Path, Path]] = []
    published: list[Path] = []
    try:
        for path, write in files:
            path = _target(Path(path))
            staged.append((path, _sibling(path)))
            with _one_line(path):
                write(staged[-1][1])
                staged[-1][1].chmod(path.stat().st_mode & 0o7777 if path.exists() else _default_mode())  # safetensors: 0600
        for path, tmp in staged:
            with _one_line(path):
                try:
                    _publish(tmp, path, replace)
                except FileExistsError:
                    for mine in published:  # new files of ours only: with replace=False nothing was replaced
                        with contextlib.suppress(OSError):
                            mine.unlink()
                    raise
            published.append(path)
    finally:
        for _, tmp in staged:
            with contextlib.suppress(OSError):  # a second error here would hide the first, which says what went wrong
                tmp.unlink(missing_ok=True)  # gone already once it replaced its path
    return [path for path, _ in staged]


def _target(path: Path) -> Path:
    """``path``, with its folder made, once it is known to be a file name its file system takes, and not a folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        limit = os.pathconf(path.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    if len(os.fsencode(path.name)) > limit:  # found before any file is written, not when the file is renamed
        raise AdvkitError(f"could not write {path}: its name is longer than the {limit} bytes a file name can have there")
    if path.is_dir():
        raise AdvkitError(f"{path} is a folder, not a file")
    return path


def _sibling(path: Path) -> Path:
    """The hidden temporary file ``path`` is written as: same folder and suffix, this process's id in its name."""
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    if len(os.fsencode(tmp.name)) > 255:  # a legal name near the limit: its sibling's name must fit too
        digest = hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]
        tmp = path.with_name(f".{digest}.tmp-{os.getpid()}{path.suffix}")
    return tmp


@contextlib.contextmanager
def _one_line(path: Path) -> Iterator[None]:
    """A refused write of ``path`` as one AdvkitError; FileExistsError (``replace=False`` found a file) passes."""
    from safetensors import SafetensorError

    try:
        yield
    except FileExistsError:
        raise
    except (OSError, RuntimeError, SafetensorError) as exc:  # torch.save and safetensors wrap the OS's error
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[-1]
        raise AdvkitError(f"could not write {path}: {reason}") from exc


def _publish(tmp: Path, path: Path, replace: bool) -> None:
    """Put the written ``tmp`` at ``path``: replacing what is there, or (``replace=False``) only where nothing is."""
    if replace:
        tmp.replace(path)
        return
    try:
        os.link(tmp, path)  # atomic, and fails if path exists: no other process's file is ever replaced
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
    except OSError:  # a file system without hard links: the check and the rename are two steps there
        if path.exists():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        tmp.replace(path)


def _default_mode() -> int:
    """The mode ``open()`` gives a new file here: 0o666 less the umask (read, not changed, by setting it back)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def resolve_device(name: str | None = None) -> torch.device:
    """``None``/"auto" -> cuda when present, else cpu; otherwise the named device, checked to exist."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AdvkitError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AdvkitError(f"device {name} requested but CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise AdvkitError(f"device {name} requested but only {torch.cuda.device_count()} CUDA devices exist")
    return device


@dataclass(frozen=True)
class ProgressEvent:
    """``done`` of ``total`` items of ``task`` finished; ``stats`` are live numbers to show (loss, success...)."""

    task: str
    done: int
    total: int
    stats: dict[str, float | int | str] = field(default_factory=dict)


ProgressFn = Callable[[ProgressEvent], None]


def no_progress(_event: ProgressEvent) -> None:
    """The default progress sink: library code reports, the CLI decides whether to show."""
