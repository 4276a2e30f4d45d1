"""A fake Kaggle API server for the tests: the RPCs the project sends, answered in kagglesdk's JSON shapes."""

from __future__ import annotations

import base64
import datetime as dt
import io
import itertools
import json
import re
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from kagglesdk.blobs.types.blob_api_service import ApiStartBlobUploadRequest, ApiStartBlobUploadResponse
from kagglesdk.common.types.http_redirect import HttpRedirect
from kagglesdk.competitions.types.competition_api_service import (
    ApiCreateSubmissionRequest,
    ApiCreateSubmissionResponse,
    ApiDataFile,
    ApiDownloadDataFileRequest,
    ApiListDataFilesRequest,
    ApiListDataFilesResponse,
    ApiListSubmissionsRequest,
    ApiListSubmissionsResponse,
    ApiStartSubmissionUploadRequest,
    ApiStartSubmissionUploadResponse,
    ApiSubmission,
)
from kagglesdk.competitions.types.submission_status import SubmissionStatus
from kagglesdk.datasets.types.dataset_api_service import (
    ApiCreateDatasetRequest,
    ApiCreateDatasetResponse,
    ApiCreateDatasetVersionRequest,
    ApiGetDatasetStatusRequest,
    ApiGetDatasetStatusResponse,
)
from kagglesdk.datasets.types.dataset_enums import DatabundleVersionStatus
from kagglesdk.kernels.types.kernels_api_service import (
    ApiGetKernelRequest,
    ApiGetKernelResponse,
    ApiGetKernelSessionStatusRequest,
    ApiGetKernelSessionStatusResponse,
    ApiKernelBlob,
    ApiKernelMetadata,
    ApiKernelSessionOutputFile,
    ApiListKernelSessionOutputRequest,
    ApiListKernelSessionOutputResponse,
    ApiSaveKernelRequest,
    ApiSaveKernelResponse,
)
from kagglesdk.kernels.types.kernels_enums import KernelWorkerStatus

# kagglesdk's endpoint under KAGGLE_API_ENVIRONMENT=LOCALHOST. The tests make this server the HTTP proxy, so every
# request arrives with an absolute http://localhost/... URL in its request line, whatever port the server has.
ENDPOINT = "http://localhost"
WEB = "https://www.kaggle.com"
MAX_PAGE = 3  # output files per page at most (below the page size asked for), so that the client's paging runs

# Each RPC served: kagglesdk's service (as in the URL <endpoint>/api/v1/<service>/<rpc>), request and response
# types. A request's JSON must hold only fields of its type; an answer is its type's to_dict().
RPCS = {
    "ListDataFiles": ("competitions.CompetitionApiService", ApiListDataFilesRequest, ApiListDataFilesResponse),
    "DownloadDataFile": ("competitions.CompetitionApiService", ApiDownloadDataFileRequest, HttpRedirect),
    "StartSubmissionUpload": (
        "competitions.CompetitionApiService",
        ApiStartSubmissionUploadRequest,
        ApiStartSubmissionUploadResponse,
    ),
    "CreateSubmission": ("competitions.CompetitionApiService", ApiCreateSubmissionRequest, ApiCreateSubmissionResponse),
    "ListSubmissions": ("competitions.CompetitionApiService", ApiListSubmissionsRequest, ApiListSubmissionsResponse),
    "StartBlobUpload": ("blobs.BlobApiService", ApiStartBlobUploadRequest, ApiStartBlobUploadResponse),
    "GetDatasetStatus": ("datasets.DatasetApiService", ApiGetDatasetStatusRequest, ApiGetDatasetStatusResponse),
    "CreateDataset": ("datasets.DatasetApiService", ApiCreateDatasetRequest, ApiCreateDatasetResponse),
    "CreateDatasetVersion": ("datasets.DatasetApiService", ApiCreateDatasetVersionRequest, ApiCreateDatasetResponse),
    "SaveKernel": ("kernels.KernelsApiService", ApiSaveKernelRequest, ApiSaveKernelResponse),
    "GetKernelSessionStatus": (
        "kernels.KernelsApiService",
        ApiGetKernelSessionStatusRequest,
        ApiGetKernelSessionStatusResponse,
    ),
    "ListKernelSessionOutput": (
        "kernels.KernelsApiService",
        ApiListKernelSessionOutputRequest,
        ApiListKernelSessionOutputResponse,
    ),
    "GetKernel": ("kernels.KernelsApiService", ApiGetKernelRequest, ApiGetKernelResponse),
}


class Refusal(Exception):
    """An HTTP error answer. Its JSON body, {"code", "message"}, is what kagglesdk's client reads from one (the
    message's words are the fake's own)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Redirect:
    """An answer typed HttpRedirect: Kaggle redirects to the file in its storage (the URL's form is a guess)."""

    location: str


@dataclass
class Kernel:
    """A kernel as Kaggle holds it: its pushes, and the script of states each push walks through."""

    owner: str
    slug: str
    runs: list[list[str]] = field(default_factory=lambda: [["COMPLETE"]])  # a push's states, one per status read
    failure: str = ""
    output: Path | None = None
    log: str = ""
    versions: list[dict] = field(default_factory=list)  # each push: {"request": ApiSaveKernelRequest, "reads": n}

    def states(self, version: int) -> list[str]:
        return self.runs[min(version, len(self.runs)) - 1]


@dataclass
class Submission:
    ref: int
    file_name: str
    description: str
    date: dt.datetime
    text: str = ""
    status: str = "PENDING"
    public_score: str = ""
    listed: int = 0


class FakeKaggle:
    """Kaggle's side of every call the project makes, in memory. Tests script it (files, kernel states, failures)
    and read back what it received (`calls`, `submissions`, `kernels`, `datasets`)."""

    def __init__(self, competition: str, username: str, key: str):
        self.competition = competition
        self.username = username
        self.key = key
        self.tokens: set[str] = set()  # accepted bearer tokens (KAGGLE_API_TOKEN, access_token, OAuth)
        self.calls: list[tuple[str, object]] = []  # (RPC, its request as a kagglesdk object), in order
        self.files: dict[str, bytes] = {}  # the competition's data files
        self.zipped: set[str] = set()  # files served wrapped in <name>.zip, as Kaggle serves large ones
        self.broken: dict[str, int | None] = {}  # file -> how many downloads arrive truncated (None: every one)
        self.stalled: set[str] = set()  # files whose download stops halfway and then says nothing
        self.downloads: list[str] = []
        self.rules_accepted = True
        self.solution: dict[str, str] = {}  # Id -> Category: scores a submission at its second listing
        self.submissions: list[Submission] = []
        self.kernels: dict[str, Kernel] = {}
        self.datasets: dict[str, list[dict]] = {}  # id -> its versions: {"files", "notes", "request"}
        self.quota_left = True
        self.foreign_owners: set[str] = set()  # accounts this user may not write under
        self.failures: list[list] = []  # [status, times left (None: always), RPC (None: any)]
        self._blobs: dict[str, dict] = {}  # upload token -> {"name", "data"}
        self._served: dict[str, tuple[str, bytes]] = {}  # download token -> (name, bytes)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))  # port 0: a free one
        self._server.daemon_threads = True
        # serve_forever checks for shutdown at this interval: a short one keeps each test's teardown short
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    # ------------------------------------------------------------------ running

    @property
    def proxy(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeKaggle:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ scripting and reading back

    def fail(self, status: int, times: int | None = None, rpc: str | None = None) -> None:
        """Answer HTTP `status` to the next `times` calls (all, when None) of `rpc` (any, when None)."""
        self.failures.append([status, times, rpc])

    def add_kernel(self, kernel_id: str, **script) -> Kernel:
        """Script `kernel_id`'s pushes: runs=[[states of push 1], [states of push 2], ...] (the last list serves
        later pushes, its last state later reads), failure= its failure message, output= a folder of its output
        files, log= its log's text."""
        owner, slug = kernel_id.split("/")
        kernel = self.kernels.setdefault(kernel_id, Kernel(owner, slug))
        for name, value in script.items():
            setattr(kernel, name, value)
        return kernel

    def add_pushed_kernel(self, kernel_id: str, source: str, **script) -> Kernel:
        """A kernel pushed before, from elsewhere: its version 1 holds the notebook `source`."""
        kernel = self.add_kernel(kernel_id, **script)
        pushed = ApiSaveKernelRequest()
        pushed.slug, pushed.text, pushed.language, pushed.kernel_type = kernel_id, source, "python", "notebook"
        kernel.versions.append({"request": pushed, "reads": 0})
        return kernel

    def add_dataset(self, dataset_id: str) -> None:
        self.datasets[dataset_id] = [{"files": [], "notes": "uploaded before", "request": None}]

    def add_submission(self, ref: int, description: str, date: str, status: str = "COMPLETE", score: str = ""):
        """A submission made before (listed as it is, never scored again)."""
        when = dt.datetime.fromisoformat(date)
        self.submissions.append(Submission(ref, "submission.csv", description, when, "", status, score, 1))

    def called(self, rpc: str) -> list:
        """The requests received for one RPC, in order, as kagglesdk request objects."""
        return [request for name, request in self.calls if name == rpc]

    def rpcs(self) -> list[str]:
        return [name for name, _ in self.calls]

    # ------------------------------------------------------------------ answering

    def answer(self, service: str, rpc: str, body: dict, auth: str):
        """The answer to one call: a kagglesdk response object or a Redirect; raises Refusal for an HTTP error."""
        with self._lock:
            if rpc not in RPCS or RPCS[rpc][0] != service:
                raise Refusal(404, f"the fake Kaggle does not serve {service}/{rpc}")
            request_type = RPCS[rpc][1]
            unknown = set(body) - {f.json_name for f in request_type._fields}
            if unknown:
                raise Refusal(400, f"{request_type.__name__} has no field {', '.join(sorted(unknown))}")
            request = request_type.from_dict(body)
            self.calls.append((rpc, request))
            if not self._authorised(auth):
                raise Refusal(401, "Unauthenticated")
            for failure in self.failures:
                status, times, only = failure
                if only in (None, rpc) and (times is None or times > 0):
                    if times is not None:
                        failure[1] -= 1
                    raise Refusal(status, f"the fake's scripted HTTP {status}")
            answer = getattr(self, f"rpc_{rpc}")(request)
            assert isinstance(answer, Redirect if RPCS[rpc][2] is HttpRedirect else RPCS[rpc][2]), (rpc, answer)
            return answer

    def _authorised(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme == "Bearer":
            return value in self.tokens
        if scheme == "Basic":
            return base64.b64decode(value).decode() == f"{self.username}:{self.key}"
        return False

    def _serve(self, name: str, data: bytes) -> str:
        token = f"d{next(self._ids)}"
        self._served[token] = (name, data)
        return f"{ENDPOINT}/files/{token}/{name}"  # the form of Kaggle's storage URLs is a guess

    def _upload_url(self, name: str) -> tuple[str, str]:
        token = f"u{next(self._ids)}"
        self._blobs[token] = {"name": name, "data": None}
        return token, f"{ENDPOINT}/upload/{token}"

    def served(self, token: str) -> tuple[str, bytes] | None:
        return self._served.get(token)

    def stall(self) -> None:
        """Say nothing more until the server stops (a connection that went silent)."""
        self._closing.wait()

    def receive(self, token: str, data: bytes) -> bool:
        with self._lock:
            if token not in self._blobs:
                return False
            self._blobs[token]["data"] = data
            return True

    def _uploaded(self, token: str) -> dict:
        blob = self._blobs.get(token)
        if blob is None or blob["data"] is None:
            raise Refusal(400, f"no finished upload for token {token!r}")
        return blob

    def _own(self, owner: str, what: str) -> None:
        if owner in self.foreign_owners:  # a guess: a 403 for a write under another account
            raise Refusal(403, f"Permission denied on {what}")

    # competitions.CompetitionApiService

    def _competition(self, name: str) -> None:
        if name != self.competition:
            raise Refusal(404, f"Competition {name} not found")
        if not self.rules_accepted:  # a 403, as kaggle 2.2.5's own hint for a 403 says
            raise Refusal(403, "You must accept this competition's rules")

    def rpc_ListDataFiles(self, request: ApiListDataFilesRequest):
        self._competition(request.competition_name)
        files = []
        for name, data in sorted(self.files.items()):
            item = ApiDataFile()
            item.name, item.ref, item.total_bytes = name, name, len(data)
            item.creation_date = dt.datetime(2020, 6, 1)
            files.append(item)
        response = ApiListDataFilesResponse()
        response.files = files
        return response

    def rpc_DownloadDataFile(self, request: ApiDownloadDataFileRequest):
        self._competition(request.competition_name)
        name = request.file_name
        if name not in self.files:
            raise Refusal(404, f"File {name} not found")
        data = self.files[name]
        left = self.broken.get(name, 0)
        if left is None or left > 0:  # a file that arrives whole by its length but broken inside
            data = data[: len(data) // 2]
            if left:
                self.broken[name] = left - 1
        self.downloads.append(name)
        if name in self.zipped:  # kaggle 2.2.5: "a request for foo.csv arrives as foo.csv.zip"
            packed = io.BytesIO()
            with zipfile.ZipFile(packed, "w") as archive:
                archive.writestr(name, data)
            name, data = f"{name}.zip", packed.getvalue()
        return Redirect(self._serve(name, data))

    def rpc_StartSubmissionUpload(self, request: ApiStartSubmissionUploadRequest):
        self._competition(request.competition_name)
        response = ApiStartSubmissionUploadResponse()
        response.token, response.create_url = self._upload_url(request.file_name)
        return response

    def rpc_CreateSubmission(self, request: ApiCreateSubmissionRequest):
        self._competition(request.competition_name)
        blob = self._uploaded(request.blob_file_tokens)
        ref = 50000000 + next(self._ids)
        when = dt.datetime(2026, 12, 1) + dt.timedelta(minutes=len(self.submissions))
        text = blob["data"].decode()
        self.submissions.append(Submission(ref, blob["name"], request.submission_description, when, text))
        response = ApiCreateSubmissionResponse()
        response.ref = ref
        response.message = "Successfully submitted to Car classification"  # a guess
        return response

    def rpc_ListSubmissions(self, request: ApiListSubmissionsRequest):
        self._competition(request.competition_name)
        listed = []
        for submission in sorted(self.submissions, key=lambda s: s.date, reverse=True):  # newest first: a guess
            submission.listed += 1
            if submission.status == "PENDING" and submission.listed > 1:  # scored between two listings
                submission.status, submission.public_score = self._score(submission.text)
            item = ApiSubmission()
            item.ref, item.file_name, item.date = submission.ref, submission.file_name, submission.date
            item.description = submission.description
            item.status = SubmissionStatus[submission.status]
            item.public_score = submission.public_score
            listed.append(item)
        response = ApiListSubmissionsResponse()
        response.submissions = listed
        return response

    def _score(self, text: str) -> tuple[str, str]:
        """Accuracy on the solution's ids, five decimals (the format of a score is a guess)."""
        rows = dict(line.split(",", 1) for line in text.strip().splitlines()[1:])
        if not self.solution or set(rows) != set(self.solution):
            return "ERROR", ""
        right = sum(rows[i].strip() == c for i, c in self.solution.items())
        return "COMPLETE", f"{right / len(self.solution):.5f}"

    # blobs.BlobApiService

    def rpc_StartBlobUpload(self, request: ApiStartBlobUploadRequest):
        response = ApiStartBlobUploadResponse()
        response.token, response.create_url = self._upload_url(request.name)
        return response

    # datasets.DatasetApiService

    def rpc_GetDatasetStatus(self, request: ApiGetDatasetStatusRequest):
        dataset = f"{request.owner_slug}/{request.dataset_slug}"
        if dataset not in self.datasets:  # a guess: 404 (kaggle 2.2.5 takes any HTTP error here as "not there")
            raise Refusal(404, f"Dataset {dataset} not found")
        response = ApiGetDatasetStatusResponse()
        response.status = DatabundleVersionStatus.READY
        return response

    def rpc_CreateDataset(self, request: ApiCreateDatasetRequest):
        dataset = f"{request.owner_slug}/{request.slug}"
        self._own(request.owner_slug, dataset)
        response = ApiCreateDatasetResponse()
        if dataset in self.datasets:  # a guess: an `error` in the answer, in the words kaggle 2.2.5 itself uses
            response.error = f'The requested slug "{request.slug}" is already in use by a dataset.'
            return response
        # What kaggle 2.2.5's dataset_create_new checks before it sends; the fake refuses the same (a 400: a guess).
        for what, value in (("slug", request.slug), ("title", request.title)):
            if not 6 <= len(value) <= 50:
                raise Refusal(400, f"The dataset {what} must be between 6 and 50 characters")
        if not request.license_name or not 20 <= len(request.subtitle or "") <= 80:
            raise Refusal(400, "A license and a subtitle of 20 to 80 characters are needed")
        files = [self._uploaded(new.token)["name"] for new in request.files]
        self.datasets[dataset] = [{"files": files, "notes": "", "request": request}]
        response.ref, response.url, response.status = dataset, f"{WEB}/datasets/{dataset}", "Ok"  # status: a guess
        return response

    def rpc_CreateDatasetVersion(self, request: ApiCreateDatasetVersionRequest):
        dataset = f"{request.owner_slug}/{request.dataset_slug}"
        if dataset not in self.datasets:
            raise Refusal(404, f"Dataset {dataset} not found")
        self._own(request.owner_slug, dataset)
        files = [self._uploaded(new.token)["name"] for new in request.body.files]
        self.datasets[dataset].append({"files": files, "notes": request.body.version_notes, "request": request})
        response = ApiCreateDatasetResponse()
        response.ref, response.url, response.status = dataset, f"{WEB}/datasets/{dataset}", "Ok"
        return response

    # kernels.KernelsApiService

    def _kernel(self, owner: str, slug: str) -> Kernel:
        kernel = self.kernels.get(f"{owner}/{slug}")
        if kernel is None or not kernel.versions:
            # kaggle 2.2.5 words its 401/403 answers here as "Cannot access kernel ... wrong kernel slug ... or
            # private": Kaggle is taken to answer 403 to a kernel that is not there or not yours (a guess).
            raise Refusal(403, "Permission 'kernels.get' was denied")
        return kernel

    @staticmethod
    def _version(kernel: Kernel, label: str) -> int:
        if not label:
            return len(kernel.versions)
        found = re.fullmatch(r"v(\d+)", label)  # kaggle 2.2.5 sends `v<N>`: the API 404s a bare number, it says
        if not found or not 1 <= int(found.group(1)) <= len(kernel.versions):
            raise Refusal(404, f"Kernel version {label} not found")
        return int(found.group(1))

    def rpc_SaveKernel(self, request: ApiSaveKernelRequest):
        owner, slug = request.slug.split("/")
        self._own(owner, request.slug)
        response = ApiSaveKernelResponse()
        if not self.quota_left and (request.enable_gpu or request.enable_tpu):
            response.error = "Not enough accelerator quota left to run this kernel"  # a guess: field and words
            return response
        json.loads(request.text)  # a notebook must be JSON
        kernel = self.add_kernel(request.slug)
        kernel.versions.append({"request": request, "reads": 0})
        # A guess: sources Kaggle cannot attach come back in the invalid* lists, and the kernel is saved without them.
        response.invalid_dataset_sources = [d for d in request.dataset_data_sources if d not in self.datasets]
        response.invalid_kernel_sources = [
            k for k in request.kernel_data_sources if k not in self.kernels or not self.kernels[k].versions
        ]
        response.ref = f"/code/{request.slug}"  # a guess
        response.url = f"{WEB}/code/{request.slug}"
        response.version_number = len(kernel.versions)
        return response

    def rpc_GetKernelSessionStatus(self, request: ApiGetKernelSessionStatusRequest):
        kernel = self._kernel(request.user_name, request.kernel_slug)
        version = self._version(kernel, request.version_label)
        pushed = kernel.versions[version - 1]
        pushed["reads"] += 1
        states = kernel.states(version)
        state = states[min(pushed["reads"], len(states)) - 1]
        response = ApiGetKernelSessionStatusResponse()
        response.status = KernelWorkerStatus[state]
        if state == "ERROR":
            response.failure_message = kernel.failure
        return response

    def rpc_ListKernelSessionOutput(self, request: ApiListKernelSessionOutputRequest):
        kernel = self._kernel(request.user_name, request.kernel_slug)
        self._version(kernel, request.version_label)
        paths = sorted(p for p in kernel.output.rglob("*") if p.is_file()) if kernel.output else []
        start = int(request.page_token or 0)
        size = min(request.page_size or 20, MAX_PAGE)
        files = []
        for path in paths[start : start + size]:
            item = ApiKernelSessionOutputFile()
            item.file_name = path.relative_to(kernel.output).as_posix()
            item.url = self._serve(path.name, path.read_bytes())
            files.append(item)
        response = ApiListKernelSessionOutputResponse()
        response.files = files
        response.log = kernel.log  # on every page: a guess (kaggle 2.2.5 reads it from the first)
        response.next_page_token = str(start + size) if start + size < len(paths) else ""
        return response

    def rpc_GetKernel(self, request: ApiGetKernelRequest):
        kernel = self._kernel(request.user_name, request.kernel_slug)
        pushed = kernel.versions[self._version(kernel, request.version_label) - 1]["request"]
        blob = ApiKernelBlob()
        blob.source, blob.language, blob.kernel_type = pushed.text, pushed.language, pushed.kernel_type
        blob.slug = kernel.slug
        metadata = ApiKernelMetadata()
        metadata.ref, metadata.slug, metadata.author = f"{kernel.owner}/{kernel.slug}", kernel.slug, kernel.owner
        metadata.current_version_number = len(kernel.versions)
        response = ApiGetKernelResponse()
        response.blob, response.metadata = blob, metadata
        return response


def _handler(fake: FakeKaggle):
    class Handler(BaseHTTPRequestHandler):
        """Requests arrive as to a proxy (an absolute URL in the request line) or directly (a path)."""

        def log_message(self, format, *args):  # quiet: the tests read `fake.calls`
            pass

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, kind="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):  # an RPC: <endpoint>/api/v1/<service>/<rpc>, a JSON request
            path = urlsplit(self.path).path
            found = re.fullmatch(r"/api/v1/([\w.]+)/(\w+)", path)
            body = self._body()
            try:
                if not found:
                    raise Refusal(404, f"no route {path}")
                answer = fake.answer(*found.groups(), json.loads(body or b"{}"), self.headers.get("Authorization", ""))
            except Refusal as refusal:
                error = {"code": refusal.status, "message": str(refusal)}
                return self._send(refusal.status, json.dumps(error).encode())
            if isinstance(answer, Redirect):
                return self._send(302, headers={"Location": answer.location}, kind="text/plain")
            self._send(200, answer.to_json().encode())

        def do_GET(self):  # a served file: a redirect's target, or a kernel's output file
            found = re.fullmatch(r"/files/(\w+)/.*", urlsplit(self.path).path)
            served = fake.served(found.group(1)) if found else None
            if served is None:
                return self._send(404, b"not found", kind="text/plain")
            name, data = served
            if name in fake.stalled:
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                return fake.stall()
            self._send(200, data, kind="application/octet-stream")

        def do_PUT(self):  # an upload, in one request, to the createUrl its start answered
            found = re.fullmatch(r"/upload/(\w+)", urlsplit(self.path).path)
            stored = bool(found) and fake.receive(found.group(1), self._body())
            self._send(200 if stored else 404, kind="text/plain")

    return Handler
