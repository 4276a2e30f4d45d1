"""Reading and checking the competition data: CSV quirks, bad files, zips, and the shared split."""

import os
import shutil
import zipfile

import cv2
import numpy as np
import pandas as pd
import pytest

from lib import NUM_CLASSES, data


def write_train_csv(folder, text):
    (folder / "train.csv").write_bytes(text.encode("utf-8"))


def first_train_file(folder):
    row = pd.read_csv(folder / "train.csv").iloc[0]
    return folder / "train" / str(row["Category"]) / row["Id"]


# ---------------------------------------------------------------- CSVs


def test_missing_train_csv_names_the_file(demo_copy):
    (demo_copy / "train.csv").unlink()
    with pytest.raises(data.DataError, match="train.csv is missing"):
        data.load_train(demo_copy)


def test_missing_column_is_named(demo_copy):
    write_train_csv(demo_copy, "Id,Label\n1.jpg,3\n")
    with pytest.raises(data.DataError, match="no `Category` column"):
        data.load_train(demo_copy)


def test_spreadsheet_quirks_are_accepted(demo_copy):
    """BOM, semicolons, CRLF, padded cells, `3.0` and a blank line, as Excel can save them."""
    train = pd.read_csv(demo_copy / "train.csv")
    lines = [f" {i} ; {c}.0 " for i, c in train.itertuples(index=False)]
    (demo_copy / "train.csv").write_bytes(("\ufeffId;Category\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode())
    loaded = data.load_train(demo_copy)
    assert loaded["Id"].tolist() == train["Id"].tolist()
    assert loaded["Category"].tolist() == train["Category"].tolist()


@pytest.mark.parametrize("label", ["10", "-1", "abc", "3.5", ""])
def test_bad_label_stops_with_the_line(demo_copy, label):
    train = pd.read_csv(demo_copy / "train.csv", dtype=str)
    train.loc[2, "Category"] = label
    train.to_csv(demo_copy / "train.csv", index=False)
    with pytest.raises(data.DataError, match="line 4"):
        data.load_train(demo_copy)


def test_duplicate_train_rows(demo_copy):
    train = pd.read_csv(demo_copy / "train.csv")
    pd.concat([train, train.iloc[:1]]).to_csv(demo_copy / "train.csv", index=False)
    problems = []
    assert len(data.load_train(demo_copy, problems)) == len(train)
    assert problems[0]["problem"] == "duplicate row in train.csv"
    conflicting = train.iloc[:1].assign(Category=(train.iloc[0]["Category"] + 1) % NUM_CLASSES)
    pd.concat([train, conflicting]).to_csv(demo_copy / "train.csv", index=False)
    with pytest.raises(data.DataError, match="different Categories"):
        data.load_train(demo_copy)


def test_duplicate_test_id_stops(demo_copy):
    sample = pd.read_csv(demo_copy / "sample-submission.csv")
    pd.concat([sample, sample.iloc[:1]]).to_csv(demo_copy / "sample-submission.csv", index=False)
    with pytest.raises(data.DataError, match="duplicate Id"):
        data.load_test(demo_copy)


# ---------------------------------------------------------------- files


def test_clean_demo_has_no_problems(tiny_demo):
    scan = data.scan(tiny_demo)
    assert scan.problems.empty and scan.test["readable"].all() and len(scan.train) == 8 * NUM_CLASSES


@pytest.mark.parametrize(
    "damage, problem_word",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "trunc"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("<html>Not Found</html>"), ""),
        (lambda p: p.unlink(), "missing"),
    ],
)
def test_bad_train_file_is_skipped_and_listed(demo_copy, damage, problem_word):
    bad = first_train_file(demo_copy)
    damage(bad)
    scan = data.scan(demo_copy, max_bad_fraction=0.05)
    assert str(bad) not in set(scan.train["path"]) and len(scan.train) == 8 * NUM_CLASSES - 1
    row = scan.problems[scan.problems["file"] == str(bad)].iloc[0]
    assert problem_word in row["problem"].lower() and row["action"] == "skipped"


def test_readable_odd_formats_are_kept(demo_copy):
    """A PNG saved as .jpg and a grayscale JPEG are fine photos, not problems."""
    files = sorted((demo_copy / "train").rglob("*.jpg"))
    png, gray = files[0], files[1]
    cv2.imwrite(str(png.with_suffix(".png")), cv2.imread(str(png)))
    os.replace(png.with_suffix(".png"), png)
    cv2.imwrite(str(gray), cv2.imread(str(gray), cv2.IMREAD_GRAYSCALE))
    scan = data.scan(demo_copy)
    assert scan.problems.empty and len(scan.train) == 8 * NUM_CLASSES


def test_too_many_bad_train_files_stop(demo_copy):
    for path in list((demo_copy / "train" / "0").iterdir())[:3]:
        path.write_bytes(b"")
    with pytest.raises(data.DataError, match="max_bad_fraction"):
        data.scan(demo_copy, max_bad_fraction=0.01)


def test_unlisted_and_junk_files(demo_copy):
    extra = demo_copy / "train" / "3" / "123.jpg"
    shutil.copy(first_train_file(demo_copy), extra)
    (demo_copy / "train" / "3" / ".DS_Store").write_bytes(b"\0")
    scan = data.scan(demo_copy)
    assert scan.problems["file"].tolist() == [str(extra)]
    assert scan.problems.iloc[0]["action"] == "ignored"


def test_missing_or_broken_test_file_keeps_its_row(demo_copy):
    sample = pd.read_csv(demo_copy / "sample-submission.csv")
    (demo_copy / "test_upload" / sample["Id"][0]).unlink()
    (demo_copy / "test_upload" / sample["Id"][1]).write_bytes(b"")
    scan = data.scan(demo_copy)
    assert scan.test["Id"].tolist() == sample["Id"].tolist()
    assert scan.test["readable"].tolist()[:3] == [False, False, True]
    assert (scan.problems["action"] == "predicted with fallback").sum() == 2


def test_empty_test_folder_stops(demo_copy):
    shutil.rmtree(demo_copy / "test_upload")
    (demo_copy / "test_upload").mkdir()
    with pytest.raises(data.DataError, match="holds none"):
        data.scan(demo_copy)


# ---------------------------------------------------------------- zips


def zip_folder(folder, root, zip_path):
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in (folder / root).rglob("*"):
            archive.write(path, path.relative_to(folder))
        archive.writestr("__MACOSX/._junk", b"x")


def test_zips_are_extracted_once(demo_copy, tmp_path):
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    for name in ("train.csv", "sample-submission.csv"):
        shutil.copy(demo_copy / name, zipped / name)
    zip_folder(demo_copy, "train", zipped / "train.zip")
    zip_folder(demo_copy, "test_upload", zipped / "test.zip")
    assert data.prepare_data_dir(zipped) == zipped
    assert data.scan(zipped).problems.empty
    marker = zipped / "train" / "marker"
    marker.write_text("kept")
    data.prepare_data_dir(zipped)  # a second call must not extract again
    assert marker.exists() and not (zipped / "__MACOSX").exists()


def test_broken_zip_is_never_half_extracted(demo_copy, tmp_path):
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    shutil.copy(demo_copy / "train.csv", zipped / "train.csv")
    zip_folder(demo_copy, "train", tmp_path / "whole.zip")
    blob = (tmp_path / "whole.zip").read_bytes()
    (zipped / "train.zip").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(data.DataError, match="train.zip"):
        data.prepare_data_dir(zipped)
    assert not (zipped / "train").exists()


# ---------------------------------------------------------------- split


def test_holdout_split_is_stratified_disjoint_and_stable(shared_dir):
    train = pd.read_csv(shared_dir / "train.csv")
    fit, val = data.holdout_split(train, 0.2, seed=42)
    assert len(fit) + len(val) == len(train) and not set(fit["Id"]) & set(val["Id"])
    share = val["Category"].value_counts() / train["Category"].value_counts()
    assert share.between(0.19, 0.21).all()
    _, shuffled_val = data.holdout_split(train.sample(frac=1, random_state=0), 0.2, seed=42)
    assert set(shuffled_val["Id"]) == set(val["Id"])  # the row order of train.csv does not matter
    _, other_val = data.holdout_split(train, 0.2, seed=7)
    assert set(other_val["Id"]) != set(val["Id"])


def test_folds_cover_every_row_once(shared_dir):
    train = pd.read_csv(shared_dir / "train.csv")
    folds = data.stratified_folds(train, 5, seed=1)
    assert sorted(np.unique(folds)) == [0, 1, 2, 3, 4]
    counts = pd.crosstab(train["Category"], folds)
    assert (counts.max(axis=1) - counts.min(axis=1) <= 1).all()
