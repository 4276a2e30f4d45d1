"""lib.bench: a tiny run prints every stage's row with its ratios (a smoke test; no timing is asserted)."""

import re

import numpy as np

from lib import bench


def test_tiny_bench_prints_every_stage_with_ratios(capsys):
    assert (
        bench.main(
            ["--images", "8", "--batch", "4", "--size", "32", "--rounds", "1", "--tta-passes", "2", "--workers", "2"]
        )
        == 0
    )
    out = capsys.readouterr().out
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:]
        for line in out.splitlines()
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


def test_iterate_like_fit_sees_every_image_once_and_records_the_epoch_end_wait(tmp_path):
    from lib.pipeline import ImageSequence

    paths = bench.make_jpegs(tmp_path, 5)
    waits_before = len(bench.EPOCH_END_WAITS)
    sequence = ImageSequence(paths, np.arange(5), image_size=16, batch_size=2, workers=2)
    assert bench.iterate_like_fit(sequence) == 5
    assert len(bench.EPOCH_END_WAITS) == waits_before + 1
