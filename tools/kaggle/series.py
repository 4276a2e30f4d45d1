"""`make kaggle-run-all`: the series on Kaggle: push the model runs, wait, push 05 on their outputs, fetch, submit."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from pathlib import Path

import pandas as pd

from lib.paths import MODEL_RUNS
from lib.runs import read_json, write_json
from tools.kaggle import remote
from tools.kaggle.api import KaggleError, require_credentials
from tools.kaggle.kernel import (
    ACCELERATORS,
    BUILD_DIR,
    DEFAULT_ACCELERATOR,
    build,
    built_digest,
    built_id,
    digest_in,
    kernel_id,
    output_dir,
    push_folder,
)

ENSEMBLE_NOTEBOOK = "05_ensemble"
ENSEMBLE_ACCELERATOR = "none"  # 05 only blends probabilities: no GPU quota spent
DEFAULT_TIMEOUT = "13h"  # above Kaggle's 12 h session limit, so a kernel ends before the wait does
DEFAULT_POLL_SECONDS = 60.0
RECORD = "push.json"  # in runs/kaggle/<slug>/: what was pushed last (bundle digest, version, when)


def parse_duration(text: str) -> float:
    """Seconds from `90`, `90s`, `45m` or `13h`."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not found:
        raise KaggleError(f"TIMEOUT={text!r}: give seconds, or a number with s, m or h (e.g. 13h)")
    return float(found.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[found.group(2)]


def record_path(kid: str) -> Path:
    return output_dir(kid) / RECORD


def pulled_digest(kid: str) -> str | None:
    """The bundle digest inside the kernel's current notebook on Kaggle (for a checkout with no push record)."""
    source = remote.pulled_source(kid)
    return digest_in(source) if source else None


def current_state(kid: str, version: int | None) -> remote.KernelState | None:
    """The kernel's state on Kaggle (of `version` when known), or None when Kaggle has no such kernel of yours."""
    try:
        return remote.status(f"{kid}/{version}" if version else kid)
    except remote.NoKernel:
        return None


def ensure_pushed(folder: Path, say=print) -> str:
    """Push the kernel built in `folder` unless Kaggle already runs, or has completed, this very bundle.

    Returns the id to poll: `owner/slug/<version>` when the version is known, else `owner/slug`.
    """
    kid, digest = built_id(folder), built_digest(folder)
    record = read_json(record_path(kid)) if record_path(kid).is_file() else {}
    state = current_state(kid, record.get("version"))
    known = record.get("digest") if state is not None and record else None
    if state is not None and known is None:
        known = pulled_digest(kid)
    polled = f"{kid}/{record['version']}" if record.get("version") and known == record.get("digest") else kid
    if state is not None and known == digest and not state.state.startswith("CANCEL") and state.state != "ERROR":
        if state.ended:
            say(f"{kid}: already {state.state} for this bundle; not pushed again")
        else:
            say(f"{kid}: already {state.state} with this bundle; not pushed again, waiting for it")
        return polled
    if state is not None and not state.ended:
        other = f"bundle {known[:12]}" if known else "a bundle this checkout did not push"
        raise KaggleError(
            f"{kid} is {state.state} with {other}; wait for it to end (`make kaggle-status KERNEL_ID={kid}`) or "
            f"cancel it on {remote.url(kid)}, then run this again to push your changes"
        )
    if state is not None and state.state == "ERROR" and known == digest:
        say(f"{kid}: its last run of this bundle ended in ERROR; pushing it again")
    kid, version = push_folder(folder)
    pushed_at = dt.datetime.now().isoformat(timespec="seconds")
    write_json(record_path(kid), {"kernel": kid, "digest": digest, "version": version, "pushed_at": pushed_at})
    say(f"{kid}: pushed{f' as version {version}' if version else ''} ({remote.url(kid)})")
    return f"{kid}/{version}" if version else kid


def wait_all(polled: list[str], timeout_s: float, poll_s: float) -> None:
    """Wait for the kernels; any that did not complete is reported with its log's traceback tail."""
    states = remote.wait(polled, timeout_s, poll_s)
    failed = [state for state in states.values() if not state.succeeded]
    if failed:
        reports = [remote.explain_failure(state, output_dir(state.kernel_id) / "log") for state in failed]
        raise KaggleError(
            "\n".join(reports) + "\nFix it, then run `make kaggle-run-all` again (finished kernels "
            "with an unchanged bundle are not pushed again)"
        )


def validation_table(folder: Path) -> pd.DataFrame | None:
    """05's validation accuracies (each model and the blend) with the blend weights, from its metrics.json."""
    found = sorted(folder.glob(f"**/{ENSEMBLE_NOTEBOOK}/metrics.json"))
    if not found:
        return None
    metrics = read_json(found[0])
    rows = {
        name: {"weight": metrics.get("weights", {}).get(name), "validation accuracy": accuracy}
        for name, accuracy in metrics.get("model_val_accuracy", {}).items()
    }
    rows["ensemble"] = {"weight": None, "validation accuracy": metrics.get("val_accuracy")}
    return pd.DataFrame.from_dict(rows, orient="index")


def run_all(
    accelerator: str = DEFAULT_ACCELERATOR,
    internet: bool = False,
    timeout: str = DEFAULT_TIMEOUT,
    poll_s: float = DEFAULT_POLL_SECONDS,
    weights: bool = False,
    submit: bool = False,
    message: str | None = None,
    data_dir: str | None = None,
    weights_dataset: str | None = None,
    build_root: Path = BUILD_DIR.parent / "kaggle-series",
    say=print,
) -> Path:
    """The series on Kaggle, resumable: returns the folder holding 05's downloaded output."""
    timeout_s = parse_duration(timeout)
    require_credentials()
    model_ids = [kernel_id(name, None) for name in MODEL_RUNS]
    polled, bundles = [], []
    for name in MODEL_RUNS:
        folder = build(name, None, build_root / name, internet, accelerator, weights_dataset=weights_dataset)
        polled.append(ensure_pushed(folder, say))
        bundles.append(f"{built_id(folder)}@{built_digest(folder)}")
    say(f"Waiting for {', '.join(model_ids)} (Ctrl-C stops waiting; they go on running on Kaggle)")
    wait_all(polled, timeout_s, poll_s)

    # 05's digest names the model bundles: new model outputs make its finished run stale.
    folder = build(
        ENSEMBLE_NOTEBOOK,
        None,
        build_root / ENSEMBLE_NOTEBOOK,
        internet,
        ENSEMBLE_ACCELERATOR,
        kernel_sources=model_ids,
        upstream=" ".join(bundles),
        weights_dataset="none",  # it trains nothing
    )
    ensemble = ensure_pushed(folder, say)
    wait_all([ensemble], timeout_s, poll_s)

    kid = built_id(folder)
    dest = remote.fetch_output(ensemble, output_dir(kid), weights=weights)
    say(f"{kid}: output downloaded to {dest}{'' if weights else ' (no weights; WEIGHTS=1 fetches them too)'}")
    table = validation_table(dest)
    if table is not None:
        say(table.to_string(float_format=lambda x: f"{x:.4f}", na_rep=""))
    submission = dest / "submission.csv"
    if not submission.is_file():
        raise KaggleError(f"{kid} completed but its output has no submission.csv; open {remote.url(kid)}")
    if submit:
        from lib.paths import resolve_data_dir
        from tools.kaggle.submit import submit as upload

        say(upload(submission, resolve_data_dir(data_dir), message, force=False))
    else:
        say(f"Submission: {submission}; upload it with `make submit FILE={submission}` (or rerun with SUBMIT=1)")
    return dest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--accelerator",
        choices=list(ACCELERATORS),
        default=DEFAULT_ACCELERATOR,
        help="for the model runs (05 runs on CPU)",
    )
    parser.add_argument("--internet", action="store_true", help="enable the kernels' internet")
    parser.add_argument("--timeout", default=DEFAULT_TIMEOUT, help="stop waiting after this long (e.g. 13h, 90m)")
    parser.add_argument("--poll", type=float, default=DEFAULT_POLL_SECONDS, help="seconds between status checks")
    parser.add_argument("--weights", action="store_true", help="also download the weights from 05's output")
    parser.add_argument("--submit", action="store_true", help="validate and upload the submission at the end")
    parser.add_argument("--message", "-m", help="submission message (default: built from 05's run record)")
    parser.add_argument("--data-dir", help="data folder whose sample-submission.csv the submission is checked against")
    parser.add_argument(
        "--weights-dataset", help="weights dataset for the model runs (default <user>/sf-dl-cars-keras-weights)"
    )
    parser.add_argument("--build-root", type=Path, default=BUILD_DIR.parent / "kaggle-series", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from lib.submission import SubmissionError

    try:
        run_all(
            accelerator=args.accelerator,
            internet=args.internet,
            timeout=args.timeout,
            poll_s=args.poll,
            weights=args.weights,
            submit=args.submit,
            message=args.message,
            data_dir=args.data_dir,
            weights_dataset=args.weights_dataset,
            build_root=args.build_root,
        )
    except KeyboardInterrupt:
        print(
            "\nStopped waiting. The kernels go on running on Kaggle; `make kaggle-run-all` resumes waiting "
            "without pushing them again.",
            file=sys.stderr,
        )
        return 130
    except (KaggleError, SubmissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
