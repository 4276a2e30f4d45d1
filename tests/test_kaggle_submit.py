"""`make submit` / `make submissions` (python -m tools.kaggle.submit) through the real kaggle client and the fake Kaggle
server, on the real test ids."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pandas as pd
import pytest

from lib.paths import SHARED_DIR
from lib.runs import git_commit
from tests.kaggle_fixtures import SECRET_KEY, kaggle_env, run_module

REAL_SAMPLE = SHARED_DIR / "sample-submission.csv"
needs_real_sample = pytest.mark.skipif(
    not REAL_SAMPLE.is_file(), reason=f"real sample-submission.csv not found at {REAL_SAMPLE} (../shared absent)"
)


@pytest.fixture
def real_data(tmp_path):
    """A data folder holding the real sample-submission.csv (in tmp, never in the checkout)."""
    if not REAL_SAMPLE.is_file():
        pytest.skip(f"real sample-submission.csv not found at {REAL_SAMPLE} (../shared absent)")
    folder = tmp_path / "real-data"
    folder.mkdir()
    shutil.copyfile(REAL_SAMPLE, folder / "sample-submission.csv")
    return folder


@pytest.fixture
def good_lines(real_data):
    ids = pd.read_csv(real_data / "sample-submission.csv", dtype=str)["Id"].tolist()
    assert len(ids) == 6675
    return ["Id,Category"] + [f"{image_id},{n % 10}" for n, image_id in enumerate(ids)]


def write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@needs_real_sample
def test_valid_file_is_uploaded_with_the_message(tmp_path, real_data, good_lines, fake_kaggle):
    env = kaggle_env(tmp_path, server=fake_kaggle)
    file = write(tmp_path / "sub.csv", good_lines)
    result = run_module(
        "tools.kaggle.submit", "--file", str(file), "--data-dir", str(real_data), "--message", "my try", env=env
    )
    assert result.returncode == 0, result.stderr
    assert fake_kaggle.rpcs() == ["StartSubmissionUpload", "CreateSubmission"]  # the upload between them
    [started], [created] = fake_kaggle.called("StartSubmissionUpload"), fake_kaggle.called("CreateSubmission")
    assert started.competition_name == created.competition_name == "sf-dl-car-classification"
    assert (started.file_name, started.content_length) == ("sub.csv", file.stat().st_size)
    [submission] = fake_kaggle.submissions
    assert (submission.description, submission.text) == ("my try", file.read_text())
    assert f"as submission {submission.ref}: 'my try'" in result.stdout
    assert SECRET_KEY not in result.stdout + result.stderr


def _drop_last(lines):
    return lines[:-1]


def _extra_row(lines):
    return lines + ["999999999.jpg,1"]


def _duplicate(lines):
    return lines[:-1] + [lines[1]]


def _header(lines):
    return ["id,category"] + lines[1:]


def _float_category(lines):
    return lines[:5] + [lines[5].split(",")[0] + ",3.0"] + lines[6:]


def _category_10(lines):
    return lines[:5] + [lines[5].split(",")[0] + ",10"] + lines[6:]


def _no_jpg(lines):
    return [lines[0]] + [line.replace(".jpg", "") for line in lines[1:]]


@needs_real_sample
@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (_drop_last, "1 Id(s) of sample-submission.csv are missing"),
        (_extra_row, "1 Id(s) not in sample-submission.csv, first ['999999999.jpg']"),
        (_duplicate, "1 duplicate Id(s)"),
        (_header, "header must be exactly `Id,Category`, found `id,category`"),
        (_float_category, "Category must be an integer 0-9, found '3.0'"),
        (_category_10, "Category must be 0-9, found 10"),
        (_no_jpg, "Ids must keep the `.jpg` extension"),
    ],
    ids=["missing-row", "extra-row", "duplicate-id", "wrong-header", "float-category", "category-10", "no-jpg"],
)
def test_invalid_file_is_refused_and_never_uploaded(tmp_path, real_data, good_lines, corrupt, reason, fake_kaggle):
    env = kaggle_env(tmp_path, server=fake_kaggle)
    file = write(tmp_path / "sub.csv", corrupt(good_lines))
    result = run_module("tools.kaggle.submit", "--file", str(file), "--data-dir", str(real_data), env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "refused, nothing was uploaded" in result.stderr and reason in result.stderr, result.stderr
    assert fake_kaggle.calls == []


@pytest.fixture
def demo_data(tmp_path):
    folder = tmp_path / "demo"
    write(folder / "sample-submission.csv", ["Id,Category", "1.jpg,0", "2.jpg,0"])
    write(folder / "test_labels.csv", ["Id,Category", "1.jpg,3", "2.jpg,4"])  # lib.paths.is_demo marker
    return folder


def test_demo_submission_is_refused_unless_forced(tmp_path, demo_data, fake_kaggle):
    env = kaggle_env(tmp_path, server=fake_kaggle)
    file = write(tmp_path / "demo-sub.csv", ["Id,Category", "1.jpg,3", "2.jpg,4"])
    refused = run_module("tools.kaggle.submit", "--file", str(file), "--data-dir", str(demo_data), env=env)
    assert refused.returncode == 1
    assert "demo's ids and Kaggle would reject it" in refused.stderr and "FORCE=1" in refused.stderr
    assert fake_kaggle.calls == []

    forced = run_module("tools.kaggle.submit", "--file", str(file), "--data-dir", str(demo_data), "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    assert len(fake_kaggle.submissions) == 1


@needs_real_sample
def test_demo_submission_against_real_ids_says_so(tmp_path, real_data, fake_kaggle):
    env = kaggle_env(tmp_path, server=fake_kaggle)
    file = write(tmp_path / "demo-sub.csv", ["Id,Category", "1.jpg,3", "2.jpg,4"])
    result = run_module("tools.kaggle.submit", "--file", str(file), "--data-dir", str(real_data), env=env)
    assert result.returncode == 1 and "demo-data submission" in result.stderr
    assert fake_kaggle.calls == []


@needs_real_sample
def test_default_file_and_message_come_from_the_run_record(tmp_path, real_data, good_lines, fake_kaggle):
    env = kaggle_env(tmp_path, server=fake_kaggle)
    working = tmp_path / "fake-kaggle" / "working"  # lib.paths.output_root() under CARS_KAGGLE_ROOT
    write(working / "submissions" / "submission.csv", good_lines)
    record = working / "runs" / "full" / "05_ensemble"
    record.mkdir(parents=True)
    (record / "metrics.json").write_text(
        json.dumps({"val_accuracy": 0.97125, "models": ["03_xception", "04_efficientnetb7"], "profile": "full"})
    )
    result = run_module("tools.kaggle.submit", "--data-dir", str(real_data), env=env)
    assert result.returncode == 0, result.stderr
    message = fake_kaggle.submissions[0].description
    for part in (
        "05_ensemble (03_xception+04_efficientnetb7)",
        "profile full",
        "val_acc 0.9712",
        f"git {git_commit()}",
        dt.date.today().isoformat(),
    ):
        assert part in message


def test_missing_credentials_are_reported_before_upload(tmp_path, demo_data, fake_kaggle):
    env = kaggle_env(tmp_path, credentials=False, server=fake_kaggle)
    file = write(tmp_path / "demo-sub.csv", ["Id,Category", "1.jpg,3", "2.jpg,4"])
    result = run_module("tools.kaggle.submit", "--file", str(file), "--data-dir", str(demo_data), "--force", env=env)
    assert result.returncode == 1 and "no Kaggle credentials" in result.stderr and "KAGGLE_API_TOKEN" in result.stderr
    assert fake_kaggle.calls == []


def test_rules_not_accepted_on_upload(tmp_path, demo_data, fake_kaggle):
    fake_kaggle.rules_accepted = False
    env = kaggle_env(tmp_path, server=fake_kaggle)
    file = write(tmp_path / "demo-sub.csv", ["Id,Category", "1.jpg,3", "2.jpg,4"])
    result = run_module("tools.kaggle.submit", "--file", str(file), "--data-dir", str(demo_data), "--force", env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "error: Kaggle refused access (HTTP 403): accept the rules on "
        "https://www.kaggle.com/c/sf-dl-car-classification/rules, then run this again"
    )
    assert fake_kaggle.rpcs() == ["StartSubmissionUpload"] and fake_kaggle.submissions == []


def test_list_appends_new_rows_and_keeps_history(tmp_path, fake_kaggle):
    board = tmp_path / "fake-kaggle" / "working" / "submissions" / "leaderboard.csv"
    write(  # a row `kaggle competitions submissions --csv` wrote, before this tool read the API
        board,
        [
            "ref,fileName,date,description,status,publicScore,privateScore",
            "10,submission.csv,2026-11-18 08:00:00,from the CLI,SubmissionStatus.COMPLETE,0.91000,",
        ],
    )
    fake_kaggle.add_submission(11, "old one", "2026-11-19 09:00:00", "COMPLETE", "0.93408")
    fake_kaggle.add_submission(12, "pending one", "2026-11-20 10:00:00", "PENDING")
    env = kaggle_env(tmp_path, server=fake_kaggle)
    result = run_module("tools.kaggle.submit", "list", env=env)
    assert result.returncode == 0, result.stderr
    assert "pending one" in result.stdout and "0.93408" in result.stdout and "(2 new)" in result.stdout
    [listed] = fake_kaggle.called("ListSubmissions")
    assert listed.competition_name == "sf-dl-car-classification"

    # Kaggle later lists only the recent ones: 12 is now scored, 13 is new, 11 is no longer listed.
    old, pending = fake_kaggle.submissions
    fake_kaggle.submissions.remove(old)
    pending.status, pending.public_score = "COMPLETE", "0.95210"
    fake_kaggle.add_submission(13, "new one", "2026-11-21 11:00:00", "COMPLETE", "0.96100")
    result = run_module("tools.kaggle.submit", "list", env=env)
    assert result.returncode == 0, result.stderr
    history = pd.read_csv(board, dtype=str, keep_default_na=False)
    assert history["ref"].tolist() == ["13", "12", "11", "10"]
    assert history.set_index("ref").loc["12", "publicScore"] == "0.95210"
    assert history["status"].tolist() == ["COMPLETE"] * 4
    assert history.set_index("ref").loc["11", "date"] == "2026-11-19 09:00:00"
    assert "(1 new)" in result.stdout


def test_no_submissions_yet_writes_nothing(tmp_path, fake_kaggle):
    result = run_module("tools.kaggle.submit", "list", env=kaggle_env(tmp_path, server=fake_kaggle))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "No submissions yet for sf-dl-car-classification"
    assert not (tmp_path / "fake-kaggle" / "working" / "submissions" / "leaderboard.csv").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_targets_through_kaggle_mk(tmp_path, demo_data, fake_kaggle):
    """kaggle.mk as the Makefile includes it: help lines, and FILE=/MSG=/FORCE= reach tools.kaggle.submit intact."""
    from tests.kaggle_fixtures import kaggle_make

    env = kaggle_env(tmp_path, server=fake_kaggle)
    make = kaggle_make(tmp_path, env)
    helped = make("help")
    listed = {line.split(":")[0] for line in helped.stdout.splitlines()}
    assert {"data", "submit", "submissions", "kaggle-kernel", "kaggle-push", "kaggle-status", "kaggle-output"} <= listed

    file = write(tmp_path / "demo-sub.csv", ["Id,Category", "1.jpg,3", "2.jpg,4"])
    args = ["submit", f"FILE={file}", f"DATA_DIR={demo_data}"]
    refused = make(*args)
    assert refused.returncode != 0 and "FORCE=1" in refused.stderr and fake_kaggle.calls == []
    done = make(*args, "FORCE=1", 'MSG=it\'s "mine"')
    assert done.returncode == 0, done.stderr
    assert fake_kaggle.submissions[0].description == 'it\'s "mine"'


@needs_real_sample
def test_message_finds_the_run_by_its_submission_name(tmp_path, real_data, good_lines, fake_kaggle):
    """03_xception writes submissions/xception.csv: the run is found through params.json's submission_name."""
    env = kaggle_env(tmp_path, server=fake_kaggle)
    working = tmp_path / "fake-kaggle" / "working"
    file = write(working / "submissions" / "xception.csv", good_lines)
    record = working / "runs" / "full" / "03_xception"
    record.mkdir(parents=True)
    (record / "params.json").write_text(json.dumps({"submission_name": "xception", "profile": "full"}))
    (record / "metrics.json").write_text(json.dumps({"val_accuracy": 0.95, "model": "xception"}))
    result = run_module("tools.kaggle.submit", "--file", str(file), "--data-dir", str(real_data), env=env)
    assert result.returncode == 0, result.stderr
    assert fake_kaggle.submissions[0].description.startswith(
        "03_xception (xception) | profile full | val_acc 0.9500 | git "
    )


@needs_real_sample
def test_a_kaggle_made_file_with_only_the_demo_locally_is_checked_against_the_real_sample(
    tmp_path, demo_data, real_data, good_lines, fake_kaggle
):
    """The new user's path: a kernel's submission.csv, `make submit FILE=...`, only the demo here. The competition's
    sample-submission.csv is fetched once (cached in the sample folder, data/ by default) and the file passes."""
    fake_kaggle.files["sample-submission.csv"] = REAL_SAMPLE.read_bytes()
    env = kaggle_env(tmp_path, server=fake_kaggle)
    file = write(tmp_path / "kaggle" / "submission.csv", good_lines)
    cache = tmp_path / "data"
    args = ["--file", str(file), "--data-dir", str(demo_data), "--sample-dir", str(cache)]
    done = run_module("tools.kaggle.submit", *args, env=env)
    assert done.returncode == 0, done.stderr
    assert f"is the offline demo: fetching the competition's sample-submission.csv into {cache}/" in done.stdout
    assert (cache / "sample-submission.csv").read_bytes() == REAL_SAMPLE.read_bytes()
    assert [s.text for s in fake_kaggle.submissions] == [file.read_text()]

    again = run_module("tools.kaggle.submit", *args, env=env)  # the cached copy: no second download
    assert again.returncode == 0, again.stderr
    assert fake_kaggle.downloads == ["sample-submission.csv"] and len(fake_kaggle.submissions) == 2


@needs_real_sample
def test_a_kaggle_made_file_offline_with_only_the_demo_says_how_to_check_it(tmp_path, demo_data, good_lines):
    env = kaggle_env(tmp_path)  # no server: nothing answers
    file = write(tmp_path / "kaggle" / "submission.csv", good_lines)
    args = ["--file", str(file), "--data-dir", str(demo_data), "--sample-dir", str(tmp_path / "data")]
    result = run_module("tools.kaggle.submit", *args, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert line.startswith("error: refused, nothing was uploaded: the data folder in use") and "\n" not in line
    assert "is the offline demo" in line and "the network is unreachable" in line
    assert "pass DATA_DIR=<folder holding the competition's sample-submission.csv>" in line
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())
