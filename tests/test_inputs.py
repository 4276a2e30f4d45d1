"""A notebook's inputs are the lib modules it imports: an edit reruns (make) and re-pushes (Kaggle) only the
notebooks that import what changed."""

import os
import subprocess
import sys

import pytest

from lib.paths import PROJECT_ROOT, series_notebooks, series_runs
from tools.runner.inputs import lib_modules, upstream_runs

NOTEBOOKS = series_notebooks()
RUNS = series_runs()  # 03_convnext runs notebook 03 with its own profile file


def modules_of(name: str) -> set[str]:
    return {
        p.relative_to(PROJECT_ROOT / "lib").as_posix() for p in lib_modules(PROJECT_ROOT / "notebooks" / f"{name}.py")
    }


def test_a_notebook_depends_on_what_it_imports_and_nothing_else():
    assert {name for name in NOTEBOOKS if "analysis/gradcam.py" in modules_of(name)} == {"06_error_analysis"}
    assert {name for name in NOTEBOOKS if "train.py" in modules_of(name)} == {"03_xception", "04_efficientnetb7"}
    assert {"__init__.py", "notebook.py", "paths.py", "choices.py"} <= modules_of("01_eda")
    assert "ensemble.py" in modules_of("05_ensemble") and "models.py" not in modules_of("05_ensemble")


def test_imports_inside_functions_and_of_submodules_count(tmp_path):
    package = tmp_path / "lib"
    (package / "sub").mkdir(parents=True)
    for name, text in {
        "__init__.py": "",
        "sub/__init__.py": "",
        "sub/mod.py": "def f():\n    from lib import helper\n",
        "helper.py": "import numpy\n",  # third-party imports are not followed
        "unused.py": "",
    }.items():
        (package / name).write_text(text)
    (tmp_path / "nb.py").write_text("# %% [markdown]\n# prose\n\n# %%\nfrom lib.sub import mod\n")
    found = {p.relative_to(package).as_posix() for p in lib_modules(tmp_path / "nb.py", root=tmp_path)}
    assert found == {"__init__.py", "sub/__init__.py", "sub/mod.py", "helper.py"}


@pytest.mark.slow  # imports each notebook's modules, Keras included, in a fresh process
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_lib_module_a_notebook_imports_when_it_runs_is_an_input(name):
    """The imports at run time (the notebook's import lines, executed) are among the inputs found statically."""
    source = (PROJECT_ROOT / "notebooks" / f"{name}.py").read_text()
    imports = "\n".join(line for line in source.splitlines() if line.startswith(("from lib", "import lib")))
    listed = "print('\\n'.join(m.__file__ for n, m in sys.modules.items() if n.split('.')[0] == 'lib'))"
    code = f"{imports}\nimport sys\n{listed}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = {os.path.relpath(path, PROJECT_ROOT / "lib") for path in done.stdout.split()}
    assert loaded <= modules_of(name), loaded - modules_of(name)


def test_the_runs_a_notebook_reads():
    assert upstream_runs("05_ensemble", {"models": []}) == ["03_xception", "03_convnext", "04_efficientnetb7"]
    assert upstream_runs("06_error_analysis", {"models": ["a"], "ensemble": "05_ensemble"}) == ["a", "05_ensemble"]
    assert upstream_runs("03_xception", {"backbone": "xception"}) == []


# ---------------------------------------------------------------- make: which notebooks an edit reruns


def in_copy(root, *command, env):
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture()
def series_up_to_date(project_copy, tiny_demo, tmp_path):
    """The project copied, every notebook of the tiny profile marked as run with today's inputs (the model runs'
    probabilities written), and a `dry_run()` that returns {notebook: make -n's line for it}."""
    env = {**os.environ, "CARS_OUTPUT_ROOT": str(tmp_path / "out")}
    env.pop("MAKEFLAGS", None)
    runs = tmp_path / "out" / "runs" / "tiny"
    for name in ("03_xception", "03_convnext", "04_efficientnetb7", "05_ensemble"):
        (runs / name).mkdir(parents=True)
        for split in ("val", "test"):
            (runs / name / f"probs_{split}.csv").write_text("Id,Category\n1.jpg,0\n")
    python = str(project_copy / ".venv" / "bin" / "python")
    marked = in_copy(project_copy, python, "-m", "tools.runner", "mark", *RUNS, "--profile", "tiny",
                     "--data-dir", str(tiny_demo), env=env)  # fmt: skip
    assert marked.returncode == 0, marked.stderr

    def dry_run() -> dict[str, str]:
        done = in_copy(project_copy, "make", "--no-print-directory", "-n", "run-all", f"DATA_DIR={tiny_demo}",
                       "PROFILE=tiny", env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        lines = [line for line in done.stdout.splitlines() if line.startswith("== ")]
        return {line.split(":")[0][3:]: line for line in lines}

    return project_copy, runs, dry_run


def edit(path):
    with open(path, "a", encoding="utf-8") as file:
        file.write("\n# an edit\n")


def test_a_toolbox_edit_leaves_every_notebook_up_to_date(series_up_to_date):
    root, _, dry_run = series_up_to_date
    for tool in ("tools/report.py", "tools/kaggle/series.py", "tools/runner/execute.py"):
        edit(root / tool)
    seen = dry_run()
    assert list(seen) == RUNS
    assert all("up to date, skipped" in line for line in seen.values()), seen


def test_a_grad_cam_edit_reruns_only_06(series_up_to_date):
    root, _, dry_run = series_up_to_date
    edit(root / "lib" / "analysis" / "gradcam.py")
    seen = dry_run()
    assert seen["06_error_analysis"] == "== 06_error_analysis: would run (lib/analysis/gradcam.py changed) =="
    assert [name for name, line in seen.items() if "would run" in line] == ["06_error_analysis"]


def test_a_training_edit_reruns_03_and_04_then_05_and_06_through_their_outputs(series_up_to_date):
    root, runs, dry_run = series_up_to_date
    edit(root / "lib" / "train.py")
    seen = dry_run()
    assert [name for name, line in seen.items() if "would run (lib/train.py changed)" in line] == [
        "03_xception",
        "03_convnext",
        "04_efficientnetb7",
    ]
    assert "up to date, skipped" in seen["01_eda"] and "up to date, skipped" in seen["02_augmentation_preview"]
    for name in ("05_ensemble", "06_error_analysis"):
        assert "runs after 03_xception, 03_convnext, 04_efficientnetb7 if their outputs change" in seen[name]
    (runs / "03_xception" / "probs_val.csv").write_text("Id,Category\n1.jpg,3\n")  # 03 ran and changed its answers
    seen = dry_run()
    for name in ("05_ensemble", "06_error_analysis"):
        assert seen[name].startswith(f"== {name}: would run (") and "03_xception/probs_val.csv changed" in seen[name]
