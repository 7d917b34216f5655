"""PNG figures from report data, drawn with matplotlib's headless Agg backend.

    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "c.png"
    >>> plot_corruptions(np.array([[0.9, 0.7]]), ["fog"], [1, 2], path, clean=0.95)
    >>> path.read_bytes()[:4] == b"\\x89PNG"
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_corruptions(
    accuracy: np.ndarray,
    names: Sequence[str],
    severities: Sequence[int],
    path: Path,
    *,
    clean: float | None = None,
    baseline: np.ndarray | None = None,
    title: str = "",
) -> None:
    """Accuracy vs severity, one panel per corruption; ``accuracy`` and ``baseline`` are (C, S) in [0, 1]."""
    plt = _pyplot()
    cols = min(5, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.4 * rows), squeeze=False, sharey=True)
    for i, name in enumerate(names):
        ax = axes[i // cols][i % cols]
        ax.plot(severities, accuracy[i], marker="o", label="model")
        if baseline is not None:
            ax.plot(severities, baseline[i], marker="s", linestyle="--", label="baseline")
        if clean is not None:
            ax.axhline(clean, color="grey", linewidth=0.8, linestyle=":", label="clean")
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.set_xticks(list(severities))
    for j in range(len(names), rows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=7)
    fig.supxlabel("severity")
    fig.supylabel("accuracy")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
