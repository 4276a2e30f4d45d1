"""End to end through make and papermill: the six real notebooks (seven runs) on a tiny demo, failures, bad DATA_DIR."""

import json
import os
import shutil
import subprocess
import sys

import nbformat
import pandas as pd
import pytest
import yaml

from lib import paths
from lib.runtime import available_cores
from lib.submission import read_sample_ids, validate_submission
from tests.kaggle_fixtures import kaggle_env, run_module

NOTEBOOKS = paths.series_notebooks()
RUNS = paths.series_runs()  # the notebooks' own runs and 03_convnext (notebook 03 with its own profile file)
MODEL_RUNS = list(paths.MODEL_RUNS)


def make(*args, output_root, timeout=1500):
    env = {**os.environ, "CARS_OUTPUT_ROOT": str(output_root)}
    env.pop("MAKEFLAGS", None)
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=paths.PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`make run-all` once on a tiny demo copy with the tiny profile; outputs under a temp output root."""
    from lib.demo import generate

    data_dir = generate(tmp_path_factory.mktemp("e2e") / "cars", train_per_class=6, test_per_class=2, seed=5)
    output_root = tmp_path_factory.mktemp("out")
    done = make("run-all", f"DATA_DIR={data_dir}", "PROFILE=tiny", output_root=output_root)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    return data_dir, output_root, done


@pytest.mark.slow
def test_run_all_executes_every_notebook(tiny_run):
    _, output_root, done = tiny_run
    for name in RUNS:
        executed = output_root / "runs" / "tiny" / name / f"{name}.ipynb"
        notebook = nbformat.read(executed, as_version=4)
        errors = [
            o
            for c in notebook.cells
            if c.cell_type == "code"
            for o in c.get("outputs", [])
            if o.get("output_type") == "error"
        ]
        assert not errors, f"{name} has an error output"
        injected = [c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and 'profile = "tiny"' in injected[0].source
        assert ('run_name = "03_convnext"' in injected[0].source) == (name == "03_convnext")  # its own run name
    assert "Done. Submissions:" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_RUNS)
def test_model_notebooks_show_the_head_and_the_stage_plan_before_training(tiny_run, name):
    """A student sees what is trained, in what order, before any training cell: the head layer by layer, then one
    row per stage with its trainable weights."""
    _, output_root, _ = tiny_run
    notebook = nbformat.read(output_root / "runs" / "tiny" / name / f"{name}.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    html = ["".join(o.get("data", {}).get("text/html", "") for o in cell.get("outputs", [])) for cell in code]
    training = next(i for i, cell in enumerate(code) if "fit_and_evaluate" in cell.source)
    head = next(i for i, shown in enumerate(html) if "the backbone" in shown and "logits" in shown)
    plan = next(i for i, shown in enumerate(html) if "trainable weights" in shown and "schedule" in shown)
    assert head < plan < training
    stages = yaml.safe_load((paths.PROJECT_ROOT / "profiles" / "tiny" / f"{name}.yaml").read_text())["stages"]
    assert html[plan].count("<tr>") == 1 + len(stages)  # the header row and one row per stage


@pytest.mark.slow
def test_run_all_ends_with_a_report_that_opens_in_a_browser(tiny_run):
    """The transcript's last line is reports/tiny/index.html; in headless Chromium every image of the index and of
    each notebook page decodes, every link resolves, and the table shows the runs' numbers."""
    from tests.report_browser import check_report

    _, output_root, done = tiny_run
    index = output_root / "reports" / "tiny" / "index.html"
    assert done.stdout.rstrip().endswith(str(index))
    seen = check_report(index, index.with_name("index.png"))  # the screenshot stays beside the report
    table = {row[0]: row for row in seen["table"]}
    assert list(table) == RUNS  # in the series' order
    for name in MODEL_RUNS:
        metrics = json.loads((output_root / "runs" / "tiny" / name / "metrics.json").read_text())
        assert table[name][2:4] == [f"{metrics['val_accuracy_no_tta']:.4f}", f"{metrics['val_accuracy']:.4f}"]
        assert table[name][6] == ("yes" if metrics["stopped_by_budget"] else "no")
    assert len(seen["pages"]) == len(RUNS) and seen["images"] > 0


@pytest.mark.slow
def test_run_all_analyses_errors_and_duplicates_and_keeps_every_figure_as_a_file(tiny_run):
    """01 finds the demo's planted near-duplicates; 06 writes its tables and its Grad-CAM, calibration and
    mistake figures; every notebook's figures are PNGs in its run folder under their stable names."""
    import pandas as pd

    data_dir, output_root, _ = tiny_run
    runs = output_root / "runs" / "tiny"
    planted = pd.read_csv(data_dir / "duplicates_planted.csv")
    found = pd.read_csv(runs / "01_eda" / "duplicates.csv")
    assert len(planted) > 0
    pair = lambda frame: set(zip(frame["kind"], frame["id_a"].astype(str), frame["id_b"].astype(str)))  # noqa: E731
    assert pair(planted) <= pair(found) | {(k, b, a) for k, a, b in pair(found)}
    for table in ("per_class.csv", "confused_pairs.csv", "misclassified.csv", "calibration.csv"):
        assert len(pd.read_csv(runs / "06_error_analysis" / table)) > 0, table
    expected = {
        "01_eda": {"class_balance", "image_sizes", "sample_grid", "duplicate_pairs"},
        "02_augmentation_preview": {"albumentations_medium", "mix_cutmix", "mix_mixup"},
        "03_xception": {"lr_schedule", "history", "confusion"},
        "03_convnext": {"lr_schedule", "history", "confusion"},
        "04_efficientnetb7": {"lr_schedule", "history", "confusion"},
        "05_ensemble": {"confusion"},
        "06_error_analysis": {
            "confused_pairs",
            "misclassified_gallery",
            "reliability_diagram",
            "gradcam_03_xception",
            "gradcam_03_convnext",
            "gradcam_04_efficientnetb7",
            "gradcam_ensemble",
        },
    }
    for name, figures in expected.items():
        written = {p.stem for p in (runs / name / "figures").glob("*.png")}
        assert figures <= written, (name, figures - written)


@pytest.mark.slow
def test_run_all_writes_valid_submissions_and_run_records(tiny_run):
    data_dir, output_root, _ = tiny_run
    sample_ids = read_sample_ids(data_dir / "sample-submission.csv")
    for name in ("xception", "convnext", "efficientnetb7", "submission"):
        validate_submission(output_root / "submissions" / f"{name}.csv", sample_ids)
    for name in MODEL_RUNS:
        run = output_root / "runs" / "tiny" / name
        assert {
            "params.json",
            "versions.json",
            "history.csv",
            "best.weights.h5",
            "probs_val.csv",
            "probs_test.csv",
            "metrics.json",
            "problems.csv",
        } <= set(os.listdir(run))
        metrics = json.loads((run / "metrics.json").read_text())
        assert 0 <= metrics["val_accuracy"] <= 1 and "val_accuracy_no_tta" in metrics
        assert json.loads((run / "params.json").read_text())["precision_policy"] == "float32"
    val = [pd.read_csv(output_root / "runs" / "tiny" / n / "probs_val.csv")["Id"] for n in MODEL_RUNS]
    assert all(ids.equals(val[0]) for ids in val)  # the shared split
    ensemble = json.loads((output_root / "runs" / "tiny" / "05_ensemble" / "metrics.json").read_text())
    assert abs(sum(ensemble["weights"].values()) - 1) < 1e-6 and sorted(ensemble["weights"]) == sorted(MODEL_RUNS)
    assert "pseudo_labels" in ensemble and "pseudo_label_min_confidence" in ensemble
    # The run of notebook 03 under its own name: its own folder, parameters and submission; the recipe's pieces.
    convnext = output_root / "runs" / "tiny" / "03_convnext"
    params = json.loads((convnext / "params.json").read_text())
    assert (params["run_name"], params["submission_name"]) == ("03_convnext", "convnext")
    sizes = [row["image_size"] for row in json.loads((convnext / "metrics.json").read_text())["size_search"]]
    # From the size the best weights were trained at (stage 1's 64 px or stage 2's 72 px), then 96 px.
    assert sizes in ([64, 96], [72, 96]) and json.loads((convnext / "metrics.json").read_text())["image_size"] in sizes
    history = pd.read_csv(convnext / "history.csv")
    assert history["val_on_ema"].tolist() == [1, 1]
    assert json.loads((convnext / "stage_1.json").read_text())["mix"].startswith("CutMix 1 / MixUp 0.2")


@pytest.mark.slow
def test_run_all_prints_a_short_transcript_and_logs_the_rest(tiny_run):
    """The whole series in a few dozen lines (it was ~300 on this profile): headers, stages, epochs, files written,
    one result line per notebook; no cell markers, C++ logs, kernel or tqdm warnings, figure reprs."""
    from tools.runner.execute import NOISE

    _, output_root, done = tiny_run
    transcript = (done.stdout + done.stderr).splitlines()
    assert len(transcript) <= 75, "\n".join(transcript)
    noisy = [line for line in transcript if NOISE.search(line) or "Executing Cell" in line or "Ending Cell" in line]
    assert noisy == [] and "\r" not in done.stdout
    for name in RUNS:
        assert sum(line.startswith(f"{name}: done in ") for line in transcript) == 1, name
        assert "Executing Cell" in (output_root / "runs" / "tiny" / name / f"{name}.log").read_text()
    xception = next(line for line in transcript if line.startswith("03_xception: done in "))
    assert "val accuracy" in xception and "wrote " in xception and "xception.csv" in xception


@pytest.mark.slow
def test_a_second_clean_run_gives_the_same_bytes(tiny_run, tmp_path):
    """Bit-for-bit reruns on CPU: 03 run again from scratch in another output folder."""
    data_dir, output_root, _ = tiny_run
    done = make("03_xception", f"DATA_DIR={data_dir}", "PROFILE=tiny", output_root=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    for relative in ("submissions/xception.csv", "runs/tiny/03_xception/probs_test.csv",
                     "runs/tiny/03_xception/probs_val.csv"):  # fmt: skip
        assert (tmp_path / relative).read_bytes() == (output_root / relative).read_bytes(), relative


@pytest.mark.slow
def test_score_reads_the_hidden_labels(tiny_run):
    data_dir, output_root, _ = tiny_run
    done = make("score", f"DATA_DIR={data_dir}", output_root=output_root)
    assert done.returncode == 0 and "accuracy" in done.stdout and str(data_dir) in done.stdout


@pytest.mark.slow
def test_second_run_all_skips_finished_notebooks(tiny_run):
    data_dir, output_root, _ = tiny_run
    done = make("run-all", f"DATA_DIR={data_dir}", "PROFILE=tiny", output_root=output_root)
    assert done.returncode == 0 and done.stdout.count("up to date, skipped") == len(RUNS)


@pytest.mark.slow
def test_failing_notebook_stops_make_and_keeps_the_traceback(tiny_run, tmp_path):
    """05 without the model runs fails: make exits non-zero and names the executed copy holding the error."""
    data_dir, _, _ = tiny_run
    done = make("05_ensemble", f"DATA_DIR={data_dir}", "PROFILE=tiny", output_root=tmp_path)
    assert done.returncode != 0
    executed = tmp_path / "runs" / "tiny" / "05_ensemble" / "05_ensemble.failed.ipynb"
    assert "error: notebook 05_ensemble failed (RunNotFoundError" in done.stderr
    assert f"The executed copy with the traceback: {executed}" in done.stderr
    assert "RunNotFoundError" in executed.read_text() and "make 03_xception" in executed.read_text()


# Where Kaggle mounts the model kernels' outputs and the competition: its docs, and kernels seen in 2026.
KAGGLE_MOUNTS = {
    "docs": ("input/{slug}", "input/sf-dl-car-classification"),
    "2026": ("input/notebooks/tester/{slug}", "input/competitions/sf-dl-car-classification"),
}


@pytest.mark.slow
@pytest.mark.parametrize("layout", KAGGLE_MOUNTS)
def test_bundled_ensemble_on_kaggle_blends_the_attached_model_runs(tiny_run, tmp_path, layout):
    """05 bundled as a kernel on a fake /kaggle: the real model runs of `make run-all` attached as kernel outputs
    give the same submission as the local 05."""
    data_dir, output_root, _ = tiny_run
    env = kaggle_env(tmp_path)
    build = tmp_path / "build"
    args = ["build", "--notebook", "05_ensemble", "--id", "tester/sf-dl-cars-05-ensemble", "--out", str(build)]
    built = run_module("tools.kaggle.kernel", *args, env=env)
    assert built.returncode == 0, built.stderr
    root = tmp_path / "kaggle"
    kernel_mount, competition_mount = KAGGLE_MOUNTS[layout]
    shutil.copytree(data_dir, root / competition_mount)
    attached = {}
    for name in MODEL_RUNS:
        slug = "sf-dl-cars-" + name.replace("_", "-")
        attached[name] = root / kernel_mount.format(slug=slug) / "runs" / "tiny" / name
        shutil.copytree(output_root / "runs" / "tiny" / name, attached[name])
    (root / "working").mkdir()
    env = {**env, "CARS_KAGGLE_ROOT": str(root), "PYTHONPATH": ""}  # only the bundled lib can be imported
    env.pop("CARS_OUTPUT_ROOT", None)
    command = [sys.executable, "-m", "papermill", str(build / "05_ensemble.ipynb"), str(tmp_path / "run.ipynb")]
    command += ["-k", "python3", "--cwd", str(root / "working"), "-p", "profile", "tiny"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    executed = nbformat.read(tmp_path / "run.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert (root / "working" / "lib" / "paths.py").read_text() == (paths.PROJECT_ROOT / "lib" / "paths.py").read_text()
    for name, folder in attached.items():
        assert f"{name}: run from {folder}\n" in printed
    sample_ids = read_sample_ids(data_dir / "sample-submission.csv")
    on_kaggle = validate_submission(root / "working" / "submission.csv", sample_ids)
    local = validate_submission(output_root / "submissions" / "submission.csv", sample_ids)
    pd.testing.assert_frame_equal(on_kaggle, local)  # same runs, same blend: same ids and categories
    weights = json.loads((root / "working" / "runs" / "tiny" / "05_ensemble" / "metrics.json").read_text())["weights"]
    local_metrics = json.loads((output_root / "runs" / "tiny" / "05_ensemble" / "metrics.json").read_text())
    assert weights == pytest.approx(local_metrics["weights"])


def test_data_dir_without_train_csv_is_one_clear_line(tmp_path):
    (tmp_path / "train").mkdir()
    done = make("prepare", f"DATA_DIR={tmp_path}", output_root=tmp_path)
    assert done.returncode != 0
    assert "has no train.csv" in done.stderr and "Traceback" not in done.stderr


def test_help_lists_every_target():
    done = make("help", output_root=paths.PROJECT_ROOT)
    for target in ["run-all", *NOTEBOOKS, "test", "score", "notebooks", "clean", "bench", "data", "submit"]:
        assert f"{target} " in done.stdout
    assert "\033[" not in done.stdout and "PYTHON=" in done.stdout  # piped: no colour codes


@pytest.mark.slow
def test_a_model_notebook_runs_on_two_virtual_devices(tmp_path):
    """`make 03_xception VIRTUAL_DEVICES=2`: papermill runs the notebook with the CPU split in two, and it trains,
    predicts and submits under the strategy `auto` picks for the backend, recording it in its run folder."""
    from lib.demo import generate

    data_dir = generate(tmp_path / "cars", train_per_class=4, test_per_class=1, seed=7)
    done = make("03_xception", f"DATA_DIR={data_dir}", "PROFILE=tiny", "VIRTUAL_DEVICES=2", output_root=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    run = tmp_path / "runs" / "tiny" / "03_xception"
    printed = "".join(
        o.get("text", "")
        for c in nbformat.read(run / "03_xception.ipynb", as_version=4).cells
        for o in c.get("outputs", [])
    )
    assert "Devices: 2 x CPU" in printed and "global batch 16 = 8 per replica" in printed
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["replicas"], metrics["global_batch_size"]) == (2, 16)
    runtime = metrics["runtime"]  # the threads training ran with, recorded and on the Devices line
    devices_line = next(line for line in printed.splitlines() if line.startswith("Devices: "))
    assert f"{runtime['cores']} core" in devices_line and f"{runtime['threads']} tensorflow thread" in devices_line
    assert runtime["threads"] == available_cores() and "glibc" in runtime["allocator"]
    validate_submission(tmp_path / "submissions" / "xception.csv", read_sample_ids(data_dir / "sample-submission.csv"))


@pytest.mark.slow
def test_a_model_notebook_newer_than_the_ensemble_says_to_rerun_05(tiny_run):
    """After `make 03_xception` alone, submissions/submission.csv is stale: make says so and names 05."""
    data_dir, output_root, _ = tiny_run
    submission = output_root / "submissions" / "submission.csv"
    probs = output_root / "runs" / "tiny" / "03_xception" / "probs_test.csv"
    os.utime(probs, (submission.stat().st_mtime + 10,) * 2)
    try:
        done = make("03_xception", f"DATA_DIR={data_dir}", "PROFILE=tiny", output_root=output_root)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"Note: {submission} predates this 03_xception run; `make 05_ensemble` blends the new one" in done.stdout
        os.utime(probs, (submission.stat().st_mtime - 10,) * 2)
        quiet = make("03_xception", f"DATA_DIR={data_dir}", "PROFILE=tiny", output_root=output_root)
        assert quiet.returncode == 0 and "predates" not in quiet.stdout
    finally:
        os.utime(probs, (submission.stat().st_mtime - 10,) * 2)
