"""Models the CLI cannot evaluate honestly: no input gradients for a gradient attack, no preprocessing metadata,
bare weights. Each is one line, and every hint in it is true for the command that prints it."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from advkit.models import load_checkpoint

Cli = Callable[..., Any]


@pytest.fixture
def user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, digits_checkpoint: Path) -> Iterator[str]:
    """A user module (unique name per test: imports are cached) with factories around the digits CNN."""
    name = f"user_models_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(f"""
        import torch
        from advkit.models import load_checkpoint

        class Detached(torch.nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, x):
                return self.net(x.detach())

        def detached():
            loaded = load_checkpoint({str(digits_checkpoint)!r})
            net = Detached(loaded.net)
            net.advkit_preprocessing = loaded.preprocessing
            return net

        def without_preprocessing():
            return load_checkpoint({str(digits_checkpoint)!r}).net
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def _one_error_line(result: Any) -> str:
    assert result.code == 1 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_gradient_attack_on_a_detaching_model_fails_before_any_attack_runs(cli: Cli, user_models: str, tmp_path: Path) -> None:
    result = cli("attack", "pixle", "pgd", "--model", f"{user_models}:detached", "--data", "digits", "--n", "4", "--out", "g.h5")
    line = _one_error_line(result)
    assert "attack pgd needs the model's input gradients" in line and "gradient-free attack" in line
    assert not (tmp_path / "g.h5").exists()  # refused before pixle ran, not after
    silent = cli("attack", "cw", "--model", f"{user_models}:detached", "--data", "digits", "--n", "4", "--out", "cw.h5")
    assert "attack cw needs the model's input gradients" in _one_error_line(silent)  # cw alone would not even crash
    fine = cli("attack", "pixle", "--model", f"{user_models}:detached", "--data", "digits", "--n", "4",
               "--param", "restarts=1", "--param", "max_iterations=2", "--out", "p.h5")
    assert fine.code == 0, fine.stderr


def test_attack_warns_about_a_model_without_preprocessing(cli: Cli, user_models: str, digits_checkpoint: Path) -> None:
    args = ["--data", "digits", "--n", "4", "--param", "restarts=1", "--param", "max_iterations=1"]
    result = cli("attack", "pixle", "--model", f"{user_models}:without_preprocessing", *args, "--out", "w.h5")
    assert result.code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any("carries no preprocessing metadata" in w and "without normalisation" in w for w in warnings), result.stderr
    with_metadata = cli("attack", "pixle", "--model", digits_checkpoint, *args, "--out", "m.h5")
    assert with_metadata.code == 0 and "preprocessing" not in with_metadata.stderr


def _torchscript(path: Path, checkpoint: Path, *, with_metadata: bool) -> Path:
    loaded = load_checkpoint(checkpoint)
    extra = {"advkit.json": json.dumps({"preprocessing": loaded.preprocessing.to_dict()})} if with_metadata else {}
    torch.jit.save(torch.jit.trace(loaded.net, torch.zeros(1, 1, 8, 8)), str(path), _extra_files=extra)
    return path


def test_robustness_refuses_a_model_without_preprocessing(cli: Cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    bare = _torchscript(tmp_path / "bare.pt", digits_checkpoint, with_metadata=False)
    args = ["--data", "digits", "--corruption", "fog", "--severity", "1", "--n", "20"]
    line = _one_error_line(cli("robustness", "--model", bare, *args))
    assert "bare.pt carries no preprocessing metadata" in line and "advkit.json" in line
    as_baseline = _one_error_line(cli("robustness", "--model", digits_checkpoint, "--baseline", bare, *args))
    assert "bare.pt carries no preprocessing metadata" in as_baseline
    described = _torchscript(tmp_path / "described.pt", digits_checkpoint, with_metadata=True)
    ok = cli("robustness", "--model", described, *args, "--json")
    assert ok.code == 0, ok.stderr
    reference = cli("robustness", "--model", digits_checkpoint, *args, "--out", "ref.h5", "--json")
    assert ok.json()["clean_accuracy"] == reference.json()["clean_accuracy"]  # the same net, normalised the same


def test_models_info_does_not_present_defaults_as_a_bare_archives_preprocessing(cli: Cli, digits_checkpoint: Path,
                                                                                 tmp_path: Path) -> None:
    """A TorchScript file without advkit.json was shown with mean 0, std 1 and domain rgb, advkit's defaults."""
    bare = _torchscript(tmp_path / "bare.pt", digits_checkpoint, with_metadata=False)
    info = cli("models", "info", bare, "--json")
    assert info.code == 0, info.stderr
    shown = info.json()
    assert shown["mean"] is shown["std"] is shown["domain"] is shown["classes"] is None and shown["channels"] is None
    assert info.stderr.startswith("warning: ") and "carries no preprocessing metadata" in info.stderr
    described = cli("models", "info", _torchscript(tmp_path / "described.pt", digits_checkpoint, with_metadata=True), "--json")
    assert described.json()["mean"] == pytest.approx(load_checkpoint(digits_checkpoint).preprocessing.mean) and not described.stderr


def test_models_info_and_detect_fit_on_a_torchscript_archive(cli: Cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    """TorchScript takes no forward hooks: models info failed, blaming the input shape, on an archive with metadata."""
    described = _torchscript(tmp_path / "described.pt", digits_checkpoint, with_metadata=True)
    info = cli("models", "info", described, "--json")
    assert info.code == 0, info.stderr
    layers = {layer["name"]: layer for layer in info.json()["layers"]}
    assert layers["fc"]["type"] == "Linear" and layers["fc"]["output_shape"] is None and not layers["fc"]["detect_default"]
    fit = cli("detect", "fit", "--model", described, "--data", "digits", "--epochs", "1", "--out", "d.safetensors")
    errors = [line for line in fit.stderr.splitlines() if line.startswith("error:")]
    assert fit.code == 1 and len(errors) == 1 and "a TorchScript net takes no forward hooks" in errors[0], fit.stderr
    assert "Traceback" not in fit.stderr and not (tmp_path / "d.safetensors").exists()
    assert "fitting" not in fit.stderr, fit.stderr  # refused before the data is read, not after announcing the fit
    ok = cli("detect", "fit", "--model", digits_checkpoint, "--data", "digits", "--n", "200", "--epochs", "1", "--filters", "4",
             "--out", "d.safetensors")
    assert ok.code == 0, ok.stderr
    for command in (["eval", "--attack", "fgsm", "--n", "20", "--out", "ev.h5"], ["score", "--data", "digits", "--n", "3"]):
        refused = cli("detect", *command, "--detector", "d.safetensors", "--model", described)
        assert refused.code == 1 and refused.stderr.startswith("error: a TorchScript net takes no forward hooks"), refused.stderr
    assert not (tmp_path / "ev.h5").exists()  # refused before the attack ran


def test_bare_weights_message_is_true_for_each_command(cli: Cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    bare = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in load_checkpoint(digits_checkpoint).net.state_dict().items()}, str(bare))
    runs = {
        "robustness": ["robustness", "--model", bare, "--data", "digits"],
        "finetune": ["finetune", "--model", bare, "--data", "digits", "--out", "ft.safetensors"],
        "attack": ["attack", "--model", bare, "--data", "digits"],
    }
    lines = {command: _one_error_line(cli(*args)) for command, args in runs.items()}
    assert len(set(lines.values())) == 1  # one message, true wherever it is printed
    line = lines["attack"]
    assert "advkit attack, detect and models info take --arch NAME" in line and "the other commands need" in line
    for command in (["attack"], ["detect", "fit"], ["models", "info"]):
        assert "--arch" in cli(*command, "--help").stdout
    for command in ("finetune", "robustness"):
        assert "--arch" not in cli(command, "--help").stdout


def test_bare_weights_of_another_input_size_load_with_arch_param(cli: Cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    """small-cnn defaults to 28x28 inputs; the digits CNN takes 8x8, which --arch-param says."""
    bare = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in load_checkpoint(digits_checkpoint).net.state_dict().items()}, str(bare))
    mismatch = cli("models", "info", bare, "--arch", "small-cnn")
    assert mismatch.code == 1 and "shape mismatch" in mismatch.stderr and "--arch-param" in mismatch.stderr
    info = cli("models", "info", bare, "--arch", "small-cnn", "--arch-param", "input_size=8", "--json")
    assert info.code == 0 and info.json()["arch_kwargs"] == {"input_size": 8}, info.stderr
    attacked = cli("attack", "fgsm", "--model", bare, "--arch", "small-cnn", "--arch-param", "input_size=8", "--data", "digits",
                   "--n", "5", "--out", "r.h5", "--json")
    assert attacked.code == 0 and attacked.json()["clean_accuracy"] > 0.5, attacked.stderr
    # input_size=16 gives the same weight shapes, so only a forward pass shows it cannot take 8x8 digits
    wrong = cli("attack", "fgsm", "--model", bare, "--arch", "small-cnn", "--arch-param", "input_size=16", "--data", "digits")
    assert wrong.code == 1 and "cannot take the 8x8x1 images of digits (check --arch and --arch-param)" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
    inspected = cli("models", "info", digits_checkpoint, "--arch", "small-cnn", "--arch-param", "input_size=16")
    assert inspected.code == 1 and "cannot take its recorded 1x8x8 input" in inspected.stderr, inspected.stderr
    negative = cli("models", "info", bare, "--arch", "small-cnn", "--arch-param", "num_classes=-1")  # was a torch traceback
    assert negative.code == 1 and negative.stderr.strip() == "error: small-cnn: num_classes must be an int >= 1, got -1"
    alone = cli("models", "info", bare, "--arch-param", "input_size=8")
    assert alone.code == 2 and "needs --arch NAME" in alone.stderr


def test_class_names_that_differ_from_the_checkpoints_are_a_warning(cli: Cli, digits_checkpoint: Path) -> None:
    """Found by a sweep: a digits model ran on synthetic shapes (and gave mCE 0) without a word about the labels."""
    shapes = ["--data", "synthetic-rgbir", "--domain", "ir", "--data-param", "size=8", "--data-param", "n_per_class=3"]
    other = cli("attack", "fgsm", "--model", digits_checkpoint, *shapes, "--n", "3", "--include-misclassified", "--out", "w.h5")
    assert other.code == 0, other.stderr
    assert "names its class 0 '0' but synthetic-rgbir calls it 'disk': check that the labels mean the same classes" in other.stderr
    same = cli("attack", "fgsm", "--model", digits_checkpoint, "--data", "digits", "--n", "3", "--out", "w.h5", "--run", "own")
    assert same.code == 0 and "names its class" not in same.stderr, same.stderr
