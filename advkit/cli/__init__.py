"""The ``advkit`` command line: thin Typer commands over library functions.

Known mistakes (AdvkitError, OSError) print one line and exit 1; bad usage exits 2; ``--debug`` (or
ADVKIT_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import warnings
from difflib import SequenceMatcher
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer
from rich.markup import escape

try:  # recent Typer releases vendor click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older Typer uses click itself
    from click.exceptions import ClickException

from advkit.cli import (
    attack_cmd, data_cmd, finetune_cmd, list_cmd, models_cmd, report_cmd, robustness_cmd, train_cmd, transfer_cmd,
)
from advkit.cli import demo_cmd
from advkit.cli import detect_cmd
from advkit.cli.common import err, out, unwrap_paragraphs, warn
from advkit.cli.interrupts import catching_interrupts, interrupt_pending
from advkit.distributed import prints_errors, world_rank
from advkit.errors import AdvkitError, one_line

app = typer.Typer(
    name="advkit",
    help="Adversarial robustness of PyTorch image classifiers: attack, transfer, defend, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    """Eager callback of ``--version``: the installed package's version, then stop."""
    if value:
        out.print(f"advkit {advkit_version()}", highlight=False)
        raise typer.Exit()


def advkit_version() -> str:
    """The version in the installed package's metadata (pyproject.toml's), or "unknown" when it is not installed."""
    try:
        return version("advkit")
    except PackageNotFoundError:
        return "unknown"


@app.callback()
def _options(
    show_version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                               help="Print advkit's version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error instead of its one line "
                                        "(accepted anywhere on the command line; or set ADVKIT_DEBUG=1).")] = False,
) -> None:
    """Options for every command (main() takes --debug out of the arguments before the commands see them)."""


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
app.command("demo")(demo_cmd.demo)

DEBUG_EPILOG = "A mistake prints one error line; add --debug to see its traceback."


def _tidy_help(group: typer.Typer) -> None:
    """Every command's and group's help with its paragraphs unwrapped (the terminal wraps them, not the docstring's
    line breaks), and each command's help ending on how to see a traceback."""
    for command in group.registered_commands:
        command.help = unwrap_paragraphs(command.help or inspect.getdoc(command.callback) or "")
        command.epilog = command.epilog or DEBUG_EPILOG
    for sub in group.registered_groups:
        info = sub.typer_instance.info if sub.typer_instance else sub
        info.help = unwrap_paragraphs(str(sub.help or info.help or ""))
        if sub.typer_instance:
            _tidy_help(sub.typer_instance)


_tidy_help(app)


def _show_warning(message: Warning | str, category: type[Warning], *_args: object, **_kwargs: object) -> None:
    warn(str(message))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    debug = "--debug" in (argv if argv is not None else sys.argv)
    if debug:
        (argv if argv is not None else sys.argv).remove("--debug")
    debug = debug or os.environ.get("ADVKIT_DEBUG") == "1"
    warnings.showwarning = _show_warning
    args = argv if argv is not None else sys.argv[1:]
    if _unsharded_under_torchrun(args):
        if world_rank() == 0:
            _print_error(f"advkit {_command_words(args)[0]} does not run under torchrun (only {' and '.join(sorted(_SHARDED))} "
                         "share their work across ranks; every rank would do it all); run it as one process")
        sys.exit(1)
    try:
        # not standalone: usage mistakes reach us as exceptions, so they print one line instead of Typer's box
        with catching_interrupts():
            code = app(args=argv, prog_name="advkit", standalone_mode=False)
            if interrupt_pending():  # a finaliser swallowed the Ctrl-C after the last progress event
                code = 130
    except (AdvkitError, OSError) as exc:
        if debug:
            raise
        if prints_errors(exc):
            _print_error(one_line(exc) if world_rank() == 0 else f"rank {world_rank()}: {one_line(exc)}")
        sys.exit(1)
    except ClickException as exc:
        if debug:
            raise
        sys.exit(_usage_error(exc))
    except typer.Abort:
        err.print("aborted", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        code = 130
    if code == 130:  # Typer turns Ctrl-C inside a command into exit code 130
        err.print(f"interrupted: {_after_interrupt(args)}", highlight=False)
    if isinstance(code, int) and code:
        sys.exit(code)


_RESUMABLE = {"attack", "transfer", "train", "finetune"}  # the commands that journal their work as they go
_SHARDED = {"attack", "finetune"}  # the commands that split their work across torchrun ranks


def _command_words(args: list[str]) -> list[str]:
    """The command and subcommand of ``advkit ARGS`` (``["detect", "eval"]``), fewer when not given."""
    return [a for a in args if not a.startswith("-")][:2]


def _unsharded_under_torchrun(args: list[str]) -> bool:
    """Whether torchrun started several ranks for a command that would run whole on each (``--help`` is fine)."""
    words = _command_words(args)
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return several and bool(words) and words[0] not in _SHARDED and "--help" not in args


def _after_interrupt(args: list[str]) -> str:
    """What re-running an interrupted command does."""
    words = _command_words(args)
    if words[:1] and words[0] in _RESUMABLE:
        return "re-run the same command to resume"
    if words == ["detect", "eval"]:  # each attack's run is written whole; a re-run skips those already complete
        return "the runs written before it are kept; re-run the same command to do the others"
    return "nothing half-done was kept; re-run the same command to start over"


def _usage_error(exc: ClickException) -> int:
    """Print a usage mistake as one line (with where to find help) and return its exit code (2)."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # a bare `advkit` or `advkit report`: Typer has shown the help
        if exc.format_message():
            typer.echo(exc.format_message(), err=True)
        return exc.exit_code
    close = getattr(exc, "possibilities", None)
    if close:  # click matches whole spellings, so the shared "--" makes --bogus look close to --out
        name = str(getattr(exc, "option_name", "")).lstrip("-")
        exc.possibilities = [p for p in close if SequenceMatcher(None, name, p.lstrip("-")).ratio() >= 0.6]  # type: ignore[attr-defined]
    context = getattr(exc, "ctx", None)
    hint = f" (see {context.command_path} --help)" if context is not None else ""
    _print_error(f"{plain_choice_wording(exc.format_message())}{hint}")
    return exc.exit_code


# how Typer (through pydantic) words a value outside an Enum option's choices
_PYDANTIC_CHOICE = re.compile(r"Value error, (.*?) is not one of ((?:'[^']*'(?:, )?)+)\.")


def plain_choice_wording(message: str) -> str:
    """A choice error in the words of advkit's own (check_choice), not pydantic's.

        >>> plain_choice_wording("Invalid value for '--kind': Value error, 'BAD' is not one of 'wae', 'ae', 'vae'.")
        "Invalid value for '--kind': 'BAD' is not one of wae, ae, vae"
    """
    return _PYDANTIC_CHOICE.sub(lambda m: f"{m[1]} is not one of " + m[2].replace("'", ""), message)


def _print_error(text: str) -> None:
    """``error: TEXT`` on stderr, TEXT literally: no Rich markup (``[train|val]`` would vanish) and no emoji codes
    (``some.module:factory: ...`` would become an emoji)."""
    err.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True, emoji=False)
