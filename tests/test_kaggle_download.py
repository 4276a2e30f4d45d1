"""`make data` (python -m tools.kaggle.download) with the fake kaggle CLI: download, unpack, verify, failures,
secrets."""

from __future__ import annotations

import json
import zipfile

import pytest

from tests.kaggle_fixtures import SECRET_KEY, kaggle_calls, kaggle_env, make_competition_files, run_module


@pytest.fixture
def served(tmp_path):
    files = tmp_path / "served"
    layout = make_competition_files(files)
    return files, layout


def downloads(env) -> list[str]:
    return [
        c["argv"][c["argv"].index("-f") + 1] for c in kaggle_calls(env) if c["argv"][:2] == ["competitions", "download"]
    ]


def assert_one_clean_line(result, *needles):
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert SECRET_KEY not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_download_unpacks_and_verifies_then_second_run_does_nothing(tmp_path, served):
    files, layout = served
    data = tmp_path / "data"
    env = kaggle_env(tmp_path, FAKE_KAGGLE_FILES=str(files))
    first = run_module("tools.kaggle.download", "--data-dir", str(data), env=env)
    assert first.returncode == 0, first.stderr
    assert sorted(downloads(env)) == ["sample-submission.csv", "test.zip", "train.csv", "train.zip"]
    for image_id, category in layout["train"]:
        assert (data / "train" / str(category) / image_id).is_file()
    for image_id in layout["test"]:
        assert (data / "test_upload" / image_id).is_file()
    assert not list(data.glob(".*")), "temp extraction folders left behind"
    assert "3 train images and 4 test images, verified" in first.stdout.splitlines()[-1]

    # Second run: nothing fetched, no credentials needed, and it says so.
    again_env = kaggle_env(tmp_path, credentials=False, FAKE_KAGGLE_FILES=str(files))
    second = run_module("tools.kaggle.download", "--data-dir", str(data), env=again_env)
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout
    assert len(downloads(again_env)) == 4


def test_partial_zip_on_disk_is_deleted_and_fetched_again(tmp_path, served):
    files, _ = served
    data = tmp_path / "data"
    data.mkdir()
    whole = (files / "train.zip").read_bytes()
    (data / "train.zip").write_bytes(whole[: len(whole) // 2])  # an interrupted earlier download
    env = kaggle_env(tmp_path, FAKE_KAGGLE_FILES=str(files))
    result = run_module("tools.kaggle.download", "--data-dir", str(data), env=env)
    assert result.returncode == 0, result.stderr
    assert "deleting it and downloading again" in result.stdout
    assert downloads(env).count("train.zip") == 1
    assert (data / "train.zip").read_bytes() == whole
    assert (data / "train" / "0").is_dir()


def test_broken_download_is_fetched_again(tmp_path, served):
    files, _ = served
    data = tmp_path / "data"
    env = kaggle_env(tmp_path, FAKE_KAGGLE_FILES=str(files), FAKE_KAGGLE_BROKEN="test.zip:1")
    result = run_module("tools.kaggle.download", "--data-dir", str(data), env=env)
    assert result.returncode == 0, result.stderr
    assert downloads(env).count("test.zip") == 2
    assert len(list((data / "test_upload").iterdir())) == 4


def test_always_broken_zip_is_never_extracted(tmp_path, served):
    files, _ = served
    data = tmp_path / "data"
    env = kaggle_env(tmp_path, FAKE_KAGGLE_FILES=str(files), FAKE_KAGGLE_BROKEN="train.zip")
    result = run_module("tools.kaggle.download", "--data-dir", str(data), env=env)
    assert_one_clean_line(result, "train.zip arrived broken")
    assert not (data / "train").exists()
    assert not (data / "train.zip").exists()
    assert not list(data.glob(".*"))


def test_missing_image_fails_verification(tmp_path, served):
    files, layout = served
    with zipfile.ZipFile(files / "test.zip", "w") as z:  # one test image short of sample-submission.csv
        for image_id in layout["test"][:-1]:
            z.writestr(f"test_upload/{image_id}", b"jpeg")
    env = kaggle_env(tmp_path, FAKE_KAGGLE_FILES=str(files))
    result = run_module("tools.kaggle.download", "--data-dir", str(tmp_path / "data"), env=env)
    assert_one_clean_line(result, "1 of 4 test images listed in sample-submission.csv are missing", layout["test"][-1])


def test_no_credentials_names_every_way_and_calls_nothing(tmp_path, served):
    files, _ = served
    env = kaggle_env(tmp_path, credentials=False, FAKE_KAGGLE_FILES=str(files))
    result = run_module("tools.kaggle.download", "--data-dir", str(tmp_path / "data"), env=env)
    assert_one_clean_line(
        result,
        "no Kaggle credentials",
        "~/.kaggle/kaggle.json",
        "KAGGLE_CONFIG_DIR",
        "KAGGLE_USERNAME",
        "KAGGLE_KEY",
        "KAGGLE_API_TOKEN",
    )
    assert kaggle_calls(env) == []
    assert not (tmp_path / "home" / ".kaggle").exists(), "the kaggle package was imported (it creates this folder)"


@pytest.mark.parametrize(
    "fail, needle",
    [
        ("403", "accept the rules on https://www.kaggle.com/c/sf-dl-car-classification/rules"),
        ("network", "network is unreachable"),
        ("auth", "Kaggle rejected the credentials"),
    ],
)
def test_kaggle_failures_become_one_line(tmp_path, served, fail, needle):
    files, _ = served
    env = kaggle_env(tmp_path, FAKE_KAGGLE_FILES=str(files), FAKE_KAGGLE_FAIL=fail)
    result = run_module("tools.kaggle.download", "--data-dir", str(tmp_path / "data"), env=env)
    assert_one_clean_line(result, needle)
    assert len(kaggle_calls(env)) == 1


def test_kaggle_json_readable_by_others_warns_without_the_key(tmp_path, served):
    files, _ = served
    env = kaggle_env(tmp_path, credentials=False, FAKE_KAGGLE_FILES=str(files))
    config = tmp_path / "home" / ".kaggle"
    config.mkdir()
    (config / "kaggle.json").write_text(json.dumps({"username": "tester", "key": SECRET_KEY}))
    (config / "kaggle.json").chmod(0o644)
    result = run_module("tools.kaggle.download", "--data-dir", str(tmp_path / "data"), env=env)
    assert result.returncode == 0, result.stderr
    assert f"chmod 600 {config / 'kaggle.json'}" in result.stderr
    assert SECRET_KEY not in result.stdout + result.stderr

    (config / "kaggle.json").chmod(0o600)
    quiet = run_module("tools.kaggle.download", "--data-dir", str(tmp_path / "data2"), env=env)
    assert quiet.returncode == 0 and "chmod" not in quiet.stderr


def test_competition_bundle_already_downloaded_is_used_without_kaggle(tmp_path, served):
    """`kaggle competitions download -c ...` run by hand leaves <competition>.zip: unpack it, call nothing."""
    files, layout = served
    data = tmp_path / "data"
    data.mkdir()
    with zipfile.ZipFile(data / "sf-dl-car-classification.zip", "w") as bundle:
        for name in ("train.csv", "sample-submission.csv", "train.zip", "test.zip"):
            bundle.write(files / name, name)
    env = kaggle_env(tmp_path, credentials=False)
    result = run_module("tools.kaggle.download", "--data-dir", str(data), env=env)
    assert result.returncode == 0, result.stderr
    assert kaggle_calls(env) == []
    assert "3 train images and 4 test images, verified" in result.stdout
