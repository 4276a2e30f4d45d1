"""Run one notebook headless: check its parameters, execute it quietly, keep the last good run; for make, only
when one of its inputs changed since its last success."""

from __future__ import annotations

import os
import time
from pathlib import Path

from lib.choices import ParamError
from lib.paths import PROJECT_ROOT, notebook_of, runs_dir
from tools.runner import inputs, stamp
from tools.runner.check import check_notebook, notebook_defaults


class NotebookFailed(RuntimeError):
    """The notebook ran and stopped with an error; the message names its executed copy."""


def execute_checked(
    notebook: Path,
    output: Path,
    profile: Path | None,
    pairs: list[list[str]],
    cwd: str | None,
    verbose: bool = False,
    name: str | None = None,
) -> None:
    """Check, then execute with papermill into `output` (tools.runner.execute: a cell bar and the lines worth
    reading on the terminal, everything the kernel printed in <name>.log beside `output`; `verbose`: papermill's
    full cell log), then print one result line, headed by `name` (default: the notebook's). A failed run leaves
    the last good `output` in place and writes its executed copy to <name>.failed.ipynb beside it; a successful
    one removes that stale copy."""
    from tools.runner import execute

    parameters = check_notebook(notebook, profile, pairs)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial, failed = output.with_suffix(".partial.ipynb"), output.with_suffix(".failed.ipynb")
    log = output.with_suffix(".log")
    started = time.time()
    try:
        shown = execute.execute(notebook, partial, parameters, cwd, log, verbose)
    except BaseException as error:  # the kernel's error, a timeout or Ctrl-C: keep the last good run either way
        copy = "nothing ran"
        if partial.exists():
            os.replace(partial, failed)
            copy = f"The executed copy with the traceback: {failed}"
        reason = f"{error.ename}: {str(error.evalue).strip()}" if hasattr(error, "ename") else f"{error!r}"
        kept = f"; the last good run stays at {output}" if output.exists() else ""
        what = (
            f"notebook {notebook.stem}" if name in (None, notebook.stem) else f"run {name} (notebook {notebook.stem})"
        )
        raise NotebookFailed(f"{what} failed ({reason.splitlines()[0]}). {copy}{kept}; all it printed: {log}") from None
    os.replace(partial, output)
    failed.unlink(missing_ok=True)
    print(execute.summary(name or notebook.stem, started, shown, output.parent, PROJECT_ROOT), flush=True)


def run_values(name: str) -> list[list[str]]:
    """What a model run under another name than its notebook's gets on top of its profile: its run name (so its run
    folder, stamp and submission are its own)."""
    return [["run_name", name]] if notebook_of(name) != name else []


def parameters_of(name: str, profile: str) -> dict:
    """The parameters run `name` gets on `profile`: its notebook's parameters cell, then its profile file over them,
    then its run name (lib.paths.notebook_of: 03_convnext runs 03_xception with profiles/<profile>/03_convnext.yaml)."""
    source = inputs.NOTEBOOKS_DIR / f"{notebook_of(name)}.py"
    profile_file = inputs.PROFILES_DIR / profile / f"{name}.yaml"
    if run_values(name) and not profile_file.is_file():
        raise ParamError(f"{profile_file} is missing: run {name} is notebook {notebook_of(name)} with that file's "
                         f"settings (lib.paths.MODEL_RUNS), so profile {profile} needs one")  # fmt: skip
    checked = check_notebook(source, profile_file if profile_file.is_file() else None, run_values(name))
    return {**notebook_defaults(source), **checked}


def current_inputs(name: str, profile: str, data_dir: Path, settings: dict[str, str]) -> dict:
    """The fingerprint of what a run of `name` on this profile and data would depend on now."""
    files = inputs.notebook_inputs(name, profile, data_dir, runs_dir(), parameters_of(name, profile))
    return stamp.fingerprint(files, {"data": str(data_dir), "profile": profile, **settings})


def changes(name: str, profile: str, data_dir: Path, settings: dict[str, str]) -> tuple[dict, list[str] | None]:
    """(the current fingerprint, what changed since the last success: [] nothing, None never run here)."""
    current = current_inputs(name, profile, Path(data_dir), settings)
    return current, stamp.changes(runs_dir() / profile / name, current)


def describe_changes(changed: list[str] | None, limit: int = 3) -> str:
    if changed is None:
        return "never run here"
    more = f" and {len(changed) - limit} more" if len(changed) > limit else ""
    return f"{', '.join(changed[:limit])}{more} changed"


def run_in_series(
    name: str,
    profile: str,
    data_dir: Path,
    *,
    force: bool = False,
    dry_run: bool = False,
    verbose: bool = False,
    settings: dict[str, str] | None = None,
) -> None:
    """make's `NN_topic` target: run notebooks/<name>.ipynb into runs/<profile>/<name>/ unless its inputs are those
    of its last success (`force` runs it anyway). `dry_run` (make -n) only says whether it would run, and why."""
    folder, settings = runs_dir() / profile / name, settings or {}
    current, changed = changes(name, profile, data_dir, settings)
    if dry_run and not force and changed == []:
        # make -n runs nothing, so an earlier notebook that would run has not written its outputs yet
        before = [
            run
            for run in inputs.upstream_runs(name, parameters_of(name, profile))
            if (inputs.NOTEBOOKS_DIR / f"{notebook_of(run)}.py").is_file()
            and changes(run, profile, data_dir, settings)[1] != []
        ]
        if before:
            print(f"== {name}: up to date now; runs after {', '.join(before)} if their outputs change ==", flush=True)
            return
    if not force and changed == []:
        print(f"== {name}: up to date, skipped (its inputs did not change; FORCE=1 reruns it) ==", flush=True)
        return
    why = "FORCE=1" if force else describe_changes(changed)
    if dry_run:
        print(f"== {name}: would run ({why}) ==", flush=True)
        return
    notebook = notebook_of(name)
    shown = "" if notebook == name else f", notebook {notebook}"
    print(f"== {name}: profile {profile}{shown}, data {data_dir} ({why}) ==", flush=True)
    execute_checked(
        PROJECT_ROOT / "notebooks" / f"{notebook}.ipynb",
        folder / f"{name}.ipynb",
        inputs.PROFILES_DIR / profile / f"{name}.yaml",
        [["data_dir", str(data_dir)], ["profile", profile], *run_values(name)],
        cwd=str(PROJECT_ROOT / "notebooks"),
        verbose=verbose,
        name=name,
    )
    stamp.mark(folder, current)


def mark_up_to_date(name: str, profile: str, data_dir: Path, settings: dict[str, str] | None = None) -> None:
    """Record the notebook's current inputs as those of its last success without running it (after an edit known
    to change nothing it computes: a comment, a docstring)."""
    current, changed = changes(name, profile, data_dir, settings or {})
    stamp.mark(runs_dir() / profile / name, current)
    print(f"== {name}: marked up to date ({describe_changes(changed) if changed else 'nothing had changed'}) ==")
