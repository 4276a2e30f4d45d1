"""What every notebook of the series does first: collect its parameters, find the data, open its run folder."""

from __future__ import annotations

from pathlib import Path

from lib import data, paths
from lib import params as param_checks
from lib.runs import RunRecord


def collect_params(namespace: dict, before: set) -> dict:
    """The parameters cell's names (and papermill's injected overrides): globals defined after `before`. Stops on
    an injected name the parameters cell does not define, or a value outside its allowed set (lib.params)."""
    params = {
        k: v
        for k, v in namespace.items()
        if k not in before and not k.startswith("_") and isinstance(v, (str, int, float, bool, list, dict, type(None)))
    }
    param_checks.check_injected(list(namespace.get("In", [])), params)
    return params


def open_run(params: dict, *, resumable: bool = False, **recorded) -> tuple[dict, Path, RunRecord]:
    """Resolve and check the data folder, open runs/<profile>/<run_name>/ (or `run_dir`) and record the
    parameters with the data folder in use (and any `recorded` extras). A `resumable` run (03, 04) that finds
    a run with other settings in its folder moves it aside first. Returns (params, data_dir, run)."""
    data_dir = data.prepare_data_dir(paths.resolve_data_dir(params.get("data_dir")))
    params = {**params, "data_dir": str(data_dir)}
    run = RunRecord(params.get("run_dir") or paths.run_dir(params["profile"], params["run_name"]))
    run.start({**params, **recorded}, resumable=resumable)
    return params, data_dir, run


def describe_data(data_dir: Path) -> str:
    """The data folder as printed by every notebook, marked when it is the offline demo."""
    return f"{data_dir}{' (offline demo)' if paths.is_demo(data_dir) else ''}"
