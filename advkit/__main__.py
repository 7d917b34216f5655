"""``python -m advkit`` (also what ``torchrun -m advkit`` runs) and the ``advkit`` console script."""

import signal
import sys


def run() -> None:
    """Load the CLI, then run it. Loading takes about a second (torch); Ctrl-C meanwhile exits 130 with one line
    instead of a traceback through the imports, as it does once a command runs."""
    try:
        from advkit.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted while loading advkit: nothing was started\n")
        sys.exit(130)
    try:
        main()
    except KeyboardInterrupt:  # the moment main() leaves its own handling: the command is over, nothing to resume
        sys.exit(130)
    finally:
        _end_quietly_on_ctrl_c()


def _end_quietly_on_ctrl_c() -> None:
    """The command is over and its output flushed; a Ctrl-C during the interpreter's exit (torch's teardown takes a
    moment) now ends the process at once, as the OS does, instead of printing Python's "Exception ignored" noise."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)


if __name__ == "__main__":
    run()
