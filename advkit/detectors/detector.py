"""The layer-wise autoencoder detector of Wojcik et al. (https://arxiv.org/abs/2006.10013): fit, score, save, load.

One autoencoder per tapped layer learns the manifold of clean features (all trained in one loop over clean training
images; the classifier stays frozen). An input's per-layer features are [reconstruction MSE averaged over
(C, H, W), latent norm |z|], plus the norm of the log-variance for the VAE (as the paper's code does); an
IsolationForest on them (per layer, and on all layers concatenated) scores how anomalous the input is. Thresholds
are set on held-out clean images to a chosen false-positive rate. The same fit also trains the two baselines
(Mahalanobis on the same layers, and a MagNet input autoencoder), so every evaluation can show them side by side.

Detector files are safetensors + JSON metadata, never pickle: IsolationForests cannot be stored without pickle,
so the file keeps the features they were fitted on and :meth:`LayerwiseDetector.load` refits them with the
recorded seed (same data + same ``random_state`` = the same forest, so scores round-trip exactly).

    >>> from advkit.datasets import open_dataset
    >>> from advkit.models import ModelWrapper, Preprocessing, create_architecture
    >>> ds = open_dataset("digits")
    >>> torch.manual_seed(0) and None
    >>> model = ModelWrapper(create_architecture("small-cnn", in_channels=1, input_size=8), Preprocessing())
    >>> det = LayerwiseDetector.fit(model, ds, ds.indices("train")[:200], settings=DetectorSettings(epochs=1, filters=4, n_estimators=10))
    >>> scores = det.score(ds.batch(ds.indices("test")[:3])[0])
    >>> sorted(scores)[:3], scores["ae"].shape
    (['ae', 'ae[block1]', 'ae[block2]'], (3,))
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from advkit.datasets import ImageDataset
from advkit.detectors.autoencoders import KINDS, InputAutoencoder, LayerAutoencoder, build_autoencoder
from advkit.detectors.baselines import fit_mahalanobis, mahalanobis_score, pooled
from advkit.detectors.features import layer_features
from advkit.detectors.taps import default_layers, layer_shapes
from advkit.errors import DetectorError, SettingsError
from advkit.models import ModelWrapper
from advkit.rng import derive_seed, generator, seeded_globals
from advkit.runtime import ProgressEvent, ProgressFn, no_progress, write_atomically

FORMAT = "advkit-detector"
FORMAT_VERSION = 2  # files are written as 1 unless they hold the VAE's log-variance feature (new in 2)
_META_KEY = "advkit_detector"
ERRORS = ("rel-l1", "mse")
CACHE_BYTES = 512 * 2**20  # features of all training images are kept in memory up to this size
MAGNET_LR = 1e-2  # MagNet's sigmoid autoencoder barely moves at 1e-3 within a CPU-sized number of epochs


@dataclass(frozen=True)
class DetectorSettings:
    """How a detector is fitted.

    Attributes:
        kind: autoencoder type, "wae" (WAE-MMD, the paper's default), "ae" or "vae".
        filters: channels of each encoder conv (the paper uses 128; 32 keeps a CPU fit under a minute).
        latent: size of each layer's code z (the paper's 64).
        epochs: passes over the clean training images (the paper: 150; see docs/detectors.md for the default).
        batch_size: images per optimisation step (the paper's 100).
        lr: Adam learning rate (the paper's 1e-3); WAE and VAE multiply it by 0.5, 0.2, 0.1 after 1/2, 2/3, 5/6
            of the epochs (the paper's steps at 75, 100, 125 of 150).
        fpr: target false-positive rate of the thresholds, calibrated on held-out clean images.
        calib_fraction: share of the given training images held out for calibration (never trained on).
        n_estimators: trees of each IsolationForest.
        error: the per-layer reconstruction error fed to the IsolationForest: "rel-l1" (mean absolute error over
            the features' RMS, advkit's default) or "mse" (the paper's).
        standardise: feed each autoencoder its layer's features standardised per channel (clean-image mean and
            std), so channels that are near zero on clean images weigh as much as strong ones. Off by default:
            it lowered AUROC on digits (see docs/detectors.md).
        seed: every random choice (initialisation, shuffling, prior samples, hold-out, forests).
    """

    kind: str = "wae"
    filters: int = 32
    latent: int = 64
    epochs: int = 20
    batch_size: int = 100
    lr: float = 1e-3
    fpr: float = 0.05
    calib_fraction: float = 0.1
    n_estimators: int = 200
    error: str = "rel-l1"
    standardise: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SettingsError(f"autoencoder kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for name in ("filters", "latent", "epochs", "batch_size", "n_estimators"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.fpr < 1:
            raise SettingsError(f"fpr must lie in (0, 1), got {self.fpr}")
        if not 0 < self.calib_fraction < 1:
            raise SettingsError(f"calib_fraction must lie in (0, 1), got {self.calib_fraction}")
        if self.error not in ERRORS:
            raise SettingsError(f"error must be one of {', '.join(ERRORS)}, got {self.error!r}")
        if not self.lr > 0:
            raise SettingsError(f"lr must be > 0, got {self.lr}")


@dataclass
class Features:
    """What the detector computes for N inputs (L tapped layers).

    Attributes:
        mse: (N, L) reconstruction MSE per layer, averaged over (C, H, W) (the paper's error).
        rel_l1: (N, L) mean absolute reconstruction error over (C, H, W) divided by the features' RMS.
        znorm: (N, L) L2 norm of each layer's code.
        logvar: (N, L) L2 norm of each layer's VAE log-variance (zeros for the other kinds).
        z: (N, L, latent) codes (the supervised detector's input, concatenated over layers).
        maha: (N, L) Mahalanobis distance to the closest class per layer (baseline).
        magnet: (N,) mean absolute reconstruction error of the input autoencoder (baseline).
        pred: (N,) the classifier's prediction.
    """

    mse: np.ndarray
    rel_l1: np.ndarray
    znorm: np.ndarray
    logvar: np.ndarray
    z: np.ndarray
    maha: np.ndarray
    magnet: np.ndarray
    pred: np.ndarray

    def unsupervised(self, error: str = "rel-l1", logvar: bool = False) -> np.ndarray:
        """(N, 2L): [err_1, |z_1|, err_2, |z_2|, ...], the paper's "ae_encoded" features (``error`` "mse" or "rel-l1").

        With ``logvar`` (the VAE) each layer adds the norm of its log-variance: (N, 3L), [err_1, |z_1|, |logvar_1|, ...].
        """
        err = self.mse if error == "mse" else self.rel_l1
        cols = [err, self.znorm, self.logvar] if logvar else [err, self.znorm]
        return np.stack(cols, axis=2).reshape(len(self.mse), -1)  # (N, L, 2 or 3) -> (N, 2L or 3L)

    @property
    def latents(self) -> np.ndarray:
        """(N, L * latent) concatenated codes."""
        return self.z.reshape(len(self.z), -1)  # (N, L, latent) -> (N, L * latent)

    def subset(self, mask: np.ndarray) -> Features:
        return Features(*(getattr(self, f.name)[mask] for f in fields(self)))

    @staticmethod
    def concat(parts: Sequence[Features]) -> Features:
        return Features(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Features)))


class LayerwiseDetector:
    """Layer-wise autoencoder detector bound to one classifier (see the module docstring).

    Build one with :meth:`fit` or :meth:`load`. Scores are "higher = more likely adversarial":
    ``ae[LAYER]`` / ``ae`` (IsolationForest per layer / on all layers, the paper's detector), ``recon`` (the sum over
    layers of the reconstruction error standardised with held-out clean statistics, an advkit addition),
    ``mahalanobis[LAYER]`` /
    ``mahalanobis`` (sum of standardised layer scores) and ``magnet``.
    """

    def __init__(self, model: ModelWrapper, layers: list[str], shapes: dict[str, tuple[int, int, int]],
                 settings: DetectorSettings, autoencoders: dict[str, LayerAutoencoder], magnet: InputAutoencoder,
                 maha: dict[str, tuple[torch.Tensor, torch.Tensor]], norms: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 fit_features: np.ndarray, calib: Features, meta: dict[str, Any],
                 fitted_indices: np.ndarray | None = None) -> None:
        self.model = model
        self.norms = norms  # layer -> (mean, std), each (C, 1, 1): what the autoencoders see is (f - mean) / std
        self.layers = layers
        self.shapes = shapes
        self.settings = settings
        self.autoencoders = autoencoders
        self.magnet = magnet
        self.maha = maha
        self.fit_features = fit_features  # (N_fit, 2L) unsupervised features of the training images; (N_fit, 3L) for a VAE
        self.width = _feature_width(fit_features, layers, settings.kind)  # features per layer: 2, or 3 with the VAE's |logvar|
        self.calib = calib  # features of the held-out clean images
        self.meta = meta
        # dataset indices of every image the fit used (trained on or held out), so an evaluation can leave them out;
        # None for files written before they were recorded
        self.fitted_indices = fitted_indices
        self._forests = self._fit_forests()
        calib_scores = self._scores(calib, calibrating=True)
        self.thresholds = {name: float(np.quantile(s, 1 - settings.fpr)) for name, s in calib_scores.items()}

    # ---------------------------------------------------------------------------------------------- fitting

    @classmethod
    def fit(cls, model: ModelWrapper, dataset: ImageDataset, indices: np.ndarray, *, layers: Sequence[str] | None = None,
            settings: DetectorSettings | None = None, progress: ProgressFn = no_progress, batch_size: int = 256
            ) -> LayerwiseDetector:
        """Fit on the clean images ``dataset[indices]`` (their labels are used by the Mahalanobis baseline only).

        A seeded ``settings.calib_fraction`` of ``indices`` is held out to calibrate thresholds; every autoencoder
        (and the MagNet baseline) trains on the rest in one loop, with the classifier frozen in eval mode.
        """
        s = settings or DetectorSettings()
        indices = np.asarray(indices, np.int64)
        n_calib = int(round(len(indices) * s.calib_fraction))
        if n_calib < 10 or len(indices) - n_calib < 20:
            raise DetectorError(f"fitting needs at least 20 training and 10 held-out images; got {len(indices)} images "
                                f"with {s.calib_fraction:g} of them held out")
        channels, (h, w) = dataset.channels, dataset.size
        model.adapt(torch.zeros(1, channels, h, w))  # the model's one-line error for images it does not take
        input_shape = (model.preprocessing.channels or channels, h, w)
        layers = list(dict.fromkeys(layers)) if layers else default_layers(model.net, input_shape)  # a repeat taps once
        shapes = layer_shapes(model.net, layers, input_shape)
        order = torch.randperm(len(indices), generator=generator(s.seed, "detector-calibration")).numpy()
        calib_idx, fit_idx = np.sort(indices[order[:n_calib]]), np.sort(indices[order[n_calib:]])
        began = time.perf_counter()
        nonneg, norms = _feature_stats(model, layers, dataset, fit_idx[:1024], s.standardise)
        with seeded_globals(derive_seed(s.seed, "detector-init")):
            aes = {name: build_autoencoder(shapes[name], kind=s.kind, filters=s.filters, latent=s.latent,
                                           nonnegative=nonneg[name]) for name in layers}
            magnet = InputAutoencoder(channels)
        device = model.device
        for module in (*aes.values(), magnet):
            module.to(device)
        _train(model, layers, aes, norms, magnet, dataset, fit_idx, s, progress)
        train_seconds = time.perf_counter() - began
        collected = _collect(model, layers, aes, norms, magnet, None, dataset, fit_idx, batch_size, pooled_too=True)
        features, pooled_feats = collected
        labels = torch.from_numpy(dataset.labels[fit_idx])
        num_classes = model.preprocessing.num_classes or dataset.num_classes
        maha = {name: fit_mahalanobis(pooled_feats[name], labels, num_classes) for name in layers}
        calib, _ = _collect(model, layers, aes, norms, magnet, maha, dataset, calib_idx, batch_size)
        meta = {
            "fingerprint": model.fingerprint(), "input_shape": list(input_shape), "num_classes": num_classes,
            "nonnegative": nonneg, "dataset": dataset.name, "n_fit": len(fit_idx), "n_calib": len(calib_idx),
            "train_seconds": round(train_seconds, 3), "channels": channels, "dataset_images": len(dataset),
            "dataset_domain": dataset.domain,
        }
        return cls(model, layers, shapes, s, aes, magnet, maha, norms, features.unsupervised(s.error, s.kind == "vae"), calib, meta,
                   np.sort(indices))

    def fitted_on(self, dataset: ImageDataset, indices: np.ndarray) -> np.ndarray:
        """(N,) bool: which of ``dataset[indices]`` this detector was fitted on (trained on or calibrated with).

        The dataset counts as the fit's when its name, domain and size are the fit's; all False when they differ,
        or for a file written before the fitted indices were recorded.
        """
        same = (self.meta.get("dataset"), self.meta.get("dataset_domain"), self.meta.get("dataset_images")) == (
            dataset.name, dataset.domain, len(dataset))
        if self.fitted_indices is None or not same:
            return np.zeros(len(indices), bool)
        return np.isin(indices, self.fitted_indices)

    def _fit_forests(self) -> dict[str, Any]:
        from sklearn.ensemble import IsolationForest

        forests = {}
        for name, cols in self._forest_columns().items():
            forest = IsolationForest(n_estimators=self.settings.n_estimators, random_state=derive_seed(self.settings.seed, "iforest", name) % 2**32, n_jobs=1)
            forests[name] = forest.fit(self.fit_features[:, cols])
        return forests

    def _forest_columns(self) -> dict[str, list[int]]:
        w = self.width
        cols = {f"ae[{name}]": list(range(w * i, w * i + w)) for i, name in enumerate(self.layers)}
        cols["ae"] = list(range(w * len(self.layers)))
        return cols

    # ---------------------------------------------------------------------------------------------- scoring

    @property
    def scores_logvar(self) -> bool:
        """Whether the scores use each layer's |logvar| (a VAE detector fitted since that feature exists)."""
        return self.width == 3

    @property
    def score_names(self) -> list[str]:
        """Every score this detector gives, in display order."""
        return [*self._forest_columns(), "recon", *(f"mahalanobis[{n}]" for n in self.layers), "mahalanobis", "magnet"]

    def features(self, x: torch.Tensor, batch_size: int = 256) -> Features:
        """Detector features of images x (N, C, H, W) in [0, 1]."""
        if x.dim() != 4 or not torch.is_floating_point(x):
            raise DetectorError(f"expected float images (N, C, H, W) in [0, 1], got {x.dtype} of shape {tuple(x.shape)}")
        if len(x) == 0:
            raise DetectorError("no images to score")
        channels = int(self.meta.get("channels", x.shape[1]))
        if x.shape[1] != channels:
            raise DetectorError(f"this detector was fitted on {channels}-channel images, got {x.shape[1]} channel(s)")
        size = tuple(self.meta.get("input_shape", x.shape[1:]))[1:]
        if tuple(x.shape[2:]) != size:
            raise DetectorError(f"this detector was fitted on {size[0]}x{size[1]} images, got {x.shape[2]}x{x.shape[3]}")
        if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
            raise DetectorError("images must be finite pixels in [0, 1]")
        x = x.detach().float()  # the autoencoders are float32; the wrapper casts for the net itself
        parts = [_batch_features(self.model, self.layers, self.autoencoders, self.norms, self.magnet, self.maha, x[i:i + batch_size])[0]
                 for i in range(0, len(x), batch_size)]
        return Features.concat(parts)

    def scores(self, feats: Features) -> dict[str, np.ndarray]:
        """Every score (``score_names``) for precomputed features; (N,) float64 each, higher = more anomalous."""
        return self._scores(feats)

    def _scores(self, feats: Features, calibrating: bool = False) -> dict[str, np.ndarray]:
        unsup = feats.unsupervised(self.settings.error, self.scores_logvar)
        out = {name: -self._forests[name].score_samples(unsup[:, cols]) for name, cols in self._forest_columns().items()}
        err, ref = (feats.mse, self.calib.mse) if self.settings.error == "mse" else (feats.rel_l1, self.calib.rel_l1)
        out["recon"] = ((err - ref.mean(0)) / (ref.std(0) + 1e-12)).sum(1)  # one-sided: only high errors count
        mean, std = self.calib.maha.mean(0), self.calib.maha.std(0) + 1e-12
        for i, name in enumerate(self.layers):
            out[f"mahalanobis[{name}]"] = feats.maha[:, i].astype(np.float64)
        out["mahalanobis"] = ((feats.maha - mean) / std).sum(1).astype(np.float64)
        out["magnet"] = feats.magnet.astype(np.float64)
        return out

    def score(self, x: torch.Tensor, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Every score for images x (N, C, H, W) in [0, 1]."""
        return self.scores(self.features(x, batch_size))

    def flags(self, scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """(N,) bool per score: above its threshold (calibrated to ``settings.fpr`` on held-out clean images)."""
        return {name: s > self.thresholds[name] for name, s in scores.items()}

    def standardisation(self) -> dict[str, np.ndarray]:
        """Mean and std (each (L,)) of clean training error, |z| (and the VAE's |logvar|) per layer, for the adaptive attack."""
        f = self.fit_features.reshape(len(self.fit_features), len(self.layers), self.width)  # (N, wL) -> (N, L, w)
        names = ("err", "znorm", "logvar")[:self.width]
        return {f"{name}_{stat}": value for i, name in enumerate(names)
                for stat, value in (("mean", f[:, :, i].mean(0)), ("std", f[:, :, i].std(0) + 1e-12))}

    # ------------------------------------------------------------------------------------------- save / load

    def save(self, path: str | Path, *, overwrite: bool = True) -> None:
        """Write the detector as one safetensors file (weights, fitting features, JSON metadata); never pickle. With
        ``overwrite=False`` an existing file, also one another process wrote meanwhile, stays: FileExistsError."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            raise DetectorError(f"detector files are safetensors (no pickle): name it {path.with_suffix('.safetensors').name}, not {path.name}")
        tensors: dict[str, torch.Tensor] = {}
        for i, name in enumerate(self.layers):
            for key, value in self.autoencoders[name].state_dict().items():
                tensors[f"ae.{i}.{key}"] = value
            tensors[f"maha.{i}.means"], tensors[f"maha.{i}.precision"] = self.maha[name]
            tensors[f"norm.{i}.mean"], tensors[f"norm.{i}.std"] = self.norms[name]
        for key, value in self.magnet.state_dict().items():
            tensors[f"magnet.{key}"] = value
        tensors["fit.features"] = torch.from_numpy(self.fit_features)
        if self.fitted_indices is not None:
            tensors["fit.indices"] = torch.from_numpy(self.fitted_indices.astype(np.int64))
        for f in fields(Features):
            tensors[f"calib.{f.name}"] = torch.from_numpy(np.ascontiguousarray(getattr(self.calib, f.name)))
        meta = {"format": FORMAT, "format_version": 2 if self.scores_logvar else 1, "layers": self.layers,
                "shapes": {k: list(v) for k, v in self.shapes.items()}, "settings": asdict(self.settings), **self.meta}
        state = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        write_atomically(path, lambda tmp: save_file(state, str(tmp), metadata={_META_KEY: json.dumps(meta)}), replace=overwrite)

    @staticmethod
    def read_meta(path: str | Path) -> dict[str, Any]:
        """The JSON metadata of a detector file (model fingerprint, layers, settings, ...), without loading it."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise DetectorError(f"no such detector file: {path}")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
        except (SafetensorError, OSError, ValueError) as exc:
            raise DetectorError(f"{path} is not a readable detector file ({str(exc).splitlines()[0][:120]})") from None
        try:
            meta = json.loads(metadata[_META_KEY])
        except (KeyError, json.JSONDecodeError):
            raise DetectorError(f"{path} is a safetensors file but not an advkit detector") from None
        if not isinstance(meta, dict):  # valid JSON but not an object: .get below would crash
            raise DetectorError(f"{path} is a safetensors file but not an advkit detector (metadata is not a JSON object)")
        if meta.get("format") != FORMAT or meta.get("format_version", 0) > FORMAT_VERSION:
            raise DetectorError(f"{path} has detector format {meta.get('format_version')}; this advkit reads up to {FORMAT_VERSION}")
        return meta

    @classmethod
    def load(cls, path: str | Path, model: ModelWrapper) -> LayerwiseDetector:
        """Load a detector file for ``model``; a DetectorError if it was fitted for another model."""
        from safetensors.torch import load_file

        meta = cls.read_meta(path)
        theirs, ours = meta.get("fingerprint", ""), model.fingerprint()
        if theirs != ours:
            raise DetectorError(f"{path} was fitted for another model (fingerprint {theirs[:12]}, this model's is {ours[:12]}); "
                                "fit a detector for this model with advkit detect fit")
        tensors = load_file(str(path))
        try:
            settings = DetectorSettings(**meta["settings"])
            layers = list(meta["layers"])
            shapes = {k: (int(v[0]), int(v[1]), int(v[2])) for k, v in meta["shapes"].items()}
            aes, maha, norms = {}, {}, {}
            for i, name in enumerate(layers):
                ae = build_autoencoder(shapes[name], kind=settings.kind, filters=settings.filters, latent=settings.latent,
                                       nonnegative=bool(meta["nonnegative"][name]))
                prefix = f"ae.{i}."
                ae.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
                aes[name] = ae.to(model.device).eval()
                maha[name] = (tensors[f"maha.{i}.means"], tensors[f"maha.{i}.precision"])
                norms[name] = (tensors[f"norm.{i}.mean"].to(model.device), tensors[f"norm.{i}.std"].to(model.device))
            magnet = InputAutoencoder(int(meta["channels"]))
            magnet.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("magnet.")})
            calib = _calib_features(tensors)
            fit_features = tensors["fit.features"].numpy()
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise DetectorError(f"{path} is a damaged detector file ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
        _check_takes(model, layers, shapes, meta.get("input_shape"), path)
        keep = ("fingerprint", "input_shape", "num_classes", "nonnegative", "dataset", "n_fit", "n_calib", "train_seconds", "channels",
                "model", "dataset_images", "dataset_domain")
        fitted = tensors.get("fit.indices")
        return cls(model, layers, shapes, settings, aes, magnet.to(model.device).eval(), maha, norms, fit_features, calib,
                   {k: meta[k] for k in keep if k in meta}, None if fitted is None else fitted.numpy())


# ------------------------------------------------------------------------------------------------- helpers


def _check_takes(model: ModelWrapper, layers: list[str], shapes: dict[str, tuple[int, int, int]], input_shape: Any,
                 path: str | Path) -> None:
    """A DetectorError unless the net runs on the detector's (C, H, W) input and its layers give the fitted shapes:
    the same weights built for another input size (``--arch-param``) pass the fingerprint check but not this one."""
    if not isinstance(input_shape, list) or len(input_shape) != 3:
        raise DetectorError(f"{path} is a damaged detector file (input_shape {input_shape!r})")
    c, h, w = (int(v) for v in input_shape)
    try:
        found = layer_shapes(model.net, layers, (c, h, w))
    except RuntimeError as exc:
        raise DetectorError(f"{path}: this model cannot take the {c}x{h}x{w} inputs the detector was fitted on (check --arch "
                            f"and --arch-param): {str(exc).splitlines()[0]}") from None
    other = [f"{k} {found[k]} vs {shapes[k]}" for k in layers if found[k] != shapes[k]]
    if other:
        raise DetectorError(f"{path}: this model's layers give other shapes than the detector was fitted on ({', '.join(other[:2])})")


def _feature_stats(model: ModelWrapper, layers: list[str], dataset: ImageDataset, idx: np.ndarray, standardise: bool
                   ) -> tuple[dict[str, bool], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Per layer: whether the decoder may end in ReLU, and the (mean, std) (each (C, 1, 1)) fed features are shifted by."""
    feats, _ = layer_features(model, layers, dataset.batch(idx)[0].to(model.device))
    nonneg, norms = {}, {}
    for name in layers:
        f = feats[name]
        if standardise:
            mean, std = f.mean(dim=(0, 2, 3)), f.std(dim=(0, 2, 3)) + 1e-3 * (f.std() + 1e-8)
        else:
            mean, std = torch.zeros(f.shape[1], device=f.device), torch.ones(f.shape[1], device=f.device)
        norms[name] = (mean.view(-1, 1, 1), std.view(-1, 1, 1))  # (C,) -> (C, 1, 1)
        nonneg[name] = bool(f.min() >= 0) and not standardise
    return nonneg, norms


def _feature_width(fit_features: np.ndarray, layers: list[str], kind: str) -> int:
    """Unsupervised features per layer: 2, or 3 for a VAE fitted since the log-variance feature exists."""
    total = fit_features.shape[1] if fit_features.ndim == 2 else -1
    width = total // max(len(layers), 1)
    if width * len(layers) != total or width not in ((2, 3) if kind == "vae" else (2,)):
        raise DetectorError(f"a {kind} detector on {len(layers)} layer(s) cannot have fitting features of shape {fit_features.shape}")
    return width


def _calib_features(tensors: dict[str, torch.Tensor]) -> Features:
    """The held-out features stored in a detector file; files written before ``logvar`` existed lack it."""
    stored = {f.name: tensors[f"calib.{f.name}"].numpy() for f in fields(Features) if f.name != "logvar"}
    logvar = tensors.get("calib.logvar")
    return Features(**stored, logvar=np.zeros_like(stored["znorm"]) if logvar is None else logvar.numpy())


def reconstruction_errors(recon: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) MSE and (B,) relative L1 error (mean |recon - f| over the RMS of f) of reconstructions of f (B, C, H, W)."""
    diff = (recon - f).flatten(1)
    return diff.pow(2).mean(1), diff.abs().mean(1) / (f.flatten(1).pow(2).mean(1).sqrt() + 1e-8)


def normalised(f: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Layer features (B, C, H, W) as the layer's autoencoder sees them."""
    return (f - norm[0]) / norm[1]


class LayerStats(NamedTuple):
    """What one layer's autoencoder says about B inputs: each (B,), but ``z`` (B, latent)."""

    mse: torch.Tensor
    rel_l1: torch.Tensor
    z: torch.Tensor
    znorm: torch.Tensor
    logvar: torch.Tensor  # norm of the VAE's log-variance; zeros for the other kinds


def layer_stats(ae: LayerAutoencoder, features: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor]) -> LayerStats:
    """Reconstruction errors, code and norms of one layer's raw features (B, C, H, W) (see :class:`Features`).

    Differentiable: the caller decides on ``torch.no_grad`` (scoring) or gradients (the adaptive attack).
    """
    f = normalised(features, norm)
    z, logvar = ae.encode_stats(f)
    mse, rel = reconstruction_errors(ae.decode(z), f)
    znorm = z.norm(dim=1)
    return LayerStats(mse, rel, z, znorm, torch.zeros_like(znorm) if logvar is None else logvar.norm(dim=1))


def _lr_factor(kind: str, epoch: int, epochs: int) -> float:
    """The paper's step schedule (x0.5 at 75, x0.2 at 100, x0.1 at 125 of 150 epochs), scaled to ``epochs``."""
    if kind == "ae":
        return 1.0
    for start, factor in ((5 / 6, 0.1), (2 / 3, 0.2), (1 / 2, 0.5)):
        if epoch >= math.ceil(start * epochs) and epochs >= 4:
            return factor
    return 1.0


def _train(model: ModelWrapper, layers: list[str], aes: dict[str, LayerAutoencoder],
           norms: dict[str, tuple[torch.Tensor, torch.Tensor]], magnet: InputAutoencoder,
           dataset: ImageDataset, fit_idx: np.ndarray, s: DetectorSettings, progress: ProgressFn) -> None:
    """All autoencoders (and MagNet's) in one loop over the clean images; each sees its layer's detached features.

    When the layers' features of all images fit in ``CACHE_BYTES`` they are computed once and reused every epoch
    (the classifier is frozen, so they never change); otherwise every batch runs the classifier again.
    """
    params = [p for m in aes.values() for p in m.parameters()]
    opt = torch.optim.Adam([{"params": params, "lr": s.lr}, {"params": list(magnet.parameters()), "lr": MAGNET_LR}])
    shuffle, noise = generator(s.seed, "detector-shuffle"), generator(s.seed, "detector-noise")
    for m in (*aes.values(), magnet):
        m.train()
    device = model.device
    per_image = sum(int(np.prod(a.shape)) for a in aes.values()) * 4
    cache = _feature_cache(model, layers, dataset, fit_idx) if per_image * len(fit_idx) <= CACHE_BYTES else None
    for epoch in range(s.epochs):
        opt.param_groups[0]["lr"] = s.lr * _lr_factor(s.kind, epoch, s.epochs)
        order = torch.randperm(len(fit_idx), generator=shuffle).numpy()  # positions in fit_idx
        total, count = 0.0, 0
        for start in range(0, len(order), s.batch_size):
            pos = np.sort(order[start:start + s.batch_size])
            if cache is not None:
                x, feats = cache[0][pos].to(device), {name: cache[1][name][pos].to(device) for name in layers}
            else:
                x = dataset.batch(fit_idx[pos])[0].to(device)
                feats, _ = layer_features(model, layers, x)  # classifier frozen: no_grad, eval mode
            loss = sum((aes[name].loss(normalised(feats[name], norms[name]), noise) for name in layers), magnet.loss(x, noise))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count = total + float(loss.detach()) * len(x), count + len(x)
        progress(ProgressEvent("fit autoencoders", epoch + 1, s.epochs, {"loss": total / max(count, 1)}))
    for m in (*aes.values(), magnet):
        m.eval()


def _feature_cache(model: ModelWrapper, layers: list[str], dataset: ImageDataset, idx: np.ndarray, batch_size: int = 256
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Images (N, C, H, W) and each layer's features (N, C', H', W') of ``dataset[idx]``, on the CPU."""
    images, feats = [], {name: [] for name in layers}
    for start in range(0, len(idx), batch_size):
        x = dataset.batch(idx[start:start + batch_size])[0]
        out, _ = layer_features(model, layers, x.to(model.device))
        images.append(x)
        for name in layers:
            feats[name].append(out[name].cpu())
    return torch.cat(images), {name: torch.cat(parts) for name, parts in feats.items()}


@torch.no_grad()
def _batch_features(model: ModelWrapper, layers: list[str], aes: dict[str, LayerAutoencoder],
                    norms: dict[str, tuple[torch.Tensor, torch.Tensor]], magnet: InputAutoencoder,
                    maha: dict[str, tuple[torch.Tensor, torch.Tensor]] | None, x: torch.Tensor
                    ) -> tuple[Features, dict[str, torch.Tensor]]:
    x = x.to(model.device)
    feats, logits = layer_features(model, layers, x)
    mse, rel, znorm, lvnorm, zs, dist, pools = [], [], [], [], [], [], {}
    for name in layers:
        stats = layer_stats(aes[name], feats[name], norms[name])
        mse.append(stats.mse)
        rel.append(stats.rel_l1)
        znorm.append(stats.znorm)
        lvnorm.append(stats.logvar)
        zs.append(stats.z)
        pools[name] = pooled(feats[name]).cpu()
        if maha is not None:
            means, precision = maha[name]
            dist.append(mahalanobis_score(pools[name], means, precision))
    n = len(x)
    out = Features(
        torch.stack(mse, 1).double().cpu().numpy(), torch.stack(rel, 1).double().cpu().numpy(),
        torch.stack(znorm, 1).double().cpu().numpy(), torch.stack(lvnorm, 1).double().cpu().numpy(),
        torch.stack(zs, 1).cpu().numpy(),  # L x (N, latent) -> (N, L, latent)
        torch.stack(dist, 1).double().numpy() if dist else np.zeros((n, len(layers))),
        magnet.score(x).double().cpu().numpy(), logits.argmax(1).cpu().numpy(),
    )
    return out, pools


def _collect(model: ModelWrapper, layers: list[str], aes: dict[str, LayerAutoencoder],
             norms: dict[str, tuple[torch.Tensor, torch.Tensor]], magnet: InputAutoencoder,
             maha: dict[str, tuple[torch.Tensor, torch.Tensor]] | None, dataset: ImageDataset, idx: np.ndarray,
             batch_size: int, pooled_too: bool = False) -> tuple[Features, dict[str, torch.Tensor]]:
    parts, pools = [], []
    for start in range(0, len(idx), batch_size):
        feats, pool = _batch_features(model, layers, aes, norms, magnet, maha, dataset.batch(idx[start:start + batch_size])[0])
        parts.append(feats)
        if pooled_too:
            pools.append(pool)
    merged = {name: torch.cat([p[name] for p in pools]) for name in layers} if pooled_too else {}
    return Features.concat(parts), merged


__all__ = ["DetectorSettings", "Features", "LayerwiseDetector"]
