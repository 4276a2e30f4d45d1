"""Competition data: read and check the CSVs, unpack zips once, scan images for problems, the shared split."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lib import NUM_CLASSES, paths

# Files that operating systems and archivers leave beside photos; never data, never a problem.
JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
PROBLEM_COLUMNS = ["file", "problem", "action"]


class DataError(Exception):
    """A problem with the user's data folder, explained in one line with what to do."""


def _is_junk(path: Path) -> bool:
    return (
        path.name in JUNK_NAMES
        or path.name.startswith("._")
        or "__MACOSX" in path.parts
        or any(part.startswith(".") for part in path.parts[-3:-1])
    )


# --------------------------------------------------------------------------- CSVs


def read_id_csv(csv_path: Path, what: str) -> pd.DataFrame:
    """Read an `Id,Category` CSV as strings, forgiving what spreadsheets do: BOM, `;` separator, spaces, blank rows."""
    if not csv_path.is_file():
        raise DataError(
            f"{csv_path} is missing: {what}. Run `make data`, or set DATA_DIR to a folder in the "
            f"competition layout (train.csv, sample-submission.csv, train/, test_upload/)."
        )
    try:
        frame = pd.read_csv(
            csv_path,
            dtype=str,
            sep=None,
            engine="python",
            encoding="utf-8-sig",
            skip_blank_lines=True,
            keep_default_na=False,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{csv_path} cannot be read as CSV ({err}). Save it as comma-separated UTF-8.") from err
    frame.columns = [str(c).strip() for c in frame.columns]
    for column in ("Id", "Category"):
        if column not in frame.columns:
            raise DataError(
                f"{csv_path} has no `{column}` column (found {list(frame.columns)}); the header must be `Id,Category`."
            )
    frame = frame[["Id", "Category"]].apply(lambda s: s.str.strip())
    frame.index = frame.index + 2  # file line numbers, header is line 1
    return frame[(frame["Id"] != "") | (frame["Category"] != "")]


def parse_labels(frame: pd.DataFrame, csv_path: Path) -> pd.Series:
    """Categories as ints 0-9; `3.0` from a spreadsheet is accepted, anything else stops with the line numbers."""
    numbers = pd.to_numeric(frame["Category"], errors="coerce")
    bad = frame.index[~(numbers.notna() & (numbers == np.round(numbers)) & numbers.between(0, NUM_CLASSES - 1))]
    if len(bad):
        examples = ", ".join(f"line {i}: {frame.at[i, 'Category']!r}" for i in bad[:3])
        raise DataError(
            f"{csv_path}: {len(bad)} row(s) with a Category that is not an integer 0-{NUM_CLASSES - 1} "
            f"({examples}). Fix those rows."
        )
    return numbers.astype(int)


def load_train(data_dir, problems: list | None = None) -> pd.DataFrame:
    """train.csv as `Id, Category, path`, duplicates resolved. Rows are not checked against files here."""
    data_dir = Path(data_dir)
    csv_path = data_dir / "train.csv"
    frame = read_id_csv(csv_path, "the training labels")
    if frame.empty:
        raise DataError(f"{csv_path} has no rows.")
    frame["Category"] = parse_labels(frame, csv_path)
    duplicated = frame[frame["Id"].duplicated(keep=False)]
    if len(duplicated):
        conflicting = duplicated.groupby("Id")["Category"].nunique()
        conflicting = conflicting[conflicting > 1]
        if len(conflicting):
            raise DataError(
                f"{csv_path}: {len(conflicting)} Id(s) listed with different Categories, first "
                f"{conflicting.index[0]!r}. Keep one row per Id."
            )
        for image_id in duplicated["Id"].unique():
            _note(problems, image_id, "duplicate row in train.csv", "kept one row")
        frame = frame.drop_duplicates("Id")
    frame["path"] = [str(data_dir / "train" / str(c) / i) for i, c in zip(frame["Id"], frame["Category"])]
    return frame.reset_index(drop=True)


def load_test(data_dir) -> pd.DataFrame:
    """sample-submission.csv's Ids, in its order, as `Id, path`."""
    data_dir = Path(data_dir)
    csv_path = data_dir / "sample-submission.csv"
    frame = read_id_csv(csv_path, "the list of test Ids")
    duplicated = frame.loc[frame["Id"].duplicated(), "Id"]
    if len(duplicated):
        raise DataError(
            f"{csv_path}: duplicate Id {duplicated.iloc[0]!r} (line {duplicated.index[0]}); "
            f"Kaggle expects each test Id once. Restore the original file (`make data`)."
        )
    return pd.DataFrame(
        {"Id": frame["Id"].to_numpy(), "path": [str(data_dir / "test_upload" / i) for i in frame["Id"]]}
    )


def _note(problems: list | None, file, problem: str, action: str) -> None:
    if problems is not None:
        problems.append({"file": str(file), "problem": problem, "action": action})


# --------------------------------------------------------------------------- zips


def _extract_once(zip_path: Path, target_dir: Path, member_root: str) -> None:
    """Unpack `zip_path` so that `target_dir/member_root` exists, atomically: into a temp folder, then rename."""
    final = target_dir / member_root
    if final.is_dir():
        return
    try:
        with zipfile.ZipFile(zip_path) as archive:
            broken = archive.testzip()
            if broken is not None:
                raise DataError(f"{zip_path} is damaged ({broken} fails its CRC check). Delete it and run `make data`.")
            staging = target_dir / f".{member_root}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            members = [m for m in archive.namelist() if "__MACOSX" not in m]
            print(f"Extracting {zip_path.name} ({len(members):,} entries) ...", flush=True)
            archive.extractall(staging, members=members)
    except zipfile.BadZipFile as err:
        raise DataError(f"{zip_path} is not a complete zip ({err}). Delete it and run `make data`.") from err
    inner = staging / member_root
    source = inner if inner.is_dir() else staging  # zips packed with or without the top folder
    os.replace(source, final)
    shutil.rmtree(staging, ignore_errors=True)


def prepare_data_dir(data_dir) -> Path:
    """Return a folder with train/ and test_upload/ extracted, unpacking train.zip/test.zip once if needed.

    A read-only folder (Kaggle's input) is mirrored under paths.scratch_root() with links to its CSVs.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"DATA_DIR {data_dir} does not exist.")
    if not (data_dir / "train.csv").is_file():
        raise DataError(
            f"{data_dir} has no train.csv: not the competition layout "
            f"(train.csv, sample-submission.csv, train/ or train.zip, test_upload/ or test.zip)."
        )
    needs = [
        (z, r)
        for z, r in (("train.zip", "train"), ("test.zip", "test_upload"))
        if not (data_dir / r).is_dir() and (data_dir / z).is_file()
    ]
    if not needs:
        return data_dir
    target = data_dir
    if not os.access(data_dir, os.W_OK):
        digest = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:8]
        target = paths.scratch_root() / "data" / f"{data_dir.name}-{digest}"
        target.mkdir(parents=True, exist_ok=True)
        for name in ("train.csv", "sample-submission.csv"):
            link = target / name
            if (data_dir / name).exists() and not link.exists():
                link.symlink_to(data_dir / name)
        for root in ("train", "test_upload"):
            if (data_dir / root).is_dir() and not (target / root).exists():
                (target / root).symlink_to(data_dir / root)
    for zip_name, root in needs:
        _extract_once(data_dir / zip_name, target, root)
    return target


# --------------------------------------------------------------------------- scan


@dataclass
class DataScan:
    """The result of checking a data folder: usable train rows, every test row, and the problems found."""

    train: pd.DataFrame
    test: pd.DataFrame  # every sample-submission Id; `readable` False rows get the fallback prediction
    problems: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PROBLEM_COLUMNS))

    def summary(self) -> str:
        unreadable = int((~self.test["readable"]).sum())
        return (
            f"{len(self.train):,} train images usable, {len(self.test):,} test Ids "
            f"({unreadable} to predict with the fallback), {len(self.problems)} problem(s) listed"
        )


def _check_images(files: list[str], workers: int = 8) -> list[str | None]:
    from lib.images import check_image  # OpenCV/Pillow only when a scan is asked for

    if not files:
        return []
    if importlib.util.find_spec("ipywidgets"):  # tqdm.auto's widget; without ipywidgets it warns
        from tqdm.auto import tqdm
    else:  # and falls back to this text bar anyway (TqdmWarning: IProgress not found)
        from tqdm import tqdm

    with ThreadPoolExecutor(workers) as pool:
        return list(
            tqdm(
                pool.map(check_image, files, chunksize=32),
                total=len(files),
                desc="Checking images",
                unit="img",
                mininterval=2,
                disable=len(files) < 500,
                file=sys.stdout,
            )
        )


def scan(data_dir, *, check_images: bool = True, max_bad_fraction: float = 0.01) -> DataScan:
    """Check the CSVs against the files. Bad train images are skipped and listed; test rows are never dropped.

    Stops with DataError when more than `max_bad_fraction` of the train rows are unusable, or no test file exists.
    """
    data_dir = Path(data_dir)
    problems: list[dict] = []
    train = load_train(data_dir, problems)
    test = load_test(data_dir)

    exists = np.array([os.path.isfile(p) for p in train["path"]])
    if not (data_dir / "train").is_dir():
        raise DataError(f"{data_dir} has no train/ folder (nor train.zip). Run `make data`.")
    for p in train.loc[~exists, "path"]:
        _note(problems, p, "listed in train.csv but the file is missing", "skipped")
    listed = set(train["path"])
    for file in sorted((data_dir / "train").rglob("*")):
        if file.is_file() and not _is_junk(file) and str(file) not in listed:
            _note(problems, file, "file in train/ but not in train.csv", "ignored")

    test_exists = np.array([os.path.isfile(p) for p in test["path"]])
    if not test_exists.any():
        raise DataError(
            f"{data_dir / 'test_upload'} holds none of the {len(test):,} test images listed in "
            f"sample-submission.csv. Run `make data` or unpack test.zip there."
        )
    for p in test.loc[~test_exists, "path"]:
        _note(problems, p, "listed in sample-submission.csv but the file is missing", "predicted with fallback")

    train_ok, test_ok = exists.copy(), test_exists.copy()
    if check_images:
        train_files = train.loc[exists, "path"].tolist()
        test_files = test.loc[test_exists, "path"].tolist()
        verdicts = _check_images(train_files + test_files)
        for file, verdict in zip(train_files, verdicts[: len(train_files)]):
            if verdict:
                _note(problems, file, verdict, "skipped")
        for file, verdict in zip(test_files, verdicts[len(train_files) :]):
            if verdict:
                _note(problems, file, verdict, "predicted with fallback")
        bad_files = {p["file"] for p in problems}
        train_ok &= ~train["path"].isin(bad_files).to_numpy()
        test_ok &= ~test["path"].isin(bad_files).to_numpy()

    bad_fraction = 1 - train_ok.mean()
    if bad_fraction > max_bad_fraction:
        raise DataError(
            f"{bad_fraction:.1%} of train.csv's rows are unusable (limit {max_bad_fraction:.1%}, "
            f"parameter max_bad_fraction); see the problems listed by 01_eda, then fix the data."
        )
    test = test.assign(readable=test_ok)
    return DataScan(
        train=train[train_ok].reset_index(drop=True),
        test=test,
        problems=pd.DataFrame(problems, columns=PROBLEM_COLUMNS),
    )


def image_sizes(files, workers: int = 8) -> pd.DataFrame:
    """Width and height of each image, read from the file headers."""
    from lib.images import image_size

    def safe_size(file):
        try:
            return image_size(file)
        except Exception:  # unreadable files are reported by scan(); here they are just left out
            return (np.nan, np.nan)

    with ThreadPoolExecutor(workers) as pool:
        sizes = list(pool.map(safe_size, files))
    return pd.DataFrame(sizes, columns=["width", "height"])


# --------------------------------------------------------------------------- split


def holdout_split(train: pd.DataFrame, val_fraction: float = 0.2, seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified train/validation split, the same for every model given the same seed and data."""
    folds = stratified_folds(train, round(1 / val_fraction), seed) if val_fraction else None
    if folds is None:
        return train.reset_index(drop=True), train.iloc[:0]
    is_val = folds == 0
    return train[~is_val].reset_index(drop=True), train[is_val].reset_index(drop=True)


def stratified_folds(train: pd.DataFrame, k: int, seed: int = 42) -> np.ndarray:
    """A fold number 0..k-1 per row, each class spread evenly over the folds (rows sorted by Id first,
    so the assignment does not depend on the CSV's row order)."""
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    order = np.argsort(train["Id"].to_numpy(), kind="stable")
    rng = np.random.default_rng(seed)
    folds = np.empty(len(train), dtype=int)
    labels = train["Category"].to_numpy()[order]
    offset = 0
    for category in np.unique(labels):
        members = order[labels == category]
        members = members[rng.permutation(len(members))]
        folds[members] = (np.arange(len(members)) + offset) % k
        offset += len(members)  # rotate so small classes don't all start in fold 0
    return folds


# --------------------------------------------------------------------------- command line


def prepare_command(data_dir: str | None) -> Path:
    """What `make prepare` does: resolve the data folder, generate the demo if that is what's left, unpack zips."""
    from lib import demo

    resolved = paths.resolve_data_dir(data_dir)
    if not data_dir and resolved == paths.DEMO_DIR:
        demo.ensure_demo(resolved)
        print(
            f"No competition data in {paths.DATA_ROOT} (run `make data`, or set DATA_DIR): "
            f"using the offline demo data set in {resolved}."
        )
        return resolved
    if not resolved.is_dir():
        raise DataError(f"DATA_DIR={resolved} does not exist.")
    if not (resolved / "train.csv").is_file():
        raise DataError(
            f"DATA_DIR={resolved} has no train.csv: expected the competition layout "
            f"(train.csv, sample-submission.csv, train/ or train.zip, test_upload/ or test.zip)."
        )
    prepared = prepare_data_dir(resolved)
    train, test = load_train(prepared), load_test(prepared)
    print(f"Data: {prepared} ({len(train):,} train rows, {len(test):,} test Ids).")
    return prepared


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["prepare"])
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    try:
        prepare_command(args.data_dir)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
