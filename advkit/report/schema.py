"""The report schema as data: names, dtypes and meaning of every standard column and attribute.

The writer validates against these tables, the reader checks files against them, and
``docs/report-format.md`` embeds the Markdown they render to (a test keeps the two in sync).

    >>> SAMPLE_COLUMNS["success"].dtypes
    ('bool',)
    >>> coerce_column("l2", np.array([1.5, 2.0])).dtype
    dtype('float32')
    >>> coerce_column("adv_images", np.zeros((2, 3, 4, 4), np.float64)).dtype
    dtype('float32')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from advkit.errors import ReportError

SCHEMA_VERSION = 1
"""Bumped when a reader of the old schema would misread a new file (not for added columns)."""

FORMAT = "advkit-report"
"""Value of the root ``format`` attribute: marks a file as an advkit report, so advkit never writes into
some other HDF5 file passed by mistake."""

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""Run ids, kinds and table names: safe as HDF5 names and as directory names of the journal."""

COLUMN_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
"""Column names: Python identifiers, so they work as pandas columns and ``.npz`` keys."""

STATUSES = ("running", "complete")
KINDS = ("train", "attack", "worst-case", "transfer", "finetune", "robustness", "detect")
"""Kinds the advkit CLI writes; other identifiers are accepted for user-written runs."""

ALLOWED_KINDS = "biufU"
"""NumPy dtype kinds a column may have: bool, signed/unsigned int, float, unicode string."""

IMAGES = "adv_images"
"""The per-sample column holding adversarial images."""

MOVES = "moves"
"""The table of recorded pixel moves (Pixle, WhitePixle and transfer runs)."""

TABLE_SEP = "/"
"""Joins ``<table>/<column>``: a key of ``RunWriter.append``'s columns and a journal chunk member holding rows of a
per-sample table (never part of a column name)."""


@dataclass(frozen=True)
class Column:
    """One standard per-sample column.

    Attributes:
        name: dataset name under ``/runs/<id>/samples``.
        dtypes: dtypes allowed in a file; appended data already of one of them is kept as is.
        accepts: NumPy dtype kinds accepted on append; they are cast to ``cast_to``.
        cast_to: dtype other accepted input is converted to.
        ndim: number of dimensions including the sample axis (1 for scalars per sample).
        doc: meaning and units, one sentence.
    """

    name: str
    dtypes: tuple[str, ...]
    accepts: str
    cast_to: str
    ndim: int
    doc: str


def _col(name: str, dtype: str, accepts: str, doc: str) -> Column:
    return Column(name, (dtype,), accepts, dtype, 1, doc)


SAMPLE_COLUMNS: dict[str, Column] = {
    c.name: c
    for c in (
        _col("index", "int64", "iu", "Position of the sample in the full dataset (0-based); rows are sorted by it "
             "and unique. Required in every run."),
        _col("label", "int64", "iu", "True class."),
        _col("pred", "int64", "iu", "Prediction on the clean image."),
        _col("clean_correct", "bool", "b", "Clean prediction was correct (written when `pred` is not the whole story, "
             "e.g. top-k)."),
        _col("attacked", "bool", "b", "The attack ran on this sample (false for skipped ones, e.g. misclassified "
             "clean)."),
        _col("adv_pred", "int64", "iu", "Prediction on the adversarial image."),
        _col("target", "int64", "iu", "Target class of a targeted attack; -1 on rows not attacked. Absent from untargeted runs."),
        _col("success", "bool", "b", "The attack met its criterion, re-checked by an independent forward pass."),
        _col("queries", "int64", "iu", "Model queries spent on this sample."),
        _col("iterations", "int64", "iu", "Attack iterations run on this sample; -1 where the attack does not report them (torchattacks attacks), 0 on rows not attacked."),
        _col("l0", "int64", "iu", "Number of pixels changed (a pixel counts once whatever its channels)."),
        _col("l2", "float32", "fiu", "L2 norm of the perturbation in [0, 1] pixel space."),
        _col("linf", "float32", "fiu", "L-infinity norm of the perturbation in [0, 1] pixel space."),
        _col("time", "float64", "fiu", "Wall-clock seconds spent on this sample (its share of the batch)."),
        Column("adv_images", ("uint8", "float16", "float32"), "f", "float32", 4,
               "Adversarial images (N, C, H, W): uint8 in [0, 255], or float32 in [0, 1] (float16 in reports of "
               "advkit before 2026-12-02, whose rounding could undo a success); gzip-compressed, one image per HDF5 "
               "chunk. Skipped by `Report.read` unless `images=True`."),
    )
}


@dataclass(frozen=True)
class Attr:
    """One attribute of a run group (``/runs/<id>``) or of the root group."""

    name: str
    type: str  # "str", "int" or "json" (a str holding a JSON object)
    doc: str


RUN_ATTRS: tuple[Attr, ...] = (
    Attr("kind", "str", f"What the run did: {', '.join(KINDS)} (other identifiers allowed)."),
    Attr("status", "str", "`running` while samples are still journaled, `complete` once merged."),
    Attr("config", "json", "The full config of the run; `advkit ... --config` can replay it."),
    Attr("seed", "int", "The run seed every per-sample generator derives from."),
    Attr("command", "str", "The command line that started the run (may be empty)."),
    Attr("created", "str", "When the run was first started, ISO 8601 UTC."),
    Attr("finished", "str", "When the run was completed, ISO 8601 UTC; empty while running."),
    Attr("versions", "json", "Versions of python, advkit, torch, numpy, h5py and torchattacks (when installed)."),
    Attr("git_sha", "str", "Commit of the advkit source tree if it is a git checkout, else `unknown`."),
    Attr("schema_version", "int", "Schema version the run was written with; a run of a newer (or unknown) one is refused when read or resumed."),
)

ROOT_ATTRS: tuple[Attr, ...] = (
    Attr("format", "str", f"Always `{FORMAT}`."),
    Attr("schema_version", "int", "Newest schema version of any run in the file."),
)

TABLES: dict[str, dict[str, str]] = {
    "history": {
        "epoch": "Epoch number (int64, from 1).",
        "train_loss": "Mean training loss over the epoch.",
        "train_acc": "Training accuracy over the epoch.",
        "eval_acc": "Clean accuracy after the epoch, on the val split (the test split when there is none).",
        "val_score": "The score the best epoch is kept by (robust or clean val accuracy); NaN when none is kept.",
    },
    MOVES: {
        "sample": "Dataset index of the sample whose program the move belongs to (int64).",
        "step": "Which step of that sample's program (int64, from 0).",
        "dst": "Flat position `row * W + col` the move writes (int64).",
        "src": "Flat position the value is read from (int64).",
        "from_clean": "Whether the value is read from the clean image (bool), else from the image just before the step.",
    },
}
"""Standard tables (``/runs/<id>/tables/<name>``); writers may add others."""

TABLE_KINDS: dict[str, dict[str, str]] = {
    MOVES: {"sample": "iu", "step": "iu", "dst": "iu", "src": "iu", "from_clean": "b"},
}
"""Required columns of standard tables that readers rely on, with their NumPy dtype kinds."""

ATTACK_SUMMARY: dict[str, str] = {
    "n": "Number of samples in the run.",
    "n_attacked": "Samples the attack ran on (`attacked`, else the clean-correct ones).",
    "n_success": "Attacked samples, correctly classified on the clean image, where the attack succeeded.",
    "clean_accuracy": "Mean of `clean_correct` (else `pred == label`) over all samples.",
    "robust_accuracy": "Fraction of all samples correct on the clean image and not successfully attacked.",
    "attack_success_rate": "`n_success` over the attacked samples correctly classified on the clean image (`n_attacked` of them unless misclassified ones were attacked too).",
    "queries_mean": "Mean `queries` over the `n_success` samples.",
    "queries_median": "Median `queries` over the `n_success` samples.",
    "l0_mean": "Mean `l0` over the `n_success` samples.",
    "l2_mean": "Mean `l2` over the `n_success` samples.",
    "linf_mean": "Mean `linf` over the `n_success` samples.",
    "time_per_image": "Mean `time` over attacked samples (seconds).",
}
"""Keys of :func:`advkit.report.summary.attack_summary`."""


def check_name(what: str, name: object, pattern: re.Pattern[str] = RUN_ID_PATTERN) -> str:
    """Return ``name`` if it matches ``pattern``, else raise ReportError naming ``what``.

    >>> check_name("run id", "attack-pgd")
    'attack-pgd'
    """
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise ReportError(f"invalid {what} {name!r}: use letters, digits and . _ - (must match {pattern.pattern})")
    return name


def coerce_column(name: str, values: np.ndarray) -> np.ndarray:
    """Check one appended column and cast it to its storage dtype (standard columns follow the schema)."""
    spec = SAMPLE_COLUMNS.get(name)
    kind = values.dtype.kind
    if spec is None:
        if kind not in ALLOWED_KINDS:
            raise ReportError(f"column {name!r} has dtype {values.dtype}; use bool, integer, float or str arrays")
        return values
    if values.ndim != spec.ndim:
        raise ReportError(f"column {name!r} must have {spec.ndim} dimension(s) (sample axis first), got shape "
                          f"{values.shape}")
    if name == IMAGES and kind == "f" and values.size and not (np.isfinite(values).all() and 0 <= values.min() and values.max() <= 1):
        raise ReportError(f"column {name!r} holds float pixels outside [0, 1] (or NaN); store uint8 in [0, 255] or float in [0, 1]")
    if values.dtype.name in spec.dtypes:
        return values
    if kind not in spec.accepts:
        raise ReportError(f"column {name!r} must be {' or '.join(spec.dtypes)}, got {values.dtype}")
    target = np.dtype(spec.cast_to)
    if target.kind == "i" and kind == "u" and values.size and values.max() > np.iinfo(target).max:
        raise ReportError(f"column {name!r} has values too large for {target}")
    return values.astype(target)


def check_stored_dtype(name: str, dtype: np.dtype, ndim: int | None = None) -> str | None:
    """Why a stored dataset's dtype (or, given ``ndim``, its number of dimensions) is wrong for column ``name``, or
    None if it is fine."""
    spec = SAMPLE_COLUMNS.get(name)
    if spec is None:
        return None if dtype.kind in ALLOWED_KINDS or dtype.kind == "O" else f"has unsupported dtype {dtype}"
    if dtype.name not in spec.dtypes:
        return f"has dtype {dtype}, expected {' or '.join(spec.dtypes)}"
    if ndim is not None and ndim != spec.ndim:
        return f"has {ndim} dimensions, expected {spec.ndim}"
    return None


def check_table(name: str, columns: dict[str, np.ndarray]) -> str | None:
    """Why a stored table ``name`` lacks what readers of a standard table rely on, or None if it is fine."""
    for column, kinds in TABLE_KINDS.get(name, {}).items():
        values = columns.get(column)
        if values is None:
            return f"has no column {column!r}"
        if values.dtype.kind not in kinds or values.ndim != 1:
            wanted = {"iu": "integers", "b": "booleans"}.get(kinds, kinds)
            return f"column {column!r} is {values.dtype} of shape {values.shape}, expected 1-D {wanted}"
    return None


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def columns_markdown() -> str:
    """Markdown table of the standard per-sample columns."""
    rows = [(f"`{c.name}`", " or ".join(c.dtypes), "1-D" if c.ndim == 1 else f"{c.ndim}-D", c.doc)
            for c in SAMPLE_COLUMNS.values()]
    return _table(("column", "dtype", "shape", "meaning"), rows)


def attrs_markdown() -> str:
    """Markdown table of the run attributes."""
    kinds = {"str": "str", "int": "int64", "json": "str (JSON)"}
    return _table(("attribute", "type", "meaning"), [(f"`{a.name}`", kinds[a.type], a.doc) for a in RUN_ATTRS])


def summary_markdown() -> str:
    """Markdown table of the keys :func:`~advkit.report.summary.attack_summary` computes."""
    return _table(("key", "meaning"), [(f"`{k}`", v) for k, v in ATTACK_SUMMARY.items()])
