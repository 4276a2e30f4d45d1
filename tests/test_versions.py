"""The version check a Kaggle kernel runs first: minimums in step with requirements-kaggle.txt, one line if too old."""

from __future__ import annotations

import subprocess
import sys

import pytest
from packaging.requirements import Requirement

from lib import versions
from lib.paths import PROJECT_ROOT
from lib.versions import MINIMUM_VERSIONS, PackagesTooOld, require_versions, too_old

REQUIREMENTS = PROJECT_ROOT / "requirements-kaggle.txt"
TEST_TOOLS = {"pytest", "pytest-xdist"}  # pinned in the file for the job, not needed by lib


def pinned(path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    pins = {}
    for requirement in map(Requirement, lines):
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{requirement}: pin one version, the oldest tested"
        pins[requirement.name] = specifier.version
    return pins


def test_minimums_are_the_versions_the_oldest_job_installs():
    pins = pinned(REQUIREMENTS)
    assert pins.keys() >= TEST_TOOLS
    assert {name: version for name, version in pins.items() if name not in TEST_TOOLS} == MINIMUM_VERSIONS


def test_this_environment_meets_the_minimums():
    assert too_old() == []
    require_versions()


def installed(**found):
    """A fake `version_of`: the given distributions (underscores for dashes), every other required one new enough."""
    found = {name.replace("_", "-"): version for name, version in found.items()}
    new_enough = {name: "999" for name in MINIMUM_VERSIONS}
    return lambda name: found[name] if name in found else new_enough.get(name)


def test_too_old_and_missing_packages_are_named_with_found_and_needed():
    assert too_old(installed(keras="3.9.2", pandas=None, numpy="2.0.2")) == [
        ("keras", "3.9.2", "3.10.0"),
        ("pandas", None, "2.2.2"),  # the minimum itself passes: numpy 2.0.2 is not listed
    ]
    with pytest.raises(PackagesTooOld) as raised:
        require_versions(installed(keras="3.8.0", pandas=None))
    message = str(raised.value)
    assert "keras 3.8.0 (needs >= 3.10.0), pandas missing (needs >= 2.2.2)" in message
    assert 'pip install "keras>=3.10.0" "pandas>=2.2.2"' in message and "\n" not in message
    assert raised.value._render_traceback_() == [f"error: {message}"]


def test_other_distributions_of_the_same_module_count():
    # Kaggle's GPU image has `tensorflow`, not `tensorflow-cpu`; OpenCV comes in four builds, the newest counts.
    old_tensorflow = installed(tensorflow_cpu=None, tensorflow="2.17.1")
    assert too_old(old_tensorflow) == [("tensorflow", "2.17.1", "2.18.0")]
    two_opencvs = installed(opencv_python_headless=None, opencv_python="4.9.0.80", opencv_contrib_python="4.11.0.86")
    assert too_old(two_opencvs) == []
    assert too_old(installed(opencv_python_headless=None)) == [("opencv-python-headless", None, "4.10.0.84")]
    assert too_old(installed(tensorflow_cpu=None)) == []  # TensorFlow is optional: Keras on JAX runs without it


# ---------------------------------------------------------------- the bundled notebook, through papermill

NOTEBOOK = """\
# %% tags=["parameters"]
answer = 1

# %%
import sys
print("after the check, keras imported:", "keras" in sys.modules)
"""


def fake_distributions(folder, **found):
    """dist-info folders that importlib.metadata finds before the real ones (PYTHONPATH comes first): the modules
    stay the same, only the versions the check reads change."""
    for name, version in found.items():
        info = folder / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return folder


def run_bundled(tmp_path, pythonpath: str):
    pytest.importorskip("papermill")
    import nbformat

    from tools.kaggle.kernel import build_notebook

    source = tmp_path / "07_versions.py"
    source.write_text(NOTEBOOK)
    nbformat.write(build_notebook(str(source)), tmp_path / "in.ipynb")
    (tmp_path / "kaggle" / "working").mkdir(parents=True, exist_ok=True)
    env = {"PATH": f"{sys.prefix}/bin:/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": pythonpath}
    env["CARS_KAGGLE_ROOT"] = str(tmp_path / "kaggle")
    command = [sys.executable, "-m", "papermill", str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb")]
    done = subprocess.run(
        [*command, "-k", "python3", "--cwd", str(tmp_path / "kaggle" / "working")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done, nbformat.read(tmp_path / "out.ipynb", as_version=4)


def code_outputs(notebook):
    return [cell.outputs for cell in notebook.cells if cell.cell_type == "code"]


@pytest.mark.slow
def test_bundle_with_new_enough_packages_runs_on_without_importing_keras(tmp_path):
    done, executed = run_bundled(tmp_path, pythonpath="")
    assert done.returncode == 0, done.stderr[-2000:]
    printed = "".join(o.get("text", "") for outputs in code_outputs(executed) for o in outputs)
    assert "modules written to" in printed
    assert "after the check, keras imported: False" in printed  # the backend can still be chosen after it


@pytest.mark.slow
def test_bundle_with_too_old_packages_stops_in_one_line(tmp_path):
    fakes = fake_distributions(tmp_path / "fakes", keras="3.8.0", pandas="2.1.4")
    done, executed = run_bundled(tmp_path, pythonpath=str(fakes))
    assert done.returncode != 0
    bundle, *rest = code_outputs(executed)
    (error,) = [o for o in bundle if o.output_type == "error"]
    assert error.ename == "PackagesTooOld"
    (line,) = error.traceback  # the whole error display: one line, no traceback
    assert line.startswith("error: lib needs newer packages than this environment has: keras 3.8.0 (needs >= 3.10.0)")
    assert "pandas 2.1.4 (needs >= 2.2.2)" in line and 'pip install "keras>=3.10.0" "pandas>=2.2.2"' in line
    assert all(outputs == [] for outputs in rest)  # nothing ran after it
    assert "Traceback" not in line and versions.__file__ not in line
