"""Detector evaluation: AUROC, TPR at a fixed FPR, ROC points; the supervised detectors; noisy negatives.

Protocols of Wojcik et al. (https://arxiv.org/abs/2006.10013): negatives are clean images ("clean") or clean images
plus noisy copies whose Gaussian noise matches the adversarial L2 ("clean+noisy"); positives are successful
adversarial images of the same samples. Unsupervised scores need no adversarial data; supervised ones (SVC or
logistic regression on the concatenated latent codes, grid-searched by AUROC with 5-fold stratified CV) are trained
on a seeded share of the samples and every score is reported on the rest. In the "unknown" protocol the
supervised detectors are trained on FGSM images, with noisy negatives matched to FGSM's L2 (the tested attack's L2
would tell training about the attack it must not know), and tested on another attack.

    >>> neg, pos = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.35, 0.5, 0.6])
    >>> round(auroc(neg, pos), 3), tpr_at_fpr(neg, pos, 0.25)
    (0.917, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from advkit.detectors.detector import Features, LayerwiseDetector
from advkit.rng import derive_seed, sample_generator

SETTINGS = ("clean", "clean+noisy")
SUPERVISED = ("svc", "logreg")


def auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    """Area under the ROC curve of scores (higher = positive); NaN when a side is empty."""
    from sklearn.metrics import roc_auc_score

    if len(neg) == 0 or len(pos) == 0:
        return math.nan
    return float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos]))


def roc_points(neg: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, threshold) of the ROC curve (sklearn's, with the infinite first threshold made finite)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos])
    thr = np.where(np.isfinite(thr), thr, np.nanmax(np.r_[neg, pos]) + 1.0)
    return fpr, tpr, thr


def tpr_at_fpr(neg: np.ndarray, pos: np.ndarray, fpr: float = 0.05) -> float:
    """The largest TPR whose FPR is at most ``fpr`` (NaN when a side is empty)."""
    if len(neg) == 0 or len(pos) == 0:
        return math.nan
    f, t, _ = roc_points(neg, pos)
    return float(t[f <= fpr + 1e-12].max())


def matched_noise(x: torch.Tensor, x_adv: torch.Tensor, indices: np.ndarray, seed: int) -> torch.Tensor:
    """Clean images x (N, C, H, W) plus Gaussian noise of the same expected L2 as each adversarial perturbation.

    Sample i gets std ``|x_adv_i - x_i|_2 / sqrt(C H W)`` from its own generator (seed, dataset index), then the
    result is clipped to [0, 1].
    """
    d = x[0].numel()
    std = (x_adv - x).flatten(1).norm(dim=1) / math.sqrt(d)  # (N,)
    noise = torch.stack([torch.randn(x.shape[1:], generator=sample_generator(seed, int(i), "noisy")) for i in indices])
    return (x + std.view(-1, 1, 1, 1) * noise).clamp(0, 1)


def fgsm_training_set(detector: LayerwiseDetector, x: torch.Tensor, y: torch.Tensor, indices: np.ndarray, *,
                      eps: float = 0.3, seed: int = 0) -> tuple[Features, Features]:
    """Training data of the unknown-attack protocol for clean images x (N, C, H, W) with labels y (N,).

    Returns the features of FGSM images of x and of noisy copies of x matched to each FGSM perturbation's L2
    (:func:`matched_noise`), row-aligned with x: ``train_adv`` and ``train_noisy`` of :func:`evaluate`.
    """
    from advkit.attacks import create_attack

    x_adv = create_attack("fgsm", eps=eps)(detector.model, x, y).x_adv.cpu()
    return detector.features(x_adv), detector.features(matched_noise(x, x_adv, indices, seed))


def fit_supervised(features: np.ndarray, labels: np.ndarray, kind: str = "svc", seed: int = 0, quick: bool = False) -> Any:
    """A GridSearchCV (5-fold stratified, AUROC) over the paper's grid; call ``decision_function`` on the result.

    SVC grid: scaler in {MinMax, Standard, none} x kernel in {rbf, poly} x C in {1e-2, ..., 1e3} (gamma "scale").
    Logistic regression grid: the same scalers x C in {1e-2, ..., 1e3}. ``quick``: Standard scaler, C in {0.1, 1, 10}.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler
    from sklearn.svm import SVC

    if kind not in SUPERVISED:
        raise ValueError(f"supervised detector must be one of {', '.join(SUPERVISED)}, got {kind!r}")
    cs = [1e-1, 1.0, 1e1] if quick else [1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3]
    scalers = [StandardScaler()] if quick else [MinMaxScaler(), StandardScaler(), "passthrough"]
    if kind == "svc":
        pipe = Pipeline([("scale", StandardScaler()), ("clf", SVC(gamma="scale"))])
        grid = {"scale": scalers, "clf__kernel": ["rbf", "poly"], "clf__C": cs}
    else:
        pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=2000))])
        grid = {"scale": scalers, "clf__C": cs}
    folds = int(min(5, np.bincount(labels.astype(np.int64)).min()))
    cv = StratifiedKFold(n_splits=max(folds, 2), shuffle=True, random_state=derive_seed(seed, "cv") % 2**32)
    search = GridSearchCV(pipe, grid, scoring="roc_auc", cv=cv, n_jobs=1, error_score=0.0)
    return search.fit(features, labels)


@dataclass
class Row:
    """One line of an evaluation table."""

    section: str  # "unsupervised" or "supervised"
    detector: str  # e.g. "ae", "ae[block1]", "mahalanobis", "magnet"
    setting: str  # "clean" or "clean+noisy"
    auroc: float
    tpr: float  # TPR at 5% FPR
    n_neg: int
    n_pos: int


@dataclass
class Evaluation:
    """Rows of every detector x setting, ROC curves by (section, detector, setting), and per-sample scores."""

    rows: list[Row] = field(default_factory=list)
    roc: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    test_mask: np.ndarray | None = None
    scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # "clean"/"adv"/"noisy" -> score name -> (N,)
    notes: list[str] = field(default_factory=list)

    def get(self, section: str, detector: str, setting: str) -> Row | None:
        return next((r for r in self.rows if (r.section, r.detector, r.setting) == (section, detector, setting)), None)


def evaluate(detector: LayerwiseDetector, clean: Features, adv: Features, noisy: Features, *,
             train_fraction: float = 0.0, supervised: str | None = "svc", train_adv: Features | None = None,
             train_noisy: Features | None = None, seed: int = 0, fpr: float = 0.05, quick: bool = False) -> Evaluation:
    """Evaluate every score of ``detector`` on N samples (clean, adversarial and noisy features, row-aligned).

    With ``train_fraction`` > 0 a seeded share of the samples trains the supervised detectors (positives: their
    adversarial images, negatives: their clean and noisy images); every row of the table is then measured on the
    remaining samples only, so all detectors are compared on the same images (with fewer than 10 samples on either
    side no supervised detector is trained, and every sample is tested). For the unknown-attack protocol,
    ``train_adv`` and ``train_noisy`` (same rows, e.g. from :func:`fgsm_training_set`) replace the adversarial and
    noisy images in training. ``quick`` shrinks the grid search (see :func:`fit_supervised`).
    """
    if (train_adv is None) != (train_noisy is None):
        raise ValueError("pass train_adv and train_noisy together: noisy negatives must match the training attack's L2")
    n = len(clean.pred)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, "eval-split") % 2**63)).numpy()
    n_train = int(round(train_fraction * n)) if supervised else 0
    notes: list[str] = []
    if n_train and (n_train < 10 or n - n_train < 10):  # no supervised detector: no sample is held back for one
        notes.append(f"supervised detectors skipped: {n_train} training and {n - n_train} test samples (need 10 each)")
        n_train = 0
    test = np.ones(n, bool)
    if n_train:
        test[order[:n_train]] = False
    result = Evaluation(test_mask=test, notes=notes)
    parts = {"clean": clean, "adv": adv, "noisy": noisy}
    result.scores = {k: detector.scores(v) for k, v in parts.items()}
    for name in detector.score_names:
        s = {k: v[name][test] for k, v in result.scores.items()}
        _add(result, "unsupervised", name, s, fpr)
    if n_train:
        trained_on = (clean, adv, noisy) if train_adv is None else (clean, train_adv, train_noisy)
        _add_supervised(result, detector, supervised, trained_on, (clean, adv, noisy), test, seed, fpr, quick)
    return result


def _add_supervised(result: Evaluation, detector: LayerwiseDetector, supervised: str,
                    train_parts: tuple[Features, Features, Features], test_parts: tuple[Features, Features, Features],
                    test: np.ndarray, seed: int, fpr: float, quick: bool) -> None:
    """Supervised rows: fit on the rows outside ``test`` of the (clean, adversarial, noisy) ``train_parts``, score
    the ``test`` rows of ``test_parts``."""
    train = ~test
    groups: dict[str, Any] = {f"{supervised}[{layer}]": (lambda f, i=i: f.z[:, i]) for i, layer in enumerate(detector.layers)}
    groups[supervised] = lambda f: f.latents
    groups["mahalanobis (LR)"] = lambda f: f.maha
    (clean, adv, noisy), (train_clean, train_adv, train_noisy) = test_parts, train_parts
    for setting in SETTINGS:
        with_noisy = setting == "clean+noisy"
        negs, train_negs = [clean] + [noisy] * with_noisy, [train_clean] + [train_noisy] * with_noisy
        for name, get in groups.items():
            kind = "logreg" if name == "mahalanobis (LR)" else supervised
            x_train = np.concatenate([get(f)[train] for f in train_negs] + [get(train_adv)[train]])
            y_train = np.r_[np.zeros(len(train_negs) * int(train.sum())), np.ones(int(train.sum()))]
            model = fit_supervised(x_train, y_train, kind, seed, quick)
            neg = np.concatenate([model.decision_function(get(f)[test]) for f in negs])
            _add_one(result, "supervised", name, setting, neg, model.decision_function(get(adv)[test]), fpr)
        s = {k: v["magnet"][test] for k, v in result.scores.items()}
        neg = np.concatenate([s["clean"]] + [s["noisy"]] * with_noisy)
        _add_one(result, "supervised", "magnet", setting, neg, s["adv"], fpr)


def _add(result: Evaluation, section: str, name: str, s: dict[str, np.ndarray], fpr: float) -> None:
    for setting in SETTINGS:
        neg = np.concatenate([s["clean"]] + ([s["noisy"]] if setting == "clean+noisy" else []))
        _add_one(result, section, name, setting, neg, s["adv"], fpr)


def _add_one(result: Evaluation, section: str, name: str, setting: str, neg: np.ndarray, pos: np.ndarray, fpr: float) -> None:
    result.rows.append(Row(section, name, setting, auroc(neg, pos), tpr_at_fpr(neg, pos, fpr), len(neg), len(pos)))
    f, t, _ = roc_points(neg, pos)
    result.roc[(section, name, setting)] = (f, t)
