"""`advkit attack` end to end, and one-line errors (exit 1) or usage errors (exit 2) for every user mistake."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from advkit.report import Report

Cli = Callable[..., Any]


def test_attack_writes_a_per_sample_report(cli: Cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    result = cli("attack", "pgd", "--model", digits_checkpoint, "--data", "digits", "--n", "20",
                 "--param", "eps=0.3", "--param", "steps=10", "--param", "alpha=0.05", "--out", "r.h5", "--save-images", "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["attack_success_rate"] > 0.9 and summary["robust_accuracy"] < 0.1
    with h5py.File(tmp_path / "r.h5") as f:
        run = f["runs/attack-pgd"]
        assert run.attrs["status"] == "complete" and run.attrs["kind"] == "attack"
        samples = run["samples"]
        attacked = samples["attacked"][:]
        assert attacked.sum() == 20 and len(np.unique(samples["index"][:])) == len(attacked)
        assert (samples["queries"][:][attacked] == 10).all()
        assert samples["adv_images"].shape == (len(attacked), 1, 8, 8)
        assert (samples["linf"][:][attacked] <= 0.3 + 1e-6).all()
    shown = cli("report", "show", "r.h5")
    assert shown.code == 0 and "attack-pgd" in shown.stdout


def test_rerunning_a_finished_attack_does_not_redo_it(cli: Cli, digits_checkpoint: Path) -> None:
    args = ["attack", "fgsm", "--model", digits_checkpoint, "--data", "digits", "--n", "5", "--out", "r.h5"]
    assert cli(*args).code == 0
    again = cli(*args)
    assert again.code == 0 and "already" in again.stderr
    changed = cli(*args, "--param", "eps=0.1")
    assert changed.code == 1 and "different config" in changed.stderr
    assert [line for line in changed.stderr.splitlines() if line.startswith("error:")] == changed.stderr.splitlines()[-1:]
    assert cli(*args, "--param", "eps=0.1", "--run", "fgsm-small").code == 0


def test_a_checkpoint_retrained_under_the_same_path_is_not_taken_for_the_same_run(cli: Cli, tmp_path: Path) -> None:
    train = ["train", "--data", "digits", "--epochs", "1", "--out", "m.safetensors"]
    attack = ["attack", "fgsm", "--model", "m.safetensors", "--data", "digits", "--n", "5", "--out", "r.h5"]
    assert cli(*train).code == 0 and cli(*attack).code == 0
    assert "already complete" in cli(*attack).stderr
    assert cli(*train, "--seed", "5", "--overwrite").code == 0  # other weights, same file name
    again = cli(*attack)
    assert again.code == 1 and "different config (model_fingerprint:" in again.stderr, again.stderr
    config = Report(tmp_path / "r.h5").read("attack-fgsm").config
    assert len(config["model_fingerprint"]) == 64


def test_a_finished_run_recorded_with_a_relative_path_is_not_redone(cli: Cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "m.safetensors").write_bytes(digits_checkpoint.read_bytes())
    args = ["attack", "fgsm", "--model", "m.safetensors", "--data", "digits", "--n", "5", "--out", "r.h5"]
    assert cli(*args).code == 0
    with h5py.File(tmp_path / "r.h5", "a") as f:  # as advkit recorded it before paths were made absolute
        run = f["runs/attack-fgsm"]
        config = json.loads(run.attrs["config"])
        assert config["model"] == str(tmp_path / "m.safetensors")
        run.attrs["config"] = json.dumps({**config, "model": "m.safetensors"})
    again = cli(*args)
    assert again.code == 0 and "already" in again.stderr, again.stderr


@pytest.mark.parametrize("command", [
    ["attack", "pixle", "--n", "3"],
    ["robustness", "--n", "10", "--corruption", "contrast"],
    ["finetune", "--epochs", "1", "--out", "f.safetensors"],
    ["detect", "fit", "--epochs", "1", "--out", "d.safetensors"],
])
def test_data_the_model_cannot_take_is_refused_before_any_work(cli: Cli, digits_checkpoint: Path, command: list[str]) -> None:
    result = cli(*command, "--model", digits_checkpoint, "--data", "mnist-subset")
    assert result.code == 1, result.stderr
    assert result.stderr.strip().splitlines() == ["error: the model takes 8x8 images but mnist-subset has 28x28"], result.stderr


def test_json_output_is_strict_json_when_a_mean_is_undefined(cli: Cli, digits_checkpoint: Path) -> None:
    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    args = ["attack", "fgsm", "--model", digits_checkpoint, "--data", "digits", "--n", "3", "--param", "eps=0.00001"]
    summary = json.loads(cli(*args, "--json").stdout, parse_constant=refuse)
    assert summary["attack_success_rate"] == 0 and summary["queries_mean"] is None and summary["l2_mean"] is None
    shown = json.loads(cli("report", "show", "advkit-report.h5", "--json").stdout, parse_constant=refuse)
    assert shown


def test_builtin_default_attacks_the_shipped_mnist_model(cli: Cli, tmp_path: Path) -> None:
    result = cli("attack", "--n", "8", "--json")  # pixle, the default attack
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["n_attacked"] == 8 and summary["clean_accuracy"] > 0.8
    assert (tmp_path / "advkit-report.h5").exists()


def _one_line_error(result: Any, code: int, fragment: str) -> None:
    assert result.code == code, (result.code, result.stderr)
    assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_user_mistakes_are_one_line_errors(cli: Cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    model = ["--model", digits_checkpoint]
    _one_line_error(cli("attack", "pgd", "--model", "nope.safetensors", "--data", "digits"), 1, "no such checkpoint")
    _one_line_error(cli("attack", "pgdd", *model, "--data", "digits"), 1, "did you mean")
    _one_line_error(cli("attack", "pgd", *model, "--data", "mnist-subset"), 1, "takes 8x8 images")
    _one_line_error(cli("attack", "pgd", *model, "--data", "no/such/folder"), 1, "no file or folder")
    _one_line_error(cli("attack", "pgd", *model, "--data", "digits", "--param", "epz=1"), 1, "has no setting epz")
    # bad usage like --batch-size 0 (exit 2), and in the words of the help's "0 = all" (it was "--n must be >= 1")
    _one_line_error(cli("attack", "pgd", *model, "--data", "digits", "--n", "-1"), 2, "must be >= 1, or 0 for every sample; got -1")
    _one_line_error(cli("attack", "pixle", "pgd", *model, "--data", "digits", "--param", "pgdd.eps=0.1"), 1,
                    "--param pgdd.eps: pgdd is not one of the attacks in this command; did you mean pgd?")
    _one_line_error(cli("attack", "pixle", "pgd", *model, "--data", "digits", "--param", ".eps=0.1"), 1,
                    "--param .eps: no attack name before the dot (NAME.eps, NAME one of pixle, pgd)")
    # refused before pixle runs, not after (torchattacks' DeepFool has no targeted mode)
    _one_line_error(cli("attack", "pixle", "deepfool", *model, "--data", "digits", "--targeted", "random", "--out", "t.h5"),
                    1, "attack deepfool has no targeted mode")
    assert not (tmp_path / "t.h5").exists()
    # so are image shapes an attack cannot take: TI-FGSM's kernels are 3-channel, digits have 1
    _one_line_error(cli("attack", "pixle", "tifgsm", *model, "--data", "digits", "--out", "g.h5"), 1,
                    "torchattacks TIFGSM works on 3-channel images only, got 1 channel(s)")
    assert not (tmp_path / "g.h5").exists()
    _one_line_error(cli("attack", "pgd", *model), 2, "--data")
    _one_line_error(cli("attack", "pgd", *model, "--data", "digits", "--bogus"), 2, "No such option")
    _one_line_error(cli("train", "--data", "digits", "--out", "x.safetensors", "--arch", "resnet9"), 1, "unknown architecture")
    _one_line_error(cli("train", "--data", "synthetic-rgbir", "--out", "x.safetensors"), 1, "--domain")
    _one_line_error(cli("report", "show", "missing.h5"), 1, "no such report")
    (tmp_path / "garbage.h5").write_bytes(b"not hdf5 at all")
    _one_line_error(cli("report", "show", "garbage.h5"), 1, "garbage.h5")
    assert (tmp_path / "garbage.h5").read_bytes() == b"not hdf5 at all"
    (tmp_path / "bad.toml").write_text("epochz = 3\n")
    _one_line_error(cli("train", "--config", "bad.toml", "--data", "digits", "--out", "x.safetensors"), 2, "unknown key(s) epochz")
    (tmp_path / "broken.toml").write_text("epochs = = 3\n")
    _one_line_error(cli("train", "--config", "broken.toml"), 2, "not valid toml")
    _one_line_error(cli("models", "info", tmp_path / "garbage.h5"), 1, "garbage.h5 is a text file, not a model checkpoint")
    with h5py.File(tmp_path / "report.h5", "w") as f:  # a report given as --model was "corrupt pickle data"
        f.create_group("runs")
    _one_line_error(cli("attack", "pgd", "--model", "report.h5", "--data", "digits"), 1,
                    "report.h5 is an HDF5 file (advkit reports are HDF5: read them with advkit report show), not a model checkpoint")
    _one_line_error(cli("data", "info", "cifar10:" + str(tmp_path)), 1, "")


@pytest.mark.parametrize(("args", "message"), [
    (["attack", "pixle", "--n", "abc"], "Invalid value for '--n'"),
    (["atack"], "No such command 'atack'"),
    (["attack", "--bogus"], "No such option: --bogus (see advkit attack --help)"),  # no far-fetched "--out"
    (["attack", "--modle", "m"], "No such option: --modle (Possible options: --model)"),
    (["finetune", "--data", "digits"], "Missing option '--model'"),
    # counts below their minimum: no Python slice (--n -5 once meant "all but the last 5") and no traceback
    (["robustness", "--data", "digits", "--model", "m.safetensors", "--n", "-5"], "Invalid value for '--n'"),
    (["robustness", "--data", "digits", "--model", "m.safetensors", "--batch-size", "0"], "Invalid value for '--batch-size'"),
    (["transfer", "--source-model", "a", "--target-model", "b", "--data", "synthetic-rgbir", "--n", "-1"], "Invalid value for '--n'"),
    (["transfer", "--source-model", "a", "--target-model", "b", "--data", "synthetic-rgbir", "--batch-size", "0"],
     "Invalid value for '--batch-size'"),
    (["detect", "score", "--detector", "d.safetensors", "--data", "digits", "--n", "0"], "Invalid value for '--n'"),
    (["detect", "eval", "--detector", "d.safetensors", "--attack", "fgsm", "--adaptive-n", "0"], "Invalid value for '--adaptive-n'"),
    (["finetune", "--model", "m.safetensors", "--data", "digits", "--eval-n", "0"], "Invalid value for '--eval-n'"),
    (["train", "--data", "digits", "--out", "m.safetensors", "--report", "m.safetensors"], "would both be m.safetensors"),
    (["attack", "--seed", "-1"], "Invalid value for '--seed'"),
    # bad option values that were exit 1 in some commands and 2 in others; now usage mistakes everywhere
    (["train", "--data", "digits", "--out", "m.safetensors", "--epochs", "0"], "Invalid value for '--epochs'"),
    (["finetune", "--model", "m.safetensors", "--data", "digits", "--out", "f.safetensors", "--batch-size", "0"],
     "Invalid value for '--batch-size'"),
    (["train", "--data", "digits", "--out", "m.safetensors", "--lr", "0"], "learning rate must be positive and finite, got 0.0"),
    (["train", "--data", "digits", "--out", "m.safetensors", "--optimizer", "lbfgs"], "unknown optimizer 'lbfgs'"),
    (["finetune", "--model", "m.safetensors", "--data", "digits", "--out", "f.safetensors", "--method", "pgdd"],
     "unknown fine-tuning method 'pgdd'"),
    (["finetune", "--model", "m.safetensors", "--data", "digits", "--out", "f.safetensors", "--fraction", "2"],
     "fraction must lie in (0, 1], got 2.0"),
    (["attack", "--device", "gpu"], "Invalid value for '--device': unknown device 'gpu'; use cpu, cuda, cuda:N or auto"),
    (["robustness", "--model", "m.safetensors", "--data", "digits", "--device", "gpu"], "unknown device 'gpu'"),
    (["attack", "--split", "testing"], "Invalid value for --split: 'testing' is not one of train, val, test, all"),
    (["detect", "fit", "--split", "testing"], "'testing' is not one of train, val, test, all"),
    (["attack", "--per-class", "0"], "Invalid value for '--per-class'"),
    # an Enum option's choices in advkit's words (was "Value error, 'BAD' is not one of 'wae', 'ae', 'vae'.")
    (["detect", "fit", "--kind", "BAD"], "Invalid value for '--kind': 'BAD' is not one of wae, ae, vae (see"),
    (["attack", "--domain", "nir"], "Invalid value for '--domain': 'nir' is not one of rgb, ir (see"),
])
def test_usage_mistakes_are_one_line_errors_with_a_help_hint(cli: Cli, args: list[str], message: str) -> None:
    result = cli(*args)
    lines = result.stderr.strip().splitlines()
    assert result.code == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0] and lines[0].endswith("--help)"), lines[0]


@pytest.mark.parametrize(("spec", "message"), [
    # a format named without its files, and a named dataset's folder that is missing: what to give, where to get it
    ("cifar10", "cifar10 is a format, not a named dataset: give its files as cifar10:PATH; it reads CIFAR-10 python "
     "pickles (data_batch_1..5, test_batch, batches.meta), 32x32 RGB, 10 classes; get the files from "
     "https://www.cs.toronto.edu/~kriz/cifar.html (the CIFAR-10 python version, unpacked)"),
    ("cifar10:missing", "no folder missing: a CIFAR-10 folder holds data_batch_1, data_batch_2, data_batch_3, "
     "data_batch_4, data_batch_5, test_batch, batches.meta; get the files from https://www.cs.toronto.edu/~kriz/cifar.html"),
    # the suggestion ends the line (it read "did you mean digits?, and no file or folder ...")
    ("digitz", "unknown dataset 'digitz', and no file or folder 'digitz' exists; did you mean digits?"),
])
def test_dataset_mistakes_say_what_is_missing_and_how_to_get_it(cli: Cli, spec: str, message: str) -> None:
    result = cli("data", "info", spec)
    lines = result.stderr.strip().splitlines()
    assert result.code == 1 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.stderr


@pytest.mark.parametrize(("param", "message"), [
    ("foo=1", "digits (--data-param) has no setting foo; choose from test_fraction, val_fraction, seed"),
    ("val_fraction=abc", "digits (--data-param): val_fraction must be a float, got 'abc'"),
    ("seed=abc", "digits (--data-param): seed must be an int, got 'abc'"),
])
def test_data_params_are_checked_against_the_reader(cli: Cli, digits_checkpoint: Path, param: str, message: str) -> None:
    for command in (["attack", "pixle", "--model", digits_checkpoint, "--n", "3"], ["data", "info"]):
        result = cli(*command, "--data" if command[0] == "attack" else "digits", *(["digits"] if command[0] == "attack" else []),
                     "--data-param", param)
        assert result.code == 1 and result.stderr.strip().splitlines() == [f"error: {message}"], result.stderr


def test_version_prints_the_package_version(cli: Cli) -> None:
    from importlib.metadata import version

    result = cli("--version")
    assert result.code == 0 and result.stdout == f"advkit {version('advkit')}\n", (result.stdout, result.stderr)


def test_debug_is_in_the_help_and_shows_the_traceback(cli: Cli) -> None:
    shown = cli("--help").stdout
    assert "--debug" in shown and "--version" in shown, shown
    from advkit.errors import CheckpointError

    with pytest.raises(CheckpointError, match="no such checkpoint"):  # the exception itself, not its one line
        cli("--debug", "attack", "pgd", "--model", "nope.safetensors", "--data", "digits")


def test_help_paragraphs_are_wrapped_by_the_terminal_not_the_docstring(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Typer's help kept a docstring's source line breaks ("Re-running an" / "interrupted command"); on a wide
    terminal every paragraph, and every subcommand's summary in its group's list, is now one line."""
    import inspect

    from typer.main import get_command

    from advkit.cli import app

    def walk(command: Any, path: list[str]) -> Any:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    def one_line(text: str) -> str:
        return " ".join(text.split())

    monkeypatch.setenv("COLUMNS", "1000")
    for path, command in walk(get_command(app), []):
        lines = [one_line(line.strip("│ ")) for line in cli(*path, "--help").stdout.splitlines()]
        paragraphs = inspect.cleandoc(command.help or "").split("\n\n")
        summaries = [inspect.cleandoc(sub.help or "").split("\n\n")[0] for sub in getattr(command, "commands", {}).values()]
        for paragraph in paragraphs + summaries:
            assert any(one_line(paragraph) in line for line in lines), (path, paragraph)
        if not getattr(command, "commands", None):
            assert "add --debug to see its traceback" in [line for line in lines if line][-1], path


def test_bare_command_groups_show_their_help(cli: Cli) -> None:
    result = cli("report")
    shown = result.stdout + result.stderr
    assert result.code == 2 and "Usage: advkit report" in shown and "compare" in shown and "error" not in shown


@pytest.mark.parametrize(("attack", "param", "message"), [
    ("pgd", "eps=-1", "pgd: eps must be >= 0, got -1"),
    ("square", "p_init=-3", "square: p_init must be in (0, 1], got -3"),
    ("pgd", "steps=-1", "pgd: steps must be an integer >= 1, got -1"),
    ("fgsm", "eps=-1", "fgsm: eps must be >= 0, got -1"),
    ("cw", "steps=0", "cw: steps must be an integer >= 1, got 0"),
])
def test_out_of_range_torchattacks_settings_are_one_line_before_any_work(cli: Cli, digits_checkpoint: Path, tmp_path: Path,
                                                                          attack: str, param: str, message: str) -> None:
    result = cli("attack", attack, "--model", digits_checkpoint, "--data", "digits", "--n", "2", "--param", param, "--out", "r.h5")
    assert result.code == 1 and result.stderr.strip().splitlines() == [f"error: {message}"], result.stderr
    assert not (tmp_path / "r.h5").exists()


def test_a_settings_failure_inside_torchattacks_leaves_no_half_made_run(cli: Cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    """In range for advkit, but DI-FGSM resizes the 8x8 digits to 0x0 and torch fails inside torchattacks: one line,
    no `running` run left behind (nor a new report file), and the corrected command then runs."""
    common = ["--model", digits_checkpoint, "--data", "digits", "--n", "3"]
    for out in ("fresh.h5", "shared.h5"):
        if out == "shared.h5":
            assert cli("attack", "fgsm", *common, "--out", out).code == 0
        before = (tmp_path / out).exists()
        failed = cli("attack", "difgsm", *common, "--param", "resize_rate=0.1", "--out", out)
        errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
        assert failed.code == 1 and errors == failed.stderr.strip().splitlines()[-1:], failed.stderr
        assert "resize_rate=0.1" in errors[0] and "Traceback" not in failed.stderr
        if not before:
            assert not (tmp_path / out).exists()
        else:
            assert [r.id for r in Report(tmp_path / out).runs()] == ["attack-fgsm"]
        assert not (tmp_path / f"{out}.parts").exists()
        fixed = cli("attack", "difgsm", *common, "--param", "resize_rate=0.9", "--out", out)
        assert fixed.code == 0, fixed.stderr
        assert Report(tmp_path / out).read("attack-difgsm").status == "complete"


def test_the_progress_bar_median_is_the_reports_queries_median() -> None:
    """Both are over the successful samples (the bar says so); failed samples would pull it to the budget."""
    from advkit.cli.attack_cmd import _AttackProgress
    from advkit.report import attack_summary

    progress = _AttackProgress("pixle", 6)
    clean = {"label": np.zeros(3, np.int64), "pred": np.zeros(3, np.int64)}  # journaled batches carry both
    batches = [{"index": np.arange(3), "success": np.array([True, False, True]), "queries": np.array([4, 500, 10]), **clean},
               {"index": np.arange(3, 6), "success": np.array([False, True, False]), "queries": np.array([500, 6, 500]), **clean}]
    for batch in batches:
        event = progress.update(batch)
    merged = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    assert event.stats["median queries (successes)"] == attack_summary(merged)["queries_median"] == 6
    # resumed after the first batch (plus an unattacked row): the bar's numbers still cover all attacked samples
    journal = {k: np.concatenate([v, [0]]) for k, v in batches[0].items()} | {"attacked": np.array([True] * 3 + [False])}
    resumed = _AttackProgress("pixle", 6, journal)
    event = resumed.update(batches[1])
    assert event.done == 6 and event.stats["success"] == attack_summary(merged)["attack_success_rate"] == 0.5
    assert event.stats["median queries (successes)"] == 6


def test_a_progress_bars_elapsed_time_includes_the_work_before_its_first_event(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import time

    from rich.console import Console

    from advkit.cli import common
    from advkit.runtime import ProgressEvent

    stream = io.StringIO()
    monkeypatch.setattr(common, "err", Console(file=stream, width=120))
    with common.progress_bar() as show:
        time.sleep(1.1)  # the first batch: its event only arrives when it is done
        show(ProgressEvent("attack x", 1, 1, {}))
    assert "0:00:01" in stream.getvalue()


def test_a_log_file_gets_whole_progress_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich draws on 80 columns when stderr is not a terminal, which cut the counts and times to '1…' and '0:…'."""
    import io
    import sys

    from advkit.cli import common
    from advkit.runtime import ProgressEvent

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setattr(common, "err", common._stderr_console())
    with common.progress_bar() as show:
        show(ProgressEvent("attack pixle", 100, 100, {"img/s": 627.6, "success": 1.0, "median queries (successes)": 21.0}))
    line = sys.stderr.getvalue().strip()
    assert "100/100 img/s 627.6  success 1  median queries (successes) 21 0:00:00" in line and "…" not in line, line
    monkeypatch.setenv("COLUMNS", "90")  # the user's choice wins
    assert common._stderr_console().width == 90


def test_params_take_python_spellings_too(cli: Cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    # False, None and (1, 2) as a Python user types them; 8/255 and Linf stay text for the attack to read
    args = ["attack", "pixle", "pgd", "--model", digits_checkpoint, "--data", "digits", "--n", "3", "--out", "r.h5",
            "--param", "pixle.x_dimensions=(1, 2)", "--param", "pixle.restarts=2", "--param", "pgd.random_start=False",
            "--param", "pgd.eps=8/255", "--param", "pgd.steps=None"]
    result = cli(*args)
    assert result.code == 0, result.stderr
    report = Report(tmp_path / "r.h5")
    pixle, pgd = (report.read(f"attack-{name}").config["attack_params"] for name in ("pixle", "pgd"))
    assert pixle["x_dimensions"] == [1, 2] and pixle["restarts"] == 2
    assert pgd["random_start"] is False and abs(pgd["eps"] - 8 / 255) < 1e-9 and pgd["steps"] == 10  # None: the default


def test_the_same_command_finishing_first_elsewhere_is_taken_as_done(cli: Cli, digits_checkpoint: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # two identical commands on one report (attack, transfer): the one that waited for the lock finds the run complete
    from advkit.cli import common
    from advkit.errors import ReportError

    assert cli("attack", "fgsm", "--model", digits_checkpoint, "--data", "digits", "--n", "4", "--out", "r.h5").code == 0
    report = Report(tmp_path / "r.h5")
    cfg = report.read("attack-fgsm").config
    real, calls = common.finished_run, []

    def late(*args: Any) -> Any:  # not finished when first asked, before the lock; finished once the lock is held
        calls.append(args)
        return None if len(calls) == 1 else real(*args)

    monkeypatch.setattr(common, "finished_run", late)
    writer, finished = common.start_or_finished(report, "attack-fgsm", "attack", cfg, 0, False)
    assert writer is None and finished == report.read("attack-fgsm").summary and len(calls) == 2
    changed = dict(cfg, n=5)
    with pytest.raises(ReportError, match="different config"):  # another config still clashes
        common.start_or_finished(report, "attack-fgsm", "attack", changed, 0, False)
    with pytest.raises(ReportError, match=r"\(n: 4 vs 5 now\); pass --run-prefix PREFIX or --overwrite$"):  # detect eval's
        common.start_or_finished(report, "attack-fgsm", "attack", changed, 0, False, "--run-prefix PREFIX")  # option


def test_a_multi_attack_worst_case_finishing_first_elsewhere_is_taken_as_done(cli: Cli, digits_checkpoint: Path,
                                                                             tmp_path: Path, finishing_elsewhere: Any) -> None:
    # two identical `advkit attack A B`: the one that waited for the lock to write the worst-case run stopped with
    # "already has a complete run 'attack-worst-case'; use --run NAME for a new run or --overwrite"
    args = ["attack", "fgsm", "pgd", "--model", digits_checkpoint, "--data", "digits", "--n", "4", "--json"]
    assert cli(*args, "--out", "first.h5").code == 0 and cli(*args, "--out", "r.h5").code == 0
    with h5py.File(tmp_path / "r.h5", "r+") as f:  # its attack runs are done; its worst case is being written elsewhere
        del f["runs/attack-worst-case"]
    worst = Report(tmp_path / "first.h5").read("attack-worst-case")
    finishing_elsewhere(tmp_path / "r.h5", worst)
    second = cli(*args, "--out", "r.h5")
    assert second.code == 0, second.stderr
    assert second.json()["attacks"]["worst case"] == worst.summary == Report(tmp_path / "r.h5").read("attack-worst-case").summary


def test_ctrl_c_while_the_cli_loads_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Loading the CLI takes about a second (torch); Ctrl-C then printed a traceback through the imports."""
    import builtins
    import sys

    from advkit.__main__ import run

    real_import = builtins.__import__

    def interrupted(name: str, *args: object, **kwargs: object) -> object:
        if name == "advkit.cli":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", interrupted)
    monkeypatch.setattr(sys, "argv", ["advkit", "list", "models"])
    with pytest.raises(SystemExit) as stopped:
        run()
    assert stopped.value.code == 130
    assert capsys.readouterr().err == "interrupted while loading advkit: nothing was started\n"


def test_ctrl_c_swallowed_by_a_finaliser_still_stops_the_attack(cli: Cli, digits_checkpoint: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C that lands in a weakref callback or ``__del__`` is printed by Python as "Exception ignored" and
    dropped: the attack ran to its end, exit 0 (seen in a kill test). It now stops at the next batch, exit 130."""
    from advkit.models.wrapper import ModelWrapper

    class CtrlCWhileCollected:
        def __del__(self) -> None:
            raise KeyboardInterrupt

    real_forward, calls = ModelWrapper.forward, [0]

    def forward(self: ModelWrapper, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 3:  # inside the first batch's attack
            CtrlCWhileCollected()
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(ModelWrapper, "forward", forward)
    args = ["attack", "fgsm", "--model", digits_checkpoint, "--data", "digits", "--n", "40", "--batch-size", "8", "--out", "r.h5"]
    result = cli(*args)
    assert result.code == 130, result.stderr
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "interrupted: re-run the same command to resume"
    run = Report(tmp_path / "r.h5").read("attack-fgsm")
    assert run.status != "complete" and 0 < len(run.samples["index"]) < 40  # stopped after a batch, which was kept
    monkeypatch.setattr(ModelWrapper, "forward", real_forward)
    resumed = cli(*args)
    assert resumed.code == 0 and "resuming" in resumed.stderr


def test_ctrl_c_in_the_interpreters_exit_prints_no_noise() -> None:
    """A Ctrl-C after the command returned (torch's teardown takes a moment) printed Python's "Exception ignored ...
    KeyboardInterrupt" traceback; it now ends the process as the OS does, after the output was flushed."""
    import signal
    import subprocess
    import sys

    script = ("import atexit, os, signal, sys, time\n"
              "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(2)))\n"
              "sys.argv = ['advkit', 'list', 'models']\n"
              "from advkit.__main__ import run\n"
              "run()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGINT, done.stderr
    assert done.stderr == "" and "architectures" in done.stdout  # the whole table, flushed


@pytest.mark.parametrize(("module", "message"), [
    ("advkit.cli", "interrupted while loading advkit: nothing was started"),  # while the CLI loads (torch)
    ("advkit.models.architectures", "interrupted: nothing half-done was kept; re-run the same command to start over"),
])
def test_ctrl_c_in_python_run_by_c_code_during_an_import_exits_130_in_one_line(module: str, message: str) -> None:
    """Torch's and matplotlib's extensions run Python from C++ while they are imported; a KeyboardInterrupt raised
    there cannot unwind through it: it aborted the process ("terminate called after throwing an instance of
    'pybind11::error_already_set'", exit 134), or was printed as a traceback and dropped. Here C code (PyRun) runs
    the Python that gets the Ctrl-C, while advkit loads or while ``list models`` first imports its module."""
    import signal
    import subprocess
    import sys

    script = ("import ctypes, importlib.abc, sys\n"
              "sys.argv = ['advkit', 'list', 'models']\n"
              "class Interrupting(importlib.abc.MetaPathFinder):\n"
              "    def find_spec(self, name, path, target=None):\n"
              f"        if name == {module!r}:\n"
              "            sys.meta_path.remove(self)\n"
              "            ctypes.pythonapi.PyRun_SimpleString(b'import os, signal, time\\n'\n"
              "                                                b'os.kill(os.getpid(), signal.SIGINT)\\ntime.sleep(5)\\n')\n"
              "sys.meta_path.insert(0, Interrupting())\n"
              "from advkit.__main__ import run\n"
              "run()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal
    assert (done.returncode, done.stderr, done.stdout) == (130, f"{message}\n", ""), done.stderr


def test_the_interrupt_message_says_what_a_re_run_does() -> None:
    from advkit.cli import _after_interrupt

    assert _after_interrupt(["attack", "pixle", "--n", "5"]) == "re-run the same command to resume"
    assert _after_interrupt(["detect", "fit", "--model", "m"]).startswith("nothing half-done was kept")
    # detect eval writes each attack's run whole and a re-run skips those already complete (it promised nothing kept)
    assert _after_interrupt(["detect", "eval", "--attack", "pgd"]).startswith("the runs written before it are kept")


def test_the_progress_bar_counts_success_like_the_summary() -> None:
    """With --include-misclassified the bar's 'success' and median queries counted images the model already got
    wrong (pgd showed 0.3 live and 0.16 in the table)."""
    import numpy as np

    from advkit.cli.attack_cmd import _AttackProgress

    columns = {"index": np.arange(4), "label": np.array([0, 1, 2, 3]), "pred": np.array([0, 1, 9, 9]),
               "attacked": np.ones(4, bool), "success": np.array([True, False, True, True]), "queries": np.array([3, 5, 1, 1])}
    stats = _AttackProgress("pgd", 4).update(columns).stats
    assert stats["success"] == 0.5 and stats["median queries (successes)"] == 3.0  # over the 2 clean-correct images
