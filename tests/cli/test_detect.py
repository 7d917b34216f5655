"""``advkit detect fit|eval|score`` end to end on the MNIST subset and on synthetic IR data, and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from advkit.datasets import open_images
from advkit.report import Report

IR = ["--data", "synthetic-rgbir", "--domain", "ir", "--data-param", "n_per_class=40", "--data-param", "size=16"]


def test_fit_eval_score_on_the_mnist_subset(cli, tmp_path: Path) -> None:
    fit = cli("detect", "fit", "--n", "600", "--epochs", "2", "--filters", "8", "--out", "det.safetensors", "--json")
    assert fit.code == 0, fit.stderr
    info = fit.json()
    assert info["layers"] == ["block1", "block2"] and info["data"] == "mnist-subset"

    ev = cli("detect", "eval", "--detector", "det.safetensors", "--attack", "fgsm", "--param", "eps=0.3", "--n", "40",
             "--supervised", "logreg", "--quick-grid", "--train-fraction", "0.4", "--protocol", "unknown", "--fgsm-eps", "0.2",
             "--adaptive", "--adaptive-n", "8", "--adaptive-steps", "3", "--out", "eval.h5", "--json")
    assert ev.code == 0, ev.stderr
    result = ev.json()["results"]["attack-fgsm"]
    rows = {(r["section"], r["detector"], r["setting"]): r for r in result["rows"]}
    for key in [("unsupervised", "ae", "clean"), ("unsupervised", "ae[block1]", "clean+noisy"), ("unsupervised", "magnet", "clean"),
                ("unsupervised", "mahalanobis", "clean"), ("supervised", "logreg", "clean+noisy"), ("supervised", "mahalanobis (LR)", "clean")]:
        assert 0 <= rows[key]["auroc"] <= 1, key
    assert rows[("unsupervised", "mahalanobis", "clean")]["auroc"] > 0.8  # FGSM at eps 0.3 moves MNIST features far
    assert Path(result["roc_png"]).stat().st_size > 1000
    oblivious, adaptive = result["adaptive"]
    assert oblivious["attack"] == "pgd (oblivious)" and oblivious["n"] == adaptive["n"] <= 8
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
    assert cli("detect", "fit", *base, "--out", "det.pt").code == 2
    assert cli("detect", "fit", *base, "--out", "det.safetensors").code == 0
    one_line_error(cli("detect", "eval", "--detector", "det.safetensors", "--model", "ir.safetensors", "--attack", "fgsm"),
                   "no such checkpoint")
    from advkit.cli.attack_cmd import builtin_checkpoint

    one_line_error(cli("detect", "eval", "--detector", "det.safetensors", "--model", builtin_checkpoint(), "--attack", "fgsm"),
                   "fitted for another model")
    assert cli("attack", "fgsm", "--model", digits_checkpoint, "--data", "digits", "--n", "5", "--out", "plain.h5").code == 0
    one_line_error(cli("detect", "eval", "--detector", "det.safetensors", "--adversarial", "plain.h5"), "no saved images")
    one_line_error(cli("detect", "score", "--detector", "missing.safetensors", "--data", "digits"), "no such detector file")
