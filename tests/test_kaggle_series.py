"""`make kaggle-run-all` through the real kaggle client and the fake Kaggle server: push the model runs (03_xception,
03_convnext, 04), wait, push 05 on their outputs, fetch, submit, the score; resuming, failed kernels, and the
one-line failures of the Kaggle boundary."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kaggle_fixtures import PROJECT_ROOT, kaggle_env, kaggle_make, run_module
from tools.kaggle import remote
from tools.kaggle.series import parse_duration

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")

IDS = {
    "03": "tester/sf-dl-cars-03-xception",
    "03c": "tester/sf-dl-cars-03-convnext",
    "04": "tester/sf-dl-cars-04-efficientnetb7",
    "05": "tester/sf-dl-cars-05-ensemble",
}
WEIGHTS = "tester/sf-dl-cars-keras-weights"
MODELS = ["03-xception", "03-convnext", "04-efficientnetb7"]  # lib.paths.MODEL_RUNS' kernels, pushed in this order
SERIES = [*MODELS, "05-ensemble"]
SAMPLE_IDS = ["11.jpg", "12.jpg", "13.jpg"]
KERNEL_LOG = [  # what `kaggle kernels output` writes as <slug>.log: one JSON array, entries across lines
    {"stream_name": "stdout", "time": 1.5, "data": "lib: 31 modules written to /kaggle/working/lib\n"},
    {
        "stream_name": "stderr",
        "time": 80.2,
        "data": "\x1b[0;31m---------------------------------------------------------------------------\x1b[0m\n"
        "\x1b[0;31mValueError\x1b[0m                                Traceback (most recent call last)\n"
        "Cell \x1b[0;32mIn[7], line 3\x1b[0m\n----> 3 fit(model)\n",
    },
    {"stream_name": "stderr", "time": 80.3, "data": "ValueError: stage 2 ran out of GPU memory at batch 32\n"},
]


def ensemble_output(folder: Path, categories=(3, 4, 5)) -> Path:
    """What 05's kernel leaves in /kaggle/working, in miniature: submission, run record, a weights file."""
    run = folder / "runs" / "full" / "05_ensemble"
    run.mkdir(parents=True)
    (folder / "submission.csv").write_text(
        "Id,Category\n" + "".join(f"{i},{c}\n" for i, c in zip(SAMPLE_IDS, categories, strict=True))
    )
    metrics = {
        "model": "ensemble",
        "profile": "full",
        "val_accuracy": 0.9731,
        "weights": {"03_xception": 0.4, "04_efficientnetb7": 0.6},
        "model_val_accuracy": {"03_xception": 0.9512, "04_efficientnetb7": 0.9688},
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "probs_test.csv").write_text("Id,p0\n11.jpg,1.0\n")
    (run / "model.keras").write_bytes(b"weights" * 100)
    (folder / "lib").mkdir()
    (folder / "lib" / "__init__.py").write_text("# the bundle\n")
    return folder


def fake_series(tmp_path, server, root=PROJECT_ROOT):
    """The fake Kaggle with the weights dataset, where the model kernels go queued (-> running) -> complete and 05
    running -> complete; the series run from the checkout `root`."""
    data = tmp_path / "real-data"
    data.mkdir()
    (data / "sample-submission.csv").write_text("Id,Category\n" + "".join(f"{i},0\n" for i in SAMPLE_IDS))
    server.add_dataset(WEIGHTS)
    server.add_kernel(IDS["03"], runs=[["QUEUED", "RUNNING", "COMPLETE"]])
    server.add_kernel(IDS["03c"], runs=[["QUEUED", "COMPLETE"]])
    server.add_kernel(IDS["04"], runs=[["QUEUED", "RUNNING", "RUNNING", "COMPLETE"]])
    server.add_kernel(IDS["05"], runs=[["RUNNING", "COMPLETE"]], output=ensemble_output(tmp_path / "out05"))
    server.solution = {"11.jpg": "3", "12.jpg": "4", "13.jpg": "0"}  # 05's submission gets 2 of 3 right
    env = kaggle_env(tmp_path, root=root, server=server)
    make = kaggle_make(tmp_path, env, root)
    build = tmp_path / "build"
    args = ["kaggle-run-all", "POLL=0", f"KERNEL_DIR={build}", f"DATA_DIR={data}"]
    return env, make, args, build


@pytest.fixture
def series(tmp_path, fake_kaggle):
    return fake_series(tmp_path, fake_kaggle)


def pushes(server) -> list[str]:
    """The kernels pushed, in order: 03-xception for tester/sf-dl-cars-03-xception."""
    return [request.slug.split("/")[-1].removeprefix("sf-dl-cars-") for request in server.called("SaveKernel")]


def status_reads(server, until: int | None = None) -> list[str]:
    """Each status read, as `owner/slug/<version label>`, among the first `until` calls."""
    return [
        f"{r.user_name}/{r.kernel_slug}/{r.version_label}"
        for name, r in server.calls[:until]
        if name == "GetKernelSessionStatus"
    ]


def downloaded(env) -> Path:
    return Path(env["CARS_KAGGLE_ROOT"]) / "working" / "runs" / "kaggle" / "sf-dl-cars-05-ensemble"


def test_run_all_pushes_waits_chains_05_fetches_submits_and_the_score_comes_back(series, fake_kaggle):
    env, make, args, build = series
    done = make(*args, "SUBMIT=1", "MSG=from kaggle")
    assert done.returncode == 0, done.stderr
    assert pushes(fake_kaggle) == SERIES
    meta = json.loads((build / "05_ensemble" / "kernel-metadata.json").read_text())
    assert meta["kernel_sources"] == [IDS["03"], IDS["03c"], IDS["04"]] and meta["enable_gpu"] is False
    assert meta["dataset_sources"] == []  # 05 trains nothing: no weights dataset
    meta_03 = json.loads((build / "03_xception" / "kernel-metadata.json").read_text())
    assert meta_03["machine_shape"] == "NvidiaTeslaT4" and meta_03["enable_internet"] is False
    assert meta_03["dataset_sources"] == [WEIGHTS]
    saved_05 = fake_kaggle.called("SaveKernel")[3]  # what Kaggle received
    assert saved_05.kernel_data_sources == [IDS["03"], IDS["03c"], IDS["04"]] and not saved_05.enable_gpu
    convnext = json.loads((build / "03_convnext" / "03_convnext.ipynb").read_text())["cells"]
    at = next(i for i, cell in enumerate(convnext) if "parameters" in cell["metadata"].get("tags", []))
    injected = "".join(convnext[at + 1]["source"])  # notebook 03 with the run's full-profile values, as papermill does
    assert convnext[at + 1]["metadata"]["tags"] == ["injected-parameters"] and injected.startswith("# Parameters\n")
    assert "run_name = '03_convnext'" in injected and "backbone = 'convnext_base'" in injected
    assert json.loads((build / "03_convnext" / "kernel-metadata.json").read_text())["id"] == IDS["03c"]

    first_05_push = next(
        n for n, (name, request) in enumerate(fake_kaggle.calls) if name == "SaveKernel" and "05" in request.slug
    )
    reads = status_reads(fake_kaggle, first_05_push)
    assert reads.count(f"{IDS['04']}/v1") == 4  # polled (by pushed version) until complete, then 05 was pushed
    assert reads.count(f"{IDS['03']}/v1") == 3  # not polled again once complete
    assert status_reads(fake_kaggle).count(f"{IDS['05']}/v1") == 2  # running, complete

    dest = downloaded(env)
    assert (dest / "submission.csv").is_file() and (dest / "runs/full/05_ensemble/metrics.json").is_file()
    assert not (dest / "runs/full/05_ensemble/model.keras").exists() and not (dest / "lib").exists()
    assert len(fake_kaggle.called("ListKernelSessionOutput")) == 2  # two pages of the fake's three files at most

    table = done.stdout[done.stdout.index("validation accuracy") :]
    assert "04_efficientnetb7" in table and "0.9688" in table and "ensemble" in table and "0.9731" in table
    [submission] = fake_kaggle.submissions
    assert submission.text == (dest / "submission.csv").read_text() and submission.description == "from kaggle"

    # Kaggle scores it between two listings: `make submissions` shows it pending, then with its score.
    listed = make("submissions")
    assert listed.returncode == 0, listed.stderr
    assert "from kaggle" in listed.stdout and "PENDING" in listed.stdout and "(1 new)" in listed.stdout
    scored = make("submissions")
    assert scored.returncode == 0, scored.stderr
    assert "COMPLETE" in scored.stdout and "0.66667" in scored.stdout and "(0 new)" in scored.stdout
    board = Path(env["CARS_KAGGLE_ROOT"]) / "working" / "submissions" / "leaderboard.csv"
    assert board.read_text().splitlines()[1].endswith(",from kaggle,COMPLETE,0.66667,")


def test_rerun_resumes_without_pushing_again(series, fake_kaggle):
    env, make, args, build = series
    assert make(*args).returncode == 0
    again = make(*args)
    assert again.returncode == 0, again.stderr
    assert pushes(fake_kaggle) == SERIES  # nothing new
    assert again.stdout.count("already COMPLETE for this bundle; not pushed again") == 4
    record = json.loads((downloaded(env).parent / "sf-dl-cars-03-xception" / "push.json").read_text())
    assert record["version"] == 1 and len(record["digest"]) == 64


def test_rerun_without_a_push_record_reads_the_bundle_from_kaggle(series, fake_kaggle):
    """A fresh checkout (no runs/kaggle/*/push.json) pulls the kernel's notebook and compares its bundle digest."""
    env, make, args, build = series
    assert make(*args).returncode == 0
    for record in (downloaded(env).parent).glob("*/push.json"):
        record.unlink()
    again = make(*args)
    assert again.returncode == 0, again.stderr
    assert pushes(fake_kaggle) == SERIES
    pulled = [f"{r.user_name}/{r.kernel_slug}" for r in fake_kaggle.called("GetKernel")]
    assert pulled == [IDS["03"], IDS["03c"], IDS["04"], IDS["05"]]


def test_an_edit_outside_a_kernels_imports_pushes_nothing_and_a_training_edit_pushes_the_models(
    tmp_path, project_copy, fake_kaggle
):
    """A bundle carries the lib modules its notebook imports: a toolbox edit (the report, the Kaggle tooling itself)
    changes no digest, so nothing is pushed again; an edit to lib/train.py, which 03 and 04 import, pushes the three
    model runs, and 05 after them (its digest names theirs), although 05 does not import lib/train.py itself."""
    env, make, args, build = fake_series(tmp_path, fake_kaggle, root=project_copy)
    assert make(*args).returncode == 0
    for tool in ("tools/report.py", "tools/kaggle/series.py", "tools/runner/inputs.py"):
        with open(project_copy / tool, "a") as file:
            file.write("\n# an edit\n")
    again = make(*args)
    assert again.returncode == 0, again.stderr
    assert pushes(fake_kaggle) == SERIES  # nothing new
    assert again.stdout.count("already COMPLETE for this bundle; not pushed again") == 4
    with open(project_copy / "lib" / "train.py", "a") as file:
        file.write("\n# an edit\n")
    trained = make(*args)
    assert trained.returncode == 0, trained.stderr
    assert pushes(fake_kaggle) == SERIES * 2


def test_a_changed_bundle_is_pushed_again_and_so_is_05(series, fake_kaggle):
    """ACCELERATOR= is part of the digest (as are the notebook, lib and the sources): the model kernels change, and
    05, whose digest names their bundles, is pushed again too."""
    env, make, args, build = series
    assert make(*args).returncode == 0
    changed = make(*args, "ACCELERATOR=tpu")
    assert changed.returncode == 0, changed.stderr
    assert pushes(fake_kaggle) == SERIES * 2
    assert [r.enable_tpu for r in fake_kaggle.called("SaveKernel")[4:]] == [True, True, True, False]
    assert json.loads((build / "05_ensemble" / "kernel-metadata.json").read_text())["enable_tpu"] is False


def test_a_running_kernel_with_another_bundle_is_not_pushed_over(series, fake_kaggle):
    env, make, args, build = series
    other = json.dumps({"cells": [{"cell_type": "code", "source": "# bundle " + "0" * 64}]})
    fake_kaggle.add_pushed_kernel(IDS["03"], other, runs=[["RUNNING"]])  # pushed from another checkout
    refused = make(*args)
    assert refused.returncode != 0
    line = next(line for line in refused.stderr.splitlines() if line.startswith("error: "))
    assert line.startswith("error: tester/sf-dl-cars-03-xception is RUNNING with bundle 000000000000")
    assert "https://www.kaggle.com/code/tester/sf-dl-cars-03-xception" in line and "Traceback" not in refused.stderr
    assert pushes(fake_kaggle) == []


def test_a_failed_kernel_prints_its_log_tail_and_stops_before_05(series, fake_kaggle):
    env, make, args, build = series
    fake_kaggle.add_kernel(
        IDS["04"],
        runs=[["RUNNING", "ERROR"], ["RUNNING", "COMPLETE"]],  # the push after the fix completes
        failure="Your notebook tried to allocate more memory",
        log="[" + "\n,".join(json.dumps(entry) for entry in KERNEL_LOG) + "]",
    )
    failed = make(*args)
    assert failed.returncode != 0
    err = failed.stderr
    assert f"{IDS['04']}/1 ended in ERROR (https://www.kaggle.com/code/{IDS['04']}): Your notebook tried" in err
    assert "ValueError: stage 2 ran out of GPU memory at batch 32" in err and "----> 3 fit(model)" in err
    assert "\x1b[" not in err and "tools/kaggle" not in err  # colours stripped; no traceback of ours
    assert pushes(fake_kaggle) == MODELS  # 05 never pushed
    saved = downloaded(env).parent / "sf-dl-cars-04-efficientnetb7" / "log" / "sf-dl-cars-04-efficientnetb7.log"
    assert saved.is_file()

    rerun = make(*args)  # still ERROR on Kaggle: 04 is pushed again, 03 (complete) is not
    assert rerun.returncode == 0, rerun.stderr
    assert "its last run of this bundle ended in ERROR; pushing it again" in rerun.stdout
    assert pushes(fake_kaggle) == [*MODELS, "04-efficientnetb7", "05-ensemble"]


def test_timeout_stops_waiting_in_one_line(series, fake_kaggle):
    env, make, args, build = series
    fake_kaggle.kernels[IDS["03"]].runs = [["RUNNING"]]
    stopped = make(*args, "TIMEOUT=0")
    assert stopped.returncode != 0 and "Traceback" not in stopped.stderr
    assert "stopped waiting after 0s (TIMEOUT=)" in stopped.stderr and "resumes waiting" in stopped.stderr


def test_ctrl_c_stops_polling_and_a_rerun_resumes_waiting(series, fake_kaggle):
    env, make, args, build = series
    fake_kaggle.kernels[IDS["03"]].runs = [["RUNNING"]]
    command = [sys.executable, "-m", "tools.kaggle.series", "--poll", "0.2", "--build-root", str(build)]
    proc = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while len(status_reads(fake_kaggle)) < 8:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    assert "Stopped waiting" in err and "`make kaggle-run-all` resumes waiting without pushing them again" in err

    fake_kaggle.kernels[IDS["03"]].runs = [["COMPLETE"]]
    resumed = make(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert pushes(fake_kaggle) == SERIES  # each model kernel once


def test_weights_1_fetches_everything(series):
    env, make, args, build = series
    assert make(*args, "WEIGHTS=1").returncode == 0
    assert (downloaded(env) / "runs/full/05_ensemble/model.keras").is_file()
    assert (downloaded(env) / "lib" / "__init__.py").is_file()


def test_read_pattern_keeps_what_a_user_reads():
    import re

    keep = [
        "submission.csv",
        "runs/full/03_xception/probs_val.csv",
        "runs/full/03_xception/history.csv",
        "runs/full/03_xception/03_xception.ipynb",
        "__notebook__.ipynb",
        "runs/full/03_xception/metrics.json",
    ]
    drop = ["runs/full/03_xception/model.keras", "runs/full/03_xception/stage_1.weights.h5", "lib/train.py"]
    assert all(re.search(remote.READ_PATTERN, name) for name in keep)
    assert not any(re.search(remote.READ_PATTERN, name) for name in drop)


def test_states_logs_and_durations_are_read():
    state = remote.KernelState("u/kernel", "ERROR", "Notebook exceeded its 12 hour limit")
    assert (state.ended, state.succeeded) == (True, False)
    assert not remote.KernelState("u/kernel", "QUEUED").ended and remote.KernelState("u/kernel", "COMPLETE").succeeded
    assert remote.split_id("u/kernel/3") == ("u", "kernel", "v3") and remote.split_id("u/kernel") == ("u", "kernel", "")
    text = remote.log_text_from(json.dumps(KERNEL_LOG))
    assert remote.error_tail(text).splitlines()[-1] == "ValueError: stage 2 ran out of GPU memory at batch 32"
    assert remote.log_text_from("not json\nlast line") == "not json\nlast line"
    assert [parse_duration(t) for t in ("90", "45m", "13h", "2.5s")] == [90, 2700, 46800, 2.5]


def run_series(tmp_path, server) -> subprocess.CompletedProcess:
    args = ["--poll", "0", "--build-root", str(tmp_path / "build")]
    return run_module("tools.kaggle.series", *args, env=kaggle_env(tmp_path, server=server))


def error_line(result) -> str:
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    return last


def test_an_unknown_kernel_is_one_line(tmp_path, fake_kaggle):
    """Kaggle answers a kernel that is not there, or not yours, with HTTP 403 (as the fake guesses) or 404."""
    env = kaggle_env(tmp_path, server=fake_kaggle)
    result = run_module("tools.kaggle.kernel", "status", "--id", "someone/their-kernel", env=env)
    assert error_line(result) == (
        "error: Kaggle has no kernel someone/their-kernel that you can see (HTTP 403; it does not exist yet, or it is "
        "someone else's private kernel): check KERNEL_ID= or your user name"
    )
    fake_kaggle.fail(404)
    result = run_module("tools.kaggle.kernel", "status", "--id", "tester/nope-kernel", env=env)
    assert "Kaggle has no kernel tester/nope-kernel that you can see (HTTP 404;" in error_line(result)


def test_a_push_refused_with_403_is_one_line(tmp_path, fake_kaggle):
    fake_kaggle.add_dataset(WEIGHTS)
    fake_kaggle.foreign_owners.add("tester")  # as if the id were another account's
    assert error_line(run_series(tmp_path, fake_kaggle)) == (
        "error: Kaggle refused access (HTTP 403) to kernel tester/sf-dl-cars-03-xception: it belongs to another "
        "account or is private; use an id under your own user name"
    )
    assert fake_kaggle.rpcs() == ["GetKernelSessionStatus", "GetDatasetStatus", "SaveKernel"]


def test_a_refused_push_names_the_quota(tmp_path, fake_kaggle):
    """A push Kaggle refuses in its answer's `error` (the fake's guess of how the quota refusal comes)."""
    fake_kaggle.add_dataset(WEIGHTS)
    fake_kaggle.quota_left = False
    assert error_line(run_series(tmp_path, fake_kaggle)) == (
        "error: Kaggle refused to push tester/sf-dl-cars-03-xception: Not enough accelerator quota left to run this "
        "kernel; if it is the weekly GPU/TPU quota, `kaggle quota` shows what is left and when it refills, or push "
        "with ACCELERATOR=none"
    )
    assert not list((tmp_path / "fake-kaggle" / "working" / "runs").rglob("push.json"))


def test_a_rate_limit_that_lasts_is_one_line(tmp_path, fake_kaggle):
    fake_kaggle.fail(429)
    result = run_series(tmp_path, fake_kaggle)
    assert error_line(result) == (
        "error: Kaggle kept answering with a conflict or rate limit (HTTP 429) about kernel "
        "tester/sf-dl-cars-03-xception after 3 retries: wait a few minutes, then run this again"
    )
    assert result.stderr.count("Kaggle is busy (HTTP 429): retry") == 3
    assert fake_kaggle.rpcs() == ["GetKernelSessionStatus"] * 4


@pytest.mark.parametrize("status", [409, 429])
def test_conflicts_and_rate_limits_are_retried_then_go_through(tmp_path, fake_kaggle, status):
    fake_kaggle.add_pushed_kernel(IDS["03"], "{}")
    fake_kaggle.fail(status, times=2)
    result = run_module(
        "tools.kaggle.kernel", "status", "--id", IDS["03"], env=kaggle_env(tmp_path, server=fake_kaggle)
    )
    assert result.returncode == 0, result.stderr
    assert f"{IDS['03']} is COMPLETE" in result.stdout
    assert result.stderr.count(f"Kaggle is busy (HTTP {status}): retry") == 2
    assert fake_kaggle.rpcs() == ["GetKernelSessionStatus"] * 3


def test_no_credentials_is_one_line(tmp_path, fake_kaggle):
    env = kaggle_env(tmp_path, credentials=False, server=fake_kaggle)
    result = run_module("tools.kaggle.series", "--poll", "0", env=env)
    assert error_line(result).startswith("error: no Kaggle credentials found: provide one of ~/.kaggle/kaggle.json")
    assert fake_kaggle.calls == []
