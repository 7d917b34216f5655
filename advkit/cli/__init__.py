"""The ``advkit`` command line: thin Typer commands over library functions.

Known mistakes (AdvkitError, OSError) print one line and exit 1; bad usage exits 2; ``--debug`` (or
ADVKIT_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
import warnings

import typer

from advkit.cli import (
    attack_cmd, data_cmd, finetune_cmd, list_cmd, models_cmd, report_cmd, robustness_cmd, train_cmd, transfer_cmd,
)
from advkit.cli import detect_cmd
from advkit.cli.common import err
from advkit.errors import AdvkitError

app = typer.Typer(
    name="advkit",
    help="Adversarial robustness of PyTorch image classifiers: attack, transfer, defend, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("attack")(attack_cmd.attack)
app.command("train")(train_cmd.train)
app.command("transfer")(transfer_cmd.transfer)
app.command("finetune")(finetune_cmd.finetune)
app.command("robustness")(robustness_cmd.robustness)
app.add_typer(list_cmd.app, name="list")
app.add_typer(models_cmd.app, name="models")
app.add_typer(data_cmd.app, name="data")
app.add_typer(report_cmd.app, name="report")
app.add_typer(detect_cmd.app, name="detect")


def _show_warning(message: Warning | str, category: type[Warning], *_args: object, **_kwargs: object) -> None:
    err.print(f"[yellow]warning:[/] {message}", highlight=False)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    debug = "--debug" in (argv if argv is not None else sys.argv)
    if debug:
        (argv if argv is not None else sys.argv).remove("--debug")
    debug = debug or os.environ.get("ADVKIT_DEBUG") == "1"
    warnings.showwarning = _show_warning
    try:
        app(args=argv, prog_name="advkit")
    except (AdvkitError, OSError) as exc:
        if debug:
            raise
        text = str(exc) if isinstance(exc, AdvkitError) else f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
        err.print(f"[bold red]error:[/] {text}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted: re-run the same command to resume", highlight=False)
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == 130:  # Typer turns Ctrl-C inside a command into a silent exit 130
            err.print("interrupted: re-run the same command to resume", highlight=False)
        raise
