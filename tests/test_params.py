"""Parameters are checked against the notebook's parameters cell before a kernel starts; failed runs keep the last
good executed notebook."""

import importlib
import logging
import subprocess
import sys

import nbformat
import pytest
import yaml

from lib import params as P
from lib.notebook import collect_params
from lib.paths import PROJECT_ROOT

NOTEBOOKS = [
    "01_eda",
    "02_augmentation_preview",
    "03_xception",
    "04_efficientnetb7",
    "05_ensemble",
    "06_error_analysis",
]
PROFILES = ["demo", "full", "tiny"]
XCEPTION = PROJECT_ROOT / "notebooks" / "03_xception.py"


def params_cli(*args, cwd=PROJECT_ROOT):
    return subprocess.run(
        [sys.executable, "-m", "lib.params", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def demo_profile_with(tmp_path, text: str = "", replace: tuple[str, str] = ("", "")):
    source = (PROJECT_ROOT / "profiles" / "demo" / "03_xception.yaml").read_text()
    path = tmp_path / "03_xception.yaml"
    path.write_text(source.replace(*replace) + text)
    return path


def assert_one_line_error(done, *parts):
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: ")
    for part in parts:
        assert part in done.stderr, done.stderr


def test_unknown_key_in_a_profile_stops_in_one_line_with_the_closest_name(tmp_path):
    profile = demo_profile_with(tmp_path, "stagess: []\n")
    done = params_cli("check", XCEPTION, profile)
    assert_one_line_error(done, str(profile), "'stagess'", "did you mean 'stages'?")


def test_unknown_key_in_p_stops_in_one_line_with_the_closest_name():
    profile = PROJECT_ROOT / "profiles" / "demo" / "05_ensemble.yaml"
    done = params_cli("check", PROJECT_ROOT / "notebooks" / "05_ensemble.py", profile, "-p", "methd", "geometric")
    assert_one_line_error(done, "-p:", "'methd'", "did you mean 'method'?")


def test_bad_preset_value_stops_in_one_line(tmp_path):
    profile = demo_profile_with(tmp_path, replace=("augment: light", "augment: mediumm"))
    done = params_cli("check", XCEPTION, profile)
    assert_one_line_error(done, str(profile), "augment", "'mediumm'", "did you mean 'medium'?")


def test_values_inside_stages_are_checked(tmp_path):
    profile = demo_profile_with(tmp_path, replace=("schedule: onecycle", "schedule: one_cycle"))
    with pytest.raises(P.ParamError, match=r"stages\[0\]: unknown schedule value 'one_cycle'; did you mean 'onecycle'"):
        P.check(XCEPTION, profile)
    profile = demo_profile_with(tmp_path, replace=("image_size: 72", "image_szie: 72"))
    with pytest.raises(P.ParamError, match=r"stages\[0\]: unknown parameter 'image_szie'; did you mean 'image_size'"):
        P.check(XCEPTION, profile)


def test_every_shipped_profile_passes_and_merges_like_papermill():
    for profile in PROFILES:
        for name in NOTEBOOKS:
            path = PROJECT_ROOT / "profiles" / profile / f"{name}.yaml"
            merged = P.check(
                PROJECT_ROOT / "notebooks" / f"{name}.py", path, [["data_dir", "/d"], ["profile", profile]]
            )
            assert merged == {**(yaml.safe_load(path.read_text()) or {}), "data_dir": "/d", "profile": profile}


def test_p_values_are_typed_as_papermill_types_them():
    merged = P.check(XCEPTION, None, [["folds", "5"], ["weights", "None"], ["head_batchnorm", "False"]])
    assert merged == {"folds": 5, "weights": None, "head_batchnorm": False}


def test_allowed_sets_read_without_importing_are_lib_s_own():
    """Read with ast (no keras import): the same values as importing the modules that define them."""
    for module, name in {**P.CHOICES, **P.STAGE_CHOICES}.values():
        assert P.lib_constant(module, name) == tuple(getattr(importlib.import_module(f"lib.{module}"), name))
    from lib.train import Stage

    assert set(P.stage_keys()) == set(Stage.__dataclass_fields__)


def test_the_check_imports_no_keras():
    code = (
        "import sys; from lib.params import check; "
        f"check({str(XCEPTION)!r}, {str(PROJECT_ROOT / 'profiles/demo/03_xception.yaml')!r}); "
        "print(sorted(m for m in ('keras', 'tensorflow', 'albumentations', 'scipy') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_collect_params_stops_on_an_injected_name_the_parameters_cell_lacks():
    """In a kernel, IPython's `In` holds the parameters cell, then the cell papermill injected after it."""
    cell = P.parameters_cell(XCEPTION)
    namespace = {"In": ["", "from lib import experiment", cell, "# Parameters\nstagess = []\n"], "stagess": []}
    with pytest.raises(P.ParamError, match="injected parameters: unknown parameter 'stagess'; did you mean 'stages'"):
        collect_params(namespace, {"In"})
    namespace = {"In": ["", cell, "# Parameters\nstages = []\n"], "stages": [], "augment": "light"}
    assert collect_params(namespace, {"In"}) == {"stages": [], "augment": "light"}
    with pytest.raises(P.ParamError, match="unknown augment value 'mediumm'"):
        collect_params({"augment": "mediumm"}, set())


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_papermill_reads_every_parameter_without_a_warning(name, tmp_path, caplog):
    """papermill's own inspection of the built notebook finds every name the parameters cell assigns, so neither
    'Unable to parse line' nor 'Passed unknown parameter' appears for a real parameter."""
    papermill = pytest.importorskip("papermill")
    built = tmp_path / f"{name}.ipynb"
    source = PROJECT_ROOT / "notebooks" / f"{name}.py"
    subprocess.run(
        [
            PROJECT_ROOT / ".venv" / "bin" / "jupytext",
            "--quiet",
            "--to",
            "ipynb",
            "--set-kernel",
            "python3",
            "-o",
            built,
            source,
        ],
        check=True,
    )
    with caplog.at_level(logging.WARNING, logger="papermill"):
        inferred = papermill.inspect_notebook(str(built))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert set(inferred) == set(P.assigned_names(P.parameters_cell(source)))
    for profile in PROFILES:
        assert set(yaml.safe_load((PROJECT_ROOT / "profiles" / profile / f"{name}.yaml").read_text()) or {}) <= set(
            inferred
        )


TINY_NOTEBOOK = """\
# ---
# jupyter:
#   kernelspec:
#     name: python3
#     display_name: Python 3
#     language: python
# ---

# %% tags=["parameters"]
fail = False

# %%
print("ran with fail =", fail)
assert not fail, "told to fail"
"""


def test_a_failed_run_keeps_the_last_good_executed_notebook(tmp_path):
    pytest.importorskip("papermill")
    jupytext = pytest.importorskip("jupytext")
    notebook = tmp_path / "tiny.ipynb"
    nbformat.write(jupytext.reads(TINY_NOTEBOOK, fmt="py:percent"), notebook)
    output = tmp_path / "runs" / "tiny.ipynb"
    failed = tmp_path / "runs" / "tiny.failed.ipynb"

    assert params_cli("run", notebook, output, "-p", "fail", "False").returncode == 0
    good = output.read_text()
    assert "ran with fail = False" in good and not failed.exists()

    done = params_cli("run", notebook, output, "-p", "fail", "True")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: notebook tiny failed (AssertionError: told to fail)")
    assert f"The executed copy with the traceback: {failed}; the last good run stays at {output}" in last
    assert output.read_text() == good
    assert "told to fail" in failed.read_text()

    assert params_cli("run", notebook, output, "-p", "fail", "False").returncode == 0
    assert not failed.exists(), "a stale failed copy is removed once the notebook runs again"
    assert not output.with_suffix(".partial.ipynb").exists()


def test_run_checks_before_a_kernel_starts(tmp_path):
    jupytext = pytest.importorskip("jupytext")
    notebook = tmp_path / "tiny.ipynb"
    nbformat.write(jupytext.reads(TINY_NOTEBOOK, fmt="py:percent"), notebook)
    done = params_cli("run", notebook, tmp_path / "out" / "tiny.ipynb", "-p", "fial", "True")
    assert_one_line_error(done, "'fial'", "did you mean 'fail'?")
    assert not (tmp_path / "out").exists()


KERNEL_CHECKED_NOTEBOOK = """\
# ---
# jupyter:
#   kernelspec:
#     name: python3
#     display_name: Python 3
#     language: python
# ---

# %%
from lib.notebook import collect_params

_before = set(globals())

# %% tags=["parameters"]
fail = False

# %%
params = collect_params(globals(), _before)
"""


def test_inside_the_kernel_an_injected_unknown_name_stops_the_notebook(tmp_path):
    """Interactive or direct papermill use (no `lib.params run`): collect_params compares papermill's injected cell
    with the parameters cell."""
    papermill = pytest.importorskip("papermill")
    jupytext = pytest.importorskip("jupytext")
    notebook = tmp_path / "checked.ipynb"
    nbformat.write(jupytext.reads(KERNEL_CHECKED_NOTEBOOK, fmt="py:percent"), notebook)
    papermill.execute_notebook(str(notebook), str(tmp_path / "ok.ipynb"), parameters={"fail": True})
    with pytest.raises(papermill.PapermillExecutionError) as raised:
        papermill.execute_notebook(str(notebook), str(tmp_path / "bad.ipynb"), parameters={"fial": True})
    assert raised.value.ename == "ParamError"
    assert "injected parameters: unknown parameter 'fial'; did you mean 'fail'?" in raised.value.evalue
