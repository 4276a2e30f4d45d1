"""Every Kaggle target when the network fails for real: nothing listening, or a server that accepts the connection
and never answers. Each says so in one line within the timeout, and leaves nothing half written."""

from __future__ import annotations

import os
import socket
import time

import pytest

from tests.kaggle_fixtures import PROXY_VARIABLES, kaggle_env, make_competition_files, serve_competition
from tools.kaggle import download, kernel, series, submit, weights

TIMEOUT_SECONDS = 1  # CARS_KAGGLE_TIMEOUT_SECONDS for these tests
KERNEL = "tester/sf-dl-cars-03-xception"


@pytest.fixture
def nothing_listening():
    """A local port that refuses every connection: bound, never listening, held for the test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def stalled_server():
    """A local port that accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """This process's environment as kaggle_env sets a subprocess's; returns a function pointing it at a proxy."""
    for name in list(os.environ):
        if name.startswith("KAGGLE_") or name.lower() in PROXY_VARIABLES or name == "WEIGHTS_DIR":
            monkeypatch.delenv(name)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))

    def point_at(proxy: str | None, server=None) -> None:
        env = kaggle_env(tmp_path, server=server, CARS_KAGGLE_TIMEOUT_SECONDS=str(TIMEOUT_SECONDS))
        env.update({"HTTP_PROXY": proxy, "http_proxy": proxy} if proxy else {})
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    return point_at


def files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


def contents(folder) -> dict:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} if folder.exists() else {}


def prepare(target: str, tmp_path):
    """The arguments of `target`'s entry point (what kaggle.mk passes), and what must be left as it was."""
    working = tmp_path / "fake-kaggle" / "working"
    if target == "data":
        return download.main, ["--data-dir", str(tmp_path / "data")], tmp_path / "data"
    if target in ("submit", "submissions"):
        demo = tmp_path / "demo"
        demo.mkdir()
        (demo / "sample-submission.csv").write_text("Id,Category\n1.jpg,0\n")
        (demo / "test_labels.csv").write_text("Id,Category\n1.jpg,3\n")
        (tmp_path / "sub.csv").write_text("Id,Category\n1.jpg,3\n")
        board = working / "submissions" / "leaderboard.csv"
        board.parent.mkdir(parents=True)
        board.write_text(
            "ref,fileName,date,description,status,publicScore,privateScore\n1,a.csv,2026,a,COMPLETE,0.9,\n"
        )
        if target == "submit":
            return submit.main, ["--file", str(tmp_path / "sub.csv"), "--data-dir", str(demo), "--force"], working
        return submit.main, ["list"], working
    if target == "kaggle-run-all":
        return series.main, ["--poll", "0", "--build-root", str(tmp_path / "build")], working
    if target == "kaggle-push":
        assert kernel.main(["build", "--notebook", "03_xception", "--out", str(tmp_path / "kernel")]) == 0
        return kernel.main, ["push", "--out", str(tmp_path / "kernel")], working
    if target in ("kaggle-status", "kaggle-output"):
        return kernel.main, [target.split("-")[1], "--id", KERNEL], working
    if target == "kaggle-weights":
        (tmp_path / "keras" / "models").mkdir(parents=True)  # $KERAS_HOME/models, as the sandbox sets it
        from lib.backbones import backbone_spec

        for name in (backbone_spec(backbone).notop_file for backbone in weights.needed_backbones()):
            (tmp_path / "keras" / "models" / name).write_bytes(b"h5")
        return weights.main, ["upload", "--out", str(tmp_path / "stage")], working
    raise AssertionError(target)


TARGETS = [
    "data",
    "submit",
    "submissions",
    "kaggle-run-all",
    "kaggle-push",
    "kaggle-status",
    "kaggle-output",
    "kaggle-weights",
]


@pytest.mark.parametrize("target", TARGETS)
def test_nothing_listening_is_one_line(tmp_path, sandbox, nothing_listening, capsys, target):
    sandbox(nothing_listening)
    main, args, kept = prepare(target, tmp_path)
    before = contents(kept)
    capsys.readouterr()
    assert main(args) == 1
    assert capsys.readouterr().err.strip() == (
        "error: the network is unreachable: cannot connect to localhost (check the connection or proxy)"
    )
    assert contents(kept) == before, "something was written"


@pytest.mark.parametrize("target", TARGETS)
def test_a_stalled_server_is_one_line_within_the_timeout(tmp_path, sandbox, stalled_server, capsys, target):
    sandbox(stalled_server)
    main, args, kept = prepare(target, tmp_path)
    before = contents(kept)
    capsys.readouterr()
    start = time.monotonic()
    assert main(args) == 1
    waited = time.monotonic() - start
    err = capsys.readouterr().err
    assert err.strip() == (
        f"error: Kaggle did not answer within {TIMEOUT_SECONDS} s (http://localhost): the connection stalled; run "
        "this again later (CARS_KAGGLE_TIMEOUT_SECONDS= sets the wait)"
    )
    assert waited < 30  # one request's timeout, not the minutes an unbounded request waits
    assert contents(kept) == before, "something was written"


def test_a_download_that_stalls_halfway_leaves_nothing(tmp_path, sandbox, fake_kaggle, capsys):
    """The fake sends half of train.zip, then nothing: no partial zip, no temp file, nothing extracted."""
    make_competition_files(tmp_path / "served")
    serve_competition(fake_kaggle, tmp_path / "served")
    fake_kaggle.stalled.add("train.zip")
    sandbox(None, fake_kaggle)
    data = tmp_path / "data"
    assert download.main(["--data-dir", str(data)]) == 1
    assert "error: Kaggle did not answer within 1 s" in capsys.readouterr().err
    assert files_under(data) == ["sample-submission.csv", "train.csv"]  # each whole; train.zip not there at all
