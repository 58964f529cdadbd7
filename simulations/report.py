"""Output shared by the studies: an aligned text table, and where the PNGs go."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display in CI
import matplotlib.pyplot as plt

DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns right-aligned to their widest cell; floats as given (format them before)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def out_path(out_dir: str | os.PathLike[str] | None, name: str) -> Path:
    directory = Path(out_dir) if out_dir is not None else DEFAULT_OUT
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name


def save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"
