"""Ctrl-C that always stops a command.

Python turns Ctrl-C into a KeyboardInterrupt wherever the main thread is. When that is a finaliser (a ``__del__``, a
weakref callback run by the garbage collector), Python cannot raise it: it prints "Exception ignored in ..." with a
traceback and goes on, so the command ran to its end as if no key had been pressed. While a command runs, such a
swallowed interrupt is kept instead and raised at the next progress event, where it stops the work like any Ctrl-C.

    >>> with catching_interrupts():
    ...     raise_if_interrupted()  # nothing pending: returns
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_pending = [False]  # a Ctrl-C that a finaliser swallowed, not yet raised


@contextmanager
def catching_interrupts() -> Iterator[None]:
    """While inside, interrupts swallowed by finalisers are kept (silently) for ``raise_if_interrupted``."""
    previous = sys.unraisablehook
    _pending[0] = False

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            _pending[0] = True
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def raise_if_interrupted() -> None:
    """Raise the KeyboardInterrupt a finaliser swallowed, once (a no-op when there is none)."""
    if _pending[0]:
        _pending[0] = False
        raise KeyboardInterrupt


def interrupt_pending() -> bool:
    """Whether a swallowed Ctrl-C has not been raised yet (the command ended before its next progress event)."""
    return _pending[0]
