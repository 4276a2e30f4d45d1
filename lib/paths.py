"""Every path the project uses, resolved in one place (local checkout, Kaggle kernel, or an explicit folder)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from lib import COMPETITION

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = PROJECT_ROOT / "data"
DEMO_DIR = DATA_ROOT / "demo"
SHARED_DIR = PROJECT_ROOT.parent / "shared" / COMPETITION  # real reference files, read by tests only

DEMO_MARKER = "test_labels.csv"  # only the generated demo ships the hidden test labels


def kaggle_root() -> Path:
    """`/kaggle` inside a Kaggle kernel; `CARS_KAGGLE_ROOT` overrides it (tests use a fake tree)."""
    return Path(os.environ.get("CARS_KAGGLE_ROOT", "/kaggle"))


def on_kaggle() -> bool:
    return (kaggle_root() / "input").is_dir() and (kaggle_root() / "working").is_dir()


def output_root() -> Path:
    """Where runs and submissions go: the checkout, `/kaggle/working` on Kaggle, or `CARS_OUTPUT_ROOT` if set."""
    if os.environ.get("CARS_OUTPUT_ROOT"):
        return Path(os.environ["CARS_OUTPUT_ROOT"])
    return kaggle_root() / "working" if on_kaggle() else PROJECT_ROOT


def runs_dir() -> Path:
    return output_root() / "runs"


def submissions_dir() -> Path:
    return output_root() / "submissions"


def has_competition_layout(folder: Path) -> bool:
    """True when `folder` holds train.csv plus the train images as a folder or a zip."""
    folder = Path(folder)
    return (folder / "train.csv").is_file() and ((folder / "train").is_dir() or (folder / "train.zip").is_file())


def kaggle_input_dir() -> Path | None:
    """The competition's input folder inside a Kaggle kernel, wherever Kaggle mounted it."""
    base = kaggle_root() / "input"
    for candidate in (base / COMPETITION, base / "competitions" / COMPETITION, base):
        if has_competition_layout(candidate):
            return candidate
    return None


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder to use: explicit > Kaggle input > real data in data/ > the offline demo."""
    if data_dir:
        return Path(data_dir).expanduser().resolve()
    if on_kaggle() and (found := kaggle_input_dir()) is not None:
        return found
    if has_competition_layout(DATA_ROOT):
        return DATA_ROOT
    return DEMO_DIR


def is_demo(data_dir: str | os.PathLike) -> bool:
    return (Path(data_dir) / DEMO_MARKER).is_file()


def default_profile(data_dir: str | os.PathLike) -> str:
    return "demo" if is_demo(data_dir) or Path(data_dir).resolve() == DEMO_DIR.resolve() else "full"


def run_dir(profile: str, name: str) -> Path:
    """One folder per notebook run: runs/<profile>/<notebook name>."""
    return runs_dir() / profile / name


def keras_home() -> Path:
    """Keras caches downloaded weights under $KERAS_HOME/models (default ~/.keras)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["data-dir", "profile", "runs-dir", "submissions-dir"])
    parser.add_argument("data_dir", nargs="?", default=None)
    args = parser.parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir)
    print(
        {
            "data-dir": data_dir,
            "profile": default_profile(data_dir),
            "runs-dir": runs_dir(),
            "submissions-dir": submissions_dir(),
        }[args.what]
    )


if __name__ == "__main__":
    main()
