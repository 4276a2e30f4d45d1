"""The Kaggle kernel bundle (python -m tools.kaggle.kernel): metadata, valid notebook, exact lib, a fake /kaggle run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lib.submission import read_sample_ids, validate_submission
from tests.kaggle_fixtures import PROJECT_ROOT, kaggle_env, kaggle_make, run_module
from tools.kaggle.kernel import BUNDLE_TAG, lib_sources

LIB = PROJECT_ROOT / "lib"
TINY_NOTEBOOK = """\
# %% [markdown]
# A tiny notebook: on Kaggle it must import the bundled lib and write /kaggle/working/submission.csv.

# %% tags=["parameters"]
category = 3

# %%
import lib, lib.paths, lib.analysis.errors
from lib.submission import read_sample_ids, write_submission
print("lib from", lib.__file__)
print("subpackage module from", lib.analysis.errors.__file__)
assert lib.paths.on_kaggle()
data_dir = lib.paths.resolve_data_dir()
ids = read_sample_ids(data_dir / "sample-submission.csv")
write_submission(ids, [category] * len(ids), lib.paths.output_root() / "submission.csv", ids)
"""


def build(tmp_path, env, notebook, *extra) -> Path:
    out = tmp_path / "build"
    result = run_module("tools.kaggle.kernel", "build", "--notebook", str(notebook), "--out", str(out), *extra, env=env)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "07_tiny.py"
    path.write_text(TINY_NOTEBOOK)
    return path


def files_under(folder: Path, pattern: str) -> dict[str, bytes]:
    """Each file below folder that matches pattern, by its path inside folder ("analysis/errors.py"), with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob(pattern) if p.is_file()}


def fake_kaggle_tree(root: Path, ids=("1.jpg", "2.jpg")) -> Path:
    data = root / "input" / "sf-dl-car-classification"
    (data / "train").mkdir(parents=True)
    (data / "train.csv").write_text("Id,Category\n")
    (data / "sample-submission.csv").write_text("Id,Category\n" + "".join(f"{i},0\n" for i in ids))
    (root / "working").mkdir()
    return data


def test_build_writes_metadata_and_a_valid_notebook(tmp_path, tiny):
    out = build(tmp_path, kaggle_env(tmp_path), tiny)
    meta = json.loads((out / "kernel-metadata.json").read_text())
    assert meta["id"] == "tester/sf-dl-cars-07-tiny"  # KAGGLE_USERNAME=tester
    assert meta["competition_sources"] == ["sf-dl-car-classification"]
    assert (meta["enable_gpu"], meta["enable_internet"]) == (True, False)
    assert (meta["enable_tpu"], meta["machine_shape"]) == (False, "NvidiaTeslaT4")  # the default is gpu
    assert (meta["language"], meta["kernel_type"], meta["code_file"]) == ("python", "notebook", "07_tiny.ipynb")
    nb = nbformat.read(out / meta["code_file"], as_version=4)
    nbformat.validate(nb)
    assert BUNDLE_TAG in nb.cells[0].metadata["tags"]
    assert [c.metadata.get("tags") for c in nb.cells].count(["parameters"]) == 1
    assert nb.metadata["kernelspec"]["name"] == "python3"


ACCELERATOR_FIELDS = {
    "gpu": {"enable_gpu": True, "enable_tpu": False, "machine_shape": "NvidiaTeslaT4"},
    "tpu": {"enable_gpu": False, "enable_tpu": True, "machine_shape": "TpuV5E8"},
    "none": {"enable_gpu": False, "enable_tpu": False, "machine_shape": None},  # None: no machine_shape key
}


@pytest.mark.parametrize(
    "accelerator, named",
    [
        ("gpu", "(GPU T4 x2, machine_shape NvidiaTeslaT4)"),
        ("tpu", "(TPU v5e-8, machine_shape TpuV5E8)"),
        ("none", "(CPU only, no machine_shape)"),
    ],
    ids=["gpu", "tpu", "none"],
)
def test_accelerator_writes_exact_metadata_fields_and_is_named(tmp_path, tiny, accelerator, named):
    out = tmp_path / "build"
    args = ["build", "--notebook", str(tiny), "--out", str(out), "--accelerator", accelerator]
    result = run_module("tools.kaggle.kernel", *args, env=kaggle_env(tmp_path))
    assert result.returncode == 0, result.stderr
    meta = json.loads((out / "kernel-metadata.json").read_text())
    assert {key: meta.get(key, None) for key in ACCELERATOR_FIELDS[accelerator]} == ACCELERATOR_FIELDS[accelerator]
    assert ("machine_shape" in meta) == (accelerator != "none")
    assert f"tester/sf-dl-cars-07-tiny built in {out} {named}; push it with `make kaggle-push`" in result.stdout


def test_unknown_accelerator_fails_in_one_line(tmp_path, tiny):
    out = tmp_path / "build"
    args = ["build", "--notebook", str(tiny), "--out", str(out), "--accelerator", "cuda"]
    result = run_module("tools.kaggle.kernel", *args, env=kaggle_env(tmp_path))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "invalid choice: 'cuda' (choose from 'gpu', 'tpu', 'none')" in result.stderr
    assert not (out / "kernel-metadata.json").exists()


def test_kernel_id_from_parameter_and_error_without_user(tmp_path, tiny):
    out = build(tmp_path, kaggle_env(tmp_path, credentials=False), tiny, "--id", "someone/my-cars-kernel")
    assert json.loads((out / "kernel-metadata.json").read_text())["id"] == "someone/my-cars-kernel"
    result = run_module(
        "tools.kaggle.kernel",
        "build",
        "--notebook",
        str(tiny),
        "--out",
        str(tmp_path / "b2"),
        env=kaggle_env(tmp_path, credentials=False),
    )
    assert result.returncode == 1 and "KERNEL_ID=" in result.stderr and "Traceback" not in result.stderr


def test_embedded_lib_matches_the_sources_byte_for_byte(tmp_path, tiny):
    out = build(tmp_path, kaggle_env(tmp_path), tiny)
    cell = nbformat.read(out / "07_tiny.ipynb", as_version=4).cells[0].source
    root = tmp_path / "kaggle"
    # the cell imports lib.versions to check the packages: no __pycache__ beside the written sources
    env = {"CARS_KAGGLE_ROOT": str(root), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run([sys.executable, "-"], input=cell, text=True, env=env, cwd=tmp_path, check=True, capture_output=True)
    written = files_under(root / "working" / "lib", "*")
    assert written == {name: (LIB / name).read_bytes() for name in written}
    assert {"analysis/__init__.py", "analysis/errors.py"} <= written.keys()  # subpackages travel with their folders
    assert "versions.py" in written and "train.py" not in written  # the bundle's own check, and only what is imported


def test_bundle_takes_imported_subpackages_and_nothing_else(tmp_path):
    package = tmp_path / "lib"
    (package / "sub" / "deeper").mkdir(parents=True)
    (package / ".ipynb_checkpoints").mkdir()
    modules = {
        "__init__.py": "",
        "versions.py": "",
        "sub/__init__.py": "",
        "sub/deeper/__init__.py": "",
        "sub/deeper/mod.py": "def f():\r\n    from lib import helper\r\n",
        "helper.py": "# imported inside a function\r\n",
        "unused.py": "",
        ".ipynb_checkpoints/old-checkpoint.py": "",
    }
    for name, text in modules.items():
        (package / name).write_text(text)
    (tmp_path / "notebook.py").write_text("# %%\nfrom lib.sub.deeper import mod\n")
    sources = lib_sources(tmp_path / "notebook.py", root=tmp_path)
    assert sorted(sources) == [
        "__init__.py",
        "helper.py",
        "sub/__init__.py",
        "sub/deeper/__init__.py",
        "sub/deeper/mod.py",
        "versions.py",
    ]
    assert sources["helper.py"] == "# imported inside a function\r\n"  # newlines untouched


@pytest.mark.slow
def test_bundled_notebook_runs_on_a_fake_kaggle_tree(tmp_path, tiny):
    """papermill, outside the checkout: the notebook imports the bundled lib and writes working/submission.csv."""
    out = build(tmp_path, kaggle_env(tmp_path), tiny)
    root = tmp_path / "kaggle"
    data = fake_kaggle_tree(root)
    env = {**kaggle_env(tmp_path), "CARS_KAGGLE_ROOT": str(root), "PYTHONPATH": ""}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            str(out / "07_tiny.ipynb"),
            str(tmp_path / "run.ipynb"),
            "-k",
            "python3",
            "--cwd",
            str(root / "working"),
            "-p",
            "category",
            "7",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    executed = nbformat.read(tmp_path / "run.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert f"lib from {root / 'working' / 'lib' / '__init__.py'}" in printed
    assert f"subpackage module from {root / 'working' / 'lib' / 'analysis' / 'errors.py'}" in printed
    frame = validate_submission(root / "working" / "submission.csv", read_sample_ids(data / "sample-submission.csv"))
    assert frame["Category"].tolist() == [7, 7]


WEIGHTS = "tester/sf-dl-cars-keras-weights"  # the dataset a kernel attaches by default


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_push_status_output_through_the_api(tmp_path, tiny, fake_kaggle):
    kernel_output = tmp_path / "kernel-output"
    (kernel_output / "lib").mkdir(parents=True)
    (kernel_output / "submission.csv").write_text("Id,Category\n1.jpg,3\n")
    (kernel_output / "model.keras").write_bytes(b"weights")
    (kernel_output / "lib" / "train.py").write_text("# the bundle\n")
    fake_kaggle.add_dataset(WEIGHTS)
    fake_kaggle.add_kernel("tester/sf-dl-cars-07-tiny", output=kernel_output, log='[{"data": "done\\n"}]')
    env = kaggle_env(tmp_path, server=fake_kaggle)
    out = build(tmp_path, env, tiny)

    pushed = run_module("tools.kaggle.kernel", "push", "--out", str(out), env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert "tester/sf-dl-cars-07-tiny pushed as version 1: https://www.kaggle.com/code/tester/sf-dl-cars-07-tiny" in (
        pushed.stdout
    )
    [saved] = fake_kaggle.called("SaveKernel")
    meta = json.loads((out / "kernel-metadata.json").read_text())
    assert (saved.slug, saved.new_title, saved.dataset_data_sources) == (meta["id"], meta["title"], [WEIGHTS])
    assert saved.competition_data_sources == ["sf-dl-car-classification"] and saved.is_private
    assert (saved.enable_gpu, saved.enable_internet, saved.machine_shape) == (True, False, "NvidiaTeslaT4")
    sent = json.loads(saved.text)
    assert BUNDLE_TAG in sent["cells"][0]["metadata"]["tags"] and isinstance(sent["cells"][0]["source"], str)

    make = kaggle_make(tmp_path, env)  # the targets, as kaggle.mk passes KERNEL_DIR=
    state = make("kaggle-status", f"KERNEL_DIR={out}")
    assert (
        "tester/sf-dl-cars-07-tiny is COMPLETE (https://www.kaggle.com/code/tester/sf-dl-cars-07-tiny)" in state.stdout
    )
    fetched = make("kaggle-output", f"KERNEL_DIR={out}")
    assert fetched.returncode == 0, fetched.stderr
    dest = tmp_path / "fake-kaggle" / "working" / "runs" / "kaggle" / "sf-dl-cars-07-tiny"  # runs/kaggle/<slug>
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "sf-dl-cars-07-tiny.log",  # the log, where kaggle 2.2.5 writes it; no weights, no lib bundle
        "submission.csv",
    ]
    assert (dest / "submission.csv").read_text() == "Id,Category\n1.jpg,3\n"
    assert f"make submit FILE={dest / 'submission.csv'}" in fetched.stdout
    assert fake_kaggle.rpcs() == [
        "GetDatasetStatus",  # the attached weights exist: push
        "SaveKernel",
        "GetKernelSessionStatus",
        "ListKernelSessionOutput",
    ]


def test_a_kernel_is_not_pushed_without_its_weights_dataset(tmp_path, tiny, fake_kaggle):
    env = kaggle_env(tmp_path, server=fake_kaggle)
    out = build(tmp_path, env, tiny)
    refused = run_module("tools.kaggle.kernel", "push", "--out", str(out), env=env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip() == (
        f"error: tester/sf-dl-cars-07-tiny attaches the dataset {WEIGHTS}, which Kaggle does not show you: upload it "
        "with `make kaggle-weights`, or set WEIGHTS_DATASET=owner/slug (or none); nothing was pushed"
    )
    assert fake_kaggle.rpcs() == ["GetDatasetStatus"]


def test_sources_kaggle_leaves_out_are_named(tmp_path, tiny, fake_kaggle):
    """What Kaggle cannot attach comes back in the answer's invalid* lists (the fake's guess of how it refuses)."""
    env = kaggle_env(tmp_path, server=fake_kaggle)
    out = build(tmp_path, env, tiny, "--weights-dataset", "none")
    meta = json.loads((out / "kernel-metadata.json").read_text())
    (out / "kernel-metadata.json").write_text(json.dumps({**meta, "kernel_sources": ["tester/no-such-kernel"]}))
    result = run_module("tools.kaggle.kernel", "push", "--out", str(out), env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(
        "error: Kaggle took tester/sf-dl-cars-07-tiny as version 1 but left out what it could not attach "
        "(kernel_sources tester/no-such-kernel): it runs without them, so cancel it on "
        "https://www.kaggle.com/code/tester/sf-dl-cars-07-tiny"
    )


def test_push_without_build_says_what_to_run(tmp_path):
    result = run_module("tools.kaggle.kernel", "push", "--out", str(tmp_path / "nothing"), env=kaggle_env(tmp_path))
    assert result.returncode == 1 and "make kaggle-kernel" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_kaggle_push_with_tpu_pushes_tpu_metadata(tmp_path, tiny, fake_kaggle):
    """kaggle.mk as the Makefile includes it: ACCELERATOR= reaches the build, and push sends that folder."""
    fake_kaggle.add_dataset(WEIGHTS)
    env = kaggle_env(tmp_path, server=fake_kaggle)
    make = kaggle_make(tmp_path, env)

    helped = make("help").stdout
    assert "ACCELERATOR=gpu|tpu|none" in next(line for line in helped.splitlines() if line.startswith("kaggle-kernel:"))
    out = tmp_path / "kernel"
    pushed = make("kaggle-push", "ACCELERATOR=tpu", f"NB={tiny}", f"KERNEL_DIR={out}")
    assert pushed.returncode == 0, pushed.stderr
    assert "(TPU v5e-8, machine_shape TpuV5E8)" in pushed.stdout and "pushed as version 1" in pushed.stdout
    meta = json.loads((out / "kernel-metadata.json").read_text())
    assert (meta["enable_gpu"], meta["enable_tpu"], meta["machine_shape"]) == (False, True, "TpuV5E8")
    [saved] = fake_kaggle.called("SaveKernel")  # what Kaggle received: the same fields
    assert (saved.enable_gpu, saved.enable_tpu, saved.machine_shape) == (False, True, "TpuV5E8")

    refused = make("kaggle-kernel", "ACCELERATOR=cuda", f"NB={tiny}", f"KERNEL_DIR={tmp_path / 'other'}")
    assert refused.returncode != 0 and "invalid choice: 'cuda'" in refused.stderr


REAL_NOTEBOOK = PROJECT_ROOT / "notebooks" / "03_xception.py"


@pytest.mark.slow
def test_real_notebook_bundle_writes_a_submission_on_fake_kaggle_with_demo_data(tmp_path):
    """The 'Save & Run' path: 03_xception bundled, demo data as /kaggle/input, submission.csv in /kaggle/working
    (the tiny profile's settings: the path is the point, not the training)."""
    import yaml

    out = build(tmp_path, kaggle_env(tmp_path), REAL_NOTEBOOK)
    root = tmp_path / "kaggle"
    data = root / "input" / "sf-dl-car-classification"
    (root / "working").mkdir(parents=True)
    demo = run_module(
        "lib.demo", "--out", str(data), "--train-per-class", "8", "--test-per-class", "2", env=kaggle_env(tmp_path)
    )
    assert demo.returncode == 0, demo.stderr
    params = tmp_path / "params.yaml"
    profile = PROJECT_ROOT / "profiles" / "tiny" / "03_xception.yaml"
    settings = yaml.safe_load(profile.read_text()) if profile.is_file() else {}
    settings.pop("data_dir", None)  # on Kaggle the notebook finds its input by itself
    params.write_text(yaml.safe_dump(settings))
    env = {
        **kaggle_env(tmp_path),
        "CARS_KAGGLE_ROOT": str(root),
        "PYTHONPATH": "",
        "KERAS_HOME": str(tmp_path / "keras"),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            str(out / "03_xception.ipynb"),
            str(tmp_path / "run.ipynb"),
            "-k",
            "python3",
            "--cwd",
            str(root / "working"),
            "-f",
            str(params),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    frame = validate_submission(root / "working" / "submission.csv", read_sample_ids(data / "sample-submission.csv"))
    assert len(frame) == len(read_sample_ids(data / "sample-submission.csv"))


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(
    "setting, sources",
    [
        (None, ["tester/sf-dl-cars-keras-weights"]),
        ("someone/cars-weights", ["someone/cars-weights"]),
        ("none", []),
    ],
    ids=["default", "override", "none"],
)
def test_make_kaggle_kernel_attaches_the_weights_dataset(tmp_path, tiny, setting, sources):
    """Offline kernels find the ImageNet weights in the attached dataset (`make kaggle-weights` uploads it)."""
    out = tmp_path / "kernel"
    args = [f"NB={tiny}", f"KERNEL_DIR={out}", *([f"WEIGHTS_DATASET={setting}"] if setting else [])]
    result = kaggle_make(tmp_path, kaggle_env(tmp_path))("kaggle-kernel", *args)
    assert result.returncode == 0, result.stderr
    meta = json.loads((out / "kernel-metadata.json").read_text())
    assert (meta["dataset_sources"], meta["enable_internet"]) == (sources, False)


def test_weights_dataset_defaults_to_the_kernel_owner_without_a_user_and_refuses_a_bad_id(tmp_path, tiny):
    env = kaggle_env(tmp_path, credentials=False)
    out = build(tmp_path, env, tiny, "--id", "someone/my-cars-kernel")
    assert json.loads((out / "kernel-metadata.json").read_text())["dataset_sources"] == [
        "someone/sf-dl-cars-keras-weights"
    ]
    args = ["build", "--notebook", str(tiny), "--out", str(tmp_path / "b2"), "--weights-dataset", "weights"]
    refused = run_module("tools.kaggle.kernel", *args, env=kaggle_env(tmp_path))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip() == (
        "error: WEIGHTS_DATASET='weights' must look like `owner/lowercase-slug` (or `none`)"
    )
