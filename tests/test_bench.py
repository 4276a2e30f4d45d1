"""bench.pipeline: a tiny run prints every stage's row, its ratios and the replicas it feeds (no timing asserted)."""

import re

import numpy as np
import pytest

from bench import pipeline as bench


def test_tiny_bench_prints_every_stage_with_ratios(capsys):
    assert (
        bench.main(
            ["--images", "8", "--batch", "4", "--size", "32", "--rounds", "1", "--tta-passes", "2", "--workers", "2"]
        )
        == 0
    )
    out = capsys.readouterr().out
    stage_table, _, feeding = out.partition("\nFeeding N replicas: ")
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:]
        for line in stage_table.splitlines()
        if line.startswith("| ") and not line.startswith("| ---") and "img/s" not in line
    }
    assert set(rows) == {
        "decode-only (cv2 imread+resize, threads)",
        bench.IDG_NAME,
        "pipeline, medium preset, no cache",
        "pipeline, medium, cache cold (1st epoch)",
        "pipeline, medium, cache warm (2nd epoch)",
        "inference, 2-pass TTA (see note)",
    }
    for name, cells in rows.items():
        rate, versus_idg, versus_decode = (float(cell) for cell in cells[:3])
        assert rate > 0 and versus_idg > 0 and versus_decode > 0, name
    assert rows["decode-only (cv2 imread+resize, threads)"][2].strip() == "1.00"
    assert rows[bench.IDG_NAME][1].strip() == "1.00"
    assert re.search(r"epoch end .* median \d\.\d{3} s per epoch", out)

    assert feeding.startswith("pipeline, medium preset, no cache at 32 px")
    assert (
        "| cores | pipeline img/s | H100 replicas (1520 img/s each) | T4 replicas (~100 img/s each, estimate) |"
        in feeding
    )
    assert "Kaggle GPU session, unverified) | " in feeding  # "4 (this machine; ...)" on a 4-core machine
    assert "1520 x 65/989 (peak dense FP16 tensor TFLOPS, NVIDIA T4 and H100 SXM datasheets)" in feeding
    assert "Kaggle GPU T4 x2: 4 cores of this pipeline give" in feeding
    assert "The replica rates are for 299 px; this pipeline ran at 32 px" in feeding


def test_replicas_fed_is_the_rate_per_core_times_cores_over_the_replica_rate():
    assert bench.replicas_fed(1000.0, 2, 4, 100.0) == 20.0
    assert bench.replicas_fed(1520.0, 1, 1, 1520.0) == 1.0
    assert bench.replicas_fed(900.0, 3, 16, 1520.0) == pytest.approx(300 * 16 / 1520)
    for cores in (1, 2, 4, 8, 16):  # linear in cores
        assert bench.replicas_fed(1073.0, 2, cores, 100.0) == pytest.approx(
            cores * bench.replicas_fed(1073.0, 2, 1, 100.0)
        )
    t4_img_s = bench.T4_XCEPTION299_IMG_S
    assert t4_img_s == pytest.approx(1520 * 65 / 989) and round(t4_img_s) == 100


def test_feeding_report_rows_and_kaggle_verdict():
    report = bench.feeding_report(1000.0, 2, 2)
    assert "1000 img/s on 2 core(s) = 500 img/s per core" in report
    assert "| 2 (this machine) | 1000 | 0.66 | 10.01 |" in report
    assert "| 4 (Kaggle GPU session, unverified) | 2000 | 1.32 | 20.02 |" in report
    assert "| 16 | 8000 | 5.26 | 80.08 |" in report
    assert "give ~2000 img/s, 2 T4s (the global batch split over 2 replicas) need ~200 img/s: fed with margin" in report
    assert "do not apply" not in report  # measured at 299 px
    assert "fed, with little margin (1.5x" in bench.feeding_report(150.0, 2, 2)
    assert "NOT fed" in bench.feeding_report(50.0, 2, 2)
    assert "| 4 (this machine; Kaggle GPU session, unverified) |" in bench.feeding_report(600.0, 4, 4)


def test_iterate_like_fit_sees_every_image_once_and_records_the_epoch_end_wait(tmp_path):
    from lib.pipeline import ImageSequence

    paths = bench.make_jpegs(tmp_path, 5)
    waits_before = len(bench.EPOCH_END_WAITS)
    sequence = ImageSequence(paths, np.arange(5), image_size=16, batch_size=2, workers=2)
    assert bench.iterate_like_fit(sequence) == 5
    assert len(bench.EPOCH_END_WAITS) == waits_before + 1


@pytest.mark.slow
def test_tiny_training_bench_prints_three_rows_per_model_with_their_ratio(capsys):
    from bench import training

    args = ["--models", "test_cnn", "--train", "16", "--val", "8", "--size", "32", "--batch", "8", "--epochs", "2"]
    assert training.main(args) == 0
    out = capsys.readouterr().out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| test_cnn, ")]
    assert [row[0].removeprefix("| test_cnn, ") for row in rows] == list(training.ROWS)
    rates, ratios = [float(row[1]) for row in rows], [float(row[2]) for row in rows]
    assert all(rate > 0 for rate in rates) and ratios[0] == 1.0
    assert ratios[1:] == pytest.approx([rates[1] / rates[0], rates[2] / rates[0]], abs=0.01)
    assert "leaves out its first epoch (graph tracing)" in out and "pipeline worker" in out
