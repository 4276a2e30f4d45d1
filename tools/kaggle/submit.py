"""`make submit` / `make submissions`: check (lib.submission), upload a submission; keep scores in leaderboard.csv."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import pandas as pd

from lib import COMPETITION
from lib.paths import DATA_ROOT, default_profile, is_demo, resolve_data_dir, run_dir, submissions_dir
from lib.runs import git_commit, read_json, write_csv
from lib.submission import SubmissionError, read_sample_ids, validate_submission
from tools.kaggle import api
from tools.kaggle.api import KaggleError
from tools.kaggle.download import fetch

ENSEMBLE = "05_ensemble"
SAMPLE = "sample-submission.csv"


def find_run_record(file: Path, profile: str) -> tuple[str, dict]:
    """The run that made `file`: a metrics.json beside it (kernel output), else runs/<profile>/<name>."""
    candidates = [file.parent / "metrics.json"]
    candidates += sorted(file.parent.glob("runs/*/*/metrics.json"), key=lambda p: p.parent.name != ENSEMBLE)
    name = ENSEMBLE if file.stem == "submission" else file.stem
    candidates.append(run_dir(profile, name) / "metrics.json")
    # Notebooks name their submission with the `submission_name` parameter (03_xception -> xception.csv).
    for params in sorted(run_dir(profile, name).parent.glob("*/params.json")):
        if read_json(params).get("submission_name") == file.stem:
            candidates.append(params.parent / "metrics.json")
    for path in candidates:
        if path.is_file():
            return path.parent.name, read_json(path)
    return name, {}


def default_message(file: Path, data_dir: Path) -> str:
    profile = default_profile(data_dir)
    name, metrics = find_run_record(file, profile)
    models = metrics.get("models") or metrics.get("model") or name
    if isinstance(models, (list, tuple)):
        models = "+".join(map(str, models))
    parts = [f"{name}" if models == name else f"{name} ({models})", f"profile {metrics.get('profile', profile)}"]
    if metrics.get("val_accuracy") is not None:
        parts.append(f"val_acc {float(metrics['val_accuracy']):.4f}")
    else:
        parts.append("no run record")
    parts += [f"git {git_commit() or 'unknown'}", dt.date.today().isoformat()]
    return " | ".join(parts)


def competition_sample(data_dir: Path, sample_dir: Path = DATA_ROOT) -> Path:
    """The competition's own sample-submission.csv, for checking a file made elsewhere (on Kaggle, say) when the data
    in use is the demo or has none: cached in data/, else downloaded alone (a small file)."""
    cached = sample_dir / SAMPLE
    if cached.is_file() and not is_demo(sample_dir):
        return cached
    why = "is the offline demo" if is_demo(data_dir) else f"has no {SAMPLE}"
    print(f"The data folder in use ({data_dir}) {why}: fetching the competition's {SAMPLE} into {sample_dir}/")
    try:
        fetch(SAMPLE, sample_dir)
    except KaggleError as err:
        raise SubmissionError(
            f"refused, nothing was uploaded: the data folder in use ({data_dir}) {why}, and the competition's {SAMPLE} "
            f"to check the file against could not be downloaded ({err}); pass DATA_DIR=<folder holding the "
            f"competition's {SAMPLE}>"
        ) from err
    return cached


def fits(file: Path, sample: Path) -> bool:
    try:
        validate_submission(file, read_sample_ids(sample))
    except SubmissionError:
        return False
    return True


def submit(file: Path, data_dir: Path, message: str | None, force: bool, sample_dir: Path = DATA_ROOT) -> str:
    if not file.is_file():
        raise SubmissionError(f"{file} does not exist: run the notebooks first (`make run-all`) or pass FILE=")
    sample = data_dir / SAMPLE
    if sample.is_file() and is_demo(data_dir) and not force:
        if fits(file, sample):
            raise SubmissionError(
                f"refused, nothing was uploaded: {file} was checked against the offline demo data ({data_dir}); a "
                "demo submission has the demo's ids and Kaggle would reject it. Run `make data` and the notebooks on "
                "the real data, or pass FORCE=1 to upload it anyway"
            )
        sample = competition_sample(data_dir, sample_dir)  # a file made elsewhere: check it against the real ids
    elif not sample.is_file():
        sample = competition_sample(data_dir, sample_dir)
    try:
        frame = validate_submission(file, read_sample_ids(sample))
    except SubmissionError as err:
        raise SubmissionError(f"refused, nothing was uploaded: {err} (checked against {sample})") from err
    message = message or default_message(file, data_dir)
    ref = upload(file, message)
    return (
        f"Uploaded {file} ({len(frame)} rows) to {COMPETITION} as submission {ref}: {message!r}. "
        "Scores: `make submissions`"
    )


def upload(file: Path, message: str) -> int:
    """Kaggle's three steps, as kaggle 2.2.5's competition_submit takes them: ask for an upload URL, send the file
    there, then create the submission from the upload's token. Returns the submission's ref."""
    from kagglesdk.competitions.types.competition_api_service import (
        ApiCreateSubmissionRequest,
        ApiStartSubmissionUploadRequest,
    )

    competitions = api.client().competitions.competition_api_client
    about, rules = f"competition {COMPETITION}", {403: api.rules_refusal()}
    start = ApiStartSubmissionUploadRequest()
    start.competition_name, start.file_name = COMPETITION, file.name
    start.content_length, start.last_modified_epoch_seconds = file.stat().st_size, int(file.stat().st_mtime)
    started = api.call(competitions.start_submission_upload, start, about, rules)
    api.upload(started.create_url, file, file.name)
    create = ApiCreateSubmissionRequest()
    create.competition_name, create.blob_file_tokens = COMPETITION, started.token
    create.submission_description = message
    return api.call(competitions.create_submission, create, about, rules).ref


# The columns of submissions/leaderboard.csv: those `kaggle competitions submissions --csv` printed, which made it.
COLUMNS = ("ref", "fileName", "date", "description", "status", "publicScore", "privateScore")


def fetch_submissions() -> pd.DataFrame:
    """This account's submissions to the competition, newest first, one row per submission."""
    from kagglesdk.competitions.types.competition_api_service import ApiListSubmissionsRequest

    rows, token = [], ""
    while True:
        request = ApiListSubmissionsRequest()
        request.competition_name, request.page_token = COMPETITION, token
        send = api.client().competitions.competition_api_client.list_submissions
        answer = api.call(send, request, f"competition {COMPETITION}", {403: api.rules_refusal()})
        for item in answer.submissions:
            when = item.date.strftime("%Y-%m-%d %H:%M:%S") if item.date else ""
            values = (item.ref, item.file_name, when, item.description, item.status.name)
            values += (item.public_score, item.private_score)
            rows.append(dict(zip(COLUMNS, map(str, values))))
        token = answer.next_page_token
        if not token:
            return pd.DataFrame(rows, columns=COLUMNS)


def list_submissions(leaderboard: Path) -> str:
    """Print this user's submissions and merge new/updated ones into the local history CSV."""
    fresh = fetch_submissions()
    if fresh.empty:
        return "No submissions yet for " + COMPETITION
    old = pd.read_csv(leaderboard, dtype=str, keep_default_na=False) if leaderboard.is_file() else fresh.iloc[0:0]
    if "status" in old.columns:  # rows the CLI wrote print the enum's class too: SubmissionStatus.COMPLETE
        old["status"] = old["status"].str.removeprefix("SubmissionStatus.")
    merged = pd.concat([old, fresh], ignore_index=True)
    # A pending submission is listed again once scored: keep its latest row; keep rows Kaggle no longer lists.
    merged = merged.drop_duplicates(subset="ref", keep="last").sort_values("date", ascending=False, kind="stable")
    write_csv(leaderboard, merged)
    added = len(merged) - len(old)
    table = fresh.to_string(index=False, columns=["ref", "date", "description", "status", "publicScore"])
    return f"{table}\n{leaderboard}: {len(merged)} submissions kept ({added} new)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", nargs="?", choices=["submit", "list"], default="submit")
    parser.add_argument("--file", help="submission to upload (default submissions/submission.csv)")
    parser.add_argument("--message", "-m", help="submission message (default: built from the run record)")
    parser.add_argument("--force", action="store_true", help="upload a demo-data submission anyway")
    parser.add_argument("--data-dir", help="data folder whose sample-submission.csv the file is checked against")
    parser.add_argument("--leaderboard", help="local history of scores (default submissions/leaderboard.csv)")
    parser.add_argument("--sample-dir", type=Path, default=DATA_ROOT, help=argparse.SUPPRESS)  # tests: not data/
    args = parser.parse_args(argv)
    try:
        if args.action == "list":
            print(
                list_submissions(Path(args.leaderboard) if args.leaderboard else submissions_dir() / "leaderboard.csv")
            )
        else:
            file = Path(args.file) if args.file else submissions_dir() / "submission.csv"
            data_dir = resolve_data_dir(args.data_dir)
            print(submit(file.expanduser().resolve(), data_dir, args.message, args.force, args.sample_dir))
    except (KaggleError, SubmissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
