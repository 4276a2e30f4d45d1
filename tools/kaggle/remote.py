"""A pushed kernel on Kaggle: its state, waiting until it ends, its outputs, and the tail of a failed run's log."""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tools.kaggle.cli import KaggleError, run
from tools.text import duration

# kagglesdk's KernelWorkerStatus in kaggle 2.2.5; `kaggle kernels status` prints e.g. `KernelWorkerStatus.RUNNING`.
ENDED = ("COMPLETE", "ERROR", "CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED")
_STATUS_LINE = re.compile(r'has status "(?:KernelWorkerStatus\.)?([A-Z_]+)"')
_FAILURE_LINE = re.compile(r'Failure message: "(.*)"', re.S)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# What `make kaggle-output` fetches by default: everything but weights (hundreds of MB a model) and the lib
# bundle. kaggle 2.2.5's `kernels output --file-pattern` keeps the files whose path the regex matches (re.search).
READ_PATTERN = r"^(?!lib/)(?!.*\.(?:keras|h5)$)"


def url(kernel_id: str) -> str:
    return "https://www.kaggle.com/code/" + "/".join(kernel_id.split("/")[:2])


@dataclass(frozen=True)
class KernelState:
    """One answer of `kaggle kernels status`."""

    kernel_id: str
    state: str
    failure: str = ""

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def succeeded(self) -> bool:
        return self.state == "COMPLETE"


def parse_status(text: str, kernel_id: str) -> KernelState:
    """Read the CLI's `<id> has status "KernelWorkerStatus.X"` (+ an optional `Failure message: "..."` line).

    The CLI exits 0 whatever the state, so the state comes from the text.
    """
    found = _STATUS_LINE.search(text)
    if not found:
        last = (text.strip().splitlines() or ["no output"])[-1]
        raise KaggleError(f"could not read the state of {kernel_id} from `kaggle kernels status`: {last}")
    failure = _FAILURE_LINE.search(text)
    return KernelState(kernel_id, found.group(1), failure.group(1).strip() if failure else "")


def status(kernel_id: str) -> KernelState:
    return parse_status(run("kernels", "status", kernel_id), kernel_id)


class ProgressLine:
    """One status line: redrawn in place on a terminal, printed only when it changes otherwise (logs, make)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.last = ""
        self.width = 0

    def show(self, text: str, changed_part: str) -> None:
        if self.live:
            self.stream.write("\r" + text.ljust(self.width))
            self.width = max(self.width, len(text))
        elif changed_part != self.last:
            self.stream.write(text + "\n")
        self.last = changed_part
        self.stream.flush()

    def close(self) -> None:
        if self.live and self.width:
            self.stream.write("\n")
            self.stream.flush()


def wait(kernel_ids, timeout_s: float, poll_s: float, stream=None, clock=time.monotonic, sleep=time.sleep):
    """Poll `kaggle kernels status` until every kernel has ended; return {id: KernelState}.

    One line shows each kernel's state and the time waited. Past `timeout_s` it stops waiting (the kernels go on
    running on Kaggle) with a KaggleError; Ctrl-C (KeyboardInterrupt) is left to the caller, which says how to
    resume.
    """
    start = clock()
    states: dict[str, KernelState] = {}
    line = ProgressLine(stream)
    try:
        while True:
            for kernel_id in kernel_ids:
                if kernel_id not in states or not states[kernel_id].ended:
                    states[kernel_id] = status(kernel_id)
            summary = " | ".join(f"{kid.split('/')[1]} {states[kid].state}" for kid in kernel_ids)
            line.show(f"Kaggle: {summary} (waited {duration(clock() - start)})", summary)
            if all(state.ended for state in states.values()):
                return states
            if clock() - start >= timeout_s:
                raise KaggleError(
                    f"stopped waiting after {duration(timeout_s)} (TIMEOUT=): {summary}; the kernels go on "
                    "running on Kaggle, and `make kaggle-run-all` resumes waiting without pushing again"
                )
            sleep(poll_s)
    finally:
        line.close()


def fetch_output(kernel_id: str, dest: Path, weights: bool = False) -> Path:
    """Download a kernel's output into dest: what a user reads, or everything (weights too) with weights=True."""
    dest.mkdir(parents=True, exist_ok=True)
    args = ["kernels", "output", kernel_id, "-p", str(dest), "--force"]
    run(*args, *([] if weights else ["--file-pattern", READ_PATTERN]))
    return dest


def fetch_log(kernel_id: str, dest: Path) -> Path | None:
    """Only the run's log: kaggle 2.2.5 writes <slug>.log whatever --file-pattern keeps, and this pattern keeps
    no output file."""
    dest.mkdir(parents=True, exist_ok=True)
    run("kernels", "output", kernel_id, "-p", str(dest), "--force", "--file-pattern", r"\.log$")
    log = dest / f"{kernel_id.split('/')[1]}.log"
    return log if log.is_file() else None


def log_text(path: Path) -> str:
    return log_text_from(path.read_text(encoding="utf-8", errors="replace"))


def log_text_from(raw: str) -> str:
    """The text of a kernel log: one JSON array of {stream_name, time, data} objects (entries may span lines,
    so the whole file is parsed); a file that is not such an array is returned as it is, colours stripped."""
    try:
        entries = json.loads(raw)
    except ValueError:
        return _ANSI.sub("", raw)
    if not isinstance(entries, list):
        return _ANSI.sub("", raw)
    return _ANSI.sub("", "".join(str(entry.get("data", "")) for entry in entries if isinstance(entry, dict)))


def error_tail(text: str, lines: int = 12) -> str:
    """The end of the last traceback in a log (the failing cell's), else the log's last lines."""
    starts = [m.start() for m in re.finditer(r"Traceback \(most recent call last\)|^-{20,}$", text, re.M)]
    chunk = text[starts[-1] :] if starts else text
    kept = [line.rstrip() for line in chunk.splitlines() if line.strip() and not re.fullmatch(r"-{20,}", line)]
    return "\n".join(kept[-lines:])


def explain_failure(state: KernelState, log_dir: Path) -> str:
    """What to print for a kernel that ended without completing: the state, its URL and the log's traceback tail."""
    head = f"{state.kernel_id} ended in {state.state} ({url(state.kernel_id)})"
    if state.failure:
        head += f": {state.failure}"
    try:
        log = fetch_log(state.kernel_id, log_dir)
    except KaggleError as err:
        return f"{head}\n(its log could not be downloaded: {err})"
    if log is None:
        return f"{head}\n(Kaggle returned no log; open the URL above)"
    return f"{head}\nThe end of its log ({log}):\n{error_tail(log_text(log))}"
