"""`advkit train`, `models info`, `data info`, `list` and `report show`, end to end on real offline data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

Cli = Callable[..., Any]


@pytest.mark.parametrize(
    ("data", "extra", "min_accuracy"),
    [
        ("digits", [], 0.85),
        ("mnist-subset", ["--epochs", "2"], 0.85),
        ("synthetic-rgbir", ["--domain", "ir", "--epochs", "6", "--lr", "0.003", "--data-param", "n_per_class=100"], 0.4),
    ],
)
def test_train_then_report_show(cli: Cli, tmp_path: Path, data: str, extra: list[str], min_accuracy: float) -> None:
    result = cli("train", "--data", data, "--out", "m.safetensors", "--epochs", "3", *extra, "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["test_accuracy"] >= min_accuracy
    assert (tmp_path / "m.safetensors").exists() and (tmp_path / "m.h5").exists()
    assert not (tmp_path / "m.safetensors.state.pt").exists()
    shown = cli("report", "show", "m.h5", "--json")
    assert shown.code == 0, shown.stderr
    (run,) = shown.json()
    assert (run["run"], run["kind"], run["status"]) == ("train", "train", "complete")
    assert run["summary"]["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    detail = cli("report", "show", "m.h5", "train", "--json").json()
    assert len(detail["tables"]["history"]["epoch"]) == summary["epochs"]
    table = cli("report", "show", "m.h5", "train")
    assert table.code == 0 and "history" in table.stdout and "per class" in table.stdout


def test_models_info_lists_layers_and_preprocessing(cli: Cli, digits_checkpoint: Path) -> None:
    info = cli("models", "info", digits_checkpoint, "--json").json()
    assert info["architecture"] == "small-cnn" and info["input_size"] == [8, 8] and info["channels"] == 1
    assert info["classes"] == [str(i) for i in range(10)]
    names = {layer["name"]: layer["output_shape"] for layer in info["layers"]}
    assert names["block1"] == [32, 4, 4] and names["block2"] == [64, 4, 4]
    assert info["parameters"] == sum(t.numel() for t in load_file(str(digits_checkpoint)).values())
    assert [layer["name"] for layer in info["layers"] if layer["detect_default"]] == ["block1", "block2"]  # what detect fit taps
    shown = cli("models", "info", digits_checkpoint)
    assert shown.code == 0
    marked = [line.split("│")[1].strip() for line in shown.stdout.splitlines() if line.startswith("│") and "default" in line]
    assert marked == ["block1", "block2"]


def test_list_commands(cli: Cli) -> None:
    models = {m["name"] for m in cli("list", "models", "--json").json()}
    assert {"small-cnn", "resnet20", "resnet18", "vgg11"} <= models
    attacks = {a["name"] for a in cli("list", "attacks", "--json").json()}
    assert {"pgd", "fgsm", "cw", "deepfool", "square", "onepixel", "autoattack", "ta-pixle"} <= attacks
    datasets = cli("list", "datasets", "--json").json()
    assert {"digits", "mnist-subset", "synthetic-rgbir"} <= {d["name"] for d in datasets["datasets"]}
    assert {"cifar10", "mnist-idx", "svhn", "imagefolder", "paired"} <= {f["name"] for f in datasets["formats"]}
    assert "resnet20" in cli("list", "models", "res*").stdout
    assert len(cli("list", "perturbations", "--json").json()) == 15


@pytest.mark.parametrize(("args", "message"), [
    # `--json true` took `true` as the filter and printed [] with exit 0
    (["models", "--json", "true"], "error: no architecture matches 'true' (--json takes no value: the word after it is "
     "the filter); choose from "),
    (["models", "resnt*"], "error: no architecture matches 'resnt*'; did you mean resnet20, resnet18?"),
    (["attacks", "pgdd"], "error: no attack matches 'pgdd'; did you mean pgd"),
    (["perturbations", "fogg", "--json"], "error: no perturbation matches 'fogg'; did you mean fog?"),
    (["datasets", "cifar"], "error: no dataset or format matches 'cifar'; did you mean cifar10, cifar100?"),
])
def test_a_list_filter_that_matches_nothing_says_so(cli: Cli, args: list[str], message: str) -> None:
    result = cli("list", *args)
    lines = result.stderr.strip().splitlines()
    assert result.code == 1 and result.stdout == "" and len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert cli("list", "datasets", "cifar*", "--json").json()["datasets"] == []  # a filter matching formats only is fine


def _table_cells(stdout: str) -> dict[str, str]:
    """name -> description of the Rich tables in ``stdout``, the wrapped lines of a cell joined, whitespace dropped."""
    cells: dict[str, str] = {}
    name = ""
    for line in stdout.splitlines():
        if not line.startswith("│"):
            continue
        first, second = (part.strip() for part in line.split("│")[1:3])
        name = first or name  # a wrapped description continues on lines with an empty name cell
        cells[name] = cells.get(name, "") + second.replace(" ", "")
    return cells


@pytest.mark.parametrize("what", ["models", "datasets", "attacks", "perturbations"])
def test_list_tables_show_descriptions_literally(cli: Cli, what: str) -> None:
    listed = cli("list", what, "--json").json()
    entries = listed["datasets"] + listed["formats"] if what == "datasets" else listed
    shown = cli("list", what)
    assert shown.code == 0, shown.stderr
    # Rich must not read a summary as markup (`[train|val|test/]` vanished) nor as emoji codes
    assert _table_cells(shown.stdout) == {e["name"]: "".join(e["summary"].split()) for e in entries}
    if what == "datasets":
        assert "root/[train|val|test/]<class>/" in _table_cells(shown.stdout)["imagefolder"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["attack", "fgsm", "--model", "some.module:factory", "--data", "digits"],
         "error: cannot import some.module for some.module:factory: No module named 'some'"),  # no :factory: emoji
        (["attack", "fgsm", "--model", "x[bold]y:smile:.pt", "--data", "digits"],
         "error: no such checkpoint: x[bold]y:smile:.pt"),  # an OSError-like mistake: markup kept as text
        (["list", "datasets", "--[red]x"], "error: No such option: --[red]x (see advkit list datasets --help)"),
    ],
)
def test_error_messages_are_printed_literally(cli: Cli, args: list[str], message: str) -> None:
    result = cli(*args)
    assert result.code in (1, 2) and result.stderr.strip().splitlines() == [message], result.stderr


def test_data_info(cli: Cli) -> None:
    digits = cli("data", "info", "digits", "--json").json()
    assert digits["samples"] == 1797 and digits["domains"] == {"gray": {"channels": 1, "size": [8, 8]}}
    assert sum(digits["splits"].values()) == 1797
    paired = cli("data", "info", "synthetic-rgbir", "--data-param", "n_per_class=5", "--json").json()
    assert paired["kind"] == "paired" and paired["domains"]["ir"]["channels"] == 1 and paired["samples"] == 50


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    """Kill training after its first epoch checkpoint; re-running finishes with the same weights."""
    args = ["--data", "digits", "--epochs", "4", "--seed", "3", "--batch-size", "32"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    full = tmp_path / "full.safetensors"
    subprocess.run([sys.executable, "-m", "advkit", "train", *args, "--out", str(full)], check=True, env=env, capture_output=True)
    resumed = tmp_path / "resumed.safetensors"
    state = tmp_path / "resumed.safetensors.state.pt"
    proc = subprocess.Popen([sys.executable, "-m", "advkit", "train", *args, "--out", str(resumed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists() and not resumed.exists(), "the kill should land between the first epoch and the end"
    done = subprocess.run([sys.executable, "-m", "advkit", "train", *args, "--out", str(resumed), "--json"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '"resumed_from_epoch": 0' not in done.stdout
    a, b = load_file(str(full)), load_file(str(resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_existing_checkpoint_is_not_overwritten(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "m.safetensors").write_bytes(b"precious")
    result = cli("train", "--data", "digits", "--epochs", "1", "--out", "m.safetensors")
    assert result.code == 1 and "--overwrite" in result.stderr
    assert (tmp_path / "m.safetensors").read_bytes() == b"precious"


def test_an_interrupted_training_with_other_settings_is_advised_what_works(cli: Cli, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The clash with the interrupted run advised "--run NAME", which then failed on the training state: it holds
    the other settings whatever the run is called."""
    from advkit import training

    real_epoch = training._train_epoch

    def stopped_in_epoch_2(*args: Any) -> Any:
        if args[6] == 1:  # the epoch index: Ctrl-C after the first epoch's state was written
            raise KeyboardInterrupt
        return real_epoch(*args)

    monkeypatch.setattr(training, "_train_epoch", stopped_in_epoch_2)
    args = ["train", "--data", "digits", "--out", "m.safetensors"]
    assert cli(*args, "--epochs", "3").code == 130 and (tmp_path / "m.safetensors.state.pt").exists()
    monkeypatch.setattr(training, "_train_epoch", real_epoch)
    other = cli(*args, "--epochs", "2")
    assert other.code == 1 and "--run NAME" not in other.stderr, other.stderr
    assert other.stderr.strip().splitlines() == [
        "error: m.h5 already has run 'train' with a different config (epochs: 3 vs 2 now); m.safetensors.state.pt holds "
        "that interrupted training: re-run it with its own settings to resume it, pass --overwrite to start over, or "
        "write another --out"], other.stderr
    assert cli(*args, "--epochs", "2", "--overwrite").code == 0  # what it advises works


def test_an_out_that_cannot_be_written_fails_before_training(cli: Cli, tmp_path: Path) -> None:
    """A folder named like the checkpoint trained every epoch, then failed, leaving a state file and a running run."""
    (tmp_path / "dir.safetensors").mkdir()
    folder = cli("train", "--data", "digits", "--epochs", "1", "--out", "dir.safetensors", "--overwrite")
    assert folder.code == 1 and "is a folder; name the checkpoint file to write" in folder.stderr, folder.stderr
    (tmp_path / "file").write_text("not a folder")
    below_a_file = cli("train", "--data", "digits", "--epochs", "1", "--out", "file/m.safetensors")
    assert below_a_file.code == 1 and "cannot create the folder of --out" in below_a_file.stderr, below_a_file.stderr
    assert not (tmp_path / "dir.h5").exists() and "training" not in folder.stderr + below_a_file.stderr


@pytest.mark.parametrize(("line", "message"), [
    ("epochs = true", "epochs in c.toml must be a number, not true or false, got true"),  # trained 1 epoch
    ('normalise = "no"', 'normalise in c.toml must be true or false, got "no"'),
    ("json_output = true", "json_output in c.toml: pass per-call options as flags, not in a config"),  # switched to JSON
    ('config = "other.toml"', "config in c.toml: pass per-call options as flags"),  # silently ignored
    ("[arch]\nname = 1", "arch in c.toml must be a value, not a table"),  # was: unknown architecture "{'name'"
    ('lr = [0.1, 0.2]', "lr in c.toml takes one value, not a list, got [0.1, 0.2]"),
    ('out = "a.safetensors"\nout_path = "b.safetensors"', "out_path is given twice in c.toml"),
    ("epochs = [1979-05-27]", 'epochs in c.toml takes one value, not a list, got ["1979-05-27"]'),  # a TypeError traceback
])
def test_config_values_click_would_convert_are_refused(cli: Cli, tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "c.toml").write_text(f'data = "digits"\n{line}\n')
    result = cli("train", "--config", "c.toml", *([] if "out" in line else ["--out", "m.safetensors"]))
    assert result.code == 2 and message in result.stderr and not (tmp_path / "m.h5").exists(), result.stderr


def test_a_binary_file_as_config_is_one_line(cli: Cli, tmp_path: Path) -> None:
    """A report given as --config was read as text: a UnicodeDecodeError traceback."""
    (tmp_path / "r.json").write_bytes(b"\x89HDF\r\n\x1a\n\x00\xff")
    result = cli("train", "--config", "r.json", "--out", "m.safetensors")
    assert result.code == 2 and "config r.json is not a text file" in result.stderr and "Traceback" not in result.stderr
    assert cli("train", "--config", "r.h5").code == 2  # the extension is checked first


def test_config_keys_may_be_spelt_as_flags_and_lists_take_one_value(cli: Cli, tmp_path: Path) -> None:
    # out (the flag) for out_path, data-param as one string where the flag repeats: both were refused
    (tmp_path / "c.toml").write_text('data = "digits"\nout = "m.safetensors"\nepochs = 1\ndata-param = "test_fraction=0.3"\n')
    result = cli("train", "--config", "c.toml", "--json")
    assert result.code == 0, result.stderr
    config = cli("report", "show", "m.h5", "train", "--json").json()["config"]
    assert config["out_path"] == "m.safetensors" and config["data_param"] == ["test_fraction=0.3"]


def test_training_without_a_test_split_prints_no_numpy_warnings(cli: Cli) -> None:
    result = cli("train", "--data", "digits", "--data-param", "test_fraction=0", "--epochs", "1", "--out", "m.safetensors", "--json")
    assert result.code == 0 and "warning" not in result.stderr.lower(), result.stderr  # was "Mean of empty slice" twice
    assert result.json()["test_accuracy"] is None  # NaN: there is no test split to measure


def test_config_replay_reproduces_the_run(cli: Cli, tmp_path: Path) -> None:
    assert cli("train", "--data", "digits", "--epochs", "1", "--lr", "0.002", "--out", "a.safetensors").code == 0
    toml = cli("report", "show", "a.h5", "train", "--config")
    assert toml.code == 0 and 'lr = 0.002' in toml.stdout
    (tmp_path / "run.toml").write_text(toml.stdout.replace('"a.safetensors"', '"b.safetensors"'))
    replay = cli("train", "--config", "run.toml", "--json")
    assert replay.code == 0, replay.stderr
    a = cli("report", "show", "a.h5", "train", "--json").json()
    b = cli("report", "show", "b.h5", "train", "--json").json()
    assert {k: v for k, v in a["config"].items() if k != "out_path"} == {k: v for k, v in b["config"].items() if k != "out_path"}
    assert a["summary"]["test_accuracy"] == b["summary"]["test_accuracy"]


def test_a_diverged_training_is_one_line_and_the_fixed_command_starts_afresh(cli: Cli, tmp_path: Path) -> None:
    base = ["train", "--data", "digits", "--epochs", "1", "--out", "m.safetensors"]
    diverged = cli(*base, "--lr", "1e6", "--schedule", "constant")
    assert diverged.code == 1 and diverged.stderr.strip().splitlines()[-1].startswith("error: training diverged"), diverged.stderr
    assert not (tmp_path / "m.safetensors").exists()
    fixed = cli(*base, "--json")  # no half-made report run with the old learning rate stands in the way
    assert fixed.code == 0 and fixed.json()["test_accuracy"] > 0.5, fixed.stderr


@pytest.mark.parametrize(("name", "when"), [("m.safetensors", "end"), ("m.safetensors.state.pt", "epoch")])
def test_a_checkpoint_another_process_writes_meanwhile_is_left_as_it_is(cli: Cli, tmp_path: Path, appears_meanwhile: Any,
                                                                        name: str, when: str) -> None:
    """--out was checked before training and replaced after it: a checkpoint (or training state) another process
    wrote there in between was silently replaced."""
    check = appears_meanwhile(tmp_path / name, when, "train")
    args = ["train", "--data", "digits", "--epochs", "1", "--out", "m.safetensors"]
    check(cli(*args))
    if when == "end":
        assert cli(*args).code == 1  # nothing of ours left to resume over their file: "already exists"
        replaced = cli(*args, "--overwrite")  # replacing it is still what --overwrite does
        assert replaced.code == 0 and load_file(tmp_path / name), replaced.stderr
