"""Name -> factory registries (architectures, datasets, attacks, ...), in the style of timm's.

    >>> widgets = Registry("widget")
    >>> @widgets.register("round-widget")
    ... def make_round(size: int = 1) -> str:
    ...     return f"round:{size}"
    >>> widgets.create("round-widget", size=None)  # None keeps the default
    'round:1'
    >>> widgets.names("round*")
    ['round-widget']
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import inspect
import json
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from advkit.errors import AdvkitError, SettingsError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered factory with a one-line summary (the docstring's first line)."""

    name: str
    factory: Callable[..., T]
    summary: str
    tags: tuple[str, ...] = field(default_factory=tuple)


class Registry(Generic[T]):
    """A named collection of factories; unknown names fail with the close matches."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str, *, tags: tuple[str, ...] = ()
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name`` (names are unique)."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            self.add(name, factory, tags=tags)
            return factory

        return decorate

    def add(self, name: str, factory: Callable[..., T], *, tags: tuple[str, ...] = ()) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        doc = (factory.__doc__ or "").strip().splitlines()
        self._entries[name] = Entry(name, factory, doc[0] if doc else "", tags)

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise AdvkitError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        return f"unknown {self.kind} {name!r}{suggest(name, self.names())}"

    def create(self, name: str, **kwargs: Any) -> T:
        """Build ``name``; keyword arguments that are None keep the factory's defaults."""
        return self.entry(name).factory(**{k: v for k, v in kwargs.items() if v is not None})

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def entries(self, pattern: str = "*") -> list[Entry[T]]:
        return [self._entries[n] for n in self.names(pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


_SIMPLE = (bool, int, float, str)
SEED_RANGE = (0, 2**63 - 1)
"""Inclusive bounds of every seed, as for the CLI's --seed: NumPy and torch take no negative or wider seed."""


def check_settings(factory: Callable[..., Any], settings: Mapping[str, Any], what: str, internal: Collection[str] = ()) -> None:
    """SettingsError (one line) for the first setting ``factory`` has no parameter for, or whose value is not of
    the parameter's simple type (an annotation made of bool, int, float, str and None; an int passes for a float),
    or for a ``seed`` outside ``SEED_RANGE``. ``internal`` parameters are filled by advkit, not by users. Other
    annotations are left to the factory.

        >>> def make(size: int = 1, name: str | None = None) -> None: ...
        >>> check_settings(make, {"size": 2, "name": "a"}, "widget")
        >>> check_settings(make, {"size": "big"}, "widget")
        Traceback (most recent call last):
        advkit.errors.SettingsError: widget: size must be an int, got 'big'
        >>> check_settings(lambda seed=0: None, {"seed": -1}, "widget")
        Traceback (most recent call last):
        advkit.errors.SettingsError: widget: seed must be in 0..9223372036854775807, got -1
    """
    params = inspect.signature(factory).parameters
    names = [n for n in params if n not in internal]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # an annotation that does not resolve: the factory checks its own values
        hints = {}
    for key, value in settings.items():
        if key not in params or key in internal:
            if takes_any:
                continue
            raise SettingsError(f"{what} has no setting {key}{suggest(key, names)}")
        allowed = simple_types(hints.get(key))
        if value is not None and allowed and not _fits(value, allowed):
            kinds = " or ".join(f"a{'n' if t is int else ''} {t.__name__}" for t in allowed)
            raise SettingsError(f"{what}: {key} must be {kinds}, got {value!r}")
        if key == "seed" and _is_int(value) and not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
            raise SettingsError(f"{what}: seed must be in {SEED_RANGE[0]}..{SEED_RANGE[1]}, got {value}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fits(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # a bool is an int to isinstance, not to a user
        return bool in allowed
    return isinstance(value, allowed) or (float in allowed and isinstance(value, int))


def union_members(hint: Any) -> tuple[Any, ...]:
    """The members of a union annotation (``int | None`` -> (int, NoneType)); any other annotation alone."""
    return typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)


def simple_types(hint: Any) -> tuple[type, ...]:
    """The simple types an annotation allows, or () when it allows anything else too."""
    kinds = tuple(m for m in union_members(hint) if m is not type(None))
    return kinds if kinds and all(k in _SIMPLE for k in kinds) else ()


def suggest(name: str, choices: list[str]) -> str:
    """"; did you mean a, b?" for close matches of ``name``, else "; choose from ..." (for one-line errors)."""
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else f"; choose from {', '.join(choices)}"


def parse_value(raw: str) -> Any:
    """One ``key=value`` setting's value: JSON when it parses (numbers, booleans, lists), else Python's spelling
    (``True``, ``None``, ``(1, 2)``), else the text itself (``8/255``, ``linf``).

        >>> [parse_value(v) for v in ("10", "True", "(1, 2)", "8/255")]
        [10, True, [1, 2], '8/255']
    """
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return raw
    if isinstance(value, tuple):
        value = list(value)
    scalar = (bool, int, float, str, type(None))
    plain = isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, scalar) for v in value))
    return value if plain else raw
