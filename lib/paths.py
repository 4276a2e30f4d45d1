"""Every path the project uses, resolved in one place (local checkout, Kaggle kernel, or an explicit folder)."""

from __future__ import annotations

import argparse
import os
import tempfile
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


def scratch_root() -> Path:
    """Where large working files go (zips unpacked from a read-only input): on Kaggle the machine's temp folder, as
    everything under /kaggle/working becomes the kernel's output (and 05's input); elsewhere the output root."""
    if on_kaggle() and not os.environ.get("CARS_OUTPUT_ROOT"):
        return Path(tempfile.gettempdir()) / "sf-dl-cars"
    return output_root()


def runs_dir() -> Path:
    return output_root() / "runs"


def submissions_dir() -> Path:
    return output_root() / "submissions"


# The runs that train a model, in the series' order: run name -> the notebook that trains it. A run named like its
# notebook is that notebook with its own profile file; another name runs the same notebook with the run's own
# profile file, profiles/<profile>/<run>.yaml (03_convnext: notebook 03 with ConvNeXt and its settings). 05 blends
# them, 06 explains them, `make run-all` runs each (`make <run>`), `make kaggle-run-all` pushes each as a kernel
# before 05, `make weights` fetches their backbones.
MODEL_RUNS = {
    "03_xception": "03_xception",
    "03_convnext": "03_xception",
    "04_efficientnetb7": "04_efficientnetb7",
}


def notebook_of(run: str) -> str:
    """The notebook a run executes: its own name, or for a model run under another name, the notebook it runs."""
    return MODEL_RUNS.get(run, run)


def series_notebooks() -> list[str]:
    """The series' notebooks in run order: the NN_topic names of notebooks/NN_*.py."""
    return sorted(path.stem for path in (PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def series_runs() -> list[str]:
    """Every run of the series in order (`make run-all`): each notebook's own run, followed by the model runs of
    that notebook under other names."""
    runs = []
    for notebook in series_notebooks():
        runs.append(notebook)
        runs += [run for run, of in MODEL_RUNS.items() if of == notebook and run != notebook]
    return runs


def reports_dir() -> Path:
    """`make report`'s sites, reports/<profile>/, beside runs/ and submissions/."""
    return output_root() / "reports"


def has_competition_layout(folder: Path) -> bool:
    """True when `folder` holds train.csv plus the train images as a folder or a zip."""
    folder = Path(folder)
    return (folder / "train.csv").is_file() and ((folder / "train").is_dir() or (folder / "train.zip").is_file())


# Kaggle mounts attached inputs as /kaggle/input/<slug>/ (its docs) or, in kernels seen in 2026, as
# /kaggle/input/{competitions,datasets/<owner>,notebooks/<user>}/<slug>/; neither is documented as a rule, so
# lib searches the input for what it needs instead of trusting one layout.
IMAGE_FOLDERS = frozenset({"train", "test_upload"})  # ~22k photos on the real data: never searched
COMPETITION_SEARCH_DEPTH = 4  # input/datasets/<owner>/<slug> is 3 levels down
INPUT_SEARCH_DEPTH = 8  # input/notebooks/<user>/<slug>/runs/<profile>/<run> is 6
PROBS_FILE = "probs_val.csv"  # what makes a folder a finished model run for the ensemble


class RunNotFoundError(ValueError):
    """A model run the ensemble needs is missing, or found in more than one place."""


def _walk_input(max_depth: int):
    """(folder, file names) for every folder under <kaggle root>/input down to `max_depth` levels, in sorted
    order; image folders, hidden folders and the insides of a competition-layout folder are skipped."""
    base = kaggle_root() / "input"
    for folder, subfolders, files in os.walk(base, followlinks=True):  # a mount may be a link; depth ends loops
        here = Path(folder)
        if len(here.relative_to(base).parts) >= max_depth or has_competition_layout(here):
            subfolders.clear()
        else:
            subfolders[:] = sorted(d for d in subfolders if d not in IMAGE_FOLDERS and not d.startswith("."))
        yield here, files


def find_kaggle_input(filename: str, max_depth: int = INPUT_SEARCH_DEPTH) -> list[Path]:
    """Every file named exactly `filename` under <kaggle root>/input, sorted, each file once even when two mount
    paths lead to it (the first path kept); [] outside a Kaggle kernel."""
    if not on_kaggle():
        return []
    matches = sorted(folder / filename for folder, files in _walk_input(max_depth) if filename in files)
    unique = {}
    for path in matches:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def kaggle_input_dir() -> Path | None:
    """The competition's input folder inside a Kaggle kernel, wherever Kaggle mounted it: a folder with the
    competition layout, the one named like the competition first, then the shallowest."""
    base = kaggle_root() / "input"
    if not base.is_dir():
        return None
    found = [folder for folder, _ in _walk_input(COMPETITION_SEARCH_DEPTH) if has_competition_layout(folder)]
    return min(found, key=lambda f: (f.name != COMPETITION, len(f.parts), str(f)), default=None)


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


def find_run_dir(profile: str, name: str) -> Path:
    """The finished run `name` (a folder holding probs_val.csv): runs/<profile>/<name> of this output root, else,
    in a Kaggle kernel, the one folder named `name` under the attached inputs (an earlier kernel's output),
    preferring .../<profile>/<name>; the only run of another profile is taken with a printed note."""
    local = run_dir(profile, name)
    if (local / PROBS_FILE).is_file():
        return local
    fix = f"run it first: locally `make {name}` (or `make run-all`)"
    if not on_kaggle():
        raise RunNotFoundError(f"no run {name} (profile {profile}): {local / PROBS_FILE} is missing; {fix}.")
    base = kaggle_root() / "input"
    found = [p.parent for p in find_kaggle_input(PROBS_FILE) if p.parent.name == name]
    same_profile = [folder for folder in found if folder.parent.name == profile]
    if len(same_profile) == 1:
        return same_profile[0]
    candidates = same_profile or found
    profiles = sorted({folder.parent.name for folder in found})
    if len(candidates) > 1:
        raise RunNotFoundError(
            f"run {name} (profile {profile}) is in {len(candidates)} places under {base}: "
            f"{', '.join(map(str, candidates))}; attach only one kernel output that holds it"
            + ("." if same_profile else f", or set profile to the one you mean ({', '.join(profiles)}).")
        )
    if candidates:
        print(f"{name}: no run for profile {profile}; taking the only one found, profile {found[0].parent.name}.")
        return found[0]
    raise RunNotFoundError(
        f"no run {name} (profile {profile}): no {local / PROBS_FILE}, and no folder {name}/ holding {PROBS_FILE} "
        f"under {base} (searched {INPUT_SEARCH_DEPTH} levels deep); {fix}, or on Kaggle attach the output of the "
        f"kernel that ran {name} (`make kaggle-run-all` attaches every model run's kernel through kernel_sources)."
    )


def keras_home() -> Path:
    """Keras caches downloaded weights under $KERAS_HOME/models (default ~/.keras)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["data-dir", "profile", "runs-dir", "submissions-dir", "series"])
    parser.add_argument("data_dir", nargs="?", default=None)
    args = parser.parse_args(argv)
    if args.what == "series":
        print(" ".join(series_runs()))
        return
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
