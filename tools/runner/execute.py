"""Execute a notebook with papermill quietly: a cell progress bar, the kernel's lines worth reading, one result line."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

from tools.text import duration

# Kernel output that never asks anything of the user; it stays in the run's log file and the executed notebook.
NOISE_PATTERNS = {
    "blank line": r"^\s*$",
    "text progress bar": r"\d+%\|.*\|",  # lib's tqdm bars: the cell bar is the progress here
    "tqdm widget warning": r"TqdmWarning|from \.autonotebook import tqdm",
    "absl C++ log line": r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+:\d+\]",
    "TensorFlow C++ log line": r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] ",
    "absl start-up notice": r"All log messages before absl::InitializeLog\(\)",
    "CPU instruction notice": r"cpu_feature_guard|oneDNN custom operations|rebuild TensorFlow with the appropriate",
    "kernel transport warning": r"running over TCP without encryption",
    "figure repr": r"^<Figure size \d+(\.\d+)?x\d+(\.\d+)? with \d+ Axes>$",
    # Grad-CAM's eager calls of ConvNeXt's grouped convolutions compile once per batch shape (06)
    "TensorFlow retracing warning": r"^WARNING:tensorflow:\d+ out of the last \d+ calls to .* triggered tf\.function",
}
NOISE = re.compile("|".join(f"(?:{pattern})" for pattern in NOISE_PATTERNS.values()))
PYTHON_WARNING = re.compile(r"^\S.*:\d+: \w*Warning: ")  # the next line, indented, echoes the source line
EPOCH_HEADER = re.compile(r"^Epoch \d+/\d+$")  # Keras verbose=2: this line, then one summary line per epoch
EPOCH_SUMMARY = re.compile(r"^\d+/\d+ - ")
ANSI_CODE = re.compile(r"\x1b\[[0-9;]*m")  # the colours of a kernel's traceback
WRITTEN_LINE = re.compile(r"written|saved|wrote", re.IGNORECASE)
PATH_TOKEN = re.compile(r"(/?[\w.+-]+(?:/[\w.+-]+)*\.(?:csv|json|ipynb|keras|weights\.h5|h5|npz|npy|png|html|zip))")


def is_noise(line: str) -> bool:
    return bool(NOISE.search(line))


class KernelLines:
    """The kernel's stream text, cut into the lines worth a terminal: noise dropped, a Python warning without its
    source echo, Keras's `Epoch n/N` header joined to that epoch's summary line."""

    def __init__(self):
        self._partial: dict[str, str] = {}
        self._epoch: str | None = None
        self._after_warning = False
        self.shown: list[str] = []

    def feed(self, text: str, stream: str = "stdout") -> list[str]:
        *complete, self._partial[stream] = (self._partial.get(stream, "") + text).split("\n")
        return self._keep(line for raw in complete for line in self._line(raw))

    def finish(self) -> list[str]:
        rest = [line for raw in self._partial.values() for line in self._line(raw)]
        self._partial = {}
        if self._epoch:
            rest.append(self._epoch)
            self._epoch = None
        return self._keep(rest)

    def _keep(self, lines) -> list[str]:
        lines = list(lines)
        self.shown.extend(lines)
        return lines

    def _line(self, raw: str) -> list[str]:
        line = raw.rsplit("\r", 1)[-1].rstrip()  # a line redrawn with \r: its last state
        if is_noise(raw) or is_noise(line):
            return []
        if self._after_warning and line.startswith("  "):
            self._after_warning = False
            return []
        self._after_warning = bool(PYTHON_WARNING.match(line))
        if EPOCH_HEADER.match(line):
            held, self._epoch = self._epoch, line
            return [held] if held else []
        if self._epoch and EPOCH_SUMMARY.match(line):
            line, self._epoch = f"{self._epoch} {line}", None
        return [line]


class _StreamSink:
    """What papermill's stdout_file/stderr_file get: each complete line worth showing goes to `show`."""

    def __init__(self, lines: KernelLines, stream: str, show):
        self.lines, self.stream, self.show = lines, stream, show

    def write(self, text: str) -> int:
        for line in self.lines.feed(text, self.stream):
            self.show(line)
        return len(text)

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def kernel_output_to(log_path: Path):
    """Point this process's fds 1 and 2 at `log_path` (so the kernel, which inherits them, writes its C++ logs and
    start-up warnings there, not past our filter to the terminal); yield a text stream on the real stdout."""
    try:
        out_fd, err_fd = sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, io.UnsupportedOperation):  # no real fds (an embedding host): leave them alone
        with open(log_path, "a", encoding="utf-8") as log:
            yield sys.stdout, log
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(out_fd), os.dup(err_fd)
    with (
        os.fdopen(os.dup(out_fd), "w", buffering=1, encoding="utf-8", errors="replace") as terminal,
        open(log_path, "a", encoding="utf-8", buffering=1) as log,  # append: the kernel shares this file's offset
    ):
        try:
            os.dup2(log.fileno(), out_fd)
            os.dup2(log.fileno(), err_fd)
            yield terminal, log
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], out_fd)
            os.dup2(saved[1], err_fd)
            for fd in saved:
                os.close(fd)


def _papermill_logger(log, terminal, verbose: bool) -> tuple[logging.Logger, list[logging.Handler]]:
    """papermill's log (cell markers, every output as text) into the log file; also to the terminal if verbose."""
    logger = logging.getLogger("papermill")
    handlers = [logging.StreamHandler(log)] + ([logging.StreamHandler(terminal)] if verbose else [])
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, handlers


def execute(notebook: Path, output: Path, parameters: dict, cwd: str | None, log_path: Path, verbose: bool) -> list:
    """papermill.execute_notebook into `output`, everything the kernel prints kept in `log_path`; on the terminal
    a cell progress bar (a TTY only) and the kernel's lines worth reading (`verbose`: papermill's full cell log).
    Returns the lines shown."""
    import papermill
    from tqdm import tqdm

    log_path.write_text("", encoding="utf-8")
    lines = KernelLines()
    with kernel_output_to(log_path) as (terminal, log):
        logger, handlers = _papermill_logger(log, terminal, verbose)

        def show(line: str) -> None:
            if not verbose:  # verbose: papermill's log shows them (the lines still feed the result line)
                tqdm.write(line, file=terminal)  # clears the cell bar first, redraws it after

        sinks = {f"{stream}_file": _StreamSink(lines, stream, show) for stream in ("stdout", "stderr")}
        bar = False if verbose else {"file": terminal, "disable": None, "leave": False, "desc": "cells"}
        try:
            papermill.execute_notebook(
                str(notebook),
                str(output),
                parameters=parameters,
                kernel_name="python3",
                cwd=cwd,
                log_output=True,
                progress_bar=bar,
                **sinks,
            )
        except papermill.PapermillExecutionError as error:  # papermill logs no error output: the log gets it here
            log.write(ANSI_CODE.sub("", str(error)) + "\n")
            raise
        finally:
            for line in lines.finish():
                show(line)
            for handler in handlers:
                logger.removeHandler(handler)
    return lines.shown


def written_files(lines: list[str], since: float, root: Path) -> list[str]:
    """Files the shown lines say were written (a submission, pseudo-labels) and that changed during this run,
    relative to `root` where they lie under it."""
    found = []
    for line in lines:
        if not WRITTEN_LINE.search(line):
            continue
        for token in PATH_TOKEN.findall(line):
            path = Path(token)
            if path.is_file() and path.stat().st_mtime >= since - 1:
                shown = str(path.resolve().relative_to(root)) if path.resolve().is_relative_to(root) else token
                if shown not in found:
                    found.append(shown)
    return found


def result_line(name: str, seconds: float, metrics: dict, written: list[str]) -> str:
    """`03_xception: done in 4m12s · val accuracy 0.931 (TTA 0.952) · wrote submissions/xception.csv`."""
    parts = [f"{name}: done in {duration(seconds)}"]
    accuracy, no_tta = metrics.get("val_accuracy"), metrics.get("val_accuracy_no_tta")
    if accuracy is not None and no_tta is not None:
        parts.append(f"val accuracy {no_tta:.3f} (TTA {accuracy:.3f})")
    elif accuracy is not None:
        parts.append(f"val accuracy {accuracy:.3f}")
    if metrics.get("stopped_by_budget"):
        parts.append("stopped by the time budget (rerun to resume)")
    if written:
        parts.append(f"wrote {', '.join(written)}")
    return " · ".join(parts)


def read_metrics(run_dir: Path, since: float) -> dict:
    """The run folder's metrics.json if this run wrote it (a notebook that records none leaves an older one)."""
    path = run_dir / "metrics.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.stat().st_mtime >= since - 1 else {}
    except (OSError, ValueError):
        return {}


def summary(name: str, started: float, shown: list[str], run_dir: Path, root: Path) -> str:
    """The one line that ends a successful run, from the run folder's metrics.json and the lines shown."""
    return result_line(name, time.time() - started, read_metrics(run_dir, started), written_files(shown, started, root))
