"""`make data` (python -m tools.kaggle.download) through the real kaggle client and the fake Kaggle server: download,
unpack, verify, failures, secrets."""

from __future__ import annotations

import json
import zipfile

import pytest

from tests.kaggle_fixtures import SECRET_KEY, kaggle_env, make_competition_files, run_module, serve_competition


@pytest.fixture
def served(tmp_path, fake_kaggle):
    """The fake Kaggle serving a miniature competition; train.csv comes wrapped in train.csv.zip, as Kaggle serves
    a large file."""
    files = tmp_path / "served"
    layout = make_competition_files(files)
    serve_competition(fake_kaggle, files)
    fake_kaggle.zipped.add("train.csv")
    return files, layout


def assert_one_clean_line(result, *needles):
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert SECRET_KEY not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_download_unpacks_and_verifies_then_second_run_does_nothing(tmp_path, served, fake_kaggle):
    files, layout = served
    data = tmp_path / "data"
    env = kaggle_env(tmp_path, server=fake_kaggle)
    first = run_module("tools.kaggle.download", "--data-dir", str(data), env=env)
    assert first.returncode == 0, first.stderr
    assert fake_kaggle.rpcs() == ["ListDataFiles"] + ["DownloadDataFile"] * 4
    assert sorted(fake_kaggle.downloads) == ["sample-submission.csv", "test.zip", "train.csv", "train.zip"]
    assert (data / "train.csv").read_bytes() == (files / "train.csv").read_bytes()  # taken out of train.csv.zip
    assert not (data / "train.csv.zip").exists()
    for image_id, category in layout["train"]:
        assert (data / "train" / str(category) / image_id).is_file()
    for image_id in layout["test"]:
        assert (data / "test_upload" / image_id).is_file()
    assert not list(data.glob(".*")), "temp download or extraction folders left behind"
    assert "3 train images and 4 test images, verified" in first.stdout.splitlines()[-1]
    assert not (tmp_path / "home" / ".kaggle").exists(), "the kaggle package was imported (it creates this folder)"

    # Second run: nothing fetched, no credentials needed, and it says so.
    again_env = kaggle_env(tmp_path, credentials=False, server=fake_kaggle)
    second = run_module("tools.kaggle.download", "--data-dir", str(data), env=again_env)
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout
    assert len(fake_kaggle.calls) == 5


def test_partial_zip_on_disk_is_deleted_and_fetched_again(tmp_path, served, fake_kaggle):
    files, _ = served
    data = tmp_path / "data"
    data.mkdir()
    whole = (files / "train.zip").read_bytes()
    (data / "train.zip").write_bytes(whole[: len(whole) // 2])  # an interrupted earlier download
    result = run_module("tools.kaggle.download", "--data-dir", str(data), env=kaggle_env(tmp_path, server=fake_kaggle))
    assert result.returncode == 0, result.stderr
    assert "deleting it and downloading again" in result.stdout
    assert fake_kaggle.downloads.count("train.zip") == 1
    assert (data / "train.zip").read_bytes() == whole
    assert (data / "train" / "0").is_dir()


def test_broken_download_is_fetched_again(tmp_path, served, fake_kaggle):
    fake_kaggle.broken["test.zip"] = 1
    data = tmp_path / "data"
    result = run_module("tools.kaggle.download", "--data-dir", str(data), env=kaggle_env(tmp_path, server=fake_kaggle))
    assert result.returncode == 0, result.stderr
    assert "downloaded copy is broken" in result.stdout
    assert fake_kaggle.downloads.count("test.zip") == 2
    assert len(list((data / "test_upload").iterdir())) == 4


def test_always_broken_zip_is_never_extracted(tmp_path, served, fake_kaggle):
    fake_kaggle.broken["train.zip"] = None
    data = tmp_path / "data"
    result = run_module("tools.kaggle.download", "--data-dir", str(data), env=kaggle_env(tmp_path, server=fake_kaggle))
    assert_one_clean_line(result, "train.zip arrived broken")
    assert not (data / "train").exists()
    assert not (data / "train.zip").exists()
    assert not list(data.glob(".*"))


def test_missing_image_fails_verification(tmp_path, served, fake_kaggle):
    files, layout = served
    with zipfile.ZipFile(files / "test.zip", "w") as z:  # one test image short of sample-submission.csv
        for image_id in layout["test"][:-1]:
            z.writestr(f"test_upload/{image_id}", b"jpeg")
    serve_competition(fake_kaggle, files)
    env = kaggle_env(tmp_path, server=fake_kaggle)
    result = run_module("tools.kaggle.download", "--data-dir", str(tmp_path / "data"), env=env)
    assert_one_clean_line(result, "1 of 4 test images listed in sample-submission.csv are missing", layout["test"][-1])


def test_a_file_the_competition_does_not_list_is_named(tmp_path, served, fake_kaggle):
    del fake_kaggle.files["test.zip"]
    env = kaggle_env(tmp_path, server=fake_kaggle)
    result = run_module("tools.kaggle.download", "--data-dir", str(tmp_path / "data"), env=env)
    assert_one_clean_line(result, "the competition sf-dl-car-classification has no file test.zip (Kaggle lists ")
    assert fake_kaggle.downloads == []


def test_no_credentials_names_every_way_and_calls_nothing(tmp_path, served, fake_kaggle):
    env = kaggle_env(tmp_path, credentials=False, server=fake_kaggle)
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
    assert fake_kaggle.calls == []
    assert not (tmp_path / "home" / ".kaggle").exists(), "the kaggle package was imported (it creates this folder)"


def test_rules_not_accepted_is_one_line(tmp_path, served, fake_kaggle):
    fake_kaggle.rules_accepted = False
    env = kaggle_env(tmp_path, server=fake_kaggle)
    result = run_module("tools.kaggle.download", "--data-dir", str(tmp_path / "data"), env=env)
    assert_one_clean_line(result, "accept the rules on https://www.kaggle.com/c/sf-dl-car-classification/rules")
    assert fake_kaggle.rpcs() == ["ListDataFiles"]


def test_a_wrong_key_is_one_line(tmp_path, served, fake_kaggle):
    env = kaggle_env(tmp_path, server=fake_kaggle, KAGGLE_KEY="not-the-key")
    result = run_module("tools.kaggle.download", "--data-dir", str(tmp_path / "data"), env=env)
    assert_one_clean_line(result, "Kaggle rejected the credentials from KAGGLE_KEY (HTTP 401)")
    assert fake_kaggle.rpcs() == ["ListDataFiles"]


def test_an_access_token_is_sent_instead_of_the_key(tmp_path, served, fake_kaggle):
    """kagglesdk's own lookup finds KAGGLE_API_TOKEN first, as kaggle 2.2.5 does."""
    fake_kaggle.tokens.add("new-style-token")
    env = kaggle_env(tmp_path, credentials=False, server=fake_kaggle, KAGGLE_API_TOKEN="new-style-token")
    result = run_module("tools.kaggle.download", "--data-dir", str(tmp_path / "data"), env=env)
    assert result.returncode == 0, result.stderr
    assert len(fake_kaggle.downloads) == 4


def test_kaggle_auth_login_credentials_are_used(tmp_path, served, fake_kaggle):
    """`kaggle auth login` leaves ~/.kaggle/credentials.json; kagglesdk's KaggleCredentials reads its access token."""
    fake_kaggle.tokens.add("oauth-access-token")
    env = kaggle_env(tmp_path, credentials=False, server=fake_kaggle)
    (tmp_path / "home" / ".kaggle").mkdir()
    (tmp_path / "home" / ".kaggle" / "credentials.json").write_text(
        json.dumps(
            {
                "refresh_token": "oauth-refresh-token",
                "access_token": "oauth-access-token",
                "access_token_expiration": "2099-01-01T00:00:00+00:00",
                "username": "tester",
            }
        )
    )
    result = run_module("tools.kaggle.download", "--data-dir", str(tmp_path / "data"), env=env)
    assert result.returncode == 0, result.stderr
    assert len(fake_kaggle.downloads) == 4


def test_kaggle_json_readable_by_others_warns_without_the_key(tmp_path, served, fake_kaggle):
    env = kaggle_env(tmp_path, credentials=False, server=fake_kaggle)
    config = tmp_path / "home" / ".kaggle"
    config.mkdir()
    (config / "kaggle.json").write_text(json.dumps({"username": "tester", "key": SECRET_KEY}))
    (config / "kaggle.json").chmod(0o644)
    result = run_module("tools.kaggle.download", "--data-dir", str(tmp_path / "data"), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(f"chmod 600 {config / 'kaggle.json'}") == 1  # once, for five requests
    assert SECRET_KEY not in result.stdout + result.stderr

    (config / "kaggle.json").chmod(0o600)
    quiet = run_module("tools.kaggle.download", "--data-dir", str(tmp_path / "data2"), env=env)
    assert quiet.returncode == 0 and "chmod" not in quiet.stderr


def test_competition_bundle_already_downloaded_is_used_without_kaggle(tmp_path, fake_kaggle):
    """`kaggle competitions download -c ...` run by hand leaves <competition>.zip: unpack it, call nothing."""
    files = tmp_path / "served"
    make_competition_files(files)
    data = tmp_path / "data"
    data.mkdir()
    with zipfile.ZipFile(data / "sf-dl-car-classification.zip", "w") as bundle:
        for name in ("train.csv", "sample-submission.csv", "train.zip", "test.zip"):
            bundle.write(files / name, name)
    env = kaggle_env(tmp_path, credentials=False, server=fake_kaggle)
    result = run_module("tools.kaggle.download", "--data-dir", str(data), env=env)
    assert result.returncode == 0, result.stderr
    assert fake_kaggle.calls == []
    assert "3 train images and 4 test images, verified" in result.stdout
