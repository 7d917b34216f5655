"""PNG figures from report data, drawn with matplotlib's headless Agg backend.

Each ``plot_*`` function draws one figure from plain arrays, writes it atomically and returns its path;
:func:`plot_report` finds the data for every figure in a report and says which figures it skipped and why.
Nothing here prints.

    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "c.png"
    >>> plot_corruptions(np.array([[0.9, 0.7]]), ["fog"], [1, 2], path, clean=0.95).read_bytes()[:4] == b"\\x89PNG"
    True
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from advkit.errors import AdvkitError, ReportError
from advkit.registry import parse_value
from advkit.report.schema import IMAGES, MOVES
from advkit.report.summary import scored
from advkit.runtime import write_atomically

if TYPE_CHECKING:
    from advkit.report.store import Report, RunData

FIGURES = ("cdf", "norms", "images", "corruptions", "roc", "transfer")
"""Figure types :func:`plot_report` draws (names for ``figures=`` and ``advkit report plot --figure``)."""

MAX_ARROWS = 150  # moves drawn per image; more would hide the image


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    return plt


def check_figure_path(path: str | Path) -> Path:
    """``path`` as a figure file matplotlib can write (by its extension), not a folder: one-line errors, so callers
    can check before long work."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(path)
    kinds = FigureCanvasBase.get_supported_filetypes()
    if path.suffix[1:].lower() not in kinds:
        raise ReportError(f"figure {path} needs one of the extensions {', '.join(f'.{k}' for k in sorted(kinds))}")
    if path.is_dir():
        raise ReportError(f"figure {path} is a folder, not a file")
    return path


def _save(fig: Any, path: Path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` through a temporary file (a crash never leaves half a PNG) and close it."""
    try:
        return write_atomically(check_figure_path(path), lambda tmp: fig.savefig(tmp, dpi=dpi))
    finally:
        _pyplot().close(fig)


# ------------------------------------------------------------------------------------------ figures


def plot_corruptions(
    accuracy: np.ndarray,
    names: Sequence[str],
    severities: Sequence[int],
    path: Path,
    *,
    clean: float | None = None,
    baseline: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """Accuracy vs severity, one panel per corruption; ``accuracy`` and ``baseline`` are (C, S) in [0, 1]."""
    plt = _pyplot()
    cols = min(5, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.4 * rows), squeeze=False, sharey=True)
    for i, name in enumerate(names):
        ax = axes[i // cols][i % cols]
        ax.plot(severities, accuracy[i], marker="o", label="model")
        if baseline is not None:
            ax.plot(severities, baseline[i], marker="s", linestyle="--", label="baseline")
        if clean is not None:
            ax.axhline(clean, color="grey", linewidth=0.8, linestyle=":", label="clean")
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.set_xticks(list(severities))
    for j in range(len(names), rows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=7)
    fig.supxlabel("severity")
    fig.supylabel("accuracy")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def success_curve(queries: np.ndarray, success: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points of the success-vs-queries CDF: at ``x[k]`` queries, a share ``y[k]`` of all attacked samples is fooled.

    ``queries`` and ``success`` are over the attacked samples. Returns x starting at 0 (y 0) and ending at the
    largest number of queries of any sample, so a curve ends at the final success rate.

    >>> success_curve(np.array([5, 3, 9, 7]), np.array([True, True, False, True]))
    (array([0, 3, 5, 7, 9]), array([0.  , 0.25, 0.5 , 0.75, 0.75]))
    """
    n = len(success)
    hits = np.sort(np.asarray(queries)[np.asarray(success, bool)])
    end = int(np.max(queries)) if n else 0
    x = np.concatenate([[0], hits, [end]]).astype(np.int64)
    y = np.concatenate([[0.0], np.arange(1, len(hits) + 1) / max(n, 1), [len(hits) / max(n, 1)]])
    return x, y


def plot_success_cdf(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, *, title: str = "") -> Path:
    """Attack success rate vs queries, one step curve per run; ``curves[label] = (queries, success)`` over the
    attacked samples (see :func:`success_curve`)."""
    if not curves:
        raise ReportError("no attack runs to draw success vs queries for")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (queries, success) in curves.items():
        x, y = success_curve(queries, success)
        ax.step(x, y, where="post", label=f"{label} (n={len(success)})")
    ax.set_xlabel("queries")
    ax.set_ylabel("attack success rate")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "success rate vs query budget")
    fig.tight_layout()
    return _save(fig, path)


def plot_norm_histograms(norms: Mapping[str, Mapping[str, np.ndarray]], path: Path, *, title: str = "") -> Path:
    """Histograms of perturbation sizes of successful samples: one panel per norm (``l0``, ``l2``, ``linf``), one
    colour per run; ``norms[label][norm]`` are the values."""
    kinds = [k for k in ("l0", "l2", "linf") if any(k in v and len(v[k]) for v in norms.values())]
    if not kinds:
        raise ReportError("no successful samples with l0/l2/linf values to draw")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.2), squeeze=False)
    names = {"l0": "L0 (pixels changed)", "l2": "L2", "linf": "L-inf"}
    for ax, kind in zip(axes[0], kinds):
        present = {label: np.asarray(v[kind], np.float64) for label, v in norms.items() if kind in v and len(v[kind])}
        # a NaN made every bin NaN, so it is left out of the bins, but the legend counts it
        dropped = {label: int((~np.isfinite(values)).sum()) for label, values in present.items()}
        present = {label: values[np.isfinite(values)] for label, values in present.items()}
        every = np.concatenate(list(present.values()))
        if not len(every):
            ax.set_title(f"{names[kind]}: no finite values")
            continue
        low, high = float(every.min()), float(every.max())
        bins = np.linspace(low, high if high > low else low + 1, 21)
        for label, values in present.items():
            left_out = f", {dropped[label]} not finite, not drawn" if dropped[label] else ""
            ax.hist(values, bins=bins, alpha=0.55, label=f"{label} (n={len(values)}{left_out})")
        ax.set_xlabel(names[kind])
        ax.set_ylabel("successful samples")
        ax.legend(fontsize=7)
    fig.suptitle(title or "perturbation size of successful attacks")
    fig.tight_layout()
    return _save(fig, path)


def _show_image(ax: Any, image: np.ndarray) -> None:
    """(C, H, W) in [0, 1] -> imshow (gray for one channel)."""
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(np.clip(image.transpose(1, 2, 0), 0, 1), interpolation="nearest")  # (C, H, W) -> (H, W, C)


def plot_image_grid(
    clean: np.ndarray,
    adversarial: np.ndarray,
    path: Path,
    *,
    moves: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    extra: tuple[str, np.ndarray] | None = None,
    captions: Sequence[str] | None = None,
    title: str = "",
    min_change: float = 0.05,
) -> Path:
    """A row per sample: clean | adversarial | |difference| (max over channels) [| extra column].

    Args:
        clean, adversarial: (N, C, H, W) images in [0, 1].
        moves: per sample, the (src, dst) flat pixel positions (``row * W + col``) of its recorded moves; the ones
            that changed their destination by more than ``min_change`` (any channel) are drawn as arrows from source
            to destination on the adversarial image.
        extra: (column title, (N, C, H, W) images), e.g. the moves replayed on the other domain.
        captions: one line per row (e.g. index, label and prediction).
    """
    clean, adversarial = np.asarray(clean, np.float32), np.asarray(adversarial, np.float32)
    if clean.ndim != 4 or clean.shape != adversarial.shape or len(clean) == 0:
        raise ReportError(f"clean and adversarial images must be equal (N, C, H, W) stacks, got {clean.shape} and {adversarial.shape}")
    plt = _pyplot()
    n, _, h, w = clean.shape
    cols = 4 if extra is not None else 3
    fig, axes = plt.subplots(n, cols, figsize=(2.1 * cols, 2.1 * n + 0.4), squeeze=False)
    diff = np.abs(adversarial - clean).max(axis=1)  # (N, C, H, W) -> (N, H, W)
    scale = float(diff.max()) or 1.0
    headers = ["clean", "adversarial" + (" + moves" if moves is not None else ""), f"|difference| (max {scale:.3g})"]
    if extra is not None:
        headers.append(extra[0])
    for i in range(n):
        _show_image(axes[i][0], clean[i])
        _show_image(axes[i][1], adversarial[i])
        axes[i][2].imshow(diff[i], cmap="magma", vmin=0, vmax=scale, interpolation="nearest")
        if extra is not None:
            _show_image(axes[i][3], np.asarray(extra[1][i], np.float32))
        if moves is not None:
            src, dst = (np.asarray(a, np.int64) for a in moves[i])
            visible = diff[i].reshape(-1)[dst] > min_change  # moves between near-equal pixels would only hide the image
            src, dst = src[visible][:MAX_ARROWS], dst[visible][:MAX_ARROWS]
            for s, d in zip(src.tolist(), dst.tolist()):
                (sy, sx), (dy, dx) = divmod(s, w), divmod(d, w)
                axes[i][1].annotate("", xy=(dx, dy), xytext=(sx, sy),
                                    arrowprops={"arrowstyle": "->", "color": "cyan", "lw": 0.6, "alpha": 0.8})
            axes[i][1].scatter(dst % w, dst // w, s=6, facecolors="none", edgecolors="red", linewidths=0.6)
        if captions is not None:
            axes[i][0].set_ylabel(captions[i], fontsize=7)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
    for ax, header in zip(axes[0], headers):
        ax.set_title(header, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, *, title: str = "") -> Path:
    """ROC curves, ``curves[label] = (fpr, tpr)``; the legend gives each curve's area (trapezoid rule)."""
    if not curves:
        raise ReportError("no ROC tables (columns fpr and tpr) to draw")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    for label, (fpr, tpr) in curves.items():
        order = np.argsort(fpr, kind="stable")
        x, y = np.asarray(fpr, np.float64)[order], np.asarray(tpr, np.float64)[order]
        area = float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2)) if len(x) > 1 else float("nan")
        ax.plot(x, y, label=f"{label} (AUC {area:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8, label="chance")
    ax.set_xlabel("false positive rate (clean flagged)")
    ax.set_ylabel("true positive rate (adversarial flagged)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title or "detector ROC")
    fig.tight_layout()
    return _save(fig, path)


def plot_heatmap(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], path: Path, *, title: str = "",
                 label: str = "rate") -> Path:
    """An annotated heatmap of values in [0, 1] (NaN cells blank), e.g. the cross-domain transfer matrix."""
    matrix = np.asarray(matrix, np.float64)
    if matrix.shape != (len(rows), len(cols)) or matrix.size == 0:
        raise ReportError(f"heatmap needs a {len(rows)} x {len(cols)} matrix, got shape {matrix.shape}")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.3 * len(cols) + 2.5, 0.6 * len(rows) + 1.8))
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), list(cols), rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), list(rows), fontsize=8)
    for (r, c), value in np.ndenumerate(matrix):
        if not math.isnan(value):
            ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=8, color="white" if value < 0.6 else "black")
    fig.colorbar(image, ax=ax, label=label)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------- from a report


@dataclass
class PlotResult:
    """What :func:`plot_report` wrote (figure name -> paths), skipped (figure name -> why) and drew without some
    runs (figure name -> which runs and why)."""

    written: dict[str, list[Path]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    incomplete: list[str] = field(default_factory=list)  # runs not drawn because they are not complete (no ``runs``)

    @property
    def paths(self) -> list[Path]:
        return [p for paths in self.written.values() for p in paths]


ImageLoader = Callable[["RunData", np.ndarray], Any]
"""``loader(run, indices)`` -> the clean images of those dataset indices (see :func:`dataset_images`)."""


class Unavailable(ReportError):
    """A run lacks what a figure needs (no saved images, its dataset cannot be opened): the figure skips the run."""


# What the figures read from a run is checked here, so a damaged report is one line naming the run, never a
# TypeError from matplotlib; Report.read has already checked the schema (standard columns, attributes, tables).
_KINDS = {"b": "bool", "iu": "integer", "biuf": "numeric"}


def _damaged(run: RunData, what: str) -> ReportError:
    return ReportError(f"run {run.id}: {what}")


def _column(run: RunData, name: str, kinds: str, ndim: int = 1) -> np.ndarray:
    """Per-sample column ``name``, checked to have a dtype kind in ``kinds`` and ``ndim`` dimensions."""
    values = run.samples.get(name)
    if values is None:
        raise _damaged(run, f"has no per-sample column {name!r}")
    if values.dtype.kind not in kinds or values.ndim != ndim:
        raise _damaged(run, f"per-sample column {name!r} is {values.dtype} of shape {values.shape}, expected "
                            f"{_KINDS.get(kinds, kinds)} with {ndim} dimension(s)")
    return values


def _config_list(run: RunData, key: str, item: type) -> list[Any]:
    """Config value ``key``: a non-empty list of ``item`` values."""
    value = run.config.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, item) and not isinstance(v, bool) for v in value):
        raise _damaged(run, f"config {key!r} is {json.dumps(value)}, expected a non-empty list of {item.__name__}")
    return value


def _data_params(values: Any) -> dict[str, Any]:
    """A recorded ``data_param`` list of ``key=value`` strings -> options, parsed as the CLI parsed them."""
    params: dict[str, Any] = {}
    for pair in values or []:
        key, _, raw = str(pair).partition("=")
        params[key.strip()] = parse_value(raw)
    return params


def dataset_images(run: RunData, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Clean images of ``indices`` from the dataset the run's config names (``data``, ``domain``, ``data_param``).

    Returns ``{domain: (N, C, H, W)}``: one entry for single-domain data, both domains for paired data.
    """
    from advkit.datasets import PairedDataset, open_dataset

    spec = run.config_text("data") or ("mnist-subset" if run.kind == "attack" else None)  # `advkit attack` without --data
    if not spec:
        raise Unavailable(f"run {run.id} does not record its dataset (config key 'data')")
    params = run.config.get("data_param") or []
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        raise _damaged(run, f"config 'data_param' is {json.dumps(params)}, expected a list of key=value strings")
    try:
        ds = open_dataset(spec, **_data_params(params))
    except AdvkitError as exc:
        raise Unavailable(f"cannot open the dataset of run {run.id} ({spec}): {exc}") from None
    if isinstance(ds, PairedDataset):
        return {d: ds.domain(d).batch(indices)[0].numpy() for d in ("rgb", "ir")}
    return {ds.domain: ds.batch(indices)[0].numpy()}


def _attack_runs(runs: list[RunData], result: PlotResult, figure: str) -> list[RunData]:
    """The attack runs with per-sample success and queries; the other attack runs are noted as left out of ``figure``."""
    attacks = [r for r in runs if r.kind == "attack"]
    chosen = [r for r in attacks if {"success", "queries"} <= set(r.samples)]
    _note_left_out(result, figure, [f"{r.id}: no per-sample success and queries" for r in attacks
                                    if not {"success", "queries"} <= set(r.samples)])
    return chosen


def _note_left_out(result: PlotResult, figure: str, reasons: list[str]) -> None:
    if reasons:
        result.left_out[figure] = "; ".join(filter(None, [result.left_out.get(figure), *reasons]))


def _cdf(runs: list[RunData], out: Path, result: PlotResult) -> None:
    chosen = _attack_runs(runs, result, "cdf")
    if not chosen:
        result.skipped["cdf"] = "no attack run with per-sample success and queries"
        result.left_out.pop("cdf", None)
        return
    curves, reasons = {}, []
    for run in chosen:
        keep = scored(run.samples)
        if not keep.any():  # its success rate is undefined (NaN): a flat curve at 0 would read as a failed attack
            reasons.append(f"{run.id}: no attacked sample the model classified correctly")
            continue
        curves[run.id] = (run.samples["queries"][keep], run.samples["success"][keep])
    if not curves:
        result.skipped["cdf"] = "; ".join(reasons)
        result.left_out.pop("cdf", None)
        return
    _note_left_out(result, "cdf", reasons)
    result.written["cdf"] = [plot_success_cdf(curves, out / "success-vs-queries.png")]


def _norms(runs: list[RunData], out: Path, result: PlotResult) -> None:
    norms: dict[str, dict[str, np.ndarray]] = {}
    reasons = []
    for run in _attack_runs(runs, result, "norms"):
        hit = run.samples["success"].astype(bool) & scored(run.samples)
        present = {k: run.samples[k][hit] for k in ("l0", "l2", "linf") if k in run.samples}
        if hit.any() and present:
            norms[run.id] = present
        else:
            reasons.append(f"{run.id}: {'no l0/l2/linf columns' if hit.any() else 'no successful sample'}")
    if not norms:
        result.skipped["norms"] = "no attack run with successful samples and l0/l2/linf columns"
        result.left_out.pop("norms", None)
        return
    _note_left_out(result, "norms", reasons)
    result.written["norms"] = [plot_norm_histograms(norms, out / "perturbation-norms.png")]


def _pick(success: np.ndarray, shown: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` of the ``shown`` rows: successful ones first, then failed ones, in index order (a row the attack
    never ran on, such as an already misclassified image, is not a failure to show)."""
    rows = np.flatnonzero(success & shown)
    if len(rows) < n:
        rows = np.concatenate([rows, np.flatnonzero(~success & shown)])
    return rows[:n]


def _images(runs: list[RunData], out: Path, result: PlotResult, report: Report, loader: ImageLoader, n: int) -> None:
    reasons = []
    written: list[Path] = []
    for run in runs:
        try:
            path = _grid(run, out, report, loader, n)
        except Unavailable as exc:  # anything else wrong with the run is an error, not a skipped figure
            reasons.append(f"{run.id}: {exc}")
            continue
        if path is not None:
            written.append(path)
    if written:
        result.written["images"] = written
        _note_left_out(result, "images", reasons)
    if reasons and not written:
        result.skipped["images"] = "; ".join(reasons)
    elif not written:
        result.skipped["images"] = "no attack run with saved images and no transfer run with recorded moves"


def _grid(run: RunData, out: Path, report: Report, loader: ImageLoader, n: int) -> Path | None:
    """The image grid of a transfer run with moves or of an attack run; None for other runs."""
    if run.kind == "transfer" and MOVES in run.tables:
        return _transfer_images(run, out, loader, n)
    if run.kind == "attack":
        return _attack_images(report, run, out, loader, n)
    return None


def _attack_images(report: Report, run: RunData, out: Path, loader: ImageLoader, n: int) -> Path:
    """The grid of an attack run: its saved images, or its moves replayed on the clean images; moves drawn if recorded."""
    moves = run.tables.get(MOVES)
    full = report.read(run.id, images=True) if run.has_images and IMAGES not in run.samples else run
    s = full.samples
    if IMAGES not in s and moves is None:
        raise Unavailable("no adversarial images (run the attack with --save-images)")
    rows = _pick(_column(full, "success", "b"), scored(full.samples), n)
    if not len(rows):  # every image already misclassified (or skipped): nothing the attack did to show
        raise Unavailable("no attacked sample the model classified correctly")
    index = s["index"][rows]
    clean = _domain_images(full, loader(run, index))
    adv, arrows = None, None
    if moves is not None:
        replayed, arrows = _replayed(run, moves, index, {"x": clean})
        adv = replayed["x"]
    if IMAGES in s:  # what the attack returned; the replayed moves reproduce it up to the stored precision
        adv = s[IMAGES][rows]
        adv = adv.astype(np.float32) / 255 if adv.dtype == np.uint8 else adv.astype(np.float32)
        if adv.shape != clean.shape:
            raise _damaged(run, f"adversarial images {adv.shape[1:]} do not match the dataset's {clean.shape[1:]}")
    captions = [f"#{i} label {lab} -> {p}" for i, lab, p in zip(index, s["label"][rows], s.get("adv_pred", s["label"])[rows])]
    return plot_image_grid(clean, adv, out / f"images-{run.id}.png", moves=arrows, captions=captions,
                           title=f"{run.id}: {run.config.get('attack', run.kind)}")


def _domain_images(run: RunData, clean: Mapping[str, np.ndarray]) -> np.ndarray:
    """The clean images of the domain the run attacked (the only one for single-domain data)."""
    domain = run.config_text("domain")
    return clean[domain] if domain in clean else next(iter(clean.values()))


def _replayed(run: RunData, moves: Mapping[str, np.ndarray], index: np.ndarray, images: Mapping[str, np.ndarray]
              ) -> tuple[dict[str, np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """:func:`replay_moves`, with a damaged moves table (positions outside the image) reported as the run's."""
    try:
        return replay_moves(moves, index, images)
    except AdvkitError as exc:
        raise _damaged(run, f"table {MOVES!r}: {exc}") from None


def replay_moves(moves: Mapping[str, np.ndarray], indices: np.ndarray, images: Mapping[str, np.ndarray]
                 ) -> tuple[dict[str, np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """Replay the recorded move programs of samples ``indices`` (a run's ``moves`` table) on their clean images.

    Args:
        moves: the table :func:`advkit.attacks.moves.moves_table` writes (sample, step, dst, src, from_clean).
        indices: (N,) dataset indices.
        images: ``{domain: (N, C, H, W)}`` clean images of those samples.

    Returns:
        ``{domain: (N, C, H, W)}`` images with the moves applied, and per sample the (src, dst) flat positions of
        the move that last wrote each destination (what the image shows).
    """
    import torch

    from advkit.attacks.moves import programs_from_table

    replayed: dict[str, list[np.ndarray]] = {d: [] for d in images}
    arrows = []
    for j, index in enumerate(np.asarray(indices).tolist()):
        first = next(iter(images.values()))
        program = programs_from_table(dict(moves), int(index), *first.shape[-2:])
        for domain, stack in images.items():
            replayed[domain].append(program.apply(torch.from_numpy(np.ascontiguousarray(stack[j]))).numpy())
        last: dict[int, int] = {}  # destination -> source of its last write
        for step in program.steps:
            last.update(zip(step.dst.tolist(), step.src.tolist()))
        arrows.append((np.array(list(last.values()), np.int64), np.array(list(last), np.int64)))
    return {d: np.stack(v) for d, v in replayed.items()}, arrows


def _transfer_images(run: RunData, out: Path, loader: ImageLoader, n: int) -> Path:
    s = run.samples
    direction = run.config_text("direction", "") or ""
    src, _, tgt = direction.partition("->")
    success = _column(run, "src_success", "b")
    rows = _pick(success, np.ones_like(success), n)  # every pair of a transfer run was attacked
    src_pred, tgt_pred = _column(run, "src_adv_pred", "iu")[rows], _column(run, "tgt_adv_pred", "iu")[rows]
    clean = loader(run, s["index"][rows])
    if src not in clean or tgt not in clean:
        raise _damaged(run, f"the dataset has no {src!r} and {tgt!r} domains (direction {direction!r})")
    adversarial, arrows = _replayed(run, run.tables[MOVES], s["index"][rows], {src: clean[src], tgt: clean[tgt]})
    captions = [f"#{i} label {lab}: {src} -> {a}, {tgt} -> {b}" for i, lab, a, b in
                zip(s["index"][rows], _column(run, "label", "iu")[rows], src_pred, tgt_pred)]
    return plot_image_grid(clean[src], adversarial[src], out / f"images-{run.id}.png", moves=arrows,
                           extra=(f"moves replayed on {tgt}", adversarial[tgt]), captions=captions,
                           title=f"{run.id}: {run.config.get('attack_name', 'moves')} on {src}, replayed on {tgt}")


def _corruptions(runs: list[RunData], out: Path, result: PlotResult) -> None:
    written = []
    for run in runs:
        if run.kind != "robustness" or "model_correct" not in run.samples:
            continue
        names, severities = _config_list(run, "corruptions", str), _config_list(run, "severities", int)
        accuracy, baseline = (_corruption_accuracy(run, column, (len(names), len(severities)))
                              for column in ("model_correct", "baseline_correct"))
        written.append(plot_corruptions(accuracy, names, severities, out / f"corruptions-{run.id}.png",
                                        clean=run.number("clean_accuracy"), baseline=baseline,
                                        title=f"{run.id}: accuracy vs corruption severity"))
    if written:
        result.written["corruptions"] = written
    else:
        result.skipped["corruptions"] = "no robustness run (advkit robustness) with per-sample corruption results"


def _corruption_accuracy(run: RunData, column: str, shape: tuple[int, int]) -> np.ndarray | None:
    """(C, S) accuracy from a (N, C, S) correctness column whose C x S matches the recorded corruptions x severities."""
    if column not in run.samples:  # the baseline is optional
        return None
    correct = _column(run, column, "biuf", ndim=3)
    if correct.shape[1:] != shape:
        raise _damaged(run, f"per-sample column {column!r} has {correct.shape[1]} x {correct.shape[2]} corruptions x "
                            f"severities per sample, but the config lists {shape[0]} x {shape[1]}")
    return correct.mean(axis=0)  # (N, C, S) -> (C, S)


def roc_tables(runs: list[RunData]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every run table with ``fpr`` and ``tpr`` columns, labelled ``run`` (or ``run/table`` for several)."""
    found = {}
    for run in runs:
        tables = {name: t for name, t in run.tables.items() if {"fpr", "tpr"} <= set(t)}
        for name, t in tables.items():
            if any(t[k].dtype.kind not in "iuf" or t[k].ndim != 1 for k in ("fpr", "tpr")):
                raise _damaged(run, f"table {name!r} has fpr/tpr of {t['fpr'].dtype} {t['fpr'].shape} and "
                                    f"{t['tpr'].dtype} {t['tpr'].shape}, expected 1-D numbers")
            found[run.id if len(tables) == 1 else f"{run.id}/{name}"] = (np.asarray(t["fpr"]), np.asarray(t["tpr"]))
    return found


def _roc(runs: list[RunData], out: Path, result: PlotResult) -> None:
    curves = roc_tables(runs)
    if not curves:
        result.skipped["roc"] = "no run table with fpr and tpr columns (detector runs)"
        return
    result.written["roc"] = [plot_roc(curves, out / "roc.png")]


TRANSFER_METHODS = (("", None), ("random.", "random moves"), ("fgsm.", "fgsm"), ("pgd.", "pgd"))


def transfer_matrix(runs: list[RunData]) -> tuple[np.ndarray, list[str], list[str]]:
    """The transfer table of ``advkit transfer`` as a matrix: a row per method (the move attack and its
    controls), a column per direction and rate (source success, transfer, both fooled); runs that share a
    direction are told apart by their run ids."""
    chosen = [r for r in runs if r.kind == "transfer" and "transfer_rate" in r.summary]
    if not chosen:
        raise Unavailable("no transfer run (advkit transfer) in the report")
    directions = [str(r.config.get("direction", r.id)) for r in chosen]
    heads = [d if directions.count(d) == 1 else r.id for r, d in zip(chosen, directions)]  # two runs of one direction: their ids
    cols = [f"{head} {m}" for head in heads for m in ("source", "transfer", "both")]
    rows, matrix = [], []
    for prefix, name in TRANSFER_METHODS:
        if not any(f"{prefix}transfer_rate" in r.summary for r in chosen):
            continue
        attack = {str(r.config.get("attack_name", "attack")) for r in chosen}
        rows.append(name or " / ".join(sorted(attack)))
        matrix.append([_nan_if_none(r.number(f"{prefix}{key}")) for r in chosen
                       for key in ("source_success_rate", "transfer_rate", "both_fooled_rate")])
    return np.array(matrix, np.float64), rows, cols


def _nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else value


def _transfer(runs: list[RunData], out: Path, result: PlotResult) -> None:
    try:
        matrix, rows, cols = transfer_matrix(runs)
    except Unavailable as exc:
        result.skipped["transfer"] = str(exc)
        return
    result.written["transfer"] = [plot_heatmap(matrix, rows, cols, out / "transfer-matrix.png",
                                               title="cross-domain transfer (share of pairs)", label="rate")]


def plot_report(
    report: Report,
    out: Path,
    *,
    runs: Sequence[str] | None = None,
    figures: Sequence[str] | None = None,
    max_images: int = 6,
    loader: ImageLoader | None = None,
) -> PlotResult:
    """Every figure the report has data for, written to ``out``; the others listed in ``skipped`` with the reason.

    Args:
        report: the report to draw.
        out: directory for the PNGs (created).
        runs: only these runs (default all complete runs).
        figures: only these figure types (:data:`FIGURES`); a requested figure without data raises ReportError.
        max_images: samples per image grid.
        loader: clean images by dataset index (default :func:`dataset_images`, which reopens the run's dataset).
    """
    if not report.exists():
        raise ReportError(f"no such report: {report.path}")
    wanted = list(figures or FIGURES)
    unknown = [f for f in wanted if f not in FIGURES]
    if unknown:
        raise ReportError(f"unknown figure {unknown[0]!r}; choose from {', '.join(FIGURES)}")
    if max_images < 1:
        raise ReportError(f"max_images must be >= 1, got {max_images}")
    infos = {r.id: r for r in report.runs(unreadable=True)}  # a run of a newer schema refuses when read, not the others
    for run_id in runs or []:
        if run_id not in infos:
            from advkit.report.store import missing_run

            raise missing_run(report.path, run_id, list(infos))
    # an unreadable run is not left out as if incomplete: reading it says why the whole report cannot be drawn
    ids = list(runs) if runs else [i for i, r in infos.items() if r.status == "complete" or r.problem]
    incomplete = [] if runs else [i for i, r in infos.items() if r.status != "complete" and not r.problem]
    data = [report.read(i) for i in ids]
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    # the figures are drawn in a hidden folder and moved into ``out`` only when all of them could be: a damaged run
    # found by the fourth figure leaves no mix of new figures and old ones behind
    stage = Path(tempfile.mkdtemp(prefix=".advkit-plot-", dir=out))
    try:
        result = PlotResult(incomplete=incomplete)
        steps: dict[str, Callable[[], None]] = {
            "cdf": lambda: _cdf(data, stage, result),
            "norms": lambda: _norms(data, stage, result),
            "images": lambda: _images(data, stage, result, report, loader or dataset_images, max_images),
            "corruptions": lambda: _corruptions(data, stage, result),
            "roc": lambda: _roc(data, stage, result),
            "transfer": lambda: _transfer(data, stage, result),
        }
        for name in wanted:
            steps[name]()
        if figures:
            missing = [f"{name}: {result.skipped[name]}" for name in wanted if name in result.skipped]
            if missing:
                raise ReportError(f"{report.path}: cannot draw {'; '.join(missing)}")
        for paths in result.written.values():
            paths[:] = [path.replace(out / path.name) for path in paths]
        return result
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not any(out.iterdir()):  # nothing drawn: no empty folder left behind either
            out.rmdir()
