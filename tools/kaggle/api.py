"""The one boundary to Kaggle: kagglesdk's client, a timeout on every request, and each failure as one line."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from lib import COMPETITION

if TYPE_CHECKING:  # requests, and lib.runs (pandas), load where used: `make weights` imports this module too
    import requests

RULES_URL = f"https://www.kaggle.com/c/{COMPETITION}/rules"
CREDENTIAL_WAYS = (
    "~/.kaggle/kaggle.json (or kaggle.json in $KAGGLE_CONFIG_DIR), KAGGLE_USERNAME + KAGGLE_KEY, "
    "or KAGGLE_API_TOKEN (token from https://www.kaggle.com/settings/api)"
)
# Kaggle answers an API call in seconds; a connection silent this long has stalled. Each request, and each read of a
# download, waits at most this long. CARS_KAGGLE_TIMEOUT_SECONDS changes it (the tests use a second or two).
TIMEOUT_SECONDS = 60.0
RETRIES = 3
RETRY_BASE_SECONDS = 10.0  # 10, 30, 90 s; CARS_KAGGLE_RETRY_SECONDS changes the base (the tests use 0)
RETRY_STATUSES = (409, 429)  # a version conflict (two pushes at once), the rate limit: worth another try
CHUNK = 1 << 20

Answer = TypeVar("Answer")


class KaggleError(RuntimeError):
    """A Kaggle call that cannot go on, with what to do about it in one line."""


class NotFound(KaggleError):
    """Kaggle has no such thing that this account can see (HTTP 403 or 404, as the caller sorts them)."""


# ---------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Credentials:
    """What authenticates the requests, and where it was found (the place, never the secret)."""

    source: str
    username: str | None = None
    key: str | None = None
    token: str | None = None
    oauth: bool = False


def config_dir() -> Path:
    """Where kaggle 2.2.5 (KaggleApi.config_dir) looks for kaggle.json: $KAGGLE_CONFIG_DIR, else ~/.kaggle, else
    $XDG_CONFIG_HOME/kaggle. kaggle computes it in KaggleApi's class body, which only `import kaggle` reaches, and that
    import authenticates (and creates the folder); so this is a copy."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"]).expanduser()
    legacy = Path.home() / ".kaggle"
    if legacy.exists() or not sys.platform.startswith("linux"):
        return legacy
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"


def _kaggle_json() -> dict:
    try:
        values = json.loads((config_dir() / "kaggle.json").read_text())
    except (OSError, ValueError):
        return {}
    return values if isinstance(values, dict) else {}


_warned: set[Path] = set()


def warn_if_readable(path: Path) -> bool:
    """Warn (without the key, once a process) when a credentials file can be read by group or others."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if os.name != "nt" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        if path not in _warned:
            print(f"warning: {path} is readable by other users; fix it with `chmod 600 {path}`", file=sys.stderr)
            _warned.add(path)
        return True
    return False


def find_credentials(warn: bool = True) -> Credentials | None:
    """The credentials kaggle 2.2.5's KaggleApi.authenticate would use, in its order, found without a request:

    1. an access token, by kagglesdk's own lookup (KAGGLE_API_TOKEN, a value or a file; ~/.kaggle/access_token);
    2. the legacy key: KAGGLE_USERNAME and KAGGLE_KEY over kaggle.json's username and key (KaggleApi's
       read_config_environment over read_config_file);
    3. `kaggle auth login`'s OAuth credentials, by kagglesdk's KaggleCredentials (~/.kaggle/credentials.json).

    kaggle asks Kaggle whether a token is valid and otherwise moves on; kagglesdk sends that token anyway whenever
    it finds one, so a rejected token is reported as such here.
    """
    from kagglesdk.kaggle_env import get_access_token_from_env

    kaggle_json = config_dir() / "kaggle.json"
    if warn and kaggle_json.is_file():
        warn_if_readable(kaggle_json)
    token, source = get_access_token_from_env()
    if token:
        return Credentials({"access_token": "~/.kaggle/access_token"}.get(source, source), username(), token=token)
    key = os.environ.get("KAGGLE_KEY") or _kaggle_json().get("key")
    if username() and key:
        return Credentials("KAGGLE_KEY" if os.environ.get("KAGGLE_KEY") else str(kaggle_json), username(), key)
    oauth_file = Path.home() / ".kaggle" / "credentials.json"
    try:
        oauth = json.loads(oauth_file.read_text())
    except (OSError, ValueError):
        oauth = {}
    if isinstance(oauth, dict) and oauth.get("refresh_token"):
        return Credentials(str(oauth_file), oauth.get("username") or None, oauth=True)
    return None


def require_credentials() -> Credentials:
    found = find_credentials()
    if found is None:
        raise KaggleError(f"no Kaggle credentials found: provide one of {CREDENTIAL_WAYS}")
    return found


def username() -> str | None:
    """The Kaggle user name from KAGGLE_USERNAME or kaggle.json (never the key), without a request."""
    return os.environ.get("KAGGLE_USERNAME") or _kaggle_json().get("username")


# ---------------------------------------------------------------- the client


def timeout_seconds() -> float:
    return float(os.environ.get("CARS_KAGGLE_TIMEOUT_SECONDS") or TIMEOUT_SECONDS)


def _bounded(session: requests.Session) -> requests.Session:
    """The session, every request it sends given our timeout (kagglesdk 0.1.38 sends its requests without one)."""
    from requests.adapters import HTTPAdapter

    class TimeoutAdapter(HTTPAdapter):
        def send(self, request, timeout=None, **kwargs):
            return super().send(request, timeout=timeout or timeout_seconds(), **kwargs)

    for scheme in ("http://", "https://"):
        session.mount(scheme, TimeoutAdapter())
    return session


def endpoint() -> str:
    """Where kagglesdk sends requests: production, unless KAGGLE_API_ENVIRONMENT names another (kagglesdk's own
    switch; the tests set LOCALHOST and make their fake server the HTTP proxy, so no port is ever fixed)."""
    from kagglesdk.kaggle_env import get_endpoint, get_env

    try:
        return get_endpoint(get_env())
    except Exception as err:  # kagglesdk raises a bare Exception for an unknown name
        raise KaggleError(f"KAGGLE_API_ENVIRONMENT: {err}") from None


def client():
    """kagglesdk's KaggleClient, authenticated as kaggle 2.2.5 would be, every request bounded by the timeout.

    Built from kagglesdk, never through `import kaggle`, which authenticates at import time (and may exit)."""
    from kagglesdk import KaggleClient, KaggleCredentials

    found = require_credentials()
    endpoint()  # an unknown KAGGLE_API_ENVIRONMENT: one line
    kaggle = KaggleClient(username=found.username, password=found.key, api_token=found.token)
    if found.oauth:
        creds = KaggleCredentials.load(KaggleClient())
        token = call(lambda _: creds.get_access_token(), None, "your OAuth login (`kaggle auth login`)")
        kaggle = KaggleClient(username=found.username, api_token=token)
    http = kaggle.http_client()
    http.__enter__()  # kagglesdk makes its requests.Session here; the session is only reachable as _session
    session = getattr(http, "_session", None)
    if session is None:
        raise KaggleError("this kagglesdk keeps no _session to put a timeout on: install the pinned one (`make venv`)")
    _bounded(session)
    return kaggle


def plain_session() -> requests.Session:
    """For Kaggle's storage URLs (uploads, output files): no credentials sent, the same timeout."""
    import requests

    return _bounded(requests.Session())


# ---------------------------------------------------------------- calls and their failures


def _timed_out(err: BaseException) -> bool:
    import requests
    import urllib3.exceptions

    return isinstance(err, requests.Timeout) or any(isinstance(a, urllib3.exceptions.TimeoutError) for a in err.args)


def network_error(err: requests.RequestException) -> KaggleError:
    """A request that got no answer: nothing listening, no route, or silence past the timeout."""
    if _timed_out(err):
        return KaggleError(
            f"Kaggle did not answer within {timeout_seconds():g} s ({endpoint()}): the connection stalled; run this "
            "again later (CARS_KAGGLE_TIMEOUT_SECONDS= sets the wait)"
        )
    host = endpoint().split("://", 1)[-1]
    return KaggleError(f"the network is unreachable: cannot connect to {host} (check the connection or proxy)")


def http_error(status: int, err: requests.HTTPError, about: str, refusals: dict) -> KaggleError:
    """Sort an HTTP error answer by its status; `refusals` holds the caller's words for a status (403, 404)."""
    if status == 401:
        found = find_credentials(warn=False)
        named = f" from {found.source}" if found else ""
        return KaggleError(f"Kaggle rejected the credentials{named} (HTTP 401): check {CREDENTIAL_WAYS}")
    if status in refusals:
        refusal = refusals[status]
        return refusal if isinstance(refusal, KaggleError) else KaggleError(refusal)
    if status == 403:
        return KaggleError(
            f"Kaggle refused access (HTTP 403) to {about}: it belongs to another account or is private; use an id "
            "under your own user name"
        )
    if status == 404:
        return NotFound(f"Kaggle has no {about} (HTTP 404): check the id (owner/slug, as in its URL)")
    if status in RETRY_STATUSES:
        return KaggleError(
            f"Kaggle kept answering with a conflict or rate limit (HTTP {status}) about {about} after {RETRIES} "
            "retries: wait a few minutes, then run this again"
        )
    if status >= 500:
        return KaggleError(f"Kaggle failed on its side (HTTP {status}) about {about}: try again later")
    return KaggleError(f"Kaggle answered HTTP {status} about {about}: {' '.join(str(err).split())[:200]}")


def rules_refusal() -> str:
    return f"Kaggle refused access (HTTP 403): accept the rules on {RULES_URL}, then run this again"


def call(send: Callable[..., Answer], request, about: str, refusals: dict | None = None) -> Answer:
    """One kagglesdk call, `send(request)`: a conflict or rate limit (HTTP 409/429) is tried again after a growing
    pause, RETRIES times at most; anything else that fails raises a one-line KaggleError. `about` names the thing
    asked about in those lines ("kernel owner/slug")."""
    import requests

    base = float(os.environ.get("CARS_KAGGLE_RETRY_SECONDS", RETRY_BASE_SECONDS))
    for attempt in range(RETRIES + 1):
        try:
            return send(request)
        except requests.HTTPError as err:
            status = err.response.status_code if err.response is not None else 0
            if status not in RETRY_STATUSES or attempt == RETRIES:
                raise http_error(status, err, about, refusals or {}) from None
            pause = base * 3**attempt
            print(f"Kaggle is busy (HTTP {status}): retry {attempt + 1}/{RETRIES} in {pause:.0f} s", file=sys.stderr)
            time.sleep(pause)
        except requests.RequestException as err:
            raise network_error(err) from None
    raise AssertionError("unreachable")


def save(response: requests.Response, target: Path, about: str) -> Path:
    """Stream a download into `target`: written beside it and renamed into place only once every byte the answer
    announced has arrived, so a dropped or stalled connection leaves nothing behind."""
    import requests

    from lib.runs import atomic_path

    try:
        response.raise_for_status()
        expected = response.headers.get("Content-Length")
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as out:
                for chunk in response.iter_content(CHUNK):
                    out.write(chunk)
            got = tmp.stat().st_size
            if expected is not None and got != int(expected):
                raise KaggleError(f"{about} arrived incomplete ({got} of {expected} bytes); nothing was kept")
    except requests.HTTPError as err:
        raise http_error(err.response.status_code, err, about, {}) from None
    except requests.RequestException as err:
        raise network_error(err) from None
    finally:
        response.close()
    return target


def fetch_url(url: str, target: Path, about: str) -> Path:
    """Download a storage URL Kaggle handed out (a kernel's output file) into `target`."""
    import requests

    try:
        response = plain_session().get(url, stream=True)
    except requests.RequestException as err:
        raise network_error(err) from None
    return save(response, target, about)


def upload(create_url: str, path: Path, about: str) -> None:
    """Send a file to the upload URL Kaggle handed out (kaggle 2.2.5's upload_complete: one PUT of the whole file)."""
    import requests

    try:
        with open(path, "rb") as data:
            response = plain_session().put(create_url, data=data)
    except requests.RequestException as err:
        raise network_error(err) from None
    if response.status_code not in (200, 201):
        raise KaggleError(f"Kaggle's storage refused the upload of {about} (HTTP {response.status_code}): try again")
