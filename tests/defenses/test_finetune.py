"""Adversarial fine-tuning: each objective's examples, the paper's in-place replacement, and the CLI end to end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from advkit.datasets import ImageDataset
from advkit.defenses import METHODS, FinetuneMethod
from advkit.defenses.finetune import FinetuneObjective
from advkit.errors import SettingsError
from advkit.models import ModelWrapper, create_architecture
from advkit.report import Report

Cli = Callable[..., Any]


@pytest.fixture
def fresh_model(digits_model: ModelWrapper) -> ModelWrapper:
    net = create_architecture("small-cnn", in_channels=1, input_size=8)
    net.load_state_dict(digits_model.net.state_dict())
    return ModelWrapper(net, digits_model.preprocessing)


@pytest.mark.parametrize("method", METHODS)
def test_every_objective_trains(method: str, fresh_model: ModelWrapper, digits: ImageDataset) -> None:
    index = digits.indices("train")[:32]
    x, y = digits.batch(index)
    fresh_model.net.train()
    loss, logits = FinetuneMethod(method, eps=0.2, steps=3).objective()(fresh_model, x, y, index, 0)
    loss.backward()
    assert torch.isfinite(loss) and logits.shape == (32, 10)
    assert fresh_model.net.training  # attacks borrowed eval mode and gave train mode back
    assert all(p.grad is not None for p in fresh_model.net.parameters())


def test_paper_protocol_replaces_a_fraction_in_place(fresh_model: ModelWrapper, digits: ImageDataset) -> None:
    index = digits.indices("train")[:32]
    x, y = digits.batch(index)
    objective = FinetuneObjective(FinetuneMethod("paper-white", fraction=20 / 32))
    mixed = objective._one_shot(fresh_model, x, y, index, 0, objective.white)
    changed = (mixed != x).flatten(1).any(1)
    assert int(changed.sum()) <= 20 and int(changed.sum()) > 0
    assert float(mixed.min()) >= 0 and float(mixed.max()) <= 1
    again = objective._one_shot(fresh_model, x, y, index, 0, objective.white)
    assert torch.equal(mixed, again)  # seeded per (seed, epoch, sample)


def test_pgd_examples_stay_in_the_ball(fresh_model: ModelWrapper, digits: ImageDataset) -> None:
    index = digits.indices("train")[:16]
    x, y = digits.batch(index)
    objective = FinetuneObjective(FinetuneMethod("pgd", eps=0.1, steps=5))
    adv = objective._pgd(fresh_model, x, y, index, 0, steps=5, alpha=0.05)
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1


def test_bad_settings() -> None:
    for kwargs in ({"fraction": 0.0}, {"fraction": 1.5}, {"method": "magic"}, {"eps": -1.0}):
        with pytest.raises(SettingsError):
            FinetuneMethod(**kwargs)  # type: ignore[arg-type]


def test_finetune_cli_reports_before_and_after(cli: Cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    result = cli("finetune", "--model", digits_checkpoint, "--data", "digits", "--method", "pgd", "--eps", "0.2",
                 "--steps", "3", "--epochs", "1", "--eval-n", "20", "--eval-attack", "fgsm", "--out", "robust.safetensors", "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert {"before.clean_accuracy", "after.clean_accuracy", "before.fgsm.success_rate", "after.fgsm.success_rate",
            "before.corruption_accuracy", "after.corruption_accuracy"} <= set(summary)
    run = Report(tmp_path / "robust.h5").read("finetune-pgd")
    assert len(run.tables["history"]["epoch"]) == 1
    assert run.samples["before_fgsm_success"].mean() == pytest.approx(summary["before.fgsm.success_rate"])
    assert (tmp_path / "robust.safetensors").exists() and not (tmp_path / "robust.safetensors.state.pt").exists()
    bad = cli("finetune", "--model", digits_checkpoint, "--data", "digits", "--fraction", "1.5", "--out", "x.safetensors")
    assert bad.code == 1 and "fraction" in bad.stderr and "Traceback" not in bad.stderr
    assert np.isfinite(summary["after.clean_accuracy"])


def test_torchrun_two_ranks_fine_tune_with_ddp(digits_checkpoint: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "advkit", "finetune",
           "--model", str(digits_checkpoint), "--data", "digits", "--method", "paper-white", "--epochs", "1", "--last",
           "--eval-attack", "fgsm", "--eval-n", "10", "--no-corruptions", "--out", str(out), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.exists() and (tmp_path / "ddp.h5").exists()
    run = Report(tmp_path / "ddp.h5").read("finetune-paper-white")
    assert run.status == "complete" and len(run.tables["history"]["epoch"]) == 1
