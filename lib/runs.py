"""Run folders: seeding, atomic writes, resolved parameters, package versions, metrics and probability files."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from lib import NUM_CLASSES
from lib.paths import PROJECT_ROOT
from lib.versions import installed_version

_UMASK = os.umask(0)  # the only way to read the umask is to set it; restored on the next line
os.umask(_UMASK)
PROB_COLUMNS = [f"prob_{k}" for k in range(NUM_CLASSES)]
# The only parameters that cannot change the trained weights, so they may differ between a run and its resume:
# where the run lives, how much it prints, how it is fed, when it stops, how it predicts and names its submission.
# `distribute` is a request: what counts is the plan it resolved to on this hardware, which experiment.setup
# records as `distribution` (strategy, replicas, global batch). Every other parameter counts: changing it moves
# the old run aside (RunRecord.start).
RESUME_SAFE = frozenset(
    {
        "run_name", "run_dir", "profile",  # where the run lives
        "verbose", "workers", "threads", "distribute",
        "time_budget_minutes", "predict_reserve_minutes",
        "tta", "tta_passes", "predict_image_size",
        "lr_find_steps",
        "submission_name",
    }
)  # fmt: skip
TRACKED_PACKAGES = (
    "keras",
    "tensorflow",
    "tensorflow-cpu",
    "jax",
    "jaxlib",
    "albumentations",
    "opencv-python-headless",
    "numpy",
    "pandas",
    "scipy",
    "matplotlib",
    "papermill",
    "jupytext",
    "kaggle",
)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and the Keras backend from one number."""
    import keras

    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds the legacy global RNG that third-party code still draws from
    keras.utils.set_random_seed(seed)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temp path beside `path`; rename it over `path` only if the block succeeds.

    A crash or kill mid-write leaves the old file (or no file), never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results should read like any other file
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path):
    return json.loads(Path(path).read_text())


def write_csv(path, frame: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def package_versions() -> dict:
    installed = {name: installed_version(name) for name in TRACKED_PACKAGES}
    return {"python": platform.python_version(), **{name: v for name, v in installed.items() if v is not None}}


def git_commit() -> str | None:
    """The checkout's commit, with `-dirty` when there are uncommitted changes; None outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def changed_settings(previous: dict, params: dict) -> list[str]:
    """The parameters whose change makes a run in progress unusable: every key outside RESUME_SAFE whose value
    differs (a list that only grew at the end, e.g. an appended stage, keeps the finished part)."""
    keys = sorted((set(previous) | set(params)) - RESUME_SAFE)
    return [key for key in keys if not _compatible(previous.get(key), params.get(key))]


def _compatible(old, new) -> bool:
    """Same value, or a list that only grew at the end (stages appended to a run keep the finished ones)."""
    same = lambda a, b: json.dumps(a, default=str, sort_keys=True) == json.dumps(b, default=str, sort_keys=True)
    if isinstance(old, list) and isinstance(new, list) and len(new) > len(old):
        return same(old, new[: len(old)])
    return same(old, new)


class RunRecord:
    """One folder per notebook run (timm-style): params.json, versions.json, history.csv, weights, probs, metrics."""

    def __init__(self, folder: str | os.PathLike):
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.dir / name

    def start(self, params: dict, resumable: bool = True) -> None:
        """Record params and versions. A resumable run (one that trains) whose folder holds a run with other
        settings (any parameter outside RESUME_SAFE) moves that run aside first (nothing is deleted), so a
        resume never mixes two set-ups."""
        old = self.path("params.json")
        if old.exists() and resumable:
            changed = changed_settings(read_json(old), params)
            if changed:
                stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
                aside = self.dir.with_name(f"{self.dir.name}.old-{stamp}")
                shutil.move(str(self.dir), aside)
                print(f"Settings changed ({', '.join(changed)}): previous run moved to {aside}")
                self.dir.mkdir(parents=True)
        write_json(self.path("params.json"), params)
        write_json(
            self.path("versions.json"),
            {
                **package_versions(),
                "git_commit": git_commit(),
                "started": dt.datetime.now().isoformat(timespec="seconds"),
            },
        )

    def update_metrics(self, **metrics) -> dict:
        path = self.path("metrics.json")
        merged = {**(read_json(path) if path.exists() else {}), **metrics}
        write_json(path, merged)
        return merged

    def metrics(self) -> dict:
        path = self.path("metrics.json")
        return read_json(path) if path.exists() else {}

    def save_probs(self, split: str, ids, probs: np.ndarray, labels=None) -> Path:
        """Write `probs_<split>.csv`: Id, optional Category (true label), prob_0..prob_9."""
        frame = pd.DataFrame(np.asarray(probs, dtype="float64"), columns=PROB_COLUMNS)
        frame.insert(0, "Id", list(ids))
        if labels is not None:
            frame.insert(1, "Category", np.asarray(labels, dtype=int))
        return write_csv(self.path(f"probs_{split}.csv"), frame)


def load_probs(run_folder: str | os.PathLike, split: str) -> pd.DataFrame:
    """Read back a `probs_<split>.csv` written by `RunRecord.save_probs`."""
    path = Path(run_folder) / f"probs_{split}.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the model's notebook first (for example `make 03_xception`).")
    return pd.read_csv(path)


def probs_matrix(frame: pd.DataFrame) -> np.ndarray:
    return frame[PROB_COLUMNS].to_numpy(dtype="float64")
