"""Submission validation against the real sample-submission.csv, atomic writing and scoring."""

import os
import signal
import subprocess
import sys

import pandas as pd
import pytest

from lib.submission import SubmissionError, read_sample_ids, validate_submission, write_submission


@pytest.fixture(scope="module")
def real_ids(shared_dir):
    ids = read_sample_ids(shared_dir / "sample-submission.csv")
    assert len(ids) == 6675
    return ids


def frame(ids, categories=None):
    return pd.DataFrame({"Id": ids, "Category": categories if categories is not None else [3] * len(ids)})


def test_valid_submission_is_returned_in_sample_order(real_ids):
    shuffled = frame(real_ids[::-1])
    result = validate_submission(shuffled, real_ids)
    assert result["Id"].tolist() == real_ids and (result["Category"] == 3).all()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: f.iloc[1:], "missing"),
        (lambda f: pd.concat([f, frame(["999999.jpg"])]), "not in sample-submission"),
        (lambda f: pd.concat([f, f.iloc[:1]]), "duplicate"),
        (lambda f: f.rename(columns={"Category": "label"}), "header"),
        (lambda f: f.assign(Category=f["Category"].astype(float)), "integer"),
        (lambda f: f.assign(Category=10), "0-9"),
        (lambda f: f.assign(Id=f["Id"].str.removesuffix(".jpg")), ".jpg"),
    ],
)
def test_each_defect_is_named(real_ids, damage, message):
    with pytest.raises(SubmissionError, match=message):
        validate_submission(damage(frame(real_ids)), real_ids)


def test_demo_submission_is_recognised(real_ids, tiny_demo):
    demo_ids = read_sample_ids(tiny_demo / "sample-submission.csv")
    with pytest.raises(SubmissionError, match="demo"):
        validate_submission(frame(demo_ids), real_ids)


def test_invalid_submission_is_never_written(real_ids, tmp_path):
    target = tmp_path / "sub.csv"
    with pytest.raises(SubmissionError):
        write_submission(real_ids[:-1], [0] * (len(real_ids) - 1), target, real_ids)
    assert not target.exists()


def test_interrupted_write_leaves_the_old_file(tmp_path, tiny_demo):
    """SIGKILL in the middle of writing: the previous submission stays byte for byte."""
    ids = read_sample_ids(tiny_demo / "sample-submission.csv")
    target = tmp_path / "submission.csv"
    write_submission(ids, [1] * len(ids), target, ids)
    before = target.read_bytes()
    script = f"""
import pandas as pd, time, lib.runs as runs
real_to_csv = pd.DataFrame.to_csv
def slow_to_csv(self, path, **kw):
    with open(path, "w") as f:
        f.write("Id,Category\\n" + "half a file")
        f.flush()
    print("writing", flush=True)
    time.sleep(60)
pd.DataFrame.to_csv = slow_to_csv
from lib.submission import write_submission, read_sample_ids
ids = read_sample_ids({str(tiny_demo / "sample-submission.csv")!r})
write_submission(ids, [2] * len(ids), {str(target)!r}, ids)
"""
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert process.stdout.readline().strip() == "writing"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert target.read_bytes() == before
    validate_submission(target, ids)


def test_cli_score_and_validate(tiny_demo, tmp_path):
    ids = read_sample_ids(tiny_demo / "sample-submission.csv")
    labels = pd.read_csv(tiny_demo / "test_labels.csv").set_index("Id").loc[ids, "Category"].to_numpy()
    path = write_submission(ids, labels, tmp_path / "s.csv", ids)
    run = [sys.executable, "-m", "lib.submission"]
    scored = subprocess.run(
        run + ["score", str(path), "--labels", str(tiny_demo / "test_labels.csv")], capture_output=True, text=True
    )
    assert scored.returncode == 0 and "accuracy 1.00000" in scored.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("Id,Category\n")
    checked = subprocess.run(
        run + ["validate", str(bad), "--sample", str(tiny_demo / "sample-submission.csv")],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 1 and "missing" in checked.stderr and "Traceback" not in checked.stderr
