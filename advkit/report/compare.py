"""Runs side by side: the numbers of several runs (of one or several reports) and whether each is better or worse
than the first run's.

A run is named ``FILE`` (every run in it) or ``FILE:RUN`` (``FILE:RUN1,RUN2`` for several). Attack runs of the same
data (dataset, split and reader settings; either domain of a paired dataset) are compared on the sample indices
they all share: their summaries are recomputed from the per-sample columns of those samples
(:func:`~advkit.report.summary.attack_summary`), so a run over 100 images and one over the first 50 of them
compare on the same 50 (a worst-case run's per-attack robust accuracies too). Attack runs of different data keep their stored summaries, since one index names
different images there. Other runs (transfer, fine-tune, robustness, train, detect) show their
stored summaries.

"Better" depends on whose side you are on. From the **model**'s side higher accuracy and a lower attack success
rate are better, and so are more queries and larger perturbations needed by a successful attack; from the
**attack**'s side the reverse, and less time per image is better too. ``perspective="auto"`` takes the attack's
side when every compared run is an attack (or worst-case) run on the same model and data (attacks compared), else the model's
(models compared, e.g. before and after fine-tuning).

    >>> import tempfile, pathlib
    >>> from advkit.report import Report, attack_summary
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> for name, hits in (("weak", [True, False, False, False]), ("strong", [True, True, True, False])):
    ...     cols = {"index": np.arange(4), "label": np.zeros(4, int), "pred": np.zeros(4, int), "success": np.array(hits)}
    ...     with Report(tmp / "r.h5").start_run(name, kind="attack", config={"model": "m", "attack": name}) as run:
    ...         run.append(cols)
    ...         _ = run.finish(attack_summary(cols))
    >>> c = compare_runs([str(tmp / "r.h5")])
    >>> c.labels, c.perspective, c.common
    (['weak', 'strong'], 'attack', 4)
    >>> row = c.row("attack_success_rate")
    >>> row.values, row.verdicts
    ([0.25, 0.75], [None, 'better'])
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from advkit.errors import ReportError
from advkit.report.paths import SpecKind, resolve_recorded
from advkit.report.store import Report, RunData, is_number, missing_run
from advkit.report.summary import attack_summary

PERSPECTIVES = ("auto", "model", "attack")
ATTACK_KINDS = ("attack", "worst-case")  # a worst case over attacks compares as one more attack
ORDER = ("clean_accuracy", "robust_accuracy", "attack_success_rate", "queries_mean", "queries_median", "l0_mean",
         "l2_mean", "linf_mean", "time_per_image", "n", "n_attacked", "n_success", "test_accuracy",
         "source_success_rate", "transfer_rate", "both_fooled_rate", "random.transfer_rate", "corruption_accuracy", "mCE")
"""Rows first in this order, then every other numeric summary key in the order first seen."""

_CLEAN = re.compile(r"(^|\.)(clean_accuracy|test_accuracy|train_accuracy|val_accuracy)$")
# also a worst case's robust_accuracy.<attack>, robustness's <corruption>.accuracy and detect's auroc_<...> keys
_ROBUST = re.compile(r"(^|\.)(robust_accuracy|corruption_accuracy|relative_accuracy|accuracy|auroc|auroc_\w+|auc|"
                     r"tpr_at_\w+)$|^robust_accuracy\.[\w-]+$")
_SUCCESS = re.compile(r"(^|\.)(attack_success_rate|success_rate|source_success_rate|transfer_rate|both_fooled_rate|"
                      r"mCE|CE|fpr_at_\w+)$")
_COST = re.compile(r"(^|\.)(queries_mean|queries_median|l0_mean|l2_mean|linf_mean|moves_mean)$")
_TIME = re.compile(r"(^|\.)(time_per_image)$")


@dataclass(frozen=True)
class RunRef:
    """One run to compare: its report, id and the label shown above its column."""

    path: Path
    run: str
    label: str


@dataclass
class Row:
    """One metric across the runs; ``verdicts[j]`` is "better", "worse", "same" or None (first run, no value, or
    a metric without a direction)."""

    key: str
    values: list[Any]
    verdicts: list[str | None]

    def delta(self, j: int) -> float | None:
        """``values[j] - values[0]`` for numbers, else None."""
        a, b = self.values[0], self.values[j]
        if is_number(a) and is_number(b):
            return float(b) - float(a)
        return None


@dataclass
class Comparison:
    """Runs side by side: ``rows`` of metrics, one value per run in ``refs`` order."""

    refs: list[RunRef]
    kinds: list[str]
    perspective: str
    rows: list[Row]
    common: int | None  # samples the attack runs were compared on (None: no attack runs)
    sample_counts: list[int]  # samples of each run in its report
    recomputed: list[bool] = field(default_factory=list)  # summary recomputed on the common samples
    data_differs: bool = False  # attack runs of different data: sample indices name different images
    statuses: list[str] = field(default_factory=list)  # each run's status ("running": interrupted, partial)

    @property
    def labels(self) -> list[str]:
        return [r.label for r in self.refs]

    def row(self, key: str) -> Row:
        for row in self.rows:
            if row.key == key:
                return row
        raise KeyError(key)

    def caption(self) -> str:
        """One line saying what the numbers are computed on and which side "better" takes."""
        side = ("better for the model (higher accuracy, lower success rate, costlier attacks)" if self.perspective == "model"
                else "better for the attack (higher success rate, fewer queries, smaller perturbations)")
        parts = [f"green/red: {side} than {self.labels[0]}"]
        attack_counts = [n for n, again in zip(self.sample_counts, self.recomputed) if again]
        if self.common is not None and attack_counts:
            if all(n == self.common for n in attack_counts):
                parts.append(f"attack runs on the same {self.common} samples")
            else:
                counts = ", ".join(f"{ref.label} {n}" for ref, n, again in zip(self.refs, self.sample_counts, self.recomputed) if again)
                parts.append(f"attack runs recomputed on the {self.common} sample indices they share ({counts} in their reports)")
        if self.data_differs:
            parts.append("attack runs on different data: stored summaries over their own samples")
        elif not all(self.recomputed):
            parts.append("other runs: stored summaries over their own samples")
        return "; ".join(parts)


def parse_specs(specs: Sequence[str]) -> list[RunRef]:
    """``FILE`` or ``FILE:RUN[,RUN...]`` -> runs, checked to exist; labels are run ids, prefixed with the file
    name when the runs come from several files."""
    if not specs:
        raise ReportError("nothing to compare: give report files (FILE or FILE:RUN)")
    pairs: list[tuple[Path, str]] = []
    for spec in specs:
        path, runs = _split(spec)
        report = Report(path)
        if not report.exists():
            raise ReportError(f"no such report: {path}")
        known = [r.id for r in report.runs(unreadable=True)]  # a run of a newer schema refuses when read, not the others
        for run in runs or known:
            if run not in known:
                raise missing_run(path, run, known)
            pairs.append((path, run))
    if len(set(pairs)) != len(pairs):
        dup = next(p for p in pairs if pairs.count(p) > 1)
        raise ReportError(f"run {dup[1]!r} of {dup[0]} is named twice")
    files = {p for p, _ in pairs}
    unique_stems = len({p.stem for p in files}) == len(files)
    refs = []
    for path, run in pairs:
        prefix = "" if len(files) == 1 else path.stem if unique_stems else str(path)
        refs.append(RunRef(path, run, f"{prefix}:{run}" if prefix else run))
    return refs


def _split(spec: str) -> tuple[Path, list[str]]:
    """A spec is a path when that file exists (paths may contain ':'), else PATH:RUNS split at the last ':'."""
    if Path(spec).exists() or ":" not in spec:
        return Path(spec), []
    path, _, runs = spec.rpartition(":")
    names = [r for r in runs.split(",") if r]
    if not names:
        raise ReportError(f"{spec!r}: name a run after the ':' (FILE:RUN)")
    return Path(path), names


def _is_attack(data: RunData) -> bool:
    s = data.samples
    return data.kind in ATTACK_KINDS and "success" in s and "label" in s and ("pred" in s or "clean_correct" in s)


def _subset(samples: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    mask = np.isin(samples["index"], keep)
    return {k: v[mask] for k, v in samples.items()}


def _per_attack_summary(run: RunData, samples: dict[str, np.ndarray]) -> dict[str, Any]:
    """A worst-case run's ``robust_accuracy.<attack>`` and ``sanity.*`` keys over ``samples`` (as
    ``advkit attack`` computes them), so they cover the same samples as its recomputed robust accuracy; {} for
    other runs."""
    names = run.config.get("attacks")
    by_attack = samples.get("success_by_attack")
    if run.kind != "worst-case" or not isinstance(names, list) or by_attack is None:
        return {}
    if by_attack.ndim != 2 or by_attack.shape[1] != len(names):
        raise ReportError(f"run {run.id}: success_by_attack has shape {by_attack.shape}, expected one column "
                          f"for each of its {len(names)} attacks")
    from advkit.attacks.sanity import attack_mix_flags  # lazily: it imports torch

    # success_by_attack is each attack's success & attacked already, as worst_case combines the runs
    clean = {k: samples[k] for k in ("label", "pred", "clean_correct") if k in samples}
    robust = {str(name): attack_summary({**clean, "success": by_attack[:, i].astype(bool)})["robust_accuracy"]
              for i, name in enumerate(names)}
    params = run.config.get("params_by_attack")
    return {**{f"robust_accuracy.{name}": value for name, value in robust.items()},
            **attack_mix_flags(robust, params if isinstance(params, dict) else None)}


def _direction(key: str, perspective: str) -> int:
    """+1 if a higher value is better from ``perspective``, -1 if lower is better, 0 if neither side cares."""
    model_side = 0
    if _CLEAN.search(key):
        return 1 if perspective == "model" else 0
    if _TIME.search(key):
        return -1 if perspective == "attack" else 0
    if _ROBUST.search(key) or _COST.search(key):
        model_side = 1
    elif _SUCCESS.search(key):
        model_side = -1
    return model_side if perspective == "model" else -model_side


def _verdict(first: Any, value: Any, direction: int) -> str | None:
    if not (is_number(first) and is_number(value)) or direction == 0:
        return None
    a, b = float(first), float(value)
    if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
        return "same"
    return "better" if (b - a) * direction > 0 else "worse"


def _canonical(spec: Any, kind: SpecKind, report: Path) -> str:
    """A recorded model or data spec spelled one way per file: relative paths resolved against the report's directory
    (then the current one) and symlinks followed, so a relative and an absolute path of one checkpoint are one model."""
    if not isinstance(spec, str):
        return str(spec)
    resolved = resolve_recorded(spec, kind, report) or spec
    return os.path.realpath(resolved) if os.path.isfile(resolved) else resolved


def _data(run: RunData, ref: RunRef) -> tuple[str, str, str]:
    """What a run's sample indices number: its dataset, split and reader settings (the domain aside: both sides of
    a paired dataset number the same aligned pairs)."""
    config = run.config
    return (_canonical(config.get("data"), "data", ref.path), str(config.get("split")),
            json.dumps(config.get("data_param"), sort_keys=True))


def _auto_perspective(runs: list[RunData], refs: list[RunRef]) -> str:
    if not all(_is_attack(r) for r in runs):
        return "model"
    setup = {(_canonical(r.config.get("model"), "model", ref.path), _data(r, ref), str(r.config.get("domain")))
             for r, ref in zip(runs, refs)}
    return "attack" if len(setup) == 1 else "model"


def compare_runs(specs: Sequence[str], *, perspective: str = "auto", common: bool = True) -> Comparison:
    """Compare the runs named by ``specs`` (see :func:`parse_specs`).

    Args:
        specs: ``FILE`` or ``FILE:RUN[,RUN...]`` strings; the first run is the reference.
        perspective: "model", "attack" or "auto" (see the module docstring).
        common: recompute attack runs' summaries on their shared sample indices (else use stored summaries).
    """
    if perspective not in PERSPECTIVES:
        raise ReportError(f"unknown perspective {perspective!r}; choose from {', '.join(PERSPECTIVES)}")
    refs = parse_specs(specs)
    if len(refs) < 2:
        which = f" ({refs[0].label} of {refs[0].path})" if refs else ""  # a report may hold no run at all
        raise ReportError(f"need at least two runs to compare, got {len(refs)}{which}")
    runs = [Report(ref.path).read(ref.run) for ref in refs]
    side = _auto_perspective(runs, refs) if perspective == "auto" else perspective
    attack = [_is_attack(r) for r in runs]
    summaries = [dict(r.summary) for r in runs]
    shared: int | None = None
    recomputed = [False] * len(runs)
    # worst-case runs are not recomputed, but they number samples too: their data counts in the check
    per_sample = [a or run.kind == "worst-case" for run, a in zip(runs, attack)]
    differs = len({_data(run, ref) for run, ref, a in zip(runs, refs, per_sample) if a}) > 1
    if common and any(attack) and not differs:
        keep = functools.reduce(np.intersect1d, [run.samples["index"] for run, a in zip(runs, attack) if a])
        shared = int(len(keep))
        if shared == 0:
            raise ReportError("the attack runs share no sample index; compare their stored summaries instead "
                              "(--all-samples; common=False in Python)")
        for j, (run, is_attack) in enumerate(zip(runs, attack)):
            if is_attack:
                samples = _subset(run.samples, keep)
                summaries[j] = {**summaries[j], **attack_summary(samples), **_per_attack_summary(run, samples)}
                recomputed[j] = True
    keys: list[str] = [k for k in ORDER if any(k in s for s in summaries)]
    for s in summaries:
        keys += [k for k, v in s.items() if k not in keys and (is_number(v) or isinstance(v, float))]
    rows = []
    for key in keys:
        values = [s.get(key, float("nan")) for s in summaries]
        if not any(is_number(v) for v in values):
            continue
        direction = _direction(key, side)
        rows.append(Row(key, values, [None] + [_verdict(values[0], v, direction) for v in values[1:]]))
    return Comparison(refs, [r.kind for r in runs], side, rows, shared, [r.n_samples for r in runs], recomputed, differs,
                      [r.status for r in runs])
