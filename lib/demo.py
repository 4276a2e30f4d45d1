"""An offline demo data set in the competition's exact layout, generated deterministically from a seed.

It proves the pipeline end to end without Kaggle; it says nothing about leaderboard scores. Each class is a
cartoon car with its own body colour and silhouette, on varied backgrounds, so a backbone trained from scratch
at small size learns it within minutes on a CPU. A few near-duplicate photos are planted, as scraped data has them
(listed in duplicates_planted.csv), so that 01_eda's duplicate scan has something to find.
"""

from __future__ import annotations

import argparse
import colorsys
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from lib import NUM_CLASSES
from lib.paths import DEMO_DIR, DEMO_MARKER
from lib.runs import write_csv

# Real photos are mostly 640x480 or 640x360, a few portrait.
SIZES = [((640, 480), 0.65), ((640, 360), 0.28), ((480, 640), 0.07)]
# Per class: body length / height ratio and roof style (0 sedan, 1 hatchback, 2 boxy SUV).
# Near-duplicates planted in the demo, per kind: copies with the same label, with another label (label noise),
# and train photos copied into test. Each copy is slightly cropped and re-encoded, so it is near, not exact.
PLANTED = {"same_label": 2, "label_conflict": 1, "train_test": 2}
PLANTED_FILE = "duplicates_planted.csv"
SILHOUETTES = [(2.6, 0), (2.2, 1), (2.4, 0), (2.8, 0), (2.0, 2), (1.7, 2), (2.1, 1), (2.5, 1), (3.0, 0), (2.3, 2)]


def class_colour(category: int) -> tuple[int, int, int]:
    """A saturated body colour per class, hues spread evenly (BGR for OpenCV)."""
    r, g, b = colorsys.hsv_to_rgb(category / NUM_CLASSES, 0.85, 0.9)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_car(category: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One demo photo (BGR uint8) of a car of class `category`."""
    width, height = size
    sky = rng.uniform(120, 230, 3)
    ground = rng.uniform(40, 140, 3)
    horizon = int(height * rng.uniform(0.45, 0.7))
    image = np.empty((height, width, 3), np.float32)
    image[:horizon] = sky
    image[horizon:] = ground
    for _ in range(rng.integers(2, 6)):  # background clutter: buildings, poles, signs
        x0, y0 = rng.integers(0, width), rng.integers(0, horizon)
        cv2.rectangle(
            image,
            (int(x0), int(y0)),
            (int(x0 + rng.integers(10, width // 3)), horizon),
            tuple(float(v) for v in rng.uniform(60, 200, 3)),
            -1,
        )

    ratio, roof = SILHOUETTES[category]
    car_w = width * rng.uniform(0.45, 0.8)
    car_h = car_w / ratio
    x = rng.uniform(0.02, 0.98 - car_w / width) * width
    base = min(height * rng.uniform(0.75, 0.92), height - car_w * 0.08)
    body_top = base - car_h * 0.55
    colour = tuple(float(c) * rng.uniform(0.8, 1.1) for c in class_colour(category))
    cv2.rectangle(image, (int(x), int(body_top)), (int(x + car_w), int(base)), colour, -1)
    cabin_front, cabin_back = [(0.25, 0.7), (0.2, 0.9), (0.1, 0.95)][roof]
    cabin = np.array(
        [
            [x + car_w * cabin_front, body_top],
            [x + car_w * (cabin_front + 0.08), base - car_h],
            [x + car_w * (cabin_back - 0.05), base - car_h],
            [x + car_w * cabin_back, body_top],
        ],
        np.int32,
    )
    cv2.fillPoly(image, [cabin], colour)
    window = (cabin * [1, 1] + [[6, -4], [6, 6], [-6, 6], [-6, -4]]).astype(np.int32)
    cv2.fillPoly(image, [window], (235.0, 200.0, 150.0))
    wheel = max(4, int(car_h * 0.22))
    for wx in (x + car_w * 0.2, x + car_w * 0.8):
        cv2.circle(image, (int(wx), int(base)), wheel, (25.0, 25.0, 25.0), -1)
    if rng.random() < 0.5:  # cars face both ways
        image = image[:, ::-1]
    image *= rng.uniform(0.75, 1.2)  # exposure
    image += rng.normal(0, 6, image.shape)  # sensor noise
    return np.clip(image, 0, 255).astype(np.uint8)


def _pick_size(rng: np.random.Generator) -> tuple[int, int]:
    sizes, weights = zip(*SIZES)
    return sizes[rng.choice(len(sizes), p=np.array(weights) / sum(weights))]


def near_copy(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A re-saved copy as a scraper would find it: scaled down to 85-95 % and back, 2-6 px cropped off each border."""
    height, width = image.shape[:2]
    scale = rng.uniform(0.85, 0.95)
    small = cv2.resize(image, (int(width * scale), int(height * scale)), interpolation=cv2.INTER_AREA)
    top, left, bottom, right = (int(v) for v in rng.integers(2, 7, 4))
    crop = small[top : small.shape[0] - bottom, left : small.shape[1] - right]
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)


def plan_duplicates(labels: np.ndarray, n_train: int, rng: np.random.Generator) -> list[tuple[str, int, int]]:
    """(kind, source slot, target slot) for each planted copy, sources always in train. Every slot is used at most
    once, so the planted pairs are the only near-duplicates. Kinds that the sizes cannot hold are left out."""
    free = set(range(len(labels)))
    is_train = np.arange(len(labels)) < n_train
    plan = []
    for kind, count in PLANTED.items():
        for _ in range(count):
            for category in rng.permutation(np.unique(labels)):
                sources = sorted(free & set(np.flatnonzero(is_train & (labels == category))))
                wanted = {
                    "same_label": is_train & (labels == category),
                    "label_conflict": is_train & (labels != category),
                    "train_test": ~is_train & (labels == category),
                }[kind]
                if not sources:
                    continue
                source = int(rng.choice(sources))
                targets = sorted(free & set(np.flatnonzero(wanted)) - {source})
                if targets:
                    target = int(rng.choice(targets))
                    free -= {source, target}
                    plan.append((kind, source, target))
                    break
    return plan


def generate(out_dir=DEMO_DIR, train_per_class: int = 40, test_per_class: int = 10, seed: int = 0) -> Path:
    """Write the demo set: train.csv, sample-submission.csv, test_labels.csv, train/<Category>/<Id>,
    test_upload/<Id>, and duplicates_planted.csv (the planted near-duplicates: kind, id_a, id_b)."""
    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    rng = np.random.default_rng(seed)
    n_train, n_test = train_per_class * NUM_CLASSES, test_per_class * NUM_CLASSES
    ids = [f"{n}.jpg" for n in rng.choice(np.arange(100_000, 999_999), n_train + n_test, replace=False)]
    labels = np.concatenate(
        [np.repeat(np.arange(NUM_CLASSES), train_per_class), np.repeat(np.arange(NUM_CLASSES), test_per_class)]
    )
    rows = {"train": [], "test": []}
    files = []
    for i, (image_id, category) in enumerate(zip(ids, labels)):
        split = "train" if i < n_train else "test"
        folder = staging / ("train" / Path(str(category)) if split == "train" else Path("test_upload"))
        folder.mkdir(parents=True, exist_ok=True)
        image = draw_car(int(category), _pick_size(rng), rng)
        cv2.imwrite(str(folder / image_id), image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(80, 96))])
        rows[split].append((image_id, int(category)))
        files.append(folder / image_id)
    # A generator of its own, so the drawn photos stay the same whatever is planted.
    plant_rng = np.random.default_rng([seed, 1])
    planted = []
    for kind, source, target in plan_duplicates(labels, n_train, plant_rng):
        copy = near_copy(cv2.imread(str(files[source])), plant_rng)
        cv2.imwrite(str(files[target]), copy, [cv2.IMWRITE_JPEG_QUALITY, int(plant_rng.integers(60, 75))])
        planted.append((kind, ids[source], ids[target], int(labels[source]), int(labels[target])))
    train = pd.DataFrame(rows["train"], columns=["Id", "Category"]).sample(frac=1, random_state=seed)
    test = pd.DataFrame(rows["test"], columns=["Id", "Category"]).sample(frac=1, random_state=seed + 1)
    write_csv(staging / "train.csv", train)
    write_csv(staging / "sample-submission.csv", test.assign(Category=0))
    write_csv(staging / DEMO_MARKER, test)
    write_csv(staging / PLANTED_FILE, pd.DataFrame(planted, columns=["kind", "id_a", "id_b", "label_a", "label_b"]))
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return out_dir


def ensure_demo(out_dir=DEMO_DIR, **kwargs) -> Path:
    """Generate the demo set unless it is already complete (a demo from before the planted duplicates is not)."""
    out_dir = Path(out_dir)
    if not (out_dir / DEMO_MARKER).is_file() or not (out_dir / PLANTED_FILE).is_file():
        generate(out_dir, **kwargs)
    return out_dir


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEMO_DIR))
    parser.add_argument("--train-per-class", type=int, default=40)
    parser.add_argument("--test-per-class", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="regenerate even if present")
    args = parser.parse_args(argv)
    kwargs = dict(train_per_class=args.train_per_class, test_per_class=args.test_per_class, seed=args.seed)
    out = generate(args.out, **kwargs) if args.force else ensure_demo(args.out, **kwargs)
    train = pd.read_csv(out / "train.csv")
    print(f"Demo data ({len(train)} train, {len(pd.read_csv(out / 'sample-submission.csv'))} test images) in {out}")


if __name__ == "__main__":
    main()
