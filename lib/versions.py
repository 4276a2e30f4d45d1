"""The oldest package versions lib is tested on, and the check that stops a Kaggle kernel in one line below them."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

from packaging.version import Version  # keras depends on it, so it is there wherever lib can run

# What `make test-kaggle-oldest` installs (requirements-kaggle.txt: a test keeps the two in step) and runs lib's
# training, TTA and blend on. Claimed for Kaggle's image, whose packages are older than requirements.txt; not
# verified against it. Only metadata is read: nothing here may import Keras (lib.distribute picks the backend later).
MINIMUM_VERSIONS = {
    "tensorflow-cpu": "2.18.0",
    "keras": "3.10.0",  # 3.8 and 3.9: fit/evaluate metrics under tf.distribute are wrong (measured)
    "numpy": "2.0.2",
    "pandas": "2.2.2",
    "scipy": "1.14.1",
    "albumentations": "2.0.0",
    "opencv-python-headless": "4.10.0.84",
    "pillow": "10.4.0",
    "tqdm": "4.67.1",
}
# Other distributions that install the same module; where several are installed, the newest counts.
SAME_MODULE = {
    "tensorflow-cpu": ("tensorflow", "tensorflow-cpu"),
    "opencv-python-headless": (
        "opencv-python",
        "opencv-python-headless",
        "opencv-contrib-python",
        "opencv-contrib-python-headless",
    ),
}
OPTIONAL = frozenset({"tensorflow-cpu"})  # Keras on JAX runs lib without TensorFlow


class PackagesTooOld(RuntimeError):
    """IPython shows only this one line (its `_render_traceback_`), not a traceback."""

    def _render_traceback_(self) -> list[str]:
        return [f"error: {self}"]


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def too_old(version_of: Callable[[str], str | None] = installed_version) -> list[tuple[str, str | None, str]]:
    """(distribution, version found or None, minimum) for each package that is missing or older than its minimum."""
    problems = []
    for requirement, minimum in MINIMUM_VERSIONS.items():
        names = SAME_MODULE.get(requirement, (requirement,))
        found = [(name, version) for name in names if (version := version_of(name))]
        if not found:
            if requirement not in OPTIONAL:
                problems.append((requirement, None, minimum))
            continue
        name, version = max(found, key=lambda pair: Version(pair[1]))
        if Version(version) < Version(minimum):
            problems.append((name, version, minimum))
    return problems


def require_versions(version_of: Callable[[str], str | None] = installed_version) -> None:
    """Raise PackagesTooOld naming each package that is missing or too old (found vs needed) and what to do."""
    problems = too_old(version_of)
    if problems:
        found = ", ".join(f"{name} {version or 'missing'} (needs >= {minimum})" for name, version, minimum in problems)
        specs = " ".join(f'"{name}>={minimum}"' for name, _, minimum in problems)
        raise PackagesTooOld(
            f"lib needs newer packages than this environment has: {found}. Install at least those before lib runs "
            f"(with internet access: pip install {specs}, then restart the kernel), or build the kernel from an older "
            "commit of this project."
        )
