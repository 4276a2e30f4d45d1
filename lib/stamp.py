"""Notebook stamps for make: a notebook is up to date when its inputs hash to what its last success recorded."""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

STAMP = ".done"


def fingerprint(files: list[str], values: list[str]) -> str:
    """SHA-256 over the named files' bytes (missing files count as absent) and extra values."""
    digest = hashlib.sha256()
    for name in sorted(set(files)):
        path = Path(name)
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    for value in values:
        digest.update(value.encode() + b"\0")
    return digest.hexdigest()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["check", "mark"])
    parser.add_argument("run_folder")
    parser.add_argument("--files", nargs="*", default=[])
    parser.add_argument("--values", nargs="*", default=[])
    args = parser.parse_args(argv)
    stamp = Path(args.run_folder) / STAMP
    current = fingerprint(args.files, args.values)
    if args.command == "check":
        return 0 if stamp.is_file() and stamp.read_text().strip() == current else 1
    from lib.runs import write_text

    write_text(stamp, current + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
