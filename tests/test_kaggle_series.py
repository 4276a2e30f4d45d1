"""`make kaggle-run-all` against the fake kaggle CLI: push the model runs (03_xception, 03_convnext, 04), wait, push
05 on their outputs, fetch, submit; resuming, failed kernels, and the one-line failures of the Kaggle boundary."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kaggle_fixtures import PROJECT_ROOT, kaggle_calls, kaggle_env, kaggle_make, run_module
from tools.kaggle import remote
from tools.kaggle.cli import explain
from tools.kaggle.series import parse_duration

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")

IDS = {
    "03": "tester/sf-dl-cars-03-xception",
    "03c": "tester/sf-dl-cars-03-convnext",
    "04": "tester/sf-dl-cars-04-efficientnetb7",
    "05": "tester/sf-dl-cars-05-ensemble",
}
MODELS = ["03_xception", "03_convnext", "04_efficientnetb7"]  # lib.paths.MODEL_RUNS, pushed in this order
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


def script_kernels(path: Path, **kernels) -> Path:
    path.write_text(json.dumps(kernels))
    return path


def fake_series(tmp_path, root=PROJECT_ROOT):
    """A fake Kaggle where the model kernels go queued (-> running) -> complete and 05 running -> complete; the
    series run from the checkout `root`."""
    data = tmp_path / "real-data"
    data.mkdir()
    (data / "sample-submission.csv").write_text("Id,Category\n" + "".join(f"{i},0\n" for i in SAMPLE_IDS))
    script = script_kernels(
        tmp_path / "kernels.json",
        **{
            IDS["03"]: {"status": ["QUEUED", "RUNNING", "COMPLETE"]},
            IDS["03c"]: {"status": ["QUEUED", "COMPLETE"]},
            IDS["04"]: {"status": ["QUEUED", "RUNNING", "RUNNING", "COMPLETE"]},
            IDS["05"]: {"status": ["RUNNING", "COMPLETE"], "output": str(ensemble_output(tmp_path / "out05"))},
        },
    )
    env = kaggle_env(tmp_path, FAKE_KAGGLE_KERNELS=str(script), CARS_KAGGLE_RETRY_SECONDS="0", root=root)
    make = kaggle_make(tmp_path, env, root)
    build = tmp_path / "build"
    args = ["kaggle-run-all", "POLL=0", f"KERNEL_DIR={build}", f"DATA_DIR={data}"]
    return env, make, args, build, script


@pytest.fixture
def series(tmp_path):
    return fake_series(tmp_path)


def pushes(env) -> list[str]:
    return [Path(c["argv"][3]).name for c in kaggle_calls(env) if c["argv"][:2] == ["kernels", "push"]]


def downloaded(env) -> Path:
    return Path(env["CARS_KAGGLE_ROOT"]) / "working" / "runs" / "kaggle" / "sf-dl-cars-05-ensemble"


def test_run_all_pushes_waits_chains_05_fetches_and_submits(series):
    env, make, args, build, _ = series
    done = make(*args, "SUBMIT=1", "MSG=from kaggle")
    assert done.returncode == 0, done.stderr
    assert pushes(env) == MODELS + ["05_ensemble"]
    meta = json.loads((build / "05_ensemble" / "kernel-metadata.json").read_text())
    assert meta["kernel_sources"] == [IDS["03"], IDS["03c"], IDS["04"]] and meta["enable_gpu"] is False
    assert meta["dataset_sources"] == []  # 05 trains nothing: no weights dataset
    meta_03 = json.loads((build / "03_xception" / "kernel-metadata.json").read_text())
    assert meta_03["machine_shape"] == "NvidiaTeslaT4" and meta_03["enable_internet"] is False
    assert meta_03["dataset_sources"] == ["tester/sf-dl-cars-keras-weights"]
    convnext = json.loads((build / "03_convnext" / "03_convnext.ipynb").read_text())["cells"]
    at = next(i for i, cell in enumerate(convnext) if "parameters" in cell["metadata"].get("tags", []))
    injected = "".join(convnext[at + 1]["source"])  # notebook 03 with the run's full-profile values, as papermill does
    assert convnext[at + 1]["metadata"]["tags"] == ["injected-parameters"] and injected.startswith("# Parameters\n")
    assert "run_name = '03_convnext'" in injected and "backbone = 'convnext_base'" in injected
    assert json.loads((build / "03_convnext" / "kernel-metadata.json").read_text())["id"] == IDS["03c"]

    calls = [c["argv"] for c in kaggle_calls(env)]
    first_05_push = next(i for i, a in enumerate(calls) if a[:2] == ["kernels", "push"] and "05_ensemble" in a[3])
    statuses = [a[2] for a in calls[:first_05_push] if a[:2] == ["kernels", "status"]]
    assert statuses.count(f"{IDS['04']}/1") == 4  # polled (by pushed version) until complete, then 05 was pushed
    assert statuses.count(f"{IDS['03']}/1") == 3  # not polled again once complete

    dest = downloaded(env)
    assert (dest / "submission.csv").is_file() and (dest / "runs/full/05_ensemble/metrics.json").is_file()
    assert not (dest / "runs/full/05_ensemble/model.keras").exists() and not (dest / "lib").exists()
    output_call = next(a for a in calls if a[:2] == ["kernels", "output"])
    assert output_call[output_call.index("--file-pattern") + 1] == remote.READ_PATTERN

    table = done.stdout[done.stdout.index("validation accuracy") :]
    assert "04_efficientnetb7" in table and "0.9688" in table and "ensemble" in table and "0.9731" in table
    upload = next(c for c in kaggle_calls(env) if c["argv"][:2] == ["competitions", "submit"])
    assert upload["uploaded"] == (dest / "submission.csv").read_text()
    assert upload["argv"][upload["argv"].index("-m") + 1] == "from kaggle"


def test_rerun_resumes_without_pushing_again(series):
    env, make, args, build, _ = series
    assert make(*args).returncode == 0
    again = make(*args)
    assert again.returncode == 0, again.stderr
    assert pushes(env) == MODELS + ["05_ensemble"]  # nothing new
    assert again.stdout.count("already COMPLETE for this bundle; not pushed again") == 4
    record = json.loads((downloaded(env).parent / "sf-dl-cars-03-xception" / "push.json").read_text())
    assert record["version"] == 1 and len(record["digest"]) == 64


def test_rerun_without_a_push_record_reads_the_bundle_from_kaggle(series):
    """A fresh checkout (no runs/kaggle/*/push.json) pulls the kernel's notebook and compares its bundle digest."""
    env, make, args, build, _ = series
    assert make(*args).returncode == 0
    for record in (downloaded(env).parent).glob("*/push.json"):
        record.unlink()
    again = make(*args)
    assert again.returncode == 0, again.stderr
    assert pushes(env) == MODELS + ["05_ensemble"]
    assert [c["argv"][2] for c in kaggle_calls(env) if c["argv"][:2] == ["kernels", "pull"]][:3] == [
        IDS["03"],
        IDS["03c"],
        IDS["04"],
    ]


def test_an_edit_outside_a_kernels_imports_pushes_nothing_and_a_training_edit_pushes_the_models(tmp_path, project_copy):
    """A bundle carries the lib modules its notebook imports: a toolbox edit (the report, the Kaggle tooling itself)
    changes no digest, so nothing is pushed again; an edit to lib/train.py, which 03 and 04 import, pushes the three
    model runs, and 05 after them (its digest names theirs), although 05 does not import lib/train.py itself."""
    env, make, args, build, _ = fake_series(tmp_path, root=project_copy)
    assert make(*args).returncode == 0
    for tool in ("tools/report.py", "tools/kaggle/series.py", "tools/runner/inputs.py"):
        with open(project_copy / tool, "a") as file:
            file.write("\n# an edit\n")
    again = make(*args)
    assert again.returncode == 0, again.stderr
    assert pushes(env) == MODELS + ["05_ensemble"]  # nothing new
    assert again.stdout.count("already COMPLETE for this bundle; not pushed again") == 4
    with open(project_copy / "lib" / "train.py", "a") as file:
        file.write("\n# an edit\n")
    trained = make(*args)
    assert trained.returncode == 0, trained.stderr
    assert pushes(env) == (MODELS + ["05_ensemble"]) * 2


def test_a_changed_bundle_is_pushed_again_and_so_is_05(series):
    """ACCELERATOR= is part of the digest (as are the notebook, lib and the sources): the model kernels change, and
    05, whose digest names their bundles, is pushed again too."""
    env, make, args, build, _ = series
    assert make(*args).returncode == 0
    changed = make(*args, "ACCELERATOR=tpu")
    assert changed.returncode == 0, changed.stderr
    assert pushes(env) == (MODELS + ["05_ensemble"]) * 2
    assert json.loads((build / "05_ensemble" / "kernel-metadata.json").read_text())["enable_tpu"] is False


def test_a_running_kernel_with_another_bundle_is_not_pushed_over(series):
    env, make, args, build, script = series
    kernels = json.loads(script.read_text())
    kernels[IDS["03"]].update(status=["RUNNING"], existing=True)
    script.write_text(json.dumps(kernels))
    state = Path(env["FAKE_KAGGLE_LOG"]).parent / "fake-kaggle-state" / "pushed" / "sf-dl-cars-03-xception"
    state.mkdir(parents=True)
    (state / "kernel-metadata.json").write_text(json.dumps({"code_file": "03_xception.ipynb"}))
    (state / "03_xception.ipynb").write_text('{"cells": [{"source": "# bundle ' + "0" * 64 + '"}]}')
    refused = make(*args)
    assert refused.returncode != 0
    line = next(line for line in refused.stderr.splitlines() if line.startswith("error: "))
    assert line.startswith("error: tester/sf-dl-cars-03-xception is RUNNING with bundle 000000000000")
    assert "https://www.kaggle.com/code/tester/sf-dl-cars-03-xception" in line and "Traceback" not in refused.stderr
    assert pushes(env) == []


def test_a_failed_kernel_prints_its_log_tail_and_stops_before_05(series, tmp_path):
    env, make, args, build, script = series
    log = tmp_path / "04.log"
    log.write_text("[" + "\n,".join(json.dumps(entry) for entry in KERNEL_LOG) + "]")
    kernels = json.loads(script.read_text())
    kernels[IDS["04"]] = {
        "runs": [["RUNNING", "ERROR"], ["RUNNING", "COMPLETE"]],  # the push after the fix completes
        "failure": "Your notebook tried to allocate more memory",
        "log": str(log),
    }
    script.write_text(json.dumps(kernels))
    failed = make(*args)
    assert failed.returncode != 0
    err = failed.stderr
    assert f"{IDS['04']}/1 ended in ERROR (https://www.kaggle.com/code/{IDS['04']}): Your notebook tried" in err
    assert "ValueError: stage 2 ran out of GPU memory at batch 32" in err and "----> 3 fit(model)" in err
    assert "\x1b[" not in err and "lib/kaggle" not in err  # colours stripped; no traceback of ours
    assert pushes(env) == MODELS  # 05 never pushed
    saved = downloaded(env).parent / "sf-dl-cars-04-efficientnetb7" / "log" / "sf-dl-cars-04-efficientnetb7.log"
    assert saved.is_file()

    rerun = make(*args)  # still ERROR on Kaggle: 04 is pushed again, 03 (complete) is not
    assert rerun.returncode == 0, rerun.stderr
    assert "its last run of this bundle ended in ERROR; pushing it again" in rerun.stdout
    assert pushes(env) == [*MODELS, "04_efficientnetb7", "05_ensemble"]


def test_timeout_stops_waiting_in_one_line(series):
    env, make, args, build, script = series
    kernels = json.loads(script.read_text())
    kernels[IDS["03"]]["status"] = ["RUNNING"]
    script.write_text(json.dumps(kernels))
    stopped = make(*args, "TIMEOUT=0")
    assert stopped.returncode != 0 and "Traceback" not in stopped.stderr
    assert "stopped waiting after 0s (TIMEOUT=)" in stopped.stderr and "resumes waiting" in stopped.stderr


def test_ctrl_c_stops_polling_and_a_rerun_resumes_waiting(series):
    env, make, args, build, script = series
    kernels = json.loads(script.read_text())
    kernels[IDS["03"]]["status"] = ["RUNNING"]
    script.write_text(json.dumps(kernels))
    command = [sys.executable, "-m", "tools.kaggle.series", "--poll", "0.2", "--build-root", str(build)]
    proc = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while len([c for c in kaggle_calls(env) if c["argv"][:2] == ["kernels", "status"]]) < 8:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    assert "Stopped waiting" in err and "`make kaggle-run-all` resumes waiting without pushing them again" in err

    kernels[IDS["03"]]["status"] = ["COMPLETE"]
    script.write_text(json.dumps(kernels))
    resumed = make(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert pushes(env) == MODELS + ["05_ensemble"]  # each model kernel once


def test_weights_1_fetches_everything(series):
    env, make, args, build, _ = series
    assert make(*args, "WEIGHTS=1").returncode == 0
    assert (downloaded(env) / "runs/full/05_ensemble/model.keras").is_file()
    output_call = next(c["argv"] for c in kaggle_calls(env) if c["argv"][:2] == ["kernels", "output"])
    assert "--file-pattern" not in output_call


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


def test_status_lines_and_logs_are_parsed():
    state = remote.parse_status(
        'u/k has status "KernelWorkerStatus.ERROR"\nFailure message: "Notebook exceeded its 12 hour limit"\n', "u/k"
    )
    assert (state.state, state.failure, state.ended, state.succeeded) == (
        "ERROR",
        "Notebook exceeded its 12 hour limit",
        True,
        False,
    )
    assert not remote.parse_status('u/k has status "KernelWorkerStatus.QUEUED"', "u/k").ended
    with pytest.raises(remote.KaggleError, match="could not read the state of u/k"):
        remote.parse_status("something else", "u/k")
    text = remote.log_text_from(json.dumps(KERNEL_LOG))
    assert remote.error_tail(text).splitlines()[-1] == "ValueError: stage 2 ran out of GPU memory at batch 32"
    assert remote.log_text_from("not json\nlast line") == "not json\nlast line"
    assert [parse_duration(t) for t in ("90", "45m", "13h", "2.5s")] == [90, 2700, 46800, 2.5]


@pytest.mark.parametrize(
    "fail, module_args, expected",
    [
        (
            "404",
            ["tools.kaggle.kernel", "status", "--id", "tester/nope"],
            "Kaggle has no kernel tester/nope (HTTP 404)",
        ),
        (
            "403",
            ["tools.kaggle.series"],
            "Kaggle refused access (HTTP 403) to tester/sf-dl-cars-03-xception: it belongs",
        ),
        ("429:9", ["tools.kaggle.series"], "conflict or rate limit (HTTP 409/429) after 3 retries: wait a few minutes"),
        ("quota", ["tools.kaggle.series"], "your weekly Kaggle GPU/TPU quota is used up (`kaggle quota` shows it"),
    ],
)
def test_kaggle_failures_are_one_line(tmp_path, fail, module_args, expected):
    env = kaggle_env(tmp_path, FAKE_KAGGLE_FAIL=fail, CARS_KAGGLE_RETRY_SECONDS="0")
    extra = ["--poll", "0", "--build-root", str(tmp_path / "build")] if module_args[0] == "tools.kaggle.series" else []
    result = run_module(*module_args, *extra, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last


def test_conflicts_are_retried_then_go_through(tmp_path):
    env = kaggle_env(tmp_path, FAKE_KAGGLE_FAIL="409:2", CARS_KAGGLE_RETRY_SECONDS="0")
    result = run_module("tools.kaggle.kernel", "status", "--id", IDS["03"], env=env)
    assert result.returncode == 1  # the fake has no such kernel; what counts is that it got past the 409s
    assert result.stderr.count("Kaggle is busy (HTTP 409/429): retry") == 2
    assert [c["argv"][:2] for c in kaggle_calls(env)] == [["kernels", "status"]] * 3


def test_no_credentials_is_one_line(tmp_path):
    result = run_module("tools.kaggle.series", "--poll", "0", env=kaggle_env(tmp_path, credentials=False))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: no Kaggle credentials found: provide one of ~/.kaggle/kaggle.json")


def test_explain_names_the_kernel_for_a_foreign_one():
    line = explain(
        "Cannot access kernel 'x/y' (Permission 'kernels.get' was denied).",
        "kernels status",
        ("kernels", "status", "x/y"),
    )
    assert line.startswith("Kaggle has no kernel x/y that you can see")
