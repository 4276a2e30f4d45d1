"""What every notebook of the series does first: collect its parameters, find the data, open its run folder."""

from __future__ import annotations

from pathlib import Path

from lib import data, figures, paths
from lib import params as param_checks
from lib.runs import RunRecord


def collect_params(namespace: dict, before: set) -> dict:
    """The parameters cell's names (and papermill's injected overrides): globals defined after `before`. Stops on
    an injected name the parameters cell does not define, or a value outside its allowed set (lib.params).

    Run by hand in Jupyter (a kernel's `In` history without papermill's injected cell), the notebook takes the
    profile `make` would pick for the data it finds (lib.paths): profiles/<profile>/<run_name>.yaml's values
    replace the cell's defaults, in `namespace` too, so every later cell sees them."""
    params = {
        k: v
        for k, v in namespace.items()
        if k not in before and not k.startswith("_") and isinstance(v, (str, int, float, bool, list, dict, type(None)))
    }
    history = list(namespace.get("In", []))
    if "In" in namespace and not injected_by_papermill(history):
        params = apply_profile_of_data(namespace, params)
    param_checks.check_injected(history, params)
    return params


def injected_by_papermill(history: list[str]) -> bool:
    return any(source.lstrip().startswith(param_checks.INJECTED_MARKER) for source in history)


def apply_profile_of_data(namespace: dict, params: dict, profiles_dir: Path | None = None) -> dict:
    """The profile `make` would use for the data found (`python -m lib.paths profile`) applied over the parameters
    cell's defaults, in `params` and `namespace`; says so in one line. Left alone: a notebook without
    `profile`/`run_name` parameters, a Kaggle kernel (it runs the cell's full settings), no such profile file."""
    if "profile" not in params or "run_name" not in params or paths.on_kaggle():
        return params
    data_dir = paths.resolve_data_dir(params.get("data_dir") or None)
    profile = paths.default_profile(data_dir)
    profiles_dir = profiles_dir or paths.PROJECT_ROOT / "profiles"
    file = profiles_dir / profile / f"{params['run_name']}.yaml"
    if not file.is_file():
        return params
    values = {**param_checks.read_profile(file), "profile": profile}
    param_checks.check_names(values, params, str(file))
    shown = file.relative_to(profiles_dir.parent) if profiles_dir.parent in file.parents else file
    found = "demo data" if profile == "demo" else f"competition data ({data_dir})"
    print(f"Interactive run: {found} found, using {shown} values; papermill's -p/-f values win when run by make")
    namespace.update(values)
    return {**params, **values}


def open_run(params: dict, *, resumable: bool = False, **recorded) -> tuple[dict, Path, RunRecord]:
    """Resolve and check the data folder, open runs/<profile>/<run_name>/ (or `run_dir`) and record the
    parameters with the data folder in use (and any `recorded` extras). A `resumable` run (03, 04) that finds
    a run with other settings in its folder moves it aside first. The figures drawn from then on are also
    written into the run folder's figures/ (lib.figures). Returns (params, data_dir, run)."""
    data_dir = data.prepare_data_dir(paths.resolve_data_dir(params.get("data_dir")))
    params = {**params, "data_dir": str(data_dir)}
    run = RunRecord(params.get("run_dir") or paths.run_dir(params["profile"], params["run_name"]))
    run.start({**params, **recorded}, resumable=resumable)
    figures.save_to(run.path("figures"))
    return params, data_dir, run


def describe_data(data_dir: Path) -> str:
    """The data folder as printed by every notebook, marked when it is the offline demo."""
    return f"{data_dir}{' (offline demo)' if paths.is_demo(data_dir) else ''}"
