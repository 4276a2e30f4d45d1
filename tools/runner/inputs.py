"""What a notebook's run depends on: its source, its profile, the `lib` modules it imports (followed through
`lib`), the data's CSVs and the runs whose probabilities it reads. make's stamps and the Kaggle bundles use it."""

from __future__ import annotations

import modulefinder
from pathlib import Path

from lib.paths import MODEL_RUNS, PROJECT_ROOT, notebook_of

PACKAGE = "lib"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
PROFILES_DIR = PROJECT_ROOT / "profiles"
RUN_OUTPUTS = ("probs_val.csv", "probs_test.csv")  # what a later notebook reads of an earlier run
DATA_FILES = ("train.csv", "sample-submission.csv")


def lib_modules(script: Path, also: tuple[str, ...] = (), root: Path = PROJECT_ROOT) -> list[Path]:
    """Every module file of `lib` that running `script` (a notebook's percent-format .py) can import: its imports,
    followed through lib's own, inside functions too (the standard library's modulefinder, looking in `root`
    alone, so third-party packages are not followed). `also`: more modules the run imports (the Kaggle bundle's)."""
    finder = modulefinder.ModuleFinder(path=[str(root)])
    finder.run_script(str(script))
    for module in also:
        finder.import_hook(module)
    return sorted(
        Path(module.__file__)
        for name, module in finder.modules.items()
        if name.split(".")[0] == PACKAGE and module.__file__
    )


def upstream_runs(name: str, parameters: dict) -> list[str]:
    """The runs whose outputs the notebook reads: its `models` (empty: every model run of the series,
    lib.paths.MODEL_RUNS) and its `ensemble`, for a notebook that has these parameters."""
    runs = []
    if "models" in parameters:
        runs += list(parameters["models"] or MODEL_RUNS)
    if parameters.get("ensemble"):
        runs.append(parameters["ensemble"])
    return [run for run in runs if run != name]


def notebook_inputs(name: str, profile: str, data_dir: Path, runs_dir: Path, parameters: dict) -> list[Path]:
    """Every file run `name` depends on (missing ones count as missing in the stamp): the notebook it runs
    (lib.paths.notebook_of) and the lib modules that imports, the run's own profile file, the data's CSVs and the
    outputs of the runs it reads."""
    source = NOTEBOOKS_DIR / f"{notebook_of(name)}.py"  # percent format: its markdown cells are comments
    files = [source, PROFILES_DIR / profile / f"{name}.yaml"]
    files += lib_modules(source)
    files += [Path(data_dir) / file for file in DATA_FILES]
    files += [Path(runs_dir) / profile / run / file for run in upstream_runs(name, parameters) for file in RUN_OUTPUTS]
    return files
