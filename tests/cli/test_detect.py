"""``advkit detect fit|eval|score`` end to end on the MNIST subset and on synthetic IR data, and its one-line errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from advkit.datasets import open_images
from advkit.report import Report

IR = ["--data", "synthetic-rgbir", "--domain", "ir", "--data-param", "n_per_class=40", "--data-param", "size=16"]


def test_fit_eval_score_on_the_mnist_subset(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from advkit.detectors import evaluate as evaluate_module

    calls: list[dict] = []
    real_evaluate = evaluate_module.evaluate

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "evaluate", spy)
    fit = cli("detect", "fit", "--n", "600", "--epochs", "2", "--filters", "8", "--out", "det.safetensors", "--json")
    assert fit.code == 0, fit.stderr
    info = fit.json()
    assert info["layers"] == ["block1", "block2"] and info["data"] == "mnist-subset"

    ev = cli("detect", "eval", "--detector", "det.safetensors", "--attack", "fgsm", "--param", "eps=0.3", "--n", "40",
             "--supervised", "logreg", "--quick-grid", "--train-fraction", "0.4", "--protocol", "unknown", "--fgsm-eps", "0.2",
             "--adaptive", "--adaptive-n", "8", "--adaptive-steps", "3", "--out", "eval.h5", "--json")
    assert ev.code == 0, ev.stderr
    assert "attack fgsm" in ev.stderr and "40/40" in ev.stderr  # progress while --attack runs (it was silent for minutes)
    result = ev.json()["results"]["attack-fgsm"]
    rows = {(r["section"], r["detector"], r["setting"]): r for r in result["rows"]}
    for key in [("unsupervised", "ae", "clean"), ("unsupervised", "ae[block1]", "clean+noisy"), ("unsupervised", "magnet", "clean"),
                ("unsupervised", "mahalanobis", "clean"), ("supervised", "logreg", "clean+noisy"), ("supervised", "mahalanobis (LR)", "clean")]:
        assert 0 <= rows[key]["auroc"] <= 1, key
    assert rows[("unsupervised", "mahalanobis", "clean")]["auroc"] > 0.8  # FGSM at eps 0.3 moves MNIST features far
    assert Path(result["roc_png"]).stat().st_size > 1000
    (kwargs,) = calls  # the unknown protocol trains on FGSM images with noise matched to FGSM's L2, not the tested attack's
    assert kwargs["train_adv"] is not None and kwargs["train_noisy"] is not None
    oblivious, adaptive = result["adaptive"]
    assert oblivious["attack"] == "pgd (oblivious)" and oblivious["n"] == adaptive["n"] <= 8
    for row in (oblivious, adaptive):  # both on the same settings; the default step is 2.5 * eps / steps
        assert (row["eps"], row["steps"]) == (0.3, 3) and row["step"] == pytest.approx(0.25)
    assert all(0 <= r["success"] <= 1 and 0 <= r["success_undetected"] <= r["success"] for r in (oblivious, adaptive))
    run = Report(tmp_path / "eval.h5").read("detect-fgsm")
    assert run.kind == "detect" and {"results", "adaptive"} <= set(run.tables) and run.config["protocol"] == "unknown"
    rocs = [t for name, t in run.tables.items() if name.startswith("roc.")]
    assert rocs and all({"fpr", "tpr"} <= set(t) for t in rocs)
    assert run.n_samples == rows[("unsupervised", "ae", "clean")]["n_pos"] / run.samples["test"].mean()

    score = cli("detect", "score", "--detector", "det.safetensors", "--data", "mnist-subset", "--n", "5", "--json")
    assert score.code == 0, score.stderr
    inputs = score.json()["inputs"]
    assert len(inputs) == 5 and all(isinstance(r["flagged"], bool) and r["score"] > 0 for r in inputs)
    table = cli("detect", "score", "--detector", "det.safetensors", "--data", "mnist-subset", "--n", "3")
    assert table.code == 0 and "mnist-subset" in table.stdout and "flagged" in table.stdout
    assert re.search(r"^\d of 3 inputs flagged$", table.stdout, re.M) and "inputs flagged" not in table.stderr  # a result


def test_fit_eval_score_on_synthetic_ir_from_a_saved_attack(cli, tmp_path: Path) -> None:
    assert cli("train", *IR, "--epochs", "15", "--lr", "0.005", "--out", "ir.safetensors", "--json").code == 0
    attack = cli("attack", "pgd", "--model", "ir.safetensors", *IR, "--param", "eps=0.3", "--param", "alpha=0.05",
                 "--param", "steps=10", "--n", "30",
                 "--save-images", "--out", "adv.h5", "--json")
    assert attack.code == 0, attack.stderr
    fit = cli("detect", "fit", "--model", "ir.safetensors", *IR, "--epochs", "2", "--filters", "8", "--out", "ir-det.safetensors")
    assert fit.code == 0, fit.stderr
    assert "block1" in fit.stdout
    ev = cli("detect", "eval", "--detector", "ir-det.safetensors", "--adversarial", "adv.h5", "--supervised", "none",
             "--out", "ir-eval.h5", "--json")
    assert ev.code == 0, ev.stderr
    result = ev.json()["results"]["attack-pgd"]
    assert result["n"] >= 4 and {r["section"] for r in result["rows"]} == {"unsupervised"}
    ds = open_images("synthetic-rgbir", "ir", n_per_class=40, size=16)
    image = ds.batch(ds.indices("test")[:1])[0][0, 0].numpy()
    Image.fromarray((image * 255).round().astype(np.uint8)).save(tmp_path / "one.png")
    score = cli("detect", "score", "--detector", "ir-det.safetensors", "one.png", "--json")
    assert score.code == 0, score.stderr
    assert score.json()["inputs"][0]["input"] == "one.png"


def test_mistakes_get_one_line(cli, tmp_path: Path, digits_checkpoint: Path) -> None:
    def one_line_error(outcome, text: str) -> None:
        assert outcome.code == 1, outcome.stderr
        lines = outcome.stderr.strip().splitlines()
        assert len(lines) == 1 and text in lines[0], outcome.stderr

    base = ["--model", digits_checkpoint, "--data", "digits", "--epochs", "1", "--filters", "4"]
    one_line_error(cli("detect", "fit", *base, "--layers", "blok1"), "did you mean block1")
    other_size = ["--model", digits_checkpoint, "--data", "mnist-subset", "--epochs", "1", "--filters", "4"]
    one_line_error(cli("detect", "fit", *other_size, "--out", "det.safetensors"), "the model takes 8x8 images but mnist-subset has 28x28")
    assert cli("detect", "fit", *base, "--out", "det.pt").code == 2
    assert cli("detect", "fit", *base, "--out", "det.safetensors").code == 0
    pixels = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "g.png")
    np.save(tmp_path / "g.npy", pixels.astype(np.float32) / 255)
    alone = cli("detect", "score", "--detector", "det.safetensors", "g.png", "--json").json()["inputs"][0]["score"]
    mixed = cli("detect", "score", "--detector", "det.safetensors", "g.png", "g.npy", "--json").json()["inputs"]
    assert mixed[0]["score"] == alone == pytest.approx(mixed[1]["score"], rel=1e-5)  # the same pixels, whatever the file type
    np.save(tmp_path / "flat.npy", np.zeros(64, np.float32))
    np.save(tmp_path / "nan.npy", np.full((8, 8), np.nan, np.float32))
    one_line_error(cli("detect", "score", "--detector", "det.safetensors", "flat.npy"), "not an (H, W) or (H, W, C) image")
    one_line_error(cli("detect", "score", "--detector", "det.safetensors", "nan.npy"), "float pixels that are not all in [0, 1]")
    one_line_error(cli("detect", "score", "--detector", "det.safetensors", str(tmp_path)), "is a folder: give image files, or --data")
    one_line_error(cli("detect", "score", "--detector", "det.safetensors", "--data", "digits", "--split", "val"),
                   "digits has no val samples")  # digits has no val split unless --data-param val_fraction asks for one
    for option, value in (("--fpr", "1.5"), ("--calib-fraction", "0")):
        bad = cli("detect", "fit", *base, option, value, "--out", "never.safetensors")
        assert bad.code == 2 and option in bad.stderr and "must lie in (0, 1)" in bad.stderr and not Path("never.safetensors").exists()
    one_line_error(cli("detect", "eval", "--detector", "det.safetensors", "--model", "ir.safetensors", "--attack", "fgsm"),
                   "no such checkpoint")
    from advkit.cli.attack_cmd import builtin_checkpoint

    one_line_error(cli("detect", "eval", "--detector", "det.safetensors", "--model", builtin_checkpoint(), "--attack", "fgsm"),
                   "fitted for another model")
    assert cli("attack", "fgsm", "--model", digits_checkpoint, "--data", "digits", "--n", "5", "--out", "plain.h5").code == 0
    one_line_error(cli("detect", "eval", "--detector", "det.safetensors", "--adversarial", "plain.h5"), "no saved images")
    one_line_error(cli("detect", "score", "--detector", "missing.safetensors", "--data", "digits"), "no such detector file")
    for option, value in (("--fgsm-eps", "-1"), ("--adaptive-eps", "0"), ("--fgsm-eps", "nan")):  # refused before any attack
        bad = cli("detect", "eval", "--detector", "det.safetensors", "--attack", "fgsm", option, value)
        assert bad.code == 2 and option in bad.stderr and "must lie in (0, 1]" in bad.stderr, bad.stderr
    for option in ("--fgsm-eps", "--adaptive-eps", "--adaptive-step"):  # a fraction is a budget; 8/0 is not
        bad = cli("detect", "eval", "--detector", "det.safetensors", "--attack", "fgsm", option, "8/0")
        assert bad.code == 2 and option in bad.stderr and "a fraction such as 8/255, got '8/0'" in bad.stderr, bad.stderr


def _rewrite_detector_meta(path: Path, **changes: object) -> None:
    """Edit a detector file's JSON metadata in place (to make one as older advkit wrote it)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["advkit_detector"])
    save_file(load_file(str(path)), str(path), metadata={"advkit_detector": json.dumps({**meta, **changes})})


def _rewrite_run_config(path: Path, run: str, **changes: object) -> None:
    with h5py.File(path, "r+") as f:
        attrs = f[f"runs/{run}"].attrs
        attrs["config"] = json.dumps({**json.loads(attrs["config"]), **changes})


def test_detect_works_from_any_directory(cli, tmp_path: Path, digits_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here, elsewhere = tmp_path / "A", tmp_path / "B"
    here.mkdir()
    elsewhere.mkdir()
    shutil.copy(digits_checkpoint, here / "rel.safetensors")
    monkeypatch.chdir(here)
    assert cli("attack", "fgsm", "--model", "rel.safetensors", "--data", "digits", "--n", "30", "--save-images", "--out", "adv.h5").code == 0
    fit = cli("detect", "fit", "--model", "rel.safetensors", "--data", "digits", "--n", "300", "--epochs", "1", "--filters", "4",
              "--out", "det.safetensors")
    assert fit.code == 0, fit.stderr
    recorded = Path(Report(here / "adv.h5").read("attack-fgsm").config["model"])
    assert recorded.is_absolute() and recorded.samefile(here / "rel.safetensors")
    det, adv = here / "det.safetensors", here / "adv.h5"
    monkeypatch.chdir(elsewhere)
    evaluate = ["detect", "eval", "--detector", det, "--adversarial", adv, "--supervised", "none", "--overwrite"]
    score_data = ["detect", "score", "--detector", det, "--data", "digits", "--n", "2"]  # the model recorded in the detector

    def works(*args: str | Path) -> None:
        outcome = cli(*args)
        assert outcome.code == 0, (args, outcome.stderr)

    works(*evaluate)
    works("detect", "score", "--detector", det, "--adversarial", adv, "--n", "2")
    works(*score_data)
    works(*evaluate, "--model", "../A/./rel.safetensors")  # another spelling of the same file
    # files written before paths were recorded absolute: resolved next to the report / detector file
    _rewrite_run_config(adv, "attack-fgsm", model="rel.safetensors")
    _rewrite_detector_meta(det, model="rel.safetensors")
    works(*evaluate)
    works(*score_data)
    works(*evaluate, "--model", here / "rel.safetensors")
    shutil.copy(here / "rel.safetensors", elsewhere / "copy.safetensors")
    works(*evaluate, "--model", "copy.safetensors")  # same weights under another name: same fingerprint


def test_a_report_of_another_model_is_refused_in_one_line(cli, tmp_path: Path, digits_checkpoint: Path) -> None:
    assert cli("train", "--data", "digits", "--epochs", "1", "--seed", "1", "--out", "other.safetensors").code == 0
    assert cli("attack", "fgsm", "--model", "other.safetensors", "--data", "digits", "--n", "20", "--save-images", "--out", "adv.h5").code == 0
    assert cli("detect", "fit", "--model", digits_checkpoint, "--data", "digits", "--n", "300", "--epochs", "1", "--filters", "4",
               "--out", "det.safetensors").code == 0
    refused = cli("detect", "eval", "--detector", "det.safetensors", "--adversarial", "adv.h5", "--supervised", "none")
    assert refused.code == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "attacked another model" in refused.stderr and "other.safetensors" in refused.stderr
    for as_model in (["models", "info", "det.safetensors"], ["attack", "fgsm", "--model", "det.safetensors", "--data", "digits"]):
        mistaken = cli(*as_model)  # was "holds bare weights ... take --arch NAME"
        assert mistaken.code == 1 and mistaken.stderr.startswith("error: det.safetensors is an advkit detector (written by "
                                                                 "advkit detect fit), not a model checkpoint"), mistaken.stderr
    _rewrite_run_config(tmp_path / "adv.h5", "attack-fgsm", model="gone.safetensors")
    missing = cli("detect", "eval", "--detector", "det.safetensors", "--adversarial", "adv.h5", "--supervised", "none")
    assert missing.code == 1 and "cannot check which model" in missing.stderr and "next to the report" in missing.stderr


def test_bare_digits_weights_fit_score_and_eval_with_arch_param(cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    """A bare small-cnn state_dict of 8x8 digits needs --arch-param input_size=8; the detector remembers it."""
    from safetensors.torch import save_file

    from advkit.models import load_checkpoint

    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in load_checkpoint(digits_checkpoint).net.state_dict().items()}, str(bare))
    model = ["--model", str(bare), "--data", "digits", "--arch", "small-cnn"]
    without = cli("detect", "fit", *model, "--out", "d.safetensors")
    assert without.code == 1 and "--arch-param" in without.stderr and not Path("d.safetensors").exists()
    fit = cli("detect", "fit", *model, "--arch-param", "input_size=8", "--epochs", "1", "--filters", "4", "--out", "d.safetensors")
    assert fit.code == 0, fit.stderr
    score = cli("detect", "score", "--detector", "d.safetensors", "--data", "digits", "--n", "3", "--json")  # from its metadata
    assert score.code == 0 and len(score.json()["inputs"]) == 3, score.stderr
    # other data than the fit's takes its own --domain and --data-param (score had neither, and applied the fit's)
    ir = cli("detect", "score", "--detector", "d.safetensors", "--data", "synthetic-rgbir", "--domain", "ir",
             "--data-param", "size=8", "--data-param", "n_per_class=10", "--n", "3", "--json")
    assert ir.code == 0 and len(ir.json()["inputs"]) == 3, ir.stderr
    attack = cli("attack", "fgsm", *model, "--arch-param", "input_size=8", "--param", "eps=0.3", "--n", "30", "--save-images",
                 "--out", "adv.h5")
    assert attack.code == 0, attack.stderr
    ev = cli("detect", "eval", "--detector", "d.safetensors", "--adversarial", "adv.h5", "--supervised", "none", "--out", "ev.h5",
             "--json")
    assert ev.code == 0 and "attack-fgsm" in ev.json()["results"], ev.stderr
    other = cli("detect", "score", "--detector", "d.safetensors", "--data", "digits", "--arch", "small-cnn",
                "--arch-param", "input_size=16")  # same weight shapes, another net: its fingerprint differs or it cannot run
    assert other.code == 1 and len(other.stderr.strip().splitlines()) == 1, other.stderr


def test_fit_refuses_its_model_as_out_and_taps_a_repeated_layer_once(cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    """Found by a sweep: --out MODEL --overwrite replaced the checkpoint by the detector; block1,block1 crashed on save;
    a negative or NaN --adaptive-weight failed (or printed nonsense) after the attack."""
    local = tmp_path / "m.safetensors"
    shutil.copy(digits_checkpoint, local)
    before = local.read_bytes()
    model = ["--model", "m.safetensors", "--data", "digits"]
    own = cli("detect", "fit", *model, "--out", "m.safetensors", "--overwrite")
    assert own.code == 2 and "is the model's checkpoint" in own.stderr and local.read_bytes() == before
    fit = cli("detect", "fit", *model, "--layers", "block1,block1", "--epochs", "1", "--filters", "4", "--n", "200",
              "--out", "d.safetensors", "--json")
    assert fit.code == 0 and fit.json()["layers"] == ["block1"], fit.stderr
    stray = cli("detect", "eval", "--detector", "d.safetensors", "--attack", "pgd", "--param", "fgsm.eps=0.1", "--n", "5",
                "--supervised", "none", "--out", "e.h5")  # was ignored, and recorded
    assert stray.code == 1 and "fgsm is not one of the attacks in this command; choose from pgd" in stray.stderr, stray.stderr
    args = ["detect", "eval", "--detector", "d.safetensors", "--attack", "fgsm", "--n", "30", "--supervised", "none", "--out", "e.h5"]
    first = cli(*args)
    assert first.code == 0, first.stderr
    same = cli(*args)  # the same command again (say after Ctrl-C once its run was written): done, not a conflict
    assert same.code == 0 and "run detect-fgsm in e.h5 is already complete with this config" in same.stderr, same.stderr
    again = cli(*args, "--seed", "1")  # refused before it attacks, naming the option that names detect eval's runs
    assert again.code == 1 and "--run-prefix PREFIX" in again.stderr and "--run NAME" not in again.stderr, again.stderr
    assert "fgsm" not in again.stderr.split("error:")[0], again.stderr  # no attack progress before the refusal
    for weight in ("-1", "nan"):
        bad = cli("detect", "eval", "--detector", "d.safetensors", "--attack", "fgsm", "--adaptive", "--adaptive-weight", weight)
        assert bad.code == 2 and "--adaptive-weight" in bad.stderr, bad.stderr


def test_a_detect_eval_config_names_the_attack_it_measured() -> None:
    from advkit.cli.common import replayable

    recorded = {"detector": "d.safetensors", "adversarial": None, "source": "attack-pgd", "detector_fingerprint": "f"}
    assert replayable(recorded) == {"detector": "d.safetensors", "adversarial": None, "attack": ["pgd"]}
    from_report = {"detector": "d.safetensors", "adversarial": "a.h5", "source": "attack-pgd", "model_fingerprint": "f",
                   "detector_sha256": "0a", "source_created": "2026-12-03T12:00:00"}
    assert replayable(from_report) == {"detector": "d.safetensors", "adversarial": "a.h5", "runs": ["attack-pgd"]}
    # a config file written by hand for detect eval keeps its own --attack (it became attack's NAME argument)
    assert replayable({"attack": ["pgd"]}, {"attack", "detector"}) == {"attack": ["pgd"]}
    assert replayable({"attack": "pgd"}) == {"names": ["pgd"]}  # an attack run's record


def test_config_keys_that_are_the_commands_own_options_are_kept() -> None:
    """replayable dropped runs, corruptions and severities everywhere: a finetune config's corruptions = false
    was ignored (the replay evaluated 15 x 5 corruptions) and detect eval's run = "attack-pgd" measured every run."""
    from advkit.cli.common import replayable

    assert replayable({"corruptions": False}, {"corruptions", "model"}) == {"corruptions": False}  # finetune's flag
    assert replayable({"runs": ["attack-pgd"]}, {"runs", "detector"}) == {"runs": ["attack-pgd"]}  # detect eval's --run
    assert replayable({"runs": ["a", "b"], "attacks": ["x", "y"]}, {"run", "names"}) == {"names": ["x", "y"]}  # worst case
    # a robustness run records its choice and the resolved lists; a hand-written plural names the choice
    recorded = {"corruption": None, "corruptions": ["fog", "snow"], "severity": [2], "severities": [2]}
    assert replayable(recorded, {"corruption", "severity"}) == {"corruption": None, "severity": [2]}
    assert replayable({"corruptions": ["fog"], "severities": [1]}, {"corruption", "severity"}) == {"corruption": ["fog"], "severity": [1]}


def test_detect_eval_records_its_detector_and_report_as_absolute_paths(tmp_path: Path, monkeypatch) -> None:
    """Relative paths were recorded as typed, so a replayed config worked only from the folder it ran in."""
    from advkit.report.paths import absolute_specs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "det.safetensors").write_bytes(b"x")
    (tmp_path / "adv.h5").write_bytes(b"x")
    recorded = absolute_specs({"detector": "det.safetensors", "adversarial": "adv.h5", "attack": ["pgd"]})
    assert recorded == {"detector": str(tmp_path / "det.safetensors"), "adversarial": str(tmp_path / "adv.h5"), "attack": ["pgd"]}


def test_detect_eval_gives_the_same_result_for_the_same_samples_however_supplied(cli, tmp_path: Path,
                                                                                   digits_checkpoint: Path) -> None:
    """The supervised train/test split went by row position: --attack passes the samples in scan order, a report in
    index order, so the same images got another split (AUROCs 0.67 vs 0.76 on the same 75 Pixle images)."""
    fit = cli("detect", "fit", "--model", digits_checkpoint, "--data", "digits", "--n", "300", "--epochs", "1", "--filters", "4",
              "--out", "d.safetensors")
    assert fit.code == 0, fit.stderr
    attack = ["--param", "fgsm.eps=0.3", "--n", "60"]
    made = cli("attack", "fgsm", "--model", digits_checkpoint, "--data", "digits", *attack, "--save-images", "--out", "adv.h5")
    assert made.code == 0, made.stderr
    common = ["detect", "eval", "--detector", "d.safetensors", "--quick-grid", "--json"]
    on_the_spot = cli(*common, "--attack", "fgsm", *attack, "--out", "a.h5")
    from_report = cli(*common, "--adversarial", "adv.h5", "--out", "b.h5")
    assert on_the_spot.code == 0 and from_report.code == 0, on_the_spot.stderr + from_report.stderr
    a, b = (Report(tmp_path / f).read("detect-fgsm") for f in ("a.h5", "b.h5"))
    assert np.array_equal(a.samples["index"], b.samples["index"]) and len(a.samples["index"]) >= 20
    assert np.array_equal(a.samples["test"], b.samples["test"]) and not a.samples["test"].all()
    assert {k: v for k, v in a.summary.items() if "seconds" not in k} == {k: v for k, v in b.summary.items() if "seconds" not in k}


def test_detect_eval_skips_an_attack_whose_noisy_copies_leave_too_few_samples(cli, tmp_path: Path, digits_checkpoint: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The 4-sample minimum was checked before the kept-samples filter (clean and noisy correct): a large perturbation
    whose noisy copies all fooled the model (FGSM eps 1 on 4 digits, seed 4) stopped with "error: no images to score"."""
    from advkit.detectors import evaluate as evaluate_module

    fit = cli("detect", "fit", "--model", digits_checkpoint, "--data", "digits", "--n", "300", "--epochs", "1", "--filters", "4",
              "--out", "d.safetensors")
    assert fit.code == 0, fit.stderr
    # noisy copies that are the adversarial images themselves: every one is misclassified, so no sample is kept
    monkeypatch.setattr(evaluate_module, "matched_noise", lambda x, x_adv, indices, seed: x_adv.clone())
    ev = cli("detect", "eval", "--detector", "d.safetensors", "--attack", "fgsm", "--param", "eps=0.3", "--n", "20",
             "--supervised", "none", "--out", "e.h5")
    assert ev.code == 1 and "Traceback" not in ev.stderr, ev.stderr
    assert "attack-fgsm: only 0 samples with the clean and noisy images classified correctly; skipped" in ev.stderr
    assert ev.stderr.strip().splitlines()[-1] == "error: no attack produced enough successful adversarial images to evaluate"


def test_detect_eval_leaves_out_the_images_the_detector_was_fitted_on(cli, tmp_path: Path, digits_checkpoint: Path) -> None:
    """A detector fitted with --split all (or test) was measured on its own fitting and calibration images, without a
    word: their clean scores are the forest's inliers, so every AUROC came out too high."""
    from advkit.datasets import open_dataset
    from advkit.rng import seeded_subset

    fit = cli("detect", "fit", "--model", digits_checkpoint, "--data", "digits", "--split", "all", "--n", "900", "--epochs", "1",
              "--filters", "4", "--out", "d.safetensors")
    assert fit.code == 0, fit.stderr
    fitted = seeded_subset(open_dataset("digits").indices("all"), 900, 0, "detector-subset")  # the fit's --n choice
    ev = cli("detect", "eval", "--detector", "d.safetensors", "--attack", "fgsm", "--param", "eps=0.3", "--n", "40",
             "--supervised", "none", "--out", "e.h5")
    assert ev.code == 0, ev.stderr
    left_out = re.search(r"attack-fgsm: (\d+) of 40 samples left out: the detector was fitted on their clean images", ev.stderr)
    assert left_out and int(left_out.group(1)) > 0, ev.stderr
    measured = Report(tmp_path / "e.h5").read("detect-fgsm").samples["index"]
    assert len(measured) >= 4 and not np.isin(measured, fitted).any()


def test_detect_eval_does_not_take_a_refitted_detector_or_a_replaced_attack_run_for_done(cli, tmp_path: Path,
                                                                                         digits_checkpoint: Path) -> None:
    """Its config recorded the classifier's fingerprint as 'detector_fingerprint': after a refit under the same path,
    or a replaced attack run in --adversarial, the same command said 'already complete' and kept the old AUROCs."""
    fit = ["detect", "fit", "--model", digits_checkpoint, "--data", "digits", "--n", "200", "--epochs", "1", "--filters", "4",
           "--out", "d.safetensors"]
    attack = ["attack", "fgsm", "--model", digits_checkpoint, "--data", "digits", "--n", "30", "--save-images", "--out", "adv.h5"]
    assert cli(*fit).code == 0 and cli(*attack, "--param", "eps=0.3").code == 0
    evaluate = ["detect", "eval", "--detector", "d.safetensors", "--adversarial", "adv.h5", "--supervised", "none", "--out", "ev.h5"]
    assert cli(*evaluate).code == 0
    assert "already complete" in cli(*evaluate).stderr  # the same detector and images: nothing to redo
    assert cli(*fit, "--seed", "1", "--overwrite").code == 0
    refitted = cli(*evaluate)
    assert refitted.code == 1 and "different config (detector_sha256:" in refitted.stderr, refitted.stderr
    assert cli(*evaluate, "--overwrite").code == 0
    assert cli(*attack, "--param", "eps=0.25", "--overwrite").code == 0
    replaced = cli(*evaluate)
    assert replaced.code == 1 and "different config (source_created:" in replaced.stderr, replaced.stderr


def test_the_same_eval_finishing_first_elsewhere_is_taken_as_done(cli, tmp_path: Path, digits_checkpoint: Path,
                                                                 finishing_elsewhere, monkeypatch: pytest.MonkeyPatch) -> None:
    # two identical evals on one report: the second to write its run stopped with "already has a complete run
    # 'detect-fgsm'; use --run NAME ...", an option that in detect eval picks attack runs
    from advkit.detectors import evaluate as evaluate_module

    fit = ["detect", "fit", "--model", digits_checkpoint, "--data", "digits", "--n", "200", "--epochs", "1", "--filters", "4",
           "--out", "d.safetensors"]
    evaluate = ["detect", "eval", "--detector", "d.safetensors", "--attack", "fgsm", "--n", "30", "--supervised", "none"]
    assert cli(*fit).code == 0 and cli(*evaluate, "--out", "first.h5").code == 0
    finish = finishing_elsewhere(tmp_path / "r.h5", Report(tmp_path / "first.h5").read("detect-fgsm"), delay=None)
    real = evaluate_module.evaluate
    monkeypatch.setattr(evaluate_module, "evaluate", lambda *a, **k: (finish(), real(*a, **k))[1])  # done while this evaluates
    second = cli(*evaluate, "--out", "r.h5")
    assert second.code == 0 and "run detect-fgsm in r.h5 is already complete" in second.stderr, second.stderr
    assert Report(tmp_path / "r.h5").read("detect-fgsm").summary == Report(tmp_path / "first.h5").read("detect-fgsm").summary


def test_a_fit_does_not_replace_a_detector_written_meanwhile(cli, tmp_path: Path, digits_checkpoint: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # two fits to one --out: both found no file before fitting, and the later one silently replaced the other's
    from advkit.detectors import LayerwiseDetector

    real = LayerwiseDetector.fit.__func__

    def fit_while_another_finishes(cls, *args, **kwargs):
        detector = real(cls, *args, **kwargs)
        (tmp_path / "d.safetensors").write_bytes(b"the other fit's detector")
        return detector

    monkeypatch.setattr(LayerwiseDetector, "fit", classmethod(fit_while_another_finishes))
    fit = ["detect", "fit", "--model", digits_checkpoint, "--data", "digits", "--n", "200", "--epochs", "1", "--filters", "4",
           "--out", "d.safetensors"]
    raced = cli(*fit)
    error = raced.stderr.splitlines()[-1]
    assert raced.code == 1 and error.startswith("error: d.safetensors appeared while this detector was fitted"), raced.stderr
    assert error.endswith("pass --overwrite to replace it") and raced.stderr.count("error") == 1
    assert (tmp_path / "d.safetensors").read_bytes() == b"the other fit's detector"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.safetensors"]  # no temporary file left
    replaced = cli(*fit, "--overwrite")
    assert replaced.code == 0 and LayerwiseDetector.read_meta(tmp_path / "d.safetensors")["n_fit"] > 0, replaced.stderr


def test_a_run_of_a_newer_schema_beside_the_attack_runs_stops_only_itself(cli, tmp_path: Path,
                                                                         digits_checkpoint: Path) -> None:
    # detect eval --adversarial looked its runs up in the strict listing: one run written by a newer advkit made
    # the command fail even when it named another run
    import h5py

    fit = cli("detect", "fit", "--model", digits_checkpoint, "--data", "digits", "--n", "200", "--epochs", "1",
              "--filters", "4", "--out", "d.safetensors")
    assert fit.code == 0, fit.stderr
    for name, eps in (("fgsm", "0.3"), ("pgd", "0.3")):
        made = cli("attack", name, "--model", digits_checkpoint, "--data", "digits", "--n", "30", "--param", f"eps={eps}",
                   "--save-images", "--out", "adv.h5")
        assert made.code == 0, made.stderr
    with h5py.File(tmp_path / "adv.h5", "r+") as f:
        f["runs/attack-pgd"].attrs["schema_version"] = np.int64(99)
    evaluate = ["detect", "eval", "--detector", "d.safetensors", "--adversarial", "adv.h5", "--supervised", "none"]
    named = cli(*evaluate, "--run", "attack-fgsm", "--fgsm-eps", "8/255", "--out", "ev.h5")  # the spelling errors advise
    assert named.code == 0, named.stderr
    run = Report(tmp_path / "ev.h5").read("detect-fgsm")
    assert run.status == "complete" and run.config["fgsm_eps"] == pytest.approx(8 / 255)
    every = cli(*evaluate, "--out", "all.h5")  # by default every attack run, so the unreadable one too: refused
    assert every.code == 1 and "run 'attack-pgd' uses report schema 99" in every.stderr, every.stderr
    assert len(every.stderr.strip().splitlines()) == 1 and not (tmp_path / "all.h5").exists()
