"""Benchmark of lib.analysis.duplicates on real-size photos: hashing (1 vs N threads) and the pair search, timed apart.

Writes `--photos` train and test JPEGs of 640x480 (the real data's 15,561 + 6,675 by default) into `--dir`, a
temporary folder outside the repo, deleted afterwards. Each photo is one of 100 demo drawings, flipped, rolled and
colour-shuffled at random, so hashes are as varied as real ones and the pair search returns few pairs.
From the repo root:  nice -n 5 .venv/bin/python bench/duplicates.py [--photos 2000]
`--calibrate FOLDER` instead measures the threshold: hash distances between the different photos in FOLDER, and
between each photo and its re-saved copies (half size; demo.near_copy's rescale and 1 % crop), JPEG quality 65-70.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib import NUM_CLASSES  # noqa: E402
from lib.analysis.duplicates import DEFAULT_MAX_DISTANCE, close_pairs, hash_images, image_hash  # noqa: E402
from lib.demo import draw_car, near_copy  # noqa: E402

REAL_TRAIN, REAL_TEST = 15_561, 6_675


def write_photos(folder: Path, count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    bases = [draw_car(i % NUM_CLASSES, (640, 480), rng) for i in range(100)]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        image = bases[rng.integers(len(bases))]
        image = np.roll(image, (int(rng.integers(480)), int(rng.integers(640))), axis=(0, 1))
        image = image[:, ::-1, rng.permutation(3)] if rng.random() < 0.5 else image[:, :, rng.permutation(3)]
        path = folder / f"{n}.jpg"
        cv2.imwrite(str(path), np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(80, 96))])
        paths.append(str(path))
    return paths


def calibrate(folder: Path) -> None:
    """Print the hash distances of distinct photos and of re-saved copies, to choose max_distance."""
    rng = np.random.default_rng(0)
    photos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    hashes, readable = hash_images(photos)
    _, _, distinct = close_pairs(hashes[readable], max_distance=64)
    copies = {"half size": [], "near_copy": []}
    with tempfile.TemporaryDirectory() as scratch:
        copy_path = str(Path(scratch) / "copy.jpg")
        for path in photos:
            image = cv2.imread(str(path))
            if image is None:
                continue
            height, width = image.shape[:2]
            half = cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
            for kind, copy, quality in (("half size", half, 70), ("near_copy", near_copy(image, rng), 65)):
                cv2.imwrite(copy_path, copy, [cv2.IMWRITE_JPEG_QUALITY, quality])
                copies[kind].append(int(np.bitwise_count(np.uint64(image_hash(copy_path) ^ image_hash(path)))))
    print(
        f"{len(distinct):,} pairs of distinct photos: min {distinct.min()}, 1st percentile "
        f"{np.percentile(distinct, 1):.0f}, median {np.median(distinct):.0f} bits"
    )
    for kind, distances in copies.items():
        print(f"{len(distances)} {kind} copies: max {max(distances)}, distances {np.bincount(distances).tolist()}")


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=REAL_TRAIN + REAL_TEST, help="train + test photos in all")
    parser.add_argument("--dir", default=None, help="where to write them (default: a new temp folder)")
    parser.add_argument("--workers", type=int, default=2, help="threads for the full hashing run")
    parser.add_argument("--compare", type=int, default=1000, help="photos hashed with 1 thread, then --workers")
    parser.add_argument("--max-distance", type=int, default=DEFAULT_MAX_DISTANCE)
    parser.add_argument("--calibrate", type=Path, default=None, help="a folder of photos: measure the threshold")
    args = parser.parse_args(argv)
    if args.calibrate:
        return calibrate(args.calibrate)

    folder = Path(args.dir or tempfile.mkdtemp(prefix="dupbench-"))
    try:
        paths, seconds = timed(write_photos, folder, args.photos)
        print(f"wrote {len(paths):,} photos of 640x480 in {seconds:.0f} s to {folder}", flush=True)
        rows = []
        subset = paths[: args.compare]
        for workers in sorted({1, args.workers}):
            _, seconds = timed(hash_images, subset, workers=workers, desc=f"{workers} thread(s)")
            rows.append((f"hash {len(subset):,}, {workers} thread(s)", seconds, len(subset) / seconds))
        (hashes, readable), seconds = timed(hash_images, paths, workers=args.workers)
        rows.append((f"hash {len(paths):,}, {args.workers} thread(s)", seconds, len(paths) / seconds))
        n_train = round(len(paths) * REAL_TRAIN / (REAL_TRAIN + REAL_TEST))
        train, test = hashes[:n_train], hashes[n_train:]
        (inside, seconds) = timed(close_pairs, train, max_distance=args.max_distance)
        rows.append((f"pairs inside train ({n_train:,}), {len(inside[0])} found", seconds, np.nan))
        (across, seconds) = timed(close_pairs, train, test, max_distance=args.max_distance)
        rows.append((f"pairs train x test ({len(test):,}), {len(across[0])} found", seconds, np.nan))
        table = pd.DataFrame(rows, columns=["step", "seconds", "photos/s"]).set_index("step")
        print(table.round(2).to_string())
        print(f"unreadable: {int((~readable).sum())}")
    finally:
        if args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
