"""What a notebook's run depends on: its source, its profile, the `lib` modules it imports (followed through
`lib`), the data's CSVs and the runs whose probabilities it reads. make's stamps and the Kaggle bundles use it."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from lib.paths import MODEL_RUNS, PROJECT_ROOT

PACKAGE = "lib"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
PROFILES_DIR = PROJECT_ROOT / "profiles"
RUN_OUTPUTS = ("probs_val.csv", "probs_test.csv")  # what a later notebook reads of an earlier run
DATA_FILES = ("train.csv", "sample-submission.csv")


def module_file(module: str, root: Path = PROJECT_ROOT) -> Path | None:
    """lib/a/b.py or lib/a/b/__init__.py for the dotted name `lib.a.b`; None when it is no module of the package."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(source: str, root: Path = PROJECT_ROOT) -> set[str]:
    """The `lib` modules `source` imports anywhere (top level or inside a function): `import lib.x`,
    `from lib.x import y` and `from lib import x`, where x is a module."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == PACKAGE:
            found.add(node.module)
            found.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if module_file(f"{node.module}.{alias.name}", root) is not None
            )
    return found


def with_packages(module: str) -> list[str]:
    """`lib.a.b` and the packages Python imports first: lib, lib.a."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@cache
def _closure(source: str, root: Path) -> tuple[Path, ...]:
    seen: set[str] = set()
    pending = [m for module in imported_modules(source, root) for m in with_packages(module)]
    while pending:
        module = pending.pop()
        if module in seen or (path := module_file(module, root)) is None:
            continue
        seen.add(module)
        pending += [
            m for child in imported_modules(path.read_text(encoding="utf-8"), root) for m in with_packages(child)
        ]
    return tuple(sorted(module_file(module, root) for module in seen))


def lib_modules(source: str, root: Path = PROJECT_ROOT) -> list[Path]:
    """Every module file of `lib` that running `source` can import, followed through lib's own imports."""
    return list(_closure(source, Path(root)))


def notebook_source(name: str, notebooks_dir: Path = NOTEBOOKS_DIR) -> str:
    """The percent-format source of notebooks/<name>.py (its markdown cells are comments, so it parses)."""
    return (notebooks_dir / f"{name}.py").read_text(encoding="utf-8")


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
    """Every file a run of notebook `name` depends on (missing ones count as missing in the stamp)."""
    files = [NOTEBOOKS_DIR / f"{name}.py", PROFILES_DIR / profile / f"{name}.yaml"]
    files += lib_modules(notebook_source(name))
    files += [Path(data_dir) / file for file in DATA_FILES]
    files += [Path(runs_dir) / profile / run / file for run in upstream_runs(name, parameters) for file in RUN_OUTPUTS]
    return files
