"""Every figure a notebook shows is also written as a PNG into its run folder, under a stable name."""

from __future__ import annotations

import functools
import re
from pathlib import Path

_folder: Path | None = None


def save_to(folder: str | Path | None) -> Path | None:
    """Write the figures drawn from now on into `folder` (None: write none). lib.notebook.open_run calls it with
    the run folder's figures/ so every notebook's figures land next to its other outputs."""
    global _folder
    _folder = Path(folder) if folder else None
    if _folder:
        _folder.mkdir(parents=True, exist_ok=True)
    return _folder


def file_name(name: str) -> str:
    """`name` as a file name: lower case, runs of anything but letters, digits, '-' and '_' turned into '_'."""
    return re.sub(r"[^a-z0-9_-]+", "_", name.lower()).strip("_") + ".png"


def save(figure, name: str) -> Path | None:
    """Write `figure` as <folder>/<name>.png (overwriting: rerunning a cell keeps one file) when a folder is set."""
    figure.set_label(name)
    if _folder is None:
        return None
    path = _folder / file_name(name)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def saved_as(default_name: str):
    """Decorator for a plotting helper that returns a Figure or an Axes: its figure is saved under `name=` (a
    keyword every decorated helper gains) or `default_name`. A caller that passes its own `ax` owns the figure
    and saves it itself, so nothing is written then."""

    def decorate(plot):
        @functools.wraps(plot)
        def plot_and_save(*args, name: str | None = None, **kwargs):
            drawn = plot(*args, **kwargs)
            if kwargs.get("ax") is None:
                save(getattr(drawn, "figure", drawn), name or default_name)
            return drawn

        return plot_and_save

    return decorate
