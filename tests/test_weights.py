"""ImageNet weights without a network: found by file name, `make weights`, `make kaggle-weights` through the real
kaggle client and the fake Kaggle server."""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.error
from pathlib import Path

import pytest

from lib.backbones import WEIGHTS_DATASET_SLUG, backbone_spec, find_weights
from tests.kaggle_fixtures import SECRET_KEY, kaggle_env, kaggle_make

XCEPTION_FILE = "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
B7_FILE = "efficientnetb7_notop.h5"
CONVNEXT_FILE = "convnext_base_notop.h5"  # the full profile's 03_convnext
SMALL = "mobilenetv3small"
SMALL_FILE = "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
# Any download goes through this proxy, where nothing listens: refused at once, never a hang or a real request.
NO_NETWORK = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Empty $KERAS_HOME, $WEIGHTS_DIR and Kaggle root; returns their weight folders."""
    folders = {
        "cache": tmp_path / "keras" / "models",
        "weights_dir": tmp_path / "weights",
        "kaggle_input": tmp_path / "kaggle" / "input",
    }
    for folder in folders.values():
        folder.mkdir(parents=True)
    (tmp_path / "kaggle" / "working").mkdir()  # a kernel has both, and lib.paths.on_kaggle looks for both
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("WEIGHTS_DIR", str(folders["weights_dir"]))
    monkeypatch.setenv("CARS_KAGGLE_ROOT", str(tmp_path / "kaggle"))
    return folders


@pytest.fixture
def no_download(monkeypatch):
    """Fail the test on any attempt to download (Keras fetches through file_utils.urlretrieve)."""

    def refuse(url, *args, **kwargs):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", refuse)


def place(path: Path, data: bytes = b"h5") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def save_legacy_weights(model, path: Path) -> Path:
    """The format of the keras.applications weight files: a legacy HDF5 weights group (what Keras 2's
    save_weights wrote), read back by load_weights for a name ending in .h5 but not .weights.h5."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    return path


def assert_same_weights(loaded, saved) -> None:
    import numpy as np

    assert len(loaded.weights) == len(saved.weights) > 0
    for a, b in zip(loaded.weights, saved.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ---------------------------------------------------------------- found by file name


def test_cache_comes_first_then_weights_dir_then_any_attached_dataset_in_sorted_order(places):
    assert find_weights("xception") is None
    layouts = [
        places["kaggle_input"] / "zz-weights" / XCEPTION_FILE,  # /kaggle/input/<slug>/
        places["kaggle_input"]
        / "datasets"
        / "someone"
        / "cars-weights"
        / XCEPTION_FILE,  # .../datasets/<owner>/<slug>/
    ]
    place(layouts[0])
    assert find_weights("xception") == layouts[0]
    place(layouts[1])
    assert find_weights("xception") == layouts[1]  # "datasets/..." sorts before "zz-weights/..."
    place(places["weights_dir"] / XCEPTION_FILE)
    assert find_weights("xception") == places["weights_dir"] / XCEPTION_FILE
    place(places["cache"] / XCEPTION_FILE)
    assert find_weights("xception") == places["cache"] / XCEPTION_FILE
    assert find_weights("efficientnetb7") is None  # by exact file name: the xception file is not B7's


def test_a_folder_named_like_the_file_is_not_the_file(places):
    (places["kaggle_input"] / "odd" / XCEPTION_FILE).mkdir(parents=True)
    assert find_weights("xception") is None


@pytest.fixture(scope="module")
def random_xception(tmp_path_factory):
    """A randomly initialised Xception without its top and its weights in the format of Keras's notop file."""
    import keras

    model = keras.applications.Xception(include_top=False, weights=None, input_shape=(None, None, 3))
    return model, save_legacy_weights(model, tmp_path_factory.mktemp("xception") / XCEPTION_FILE)


@pytest.mark.parametrize(
    "layout",
    [("keras-weights",), ("datasets", "someone", "sf-dl-cars-keras-weights")],
    ids=["input-slug", "input-datasets-owner-slug"],
)
def test_xception_weights_in_an_attached_dataset_load_with_no_network(places, no_download, random_xception, layout):
    from lib.models import backbone_of, build_model

    saved, weights_file = random_xception
    attached = places["kaggle_input"].joinpath(*layout) / backbone_spec("xception").notop_file
    attached.parent.mkdir(parents=True)
    shutil.copyfile(weights_file, attached)

    model = build_model("xception", weights="imagenet", dense_units=0)
    assert_same_weights(backbone_of(model), saved)
    assert not any(places["cache"].iterdir())  # loaded where it lies, not copied into the cache


def test_weights_dir_is_loaded_where_it_lies(places, no_download):
    import keras

    from lib.models import load_backbone

    saved = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(None, None, 3))
    save_legacy_weights(saved, places["weights_dir"] / SMALL_FILE)
    assert_same_weights(load_backbone(SMALL, "imagenet"), saved)
    assert not any(places["cache"].iterdir())


def test_a_broken_found_file_is_named_in_one_line(places, no_download):
    from lib.models import WeightsUnavailableError, load_backbone

    broken = place(places["kaggle_input"] / "weights" / SMALL_FILE, b"not hdf5")
    with pytest.raises(WeightsUnavailableError) as error:
        load_backbone(SMALL, "imagenet")
    message = str(error.value)
    assert message.startswith(f"{broken} is not a loadable MobileNetV3Small weight file (")
    assert message.endswith("); delete or replace it") and "\n" not in message


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined")  # MobileNetV3 on any image size
def test_missing_weights_error_names_the_file_every_place_and_both_fixes(places, monkeypatch):
    """No file anywhere and no network: one line, never a hang."""
    from lib.models import WeightsUnavailableError, load_backbone

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", offline)
    with pytest.raises(WeightsUnavailableError) as error:
        load_backbone(SMALL, "imagenet", download_timeout=5)
    assert str(error.value) == (
        f"no ImageNet weights for MobileNetV3Small: `{SMALL_FILE}` is not in "
        f"$KERAS_HOME/models ({places['cache']}), $WEIGHTS_DIR ({places['weights_dir']}), "
        f"every folder under {places['kaggle_input']}, "
        "and downloading it failed ([Errno -3] Temporary failure in name resolution). "
        "Fix: run `make weights` on a machine with internet; for a Kaggle kernel with the internet off, "
        f"run `make kaggle-weights` once and attach the dataset <your user>/{WEIGHTS_DATASET_SLUG} "
        "(`make kaggle-kernel` attaches it). Or train from scratch with weights=None."
    )
    assert error.value.offline and error.value.reason == "[Errno -3] Temporary failure in name resolution"


def test_missing_weights_error_says_when_places_are_unset_or_absent(tmp_path, monkeypatch):
    from lib.backbones import searched_places

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("CARS_KAGGLE_ROOT", str(tmp_path / "no-kaggle"))
    assert searched_places() == (
        f"$KERAS_HOME/models ({tmp_path / 'keras' / 'models'}), $WEIGHTS_DIR (not set), "
        f"every folder under {tmp_path / 'no-kaggle' / 'input'} (absent)"
    )


# ---------------------------------------------------------------- which backbones


@pytest.mark.parametrize(
    "name, file_name",
    [("efficientnetv2b0", "efficientnetv2-b0_notop.h5"), ("convnext_tiny", "convnext_tiny_notop.h5")],
)
def test_the_new_backbones_load_weights_found_by_their_keras_file_name(places, no_download, name, file_name):
    """EfficientNetV2 and ConvNeXt weights under the names keras.applications downloads them by, attached as a
    Kaggle dataset, load with no network (random weights saved in the format of the notop files)."""
    import keras

    from lib.models import backbone_of, build_model

    spec = backbone_spec(name)
    assert spec.notop_file == file_name and find_weights(name) is None
    saved = getattr(keras.applications, spec.builder)(include_top=False, weights=None, input_shape=(None, None, 3))
    save_legacy_weights(saved, places["kaggle_input"] / "sf-dl-cars-keras-weights" / file_name)
    assert find_weights(name) == places["kaggle_input"] / "sf-dl-cars-keras-weights" / file_name
    assert_same_weights(backbone_of(build_model(name, weights="imagenet", dense_units=0)), saved)


def test_needed_backbones_are_read_from_the_notebooks_and_profiles():
    from tools.kaggle.weights import needed_backbones

    assert needed_backbones() == ["xception", "convnext_base", "efficientnetb7"]  # 03_convnext: its full profile


def test_a_profile_may_change_the_backbone_and_weights_none_needs_nothing(tmp_path):
    from tools.kaggle.weights import needed_backbones

    notebooks, profiles = tmp_path / "notebooks", tmp_path / "profiles"
    (notebooks).mkdir()
    (notebooks / "03_model.py").write_text(
        '# %% tags=["parameters"]\nbackbone = "xception"\nweights = "imagenet"  # or None\nstages = [dict(a=1)]\n'
    )
    (notebooks / "01_eda.py").write_text(
        '# %% tags=["parameters"]\nbackbone = "efficientnetb3"\nweights = "imagenet"\n'
    )
    for profile, text in {
        "fast": "backbone: mobilenetv3small\n",
        "scratch": "backbone: efficientnetb0\nweights: null\n",
    }.items():
        (profiles / profile).mkdir(parents=True)
        (profiles / profile / "03_model.yaml").write_text(text)
    assert needed_backbones(notebooks, profiles, ["03_model"]) == ["xception", "mobilenetv3small"]
    # A run of 03_model under another name counts its own profiles only, not the notebook's defaults alone.
    (profiles / "fast" / "03_other.yaml").write_text("backbone: convnext_small\n")
    runs = {"03_other": "03_model"}
    assert needed_backbones(notebooks, profiles, runs) == ["convnext_small"]

    (profiles / "fast" / "03_model.yaml").write_text("backbone: resnet9000\n")
    from tools.kaggle.weights import WeightsError

    with pytest.raises(WeightsError, match=r"^03_model.py or its profiles: Unknown backbone 'resnet9000'"):
        needed_backbones(notebooks, profiles, ["03_model"])


# ---------------------------------------------------------------- make weights


def weights_env(tmp_path, server=None, **extra) -> dict:
    env = kaggle_env(tmp_path, server=server, KERAS_HOME=str(tmp_path / "keras"))
    env.pop("WEIGHTS_DIR", None)  # a developer's own setting stays out
    return {**env, **extra}


def error_lines(result) -> list[str]:
    assert "Traceback" not in result.stdout + result.stderr
    assert SECRET_KEY not in result.stdout + result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@needs_make
def test_make_weights_offline_says_so_in_one_line(tmp_path):
    env = weights_env(tmp_path, **NO_NETWORK)
    result = kaggle_make(tmp_path, env)("weights")
    assert result.returncode != 0
    assert error_lines(result) == [
        f"error: the network is unreachable: could not download `{XCEPTION_FILE}` ([Errno 111] Connection refused); "
        "run `make weights` again with internet, or copy the file into "
        f"{tmp_path / 'keras' / 'models'} (or into a folder named by WEIGHTS_DIR)"
    ]
    assert not (tmp_path / "keras" / "models" / XCEPTION_FILE).exists()


@needs_make
def test_make_weights_skips_files_already_present(tmp_path):
    env = weights_env(tmp_path, **NO_NETWORK)
    cached = place(tmp_path / "keras" / "models" / XCEPTION_FILE)
    elsewhere = place(tmp_path / "weights" / B7_FILE)
    convnext = place(tmp_path / "weights" / CONVNEXT_FILE)
    env["WEIGHTS_DIR"] = str(tmp_path / "weights")
    result = kaggle_make(tmp_path, env)("weights")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"xception: already present at {cached}; skipped",
        f"convnext_base: already present at {convnext}; skipped",
        f"efficientnetb7: already present at {elsewhere}; skipped",
        "ImageNet weights ready for xception, convnext_base, efficientnetb7; for Kaggle kernels without internet: "
        "`make kaggle-weights`",
    ]


def test_a_download_that_fails_kerass_hash_check_is_refused_and_removed(tmp_path):
    """The file Keras fetched is checked against the hash Keras ships; a wrong one does not stay in the cache."""
    import subprocess

    junk = place(tmp_path / "junk.h5", b"not the ImageNet weights")
    script = (
        "import shutil, sys\n"
        "import keras.src.utils.file_utils as file_utils\n"
        f"file_utils.urlretrieve = lambda url, target, hook=None: shutil.copyfile({str(junk)!r}, target)\n"
        "from tools.kaggle.weights import main\n"
        "sys.exit(main(['download']))\n"
    )
    env = weights_env(tmp_path, **NO_NETWORK)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    [line] = error_lines(result)
    assert line == (
        f"error: the download failed: could not download `{XCEPTION_FILE}` (Incomplete or corrupted file detected. "
        "The auto file hash does not match the provided value of b0042744bf5b25fce3cb969f33bebb97.); "  # Keras's words
        "run `make weights` again with internet, or copy the file into "
        f"{tmp_path / 'keras' / 'models'} (or into a folder named by WEIGHTS_DIR)"
    )
    assert not (tmp_path / "keras" / "models" / XCEPTION_FILE).exists()


# ---------------------------------------------------------------- make kaggle-weights


@pytest.fixture
def local_weights(tmp_path) -> dict:
    """Stand-in weight files: xception in $KERAS_HOME/models, ConvNeXt-Base and B7 in $WEIGHTS_DIR (both places
    count)."""
    return {
        XCEPTION_FILE: place(tmp_path / "keras" / "models" / XCEPTION_FILE, b"x" * 1000),
        CONVNEXT_FILE: place(tmp_path / "weights" / CONVNEXT_FILE, b"c" * 1500),
        B7_FILE: place(tmp_path / "weights" / B7_FILE, b"b" * 2000),
    }


def upload_env(tmp_path, server=None, **extra) -> dict:
    return weights_env(tmp_path, server, WEIGHTS_DIR=str(tmp_path / "weights"), **extra)


@needs_make
def test_make_kaggle_weights_creates_the_dataset_then_adds_versions(tmp_path, local_weights, fake_kaggle):
    stage = tmp_path / "stage"
    env = upload_env(tmp_path, fake_kaggle)
    first = kaggle_make(tmp_path, env)("kaggle-weights", f"WEIGHTS_STAGE_DIR={stage}")
    assert first.returncode == 0, first.stderr
    dataset = f"tester/{WEIGHTS_DATASET_SLUG}"
    assert first.stdout.strip().splitlines()[-1] == (
        f"3 weight files (0 MB) created as a new private dataset {dataset}; `make kaggle-kernel` attaches it. "
        f"Kaggle processes it before a kernel can attach it: https://www.kaggle.com/datasets/{dataset}"
    )
    assert fake_kaggle.rpcs() == ["GetDatasetStatus", *["StartBlobUpload"] * 3, "CreateDataset"]
    [created] = fake_kaggle.datasets[dataset]
    assert sorted(created["files"]) == sorted([XCEPTION_FILE, CONVNEXT_FILE, B7_FILE])
    request = created["request"]
    assert (request.owner_slug, request.slug, request.title, request.license_name, request.is_private) == (
        "tester",
        WEIGHTS_DATASET_SLUG,
        "Keras ImageNet weights for sf-dl-cars",
        "other",
        True,
    )
    assert 20 <= len(request.subtitle) <= 80 and all(name in request.description for name in local_weights)
    uploads = fake_kaggle.called("StartBlobUpload")
    assert sorted((u.name, u.content_length) for u in uploads) == [
        (CONVNEXT_FILE, 1500),
        (B7_FILE, 2000),
        (XCEPTION_FILE, 1000),
    ]
    for name, source in local_weights.items():  # hard links: no copy of hundreds of MB
        assert (stage / name).stat().st_ino == source.stat().st_ino

    second = kaggle_make(tmp_path, env)("kaggle-weights", f"WEIGHTS_STAGE_DIR={stage}", "MSG=B7 retrained")
    assert second.returncode == 0, second.stderr
    assert f"uploaded as a new version {dataset}" in second.stdout
    assert fake_kaggle.rpcs()[5:] == ["GetDatasetStatus", *["StartBlobUpload"] * 3, "CreateDatasetVersion"]
    version = fake_kaggle.datasets[dataset][1]
    assert version["notes"] == "B7 retrained" and sorted(version["files"]) == sorted(local_weights)


@needs_make
def test_make_kaggle_weights_to_another_dataset(tmp_path, local_weights, fake_kaggle):
    env = upload_env(tmp_path, fake_kaggle)
    stage = tmp_path / "stage"
    place(stage / "stale_notop.h5")  # from an earlier upload: must not travel again
    result = kaggle_make(tmp_path, env)(
        "kaggle-weights", "WEIGHTS_DATASET=team/cars-weights", f"WEIGHTS_STAGE_DIR={stage}"
    )
    assert result.returncode == 0, result.stderr
    assert "`make kaggle-kernel WEIGHTS_DATASET=team/cars-weights` attaches it" in result.stdout
    [created] = fake_kaggle.datasets["team/cars-weights"]
    assert "stale_notop.h5" not in created["files"] and len(created["files"]) == len(local_weights)


@needs_make
def test_a_dataset_kaggle_refuses_is_one_line(tmp_path, local_weights, fake_kaggle):
    """The answer's `error` (how the fake guesses Kaggle refuses a taken slug)."""
    env = upload_env(tmp_path, fake_kaggle)
    fake_kaggle.fail(404, times=1, rpc="GetDatasetStatus")  # it looks absent, but the slug is taken
    fake_kaggle.add_dataset(f"tester/{WEIGHTS_DATASET_SLUG}")
    result = kaggle_make(tmp_path, env)("kaggle-weights", f"WEIGHTS_STAGE_DIR={tmp_path / 'stage'}")
    assert result.returncode != 0
    assert error_lines(result) == [
        f"error: Kaggle refused the dataset tester/{WEIGHTS_DATASET_SLUG}: The requested slug "
        f'"{WEIGHTS_DATASET_SLUG}" is already in use by a dataset.'
    ]


def test_staging_copies_when_hard_links_fail(tmp_path, monkeypatch):
    from tools.kaggle.weights import METADATA_FILE, stage

    source = place(tmp_path / "src" / B7_FILE, b"weights")

    def no_links(*args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    out = stage([source], "tester/cars-weights", tmp_path / "stage")
    assert (out / B7_FILE).read_bytes() == b"weights" and (out / B7_FILE).stat().st_ino != source.stat().st_ino
    assert json.loads((out / METADATA_FILE).read_text())["id"] == "tester/cars-weights"


@needs_make
@pytest.mark.parametrize(
    "setting, expected",
    [
        ("", f"error: no local ImageNet weights for xception (`{XCEPTION_FILE}`): run `make weights` first"),
        (
            "WEIGHTS_DATASET=none",
            "error: WEIGHTS_DATASET=none names no dataset to upload to: set WEIGHTS_DATASET=owner/slug",
        ),
        (
            "WEIGHTS_DATASET=not-an-id",
            "error: WEIGHTS_DATASET='not-an-id' must look like `owner/lowercase-slug` (or `none`)",
        ),
        ("no server", "error: the network is unreachable: cannot connect to localhost (check the connection or proxy)"),
    ],
    ids=["missing-weights", "none", "bad-id", "network"],
)
def test_make_kaggle_weights_failures_are_one_line(tmp_path, local_weights, fake_kaggle, setting, expected):
    if setting == "":
        local_weights[XCEPTION_FILE].unlink()
    env = upload_env(tmp_path, None if setting == "no server" else fake_kaggle)
    args = [setting] if setting.startswith("WEIGHTS_") else []
    result = kaggle_make(tmp_path, env)("kaggle-weights", f"WEIGHTS_STAGE_DIR={tmp_path / 'stage'}", *args)
    assert result.returncode != 0
    assert error_lines(result) == [expected]
    assert fake_kaggle.calls == []


@needs_make
def test_make_kaggle_weights_without_credentials(tmp_path, local_weights, fake_kaggle):
    env = upload_env(tmp_path, fake_kaggle)
    for key in ("KAGGLE_USERNAME", "KAGGLE_KEY"):
        env.pop(key)
    result = kaggle_make(tmp_path, env)("kaggle-weights", f"WEIGHTS_STAGE_DIR={tmp_path / 'stage'}")
    [line] = error_lines(result)
    assert result.returncode != 0 and line.startswith("error: no Kaggle credentials found: provide one of")
    assert fake_kaggle.calls == []
