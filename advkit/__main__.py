"""``python -m advkit`` (also what ``torchrun -m advkit`` runs) and the ``advkit`` console script."""

import os
import signal
import sys
from types import FrameType

LOADING = "interrupted while loading advkit: nothing was started"


def run() -> None:
    """Load the CLI, then run it. Loading takes a few seconds (torch); Ctrl-C meanwhile exits 130 with one line
    instead of a traceback through the imports, as it does once a command runs."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.default_int_handler:  # not when Ctrl-C is ignored (a background job)
        signal.signal(signal.SIGINT, _on_ctrl_c)
    try:
        from advkit.cli import main
    except KeyboardInterrupt:  # raised by other means than Ctrl-C, which the handler turns into an exit of its own
        signal.signal(signal.SIGINT, previous)
        sys.stderr.write(LOADING + "\n")
        sys.exit(130)
    _loaded[0] = True
    try:
        main()
    except KeyboardInterrupt:  # the moment main() leaves its own handling: the command is over, nothing to resume
        sys.exit(130)
    finally:
        _end_quietly_on_ctrl_c()


_loaded = [False]  # whether the CLI is loaded: from then on, a Ctrl-C outside an import stops the command as usual


def _on_ctrl_c(_signum: int, frame: FrameType | None) -> None:
    """Ctrl-C while advkit loads, or while a command imports a module (scipy, matplotlib, torchattacks on first use),
    ends the process at once with one line: a KeyboardInterrupt raised there can land in the C++ of an extension
    being initialised (torch's pybind11), which cannot take it and aborts ("terminate called after throwing an
    instance of 'pybind11::error_already_set'", exit 134). Anywhere else it stops the command as usual."""
    if not _loaded[0]:
        _exit_now(LOADING)
    if _importing(frame):
        cli = sys.modules.get("advkit.cli")
        _exit_now(f"interrupted: {cli._after_interrupt(sys.argv[1:])}" if cli else LOADING)
    raise KeyboardInterrupt


def _importing(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs inside an import (importlib's frames are on its stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _exit_now(message: str) -> None:
    """Exit 130 at once, after the output so far and ``message``: no exception unwinds through the half-imported
    modules, and the interpreter's teardown (torch's, a second or more) is skipped. Reports stay whole, as after a
    crash: their journal is written for that."""
    _flush()
    try:
        os.write(2, f"{message}\n".encode())
    except OSError:  # a closed stderr: nothing more can reach it
        pass
    os._exit(130)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass


def _end_quietly_on_ctrl_c() -> None:
    """The command is over and its output flushed; a Ctrl-C during the interpreter's exit (torch's teardown takes a
    moment) now ends the process at once, as the OS does, instead of printing Python's "Exception ignored" noise."""
    _flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)


if __name__ == "__main__":
    run()
