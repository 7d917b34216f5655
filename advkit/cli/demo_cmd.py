"""``advkit demo``: a guided tour that runs advkit's own commands on offline data and draws the figures.

Every step is an ordinary ``advkit`` command (printed before it runs, and recorded as the run's ``command`` in
the report), so the tour doubles as a list of commands to copy. Everything lands in one directory: the
checkpoints, one report (``demo.h5``), its figures and its JSON summary.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from advkit.cli.common import err, out, table
from advkit.errors import AdvkitError

REPORT = "demo.h5"


@dataclass(frozen=True)
class Sizes:
    """How much work each step does: the default tour or ``--quick`` (the test's)."""

    mnist_data: tuple[str, ...]  # --data and --data-param of the gray digits (the MNIST subset; --quick: sklearn's 8x8 digits)
    mnist_title: str  # how the step titles name them
    mnist_name: str  # how file and run names do (mnist-cnn.safetensors, run train-mnist)
    mnist_epochs: int
    rgbir_data: tuple[str, ...]  # --data-param of the synthetic RGB-IR pairs
    rgbir_epochs: int
    rgbir_batch: int
    attack_n: int
    pixle: tuple[str, ...]
    white_pixle: tuple[str, ...]
    pgd_steps: int
    transfer_n: int
    transfer: tuple[str, ...]
    finetune_eval_n: int
    finetune_eps: float  # fast AT's L-inf budget: 0.3 suits 28x28 MNIST; on 8x8 digits it wrecks the model in one epoch
    robustness_n: int
    detect_n: int
    detect_epochs: int


FULL = Sizes(mnist_data=("mnist-subset",), mnist_title="the MNIST subset", mnist_name="mnist", mnist_epochs=2, rgbir_data=("n_per_class=60",), rgbir_epochs=10, rgbir_batch=32, attack_n=40,
             pixle=("restarts=20", "max_iterations=10"), white_pixle=("restarts=10", "max_iterations=20"), pgd_steps=40,
             transfer_n=30, transfer=("restarts=10", "max_iterations=10"), finetune_eval_n=40, finetune_eps=0.3, robustness_n=200,
             detect_n=1000, detect_epochs=10)
QUICK = Sizes(mnist_data=("digits",), mnist_title="sklearn's 8x8 digits", mnist_name="digits", mnist_epochs=3, rgbir_data=("n_per_class=30", "size=24"), rgbir_epochs=12,
              rgbir_batch=16, attack_n=6,
              pixle=("restarts=3", "max_iterations=4"), white_pixle=("restarts=2", "max_iterations=5"), pgd_steps=5,
              transfer_n=4, transfer=("restarts=2", "max_iterations=3"), finetune_eval_n=6, finetune_eps=0.1, robustness_n=40,
              detect_n=300, detect_epochs=2)
CORRUPTIONS = ("gaussian_noise", "contrast", "pixelate")


def _data_params(params: tuple[str, ...]) -> list[str]:
    return [arg for p in params for arg in ("--data-param", p)]


def _attack_params(name: str, params: tuple[str, ...]) -> list[str]:
    return [arg for p in params for arg in ("--param", f"{name}.{p}")]


def demo_steps(folder: Path, sizes: Sizes, seed: int) -> list[tuple[str, list[str]]]:
    """The tour as (title, advkit arguments) pairs, all writing into ``folder``."""
    report = str(folder / REPORT)
    mnist = ["--data", sizes.mnist_data[0], *_data_params(sizes.mnist_data[1:])]
    rgbir = ["--data", "synthetic-rgbir", *_data_params(sizes.rgbir_data)]
    rgbir_train = ["--epochs", str(sizes.rgbir_epochs), "--batch-size", str(sizes.rgbir_batch), "--lr", "0.003"]
    gray = f"{sizes.mnist_name}-cnn"
    ckpt = {key: str(folder / f"{name}.safetensors")
            for key, name in (("gray", gray), ("rgb", "rgb-cnn"), ("ir", "ir-cnn"), ("fast", f"{gray}-fast-at"), ("detector", f"{gray}-detector"))}
    common = ["--seed", str(seed), "--overwrite"]
    steps = [
        (f"train a small CNN on {sizes.mnist_title}",
         ["train", *mnist, "--epochs", str(sizes.mnist_epochs), "--out", ckpt["gray"], "--report", report,
          "--run", f"train-{sizes.mnist_name}", *common]),
        ("train one CNN per domain on synthetic aligned RGB-IR pairs",
         ["train", *rgbir, "--domain", "rgb", *rgbir_train, "--out", ckpt["rgb"],
          "--report", report, "--run", "train-rgb", *common]),
        ("",
         ["train", *rgbir, "--domain", "ir", *rgbir_train, "--out", ckpt["ir"],
          "--report", report, "--run", "train-ir", *common]),
        (f"attack the model of {sizes.mnist_title}: Pixle, WhitePixle and PGD on the same images (and their worst case)",
         ["attack", "pixle", "white-pixle", "pgd", "--model", ckpt["gray"], *mnist, "--n", str(sizes.attack_n),
          "--save-images", *_attack_params("pixle", sizes.pixle), *_attack_params("white-pixle", sizes.white_pixle),
          "--param", "pgd.eps=0.3", "--param", "pgd.alpha=0.01", "--param", f"pgd.steps={sizes.pgd_steps}",
          "--out", report, *common]),
        ("cross-domain transfer: attack RGB with WhitePixle, replay the pixel moves on IR (and back)",
         ["transfer", "--source-model", ckpt["rgb"], "--target-model", ckpt["ir"], *rgbir, "--n", str(sizes.transfer_n),
          *(arg for p in sizes.transfer for arg in ("--param", p)), "--out", report, *common]),
        ("a short adversarial fine-tune (fast FGSM training, one epoch), robustness before and after",
         ["finetune", "--model", ckpt["gray"], *mnist, "--method", "fast", "--eps", str(sizes.finetune_eps), "--epochs", "1",
          "--last", "--no-corruptions",
          "--eval-n", str(sizes.finetune_eval_n), "--out", ckpt["fast"], "--report", report, *common]),
        ("a layer-wise autoencoder detector, fitted on clean images, tested on the saved adversarial images",
         ["detect", "fit", "--model", ckpt["gray"], *mnist, "--n", str(sizes.detect_n), "--epochs", str(sizes.detect_epochs),
          "--out", ckpt["detector"], *common]),
        ("",
         ["detect", "eval", "--detector", ckpt["detector"], "--adversarial", report,
          "--run", "attack-pixle", "--supervised", "none", "--out", report, *common]),
        ("accuracy under natural corruptions, severities 1-5",
         ["robustness", "--model", ckpt["gray"], *mnist, *(arg for c in CORRUPTIONS for arg in ("--corruption", c)),
          "--n", str(sizes.robustness_n), "--out", report, "--plot", str(folder / "figures" / "corruptions-robustness.png"),
          "--run", "robustness", *common]),
    ]
    return steps


@contextmanager
def _argv(args: list[str]) -> Iterator[None]:
    """Make ``sys.argv`` the step's own command, so the report records a command that can be copied and replayed."""
    saved = sys.argv
    sys.argv = ["advkit", *args]
    try:
        yield
    finally:
        sys.argv = saved


def _run(args: list[str]) -> None:
    from advkit.cli import app

    with _argv(args):
        try:
            app(args=args, prog_name="advkit", standalone_mode=False)
        except typer.Exit as exc:
            if exc.exit_code:
                raise AdvkitError(f"demo step failed (exit {exc.exit_code}): advkit {shlex.join(args)}") from None


def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the checkpoints, the report and its figures.")] = Path("advkit-demo"),
    quick: Annotated[bool, typer.Option("--quick", help="A much smaller tour on sklearn's 8x8 digits (about 20 s on 2 idle cores; what the test runs).")] = False,
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**63 - 1, help="Seed of every step.")] = 0,
) -> None:
    """A guided tour, offline on the CPU: train small models on the MNIST subset (--quick: sklearn's digits) and on
    synthetic RGB-IR pairs, attack them with Pixle, WhitePixle and PGD, transfer pixel moves across domains,
    fine-tune, fit and test a detector, measure corruption robustness, then draw and export the report. Re-running
    it redoes every step.
    """
    from advkit.report import Report
    from advkit.report.export import export_json
    from advkit.report.plots import plot_report

    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = QUICK if quick else FULL
    steps = demo_steps(out_dir, sizes, seed)
    began = time.perf_counter()
    titles = [t for t, _ in steps if t]
    number = 0
    for title, args in steps:
        if title:
            number += 1
            out.rule(f"[bold]step {number}/{len(titles) + 1}: {title}")
        err.print(f"$ advkit {shlex.join(args)}", highlight=False, soft_wrap=True)
        started = time.perf_counter()
        _run(args)
        err.print(f"[dim]({args[0]} took {time.perf_counter() - started:.1f} s)[/]", highlight=False)
    out.rule(f"[bold]step {len(titles) + 1}/{len(titles) + 1}: figures and a JSON summary of the report")
    report = Report(out_dir / REPORT)
    figures = plot_report(report, out_dir / "figures")
    summary = export_json(report, out_dir / "demo.json", overwrite=True).paths[0]
    rows: list[list[Any]] = [["report", str(report.path)], ["summary (JSON)", str(summary)]]
    rows += [[f"figure: {name}", ", ".join(str(p) for p in paths)] for name, paths in figures.written.items()]
    rows += [[f"figure: {name}", f"skipped: {reason}"] for name, reason in figures.skipped.items()]
    rows += [["checkpoints", ", ".join(sorted(str(p) for p in out_dir.glob("*.safetensors")))]]
    out.print(table(f"demo finished in {time.perf_counter() - began:.0f} s; everything is in {out_dir}", ["", "where"], rows))
    out.print(f"next: advkit report show {report.path} --all   |   advkit report compare {report.path}:attack-pixle,attack-pgd",
              highlight=False)
