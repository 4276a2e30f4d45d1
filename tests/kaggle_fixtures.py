"""Helpers for the Kaggle tests: a sandboxed environment whose Kaggle is the fake server, tiny competition zips."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
USERNAME = "tester"
SECRET_KEY = "s3cr3t-kaggle-key-0123456789"
# Where a request goes when a test starts no server: nothing listens there, so it is refused at once.
NOWHERE = "http://127.0.0.1:9"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def kaggle_env(tmp_path: Path, credentials: bool = True, root: Path = PROJECT_ROOT, server=None, **extra: str) -> dict:
    """Environment for running the entry points: HOME and Kaggle config in tmp_path, and the real kaggle client
    pointed at `server` (tests/fakes/kaggle_server.py), or at nothing.

    kagglesdk sends every call to http://localhost/api/v1/... under KAGGLE_API_ENVIRONMENT=LOCALHOST, through the HTTP
    proxy the environment names (requests' own rule): the fake server, on a free port, is that proxy. No port is
    fixed, so tests run side by side, and no request can leave this machine."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KAGGLE_", "XDG_CONFIG")) and k.lower() not in PROXY_VARIABLES
    }
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    fake_root = tmp_path / "fake-kaggle"  # lib.paths: outputs go to <root>/working, never into the checkout
    (fake_root / "input").mkdir(parents=True, exist_ok=True)
    (fake_root / "working").mkdir(exist_ok=True)
    proxy = server.proxy if server is not None else NOWHERE
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # this venv's tools first
        HOME=str(home),
        KAGGLE_CONFIG_DIR=str(home / ".kaggle"),
        CARS_KAGGLE_ROOT=str(fake_root),
        PYTHONPATH=str(root),
        KAGGLE_API_ENVIRONMENT="LOCALHOST",
        HTTP_PROXY=proxy,
        http_proxy=proxy,
        HTTPS_PROXY=NOWHERE,
        https_proxy=NOWHERE,
        NO_PROXY="",
        no_proxy="",
        CARS_KAGGLE_RETRY_SECONDS="0",
        CARS_KAGGLE_TIMEOUT_SECONDS="10",
    )
    if credentials:
        env.update(KAGGLE_USERNAME=USERNAME, KAGGLE_KEY=SECRET_KEY)
    env.update(extra)
    return env


def run_module(module: str, *args: str, env: dict, cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def kaggle_make(tmp_path: Path, env: dict, root: Path = PROJECT_ROOT):
    """`make` with kaggle.mk included as the project's Makefile includes it (PY, a no-op venv, help), for
    `make(*args) -> CompletedProcess` calls in the checkout `root`, with the environment `env`."""
    makefile = tmp_path / "Makefile"
    makefile.write_text(
        f"PY := {sys.executable}\nvenv:\n\t@true\n"
        "help:\n\t@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST)\n"
        f"include {root / 'kaggle.mk'}\n"
    )
    env = {k: v for k, v in env.items() if k != "MAKEFLAGS"}

    def make(*args: str) -> subprocess.CompletedProcess:
        command = ["make", "-s", "-f", str(makefile), *args]
        return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)

    return make


def serve_competition(server, folder: Path) -> None:
    """Let the fake server serve every file in `folder` as a competition data file."""
    server.files.update({path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()})


def tiny_jpeg(seed: int) -> bytes:
    import cv2

    pixels = np.random.default_rng(seed).integers(0, 255, (12, 16, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", pixels)
    assert ok
    return encoded.tobytes()


def make_competition_files(folder: Path, per_class: int = 1, n_classes: int = 3, n_test: int = 4) -> dict:
    """What Kaggle serves for the competition, in miniature: the two CSVs, train.zip and test.zip."""
    folder.mkdir(parents=True, exist_ok=True)
    train_rows = [(f"{1000 + c * 10 + k}.jpg", c) for c in range(n_classes) for k in range(per_class)]
    test_ids = [f"{5000 + k}.jpg" for k in range(n_test)]
    (folder / "train.csv").write_text("Id,Category\n" + "".join(f"{i},{c}\n" for i, c in train_rows))
    (folder / "sample-submission.csv").write_text("Id,Category\n" + "".join(f"{i},0\n" for i in test_ids))
    with zipfile.ZipFile(folder / "train.zip", "w") as z:
        for n, (image_id, category) in enumerate(train_rows):
            z.writestr(f"train/{category}/{image_id}", tiny_jpeg(n))
    with zipfile.ZipFile(folder / "test.zip", "w") as z:
        for n, image_id in enumerate(test_ids):
            z.writestr(f"test_upload/{image_id}", tiny_jpeg(1000 + n))
    return {"train": train_rows, "test": test_ids}
