"""Data folder resolution, profiles and output locations."""

from pathlib import Path

import pytest

from lib import paths


def test_explicit_data_dir_wins(tmp_path):
    assert paths.resolve_data_dir(tmp_path) == tmp_path.resolve()


def test_falls_back_to_demo_without_real_data(monkeypatch, tmp_path):
    monkeypatch.setattr(paths, "DATA_ROOT", tmp_path / "data")
    monkeypatch.setenv("CARS_KAGGLE_ROOT", str(tmp_path / "no-kaggle"))
    assert paths.resolve_data_dir(None) == paths.DEMO_DIR


def test_real_data_in_data_dir_is_preferred(monkeypatch, tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train.csv").write_text("Id,Category\n")
    monkeypatch.setattr(paths, "DATA_ROOT", tmp_path)
    monkeypatch.setenv("CARS_KAGGLE_ROOT", str(tmp_path / "no-kaggle"))
    assert paths.resolve_data_dir("") == tmp_path


def test_kaggle_paths(monkeypatch, tmp_path):
    competition = tmp_path / "input" / "sf-dl-car-classification"
    competition.mkdir(parents=True)
    (competition / "train.csv").write_text("Id,Category\n")
    (competition / "train.zip").write_bytes(b"")
    (tmp_path / "working").mkdir()
    monkeypatch.setenv("CARS_KAGGLE_ROOT", str(tmp_path))
    monkeypatch.delenv("CARS_OUTPUT_ROOT", raising=False)
    assert paths.on_kaggle()
    assert paths.resolve_data_dir() == competition
    assert paths.runs_dir() == tmp_path / "working" / "runs"
    assert paths.submissions_dir() == tmp_path / "working" / "submissions"
    # Unpacked zips stay out of /kaggle/working, which becomes the kernel's output (and 05's input).
    assert not paths.scratch_root().is_relative_to(tmp_path / "working")
    monkeypatch.setenv("CARS_KAGGLE_ROOT", str(tmp_path / "no-kaggle"))
    monkeypatch.setenv("CARS_OUTPUT_ROOT", str(tmp_path / "out"))
    assert paths.scratch_root() == tmp_path / "out"


def test_profile_follows_the_data(tiny_demo, tmp_path):
    assert paths.default_profile(tiny_demo) == "demo"
    assert paths.default_profile(tmp_path) == "full"


def test_run_dir_layout(monkeypatch, tmp_path):
    monkeypatch.setenv("CARS_OUTPUT_ROOT", str(tmp_path))
    assert paths.run_dir("demo", "03_xception") == tmp_path / "runs" / "demo" / "03_xception"
    assert Path(paths.keras_home()).name  # never empty


# ---------------------------------------------------------------- searching Kaggle's input

DOCS, NOTEBOOKS_2026 = "input/sf-dl-cars-03-xception", "input/notebooks/tester/sf-dl-cars-03-xception"
COMPETITION_LAYOUTS = {
    "docs": "input/sf-dl-car-classification",
    "2026-competitions": "input/competitions/sf-dl-car-classification",
    "2026-dataset-mirror": "input/datasets/someone/sf-dl-car-classification",
    "files-in-input": "input",
}


@pytest.fixture
def kaggle(monkeypatch, tmp_path):
    """An empty fake /kaggle (input/ and working/); outputs go to its working/."""
    root = tmp_path / "kaggle"
    (root / "input").mkdir(parents=True)
    (root / "working").mkdir()
    monkeypatch.setenv("CARS_KAGGLE_ROOT", str(root))
    monkeypatch.delenv("CARS_OUTPUT_ROOT", raising=False)
    return root


def competition(folder: Path) -> Path:
    """The competition layout with one photo in each image folder."""
    (folder / "train" / "0").mkdir(parents=True)
    (folder / "test_upload").mkdir()
    (folder / "train" / "0" / "1.jpg").write_bytes(b"jpg")
    (folder / "test_upload" / "2.jpg").write_bytes(b"jpg")
    (folder / "train.csv").write_text("Id,Category\n1.jpg,0\n")
    (folder / "sample-submission.csv").write_text("Id,Category\n2.jpg,0\n")
    return folder


def model_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "probs_val.csv").write_text("Id,Category\n")
    return folder


@pytest.mark.parametrize("layout", COMPETITION_LAYOUTS.values(), ids=COMPETITION_LAYOUTS.keys())
def test_competition_folder_is_found_in_every_mount_layout(kaggle, layout):
    found = competition(kaggle / layout)
    model_run(kaggle / DOCS / "runs" / "full" / "03_xception")  # another attached input beside it
    assert paths.kaggle_input_dir() == found
    assert paths.resolve_data_dir() == found


def test_the_folder_named_like_the_competition_wins_over_a_kernel_output_copy(kaggle):
    competition(kaggle / DOCS / "data" / "sf-dl-car-classification-1a2b3c4d")  # 03's extracted copy, at depth 3
    mounted = competition(kaggle / "input" / "competitions" / "sf-dl-car-classification")
    assert paths.kaggle_input_dir() == mounted


def test_no_competition_layout_under_the_input_is_none(kaggle):
    (kaggle / "input" / "sf-dl-car-classification").mkdir()  # attached, but holds no train.csv
    assert paths.kaggle_input_dir() is None


def test_the_search_never_enters_image_folders(kaggle):
    data = competition(kaggle / "input" / "competitions" / "sf-dl-car-classification")
    (kaggle / "input" / "other" / "train").mkdir(parents=True)
    (kaggle / "input" / "other" / "train" / "1.jpg").write_bytes(b"jpg")  # an image folder without train.csv
    assert paths.find_kaggle_input("sample-submission.csv") == [data / "sample-submission.csv"]
    assert paths.find_kaggle_input("1.jpg") == [] and paths.find_kaggle_input("2.jpg") == []


def test_find_kaggle_input_is_sorted_exact_and_each_file_once(kaggle):
    weights = "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
    for folder in ("datasets/b/w", "a/deep/er", "datasets/a/w"):
        (kaggle / "input" / folder).mkdir(parents=True)
        (kaggle / "input" / folder / weights).write_bytes(b"h5")
    (kaggle / "input" / "a" / f"old-{weights}").write_bytes(b"h5")  # not the exact name
    (kaggle / "input" / "w-link").symlink_to(kaggle / "input" / "datasets" / "b" / "w")  # a second mount path
    expected = [kaggle / "input" / f / weights for f in ("a/deep/er", "datasets/a/w", "datasets/b/w")]
    assert paths.find_kaggle_input(weights) == expected
    assert paths.find_kaggle_input(weights, max_depth=2) == [kaggle / "input" / "w-link" / weights]  # others: 3 deep


def test_find_kaggle_input_is_empty_outside_kaggle(monkeypatch, tmp_path):
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "probs_val.csv").write_text("")
    monkeypatch.setenv("CARS_KAGGLE_ROOT", str(tmp_path))  # no working/: not a kernel
    assert paths.find_kaggle_input("probs_val.csv") == []


@pytest.mark.parametrize("mount", [DOCS, NOTEBOOKS_2026], ids=["docs", "2026-notebooks"])
def test_a_run_is_found_in_an_attached_kernel_output(kaggle, mount):
    competition(kaggle / "input" / "competitions" / "sf-dl-car-classification")
    wanted = model_run(kaggle / mount / "runs" / "full" / "03_xception")
    model_run(kaggle / mount.replace("03-xception", "04-efficientnetb7") / "runs" / "full" / "04_efficientnetb7")
    assert paths.find_run_dir("full", "03_xception") == wanted


def test_the_local_run_comes_first(kaggle):
    model_run(kaggle / DOCS / "runs" / "full" / "03_xception")
    local = model_run(kaggle / "working" / "runs" / "full" / "03_xception")
    assert paths.find_run_dir("full", "03_xception") == local


def test_the_asked_profile_is_preferred(kaggle):
    model_run(kaggle / DOCS / "runs" / "demo" / "03_xception")
    wanted = model_run(kaggle / NOTEBOOKS_2026 / "runs" / "full" / "03_xception")
    assert paths.find_run_dir("full", "03_xception") == wanted


def test_the_only_other_profile_is_taken_and_named(kaggle, capsys):
    other = model_run(kaggle / NOTEBOOKS_2026 / "runs" / "tiny" / "03_xception")
    assert paths.find_run_dir("full", "03_xception") == other
    assert "03_xception: no run for profile full; taking the only one found, profile tiny." in capsys.readouterr().out


def test_two_runs_of_the_profile_is_one_error_listing_both(kaggle):
    first = model_run(kaggle / DOCS / "runs" / "full" / "03_xception")
    second = model_run(kaggle / NOTEBOOKS_2026 / "runs" / "full" / "03_xception")
    with pytest.raises(paths.RunNotFoundError) as caught:
        paths.find_run_dir("full", "03_xception")
    message = str(caught.value)
    assert f"run 03_xception (profile full) is in 2 places under {kaggle / 'input'}: {second}, {first}" in message
    assert message.endswith("attach only one kernel output that holds it.") and "\n" not in message


def test_runs_of_two_other_profiles_ask_which(kaggle):
    model_run(kaggle / DOCS / "runs" / "demo" / "03_xception")
    model_run(kaggle / DOCS / "runs" / "tiny" / "03_xception")
    with pytest.raises(paths.RunNotFoundError, match=r"or set profile to the one you mean \(demo, tiny\)\.$"):
        paths.find_run_dir("full", "03_xception")


def test_a_missing_run_on_kaggle_names_every_place_and_the_fix(kaggle):
    model_run(kaggle / DOCS / "runs" / "full" / "04_efficientnetb7")  # another model's run is no match
    (kaggle / DOCS / "runs" / "full" / "03_xception").mkdir()  # the folder without probs_val.csv is no run
    with pytest.raises(paths.RunNotFoundError) as caught:
        paths.find_run_dir("full", "03_xception")
    message, local = str(caught.value), kaggle / "working" / "runs" / "full" / "03_xception" / "probs_val.csv"
    assert message.startswith(
        f"no run 03_xception (profile full): no {local}"
        f", and no folder 03_xception/ holding probs_val.csv under {kaggle / 'input'} (searched 8 levels deep)"
    )
    assert "locally `make 03_xception` (or `make run-all`)" in message
    assert "`make kaggle-run-all` attaches every model run's kernel through kernel_sources" in message
    assert isinstance(caught.value, ValueError) and "\n" not in message


def test_a_missing_run_locally_names_its_folder_and_the_make_target(monkeypatch, tmp_path):
    monkeypatch.setenv("CARS_OUTPUT_ROOT", str(tmp_path))
    monkeypatch.setenv("CARS_KAGGLE_ROOT", str(tmp_path / "no-kaggle"))
    with pytest.raises(paths.RunNotFoundError) as caught:
        paths.find_run_dir("demo", "04_efficientnetb7")
    missing = tmp_path / "runs" / "demo" / "04_efficientnetb7" / "probs_val.csv"
    assert str(caught.value) == (
        f"no run 04_efficientnetb7 (profile demo): {missing} is missing; "
        "run it first: locally `make 04_efficientnetb7` (or `make run-all`)."
    )


def test_the_series_is_the_six_numbered_notebooks_in_order():
    assert paths.series_notebooks() == [
        "01_eda",
        "02_augmentation_preview",
        "03_xception",
        "04_efficientnetb7",
        "05_ensemble",
        "06_error_analysis",
    ]


def test_every_run_of_the_series_in_order_and_the_notebook_each_runs():
    """A model run under another name runs its notebook right after that notebook's own run; make's run-all runs
    the same list (`make series`)."""
    import subprocess

    runs = paths.series_runs()
    assert runs == [
        "01_eda",
        "02_augmentation_preview",
        "03_xception",
        "03_convnext",
        "04_efficientnetb7",
        "05_ensemble",
        "06_error_analysis",
    ]
    assert list(paths.MODEL_RUNS) == ["03_xception", "03_convnext", "04_efficientnetb7"]  # the blend's order
    assert [run for run in runs if run in paths.MODEL_RUNS] == list(paths.MODEL_RUNS)
    assert paths.notebook_of("03_convnext") == "03_xception" and paths.notebook_of("05_ensemble") == "05_ensemble"
    done = subprocess.run(["make", "-s", "--no-print-directory", "series"], cwd=paths.PROJECT_ROOT,
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.split() == runs
