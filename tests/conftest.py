"""Shared fixtures: the real reference files (skipped when absent), small generated demo data sets, a fake Kaggle."""

import pytest

from lib import paths


@pytest.fixture(scope="session")
def shared_dir():
    """../shared/sf-dl-car-classification: the competition's real CSVs and 30 real test photos."""
    if not (paths.SHARED_DIR / "train.csv").is_file():
        pytest.skip(f"real reference files not found at {paths.SHARED_DIR} (../shared is absent in this checkout)")
    return paths.SHARED_DIR


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """A demo data set in the competition layout: 8 train and 2 test photos per class. Treat as read-only."""
    from lib.demo import generate

    return generate(tmp_path_factory.mktemp("data") / "demo", train_per_class=8, test_per_class=2, seed=1)


@pytest.fixture()
def demo_copy(tiny_demo, tmp_path):
    """A private copy of the tiny demo that a test may damage."""
    import shutil

    return shutil.copytree(tiny_demo, tmp_path / "demo")


@pytest.fixture()
def project_copy(tmp_path):
    """The checkout's code, notebooks, profiles and make files copied into tmp_path/project (its .venv linked), for
    tests that edit a source and ask make or the toolbox there what that changes."""
    import shutil

    root = tmp_path / "project"
    skip = shutil.ignore_patterns("__pycache__", "*.ipynb", ".ipynb_checkpoints")
    for folder in ("lib", "tools", "notebooks", "profiles"):
        shutil.copytree(paths.PROJECT_ROOT / folder, root / folder, ignore=skip)
    for name in ("Makefile", "kaggle.mk", "pyproject.toml", "requirements.txt", "requirements-gpu.txt"):
        shutil.copy2(paths.PROJECT_ROOT / name, root / name)  # mtimes kept: .venv stays newer than its inputs
    (root / ".venv").symlink_to(paths.PROJECT_ROOT / ".venv")
    return root


@pytest.fixture()
def fake_kaggle():
    """A fake Kaggle API server (tests/fakes/kaggle_server.py) of its own, on a free local port, for one test;
    `kaggle_env(..., server=fake_kaggle)` points the real kaggle client at it."""
    from lib import COMPETITION
    from tests.fakes.kaggle_server import FakeKaggle
    from tests.kaggle_fixtures import SECRET_KEY, USERNAME

    server = FakeKaggle(COMPETITION, USERNAME, SECRET_KEY).start()
    yield server
    server.stop()
