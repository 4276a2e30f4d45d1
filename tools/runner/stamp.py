"""make's stamps: a notebook run is up to date when its inputs hash to what its last success recorded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lib.paths import PROJECT_ROOT
from lib.runs import write_text

STAMP = ".done"  # in the run folder
MISSING = "missing"


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else MISSING


def shown(path: Path) -> str:
    """A path as the stamp keeps it and a message names it: relative to the checkout when it lies inside."""
    path = Path(path).absolute()
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def fingerprint(files: list[Path], values: dict[str, str]) -> dict:
    """Each input file's sha256 (or "missing") and the settings that change a run (data folder, profile, ...)."""
    return {"files": {shown(f): file_hash(Path(f)) for f in sorted(set(map(Path, files)))}, "values": dict(values)}


def changes(run_folder: Path, current: dict) -> list[str] | None:
    """What differs from the last successful run's stamp: [] when nothing did, None when there is no stamp."""
    stamp = Path(run_folder) / STAMP
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or "files" not in recorded:
        return None  # a stamp from before stamps named their inputs
    old, new = recorded["files"], current["files"]
    changed = [name for name in new if old.get(name) != new[name]]
    changed += [f"{name} (no longer an input)" for name in old if name not in new]
    changed += [f"{key}={value}" for key, value in current["values"].items() if recorded["values"].get(key) != value]
    return changed


def mark(run_folder: Path, current: dict) -> None:
    write_text(Path(run_folder) / STAMP, json.dumps(current, indent=1, sort_keys=True) + "\n")
