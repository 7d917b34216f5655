"""`advkit attack` protocols: per-class selection, targets, several attacks (worst case), resume, torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from advkit.report import Report

Cli = Callable[..., Any]
PIXLE = ["--param", "restarts=8", "--param", "max_iterations=8", "--param", "x_dimensions=[1,2]", "--param", "y_dimensions=[1,2]"]


def test_per_class_selection(cli: Cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    result = cli("attack", "fgsm", "--model", digits_checkpoint, "--data", "digits", "--n", "0", "--per-class", "3",
                 "--out", "r.h5", "--json")
    assert result.code == 0, result.stderr
    samples = Report(tmp_path / "r.h5").read("attack-fgsm").samples
    attacked_labels = samples["label"][samples["attacked"]]
    assert np.bincount(attacked_labels, minlength=10).tolist() == [3] * 10
    # a correct sample met after its class was full is not in the run: it would count as robust unattacked
    skipped = ~samples["attacked"]
    assert (samples["pred"][skipped] != samples["label"][skipped]).all()
    summary = Report(tmp_path / "r.h5").read("attack-fgsm").summary
    assert summary["robust_accuracy"] * summary["n"] == pytest.approx(summary["n_attacked"] - summary["n_success"])
    assert "stopped the selection" not in result.stderr
    # --per-class 3 under --n 20 cannot give 3 of each of 10 classes: the cap is said, not left to be found in the report
    capped = cli("attack", "fgsm", "--model", digits_checkpoint, "--data", "digits", "--n", "20", "--per-class", "3", "--out", "c.h5")
    assert capped.code == 0 and "--n 20 stopped the selection before --per-class 3 of every class" in capped.stderr, capped.stderr


@pytest.mark.parametrize("mode", ["random", "least-likely", "7"])
def test_targeted_attacks_record_targets_and_verify_them(cli: Cli, digits_checkpoint: Path, tmp_path: Path, mode: str) -> None:
    result = cli("attack", "pixle", "--model", digits_checkpoint, "--data", "digits", "--n", "12", "--targeted", mode,
                 *PIXLE, "--out", "r.h5", "--save-images", "--json")
    assert result.code == 0, result.stderr
    s = Report(tmp_path / "r.h5").read("attack-pixle").samples
    attacked = s["attacked"]
    assert (s["target"][attacked] != s["label"][attacked]).all()
    assert ((s["adv_pred"] == s["target"]) == s["success"])[attacked].all()
    if mode == "7":
        assert (s["target"][attacked] == 7).all() and (s["label"] != 7).all()
    assert (s["target"][~attacked] == -1).all()  # no attack, no target


def test_bad_targets_are_one_line_errors(cli: Cli, digits_checkpoint: Path) -> None:
    for spec, message in [("12", "outside the 10 classes"), ("most-likely", "--targeted takes")]:
        result = cli("attack", "pixle", "--model", digits_checkpoint, "--data", "digits", "--targeted", spec)
        assert result.code == 1 and message in result.stderr and "Traceback" not in result.stderr
    zero = cli("attack", "pixle", "--model", digits_checkpoint, "--data", "digits", "--max-queries", "0")
    assert zero.code == 2 and "max-queries" in zero.stderr


def test_samples_that_spend_the_query_budget_are_counted_in_a_warning(cli: Cli, digits_checkpoint: Path) -> None:
    """PGD of 10 steps under a budget of 9 is aborted on every sample and keeps the clean image: robust accuracy 1,
    more 'robust' than a 1-step PGD, and nothing said so."""
    args = ["--model", digits_checkpoint, "--data", "digits", "--n", "6", "--param", "pgd.eps=0.2", "--param", "pgd.steps=10"]
    capped = cli("attack", "pgd", *args, "--max-queries", "9", "--out", "capped.h5", "--json")
    assert capped.code == 0, capped.stderr
    assert capped.json()["robust_accuracy"] == 1.0
    assert "pgd: 6 of 6 attacked samples ran out of --max-queries 9 without success and count as robust" in capped.stderr
    enough = cli("attack", "pgd", *args, "--max-queries", "11", "--out", "enough.h5")
    assert enough.code == 0 and "ran out of --max-queries" not in enough.stderr, enough.stderr


def test_several_attacks_give_a_per_sample_worst_case(cli: Cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    result = cli("attack", "fgsm", "pixle", "--model", digits_checkpoint, "--data", "digits", "--n", "30",
                 "--param", "fgsm.eps=0.05", *[p.replace("restarts", "pixle.restarts") if p.startswith("restarts") else p for p in PIXLE[:2]],
                 "--param", "pixle.x_dimensions=[1,2]", "--param", "pixle.y_dimensions=[1,2]", "--out", "r.h5", "--json")
    assert result.code == 0, result.stderr
    report = Report(tmp_path / "r.h5")
    fgsm, pixle = (report.read(f"attack-{n}").samples for n in ("fgsm", "pixle"))
    worst = report.read("attack-worst-case")
    assert np.array_equal(fgsm["index"], pixle["index"])
    expected = fgsm["success"] | pixle["success"]
    assert np.array_equal(worst.samples["success"], expected)
    robust = (fgsm["pred"] == fgsm["label"]) & ~expected
    assert worst.summary["robust_accuracy"] == pytest.approx(robust.mean())
    assert worst.summary["robust_accuracy"] <= min(worst.summary["robust_accuracy.fgsm"], worst.summary["robust_accuracy.pixle"])
    assert set(result.json()["attacks"]) == {"fgsm", "pixle", "worst case"}


def test_interrupted_attack_resumes_to_the_same_report(cli: Cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    args = ["attack", "pixle", "--model", digits_checkpoint, "--data", "digits", "--n", "24", *PIXLE, "--batch-size", "8"]
    assert cli(*args, "--out", "full.h5").code == 0
    # a run interrupted after its first batch: journal the first 8 attacked samples, then stop
    full = Report(tmp_path / "full.h5").read("attack-pixle")
    partial = Report(tmp_path / "part.h5").start_run("attack-pixle", kind="attack", config=full.config, seed=0)
    first = {k: v[:8] for k, v in full.samples.items()}
    moves = full.tables["moves"]
    mine = np.isin(moves["sample"], first["index"])
    partial.append(first, tables={"moves": {k: v[mine] for k, v in moves.items()}})
    partial.close()
    resumed = cli(*args, "--batch-size", "5", "--out", "part.h5")
    assert resumed.code == 0 and "resuming" in resumed.stderr
    again = Report(tmp_path / "part.h5").read("attack-pixle")
    for key in ("index", "success", "queries", "iterations", "l0", "adv_pred"):
        assert np.array_equal(again.samples[key], full.samples[key]), key
    assert mine.any() and not mine.all()  # the move programs came from both processes
    for key, values in moves.items():
        assert np.array_equal(again.tables["moves"][key], values), key


def test_torchrun_two_ranks_match_one_process(digits_checkpoint: Path, tmp_path: Path) -> None:
    common = ["attack", "pixle", "--model", str(digits_checkpoint), "--data", "digits", "--num-samples", "20", *PIXLE, "--batch-size", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "advkit", *common, "--out", str(tmp_path / "one.h5")],
                            capture_output=True, text=True, env=env)
    assert single.returncode == 0, single.stderr
    sharded = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                              "-m", "advkit", *common, "--out", str(tmp_path / "two.h5")],
                             capture_output=True, text=True, env=env, timeout=240)
    assert sharded.returncode == 0, sharded.stderr[-2000:]
    one, two = (Report(tmp_path / name).read("attack-pixle") for name in ("one.h5", "two.h5"))
    assert set(one.samples) == set(two.samples)
    for key in one.samples:
        if key != "time":
            assert np.array_equal(one.samples[key], two.samples[key]), key
    assert set(one.tables) == set(two.tables) == {"moves"} and len(one.tables["moves"]["sample"])
    for key, values in one.tables["moves"].items():  # merged from both ranks, in the same order
        assert np.array_equal(two.tables["moves"][key], values), key


_FAIL_ON_RANK_1 = """
import os, sys
import advkit.attacks.runner as runner
from advkit.cli import main
from advkit.errors import AdvkitError

original = runner.attack_batches

def failing(*args, **kwargs):  # rank 1 meets a mistake in its second batch; rank 0 goes on
    for number, columns in enumerate(original(*args, **kwargs)):
        if number == 1 and os.environ["RANK"] == "1":
            raise AdvkitError("injected failure in the second batch")
        yield columns

runner.attack_batches = failing
main(sys.argv[1:])
"""


def _torchrun(args: list[str], tmp_path: Path, script: str | None = None) -> subprocess.CompletedProcess[str]:
    entry = ["-m", "advkit"]
    if script is not None:
        (tmp_path / "entry.py").write_text(script)
        entry = [str(tmp_path / "entry.py")]
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *entry, *args],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=240)


def test_a_mistake_on_one_torchrun_rank_stops_both_with_one_message(digits_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    failed = _torchrun(["attack", "pixle", "--model", str(digits_checkpoint), "--data", "digits", "--num-samples", "12",
                        *PIXLE, "--batch-size", "2", "--out", str(out)], tmp_path, _FAIL_ON_RANK_1)
    assert failed.returncode != 0
    assert failed.stderr.count("error: rank 1: injected failure in the second batch") == 1, failed.stderr[-3000:]
    # rank 0 stopped on the message instead of failing in its next collective (torchrun's own report aside)
    assert "gloo" not in failed.stderr and "Connection" not in failed.stderr, failed.stderr[-3000:]
    assert "terminate called" not in failed.stderr  # both ranks left the process group before exiting
    run = Report(out).read("attack-pixle")
    assert run.status == "running" and len(run.samples["index"]) == 4  # the first round of both ranks, journaled
    missing = _torchrun(["attack", "pixle", "--model", str(tmp_path / "nope.safetensors"), "--data", "digits"], tmp_path)
    assert missing.returncode != 0 and missing.stderr.count("error: no such checkpoint") == 1, missing.stderr[-3000:]


def test_an_attack_replays_from_its_recorded_config(cli: Cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    first = cli("attack", "pixle", "--model", digits_checkpoint, "--data", "digits", "--n", "10", *PIXLE, "--out", "a.h5")
    assert first.code == 0, first.stderr
    toml = cli("report", "show", "a.h5", "attack-pixle", "--config")
    (tmp_path / "replay.toml").write_text(toml.stdout)
    replay = cli("attack", "--config", "replay.toml", "--out", "b.h5")
    assert replay.code == 0, replay.stderr
    a, b = (Report(tmp_path / f).read("attack-pixle") for f in ("a.h5", "b.h5"))
    assert a.config == b.config
    as_json = cli("report", "show", "a.h5", "attack-pixle", "--config", "--json")
    (tmp_path / "replay.json").write_text(as_json.stdout)
    assert as_json.json()["attack"] == "pixle" and cli("attack", "--config", "replay.json", "--out", "c.h5").code == 0
    assert Report(tmp_path / "c.h5").read("attack-pixle").config == a.config
    assert np.array_equal(a.samples["queries"], b.samples["queries"]) and np.array_equal(a.samples["success"], b.samples["success"])


def test_a_config_flag_is_undone_by_its_no_form(cli: Cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    """A replayed config with save_images = true always saved images: --save-images had no --no- form (nor had
    --include-misclassified, train's --hflip, detect eval's --quick-grid and --adaptive)."""
    (tmp_path / "c.toml").write_text(f'attack = "fgsm"\nmodel = "{digits_checkpoint}"\ndata = "digits"\nn = 5\n'
                                     'save_images = true\ninclude_misclassified = true\n')
    assert cli("attack", "--config", "c.toml", "--out", "a.h5").code == 0
    undone = cli("attack", "--config", "c.toml", "--no-save-images", "--no-include-misclassified", "--out", "b.h5")
    assert undone.code == 0, undone.stderr
    a, b = (Report(tmp_path / f).read("attack-fgsm") for f in ("a.h5", "b.h5"))
    assert a.config["save_images"] and a.config["include_misclassified"] and a.has_images
    assert not b.config["save_images"] and not b.config["include_misclassified"] and not b.has_images
    for command, flag in (("train", "--no-hflip"), ("detect eval", "--no-quick-grid"), ("detect eval", "--no-adaptive")):
        assert flag in cli(*command.split(), "--help").stdout, (command, flag)


def test_a_worst_case_run_replays_with_each_attacks_settings(cli: Cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    args = ["--model", digits_checkpoint, "--data", "digits", "--n", "10", "--param", "pgd.eps=0.1", "--param", "fgsm.eps=0.1"]
    first = cli("attack", "pgd", "fgsm", *args, "--param", "pgd.steps=3", "--out", "a.h5")
    assert first.code == 0, first.stderr
    (tmp_path / "wc.toml").write_text(cli("report", "show", "a.h5", "attack-worst-case", "--config").stdout)
    assert cli("attack", "--config", "wc.toml", "--out", "b.h5").code == 0
    for run in ("attack-pgd", "attack-fgsm", "attack-worst-case"):  # the settings came back, not the defaults (eps 8/255)
        a, b = (Report(tmp_path / f).read(run) for f in ("a.h5", "b.h5"))
        timeless = [{k: v for k, v in r.summary.items() if k != "time_per_image"} for r in (a, b)]
        assert a.config == b.config and timeless[0] == timeless[1], run
    # a clash with the worst-case run is found before any attack: here pgd would otherwise run first
    clash = cli("attack", "pgd", "fgsm", "square", *args, "--param", "pgd.steps=3", "--out", "a.h5")
    assert clash.code == 1 and "already has run 'attack-worst-case' with a different config" in clash.stderr, clash.stderr
    assert "attack-square" not in [r.id for r in Report(tmp_path / "a.h5").runs()]



def test_a_batch_dependent_attack_replays_and_resumes_at_its_batch_size(cli: Cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    """PGD's random start is drawn once per batch: a replay at the default --batch-size gave other adversarial images
    for 8 of 10 samples, and a re-run at another --batch-size showed the stored run as its own result."""
    args = ["--model", digits_checkpoint, "--data", "digits", "--n", "10", "--param", "pgd.eps=0.05"]
    first = cli("attack", "pgd", "pixle", *args, "--param", "pixle.restarts=2", "--batch-size", "2", "--save-images", "--out", "a.h5")
    assert first.code == 0, first.stderr
    report = Report(tmp_path / "a.h5")
    assert report.read("attack-pgd").config["batch_size"] == 2 and report.read("attack-worst-case").config["batch_size"] == 2
    assert "batch_size" not in report.read("attack-pixle").config  # advkit's attacks give the same results at any
    (tmp_path / "pgd.toml").write_text(cli("report", "show", "a.h5", "attack-pgd", "--config").stdout)
    assert cli("attack", "--config", "pgd.toml", "--save-images", "--out", "b.h5").code == 0
    a, b = (Report(tmp_path / f).read("attack-pgd", images=True) for f in ("a.h5", "b.h5"))
    assert a.config == b.config and np.array_equal(a.samples["adv_images"], b.samples["adv_images"])
    other = cli("attack", "pgd", "pixle", *args, "--param", "pixle.restarts=2", "--batch-size", "3", "--save-images", "--out", "a.h5")
    assert other.code == 1 and "(batch_size: 2 vs 3 now)" in other.stderr, other.stderr

@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_command_that_does_not_shard_is_refused_under_torchrun(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 rank: str) -> None:
    """`torchrun -m advkit train` trained on every rank, and the second rank failed on the first one's report;
    transfer did all its work twice. Only attack and finetune share work across ranks; rank 0 says so, once."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    refused = cli("train", "--data", "digits", "--epochs", "1", "--out", "m.safetensors")
    assert refused.code == 1 and not list(tmp_path.iterdir())
    expected = ("error: advkit train does not run under torchrun (only attack and finetune share their work across ranks; "
                "every rank would do it all); run it as one process\n")
    assert refused.stderr == (expected if rank == "0" else "")
    assert cli("transfer", "--help").code == 0  # help is fine anywhere
