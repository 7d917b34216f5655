"""`advkit robustness`: accuracy per corruption and severity, mCE and the accuracy ratio, report and PNG plot."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from advkit.datasets import ImageDataset
from advkit.errors import DatasetError
from advkit.models import ModelWrapper
from advkit.perturbations.robustness import (
    corruption_correct, mean_corruption_error, published_correct, ratio_excluded, relative_accuracy,
)
from advkit.report import Report

Cli = Callable[..., Any]


def test_mce_and_ratio_by_hand() -> None:
    model = np.array([[0.9, 0.7], [0.5, 0.5]])
    base = np.array([[0.8, 0.6], [0.5, 0.0]])
    ce, mce = mean_corruption_error(model, base)
    assert ce.tolist() == pytest.approx([(0.1 + 0.3) / (0.2 + 0.4), (0.5 + 0.5) / (0.5 + 1.0)])
    assert mce == pytest.approx(ce.mean())
    ratio = relative_accuracy(model, base)
    assert ratio.tolist() == pytest.approx([(0.9 / 0.8 + 0.7 / 0.6) / 2, 1.0])  # a zero baseline accuracy is skipped
    assert ratio_excluded(base, ["fog", "snow"], [1, 5]) == ["snow s5"]  # and named: it was left out silently


def test_corruption_accuracy_is_measured_as_deployed_even_on_a_training_net(digits_model: ModelWrapper,
                                                                            digits: ImageDataset) -> None:
    """corruption_correct ran a net left in train mode with batch statistics, where predict (the clean accuracy beside
    it) and the attacks use the deployed net."""

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 64, 10))
    model = ModelWrapper(net, digits_model.preprocessing)
    with torch.no_grad():  # running statistics far from any batch's: batch statistics would predict otherwise
        net[1].running_mean.fill_(3.0)
        net[1].running_var.fill_(0.01)
    index = digits.indices("test")[:64]
    deployed = corruption_correct(model, digits, index, ["contrast"], [1, 5])
    net.train()  # e.g. a validation callback inside a training loop
    assert np.array_equal(corruption_correct(model, digits, index, ["contrast"], [1, 5]), deployed)
    assert net.training  # and the mode is given back


def test_robustness_cli(cli: Cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    result = cli("robustness", "--model", digits_checkpoint, "--baseline", digits_checkpoint, "--data", "digits",
                 "--corruption", "gaussian_noise", "--corruption", "fog", "--severity", "1", "--severity", "5",
                 "--n", "40", "--out", "r.h5", "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["mCE"] == pytest.approx(1.0) and summary["relative_accuracy"] == pytest.approx(1.0)  # model == baseline
    run = Report(tmp_path / "r.h5").read("robustness")
    correct = run.samples["model_correct"]
    assert correct.shape == (40, 2, 2)
    assert summary["fog.accuracy"] == pytest.approx(correct[:, 1, :].mean())
    png = Path(summary["plot"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    args = ["robustness", "--model", digits_checkpoint, "--baseline", digits_checkpoint, "--data", "digits", "--corruption",
            "gaussian_noise", "--corruption", "fog", "--severity", "1", "--severity", "5", "--n", "40", "--out", "r.h5", "--json"]
    png.unlink()
    rerun = cli(*args)  # the same command again: nothing measured again; the stored run is drawn and shown
    assert rerun.code == 0 and "already complete" in rerun.stderr and rerun.json()["mCE"] == summary["mCE"], rerun.stderr
    assert rerun.json()["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # was never redrawn
    shown = cli(*args[:-1], "--plot", "again.png")
    assert shown.code == 0 and "corruption" in shown.stdout and "fog" in shown.stdout and (tmp_path / "again.png").exists()
    shown = cli("report", "show", "r.h5", "robustness", "--config")
    (tmp_path / "replay.toml").write_text(shown.stdout)
    replay = cli("robustness", "--config", "replay.toml", "--out", "r.h5", "--json")  # was: unknown key(s) corruptions, severities
    assert replay.code == 0 and "already complete" in replay.stderr and replay.json()["mCE"] == summary["mCE"], replay.stderr
    for extra, message in ((["--plot", "x.abc"], "needs one of the extensions"), (["--run", "bad name!"], "invalid run id")):
        early = cli(*args, "--out", "fresh.h5", *extra)  # refused before any corruption is computed
        lines = early.stderr.strip().splitlines()
        assert early.code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], early.stderr
        assert not (tmp_path / "fresh.h5").exists()
    again = cli("robustness", "--model", digits_checkpoint, "--data", "digits", "--corruption", "fgo")
    assert again.code == 1 and "did you mean fog" in again.stderr
    bad = cli("robustness", "--model", digits_checkpoint, "--data", "digits", "--severity", "6")
    assert bad.code == 2


def test_the_same_command_finishing_first_elsewhere_is_taken_as_done(cli: Cli, digits_checkpoint: Path, tmp_path: Path,
                                                                     finishing_elsewhere: Callable[..., None]) -> None:
    # two identical commands on one report: the one that waited for the lock found the run complete and stopped with
    # "already has a complete run 'robustness'; use --run NAME for a new run or --overwrite"
    args = ["robustness", "--model", digits_checkpoint, "--data", "digits", "--corruption", "fog", "--severity", "1",
            "--n", "10", "--json"]
    assert cli(*args, "--out", "first.h5").code == 0
    finishing_elsewhere(tmp_path / "r.h5", Report(tmp_path / "first.h5").read("robustness"))
    second = cli(*args, "--out", "r.h5")
    assert second.code == 0 and "is already complete with this config" in second.stderr, second.stderr
    assert second.json()["clean_accuracy"] == Report(tmp_path / "first.h5").read("robustness").summary["clean_accuracy"]


def test_mce_says_which_corruptions_it_leaves_out(cli: Cli, digits_checkpoint: Path) -> None:
    """Found by a sweep: a corruption the baseline makes no error on has no CE and silently left the mean."""
    args = ["--model", digits_checkpoint, "--baseline", digits_checkpoint, "--data", "digits", "--n", "3",
            "--corruption", "brightness", "--corruption", "glass_blur", "--severity", "1", "--out", "m.h5"]
    result = cli("robustness", *args, "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["brightness.CE"] is None and summary["mCE_excluded"] == "brightness"
    assert summary["mCE"] == pytest.approx(summary["glass_blur.CE"])
    assert "mCE is over 1 of 2 corruptions: the baseline makes no error on brightness" in result.stderr
    table = cli("robustness", *args, "--out", "t.h5")
    assert "(over 1 of 2 corruptions)" in table.stdout, table.stdout


def test_a_baseline_wrong_on_every_severity_gives_no_ratio_and_no_numpy_warning(cli: Cli, digits_checkpoint: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """np.nanmean of a corruption with no defined ratio printed "RuntimeWarning: Mean of empty slice" beside the
    command's own warning (library code never prints)."""
    import warnings

    from advkit.perturbations import robustness

    measure = robustness.corruption_correct
    calls: list[int] = []

    def baseline_always_wrong(*args: Any, **kwargs: Any) -> np.ndarray:
        correct = measure(*args, **kwargs)
        calls.append(1)
        return correct if len(calls) == 1 else np.zeros_like(correct)  # the model first, then the baseline

    monkeypatch.setattr(robustness, "corruption_correct", baseline_always_wrong)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NumPy RuntimeWarning fails the command instead of passing by
        result = cli("robustness", "--model", digits_checkpoint, "--baseline", digits_checkpoint, "--data", "digits",
                     "--n", "5", "--corruption", "fog", "--severity", "1", "--severity", "2", "--out", "w.h5", "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["fog.relative_accuracy"] is None and summary["relative_accuracy"] is None
    assert summary["relative_accuracy_excluded"] == "fog s1, fog s2"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ratio = relative_accuracy(np.array([[0.5, 0.4], [0.6, 0.6]]), np.array([[0.0, 0.0], [0.5, 0.0]]))
    assert np.isnan(ratio[0]) and ratio[1] == pytest.approx(1.2)


def test_robustness_without_test_images_fails_before_any_work(cli: Cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    result = cli("robustness", "--model", digits_checkpoint, "--data", "digits", "--data-param", "test_fraction=0",
                 "--corruption", "fog", "--out", "r.h5")
    lines = result.stderr.strip().splitlines()
    assert result.code == 1 and lines == ["error: digits has no test samples"], result.stderr
    assert not result.stdout and not list(tmp_path.iterdir())  # no NaN table, report or plot


def _write_cifar10(root: Path, rng: np.random.Generator, train: int, test: int) -> np.ndarray:
    """cifar-10-batches-py with 5 train batches and a test batch of random images; returns the test labels."""
    root.mkdir(parents=True)
    for name, n in [*((f"data_batch_{i}", train) for i in range(1, 6)), ("test_batch", test)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
        with open(root / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    with open(root / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [b"c%d" % i for i in range(10)]}, handle, protocol=2)
    with open(root / "test_batch", "rb") as handle:
        return np.array(pickle.load(handle)[b"labels"])


def test_robustness_reads_the_published_cifar10c_arrays(cli: Cli, tmp_path: Path) -> None:
    from advkit.models import ModelWrapper, Preprocessing, create_architecture, load_checkpoint, save_checkpoint

    rng = np.random.default_rng(0)
    labels = _write_cifar10(tmp_path / "cifar-10-batches-py", rng, train=4, test=12)
    corrupted = tmp_path / "CIFAR-10-C"
    corrupted.mkdir()
    arrays = {name: rng.integers(0, 256, (5 * 12, 32, 32, 3), dtype=np.uint8) for name in ("fog", "gaussian_noise")}
    for name, images in arrays.items():
        np.save(corrupted / f"{name}.npy", images)
    np.save(corrupted / "labels.npy", np.tile(labels, 5))
    torch.manual_seed(0)
    net = create_architecture("small-cnn", num_classes=10, in_channels=3, input_size=32)
    save_checkpoint(tmp_path / "c.safetensors", net, "small-cnn", {"num_classes": 10, "in_channels": 3, "input_size": 32},
                    Preprocessing(3, (32, 32), (0.5,), (0.25,), [f"c{i}" for i in range(10)], "rgb"))
    args = ["robustness", "--model", "c.safetensors", "--data", "cifar10:cifar-10-batches-py", "--cifar10c", corrupted,
            "--corruption", "fog", "--corruption", "gaussian_noise", "--severity", "2", "--severity", "5", "--n", "10",
            "--out", "r.h5", "--json"]
    result = cli(*args)
    assert result.code == 0, result.stderr
    run = Report(tmp_path / "r.h5").read("robustness")
    assert run.config["cifar10c"] == str(corrupted.resolve())
    loaded = load_checkpoint(tmp_path / "c.safetensors")
    model = ModelWrapper(loaded.net, loaded.preprocessing)
    for ci, name in enumerate(("fog", "gaussian_noise")):  # the files' images, scored independently
        for si, severity in enumerate((2, 5)):
            block = torch.from_numpy(arrays[name][(severity - 1) * 12 : (severity - 1) * 12 + 10]).permute(0, 3, 1, 2) / 255
            with torch.no_grad():
                expected = model.logits(block.float()).argmax(1).numpy() == labels[:10]
            assert np.array_equal(run.samples["model_correct"][:, ci, si], expected)
    assert result.json()["fog.accuracy"] == pytest.approx(run.samples["model_correct"][:, 0, :].mean())
    np.save(corrupted / "labels.npy", np.tile(np.roll(labels, 1), 5))  # another order than --data's test split
    wrong = cli(*args[:-3], "--out", "r2.h5")
    errors = [line for line in wrong.stderr.splitlines() if line.startswith("error:")]
    assert wrong.code == 1 and len(errors) == 1 and "do not match" in errors[0] and "Traceback" not in wrong.stderr
    small = tmp_path / "small-C"  # 8 images per severity, fewer than the --n 10 asked: was blamed on the labels
    small.mkdir()
    for name, images in arrays.items():
        np.save(small / f"{name}.npy", np.concatenate([images[k * 12 : k * 12 + 8] for k in range(5)]))
    np.save(small / "labels.npy", np.tile(labels[:8], 5))
    few = cli(*[small if a == corrupted else a for a in args[:-3]], "--out", "r3.h5")
    assert few.code == 1 and "small-C/fog.npy holds 8 images per severity, fewer than the 10 test images asked for; " \
        "pass --n 8 or less" in few.stderr, few.stderr
    # a corruption whose file is missing fails before the ones listed first are evaluated (it came after them)
    np.save(corrupted / "labels.npy", np.tile(labels, 5))
    missing = cli(*args[:-3], "--corruption", "jpeg_compression", "--out", "r4.h5")
    assert missing.code == 1 and missing.stderr.strip().splitlines()[-1].startswith("error: no jpeg_compression.npy in")
    events: list[object] = []
    with pytest.raises(DatasetError, match="no jpeg_compression.npy"):
        published_correct(model, corrupted, labels[:10], ["fog", "jpeg_compression"], [1, 2], progress=events.append)
    assert events == []  # fog's severities were not evaluated first


def test_robustness_measures_a_subset_that_spans_the_classes(cli: Cli, tmp_path: Path) -> None:
    """It measured the first --n test images: on the MNIST subset, whose test split lists its classes in blocks,
    --n 100 was digit 0 alone (and --n 500 digits 0-4)."""
    assert cli("train", "--data", "mnist-subset", "--epochs", "1", "--out", "m.safetensors").code == 0
    result = cli("robustness", "--model", "m.safetensors", "--data", "mnist-subset", "--corruption", "fog", "--severity", "1",
                 "--n", "50", "--out", "r.h5")
    assert result.code == 0, result.stderr
    labels = Report(tmp_path / "r.h5").read("robustness").samples["label"]
    assert len(labels) == 50 and len(np.unique(labels)) >= 8
    # a run of the first --n images (made before the change) is not taken for this one, and the config replays
    config = cli("report", "show", "r.h5", "robustness", "--config")
    (tmp_path / "r.toml").write_text(config.stdout)
    assert "subset" in config.stdout and cli("robustness", "--config", "r.toml", "--out", "again.h5").code == 0
