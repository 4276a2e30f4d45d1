"""`python -m tools.runner`: check a notebook's parameters, run one, list its inputs, or mark it up to date."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lib.choices import ParamError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.runner", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check_cmd = commands.add_parser("check", help="check a profile and -p values against a notebook")
    check_cmd.add_argument("notebook", help="notebooks/NN.py (or .ipynb)")
    check_cmd.add_argument("profile", help="profiles/<profile>/NN.yaml")
    execute_cmd = commands.add_parser("execute", help="check, then execute the notebook with papermill")
    execute_cmd.add_argument("notebook", type=Path, help="notebooks/NN.ipynb")
    execute_cmd.add_argument("output", type=Path, help="the executed notebook to write")
    execute_cmd.add_argument("-f", "--profile", type=Path, help="profiles/<profile>/NN.yaml")
    execute_cmd.add_argument("--cwd", help="the kernel's working folder")
    for sub in (check_cmd, execute_cmd):
        sub.add_argument("-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"), dest="pairs")
    series_cmd = commands.add_parser("run", help="make's NN target: run a notebook of the series if its inputs changed")
    inputs_cmd = commands.add_parser("inputs", help="the files a notebook's run depends on")
    mark_cmd = commands.add_parser("mark", help="record notebooks' current inputs as up to date without running them")
    for sub in (series_cmd, inputs_cmd):
        sub.add_argument("name", help="NN_topic")
    mark_cmd.add_argument("names", nargs="+", metavar="name", help="NN_topic (one or more)")
    for sub in (series_cmd, inputs_cmd, mark_cmd):
        sub.add_argument("--profile", required=True)
        sub.add_argument("--data-dir", type=Path, required=True)
    series_cmd.add_argument("--force", action="store_true", help="run even when its inputs did not change")
    series_cmd.add_argument("--dry-run", action="store_true", help="say whether it would run (make -n)")
    series_cmd.add_argument("--setting", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                            help="another value the run depends on (e.g. virtual_devices 2)")  # fmt: skip
    for sub in (execute_cmd, series_cmd):
        sub.add_argument("--verbose", action="store_true", help="papermill's full cell log on the terminal")
    args = parser.parse_args(argv)

    from tools.runner.run import NotebookFailed

    try:
        if args.command == "check":
            from tools.runner.check import check_notebook

            check_notebook(args.notebook, args.profile, args.pairs)
        elif args.command == "execute":
            from tools.runner.run import execute_checked

            execute_checked(args.notebook, args.output, args.profile, args.pairs, args.cwd, args.verbose)
        elif args.command == "run":
            from tools.runner.run import run_in_series

            run_in_series(args.name, args.profile, args.data_dir, force=args.force, dry_run=args.dry_run,
                          verbose=args.verbose, settings=dict(args.setting))  # fmt: skip
        elif args.command == "mark":
            from tools.runner.run import mark_up_to_date

            for name in args.names:
                mark_up_to_date(name, args.profile, args.data_dir)
        else:
            from tools.runner.run import current_inputs

            print("\n".join(current_inputs(args.name, args.profile, args.data_dir, {})["files"]))
    except (ParamError, NotebookFailed, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
