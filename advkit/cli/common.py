"""What every command shares: consoles, option types, config-file replay, progress, output.

Results go to stdout (a Rich table, or JSON with ``--json``); progress and logs go to stderr.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import shlex
import sys
import tomllib
import typing
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import Enum
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from advkit.cli.interrupts import raise_if_interrupted
from advkit.errors import AdvkitError, ReportError
from advkit.registry import parse_value, simple_types, union_members
from advkit.runtime import ProgressEvent, ProgressFn

if TYPE_CHECKING:
    from advkit.datasets import ImageDataset
    from advkit.models import LoadedModel, ModelWrapper

out = Console(soft_wrap=True)


def _stderr_console() -> Console:
    """Rich draws on 80 columns when stderr is not a terminal (a log file, CI), which cut the progress line's counts
    and times to "2…"; there it gets 160 columns, unless COLUMNS says otherwise."""
    console = Console(stderr=True)
    return console if console.is_terminal or "COLUMNS" in os.environ else Console(stderr=True, width=160)


err = _stderr_console()

# Options that describe how a command runs, not what it computes: kept out of recorded configs.
NON_CONFIG = {"config", "json_output", "device", "debug", "overwrite", "unsafe_pickle", "quiet"}


def load_config(ctx: typer.Context, _param: typer.CallbackParam, value: Path | None) -> Path | None:
    """Eager callback of ``--config``: file values become defaults, so flags given on the line still win."""
    if value is None:
        return None
    data = read_config_file(value)
    params = {p.name: p for p in ctx.command.params if p.name}
    # a key may also be spelt as its flag (out for out_path, num-samples for n)
    flags = {opt.lstrip("-").replace("-", "_"): p.name for p in ctx.command.params if p.name
             for opt in getattr(p, "opts", []) if opt.startswith("--")}
    normalised: dict[str, Any] = {}
    for key, given in data.items():
        name = str(key).replace("-", "_")
        name = name if name in params else flags.get(name, name)
        if name in normalised:
            raise typer.BadParameter(f"{name} is given twice in {value} (as {name} and as its flag)")
        normalised[name] = given
    normalised = replayable(normalised, set(params))
    unknown = sorted(set(normalised) - set(params))
    if unknown:
        valid = ", ".join(sorted(set(params) - NON_CONFIG))
        raise typer.BadParameter(f"unknown key(s) {', '.join(unknown)} in {value}; valid keys: {valid}")
    per_call = sorted(set(normalised) & NON_CONFIG)
    if per_call:  # a nested config or json_output in a file was silently ignored or changed the output
        raise typer.BadParameter(f"{', '.join(per_call)} in {value}: pass per-call options as flags, not in a config")
    hints = _option_hints(ctx)
    for key, given in normalised.items():
        if isinstance(given, dict):
            raise typer.BadParameter(f"{key} in {value} must be a value, not a table")
        listed = key in hints and _list_hint(hints[key]) is not None
        if listed and not isinstance(given, list):  # one value where the flag may repeat
            normalised[key] = given = [given]
        elif key in hints and not listed and isinstance(given, list):
            raise typer.BadParameter(f"{key} in {value} takes one value, not a list, got {json.dumps(given, default=str)}")
        problem = _config_type_problem(hints.get(key), given)
        if problem:
            raise typer.BadParameter(f"{key} in {value} {problem}, got {json.dumps(given, default=str)}")
    ctx.default_map = {**(ctx.default_map or {}), **normalised}
    return value


def _option_hints(ctx: typer.Context) -> dict[str, Any]:
    """The command function's parameter annotations (Annotated stripped), by option name; {} if they do not resolve."""
    try:
        return typing.get_type_hints(ctx.command.callback) if ctx.command.callback else {}
    except Exception:  # an annotation that does not resolve: leave the values to click
        return {}


def _config_type_problem(hint: Any, value: Any) -> str | None:
    """Why a config value does not fit its option's annotation where click would convert it silently (true -> 1
    for a number, "no" -> false for a flag)."""
    listed = _list_hint(hint)
    if listed is not None:
        hint, items = (typing.get_args(listed) or (Any,))[0], value if isinstance(value, list) else [value]
    else:
        items = [value]
    allowed = simple_types(hint)
    for item in items:
        if allowed == (bool,) and not isinstance(item, bool):
            return "must be true or false"
        if allowed and bool not in allowed and isinstance(item, bool):
            return "must be a number, not true or false" if {int, float} & set(allowed) else "must not be true or false"
    return None


def _list_hint(hint: Any) -> Any | None:
    """The ``list[...]`` of an option's annotation (``list[str]`` or ``list[str] | None``), else None."""
    return next((m for m in union_members(hint) if typing.get_origin(m) is list), None)


def replayable(config: dict[str, Any], options: Collection[str] = ()) -> dict[str, Any]:
    """Turn what a report records about its attack back into the options that produced it.

    Attack runs record ``attack`` (one name) and ``attack_params`` (every setting the attack ran with) rather
    than the raw ``NAME`` argument and ``--param`` flags, so that configs compare by effect; worst-case runs
    record the ``attacks`` and ``runs`` they combine and ``params_by_attack``; ``*_fingerprint`` keys record the
    models' weights; a detect eval run records the attack run it measured as ``source`` (with when that run was
    made, ``source_created``) and its detector file's ``detector_sha256``; a robustness run the
    resolved ``corruptions`` and ``severities`` beside its options. ``options`` are the command's own option names.
    """
    config = dict(config)
    if "attack" in config and "attack" not in options:  # detect eval has an --attack option of its own
        config.setdefault("names", [config.pop("attack")])
    if "attack_params" in config:
        settings = {k: v for k, v in config.pop("attack_params").items() if k != "torchattacks"}
        config.setdefault("param", [f"{k}={json.dumps(v)}" for k, v in settings.items()])
    if "attacks" in config:
        config.setdefault("names", config.pop("attacks"))
    if "params_by_attack" in config:  # a worst-case run: NAME.key=value for each attack
        config.setdefault("param", [f"{name}.{k}={json.dumps(v)}" for name, settings in config.pop("params_by_attack").items()
                                    for k, v in settings.items() if k != "torchattacks"])
    if "runs" not in options:  # a worst-case run's combined runs (detect eval's --run is an option named runs)
        config.pop("runs", None)
    detect_eval = "detector_sha256" in config or "detector_fingerprint" in config  # (the key before 2026-12-03)
    if "source" in config and detect_eval:  # a detect eval run: the attack run it measured
        config.pop("detector_sha256", None)  # recorded facts about its inputs, checked on re-runs: not options
        config.pop("source_created", None)
        source = str(config.pop("source"))
        key, value = ("runs", [source]) if config.get("adversarial") else ("attack", [source.removeprefix("attack-")])
        config.setdefault(key, value)
    # a robustness run's resolved lists beside its --corruption/--severity choices (a hand-written plural names
    # them too); finetune's --corruptions is a flag of its own
    for key, option in (("corruptions", "corruption"), ("severities", "severity")):
        if key in config and key not in options:
            config.setdefault(option, config.pop(key))
    if "subset" not in options:  # how a robustness run chose its test images: recorded, not an option
        config.pop("subset", None)
    for key in [k for k in config if k.endswith("_fingerprint")]:  # recorded weights, checked on re-runs: not options
        config.pop(key)
    return config


def read_config_file(path: Path) -> dict[str, Any]:
    """A flat mapping from a .toml, .yaml/.yml or .json file (a report's ``config`` attribute is JSON)."""
    if path.suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise typer.BadParameter(f"config {path} must be .toml, .yaml, .yml or .json")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise typer.BadParameter(f"cannot read config {path}: {exc.strerror}") from None
    except UnicodeDecodeError:  # a report, checkpoint or other binary file given as --config
        raise typer.BadParameter(f"config {path} is not a text file (a report's config is printed by advkit report "
                                 "show FILE RUN --config)") from None
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ValueError(str(exc)) from None
        else:
            data = json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise typer.BadParameter(f"config {path} is not valid {path.suffix[1:]}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise typer.BadParameter(f"config {path} must hold a mapping of option names to values")
    return data


def recorded_config(params: Mapping[str, Any], exclude: set[str] | frozenset[str] = frozenset(),
                    models: Mapping[str, ModelWrapper] | None = None) -> dict[str, Any]:
    """The command's resolved parameters as JSON-able values, minus run-only options (and ``exclude``); the
    checkpoint and dataset files it names are spelled as absolute paths, so the record means the same from anywhere,
    and each of ``models`` adds ``<role>_fingerprint`` (its weights), so a checkpoint retrained under the same path
    is another config, not a run to resume."""
    from advkit.report.paths import absolute_specs

    config = absolute_specs({k: plain(v) for k, v in sorted(params.items()) if k not in NON_CONFIG | exclude})
    return {**config, **{f"{role}_fingerprint": model.fingerprint() for role, model in (models or {}).items()}}


def finished_run(report: Any, run_id: str, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The summary of a complete run ``run_id`` with exactly this config, else None (so re-runs are no-ops)."""
    if not report.exists():
        return None
    # unreadable=True: a run of a newer schema beside it must not stop this one (start_run refuses that run itself)
    info = next((r for r in report.runs(unreadable=True) if r.id == run_id and r.status == "complete"), None)
    if info is None:
        return None
    from advkit.report.store import config_difference

    data = report.read(run_id)
    same = config_difference(data.config, json.loads(json.dumps(plain(dict(config)))), report.path) is None
    return dict(data.summary) if same else None


def log_complete(run_id: str, report_path: str | Path) -> None:
    """Say that a command's run is already in its report, complete with the same config (so it is not redone)."""
    log(f"run {run_id} in {report_path} is already complete with this config (--overwrite redoes it)")


def start_or_finished(report: Any, run_id: str, kind: str, cfg: dict[str, Any], seed: int, overwrite: bool,
                      run_option: str | None = None) -> tuple[Any, dict[str, Any] | None]:
    """A writer for the run, or (None, its summary) when the same run is already complete, also when the same
    command finished it while this one waited for the report's lock. attack, transfer, robustness and detect eval write
    their runs through this, so a second identical process either finds the run done or stops with one line (``... is being written by another
    advkit process (pid N)``); a refusal's advice for a distinct run names ``run_option`` when given (the store's is
    ``--run NAME``)."""
    finished = None if overwrite else finished_run(report, run_id, cfg)
    if finished is not None:
        return None, finished
    try:
        return report.start_run(run_id, kind=kind, config=cfg, seed=seed, command=command_line(), overwrite=overwrite), None
    except ReportError as exc:
        finished = None if overwrite else finished_run(report, run_id, cfg)
        if finished is None:
            if run_option is None:
                raise
            raise run_advice(exc, run_option) from None
        return None, finished


def run_advice(exc: ReportError, instead: str, advice: str | None = None) -> ReportError:
    """``exc`` (a refusal of the report store) with its ``advice`` (default: the store's ``--run NAME``) replaced by
    ``instead``: detect eval names its ``--run-prefix PREFIX``, train and finetune what resumes their state."""
    from advkit.report.store import RUN_ADVICE

    advice = advice or RUN_ADVICE
    return type(exc)(str(exc).replace(advice, instead)) if advice in str(exc) else exc


def plain(value: Any) -> Any:
    """Paths, enums, tuples -> str, value, list (recursively) for JSON/TOML."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def to_toml(data: Mapping[str, Any]) -> str:
    """A mapping as TOML key = value lines (for ``--config`` replay files); None values are left out."""
    return "".join(f"{key} = {_toml_value(value)}\n" for key, value in data.items() if value is not None)


def _toml_value(value: Any) -> str:
    value = plain(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items() if v is not None) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)  # numbers and strings: JSON's spelling is valid TOML


def training_state_path(out_path: Path, overwrite: bool, report: Path | None = None) -> tuple[Path, bool]:
    """Where a training command keeps its per-epoch state for ``out_path``, and whether the checkpoint may replace a
    file at ``out_path`` (with ``overwrite``, or the checkpoint of the interrupted run being resumed; else one another
    process writes there meanwhile stays). Refuses to clobber a finished checkpoint or to write the ``report`` over
    it, and with ``overwrite`` drops the state of an earlier interrupted run, so the training starts over."""
    if out_path.suffix not in (".safetensors", ".pt", ".pth"):
        raise AdvkitError(f"--out {out_path} must end in .safetensors, .pt or .pth")
    if report is not None and report.resolve() == out_path.resolve():
        raise typer.BadParameter(f"the report and the checkpoint would both be {out_path}", param_hint="--report")
    if out_path.is_dir():  # found before the training, not when the checkpoint is written after it
        raise AdvkitError(f"--out {out_path} is a folder; name the checkpoint file to write")
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AdvkitError(f"cannot create the folder of --out {out_path}: {exc.strerror or exc}") from None
    state_path = out_path.with_name(out_path.name + ".state.pt")
    exists = out_path.exists()
    if exists and not overwrite and not state_path.exists():
        raise AdvkitError(f"{out_path} already exists; pass --overwrite to replace it")
    if overwrite:
        state_path.unlink(missing_ok=True)
    return state_path, overwrite or exists


@contextmanager
def kept_if_appeared(writer: Any, state_path: Path, command: str) -> Iterator[None]:
    """Around a training command's writes of its state file and checkpoint that must not replace a file: one that
    another process created there after :func:`training_state_path` looked stays as it is, and the clash is one line.
    The report run is abandoned and, if the checkpoint clashed, this training's state is deleted too: resuming it
    would replace the other file."""
    try:
        yield
    except FileExistsError as exc:
        writer.abandon()
        if Path(exc.filename) != state_path:  # a state file that appeared is theirs; ours exists after its first save
            state_path.unlink(missing_ok=True)
        raise AdvkitError(f"{exc.filename} appeared while training (another advkit {command} with this --out?) and was "
                          "left as it is; this training was not kept: write another --out, or pass --overwrite to "
                          "replace it") from None


def start_training_run(report: Any, run_id: str, state_path: Path, **kwargs: Any) -> Any:
    """``report.start_run`` for train and finetune. A clash with the run of an interrupted training whose state is
    at ``state_path`` is not solved by another ``--run``, as the store advises: that state, of other settings, would
    still be the one resumed. The advice names what works."""
    from advkit.report.store import RUN_ADVICE

    try:
        return report.start_run(run_id, **kwargs)
    except ReportError as exc:
        if not state_path.exists():
            raise
        advice = (f"; {state_path} holds that interrupted training: re-run it with its own settings to resume it, "
                  "pass --overwrite to start over, or write another --out")
        raise run_advice(exc, advice, f"; pass {RUN_ADVICE} or --overwrite") from None  # how the store ends a clash


def check_choice(values: str | Sequence[str] | None, choices: Sequence[str], option: str) -> None:
    """A usage mistake (exit 2, like any bad option value) unless every value is one of ``choices``."""
    for value in [values] if isinstance(values, str) else values or []:
        if value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}", param_hint=option)


@contextmanager
def usage_mistakes() -> Iterator[None]:
    """Around library settings built straight from option values (a learning rate, an optimizer, a method): a
    refusal (AdvkitError) is a bad option value, so a usage mistake (exit 2) like click's own checks."""
    try:
        yield
    except AdvkitError as exc:
        raise typer.BadParameter(str(exc)) from None


def split_choice(value: str) -> str:
    """Callback of a ``--split`` option: one of the split names (usage, exit 2); whether the data has it is checked later."""
    from advkit.datasets.base import SPLITS

    check_choice(value, (*SPLITS, "all"), "--split")
    return value


def device_spelling(value: str) -> str:
    """Callback of ``--device``: a device name torch can parse (usage, exit 2); resolve_device checks that it is here."""
    import torch

    if value not in ("", "auto"):
        try:
            torch.device(value)
        except RuntimeError:
            raise typer.BadParameter(f"unknown device {value!r}; use cpu, cuda, cuda:N or auto") from None
    return value


def pixel_budget(value: str | float) -> float:
    """Parser of an L-inf budget option: a number or a fraction such as ``8/255`` (a budget in 0-255 levels), the
    spelling check_linf_budget's error recommends. Numbers parse as float does (nan and inf reach the range checks)."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return float(Fraction(str(value)))
    except (ValueError, ZeroDivisionError):
        raise typer.BadParameter(f"must be a number or a fraction such as 8/255, got {value!r}") from None


def command_line() -> str:
    """The command as typed, for the report."""
    return shlex.join(["advkit", *sys.argv[1:]])


def parse_params(pairs: Sequence[str], what: str = "--param") -> dict[str, Any]:
    """``key=value`` strings -> dict; values parsed as JSON when they can be (numbers, booleans, lists), else as
    Python's spelling of them (``True``, ``None``, ``(1, 2)``), else kept as text (``8/255``, ``linf``).

        >>> parse_params(["eps=8/255", "steps=10", "random_start=False", "x_dimensions=(1, 2)", "norm=Linf"])
        {'eps': '8/255', 'steps': 10, 'random_start': False, 'x_dimensions': [1, 2], 'norm': 'Linf'}
    """
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} takes key=value, got {pair!r}")
        params[key.strip()] = parse_value(raw)
    return params


def arch_settings(arch: str | None, pairs: Sequence[str] | None) -> dict[str, Any] | None:
    """``--arch-param`` pairs as the architecture's keyword arguments (None without any); they need ``--arch``."""
    if not pairs:
        return None
    if arch is None:
        raise typer.BadParameter("needs --arch NAME (a checkpoint written by advkit records its own settings)",
                                 param_hint="--arch-param")
    return parse_params(pairs, "--arch-param")


def unwrap_paragraphs(text: str) -> str:
    r"""Help text with each paragraph on one line, so the terminal wraps it: Typer's Rich help keeps a docstring's
    source line breaks, which broke sentences mid-line. Blank lines still separate paragraphs, and lines starting
    with ``- `` stay list items; text after a ``\f`` (click's end of help) is dropped.

        >>> unwrap_paragraphs("One sentence\n    over two lines.\n\n    Then a list:\n    - an item\n    - another")
        'One sentence over two lines.\n\nThen a list:\n- an item\n- another'
    """
    paragraphs = inspect.cleandoc(text).partition("\f")[0].split("\n\n")
    return "\n\n".join(_unwrap_lines(p.splitlines()) for p in paragraphs if p.strip())


def _unwrap_lines(lines: list[str]) -> str:
    joined: list[str] = []
    for line in (line.strip() for line in lines):
        if joined and not line.startswith("- "):
            joined[-1] = f"{joined[-1]} {line}"
        else:
            joined.append(line)
    return "\n".join(joined)


# ---- shared option types -------------------------------------------------------------------------------------
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", callback=load_config, is_eager=True, help="Read option values from a .toml/.yaml/.json file; flags override."),
]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, max=2**63 - 1, help="Seed of every random choice; the same seed gives the same report.")]
DeviceOpt = Annotated[str, typer.Option("--device", callback=device_spelling, help="cpu, cuda, cuda:N or auto (cuda when present).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print results as JSON on stdout instead of tables.")]
UnsafePickleOpt = Annotated[
    bool, typer.Option("--unsafe-pickle", help="Allow checkpoints that unpickle Python objects (runs code from the file!).")
]
ArchOpt = Annotated[str | None, typer.Option("--arch", help="Architecture of a bare state_dict checkpoint (advkit list models).")]
ArchParamOpt = Annotated[
    list[str] | None, typer.Option("--arch-param", help="Setting of --arch key=value (e.g. input_size=8, num_classes=10).")
]
DataParamOpt = Annotated[
    list[str] | None, typer.Option("--data-param", help="Dataset option key=value (e.g. n_per_class=50, size=32).")
]


# ---- output ---------------------------------------------------------------------------------------------------
def fmt(value: Any) -> str:
    """Human formatting of a table cell."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, literal: bool = False) -> Table:
    """A Rich table of ``fmt``-formatted cells; ``literal`` shows them as plain text (no markup, no emoji codes), for
    text advkit does not write itself, such as registry descriptions (``root/[train|val|test/]...``)."""
    tab = Table(title=Text(title) if literal and title else title, title_justify="left", header_style="bold")
    for col in columns:
        tab.add_column(Text(col) if literal else col, overflow="fold")
    for row in rows:
        tab.add_row(*(Text(fmt(v)) if literal else fmt(v) for v in row))
    return tab


def kv_table(title: str | None, data: Mapping[str, Any], *, literal: bool = False) -> Table:
    return table(title, ["", "value"], [(k, v) for k, v in data.items()], literal=literal)


def emit_json(data: Any) -> None:
    """``data`` as JSON on stdout; NaN and infinities (an undefined mean, say) become null, as strict parsers need."""
    sys.stdout.write(json.dumps(_finite(plain(data)), indent=2, default=_json_default, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if hasattr(value, "tolist"):  # NumPy values and arrays, which _json_default would otherwise turn into floats
        return _finite(value.tolist())
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


# ---- progress -------------------------------------------------------------------------------------------------
@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[ProgressFn]:
    """A ProgressFn that draws one Rich bar per task on stderr: redrawn live on a terminal; elsewhere (stderr
    redirected to a file) only the bars' final state is printed."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not enabled,
        transient=False,
    )
    tasks: dict[str, Any] = {}
    began = [bar.get_time()]  # when the next new task's work began: the bar's start, then the latest event

    def update(event: ProgressEvent) -> None:
        raise_if_interrupted()  # every long loop reports here: where a Ctrl-C a finaliser swallowed takes effect
        stats = "  ".join(f"{k} {fmt(v)}" for k, v in event.stats.items())
        if event.task not in tasks:  # a task's first event comes after its first batch: count that batch's time
            tasks[event.task] = bar.add_task(event.task, total=event.total, stats=stats)
            next(t for t in bar.tasks if t.id == tasks[event.task]).start_time = began[0]
        bar.update(tasks[event.task], completed=event.done, total=event.total, stats=stats)
        began[0] = bar.get_time()

    with bar:
        yield update


def log(message: str) -> None:
    """A status line on stderr."""
    err.print(message, highlight=False, soft_wrap=True, markup=False, emoji=False)


def warn(message: str) -> None:
    """A warning line on stderr (the same look as library warnings shown by the CLI)."""
    err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True, emoji=False)


def has_preprocessing(loaded: LoadedModel) -> bool:
    """Whether a loaded checkpoint says what its net takes (input size, channels, normalisation)."""
    pre = loaded.preprocessing
    return pre.channels is not None and pre.input_size is not None


# where preprocessing metadata can come from (advkit/models/checkpoint.py reads each of them)
PREPROCESSING_SOURCES = ("a checkpoint written by advkit train, a TorchScript archive with an advkit.json extra file, "
                         "or a module:factory whose net has an advkit_preprocessing attribute")


def no_preprocessing(spec: str, consequence: str) -> str:
    return (f"{spec} carries no preprocessing metadata (input size, channels, normalisation), so {consequence}; "
            f"use {PREPROCESSING_SOURCES}")


def check_compatible(model: ModelWrapper, ds: ImageDataset, model_name: str = "the model", data_name: str | None = None,
                     *, quiet: bool = False) -> None:
    """Fail early, in one line, when the data cannot feed the model (1-channel images may feed a 3-channel net, as
    the model wrapper replicates them, not the reverse); warn (unless ``quiet``: torchrun ranks but rank 0) when a
    model its checkpoint says was trained on RGB gets IR images, or the reverse: it runs, but across domains; and
    when the checkpoint's class names differ from the data's: its labels may mean other classes."""
    pre, data = model.preprocessing, data_name or ds.name
    if not quiet and {pre.domain, ds.domain} == {"rgb", "ir"}:
        warn(f"{model_name} was trained on {pre.domain} images (its checkpoint says) but gets the {ds.domain} images "
             f"of {data}: its results are across domains")
    if pre.input_size is not None and tuple(pre.input_size) != ds.size:
        raise AdvkitError(f"{model_name} takes {pre.input_size[0]}x{pre.input_size[1]} images but {data} has {ds.size[0]}x{ds.size[1]}")
    if pre.channels is not None and ds.channels not in (1, pre.channels):
        raise AdvkitError(f"{model_name} takes {pre.channels}-channel images but {data} has {ds.channels} channels")
    if pre.num_classes is not None and ds.num_classes > pre.num_classes:
        raise AdvkitError(f"{data} has {ds.num_classes} classes but {model_name} outputs {pre.num_classes}")
    theirs = tuple(str(c) for c in ds.class_names)
    if not quiet and pre.class_names and tuple(pre.class_names[: len(theirs)]) != theirs:
        differ = next(i for i, (a, b) in enumerate(zip(pre.class_names, theirs)) if a != b)
        warn(f"{model_name} names its class {differ} {pre.class_names[differ]!r} but {data} calls it {theirs[differ]!r}: "
             "check that the labels mean the same classes")
    if pre.input_size is None or pre.channels is None:  # nothing recorded to compare (bare weights): one forward tells
        import numpy as np
        import torch

        try:
            with torch.no_grad():
                model.logits(ds.batch(np.arange(1))[0].to(model.mean.device))
        except RuntimeError as exc:
            h, w = ds.size
            raise AdvkitError(f"{model_name} cannot take the {h}x{w}x{ds.channels} images of {data} (check --arch and "
                              f"--arch-param): {str(exc).splitlines()[0]}") from None


def require_preprocessing(loaded: LoadedModel, spec: str, consequence: str) -> None:
    """One-line error for a checkpoint without preprocessing metadata; ``consequence`` says what would go wrong."""
    if not has_preprocessing(loaded):
        raise AdvkitError(no_preprocessing(spec, consequence))
