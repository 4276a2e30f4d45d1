"""Check a notebook's parameters (profile, -p) against its parameters cell before a kernel starts, then run it."""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import os
import sys
import time
from functools import cache
from pathlib import Path

LIB_DIR = Path(__file__).resolve().parent
INJECTED_MARKER = "# Parameters"  # the comment papermill puts first in the cell it injects

# Parameters whose values come from a fixed set, and where lib defines that set: (module, constant). The
# modules are read with `ast`, not imported, so no check pulls in keras, albumentations or scipy.
CHOICES = {
    "augment": ("augment", "PRESETS"),
    "keras_augment": ("augment", "PRESETS"),
    "presets": ("augment", "PRESETS"),
    "keras_presets": ("augment", "PRESETS"),
    "backbone": ("backbones", "BACKBONES"),
    "precision": ("distribute", "PRECISIONS"),
    "distribute": ("distribute", "STRATEGIES"),
    "lr_scaling": ("distribute", "LR_SCALINGS"),
    "tta": ("predict", "TTA_TRANSFORMS"),
    "method": ("ensemble", "BLEND_METHODS"),
    "search": ("ensemble", "SEARCHES"),
}
STAGE_CHOICES = {
    "optimizer": ("schedules", "OPTIMIZERS"),
    "schedule": ("schedules", "SCHEDULES"),
    "augment": ("augment", "PRESETS"),
}


class ParamError(ValueError):
    """A parameter the notebook does not define, or a value outside its allowed set."""


class NotebookFailed(RuntimeError):
    """The notebook ran and stopped with an error; the message names its executed copy."""


@cache
def _module_tree(module: str) -> ast.Module:
    return ast.parse((LIB_DIR / f"{module}.py").read_text(encoding="utf-8"))


@cache
def lib_constant(module: str, name: str) -> tuple:
    """A module-level constant of lib/<module>.py (a tuple's items, a dict's keys), read with `ast` when it is a
    literal; otherwise (lib.backbones.BACKBONES, whose module is light) by importing the module."""
    for node in _module_tree(module).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            try:
                return tuple(ast.literal_eval(node.value))
            except ValueError:
                break
    return tuple(getattr(importlib.import_module(f"lib.{module}"), name))


@cache
def stage_keys() -> tuple[str, ...]:
    """The fields of lib.train.Stage, read without importing lib.train (which imports keras)."""
    for node in _module_tree("train").body:
        if isinstance(node, ast.ClassDef) and node.name == "Stage":
            return tuple(n.target.id for n in node.body if isinstance(n, ast.AnnAssign))
    raise LookupError("lib/train.py defines no Stage")


def parameters_cell(notebook: str | Path) -> str:
    """The source of the notebook's cell tagged `parameters` (a percent-format .py or an .ipynb)."""
    import jupytext

    for cell in jupytext.read(notebook).cells:
        if "parameters" in cell.metadata.get("tags", []):
            return cell.source
    raise ParamError(f"{notebook} has no cell tagged 'parameters'")


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


def _unknown(kind: str, key: str, valid, origin: str) -> ParamError:
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(map(str, valid))}"
    return ParamError(f"{origin}: unknown {kind} {key!r}; {hint}")


def check_names(given: dict, defined, origin: str) -> None:
    """Every key of `given` must be a parameter the notebook defines."""
    for key in given:
        if key not in defined:
            raise _unknown("parameter", key, sorted(defined), origin)


def _check_choice(name: str, value, module_constant: tuple[str, str], origin: str) -> None:
    allowed = lib_constant(*module_constant)
    for item in value if isinstance(value, (list, tuple)) else [value]:
        compared = item.lower() if isinstance(item, str) and name == "backbone" else item
        if compared not in allowed:
            raise _unknown(f"{name} value", item, allowed, origin)


def check_values(params: dict, origin: str) -> None:
    """Values drawn from a fixed set (presets, backbone, precision, ..., each stage's optimizer and schedule)."""
    for name, value in params.items():
        if name in CHOICES:
            _check_choice(name, value, CHOICES[name], origin)
    stages = params.get("stages")
    if isinstance(stages, list):
        for index, stage in enumerate(stages):
            if not isinstance(stage, dict):
                raise ParamError(f"{origin}: stages[{index}] is {stage!r}, not a mapping of stage settings")
            where = f"{origin}: stages[{index}]"
            check_names(stage, stage_keys(), where)
            for key, module_constant in STAGE_CHOICES.items():
                if stage.get(key) is not None:  # None: the notebook's own setting
                    _check_choice(key, stage[key], module_constant, where)


def read_profile(path: str | Path) -> dict:
    """A profile YAML as papermill reads it (`-f`); an empty file is no overrides."""
    from papermill.iorw import read_yaml_file

    values = read_yaml_file(str(path)) or {}
    if not isinstance(values, dict):
        raise ParamError(f"{path}: expected a mapping of parameter: value, got {type(values).__name__}")
    return values


def command_line_values(pairs: list[list[str]]) -> dict:
    """`-p key value` pairs, typed as papermill's command line types them."""
    from papermill.cli import _resolve_type

    return {key: _resolve_type(value) for key, value in pairs}


def check(notebook: str | Path, profile: str | Path | None, pairs: list[list[str]] = ()) -> dict:
    """Check the profile's and the `-p` values against the notebook; return them merged as papermill does."""
    defined = assigned_names(parameters_cell(notebook))
    merged = {}
    for origin, values in (
        (str(profile), read_profile(profile) if profile else {}),
        ("-p", command_line_values(pairs)),
    ):
        check_names(values, defined, origin)
        check_values(values, origin)
        merged.update(values)
    return merged


def check_injected(history: list[str], params: dict) -> None:
    """Inside a kernel: the names papermill injected (the cell after the parameters cell in IPython's `In`
    history) must be ones the parameters cell assigns; every value must be in its allowed set."""
    injected = [i for i, source in enumerate(history) if source.lstrip().startswith(INJECTED_MARKER)]
    if injected and injected[-1] > 0:
        at = injected[-1]
        check_names(assigned_names(history[at]), assigned_names(history[at - 1]), "injected parameters")
    check_values(params, "parameters")


def run(
    notebook: Path,
    output: Path,
    profile: Path | None,
    pairs: list[list[str]],
    cwd: str | None,
    verbose: bool = False,
) -> None:
    """Check, then execute with papermill into `output` (lib.notebook_run: a cell bar and the lines worth reading
    on the terminal, everything the kernel printed in <name>.log beside `output`; `verbose`: papermill's full cell
    log), then print one result line. A failed run leaves the last good `output` in place and writes its executed
    copy to <name>.failed.ipynb beside it; a successful one removes that stale copy."""
    from lib import notebook_run
    from lib.paths import PROJECT_ROOT

    parameters = check(notebook, profile, pairs)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial, failed = output.with_suffix(".partial.ipynb"), output.with_suffix(".failed.ipynb")
    log = output.with_suffix(".log")
    started = time.time()
    try:
        shown = notebook_run.execute(notebook, partial, parameters, cwd, log, verbose)
    except BaseException as error:  # the kernel's error, a timeout or Ctrl-C: keep the last good run either way
        copy = "nothing ran"
        if partial.exists():
            os.replace(partial, failed)
            copy = f"The executed copy with the traceback: {failed}"
        reason = f"{error.ename}: {str(error.evalue).strip()}" if hasattr(error, "ename") else f"{error!r}"
        kept = f"; the last good run stays at {output}" if output.exists() else ""
        raise NotebookFailed(
            f"notebook {notebook.stem} failed ({reason.splitlines()[0]}). {copy}{kept}; all it printed: {log}"
        ) from None
    os.replace(partial, output)
    failed.unlink(missing_ok=True)
    print(notebook_run.summary(notebook.stem, started, shown, output.parent, PROJECT_ROOT), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.params", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check_cmd = commands.add_parser("check", help="check a profile and -p values against a notebook")
    check_cmd.add_argument("notebook", help="notebooks/NN.py (or .ipynb)")
    check_cmd.add_argument("profile", help="profiles/<profile>/NN.yaml")
    run_cmd = commands.add_parser("run", help="check, then execute the notebook with papermill")
    run_cmd.add_argument("notebook", type=Path, help="notebooks/NN.ipynb")
    run_cmd.add_argument("output", type=Path, help="the executed notebook to write")
    run_cmd.add_argument("-f", "--profile", type=Path, help="profiles/<profile>/NN.yaml")
    run_cmd.add_argument("--cwd", help="the kernel's working folder")
    run_cmd.add_argument("--verbose", action="store_true", help="papermill's full cell log on the terminal")
    for sub in (check_cmd, run_cmd):
        sub.add_argument("-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"), dest="pairs")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            check(args.notebook, args.profile, args.pairs)
        else:
            run(args.notebook, args.output, args.profile, args.pairs, args.cwd, args.verbose)
    except (ParamError, NotebookFailed, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
