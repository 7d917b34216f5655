"""`advkit transfer` end to end on the synthetic aligned RGB-IR pairs, and its one-line errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from advkit.attacks.moves import programs_from_table
from advkit.attacks.transfer import transfer_delta
from advkit.cli import main
from advkit.datasets import PairedDataset, open_dataset
from advkit.models import ModelWrapper, load_checkpoint
from advkit.report import Report

Cli = Callable[..., Any]
DATA = ["--data", "synthetic-rgbir", "--data-param", "n_per_class=60"]


@pytest.fixture(scope="module")
def domain_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("domains")
    paths = {}
    for domain in ("rgb", "ir"):
        paths[domain] = folder / f"{domain}.safetensors"
        try:
            main(["train", *DATA, "--domain", domain, "--epochs", "8", "--lr", "0.003", "--out", str(paths[domain]), "--json"])
        except SystemExit as exc:
            assert not exc.code
    return paths


def test_transfer_both_directions_with_controls(cli: Cli, domain_models: dict[str, Path], tmp_path: Path) -> None:
    result = cli("transfer", "--source-model", domain_models["rgb"], "--target-model", domain_models["ir"], *DATA,
                 "--n", "12", "--param", "restarts=4", "--param", "max_iterations=6", "--out", "t.h5", "--json")
    assert result.code == 0, result.stderr
    directions = result.json()["directions"]
    assert set(directions) == {"rgb->ir", "ir->rgb"}
    ds = open_dataset("synthetic-rgbir", n_per_class=60)
    assert isinstance(ds, PairedDataset)
    models = {d: ModelWrapper(*(lambda m: (m.net, m.preprocessing))(load_checkpoint(p))) for d, p in domain_models.items()}
    for key, (src, tgt) in {"rgb->ir": ("rgb", "ir"), "ir->rgb": ("ir", "rgb")}.items():
        run = Report(tmp_path / "t.h5").read(f"transfer-white-pixle-{src}-{tgt}")
        s = run.samples
        assert run.summary["transfer_rate"] == pytest.approx(s["tgt_success"].mean())
        assert run.summary["random.transfer_rate"] == pytest.approx(s["random_tgt_success"].mean())
        assert run.summary["both_fooled_rate"] == pytest.approx((s["tgt_success"] & s["src_success"]).mean())
        x_src, y = ds.domain(src).batch(s["index"])
        x_tgt, _ = ds.domain(tgt).batch(s["index"])
        with torch.no_grad():  # every kept pair was classified correctly by both models
            assert bool((models[src].logits(x_src).argmax(1) == y).all() and (models[tgt].logits(x_tgt).argmax(1) == y).all())
        moves = run.tables["moves"]
        for j, index in enumerate(s["index"]):
            program = programs_from_table(moves, int(index), 32, 32)
            with torch.no_grad():
                replayed = models[tgt].logits(program.apply(x_tgt[j])[None]).argmax(1).item()
                attacked = models[src].logits(program.apply(x_src[j])[None]).argmax(1).item()
            assert replayed == s["tgt_adv_pred"][j] and attacked == s["src_adv_pred"][j]

    # the reverse run records the models as it used them, so its printed config replays that direction alone
    reverse = Report(tmp_path / "t.h5").read("transfer-white-pixle-ir-rgb")
    assert (reverse.config["source_model"], reverse.config["target_model"]) == (str(domain_models["ir"]), str(domain_models["rgb"]))
    (tmp_path / "irrgb.toml").write_text(cli("report", "show", "t.h5", "transfer-white-pixle-ir-rgb", "--config").stdout)
    replay = cli("transfer", "--config", "irrgb.toml", "--out", "replay.h5", "--json")
    assert replay.code == 0 and set(replay.json()["directions"]) == {"ir->rgb"}, replay.stderr
    replayed = Report(tmp_path / "replay.h5").read("transfer-white-pixle-ir-rgb")
    assert all(np.array_equal(replayed.samples[k], reverse.samples[k]) for k in ("index", "src_adv_pred", "tgt_adv_pred"))
    # another config under the same run names fails before any attack, with advice the command takes
    clash = cli("transfer", "--source-model", domain_models["rgb"], "--target-model", domain_models["ir"], *DATA,
                "--n", "12", "--param", "restarts=4", "--param", "max_iterations=6", "--control-eps", "1/10", "--out", "t.h5")
    assert clash.code == 1 and "already has run 'transfer-white-pixle-rgb-ir'" in clash.stderr, clash.stderr
    assert "pass --run NAME or --overwrite" in clash.stderr and "pairs both models classify correctly" not in clash.stderr


def test_additive_deltas_change_channels_by_mean_or_replication() -> None:
    delta = torch.arange(12.0).view(1, 3, 2, 2)
    assert torch.equal(transfer_delta(delta, 1), delta.mean(1, keepdim=True))
    gray = torch.ones(1, 1, 2, 2)
    assert torch.equal(transfer_delta(gray, 3), torch.ones(1, 3, 2, 2))


def test_transfer_mistakes_are_one_line(cli: Cli, domain_models: dict[str, Path], digits_checkpoint: Path) -> None:
    rgb, ir = domain_models["rgb"], domain_models["ir"]
    cases = [
        (["--source-model", rgb, "--target-model", ir, "--data", "digits"], "single domain"),
        (["--source-model", ir, "--target-model", rgb, *DATA, "--direction", "rgb->ir"], "the source model was trained on ir images but would get rgb ones; check --direction"),
        (["--source-model", rgb, "--target-model", digits_checkpoint, *DATA, "--direction", "rgb->ir"], "takes 8x8"),
        (["--source-model", rgb, "--target-model", ir, *DATA, "--direction", "rgb->ir", "--split", "val"], "has no val samples"),
    ]
    for args, message in cases:
        result = cli("transfer", *args)
        assert result.code == 1 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert cli("transfer", "--source-model", rgb, "--target-model", ir, *DATA, "--direction", "up").code == 2
    mover = cli("transfer", "--source-model", rgb, "--target-model", ir, *DATA, "--attack", "pgd")  # an option's choices: usage
    assert mover.code == 2 and "Invalid value for --attack: pgd does not move pixels" in mover.stderr, mover.stderr
    zero = cli("transfer", "--source-model", rgb, "--target-model", ir, *DATA, "--control-eps", "0")  # blamed PGD's alpha
    assert zero.code == 2 and "--control-eps: must be in (0, 1]" in zero.stderr.replace("'", ""), zero.stderr
    fraction = cli("transfer", "--source-model", rgb, "--target-model", ir, *DATA, "--control-eps", "8/0")
    assert fraction.code == 2 and "a fraction such as 8/255, got '8/0'" in fraction.stderr, fraction.stderr


def test_a_model_attacked_on_the_other_domain_gets_a_warning(cli: Cli, domain_models: dict[str, Path]) -> None:
    """Attacking the RGB model on the IR side runs (the IR images are replicated to 3 channels) but says so."""
    across = cli("attack", "fgsm", "--model", domain_models["rgb"], *DATA, "--domain", "ir", "--n", "5",
                 "--include-misclassified", "--out", "r.h5", "--json")
    assert across.code == 0, across.stderr
    assert "was trained on rgb images (its checkpoint says) but gets the ir images" in across.stderr
    own = cli("attack", "fgsm", "--model", domain_models["rgb"], *DATA, "--domain", "rgb", "--n", "5", "--out", "own.h5", "--json")
    assert own.code == 0 and "across domains" not in own.stderr, own.stderr


def test_a_data_parameter_named_domain_is_one_line() -> None:
    """--data-param domain=rgb crashed attack, train and robustness with 'got multiple values for argument domain'."""
    from advkit.datasets import open_images
    from advkit.errors import DatasetError

    with pytest.raises(DatasetError, match="choose the side of synthetic-rgbir with --domain rgb, not as a data parameter"):
        open_images("synthetic-rgbir", domain="rgb")


def test_transfer_warns_when_the_data_names_the_classes_otherwise(cli, domain_models: dict[str, Path], tmp_path: Path) -> None:
    """transfer silenced check_compatible's class-name warning with the domain one it handles itself: models given
    data whose classes are named in another order ran without a word (attack warns)."""
    from dataclasses import replace

    from advkit.datasets import open_dataset
    from advkit.datasets.synthetic import write_paired

    ds = open_dataset("synthetic-rgbir", n_per_class=60)
    renamed = write_paired(replace(ds, class_names=list(reversed(ds.class_names))), tmp_path / "renamed", "D")
    result = cli("transfer", "--source-model", domain_models["rgb"], "--target-model", domain_models["ir"], "--data",
                 f"paired-d:{renamed}", "--direction", "rgb->ir", "--n", "3", "--no-controls", "--param", "restarts=1",
                 "--param", "max_iterations=2", "--out", "t.h5")
    assert result.code == 0, result.stderr
    assert "warning: the source model names its class 0" in result.stderr, result.stderr
