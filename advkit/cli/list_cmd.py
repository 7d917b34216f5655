"""``advkit list models|datasets|attacks|perturbations [PATTERN]``: what the registries hold."""

from __future__ import annotations

from typing import Annotated

import typer

from advkit.cli.common import JsonOpt, emit_json, out, table
from advkit.errors import AdvkitError
from advkit.registry import Entry, Registry, suggest

app = typer.Typer(help="List registered models, datasets, attacks and perturbations.", no_args_is_help=True)
PatternArg = Annotated[str, typer.Argument(help="Wildcard filter, e.g. 'res*'.")]


def _show(title: str, entries: list[Entry[object]], json_output: bool) -> None:
    if json_output:
        emit_json([{"name": e.name, "summary": e.summary, "tags": list(e.tags)} for e in entries])
    else:
        out.print(table(title, ["name", "description"], [(e.name, e.summary) for e in entries], literal=True))


def _entries(registry: Registry[object], pattern: str, json_output: bool) -> list[Entry[object]]:
    """The entries ``pattern`` matches; none is a one-line error (a filter with a typo listed nothing, exit 0)."""
    entries = registry.entries(pattern)
    if not entries:
        raise _no_match(registry.kind, pattern, registry.names(), json_output)
    return entries


def _no_match(kind: str, pattern: str, names: list[str], json_output: bool) -> AdvkitError:
    """``no KIND matches PATTERN; did you mean ...`` (or every name), and why when PATTERN was meant for --json."""
    switch = " (--json takes no value: the word after it is the filter)" if json_output and pattern.lower() in _BOOLEANS else ""
    return AdvkitError(f"no {kind} matches {pattern!r}{switch}{suggest(pattern, names)}")


_BOOLEANS = {"true", "false", "yes", "no", "on", "off", "1", "0"}


@app.command("models")
def list_models(pattern: PatternArg = "*", json_output: JsonOpt = False) -> None:
    """Architectures for `advkit train --arch` and bare state_dict checkpoints."""
    from advkit.models.architectures import ARCHITECTURES, architecture_names

    architecture_names()  # registers torchvision's when it imports
    _show("architectures", _entries(ARCHITECTURES, pattern, json_output), json_output)


@app.command("datasets")
def list_datasets(pattern: PatternArg = "*", json_output: JsonOpt = False) -> None:
    """Named datasets, and the formats --data FORMAT:PATH reads."""
    from advkit.datasets import dataset_factories

    named, formats = dataset_factories()
    if not named.names(pattern) and not formats.names(pattern):
        raise _no_match("dataset or format", pattern, named.names() + formats.names(), json_output)
    if json_output:
        emit_json({
            "datasets": [{"name": e.name, "summary": e.summary} for e in named.entries(pattern)],
            "formats": [{"name": e.name, "summary": e.summary} for e in formats.entries(pattern)],
        })
        return
    out.print(table("datasets (--data NAME)", ["name", "description"], [(e.name, e.summary) for e in named.entries(pattern)],
                    literal=True))
    out.print(table("formats (--data FORMAT:PATH, or a bare PATH)", ["format", "description"],
                    [(e.name, e.summary) for e in formats.entries(pattern)], literal=True))


@app.command("attacks")
def list_attacks(pattern: PatternArg = "*", json_output: JsonOpt = False) -> None:
    """Attacks for `advkit attack NAME`."""
    from advkit.attacks import ATTACKS, attack_names

    attack_names()
    _show("attacks", _entries(ATTACKS, pattern, json_output), json_output)


@app.command("perturbations")
def list_perturbations(pattern: PatternArg = "*", json_output: JsonOpt = False) -> None:
    """Natural corruptions for `advkit robustness --corruption`."""
    from advkit.perturbations import PERTURBATIONS

    _show("perturbations (severities 1-5)", _entries(PERTURBATIONS, pattern, json_output), json_output)
