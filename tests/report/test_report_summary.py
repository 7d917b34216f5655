"""attack_summary on hand-made columns, checked against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from advkit.errors import ReportError
from advkit.report import attack_summary
from advkit.report.schema import ATTACK_SUMMARY


def test_hand_computed_numbers() -> None:
    # 6 samples; sample 2 and 5 are misclassified clean, so not attacked (attacked column given explicitly).
    samples = {
        "index": np.arange(6),
        "label": np.array([0, 1, 2, 3, 4, 5]),
        "pred": np.array([0, 1, 9, 3, 4, 9]),
        "attacked": np.array([True, True, False, True, True, False]),
        "success": np.array([True, False, False, True, True, False]),
        "queries": np.array([10, 500, 0, 30, 20, 0]),
        "l0": np.array([1, 0, 0, 3, 2, 0]),
        "l2": np.array([0.5, 0.0, 0.0, 1.0, 1.5, 0.0], np.float32),
        "linf": np.array([0.1, 0.0, 0.0, 0.3, 0.2, 0.0], np.float32),
        "time": np.array([1.0, 2.0, 0.0, 1.0, 1.0, 1.0]),
    }
    s = attack_summary(samples)
    assert set(s) == set(ATTACK_SUMMARY)
    assert (s["n"], s["n_attacked"], s["n_success"]) == (6, 4, 3)
    assert s["clean_accuracy"] == pytest.approx(4 / 6)
    assert s["robust_accuracy"] == pytest.approx(1 / 6)  # only sample 1 survives
    assert s["attack_success_rate"] == pytest.approx(3 / 4)
    assert s["queries_mean"] == pytest.approx(20.0)  # successful samples 0, 3, 4: 10, 30, 20
    assert s["queries_median"] == 20.0
    assert s["l0_mean"] == pytest.approx(2.0)
    assert s["l2_mean"] == pytest.approx(1.0)
    assert s["linf_mean"] == pytest.approx(0.2)
    assert s["time_per_image"] == pytest.approx(1.25)  # attacked samples 0, 1, 3, 4: 1, 2, 1, 1


def test_misclassified_samples_attacked_anyway_are_no_successes_of_the_attack() -> None:
    # --include-misclassified: samples 2 and 5 were already wrong, so the attack "succeeded" at no cost on them
    samples = {
        "label": np.array([0, 1, 2, 3, 4, 5]),
        "pred": np.array([0, 1, 9, 3, 4, 9]),
        "attacked": np.ones(6, bool),
        "success": np.array([True, False, True, True, False, True]),
        "queries": np.array([10, 500, 1, 30, 500, 1]),
        "l0": np.array([1, 0, 0, 3, 0, 0]),
        "time": np.array([1.0, 2.0, 0.5, 1.0, 2.0, 0.5]),
    }
    s = attack_summary(samples)
    assert (s["n_attacked"], s["n_success"]) == (6, 2)
    assert s["attack_success_rate"] == pytest.approx(2 / 4)  # of the 4 correctly classified samples, 0 and 3
    assert s["queries_mean"] == pytest.approx(20.0) and s["l0_mean"] == pytest.approx(2.0)
    assert s["robust_accuracy"] == pytest.approx(2 / 6) and s["clean_accuracy"] == pytest.approx(4 / 6)
    assert s["time_per_image"] == pytest.approx(7 / 6)  # the time was spent on every attacked sample
    assert all(type(v) in (int, float) for v in s.values())


def test_clean_correct_column_takes_precedence_over_pred() -> None:
    s = attack_summary({"label": np.array([0, 1, 2, 3]), "pred": np.array([0, 1, 2, 3]),
                        "clean_correct": np.array([True, True, False, False]),
                        "success": np.array([False, True, False, False])})
    assert s["clean_accuracy"] == 0.5 and s["attack_success_rate"] == 0.5 and s["robust_accuracy"] == 0.25
    assert "queries_mean" not in s and "l2_mean" not in s  # absent columns: absent keys


def test_no_success_gives_nan_not_zero() -> None:
    s = attack_summary({"label": np.array([0, 1]), "pred": np.array([0, 1]), "success": np.array([False, False]),
                        "queries": np.array([100, 100]), "l2": np.array([0.0, 0.0], np.float32)})
    assert s["attack_success_rate"] == 0.0 and s["robust_accuracy"] == 1.0
    assert math.isnan(s["queries_mean"]) and math.isnan(s["queries_median"]) and math.isnan(s["l2_mean"])


def test_nothing_attacked_or_empty() -> None:
    s = attack_summary({"label": np.array([0]), "pred": np.array([1]), "success": np.array([False])})
    assert (s["n_attacked"], s["clean_accuracy"], s["robust_accuracy"]) == (0, 0.0, 0.0)
    assert math.isnan(s["attack_success_rate"])
    empty = attack_summary({"label": np.zeros(0, np.int64), "pred": np.zeros(0, np.int64),
                            "success": np.zeros(0, bool), "time": np.zeros(0)})
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in ("clean_accuracy", "robust_accuracy",
                                                                   "attack_success_rate", "time_per_image"))


@pytest.mark.parametrize(("samples", "message"), [
    ({"label": np.array([0]), "pred": np.array([0])}, "needs a 'success' column"),
    ({"label": np.array([0]), "success": np.array([True])}, "needs a 'clean_correct' or 'pred' column"),
    ({"label": np.array([0]), "pred": np.array([0]), "success": np.array([1])}, "'success' must be bool"),
    ({"label": np.array([0, 1]), "pred": np.array([0]), "success": np.array([True, True])}, "'pred' has 1 rows"),
])
def test_missing_or_bad_columns(samples: dict, message: str) -> None:
    with pytest.raises(ReportError, match=message):
        attack_summary(samples)
