"""lib.notebook.collect_params run by hand in Jupyter: the profile `make` would pick for the data found applies."""

import pytest

from lib import params as P
from lib.choices import ParamError
from lib.notebook import apply_profile_of_data, collect_params
from lib.paths import PROJECT_ROOT
from tools.runner.check import parameters_cell

XCEPTION = PROJECT_ROOT / "notebooks" / "03_xception.py"


def cell_namespace(data_dir, history_after=()) -> tuple[dict, set, str]:
    """Globals as a kernel holds them after 03's parameters cell ran, pointed at `data_dir`."""
    cell = parameters_cell(XCEPTION)
    namespace = {"In": ["", "from lib import experiment", cell, *history_after]}
    before = set(namespace)
    exec(cell, namespace)  # the cell assigns literals only
    namespace.pop("__builtins__")
    namespace["data_dir"] = str(data_dir)
    return namespace, before, cell


def demo_like(folder):
    """A folder lib.paths takes for the demo: it ships the hidden test labels."""
    folder.mkdir()
    (folder / "test_labels.csv").write_text("Id,Category\n")
    return folder


def test_interactive_run_on_demo_data_takes_the_demo_profile(tmp_path, capsys):
    namespace, before, _ = cell_namespace(demo_like(tmp_path / "demo"))
    assert namespace["weights"] == "imagenet" and namespace["profile"] == "full"  # the cell's full defaults
    params = collect_params(namespace, before)
    demo = P.read_profile(PROJECT_ROOT / "profiles" / "demo" / "03_xception.yaml")
    assert params["profile"] == "demo" and params["weights"] is None  # no ImageNet download offline
    assert {k: params[k] for k in demo} == demo
    assert namespace["weights"] is None and namespace["stages"] == demo["stages"]  # later cells see them too
    assert params["backbone"] == "xception"  # what the profile does not set keeps the cell's value
    assert capsys.readouterr().out.strip() == (
        "Interactive run: demo data found, using profiles/demo/03_xception.yaml values; "
        "papermill's -p/-f values win when run by make"
    )


def test_interactive_run_on_competition_data_takes_the_full_profile(tmp_path, capsys):
    data = tmp_path / "cars"
    data.mkdir()
    namespace, before, _ = cell_namespace(data)
    params = collect_params(namespace, before)
    assert params["profile"] == "full" and params["weights"] == "imagenet"  # profiles/full overrides nothing
    assert f"competition data ({data}) found, using profiles/full/03_xception.yaml" in capsys.readouterr().out


def test_papermills_values_win_and_no_profile_is_applied(tmp_path, capsys):
    injected = '# Parameters\nprofile = "tiny"\nbatch_size = 4\n'
    namespace, before, _ = cell_namespace(demo_like(tmp_path / "demo"), [injected])
    namespace.update(profile="tiny", batch_size=4)  # what running the injected cell did
    params = collect_params(namespace, before)
    assert params["profile"] == "tiny" and params["batch_size"] == 4 and params["weights"] == "imagenet"
    assert "Interactive run" not in capsys.readouterr().out


def test_a_profile_naming_an_unknown_parameter_stops_the_run(tmp_path):
    profiles = tmp_path / "profiles"
    (profiles / "demo").mkdir(parents=True)
    (profiles / "demo" / "03_xception.yaml").write_text("batch_sise: 8\n")
    namespace, _, _ = cell_namespace(demo_like(tmp_path / "demo"))
    params = {k: v for k, v in namespace.items() if k != "In"}
    with pytest.raises(ParamError, match="unknown parameter 'batch_sise'; did you mean 'batch_size'"):
        apply_profile_of_data(namespace, params, profiles)
    assert namespace["batch_size"] == 32  # nothing applied
