"""Check a notebook's parameters (a profile, `-p` values) against its parameters cell before a kernel starts."""

from __future__ import annotations

from pathlib import Path

from lib.choices import ParamError
from lib.params import assigned_names, check, read_profile


def parameters_cell(notebook: str | Path) -> str:
    """The source of the notebook's cell tagged `parameters` (a percent-format .py or an .ipynb)."""
    import jupytext

    for cell in jupytext.read(notebook).cells:
        if "parameters" in cell.metadata.get("tags", []):
            return cell.source
    raise ParamError(f"{notebook} has no cell tagged 'parameters'")


def notebook_defaults(notebook: str | Path) -> dict:
    """The parameters cell's names with their literal values (None where a value is not a literal)."""
    return assigned_names(parameters_cell(notebook))


def command_line_values(pairs: list[list[str]]) -> dict:
    """`-p key value` pairs, typed as papermill's command line types them."""
    from papermill.cli import _resolve_type

    return {key: _resolve_type(value) for key, value in pairs}


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
