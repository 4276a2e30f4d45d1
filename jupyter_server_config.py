"""`make lab`'s Jupyter server options (JUPYTER_CONFIG_PATH=<repo root> makes Jupyter read this file): notebooks/*.py
open as notebooks through jupytext, kernels run on .venv's Python and import this checkout's lib."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
c = get_config()  # noqa: F821 - defined by Jupyter when it loads this file


def _prepend(variable: str, folder: Path) -> None:
    """Put `folder` first in the path list `variable` (once, however often this file is loaded)."""
    entries = [e for e in os.environ.get(variable, "").split(os.pathsep) if e and e != str(folder)]
    os.environ[variable] = os.pathsep.join([str(folder), *entries])


c.ServerApp.root_dir = str(ROOT)
# jupytext's contents manager (its server extension would swap it in too, later and only where it is enabled): .py
# files open as notebooks, and jupytext.toml pairs each with its .ipynb, so an edit saves both.
c.ServerApp.contents_manager_class = "jupytext.AsyncTextFileContentsManager"
# This environment's kernelspecs first: its `python3` (argv "python", which Jupyter runs as the server's own
# Python, .venv's) wins over a user-level `python3` that names another interpreter.
_prepend("JUPYTER_PATH", Path(sys.prefix) / "share" / "jupyter")
# `import lib` is this checkout's lib from any folder (notebooks/ included), even when .venv's editable install
# points at another checkout of the project; kernels inherit the server's environment.
_prepend("PYTHONPATH", ROOT)
