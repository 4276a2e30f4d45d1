"""Check a notebook's parameters (a profile, `-p` values) against its parameters cell before a kernel starts."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lib.choices import ParamError
from lib.params import assigned_names, check, read_profile

CELL_MARKER = re.compile(r"^# %%")  # jupytext's percent format: `# %% [markdown] tags=["parameters"]`
PARAMETERS_TAG = re.compile(r"""\btags=\[[^\]]*["']parameters["']""")


def parameters_cell(notebook: str | Path) -> str:
    """The source of the notebook's cell tagged `parameters`: of a percent-format .py (read here, as importing
    jupytext alone takes longer than the whole check) or of an .ipynb."""
    path = Path(notebook)
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        sources = ["".join(c["source"]) for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    else:
        sources, lines = [], None
        for line in path.read_text(encoding="utf-8").splitlines():
            if CELL_MARKER.match(line):
                if lines is not None:
                    sources.append("\n".join(lines).strip("\n"))
                lines = [] if PARAMETERS_TAG.search(line) else None
            elif lines is not None:
                lines.append(line)
        if lines is not None:
            sources.append("\n".join(lines).strip("\n"))
    if not sources:
        raise ParamError(f"{notebook} has no cell tagged 'parameters'")
    return sources[0]


def notebook_defaults(notebook: str | Path) -> dict:
    """The parameters cell's names with their literal values (None where a value is not a literal)."""
    return assigned_names(parameters_cell(notebook))


def command_line_value(text: str):
    """One `-p` value typed by papermill's command line rules (papermill.cli._resolve_type, which
    tests/test_runner.py compares with this): True, False, None, an int, a float, else the string. Importing
    papermill to call it takes about 2 s here, longer than the whole check."""
    words = {"True": True, "False": False, "None": None}
    if text in words:
        return words[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def command_line_values(pairs: list[list[str]]) -> dict:
    """`-p key value` pairs, typed as papermill's command line types them."""
    return {key: command_line_value(value) for key, value in pairs}


def check_notebook(notebook: str | Path, profile: str | Path | None, pairs: list[list[str]] = ()) -> dict:
    """Check the profile's and the `-p` values against the notebook; return them merged as papermill does."""
    defined = notebook_defaults(notebook)
    merged = {}
    for origin, values in (
        (str(profile), read_profile(profile) if profile else {}),
        ("-p", command_line_values(pairs)),
    ):
        check(values, defined, origin)
        merged.update(values)
    return merged
