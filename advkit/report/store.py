"""HDF5 report files: many runs in one file, written so that no crash can corrupt them.

Guarantees (see ``docs/report-format.md``):

- The ``.h5`` file is only ever replaced whole: a new version is built in ``<path>.tmp-<pid>``, fsynced and
  ``os.replace``d onto the path. A crash, Ctrl-C or SIGKILL leaves either the old or the new version.
- Per-sample results of a run in progress go to a journal, ``<path>.parts/<run_id>/chunk-<seq>.npz``, one
  atomically renamed file per :meth:`RunWriter.append`; :meth:`RunWriter.finish` merges them into
  ``/runs/<run_id>`` in one replace and only then deletes the journal.
- One writer at a time: a :class:`RunWriter` holds ``fcntl.flock`` on ``<path>.lock`` until it finishes or
  closes; the kernel releases it when the process dies.

    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> report = Report(f"{tmp.name}/report.h5")
    >>> with report.start_run("demo", kind="attack", config={"eps": 0.1}) as run:
    ...     run.append({"index": np.array([2, 0]), "label": np.array([1, 1]), "success": np.array([True, False])})
    ...     info = run.finish(summary={"success_rate": 0.5})
    >>> [(r.id, r.status, r.n_samples, r.summary) for r in report.runs()]
    [('demo', 'complete', 2, {'success_rate': 0.5})]
    >>> report.read("demo").samples["index"]
    array([0, 2])
    >>> tmp.cleanup()
"""

from __future__ import annotations

import difflib
import fcntl
import glob
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import weakref
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from advkit.errors import ReportError
from advkit.report import schema
from advkit.report.paths import RECORDED_SPECS, SpecKind, resolve_recorded, same_file

IMAGES = schema.IMAGES
_CHUNK_NAME = re.compile(r"chunk-(\d{6,})\.npz")
_TABLE_NAME = re.compile(r"table-(.+)\.npz")
_MISSING = object()  # a config key present on one side only
_ColumnSpecs = dict[str, tuple[np.dtype, tuple[int, ...]]]  # name -> (dtype, shape after the sample axis)


# ----------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RunInfo:
    """One line of ``Report.runs()``: what a run is and how far it got."""

    id: str
    kind: str
    status: str
    created: str
    finished: str
    n_samples: int  # for a running run: unique samples journaled so far
    summary: dict[str, Any]
    problem: str = ""  # why this advkit cannot read the run, a newer schema or damage (``runs(unreadable=True)`` only);
    # the fields above are then empty


@dataclass(frozen=True)
class RunData:
    """Everything stored for one run, as plain Python and NumPy values."""

    id: str
    kind: str
    status: str
    attrs: dict[str, Any]  # all run attributes; ``config`` and ``versions`` as their JSON strings
    config: dict[str, Any]
    summary: dict[str, Any]
    samples: dict[str, np.ndarray]  # rows sorted by ``index``
    tables: dict[str, dict[str, np.ndarray]]
    has_images: bool = False  # ``adv_images`` is stored (in ``samples`` only when read with ``images=True``)

    @property
    def n_samples(self) -> int:
        return len(self.samples["index"])

    @property
    def versions(self) -> dict[str, str]:
        return json.loads(self.attrs["versions"])

    def number(self, key: str) -> float | int | None:
        """Summary value ``key`` (None when absent), checked to be a number: a ReportError names the run otherwise."""
        return check_number(self.id, f"summary {key!r}", self.summary.get(key))

    def config_text(self, key: str, default: str | None = None) -> str | None:
        """Config value ``key`` (``default`` when absent), checked to be a string: a ReportError names the run
        otherwise."""
        return check_text(self.id, f"config {key!r}", self.config.get(key, default))


def is_number(value: Any, *, nan: bool = False) -> bool:
    """Whether ``value`` is an int or a float, not a bool; NaN only counts with ``nan=True``.

    >>> is_number(0.5), is_number(True), is_number("1"), is_number(float("nan")), is_number(float("nan"), nan=True)
    (True, False, False, False, True)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool) and (nan or bool(value == value))


def check_number(run_id: str, what: str, value: Any) -> float | int | None:
    """``value`` if it is an int or float (None passes: not recorded), else a ReportError naming the run and ``what``."""
    if value is None or is_number(value, nan=True):
        return value
    raise ReportError(f"run {run_id}: {what} is {_shown_value(value)}, expected a number")


def check_text(run_id: str, what: str, value: Any) -> str | None:
    """``value`` if it is a string (None passes: not recorded), else a ReportError naming the run and ``what``."""
    if value is None or isinstance(value, str):
        return value
    raise ReportError(f"run {run_id}: {what} is {_shown_value(value)}, expected a string")


def _shown_value(value: Any) -> str:
    shown = " ".join(repr(value).split())  # an array's repr spans lines
    return shown if len(shown) <= 60 else shown[:57] + "..."


# ------------------------------------------------------------------------------------ value conversion


def _ordered(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Columns in schema order (``index`` first), then the writer's own columns by name: stable for display."""
    standard = list(schema.SAMPLE_COLUMNS)
    rank = {name: i for i, name in enumerate(standard)}
    return {k: columns[k] for k in sorted(columns, key=lambda k: (rank.get(k, len(standard)), k))}


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as JSON-ready Python (numpy scalars/arrays, tuples, enums and paths converted)."""
    if isinstance(value, np.generic):
        return _jsonable(value.item(), where)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Enum):
        return _jsonable(value.value, where)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        items = value.tolist() if isinstance(value, np.ndarray) else value
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(items)]
    raise ReportError(f"config value {where!r} has type {type(value).__name__}, which cannot be stored as JSON")


def _config_json(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The config as stored (JSON text) and as it reads back (so comparisons see what the file will hold)."""
    if not isinstance(config, Mapping):
        raise ReportError(f"config must be a dict, got {type(config).__name__}")
    text = json.dumps(_jsonable(config, ""))
    return text, json.loads(text)


def _same_leaf(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return a == b or (math.isnan(a) and math.isnan(b))  # NaN == NaN for config purposes
    return type(a) is type(b) and a == b


def _first_difference(old: Any, new: Any, where: str = "") -> tuple[str, Any, Any] | None:
    """(dotted key, old value, new value) of the first difference, or None if equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*new, *(k for k in old if k not in new)]:
            sub = f"{where}.{key}" if where else key
            found = _first_difference(old.get(key, _MISSING), new.get(key, _MISSING), sub)
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            found = _first_difference(a, b, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if _same_leaf(old, new) else (where, old, new)


def missing_run(where: str | Path, run_id: str, known: Sequence[str]) -> ReportError:
    """The one-line error for a run name the report does not have, with close matches (typos) and every run."""
    close = difflib.get_close_matches(run_id, list(known), n=1, cutoff=0.75)  # run names share prefixes: the best only
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ReportError(f"{where} has no run {run_id!r}{hint}; runs: {', '.join(known) or 'none'}")


def config_difference(old: dict[str, Any], new: dict[str, Any], recorded_in: Path) -> tuple[str, Any, Any] | None:
    """(dotted key, old value, new value) of the first difference between the config of a run stored in the file
    ``recorded_in`` and ``new``, or None if it is the same run. A checkpoint or dataset path that older advkit
    recorded relative to where it ran is the same as ``new``'s when both name the same file."""

    def same_file_as_new(key: str, kind: SpecKind) -> bool:
        if not (isinstance(old.get(key), str) and isinstance(new.get(key), str)) or old[key] == new[key]:
            return False
        resolved = resolve_recorded(old[key], kind, recorded_in)
        return resolved == new[key] or same_file(str(resolved), new[key])

    renamed = {key: new[key] for key, kind in RECORDED_SPECS.items() if same_file_as_new(key, kind)}
    restated = {key: new[key] for key in RESTATED_KEYS if key in new and key not in old}
    return _first_difference({**old, **renamed, **restated}, new)


RUN_ADVICE = "--run NAME"
"""How the store's refusals tell a user to make a distinct run; commands whose runs another option names (detect eval's
``--run-prefix``) put theirs in its place (:func:`advkit.cli.common.run_advice`)."""

RESTATED_KEYS = ("params_by_attack",)
"""Keys newer advkit records that restate settings checked elsewhere (a worst-case run's attack settings are in the
configs of its attack runs): an older record without them is still the same run."""


def _show(value: Any) -> str:
    text = "<unset>" if value is _MISSING else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _attr_value(value: Any, where: str) -> Any:
    """``value`` as something h5py stores as an attribute; None means "skip it"."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return np.bool_(value)
    if isinstance(value, (int, np.integer)):
        if not -(2**63) <= int(value) < 2**63:
            raise ReportError(f"summary value {where!r} = {value} does not fit in int64")
        return np.int64(value)
    if isinstance(value, (float, np.floating)):
        return np.float64(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        arr = np.asarray(value)
        if arr.ndim == 1 and arr.dtype.kind in "biuf":
            return arr
    raise ReportError(f"summary value {where!r} has type {type(value).__name__}; "
                      "use a number, a string or a 1-D numeric array")


def _native(value: Any) -> Any:
    """An attribute as read by h5py -> plain Python (arrays stay arrays)."""
    if isinstance(value, np.generic):
        value = value.item()
    return value.decode() if isinstance(value, bytes) else value


def _to_numpy(value: Any, where: str) -> np.ndarray:
    """Arrays, lists and torch tensors (duck-typed, so torch is never imported here) -> ndarray."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ReportError(f"{where} is not an array: {_one_line(exc)}") from None
    if arr.ndim == 0:
        raise ReportError(f"{where} must be an array with one row per sample, got a scalar")
    return arr


# ------------------------------------------------------------------------------- environment capture


def _dist_version(name: str) -> str | None:
    # Package metadata rather than an import: importing torch/torchattacks just to record a version
    # would cost seconds per process and can fail for reasons unrelated to the report.
    module = sys.modules.get(name)
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("advkit", "torch", "numpy", "h5py", "torchattacks"):
        version = _dist_version(name)
        if version:
            out[name] = version
    return out


def _git(args: list[str], cwd: Path) -> str | None:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # never let a read-only query write .git/index
    try:
        done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, timeout=2, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode(errors="replace").strip() if done.returncode == 0 else None


def _git_sha() -> str:
    """HEAD of the git checkout holding the advkit sources, or "unknown"."""
    package = Path(__file__).resolve().parent.parent
    # Only trust HEAD if the package itself is tracked: an installed advkit inside some unrelated
    # repository (a venv in a user's project) must not report that project's commit.
    if _git(["ls-files", "--error-unmatch", "__init__.py"], package) is None:
        return "unknown"
    sha = _git(["rev-parse", "HEAD"], package)
    return sha if sha and re.fullmatch(r"[0-9a-f]{40,64}", sha) else "unknown"


# ------------------------------------------------------------------------------------ file primitives


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable across power loss; some filesystems refuse, which is harmless.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_npz_atomic(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as an ``.npz`` that is either whole or absent at ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            # Written member by member instead of np.savez(**arrays), whose own keyword arguments would
            # clash with columns named e.g. "file"; allow_pickle=False keeps object arrays out.
            with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name, arr in arrays.items():
                    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _unlock(fd: int, owner: int) -> None:
    # Unlock explicitly, so a forked child (e.g. a DataLoader worker) still holding a copy of the fd cannot
    # keep the report locked; but only in the locking process, since a child's unlock would drop the
    # parent's lock (flock locks belong to the shared open file description).
    if os.getpid() == owner:
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class _WriteLock:
    """Exclusive ``flock`` on ``<report>.lock``; released by :meth:`release`, garbage collection or death."""

    def __init__(self, path: Path, display: str, timeout: float) -> None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ReportError(f"cannot lock {display} for writing: {_one_line(exc)}") from None
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise ReportError(self._busy_message(display, owner)) from None
                time.sleep(0.05)
            except OSError as exc:
                os.close(fd)
                raise ReportError(f"cannot lock {display} for writing: {_one_line(exc)}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # only for the message other writers print
        self._release = weakref.finalize(self, _unlock, fd, os.getpid())

    @staticmethod
    def _busy_message(display: str, owner: str) -> str:
        if owner == str(os.getpid()):
            return (f"{display} is already being written by this process (pid {owner}); "
                    "finish or close the other RunWriter first")
        return f"{display} is being written by another advkit process (pid {owner})"

    def release(self) -> None:
        self._release()


# ------------------------------------------------------------------------------------------- journal


class _JournalChanged(ReportError):
    """A journal file vanished while being read (its run was just finished): readers read again."""


@dataclass(frozen=True)
class _Plan:
    """How journaled chunks merge: chunk ``chunk_of[k]`` row ``row_of[k]`` becomes sample row k."""

    chunks: list[Path]
    indices: np.ndarray  # (N,) sorted unique sample indices
    chunk_of: np.ndarray  # (N,)
    row_of: np.ndarray  # (N,)
    first: np.ndarray  # (N,) positions of the kept rows in all chunks concatenated
    specs: _ColumnSpecs  # columns of the first chunk
    table_rows: list[list[str]]  # per chunk: its "<table>/<column>" members, rows of per-sample tables


class _Journal:
    """``<report>.parts/<run_id>/``: chunks of per-sample rows and tables of one run in progress."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _names(self) -> list[str]:
        try:
            return [p.name for p in self.root.iterdir()]
        except FileNotFoundError:  # no journal yet, or a finishing writer just removed it
            return []

    def chunks(self) -> list[Path]:
        found = [(int(m.group(1)), self.root / name) for name in self._names() if (m := _CHUNK_NAME.fullmatch(name))]
        return [p for _, p in sorted(found)]

    def next_seq(self) -> int:
        chunks = self.chunks()
        return int(_CHUNK_NAME.fullmatch(chunks[-1].name).group(1)) + 1 if chunks else 0  # type: ignore[union-attr]

    def remove_temps(self) -> None:
        """Delete half-written files of a dead writer (their final names were never created)."""
        if self.root.is_dir():
            for path in self.root.glob(".*.tmp-*"):
                path.unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        try:
            self.root.parent.rmdir()  # the .parts directory, once no run is in progress
        except OSError:
            pass

    def write_chunk(self, seq: int, columns: Mapping[str, np.ndarray]) -> None:
        self._write(f"chunk-{seq:06d}.npz", columns)

    def write_table(self, name: str, columns: Mapping[str, np.ndarray]) -> None:
        self._write(f"table-{name}.npz", columns)

    def _write(self, name: str, columns: Mapping[str, np.ndarray]) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            _write_npz_atomic(self.root / name, columns)
        except OSError as exc:  # e.g. a full disk: the journal keeps every chunk written before
            raise ReportError(f"could not write journal file {self.root / name}: {_one_line(exc)}") from None

    def tables(self) -> dict[str, dict[str, np.ndarray]]:
        out = {}
        for name in sorted(self._names()):
            if match := _TABLE_NAME.fullmatch(name):
                out[match.group(1)] = self.load(self.root / name, None)
        return out

    @staticmethod
    def load(path: Path, names: list[str] | None) -> dict[str, np.ndarray]:
        """Columns ``names`` (all if None) of one journal file."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in (npz.files if names is None else names)}
        except FileNotFoundError:
            raise _JournalChanged(f"journal file {path} vanished while being read") from None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ReportError(f"journal file {path} is damaged: {_one_line(exc)}") from None

    @staticmethod
    def _sample_tables(plan: _Plan, loaded: list[dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
        """Per-sample tables of all chunks (``loaded[c]`` holds chunk c's table rows): a row is kept when its
        ``sample`` is kept from the same chunk (as samples are), and rows are stably sorted by sample, so resuming
        or sharding never changes the table."""
        parts: dict[str, list[dict[str, np.ndarray]]] = {}
        for c, members in enumerate(plan.table_rows):
            rows: dict[str, dict[str, np.ndarray]] = {}
            for key in members:
                table, _, column = key.partition(schema.TABLE_SEP)
                rows.setdefault(table, {})[column] = loaded[c][key]
            kept = plan.indices[plan.chunk_of == c]
            for name, table in rows.items():
                mine = np.isin(table["sample"], kept)
                parts.setdefault(name, []).append({k: v[mine] for k, v in table.items()})
        out = {}
        for name, chunks in parts.items():
            merged = {k: np.concatenate([chunk[k] for chunk in chunks]) for k in chunks[0]}
            order = np.argsort(merged["sample"], kind="stable")
            out[name] = {k: v[order] for k, v in merged.items()}
        return out

    def plan(self, *, repair: bool) -> _Plan:
        """Read every chunk's ``index`` and decide which row wins for each sample (the first one journaled).

        Chunks are renamed into place whole, so an unreadable one was damaged from outside (e.g. by a power
        loss on a filesystem that reorders writes); with ``repair`` it is deleted, so its samples count as
        not done and get recomputed, otherwise it is skipped.
        """
        chunks, parts, table_rows, specs = [], [], [], {}
        for path in self.chunks():
            try:
                with np.load(path, allow_pickle=False) as npz:
                    names = [k for k in npz.files if schema.TABLE_SEP not in k]  # table rows may come with any chunk
                    if not specs:
                        specs = {k: (a.dtype, a.shape[1:]) for k in names for a in [npz[k]]}
                    elif set(names) != set(specs):
                        raise ReportError(f"journal chunk {path} has columns {sorted(names)}, "
                                          f"earlier chunks have {sorted(specs)}")
                    parts.append(np.asarray(npz["index"], np.int64))
                    table_rows.append([k for k in npz.files if schema.TABLE_SEP in k])
            except FileNotFoundError:
                raise _JournalChanged(f"journal file {path} vanished while being read") from None
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                if repair:
                    path.unlink(missing_ok=True)
                continue
            chunks.append(path)
        all_index = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        chunk_of = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
        row_of = np.concatenate([np.arange(len(p)) for p in parts]) if parts else np.zeros(0, np.int64)
        indices, first = np.unique(all_index, return_index=True)  # first occurrence of each sample wins
        return _Plan(chunks, indices, chunk_of[first], row_of[first], first, specs, table_rows)

    def merged(self, plan: _Plan, names: list[str]) -> dict[str, np.ndarray]:
        """Columns ``names`` of all chunks, deduplicated and sorted by index, in memory (just ``index``, empty,
        before the first chunk)."""
        return self._merge(plan, names, [self.load(path, names) for path in plan.chunks])

    def contents(self, plan: _Plan, names: list[str]) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
        """:meth:`merged` columns ``names``, and all tables: whole ones (:meth:`RunWriter.add_table`) and per-sample
        ones (``append(..., tables=...)``); each chunk is read once for both."""
        loaded = [self.load(path, [*names, *rows]) for path, rows in zip(plan.chunks, plan.table_rows)]
        return self._merge(plan, names, loaded), {**self.tables(), **self._sample_tables(plan, loaded)}

    @staticmethod
    def _merge(plan: _Plan, names: list[str], loaded: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        if not plan.specs:
            return {"index": np.zeros(0, np.int64)}
        out = {}
        for name in names:
            dtype, shape = plan.specs[name]
            parts = [chunk[name] for chunk in loaded]
            stacked = np.concatenate(parts) if parts else np.zeros((0, *shape), dtype)
            out[name] = stacked[plan.first]
        return _ordered(out)


# ------------------------------------------------------------------------------------ HDF5 layout


def _write_attrs(target: h5py.AttributeManager, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        converted = _attr_value(value, key)
        if converted is not None:
            target[key] = converted


def _write_column(group: h5py.Group, name: str, values: np.ndarray) -> None:
    if values.dtype.kind == "U":
        group.create_dataset(name, data=values.astype(object), dtype=h5py.string_dtype())
    else:
        group.create_dataset(name, data=values)


def _create_images(group: h5py.Group, n: int, dtype: np.dtype, shape: tuple[int, ...]) -> h5py.Dataset:
    # One image per chunk so reading image k decompresses only image k; maxshape=None on the sample
    # axis because HDF5 rejects a chunk larger than a fixed dimension (n may be 0).
    return group.create_dataset(IMAGES, shape=(n, *shape), maxshape=(None, *shape), dtype=dtype,
                                chunks=(1, *shape), compression="gzip", compression_opts=4)


def _write_samples(group: h5py.Group, journal: _Journal, plan: _Plan, flat: Mapping[str, np.ndarray]) -> None:
    """Merge the journal into ``group``: ``flat`` (its merged 1-D columns) as is, N-D ones streamed chunk by chunk."""
    for name, values in flat.items():
        _write_column(group, name, values)
    n = len(plan.indices)
    for name, (dtype, shape) in plan.specs.items():
        if not shape:
            continue
        dset = (_create_images(group, n, dtype, shape) if name == IMAGES
                else group.create_dataset(name, shape=(n, *shape), dtype=dtype))
        for c, path in enumerate(plan.chunks):
            dest = np.flatnonzero(plan.chunk_of == c)  # increasing, as h5py needs for a point selection
            if dest.size:
                dset[dest] = journal.load(path, [name])[name][plan.row_of[dest]]


def _write_tables(group: h5py.Group, tables: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    for name, columns in tables.items():
        table = group.create_group(name)
        for column, values in columns.items():
            _write_column(table, column, values)


def _check_root(f: h5py.File, display: str) -> None:
    fmt = _native(f.attrs.get("format"))
    if not isinstance(fmt, str) or fmt != schema.FORMAT:  # an array-valued attribute must not be compared elementwise
        raise ReportError(f"{display} is an HDF5 file but not an advkit report (no format={schema.FORMAT!r} "
                          "attribute at /)")
    version = _native(f.attrs.get("schema_version"))
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise ReportError(f"{display}: attribute 'schema_version' at / is {type(version).__name__}, expected int")
    if version is not None:
        _check_schema_version(version, display)
    if not isinstance(f.get("runs"), h5py.Group):
        raise ReportError(f"{display}: /runs is missing or not a group")


def _schema_problem(version: Any) -> str:
    """What a listing says of a run whose ``schema_version`` this advkit does not know, or "" for one it reads
    (a version that is no int at all is left to the attribute checks)."""
    if not isinstance(version, int) or isinstance(version, bool) or 1 <= version <= schema.SCHEMA_VERSION:
        return ""
    if version > schema.SCHEMA_VERSION:
        return f"written by a newer advkit (schema {version}): upgrade advkit to read it"
    return f"schema {version}, which no advkit writes"


def _check_schema_version(version: int, what: str) -> None:
    """Refuse a file or run (``what`` names it) written with a report schema this advkit does not know."""
    if version > schema.SCHEMA_VERSION:
        raise ReportError(f"{what} uses report schema {version}; this advkit reads up to "
                          f"{schema.SCHEMA_VERSION}: upgrade advkit")
    if version < 1:
        raise ReportError(f"{what} uses report schema {version}, which no advkit writes (versions start at 1)")


def _run_attrs(group: h5py.Group, display: str) -> dict[str, Any]:
    """All attributes of a run group, checked against ``schema.RUN_ATTRS``."""
    attrs = {key: _native(value) for key, value in group.attrs.items()}
    if _schema_problem(attrs.get("schema_version")):  # first: another schema may lay out its other attributes otherwise
        _check_schema_version(attrs["schema_version"], f"{display}: run {group.name.rsplit('/', 1)[-1]!r}")
    for spec in schema.RUN_ATTRS:
        value = attrs.get(spec.name, _MISSING)
        if value is _MISSING:
            raise ReportError(f"{display}: {group.name} has no attribute {spec.name!r}")
        wanted = int if spec.type == "int" else str
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise ReportError(f"{display}: attribute {spec.name!r} of {group.name} is {type(value).__name__}, "
                              f"expected {spec.type}")
        if spec.type == "json":
            try:
                if not isinstance(json.loads(value), dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                raise ReportError(f"{display}: attribute {spec.name!r} of {group.name} is not a JSON object: "
                                  f"{_one_line(exc)}") from None
    if attrs["status"] not in schema.STATUSES:
        raise ReportError(f"{display}: {group.name} has status {attrs['status']!r}, expected one of "
                          f"{', '.join(schema.STATUSES)}")
    _check_schema_version(attrs["schema_version"], f"{display}: run {group.name.rsplit('/', 1)[-1]!r}")
    return attrs


def _subgroup(run: h5py.Group, name: str, display: str) -> h5py.Group:
    group = run.get(name)
    if not isinstance(group, h5py.Group):
        raise ReportError(f"{display}: {run.name}/{name} is missing or not a group")
    return group


def _columns(group: h5py.Group, display: str, *, need_index: bool) -> dict[str, h5py.Dataset]:
    """The equal-length datasets of a ``samples`` or table group, checked."""
    out: dict[str, h5py.Dataset] = {}
    for name, item in group.items():
        if not isinstance(item, h5py.Dataset) or item.ndim == 0:
            raise ReportError(f"{display}: {item.name} is not a dataset with one row per sample")
        problem = schema.check_stored_dtype(name, item.dtype, item.ndim) if need_index else None
        if problem:
            raise ReportError(f"{display}: {item.name} {problem}")
        out[name] = item
    if need_index and "index" not in out:
        raise ReportError(f"{display}: {group.name}/index is missing")
    lengths = {item.shape[0] for item in out.values()}
    if len(lengths) > 1:
        raise ReportError(f"{display}: datasets in {group.name} have different lengths "
                          f"({', '.join(f'{k}: {v.shape[0]}' for k, v in out.items())})")
    return out


def _read_dataset(item: h5py.Dataset) -> np.ndarray:
    if h5py.check_string_dtype(item.dtype) is not None:
        return np.array(item.asstr()[()], dtype=str)
    return item[()]


def _read_samples(run: h5py.Group, display: str, images: bool) -> dict[str, np.ndarray]:
    columns = _columns(_subgroup(run, "samples", display), display, need_index=True)
    out = _ordered({name: _read_dataset(item) for name, item in columns.items() if images or name != IMAGES})
    index = out["index"]
    if index.size > 1 and not np.all(np.diff(index) > 0):
        raise ReportError(f"{display}: {run.name}/samples/index is not sorted and unique")
    return out


def _read_tables(run: h5py.Group, display: str) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for name, group in _subgroup(run, "tables", display).items():
        if not isinstance(group, h5py.Group):
            raise ReportError(f"{display}: {group.name} is not a group of columns")
        out[name] = {k: _read_dataset(v) for k, v in _columns(group, display, need_index=False).items()}
        problem = schema.check_table(name, out[name])
        if problem:
            raise ReportError(f"{display}: {group.name} {problem}")
    return out


def _summary(run: h5py.Group, display: str) -> dict[str, Any]:
    return {key: _native(value) for key, value in _subgroup(run, "summary", display).attrs.items()}


# ------------------------------------------------------------------------------------- input checks


def _prepare_columns(columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Appended columns as arrays of their storage dtype, all the same length, with a valid ``index``."""
    if not isinstance(columns, Mapping) or "index" not in columns:
        raise ReportError("append() needs a dict of columns including 'index' (the dataset index of each sample)")
    arrays = {}
    for name, value in columns.items():
        schema.check_name("column name", name, schema.COLUMN_PATTERN)
        arrays[name] = schema.coerce_column(name, _to_numpy(value, f"column {name!r}"))
    n = len(arrays["index"])
    for name, arr in arrays.items():
        if len(arr) != n:
            raise ReportError(f"column {name!r} has {len(arr)} rows but 'index' has {n}")
    if n and arrays["index"].min() < 0:
        raise ReportError("column 'index' has negative values; it holds dataset indices")
    return arrays


def _prepare_table(name: str, columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
    schema.check_name("table name", name)
    if not isinstance(columns, Mapping) or not columns:
        raise ReportError(f"table {name!r} needs a non-empty dict of columns")
    arrays = {}
    for column, value in columns.items():
        schema.check_name("column name", column, schema.COLUMN_PATTERN)
        arr = _to_numpy(value, f"column {column!r} of table {name!r}")
        if arr.ndim != 1 or arr.dtype.kind not in schema.ALLOWED_KINDS:
            raise ReportError(f"column {column!r} of table {name!r} must be a 1-D bool/int/float/str array, "
                              f"got {arr.dtype} of shape {arr.shape}")
        arrays[column] = arr
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) > 1:
        raise ReportError(f"columns of table {name!r} have different lengths: "
                          f"{', '.join(f'{k}: {len(v)}' for k, v in arrays.items())}")
    return arrays


def _split_tables(columns: Any, tables: Mapping[str, Mapping[str, Any]] | None) -> tuple[Any, dict[str, Any]]:
    """``columns`` without its ``"<table>/<column>"`` keys, and the per-sample tables: those keys' and ``tables``."""
    grouped: dict[str, Any] = {}
    if isinstance(columns, Mapping):
        joined = [k for k in columns if isinstance(k, str) and schema.TABLE_SEP in k]
        for key in joined:
            table, _, column = key.partition(schema.TABLE_SEP)
            grouped.setdefault(table, {})[column] = columns[key]
        columns = {k: v for k, v in columns.items() if k not in joined} if joined else columns
    for name, table in (tables or {}).items():
        if name in grouped:
            raise ReportError(f"table {name!r} is given both in tables= and as "
                              f"'{name}{schema.TABLE_SEP}<column>' columns")
        grouped[name] = table
    return columns, grouped


def _prepare_sample_table(name: str, columns: Mapping[str, Any], index: np.ndarray) -> dict[str, np.ndarray]:
    """A per-sample table's rows for one chunk: a table whose integer ``sample`` column names samples of the chunk."""
    arrays = _prepare_table(name, columns)
    sample = arrays.get("sample")
    if sample is None or sample.dtype.kind not in "iu":
        raise ReportError(f"per-sample table {name!r} needs an integer column 'sample' (the dataset index of each row)")
    if not np.isin(sample, index).all():
        raise ReportError(f"per-sample table {name!r} has rows for samples that are not in this chunk")
    return arrays


def _match_specs(arrays: dict[str, np.ndarray], specs: _ColumnSpecs, run_id: str) -> dict[str, np.ndarray]:
    """Make a chunk's columns agree with the run's earlier chunks (same names, dtypes, per-sample shapes)."""
    missing, extra = sorted(set(specs) - set(arrays)), sorted(set(arrays) - set(specs))
    if missing or extra:
        raise ReportError(f"run {run_id!r}: append() columns differ from earlier chunks "
                          f"(missing: {', '.join(missing) or '-'}; new: {', '.join(extra) or '-'})")
    out = {}
    for name, arr in arrays.items():
        dtype, shape = specs[name]
        if arr.shape[1:] != shape:
            raise ReportError(f"run {run_id!r}: column {name!r} has per-sample shape {arr.shape[1:]}, "
                              f"earlier chunks have {shape}")
        if arr.dtype != dtype and not (arr.dtype.kind == dtype.kind == "U"):
            if name == IMAGES and arr.dtype.kind != dtype.kind:  # a cast would keep 0-255 values in a [0, 1] column
                raise ReportError(f"run {run_id!r}: {name} are {arr.dtype} here but {dtype} in earlier chunks; append "
                                  "images of one kind (uint8 in [0, 255] or float in [0, 1])")
            if not np.can_cast(arr.dtype, dtype, "same_kind"):
                raise ReportError(f"run {run_id!r}: column {name!r} is {arr.dtype} here but {dtype} in earlier chunks")
            arr = arr.astype(dtype)
        out[name] = arr
    return out


# ------------------------------------------------------------------------------------------ writer


class RunWriter:
    """Writes one run: :meth:`append` journals rows, :meth:`finish` merges them into the report.

    Get one from :meth:`Report.start_run`. Holds the report's write lock until :meth:`finish` or
    :meth:`close`. As a context manager it closes on exit but never finishes by itself, so an exception
    inside the block leaves the run ``running`` and resumable; call :meth:`finish` inside the block.
    """

    def __init__(self, report: Report, lock: _WriteLock, run_id: str, header: dict[str, Any], *,
                 resumed: bool, started: str = "") -> None:
        self._report = report
        self._lock = lock
        self._header = header
        self._started = started  # what start_run wrote: "" (nothing), "run" (the header) or "file" (the report)
        self._journal = report._journal(run_id)
        self.run_id = run_id
        self.resumed = resumed
        self._journal.remove_temps()
        plan = self._journal.plan(repair=True)
        self._specs: _ColumnSpecs = plan.specs
        self._done_parts = [plan.indices]
        self._seq = self._journal.next_seq()
        self._state = "open"

    @property
    def kind(self) -> str:
        return self._header["kind"]

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self._header["config"])

    @property
    def seed(self) -> int:
        return self._header["seed"]

    @property
    def done_indices(self) -> np.ndarray:
        """Sorted unique sample indices journaled so far (including by an earlier, interrupted process)."""
        if len(self._done_parts) > 1:
            self._done_parts = [np.unique(np.concatenate(self._done_parts))]
        return self._done_parts[0].copy()

    def _check_open(self, action: str) -> None:
        if self._state != "open":
            raise ReportError(f"cannot {action}: run {self.run_id!r} is already {self._state}")

    def append(self, columns: Mapping[str, Any], *, tables: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Journal one chunk of per-sample rows (equal-length columns, ``index`` required).

        Every chunk of a run must have the same columns with the same dtypes. A sample index that was already
        journaled is kept from its first chunk. The report file itself is not touched.

        ``tables`` adds rows to per-sample tables (e.g. ``moves``, several rows per sample), each with a ``sample``
        column naming samples of this chunk; a ``"<table>/<column>"`` key of ``columns`` does the same. They are
        journaled in the same file, so rows and samples are kept or dropped together; :meth:`finish` writes each
        table sorted by ``sample``. Chunks may leave them out.
        """
        self._check_open("append")
        columns, tables = _split_tables(columns, tables)
        arrays = _prepare_columns(columns)
        rows = {f"{name}{schema.TABLE_SEP}{column}": values for name, table in tables.items()
                for column, values in _prepare_sample_table(name, table, arrays["index"]).items()}
        if not len(arrays["index"]):
            return
        if self._specs:
            arrays = _match_specs(arrays, self._specs, self.run_id)
        else:
            self._specs = {k: (a.dtype, a.shape[1:]) for k, a in arrays.items()}
        self._journal.write_chunk(self._seq, {**arrays, **rows})
        self._seq += 1
        self._done_parts.append(arrays["index"].astype(np.int64))

    def samples(self, *, images: bool = False) -> dict[str, np.ndarray]:
        """All rows journaled so far, deduplicated and sorted by index (e.g. to compute the summary)."""
        self._check_open("read the journal of")
        plan = self._journal.plan(repair=False)
        return self._journal.merged(plan, [k for k in plan.specs if images or k != IMAGES])

    def add_table(self, name: str, columns: Mapping[str, Any]) -> None:
        """Journal a small table of equal-length 1-D columns (e.g. training ``history``); the last write wins."""
        self._check_open("add a table to")
        self._journal.write_table(name, _prepare_table(name, columns))

    def finish(self, summary: Mapping[str, Any] | None = None) -> RunInfo:
        """Merge the journal into ``/runs/<id>`` marked ``complete`` (one atomic replace), then drop the journal.

        ``summary`` values must be numbers, strings or 1-D numeric arrays; None values are skipped.
        """
        self._check_open("finish")
        summary = dict(summary or {})
        if not all(isinstance(k, str) and k for k in summary):
            raise ReportError("summary keys must be non-empty strings")
        for key, value in summary.items():
            _attr_value(value, key)  # validate everything before writing anything
        plan = self._journal.plan(repair=False)
        flat, tables = self._journal.contents(plan, [k for k, (_, shape) in plan.specs.items() if not shape])
        header = {**self._header, "status": "complete", "finished": _now()}

        def build(run: h5py.Group) -> None:
            _write_attrs(run.attrs, header)
            _write_samples(run.create_group("samples"), self._journal, plan, flat)
            _write_attrs(run.create_group("summary", track_order=True).attrs, summary)  # read back in the order written
            _write_tables(run.create_group("tables"), tables)

        self._report._rewrite(self.run_id, build)
        self._journal.remove()
        self._release("finished")
        stored = {k: _native(_attr_value(v, k)) for k, v in summary.items() if v is not None}
        return RunInfo(self.run_id, self.kind, "complete", header["created"], header["finished"],
                       len(plan.indices), stored)

    def close(self) -> None:
        """Stop writing without finishing: the run stays ``running`` and can be resumed. Idempotent."""
        if self._state == "open":
            self._release("closed")

    def abandon(self) -> None:
        """Give up a run that failed before it produced anything worth resuming: its journal and the header
        ``start_run`` wrote are removed (the report file too, if ``start_run`` created it), so a corrected command
        starts afresh instead of meeting a half-made run with another config. A resumed run is only closed: its
        journaled samples stay. Idempotent."""
        if self._state != "open":
            return
        try:
            if not self.resumed:
                self._journal.remove()
                if self._started == "file":
                    self._report._real.unlink(missing_ok=True)
                    _fsync_dir(self._report._real.parent)
                elif self._started == "run":
                    self._report._rewrite(self.run_id, None)
        finally:
            self._release("abandoned")

    def _release(self, state: str) -> None:
        self._state = state
        self._lock.release()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# ------------------------------------------------------------------------------------------ report


class Report:
    """An advkit report file: read its runs, or start writing one.

    Args:
        path: the ``.h5`` file (created on the first :meth:`start_run`).
        lock_timeout: seconds a writer waits for another writer to finish before giving up.
    """

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        self._display = str(path)
        if self.path.is_dir():  # before any lock file is made beside it
            raise ReportError(f"{self._display or '.'} is a folder, not a report file")

    @property
    def _real(self) -> Path:
        # Write beside the real file, so a symlinked report stays a symlink to an updated file.
        return Path(os.path.realpath(self.path))

    def _sibling(self, suffix: str) -> Path:
        return self._real.with_name(self._real.name + suffix)

    def _journal(self, run_id: str) -> _Journal:
        return _Journal(self._sibling(".parts") / run_id)

    def exists(self) -> bool:
        return self._real.is_file()

    # ---------------------------------------------------------------- reading

    @contextmanager
    def _open(self, *, translate: bool = True) -> Iterator[h5py.File]:
        """The report opened read-only and checked to be an advkit report.

        With ``translate``, HDF5 errors inside the block become ReportError (callers that also write another
        file handle OSError themselves, so a full disk is not blamed on the report being unreadable).
        """
        if not self._real.exists():
            raise ReportError(f"{self._display} does not exist")
        try:
            f = h5py.File(self._real, "r")
        except OSError as exc:
            raise ReportError(f"{self._display} is not a readable HDF5 file: {_one_line(exc)}") from None
        with f:
            try:
                _check_root(f, self._display)
            except (OSError, RuntimeError) as exc:
                raise ReportError(f"{self._display} is not a readable HDF5 file: {_one_line(exc)}") from None
            if not translate:
                yield f
                return
            try:
                yield f
            except (OSError, RuntimeError) as exc:  # h5py raises these for damaged objects inside a file
                raise ReportError(f"{self._display} is not a readable HDF5 file: {_one_line(exc)}") from None

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._real)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino, st.st_mtime_ns

    def _retry(self, read: Callable[[], Any]) -> Any:
        """Run ``read`` until no writer replaced the file or dropped a journal under it (readers take no lock)."""
        for _ in range(20):
            before = self._stamp()
            try:
                result = read()
            except _JournalChanged:
                continue
            if self._stamp() == before:
                return result
        return read()

    def _run_group(self, f: h5py.File, run_id: str) -> h5py.Group:
        runs = f["runs"]
        if run_id not in runs:
            raise missing_run(self._display, run_id, sorted(runs))
        group = runs[run_id]
        if not isinstance(group, h5py.Group):
            raise ReportError(f"{self._display}: {group.name} is not a group")
        return group

    def _info(self, f: h5py.File, run_id: str, *, unreadable: bool = False) -> RunInfo:
        if not unreadable:
            return self._checked_info(f, run_id)
        try:
            run = self._run_group(f, run_id)
            problem = _schema_problem(_native(run.attrs.get("schema_version")))
            if problem:  # its layout may differ from the one this advkit knows: nothing else is read
                return RunInfo(run_id, "", "", "", "", 0, {}, problem)
            return self._checked_info(f, run_id)
        except _JournalChanged:  # not damage: the reader reads again
            raise
        except ReportError as exc:  # the message names the report, which the listing already does
            return RunInfo(run_id, "", "", "", "", 0, {}, f"damaged: {str(exc).removeprefix(f'{self._display}: ')}")

    def _checked_info(self, f: h5py.File, run_id: str) -> RunInfo:
        run = self._run_group(f, run_id)
        attrs = _run_attrs(run, self._display)
        if attrs["status"] == "complete":
            n = len(_columns(_subgroup(run, "samples", self._display), self._display, need_index=True)["index"])
        else:
            n = len(self._journal(run_id).plan(repair=False).indices)
        return RunInfo(run_id, attrs["kind"], attrs["status"], attrs["created"], attrs["finished"], n,
                       _summary(run, self._display))

    def runs(self, *, unreadable: bool = False) -> list[RunInfo]:
        """All runs, in the order their ids were first added (a run replaced with --overwrite keeps its place); running
        runs count their journaled samples.

        A run written with a report schema this advkit does not know, or damaged, is a ReportError, unless
        ``unreadable``: then it is listed with only its id and ``problem`` (reading it by name still refuses), so one
        such run does not hide the others.
        """

        def read() -> list[RunInfo]:
            with self._open() as f:
                return [self._info(f, run_id, unreadable=unreadable) for run_id in f["runs"]]

        return self._retry(read)

    def read(self, run_id: str, *, images: bool = False) -> RunData:
        """One run's attributes, config, summary, samples (sorted by index) and tables.

        A running run shows the samples and tables journaled so far. ``adv_images`` is only loaded with
        ``images=True``.
        """
        return self._retry(lambda: self._read(run_id, images))

    def _read(self, run_id: str, images: bool) -> RunData:
        with self._open() as f:
            run = self._run_group(f, run_id)
            attrs = _run_attrs(run, self._display)
            summary = _summary(run, self._display)
            if attrs["status"] == "complete":
                samples, tables = _read_samples(run, self._display, images), _read_tables(run, self._display)
                has_images = IMAGES in run["samples"]
            else:
                journal = self._journal(run_id)
                plan = journal.plan(repair=False)
                samples, tables = journal.contents(plan, [k for k in plan.specs if images or k != IMAGES])
                has_images = IMAGES in plan.specs
        return RunData(run_id, attrs["kind"], attrs["status"], attrs, json.loads(attrs["config"]), summary,
                       samples, tables, has_images)

    # ---------------------------------------------------------------- writing

    def _rewrite(self, run_id: str, build: Callable[[h5py.Group], None] | None) -> None:
        """Replace the report by a copy whose ``/runs/<run_id>`` is made by ``build`` (the rest copied as is);
        ``build=None`` leaves the run out.

        Objects are copied with HDF5's object copy rather than byte-copying the file, so space of a replaced
        run is not carried over. The copy is fsynced before ``os.replace``, so the path always holds a whole
        file, old or new.
        """
        real, tmp = self._real, self._sibling(f".tmp-{os.getpid()}")
        self._check_space(run_id)
        try:
            with h5py.File(tmp, "w") as dst:
                # track_order: runs list in the order they were started, whatever their names.
                runs = dst.create_group("runs", track_order=True)
                if real.exists():
                    with self._open(translate=False) as src:
                        self._copy_except(src, dst, run_id, build)
                else:
                    dst.attrs["format"] = schema.FORMAT
                if run_id not in runs and build is not None:
                    build(runs.create_group(run_id))
                dst.attrs["schema_version"] = np.int64(schema.SCHEMA_VERSION)
            if real.exists():
                shutil.copymode(real, tmp)
            _fsync_file(tmp)
            os.replace(tmp, real)
            _fsync_dir(real.parent)
        except (OSError, RuntimeError) as exc:  # h5py reports a failed write on close as a RuntimeError
            raise ReportError(f"could not write {self._display}: {_one_line(exc)}") from None
        finally:
            tmp.unlink(missing_ok=True)

    def _check_space(self, run_id: str) -> None:
        """Refuse a rewrite the disk cannot hold (the report plus the run's journal, with a margin): HDF5 fails on a
        full disk while closing the copy, where h5py can crash the process instead of raising."""
        root = self._journal(run_id).root
        journal = sum(p.stat().st_size for p in root.iterdir()) if root.is_dir() else 0
        needed = int(1.25 * ((self._real.stat().st_size if self._real.exists() else 0) + journal)) + 2**16
        free = shutil.disk_usage(self._real.parent if self._real.parent.exists() else Path.cwd()).free
        if free < needed:
            raise ReportError(f"could not write {self._display}: {free / 2**20:.1f} MB free on its disk, about "
                              f"{needed / 2**20:.1f} MB needed to rewrite it; free some space and re-run the same command")

    @staticmethod
    def _copy_except(src: h5py.File, dst: h5py.File, run_id: str, build: Callable[[h5py.Group], None] | None) -> None:
        """Copy everything from ``src`` but ``/runs/<run_id>``, which ``build`` makes in its old position (or drops)."""
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name in src:
            if name != "runs":
                src.copy(src[name], dst, name)
        runs = dst["runs"]
        for name in src["runs"]:
            if name == run_id:
                if build is not None:
                    build(runs.create_group(run_id))
            else:
                src.copy(src["runs"][name], runs, name)

    def _sweep(self, statuses: Mapping[str, str]) -> None:
        """Remove leftovers of dead writers. Safe because the caller holds the write lock: no one else writes."""
        for stray in self._real.parent.glob(glob.escape(self._real.name) + ".tmp-*"):
            stray.unlink(missing_ok=True)
        parts = self._sibling(".parts")
        if not parts.is_dir():
            return
        for root in parts.iterdir():
            if root.is_dir() and statuses.get(root.name) != "running":
                # Journal of a run merged just before a crash, of an interrupted --overwrite of a complete
                # run (which restarts from scratch anyway) or of a run no longer in the file.
                shutil.rmtree(root, ignore_errors=True)
        try:
            parts.rmdir()
        except OSError:
            pass

    def start_run(self, run_id: str, *, kind: str, config: Mapping[str, Any], seed: int = 0,
                  command: str = "", overwrite: bool = False) -> RunWriter:
        """Start a new run, or resume the interrupted run ``run_id`` if its kind, config and seed match.

        A resumed writer's ``done_indices`` lists the samples already journaled; skip them. A complete run is
        only replaced with ``overwrite=True``, and only when the new run finishes.
        """
        schema.check_name("run id", run_id)
        schema.check_name("kind", kind)
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, (bool, np.bool_)):
            raise ReportError(f"seed must be an integer, got {seed!r}")
        if not isinstance(command, str):
            raise ReportError(f"command must be a str, got {type(command).__name__}")
        config_text, config_data = _config_json(config)
        try:
            self._real.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReportError(f"cannot create the directory of {self._display}: {_one_line(exc)}") from None
        lock = _WriteLock(self._sibling(".lock"), self._display, self.lock_timeout)
        try:
            return self._start(lock, run_id, kind, config_text, config_data, int(seed), command, overwrite)
        except BaseException:
            lock.release()
            raise

    def _existing(self, run_id: str) -> tuple[dict[str, str], dict[str, Any] | None]:
        """(status of every run, checked attributes of ``run_id`` or None)."""
        if not self._real.exists():
            return {}, None
        with self._open() as f:
            runs = f["runs"]
            statuses = {name: str(_native(runs[name].attrs.get("status", ""))) for name in runs}
            attrs = _run_attrs(self._run_group(f, run_id), self._display) if run_id in runs else None
        return statuses, attrs

    def _conflict(self, run_id: str, old: dict[str, Any], kind: str, config: dict[str, Any],
                  seed: int) -> str | None:
        """Why the stored run is not this run (first difference), or None if it is the same run."""
        hint = f"; pass {RUN_ADVICE} or --overwrite"
        if old["kind"] != kind:
            return f"{self._display} already has run {run_id!r} of kind {old['kind']!r}, not {kind!r}{hint}"
        diff = config_difference(json.loads(old["config"]), config, self._real)
        if diff is None and old["seed"] != seed:
            diff = ("seed", old["seed"], seed)
        if diff is None:
            return None
        key, before, now = diff
        return (f"{self._display} already has run {run_id!r} with a different config "
                f"({key}: {_show(before)} vs {_show(now)} now){hint}")

    def check_start(self, run_id: str, *, kind: str, config: Mapping[str, Any], seed: int = 0,
                    overwrite: bool = False) -> None:
        """Raise the ReportError :meth:`start_run` would raise for this run, without its lock or any write: for
        commands that compute a run whole before writing it, or write several runs, so a clash fails before the work."""
        schema.check_name("run id", run_id)
        _, config_data = _config_json(config)
        _, old = self._existing(run_id)
        refusal = self._refusal(run_id, old, kind, config_data, int(seed), overwrite)
        if refusal:
            raise ReportError(refusal)

    def _refusal(self, run_id: str, old: dict[str, Any] | None, kind: str, config: dict[str, Any], seed: int,
                 overwrite: bool) -> str | None:
        """Why ``run_id`` cannot start (or resume) with this kind, config and seed, or None."""
        if old is None or overwrite:
            return None
        conflict = self._conflict(run_id, old, kind, config, seed)
        if old["status"] == "complete":
            return conflict or f"{self._display} already has a complete run {run_id!r}; use {RUN_ADVICE} for a new run or --overwrite"
        return conflict if old["status"] == "running" else None

    def _start(self, lock: _WriteLock, run_id: str, kind: str, config_text: str, config: dict[str, Any],
               seed: int, command: str, overwrite: bool) -> RunWriter:
        statuses, old = self._existing(run_id)  # raises for an unreadable file before anything is touched
        self._sweep(statuses)
        journal = self._journal(run_id)
        refusal = self._refusal(run_id, old, kind, config, seed, overwrite)
        if refusal:
            raise ReportError(refusal)
        if old and old["status"] == "running" and not overwrite:
            return RunWriter(self, lock, run_id, old, resumed=True)
        header = {"kind": kind, "config": config_text, "seed": seed, "command": command, "created": _now(),
                  "versions": json.dumps(_versions()), "git_sha": _git_sha(),
                  "schema_version": schema.SCHEMA_VERSION}
        journal.remove()  # fresh start: journal of an overwritten running run goes first
        started = ""
        if not (old and old["status"] == "complete"):
            # A complete run being overwritten stays intact in the file until finish(); otherwise the
            # header marks the run as started, so a crash leaves a visible, resumable "running" run.
            started = "run" if self._real.exists() else "file"
            self._rewrite(run_id, lambda run: self._write_header(run, header))
        return RunWriter(self, lock, run_id, header, resumed=False, started=started)

    @staticmethod
    def _write_header(run: h5py.Group, header: Mapping[str, Any]) -> None:
        _write_attrs(run.attrs, {**header, "status": "running", "finished": ""})
        for name in ("samples", "summary", "tables"):
            run.create_group(name)
