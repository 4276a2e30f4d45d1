"""Submission files: validate against sample-submission.csv, write atomically, score; tools.kaggle.submit uploads."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lib import NUM_CLASSES
from lib.runs import atomic_path

HEADER = ["Id", "Category"]


class SubmissionError(ValueError):
    """A submission that Kaggle would reject, with the reason in plain words."""


def read_sample_ids(sample_path: str | os.PathLike) -> list[str]:
    sample = pd.read_csv(sample_path, dtype=str)
    if list(sample.columns[:1]) != ["Id"]:
        raise SubmissionError(f"{sample_path}: expected an `Id` column, found {list(sample.columns)}")
    return sample["Id"].tolist()


def validate_submission(submission: pd.DataFrame | str | os.PathLike, sample_ids: list[str]) -> pd.DataFrame:
    """Return the submission as (Id: str, Category: int) or raise SubmissionError naming the first problem."""
    name = "submission"
    if not isinstance(submission, pd.DataFrame):
        name = str(submission)
        try:
            submission = pd.read_csv(submission, dtype=str, keep_default_na=False)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise SubmissionError(f"{name}: cannot be read as CSV ({err})") from err
    frame = submission.astype(str)
    if list(frame.columns) != HEADER:
        raise SubmissionError(
            f"{name}: header must be exactly `Id,Category`, found `{','.join(map(str, frame.columns))}`"
        )
    ids = frame["Id"]
    duplicated = ids[ids.duplicated()].unique().tolist()
    if duplicated:
        raise SubmissionError(f"{name}: {len(duplicated)} duplicate Id(s), first {duplicated[:3]}")
    expected, present = set(sample_ids), set(ids)
    missing = [i for i in sample_ids if i not in present]
    extra = [i for i in ids if i not in expected]
    if extra:
        hint = " (Ids must keep the `.jpg` extension)" if any(f"{i}.jpg" in expected for i in extra[:10]) else ""
        hint = hint or (
            " (this looks like a demo-data submission: the demo has its own Ids)"
            if missing and len(extra) == len(ids)
            else ""
        )
        raise SubmissionError(f"{name}: {len(extra)} Id(s) not in sample-submission.csv, first {extra[:3]}{hint}")
    if missing:
        raise SubmissionError(f"{name}: {len(missing)} Id(s) of sample-submission.csv are missing, first {missing[:3]}")
    if len(frame) != len(sample_ids):
        raise SubmissionError(f"{name}: {len(frame)} rows, expected {len(sample_ids)}")
    bad = frame.loc[~frame["Category"].str.fullmatch(r"\d+"), "Category"]
    if len(bad):
        raise SubmissionError(f"{name}: Category must be an integer 0-{NUM_CLASSES - 1}, found {bad.iloc[0]!r}")
    categories = frame["Category"].astype(int)
    out_of_range = categories[(categories < 0) | (categories >= NUM_CLASSES)]
    if len(out_of_range):
        raise SubmissionError(f"{name}: Category must be 0-{NUM_CLASSES - 1}, found {out_of_range.iloc[0]}")
    order = pd.Series(range(len(sample_ids)), index=sample_ids)
    result = pd.DataFrame({"Id": ids, "Category": categories})
    return result.iloc[np.argsort(order[result["Id"]].to_numpy())].reset_index(drop=True)


def write_submission(ids, categories, path: str | os.PathLike, sample_ids: list[str]) -> Path:
    """Validate, then write atomically in sample-submission order."""
    frame = pd.DataFrame({"Id": [str(i) for i in ids], "Category": np.asarray(categories).astype(int).astype(str)})
    frame = validate_submission(frame, sample_ids)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def write_named_submission(ids, categories, name: str, sample_ids: list[str]) -> Path:
    """submissions/<name>.csv (validated, atomic); inside a Kaggle kernel also /kaggle/working/submission.csv."""
    from lib import paths

    out = write_submission(ids, categories, paths.submissions_dir() / f"{name}.csv", sample_ids)
    if paths.on_kaggle():
        write_submission(ids, categories, paths.kaggle_root() / "working" / "submission.csv", sample_ids)
    return out


def score(submission_path: str | os.PathLike, labels_path: str | os.PathLike) -> float:
    """Accuracy of a submission against a labels file with the same `Id,Category` layout."""
    labels = pd.read_csv(labels_path, dtype={"Id": str})
    submission = validate_submission(submission_path, labels["Id"].tolist())
    merged = labels.merge(submission, on="Id", suffixes=("_true", "_pred"))
    return float((merged["Category_true"] == merged["Category_pred"]).mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("validate", help="check a submission against sample-submission.csv")
    check.add_argument("file")
    check.add_argument("--sample", required=True)
    rate = sub.add_parser("score", help="accuracy of a submission against known labels (the demo's test_labels.csv)")
    rate.add_argument("file")
    rate.add_argument("--labels", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "validate":
            frame = validate_submission(args.file, read_sample_ids(args.sample))
            print(f"{args.file}: valid, {len(frame)} rows")
        else:
            if not Path(args.labels).exists():
                print(f"No hidden labels at {args.labels}: only the demo data set can be scored locally.")
                return 1
            print(f"{args.file}: accuracy {score(args.file, args.labels):.5f} on {args.labels}")
    except (SubmissionError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
