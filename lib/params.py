"""A notebook's parameters: the names its parameters cell assigns, a profile's values, and their check."""

from __future__ import annotations

import ast
from pathlib import Path

from lib.choices import ParamError, check_values, unknown

INJECTED_MARKER = "# Parameters"  # the comment papermill puts first in the cell it injects


def assigned_names(source: str) -> dict[str, object]:
    """Names assigned at the top level of `source`, with their values where they are literals."""
    names = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    try:
                        names[target.id] = ast.literal_eval(node.value)
                    except ValueError:
                        names[target.id] = None
    return names


def check_names(given: dict, defined, origin: str) -> None:
    """Every key of `given` must be a parameter the notebook defines."""
    for key in given:
        if key not in defined:
            raise unknown("parameter", key, sorted(defined), origin)


def check(given: dict, defined, origin: str) -> None:
    """`given` (a profile's or the command line's values) against the notebook's names and the allowed values."""
    check_names(given, defined, origin)
    check_values(given, origin)


def read_profile(path: str | Path) -> dict:
    """A profile YAML as papermill reads it (`-f`, yaml.safe_load); an empty file is no overrides."""
    import yaml

    values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise ParamError(f"{path}: expected a mapping of parameter: value, got {type(values).__name__}")
    return values


def check_injected(history: list[str], params: dict) -> None:
    """Inside a kernel: the names papermill injected (the cell after the parameters cell in IPython's `In`
    history) must be ones the parameters cell assigns; every value must be in its allowed set."""
    injected = [i for i, source in enumerate(history) if source.lstrip().startswith(INJECTED_MARKER)]
    if injected:  # papermill's cell always follows the parameters cell, so it is never the first
        at = injected[-1]
        check_names(assigned_names(history[at]), assigned_names(history[at - 1]), "injected parameters")
    check_values(params, "parameters")
