"""A pushed kernel on Kaggle: its state, waiting until it ends, its outputs, and the tail of a failed run's log."""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tools.kaggle import api
from tools.kaggle.api import KaggleError
from tools.text import duration

# The names of kagglesdk's KernelWorkerStatus that end a run.
ENDED = ("COMPLETE", "ERROR", "CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# What `make kaggle-output` fetches by default: everything but weights (hundreds of MB a model) and the lib
# bundle: the output files whose path inside the output the regex matches (re.search, as kaggle 2.2.5's
# `kernels output --file-pattern`).
READ_PATTERN = r"^(?!lib/)(?!.*\.(?:keras|h5)$)"
OUTPUT_PAGE_SIZE = 100


def url(kernel_id: str) -> str:
    return "https://www.kaggle.com/code/" + "/".join(kernel_id.split("/")[:2])


@dataclass(frozen=True)
class KernelState:
    """A kernel's state, the name of kagglesdk's KernelWorkerStatus, and its failure message."""

    kernel_id: str
    state: str
    failure: str = ""

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def succeeded(self) -> bool:
        return self.state == "COMPLETE"


class NoKernel(api.NotFound):
    """Kaggle shows no such kernel (version) to this account."""


def split_id(kernel_id: str) -> tuple[str, str, str]:
    """owner, slug and version label from `owner/slug` or `owner/slug/<version>`; kaggle 2.2.5 sends a version as
    `v<N>`, the label the API wants ("" for the latest)."""
    owner, slug, *version = kernel_id.split("/")
    return owner, slug, f"v{version[0]}" if version else ""


def no_kernel(kernel_id: str, status: int) -> NoKernel:
    """Kaggle answers a kernel that does not exist, or is someone else's private one, with HTTP 403 (kaggle 2.2.5
    words it "Permission 'kernels.get' was denied") or 404."""
    return NoKernel(
        f"Kaggle has no kernel {kernel_id} that you can see (HTTP {status}; it does not exist yet, or it is someone "
        "else's private kernel): check KERNEL_ID= or your user name"
    )


def kernels_call(method: str, request, kernel_id: str):
    """One call of kagglesdk's KernelsApiClient about `kernel_id`, a missing kernel raised as NoKernel."""
    send = getattr(api.client().kernels.kernels_api_client, method)
    refusals = {status: no_kernel(kernel_id, status) for status in (403, 404)}
    return api.call(send, request, f"kernel {kernel_id}", refusals)


def status(kernel_id: str) -> KernelState:
    """The state of the kernel's run (of its version, for `owner/slug/<version>`), and its failure message."""
    from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelSessionStatusRequest

    request = ApiGetKernelSessionStatusRequest()
    request.user_name, request.kernel_slug, request.version_label = split_id(kernel_id)
    answer = kernels_call("get_kernel_session_status", request, kernel_id)
    return KernelState(kernel_id, answer.status.name, (answer.failure_message or "").strip())


def pulled_source(kernel_id: str) -> str | None:
    """The notebook Kaggle holds for the kernel (its latest version), or None when it has no such kernel."""
    from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelRequest

    request = ApiGetKernelRequest()
    request.user_name, request.kernel_slug, request.version_label = split_id(kernel_id)
    try:
        return kernels_call("get_kernel", request, kernel_id).blob.source
    except NoKernel:
        return None


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


def output_pages(kernel_id: str, page_size: int = OUTPUT_PAGE_SIZE):
    """Each page of the kernel's output listing: its files (name and URL) and the run's log."""
    from kagglesdk.kernels.types.kernels_api_service import ApiListKernelSessionOutputRequest

    token = ""
    while True:
        request = ApiListKernelSessionOutputRequest()
        request.user_name, request.kernel_slug, request.version_label = split_id(kernel_id)
        request.page_size, request.page_token = page_size, token
        answer = kernels_call("list_kernel_session_output", request, kernel_id)
        yield answer
        token = answer.next_page_token
        if not token:
            return


def fetch_output(kernel_id: str, dest: Path, weights: bool = False) -> Path:
    """Download a kernel's output into dest: what a user reads, or everything (weights too) with weights=True, and
    its log as <slug>.log (where kaggle 2.2.5's `kernels output` writes it)."""
    from lib.runs import write_text

    keep = re.compile("" if weights else READ_PATTERN)
    log = ""
    for page in output_pages(kernel_id):
        dest.mkdir(parents=True, exist_ok=True)
        log = log or page.log
        for item in page.files:
            target = (dest / item.file_name).resolve()
            if not target.is_relative_to(dest.resolve()):  # a name from the kernel's own listing: not trusted
                raise KaggleError(f"{kernel_id} lists an output file outside its folder: {item.file_name!r}")
            if keep.search(item.file_name):
                api.fetch_url(item.url, target, f"output file {item.file_name} of {kernel_id}")
    if log:
        write_text(dest / f"{split_id(kernel_id)[1]}.log", log)
    return dest


def fetch_log(kernel_id: str, dest: Path) -> Path | None:
    """Only the run's log, which comes with the output listing: no output file is downloaded."""
    from lib.runs import write_text

    page = next(output_pages(kernel_id, page_size=1))
    if not page.log:
        return None
    return write_text(dest / f"{split_id(kernel_id)[1]}.log", page.log)


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
