"""The layer-wise autoencoder detector on real data (sklearn digits): detection, calibration, files, seeds."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from advkit.attacks import create_attack
from advkit.datasets import ImageDataset
from advkit.detectors import DetectorSettings, Features, LayerwiseDetector
from advkit.detectors import evaluate as evaluate_module
from advkit.detectors.adaptive import adaptive_pgd, detector_proxy
from advkit.detectors.detector import normalised
from advkit.detectors.evaluate import auroc, evaluate, fgsm_training_set, matched_noise
from advkit.detectors.features import layer_features
from advkit.errors import AdvkitError, DetectorError
from advkit.models import ModelWrapper, create_architecture

SETTINGS = DetectorSettings(epochs=8, filters=16, n_estimators=100, seed=0)


@pytest.fixture(scope="module")
def detector(digits_model: ModelWrapper, digits: ImageDataset) -> LayerwiseDetector:
    return LayerwiseDetector.fit(digits_model, digits, digits.indices("train"), settings=SETTINGS)


@pytest.fixture(scope="module")
def pgd_set(digits_model: ModelWrapper, digits: ImageDataset) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]:
    idx = digits.indices("test")[:120]
    x, y = digits.batch(idx)
    result = create_attack("pgd", eps=0.2, alpha=0.02, steps=20)(digits_model, x, y)
    keep = (result.success & (digits_model.logits(x).argmax(1) == y)).numpy()
    return idx[keep], x[keep], y[keep], result.x_adv[keep]


def test_detects_pgd_well_above_chance(detector: LayerwiseDetector, pgd_set: tuple) -> None:
    _, x, _, x_adv = pgd_set
    assert len(x) >= 40  # PGD at eps 0.2 fools the digits CNN on most samples
    clean, adv = detector.score(x), detector.score(x_adv)
    assert auroc(clean["ae"], adv["ae"]) > 0.6  # about 0.7 measured; chance is 0.5
    # "recon" (summed standardised errors) is at chance here (0.49 measured): it helps on MNIST, not on 8x8 digits
    assert auroc(clean["mahalanobis"], adv["mahalanobis"]) > 0.85
    # every score is "higher = more anomalous": adversarial scores are higher on average for the combined detector
    assert adv["ae"].mean() > clean["ae"].mean()


def test_scoring_checks_its_images(detector: LayerwiseDetector, pgd_set: tuple) -> None:
    """Found by a library sweep: 9x9 images were scored without a word, 5x pixels and NaN too, float64 crashed."""
    _, x, _, _ = pgd_set
    for bad, message in [(x[:0], "no images to score"), (torch.rand(2, 1, 9, 9), "fitted on 8x8 images, got 9x9"),
                         (x[:2] * 5, r"finite pixels in \[0, 1\]"), (torch.full_like(x[:2], float("nan")), "finite pixels")]:
        with pytest.raises(DetectorError, match=message):
            detector.score(bad)
    np.testing.assert_allclose(detector.score(x[:3].double())["ae"], detector.score(x[:3])["ae"])


def test_thresholds_hold_their_false_positive_rate_on_unseen_clean_images(detector: LayerwiseDetector, digits: ImageDataset) -> None:
    x, _ = digits.batch(digits.indices("test"))
    flagged = detector.flags(detector.score(x))
    assert detector.meta["n_calib"] == round(len(digits.indices("train")) * SETTINGS.calib_fraction)
    for name in ("ae", "recon", "mahalanobis", "magnet"):
        assert flagged[name].mean() < 0.15, name  # calibrated to 5% on held-out clean images


def test_file_round_trips_to_identical_scores_without_unpickling(detector: LayerwiseDetector, digits_model: ModelWrapper,
                                                                digits: ImageDataset, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "det.safetensors"
    detector.save(path)

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("loading a detector must not unpickle")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = LayerwiseDetector.load(path, digits_model)
    x, _ = digits.batch(digits.indices("test")[:50])
    before, after = detector.score(x), loaded.score(x)
    assert set(before) == set(after)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)
    assert loaded.thresholds == detector.thresholds


def test_refuses_a_detector_fitted_for_another_model(detector: LayerwiseDetector, tmp_path: Path) -> None:
    path = tmp_path / "det.safetensors"
    detector.save(path)
    other = ModelWrapper(create_architecture("small-cnn", in_channels=1, input_size=8), detector.model.preprocessing)
    with pytest.raises(DetectorError, match="fitted for another model"):
        LayerwiseDetector.load(path, other)


def test_refuses_files_that_are_not_detectors(detector: LayerwiseDetector, tmp_path: Path, digits_model: ModelWrapper) -> None:
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(DetectorError, match="not a readable detector file"):
        LayerwiseDetector.load(bad, digits_model)
    with pytest.raises(DetectorError, match="safetensors"):
        detector.save(tmp_path / "det.pt")  # never a pickle-based .pt
    assert not (tmp_path / "det.pt").exists()


def test_same_seed_gives_the_same_detector(digits_model: ModelWrapper, digits: ImageDataset) -> None:
    small = DetectorSettings(epochs=1, filters=4, n_estimators=20, seed=3)
    idx = digits.indices("train")[:300]
    a = LayerwiseDetector.fit(digits_model, digits, idx, settings=small)
    b = LayerwiseDetector.fit(digits_model, digits, idx, settings=small)
    c = LayerwiseDetector.fit(digits_model, digits, idx, settings=DetectorSettings(epochs=1, filters=4, n_estimators=20, seed=4))
    x, _ = digits.batch(digits.indices("test")[:20])
    np.testing.assert_array_equal(a.score(x)["ae"], b.score(x)["ae"])
    assert not np.array_equal(a.score(x)["ae"], c.score(x)["ae"])


def test_unknown_layer_names_fail_with_close_matches(digits_model: ModelWrapper, digits: ImageDataset) -> None:
    with pytest.raises(DetectorError, match="did you mean block1"):
        LayerwiseDetector.fit(digits_model, digits, digits.indices("train")[:100], layers=["blok1"],
                              settings=DetectorSettings(epochs=1, filters=4))


def test_images_the_model_does_not_take_fail_in_one_line(digits_model: ModelWrapper) -> None:
    from advkit.datasets import open_dataset

    mnist = open_dataset("mnist-subset")
    with pytest.raises(AdvkitError, match="the model takes 8x8 images, got 28x28"):
        LayerwiseDetector.fit(digits_model, mnist, mnist.indices("train")[:100], settings=DetectorSettings(epochs=1, filters=4))


def test_evaluation_protocols_and_noisy_negatives(detector: LayerwiseDetector, pgd_set: tuple) -> None:
    idx, x, _, x_adv = pgd_set
    noisy = matched_noise(x, x_adv, idx, seed=0)
    ratio = (noisy - x).flatten(1).norm(dim=1) / (x_adv - x).flatten(1).norm(dim=1)
    assert 0.6 < float(ratio.median()) < 1.2  # same L2 budget (less where clipping to [0, 1] bites)
    ev = evaluate(detector, detector.features(x), detector.features(x_adv), detector.features(noisy),
                  train_fraction=0.4, supervised="logreg", seed=0, quick=True)
    test = ev.test_mask
    assert test is not None and 0 < test.sum() < len(x)
    for section, name in (("unsupervised", "ae"), ("unsupervised", "magnet"), ("supervised", "logreg"),
                          ("supervised", "mahalanobis (LR)")):
        for setting in ("clean", "clean+noisy"):
            row = ev.get(section, name, setting)
            assert row is not None and 0 <= row.auroc <= 1 and row.n_pos == test.sum(), (section, name, setting)
            assert row.n_neg == test.sum() * (2 if setting == "clean+noisy" else 1)
    assert ev.get("supervised", "mahalanobis (LR)", "clean").auroc > 0.85


def test_too_few_samples_for_a_supervised_detector_hold_none_back(detector: LayerwiseDetector, pgd_set: tuple) -> None:
    """20 samples at a 0.3 share: the 6 training samples were held out of every row although no supervised
    detector was trained on them (the unsupervised rows were measured on 14 of the 20)."""
    idx, x, _, x_adv = pgd_set
    idx, x, x_adv = idx[:20], x[:20], x_adv[:20]
    ev = evaluate(detector, detector.features(x), detector.features(x_adv), detector.features(matched_noise(x, x_adv, idx, 0)),
                  train_fraction=0.3, supervised="svc", seed=0, quick=True)
    assert ev.notes == ["supervised detectors skipped: 6 training and 14 test samples (need 10 each)"]
    assert ev.test_mask is not None and ev.test_mask.all() and not any(r.section == "supervised" for r in ev.rows)
    assert ev.get("unsupervised", "ae", "clean").n_pos == 20


def test_adaptive_attack_lowers_the_detector_score(detector: LayerwiseDetector, pgd_set: tuple) -> None:
    _, x, y, _ = pgd_set
    x, y = x[:30], y[:30]
    kwargs = {"eps": 0.2, "alpha": 0.02, "steps": 10}
    oblivious = adaptive_pgd(detector, x, y, weight=0.0, generator=torch.Generator().manual_seed(0), **kwargs)
    adaptive = adaptive_pgd(detector, x, y, weight=5.0, generator=torch.Generator().manual_seed(0), **kwargs)
    assert float((adaptive - x).abs().max()) <= 0.2 + 1e-6
    with torch.no_grad():
        assert float(detector_proxy(detector, adaptive).mean()) < float(detector_proxy(detector, oblivious).mean())


def test_unknown_attack_protocol_trains_on_fgsm_images(detector: LayerwiseDetector, digits_model: ModelWrapper, pgd_set: tuple) -> None:
    idx, x, y, x_adv = pgd_set
    noisy = matched_noise(x, x_adv, idx, seed=0)
    clean_f, adv_f, noisy_f = detector.features(x), detector.features(x_adv), detector.features(noisy)
    fgsm_f, fgsm_noisy_f = fgsm_training_set(detector, x, y, idx, eps=0.2, seed=0)
    known = evaluate(detector, clean_f, adv_f, noisy_f, train_fraction=0.4, supervised="logreg", seed=0, quick=True)
    unknown = evaluate(detector, clean_f, adv_f, noisy_f, train_fraction=0.4, supervised="logreg", seed=0, quick=True,
                       train_adv=fgsm_f, train_noisy=fgsm_noisy_f)
    assert np.array_equal(known.test_mask, unknown.test_mask)  # same split, only the training data differ
    for name in ("logreg", "mahalanobis (LR)"):
        k, u = known.get("supervised", name, "clean"), unknown.get("supervised", name, "clean")
        assert k.n_pos == u.n_pos and k.auroc != u.auroc, name
    assert known.get("unsupervised", "ae", "clean") == unknown.get("unsupervised", "ae", "clean")
    with pytest.raises(ValueError, match="train_noisy"):  # FGSM positives with the tested attack's noise: the old leak
        evaluate(detector, clean_f, adv_f, noisy_f, train_fraction=0.4, supervised="logreg", quick=True, train_adv=fgsm_f)


def test_unknown_protocol_noise_matches_fgsm_not_the_tested_attack(detector: LayerwiseDetector, digits_model: ModelWrapper,
                                                                   pgd_set: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    idx, x, y, x_adv = pgd_set
    fgsm = create_attack("fgsm", eps=0.2)(digits_model, x, y).x_adv
    fgsm_f, fgsm_noisy_f = fgsm_training_set(detector, x, y, idx, eps=0.2, seed=0)
    np.testing.assert_array_equal(fgsm_f.latents, detector.features(fgsm).latents)
    np.testing.assert_array_equal(fgsm_noisy_f.latents, detector.features(matched_noise(x, fgsm, idx, seed=0)).latents)
    tested_noisy_f = detector.features(matched_noise(x, x_adv, idx, seed=0))
    assert not np.allclose(fgsm_noisy_f.latents, tested_noisy_f.latents)  # PGD's L2 differs from FGSM's
    fits: list[tuple[np.ndarray, np.ndarray]] = []
    real_fit = evaluate_module.fit_supervised

    def spy(features: np.ndarray, labels: np.ndarray, *args: object) -> object:
        fits.append((features, labels))
        return real_fit(features, labels, *args)

    monkeypatch.setattr(evaluate_module, "fit_supervised", spy)
    ev = evaluate(detector, detector.features(x), detector.features(x_adv), tested_noisy_f, train_fraction=0.4,
                  supervised="logreg", seed=0, quick=True, train_adv=fgsm_f, train_noisy=fgsm_noisy_f)
    train = ~ev.test_mask
    k = int(train.sum())
    with_noisy = [features for features, labels in fits if len(labels) == 3 * k and features.shape[1] == fgsm_f.latents.shape[1]]
    assert with_noisy, "no clean+noisy fit on the concatenated codes"
    for features in with_noisy:  # rows: clean, noisy, adversarial (training rows of each)
        np.testing.assert_array_equal(features[k:2 * k], fgsm_noisy_f.latents[train])
        np.testing.assert_array_equal(features[2 * k:], fgsm_f.latents[train])


def test_default_adaptive_step_lets_few_steps_reach_the_budget(detector: LayerwiseDetector, pgd_set: tuple) -> None:
    _, x, y, _ = pgd_set
    x, y = x[:40], y[:40]
    x_adv = adaptive_pgd(detector, x, y, eps=0.2, steps=2, weight=0.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        success = (detector.model.logits(x_adv).argmax(1) != y).float().mean()
    # step 2.5 * eps / steps = 0.25: measured 0.98 success; the old fixed step (0.01, or eps / 30) gave 0.03
    assert float(success) > 0.8
    assert float((x_adv - x).abs().max()) <= 0.2 + 1e-6


VAE = DetectorSettings(kind="vae", epochs=2, filters=8, n_estimators=50, seed=0)


@pytest.fixture(scope="module")
def vae_detector(digits_model: ModelWrapper, digits: ImageDataset) -> LayerwiseDetector:
    return LayerwiseDetector.fit(digits_model, digits, digits.indices("train")[:600], settings=VAE)


def test_vae_adds_the_log_variance_norm_per_layer(vae_detector: LayerwiseDetector, digits: ImageDataset) -> None:
    det = vae_detector
    x, _ = digits.batch(digits.indices("test")[:20])
    feats = det.features(x)
    maps, _ = layer_features(det.model, det.layers, x)
    for i, name in enumerate(det.layers):  # the reference code's feature: torch.norm(logvar, dim=1)
        _, logvar = det.autoencoders[name].encode_stats(normalised(maps[name], det.norms[name]))
        np.testing.assert_allclose(feats.logvar[:, i], logvar.norm(dim=1).detach().numpy(), rtol=1e-5)
    assert det.fit_features.shape[1] == 3 * len(det.layers)
    shifted = Features(**{**vars(feats), "logvar": feats.logvar + 5 * feats.logvar.std(0)})
    assert not np.array_equal(det.scores(feats)["ae"], det.scores(shifted)["ae"])  # the forests use it


def test_vae_files_round_trip_and_older_vae_files_still_load(vae_detector: LayerwiseDetector, detector: LayerwiseDetector,
                                                             digits_model: ModelWrapper, digits: ImageDataset, tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path, plain = tmp_path / "vae.safetensors", tmp_path / "wae.safetensors"
    vae_detector.save(path)
    detector.save(plain)
    assert LayerwiseDetector.read_meta(path)["format_version"] == 2 and LayerwiseDetector.read_meta(plain)["format_version"] == 1
    x, _ = digits.batch(digits.indices("test")[:30])
    loaded = LayerwiseDetector.load(path, digits_model)
    for name, values in vae_detector.score(x).items():
        np.testing.assert_array_equal(values, loaded.score(x)[name], err_msg=name)
    # a VAE file from before the log-variance feature: [error, |z|] per layer, no calib.logvar, format 1
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["advkit_detector"])
    keep = [c for c in range(tensors["fit.features"].shape[1]) if c % 3 != 2]
    tensors["fit.features"] = tensors["fit.features"][:, keep].contiguous()
    del tensors["calib.logvar"]
    old = tmp_path / "old-vae.safetensors"
    save_file(tensors, str(old), metadata={"advkit_detector": json.dumps({**meta, "format_version": 1})})
    legacy = LayerwiseDetector.load(old, digits_model)
    feats = legacy.features(x)
    shifted = Features(**{**vars(feats), "logvar": feats.logvar + 100.0})
    np.testing.assert_array_equal(legacy.scores(feats)["ae"], legacy.scores(shifted)["ae"])  # scored as it was fitted
    assert np.isfinite(legacy.scores(feats)["ae"]).all()


def test_adaptive_pgd_checks_its_inputs_and_leaves_the_autoencoders_trainable(detector: LayerwiseDetector,
                                                                              digits: ImageDataset) -> None:
    """adaptive_pgd took images in [0, 3] (and returned x_adv 2.0 from x), eps = 8 meant as 8/255, and int32 labels
    (a torch error); and it left every autoencoder weight with requires_grad False for good."""
    x, y = digits.batch(digits.indices("test")[:4])
    flags = [p.requires_grad for ae in detector.autoencoders.values() for p in ae.parameters()]
    with pytest.raises(AdvkitError, match=r"must lie in \[0, 1\]"):
        adaptive_pgd(detector, x * 3, y, eps=0.1, steps=1)
    with pytest.raises(AdvkitError, match="written 8/255"):
        adaptive_pgd(detector, x, y, eps=8, steps=1)
    x_adv = adaptive_pgd(detector, x, y.int(), eps=0.1, steps=2, generator=torch.Generator().manual_seed(0))
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6
    assert [p.requires_grad for ae in detector.autoencoders.values() for p in ae.parameters()] == flags and any(flags)
