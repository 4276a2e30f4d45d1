"""The one boundary to Kaggle: runs the `kaggle` CLI and turns its failures into one-line `KaggleError`s."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

from lib import COMPETITION

RULES_URL = f"https://www.kaggle.com/c/{COMPETITION}/rules"
CREDENTIAL_WAYS = (
    "~/.kaggle/kaggle.json (or kaggle.json in $KAGGLE_CONFIG_DIR), KAGGLE_USERNAME + KAGGLE_KEY, "
    "or KAGGLE_API_TOKEN (token from https://www.kaggle.com/settings/api)"
)
VENV_KAGGLE = Path(sys.executable).parent / "kaggle"

# What the kaggle 2.x CLI prints for each failure we can name (it exits 1 for all of them).
_AUTH_PATTERNS = ("Authentication required", "401 Client Error", "Invalid credentials", "Unauthorized")
_RULES_PATTERNS = ("403 Client Error", "Forbidden", "accept its rules", "You don't have access")
# kaggle 2.2.5 answers a kernel that does not exist, or is someone else's private one, with this ValueError.
_NO_KERNEL_PATTERNS = ("Cannot access kernel", "Permission 'kernels.get' was denied")
_NOT_FOUND_PATTERNS = ("404 Client Error", "Not Found for url")
# Worth another try after a pause: a version conflict (two pushes at once) and Kaggle's rate limit.
_RETRY_PATTERNS = ("409 Client Error", "429 Client Error", "Too Many Requests", "rate limited")
_QUOTA_PATTERNS = ("quota",)
NO_KERNEL = "Kaggle has no kernel"  # how explain() starts the message for an unknown kernel
RETRIES = 3
RETRY_BASE_SECONDS = 10.0  # 10, 30, 90 s; CARS_KAGGLE_RETRY_SECONDS changes the base (the tests use 0)
_NETWORK_PATTERNS = (
    "Max retries exceeded",
    "NameResolutionError",
    "Failed to resolve",
    "Name or service not known",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Connection refused",
    "ConnectionError",
    "ConnectTimeout",
    "timed out",
)


class KaggleError(RuntimeError):
    """A Kaggle call that cannot go on, with what to do about it in one line."""


def config_dir() -> Path:
    """Where kaggle 2.x looks for kaggle.json: $KAGGLE_CONFIG_DIR, else ~/.kaggle, else $XDG_CONFIG_HOME/kaggle."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"]).expanduser()
    legacy = Path.home() / ".kaggle"
    if legacy.exists():
        return legacy
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"


def _read_kaggle_json() -> dict:
    path = config_dir() / "kaggle.json"
    try:
        return json.loads(path.read_text()) or {}
    except (OSError, ValueError):
        return {}


def warn_if_readable(path: Path) -> bool:
    """Warn (without the key) when a credentials file can be read by group or others."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if os.name != "nt" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"warning: {path} is readable by other users; fix it with `chmod 600 {path}`", file=sys.stderr)
        return True
    return False


def credential_source() -> str | None:
    """Name the first place kaggle 2.x would take credentials from, or None when there is none."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    for token_file in (Path.home() / ".kaggle" / "access_token", Path.home() / ".kaggle" / "access_token.txt"):
        if token_file.is_file() and token_file.read_text().strip():
            warn_if_readable(token_file)
            return str(token_file)
    kaggle_json = config_dir() / "kaggle.json"
    file_values = _read_kaggle_json() if kaggle_json.is_file() else {}
    if kaggle_json.is_file():
        warn_if_readable(kaggle_json)
    username = os.environ.get("KAGGLE_USERNAME") or file_values.get("username")
    key = os.environ.get("KAGGLE_KEY") or file_values.get("key")
    if username and key:
        return "KAGGLE_USERNAME/KAGGLE_KEY" if os.environ.get("KAGGLE_KEY") else str(kaggle_json)
    if (Path.home() / ".kaggle" / "credentials.json").is_file():  # `kaggle auth login` (OAuth)
        return str(Path.home() / ".kaggle" / "credentials.json")
    return None


def require_credentials() -> str:
    source = credential_source()
    if source is None:
        raise KaggleError(f"no Kaggle credentials found: provide one of {CREDENTIAL_WAYS}")
    return source


def username() -> str | None:
    """The Kaggle user name from KAGGLE_USERNAME or kaggle.json (never the key)."""
    return os.environ.get("KAGGLE_USERNAME") or _read_kaggle_json().get("username")


def executable() -> str:
    """`kaggle` from PATH first (tests put a fake there), else the one in this virtual environment."""
    found = shutil.which("kaggle")
    if found:
        return found
    if VENV_KAGGLE.exists():
        return str(VENV_KAGGLE)
    raise KaggleError("the `kaggle` command is not installed: run `make venv` (requirements.txt pins kaggle)")


def _secrets() -> list[str]:
    values = [os.environ.get("KAGGLE_KEY"), os.environ.get("KAGGLE_API_TOKEN"), _read_kaggle_json().get("key")]
    return [v for v in values if v and len(v) >= 4]


def redact(text: str) -> str:
    for secret in _secrets():
        text = text.replace(secret, "***")
    return text


def _subject(args: tuple[str, ...]) -> str:
    """The kernel or dataset a command names (its first argument that looks like owner/slug), else ''."""
    return next((a for a in args[2:] if "/" in a and not a.startswith(("-", "/", "."))), "")


def explain(output: str, command: str, args: tuple[str, ...] = ()) -> str:
    """Turn the CLI's (possibly multi-line) failure output into one line."""
    group, subject = command.split(" ")[0], _subject(args)
    if any(p in output for p in _AUTH_PATTERNS):
        return f"Kaggle rejected the credentials: check {CREDENTIAL_WAYS}"
    if any(p in output for p in _NO_KERNEL_PATTERNS):
        return (
            f"{NO_KERNEL} {subject or 'of that id'} that you can see (it does not exist yet, or it is "
            "someone else's private kernel): check KERNEL_ID= or your user name"
        )
    if any(p in output for p in _RULES_PATTERNS):
        if group in ("kernels", "datasets"):
            return (
                f"Kaggle refused access (HTTP 403) to {subject or 'that ' + group[:-1]}: it belongs to another "
                "account or is private; use an id under your own user name"
            )
        return f"Kaggle refused access (HTTP 403): accept the rules on {RULES_URL}, then run this again"
    if any(p in output for p in _NOT_FOUND_PATTERNS) and command == "kernels push":
        return (
            "Kaggle could not find something that kernel-metadata.json names (HTTP 404): check its dataset_sources "
            "and kernel_sources (WEIGHTS_DATASET=, and that the 03/04 kernels exist)"
        )
    if any(p in output for p in _NOT_FOUND_PATTERNS):
        what = {"kernels": "kernel", "datasets": "dataset"}.get(group, "competition file")
        named = f" {subject}" if subject else ""
        return f"Kaggle has no {what}{named} (HTTP 404): check the id (owner/slug, as in its URL)"
    if any(p in output for p in _RETRY_PATTERNS):
        return (
            f"Kaggle kept answering `kaggle {command}` with a conflict or rate limit (HTTP 409/429) after "
            f"{RETRIES} retries: wait a few minutes, then run this again"
        )
    if any(p in output.lower() for p in _QUOTA_PATTERNS):
        return (
            "your weekly Kaggle GPU/TPU quota is used up (`kaggle quota` shows it and when it refills): wait, or "
            "push with ACCELERATOR=none"
        )
    if any(p in output for p in _NETWORK_PATTERNS):
        return "the network is unreachable: cannot connect to kaggle.com (check the connection or proxy)"
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    last = redact(lines[-1]) if lines else "no output"
    return f"`kaggle {command}` failed: {last}"


def retryable(output: str) -> bool:
    return any(p in output for p in _RETRY_PATTERNS)


def run(*args: str, need_credentials: bool = True, timeout: float | None = None) -> str:
    """Run `kaggle ARGS...` and return its stdout; raise KaggleError with one line on any failure.

    A conflict or rate limit (HTTP 409/429) is tried again after a growing pause, RETRIES times at most.
    """
    if need_credentials:
        require_credentials()
    base = float(os.environ.get("CARS_KAGGLE_RETRY_SECONDS", RETRY_BASE_SECONDS))
    for attempt in range(RETRIES + 1):
        proc = _run_once(args, timeout)
        output = proc.stdout + "\n" + proc.stderr
        if proc.returncode == 0 or not retryable(output) or attempt == RETRIES:
            break
        pause = base * 3**attempt
        print(f"Kaggle is busy (HTTP 409/429): retry {attempt + 1}/{RETRIES} in {pause:.0f} s", file=sys.stderr)
        time.sleep(pause)
    if proc.returncode != 0:
        raise KaggleError(explain(output, " ".join(args[:2]), args))
    return redact(proc.stdout)


def _run_once(args: tuple[str, ...], timeout: float | None) -> subprocess.CompletedProcess:
    command = " ".join(args[:2])
    try:
        return subprocess.run(
            [executable(), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
    except subprocess.TimeoutExpired as err:
        raise KaggleError(
            f"`kaggle {command}` took longer than {timeout:.0f} s: the network may be unreachable"
        ) from err
    except OSError as err:
        raise KaggleError(f"cannot run the `kaggle` command ({err}): run `make venv`") from err


_SLUG = re.compile(r"^[A-Za-z0-9_-]+/[a-z0-9-]+$")


def check_kernel_id(kernel_id: str) -> str:
    if not _SLUG.match(kernel_id or ""):
        raise KaggleError(f"kernel id {kernel_id!r} must look like `username/lowercase-slug`")
    return kernel_id
