"""``python -m advkit`` (also what ``torchrun -m advkit`` runs)."""

from advkit.cli import main

main()
