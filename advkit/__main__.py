"""``python -m advkit`` (also what ``torchrun -m advkit`` runs) and the ``advkit`` console script."""

import sys


def run() -> None:
    """Load the CLI, then run it. Loading takes about a second (torch); Ctrl-C meanwhile exits 130 with one line
    instead of a traceback through the imports, as it does once a command runs."""
    try:
        from advkit.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted while loading advkit: nothing was started\n")
        sys.exit(130)
    main()


if __name__ == "__main__":
    run()
