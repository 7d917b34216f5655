"""Run summaries computed from per-sample columns (the numbers `advkit report show` prints).

Undefined numbers are NaN, never 0: a success rate over zero attacked samples, or a mean distance when no
attack succeeded, has no value, and a 0 would read as "perfectly robust" or "imperceptible".

    >>> s = attack_summary({
    ...     "label": np.array([0, 1, 1, 2]),
    ...     "pred": np.array([0, 1, 0, 2]),          # sample 2 is misclassified clean: not attacked
    ...     "success": np.array([True, False, False, True]),
    ...     "l2": np.array([0.5, 0.0, 0.0, 1.5], np.float32),
    ... })
    >>> s["clean_accuracy"], s["robust_accuracy"], s["attack_success_rate"], s["l2_mean"]
    (0.75, 0.25, 0.6666666666666666, 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from advkit.errors import ReportError


def _mean(values: np.ndarray) -> float:
    """Mean as a Python float, NaN for no values (instead of NumPy's warning)."""
    return float(np.mean(values, dtype=np.float64)) if values.size else float("nan")


def _column(samples: Mapping[str, np.ndarray], name: str, n: int) -> np.ndarray:
    values = np.asarray(samples[name])
    if values.shape[:1] != (n,):
        raise ReportError(f"column {name!r} has {values.shape[0] if values.ndim else 0} rows, expected {n}")
    return values


def _bool_column(samples: Mapping[str, np.ndarray], name: str, n: int) -> np.ndarray:
    values = _column(samples, name, n)
    if values.dtype != np.bool_:
        raise ReportError(f"column {name!r} must be bool, got {values.dtype}")
    return values


def _clean_and_attacked(samples: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(N,) bool ``clean`` and ``attacked`` as :func:`attack_summary` defines them."""
    for name in ("label", "success"):
        if name not in samples:
            raise ReportError(f"attack summary needs a {name!r} column")
    label = np.asarray(samples["label"])
    n = int(label.shape[0]) if label.ndim else 0
    if "clean_correct" in samples:
        clean = _bool_column(samples, "clean_correct", n)
    elif "pred" in samples:
        clean = _column(samples, "pred", n) == label
    else:
        raise ReportError("attack summary needs a 'clean_correct' or 'pred' column")
    return clean, _bool_column(samples, "attacked", n) if "attacked" in samples else clean


def scored(samples: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N,) bool: the samples an attack's success is counted over, attacked ones the model classified correctly
    (``attacked & clean`` of :func:`attack_summary`). Every view of a run's success rate (per class, curves,
    histograms) uses it, so that none counts an image the model already got wrong as a success."""
    clean, attacked = _clean_and_attacked(samples)
    return attacked & clean


def attack_summary(samples: Mapping[str, np.ndarray]) -> dict[str, int | float]:
    """Accuracy, success rate, queries and distances of an attack run (keys: ``schema.ATTACK_SUMMARY``).

    Args:
        samples: per-sample columns as written to a report. Needs ``label``, ``success`` and either
            ``clean_correct`` or ``pred``; uses ``attacked``, ``queries``, ``l0``, ``l2``, ``linf`` and ``time``
            when present (their keys are left out of the result when the column is absent).

    Definitions (``clean`` = ``clean_correct`` if present, else ``pred == label``; ``attacked`` = the
    ``attacked`` column if present, else ``clean``; ``hit`` = ``success & attacked & clean``):

    - ``clean_accuracy`` = mean(clean) over all samples;
    - ``robust_accuracy`` = mean(clean & ~hit) over all samples. For a targeted attack a sample pushed to a
      wrong class other than the target counts as robust here; compare ``adv_pred`` with ``label`` for
      accuracy under attack;
    - ``attack_success_rate`` = mean(success) over attacked samples the model classified correctly: a sample
      it already got wrong (attacked with ``--include-misclassified``) is no achievement of the attack, so it
      counts neither for nor against it here, only in its own row;
    - ``queries_mean``/``queries_median`` and ``l0_mean``/``l2_mean``/``linf_mean`` over ``hit`` samples,
      i.e. the cost of a successful attack;
    - ``time_per_image`` = mean(time) over attacked samples (skipped ones cost no attack time).

    Every mean over an empty set is NaN.
    """
    clean, attacked = _clean_and_attacked(samples)
    n = len(clean)
    success = _bool_column(samples, "success", n)
    hit = success & attacked & clean

    out: dict[str, int | float] = {
        "n": n,
        "n_attacked": int(attacked.sum()),
        "n_success": int(hit.sum()),
        "clean_accuracy": _mean(clean),
        "robust_accuracy": _mean(clean & ~hit),
        "attack_success_rate": _mean(success[attacked & clean]),
    }
    if "queries" in samples:
        queries = _column(samples, "queries", n)[hit]
        out["queries_mean"] = _mean(queries)
        out["queries_median"] = float(np.median(queries)) if queries.size else float("nan")
    for name in ("l0", "l2", "linf"):
        if name in samples:
            out[f"{name}_mean"] = _mean(_column(samples, name, n)[hit])
    if "time" in samples:
        out["time_per_image"] = _mean(_column(samples, "time", n)[attacked])
    return out
