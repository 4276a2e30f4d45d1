"""`make lab`'s server options: notebooks/*.py are notebooks to Jupyter, and a kernel imports this checkout's lib."""

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from lib.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow  # a Jupyter server and a kernel

READY_SECONDS = 90  # generous bounds on a shared 2-core machine; they limit waits, they are not asserted
REPLY_SECONDS = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A headless `jupyter server` on 127.0.0.1, a random port and a token, started as `make lab` starts JupyterLab:
    JUPYTER_CONFIG_PATH names the repo root, so Jupyter loads its jupyter_server_config.py."""
    pytest.importorskip("jupyter_server")
    pytest.importorskip("jupytext")
    # As after `make notebooks`: the built .ipynb is newer than its .py and carries kernel metadata the .py has not.
    # make writes it only when the .py is newer, so tests running beside this one never see a half-written file.
    env = {key: value for key, value in os.environ.items() if key != "MAKEFLAGS"}
    built = ["make", "--no-print-directory", "notebooks/03_xception.ipynb"]
    subprocess.run(built, cwd=PROJECT_ROOT, check=True, timeout=120, env=env, capture_output=True)
    port, token = free_port(), secrets.token_hex(16)
    folder = tmp_path_factory.mktemp("lab")
    runtime, log = folder / "runtime", (folder / "server.log").open("w+")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_server",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            "--allow-root",  # CI containers run as root; `make lab` keeps Jupyter's refusal
        ],
        cwd=PROJECT_ROOT,
        # Connection files and the cookie secret in tmp, not in the user's runtime folder.
        env={**os.environ, "JUPYTER_CONFIG_PATH": str(PROJECT_ROOT), "JUPYTER_RUNTIME_DIR": str(runtime)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            try:
                api(base, token, "GET", "/api/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"jupyter server did not start:\n{log.read()[-3000:]}")
                time.sleep(0.5)
        yield base, token
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
        log.close()


def api(base: str, token: str, method: str, path: str, body: dict | None = None):
    request = urllib.request.Request(
        base + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
    return json.loads(text) if text else None


def test_percent_notebooks_are_listed_as_notebooks(server):
    listing = api(*server, "GET", "/api/contents/notebooks")
    kinds = {item["name"]: item["type"] for item in listing["content"]}
    assert kinds["03_xception.py"] == "notebook"
    opened = api(*server, "GET", "/api/contents/notebooks/03_xception.py")
    assert opened["type"] == "notebook"
    tags = [cell["metadata"].get("tags", []) for cell in opened["content"]["cells"]]
    assert ["parameters"] in tags  # read through jupytext: the percent cells with their tags


async def execute(base: str, token: str, kernel_id: str, code: str) -> str:
    """Run `code` in the kernel through its websocket channel; return what it printed to stdout."""
    from tornado.websocket import websocket_connect

    url = base.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels?token={token}"
    socket_ = await asyncio.wait_for(websocket_connect(url), REPLY_SECONDS)
    msg_id = uuid.uuid4().hex
    request = {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "username": "test",
            "session": uuid.uuid4().hex,
            "version": "5.3",
            "date": "",
        },
        "parent_header": {},
        "metadata": {},
        "content": {"code": code, "silent": False, "store_history": False, "allow_stdin": False},
        "channel": "shell",
    }
    await socket_.write_message(json.dumps(request))
    printed, errors = [], []
    try:
        while True:
            raw = await asyncio.wait_for(socket_.read_message(), REPLY_SECONDS)
            assert raw is not None, "the kernel's websocket closed before the reply"
            message = json.loads(raw)
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream" and content["name"] == "stdout":
                printed.append(content["text"])
            elif kind == "error":
                errors.append(f"{content['ename']}: {content['evalue']}")
            elif kind == "status" and content["execution_state"] == "idle":
                break
    finally:
        socket_.close()
    assert not errors, errors
    return "".join(printed)


def test_kernel_is_the_projects_python_and_imports_this_checkouts_lib(server):
    base, token = server
    # Started from notebooks/, as a notebook's kernel is: lib comes from the checkout, not from the kernel's folder.
    kernel = api(base, token, "POST", "/api/kernels", {"name": "python3", "path": "notebooks"})
    try:
        code = "import sys, lib; print(lib.__file__); print(sys.executable)"
        printed = asyncio.run(execute(base, token, kernel["id"], code)).split()
    finally:
        api(base, token, "DELETE", f"/api/kernels/{kernel['id']}")
    assert printed[0] == str(PROJECT_ROOT / "lib" / "__init__.py")
    assert printed[1] == sys.executable  # the environment the server runs in (.venv for `make lab`)
