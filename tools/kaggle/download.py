"""`make data`: download the competition files through the Kaggle API, unpack them safely, verify against the CSVs."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import pandas as pd

from lib import COMPETITION
from lib.data import DataError, prepare_data_dir
from lib.paths import DATA_ROOT
from lib.runs import atomic_path
from tools.kaggle import api
from tools.kaggle.api import KaggleError

CSV_FILES = ("train.csv", "sample-submission.csv")
# zip name -> the folder it unpacks to
ARCHIVES = {"train.zip": "train", "test.zip": "test_upload"}
FETCH_ATTEMPTS = 2


class DownloadError(RuntimeError):
    """The data folder cannot be completed, with the reason and what to do."""


def zip_problem(path: Path) -> str | None:
    """Why `path` is not a complete zip (truncated, corrupt, empty), or None when it is sound."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                return f"member {bad} is corrupt"
            if not archive.namelist():
                return "no files inside"
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"not a complete zip ({err})"
    return None


def verify(data_dir: Path) -> tuple[int, int]:
    """Check every train.csv row has train/<Category>/<Id> and every sample Id has test_upload/<Id>."""
    train = pd.read_csv(data_dir / "train.csv", dtype=str)
    sample = pd.read_csv(data_dir / "sample-submission.csv", dtype=str)
    train_paths = [Path("train") / c / i for i, c in zip(train["Id"], train["Category"])]
    test_paths = [Path("test_upload") / i for i in sample["Id"]]
    for what, paths, csv in (("train", train_paths, "train.csv"), ("test", test_paths, "sample-submission.csv")):
        missing = [p for p in paths if not (data_dir / p).is_file()]
        if missing:
            raise DownloadError(
                f"{len(missing)} of {len(paths)} {what} images listed in {csv} are missing, first "
                f"{data_dir / missing[0]}; delete {data_dir / missing[0].parts[0]} and run `make data` again"
            )
    return len(train_paths), len(test_paths)


def is_complete(data_dir: Path) -> bool:
    return all((data_dir / name).is_file() for name in CSV_FILES) and all(
        (data_dir / folder).is_dir() for folder in ARCHIVES.values()
    )


def competition_files() -> dict[str, int]:
    """The competition's data files with their sizes in bytes, as Kaggle lists them."""
    from kagglesdk.competitions.types.competition_api_service import ApiListDataFilesRequest

    sizes, token = {}, ""
    while True:
        request = ApiListDataFilesRequest()
        request.competition_name, request.page_token = COMPETITION, token
        answer = api.call(
            api.client().competitions.competition_api_client.list_data_files,
            request,
            f"competition {COMPETITION}",
            {403: api.rules_refusal()},
        )
        sizes.update({item.name: item.total_bytes for item in answer.files})
        token = answer.next_page_token
        if not token:
            return sizes


def fetch(name: str, data_dir: Path, size: int = 0) -> None:
    """Download one competition file into data_dir, replacing whatever is there; a failed download leaves nothing."""
    from kagglesdk.competitions.types.competition_api_service import ApiDownloadDataFileRequest

    shown = f" ({size / 1e6:,.1f} MB)" if size >= 100_000 else ""
    print(f"Downloading {name}{shown} from Kaggle competition {COMPETITION} ...", flush=True)
    request = ApiDownloadDataFileRequest()
    request.competition_name, request.file_name = COMPETITION, name
    about = f"competition file {name}"
    send = api.client().competitions.competition_api_client.download_data_file
    response = api.call(send, request, about, {403: api.rules_refusal()})  # the file, after Kaggle's redirect
    data_dir.mkdir(parents=True, exist_ok=True)
    served = response.url.split("?")[0].rsplit("/", 1)[-1]
    if served != f"{name}.zip":
        api.save(response, data_dir / name, about)
        return
    # A large file comes wrapped in <name>.zip (kaggle 2.2.5's _is_auto_compressed): keep what is inside.
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".download-") as folder:
        wrapped = api.save(response, Path(folder) / served, about)
        problem = zip_problem(wrapped)
        if problem is None:
            with zipfile.ZipFile(wrapped) as archive:
                members = archive.namelist()
                if len(members) != 1:
                    problem = f"{len(members)} files inside, not {name} alone"
                else:
                    with atomic_path(data_dir / name) as tmp, archive.open(members[0]) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        if problem:
            raise DownloadError(f"{name} arrived as {served}, which is broken ({problem}); run `make data` again")


def fetch_sound_zip(name: str, data_dir: Path, size: int = 0) -> Path:
    """Return a verified zip: keep a sound one already present, else (re)download, deleting broken ones."""
    path = data_dir / name
    problem = zip_problem(path) if path.exists() else None
    if path.exists() and problem is None:
        return path
    if problem:
        print(f"{path}: {problem}; deleting it and downloading again", flush=True)
        path.unlink()
    for attempt in range(1, FETCH_ATTEMPTS + 1):
        fetch(name, data_dir, size)
        problem = zip_problem(path)
        if problem is None:
            return path
        path.unlink()
        print(f"{path}: downloaded copy is broken ({problem}); attempt {attempt} of {FETCH_ATTEMPTS}", flush=True)
    raise DownloadError(
        f"{name} arrived broken {FETCH_ATTEMPTS} times ({problem}); nothing was extracted, "
        "check the disk space and network, then run `make data` again"
    )


def unpack_bundle(data_dir: Path, names: list[str]) -> list[str]:
    """Take the files from `<competition>.zip` (what `kaggle competitions download` without -f saves) if it is there."""
    bundle = data_dir / f"{COMPETITION}.zip"
    if not names or not bundle.is_file():
        return []
    problem = zip_problem(bundle)
    if problem:
        print(f"{bundle}: {problem}; ignoring it", flush=True)
        return []
    taken = []
    with zipfile.ZipFile(bundle) as archive:
        for name in set(names) & set(archive.namelist()):
            with atomic_path(data_dir / name) as tmp, archive.open(name) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            taken.append(name)
    if taken:
        print(f"Took {', '.join(sorted(taken))} from {bundle}", flush=True)
    return taken


def download(data_dir: Path) -> str:
    """Make data_dir complete and verified; return the one-line summary."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if is_complete(data_dir):
        n_train, n_test = verify(data_dir)
        return (
            f"{data_dir}: already complete ({n_train:,} train images, {n_test:,} test images, verified); nothing to do"
        )
    missing = [name for name in CSV_FILES if not (data_dir / name).is_file()]
    missing += [name for name, folder in ARCHIVES.items() if not (data_dir / folder).is_dir()]
    from_bundle = unpack_bundle(data_dir, missing)
    wanted = [name for name in missing if name not in from_bundle]
    sizes = competition_files() if wanted else {}
    unknown = [name for name in wanted if name not in sizes]
    if unknown:
        raise DownloadError(
            f"the competition {COMPETITION} has no file {', '.join(unknown)} (Kaggle lists {', '.join(sorted(sizes))})"
        )
    for name in missing:
        if name in CSV_FILES and name not in from_bundle:
            fetch(name, data_dir, sizes[name])
        elif name in ARCHIVES:
            fetch_sound_zip(name, data_dir, sizes.get(name, 0))
    prepare_data_dir(data_dir)  # lib.data unpacks each zip into a temp folder, then renames it into place
    n_train, n_test = verify(data_dir)
    return (
        f"{data_dir}: {n_train:,} train images and {n_test:,} test images, verified against "
        "train.csv and sample-submission.csv"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=str(DATA_ROOT), help="where to put the competition files (default data/)")
    args = parser.parse_args(argv)
    try:
        print(download(Path(args.data_dir).expanduser().resolve()))
    except (KaggleError, DownloadError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
