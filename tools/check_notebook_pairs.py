"""Fail when a notebooks/*.ipynb no longer matches its percent-format .py twin (the reviewed source)."""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def cell_inputs(path: Path) -> list[tuple[str, str]]:
    """(cell type, source) of every cell; outputs, ids and metadata are not part of the pair."""
    notebook = jupytext.read(path)
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


def out_of_sync(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[str]:
    """One line per pair whose cells differ, saying which side is newer and how to bring them together."""
    problems = []
    for source in sorted(notebooks_dir.glob("[0-9]*.py")):
        built = source.with_suffix(".ipynb")
        if not built.exists():
            continue
        py_cells, ipynb_cells = cell_inputs(source), cell_inputs(built)
        if py_cells == ipynb_cells:
            continue
        first = next(
            (k for k, (a, b) in enumerate(zip(py_cells, ipynb_cells)) if a != b), min(map(len, (py_cells, ipynb_cells)))
        )
        if built.stat().st_mtime > source.stat().st_mtime:
            fix = f"edited in Jupyter? `jupytext --sync {built.relative_to(notebooks_dir.parent)}` copies it back"
        else:
            fix = "`make notebooks` rebuilds the .ipynb from the .py"
        problems.append(f"{source.name} and {built.name} differ from cell {first + 1} on: {fix}")
    return problems


def main() -> int:
    problems = out_of_sync()
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
