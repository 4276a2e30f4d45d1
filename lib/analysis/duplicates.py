"""Near-duplicate photos by perceptual hash: label noise inside train, repeats inside train, train photos in test.

Each photo gets a 64-bit DCT perceptual hash (imagehash.phash) of its grey, 32x32-shrunk image; two photos whose
hashes differ in at most `max_distance` bits are called near-duplicates. Re-encoding, resizing and a small crop move
a hash by a few bits; a different photo, even of the same car model, moves it by about half of them.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from lib import class_display_name

# Measured with bench/duplicates.py --calibrate: on the 30 real test photos in shared/, re-saved copies lie at 0-2
# bits (half size) and 0-8 (rescaled, 1 % cropped), distinct photos at 16 or more (median 30). On the 500 demo
# cartoons, copies also lie at 0-8, but a few distinct cartoons (~2 in 10,000 pairs) come as close: the demo
# profile uses 4, which its planted copies (0-4 bits) pass.
DEFAULT_MAX_DISTANCE = 8
HASH_SIZE = 8  # 8x8 = 64 bits, one uint64 per photo
KINDS = ["label_conflict", "same_label", "train_test"]
COLUMNS = ["kind", "path_a", "path_b", "id_a", "id_b", "label_a", "label_b", "name_a", "name_b", "distance"]
# Elements of one chunk of the pair search (uint64 XORs): ~32 MB at a time, whatever the data size.
CHUNK_ELEMENTS = 4_000_000


def image_hash(path) -> int | None:
    """The photo's 64-bit perceptual hash, or None when it cannot be read."""
    import imagehash
    from PIL import Image

    try:
        with Image.open(path) as image:
            # JPEG decodes straight to grey at 1/2-1/8 scale, still >= phash's 32x32: ~8x cheaper than a full decode.
            image.draft("L", (HASH_SIZE * 4, HASH_SIZE * 4))
            bits = imagehash.phash(image.convert("L"), hash_size=HASH_SIZE).hash
    except Exception:  # truncated, empty or not an image: the data scan reports it, here it is skipped
        return None
    return int.from_bytes(np.packbits(bits.ravel()).tobytes(), "big")


def hash_images(paths, workers: int = 2, desc: str = "Hashing photos") -> tuple[np.ndarray, np.ndarray]:
    """Hashes (uint64) of `paths` and a mask of those that could be read (their hash is 0 otherwise)."""
    from tqdm.auto import tqdm

    paths = [str(p) for p in paths]
    with ThreadPoolExecutor(max(1, workers)) as pool:  # Pillow decodes with the GIL released
        results = list(
            tqdm(
                pool.map(image_hash, paths, chunksize=64),
                total=len(paths),
                desc=desc,
                unit="img",
                mininterval=2,
                disable=len(paths) < 500,
                file=sys.stdout,
            )
        )
    readable = np.array([r is not None for r in results], bool)
    hashes = np.array([r or 0 for r in results], np.uint64)
    return hashes, readable


def close_pairs(
    hashes_a: np.ndarray, hashes_b: np.ndarray | None = None, max_distance: int = DEFAULT_MAX_DISTANCE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs (i, j) and Hamming distances of hashes at most `max_distance` bits apart, in chunks of rows.

    With one array: pairs inside it, i < j. With two: pairs across them, i into `hashes_a`, j into `hashes_b`.
    """
    within = hashes_b is None
    hashes_a = np.asarray(hashes_a, np.uint64)
    hashes_b = hashes_a if within else np.asarray(hashes_b, np.uint64)
    rows = max(1, CHUNK_ELEMENTS // max(1, len(hashes_b)))
    found_i, found_j, found_d = [], [], []
    for start in range(0, len(hashes_a), rows):
        block = hashes_a[start : start + rows]
        first_col = start if within else 0  # inside one array only the upper triangle is needed
        distances = np.bitwise_count(block[:, None] ^ hashes_b[None, first_col:])
        i, j = np.nonzero(distances <= max_distance)
        if within:
            keep = j > i
            i, j = i[keep], j[keep]
        found_i.append(i + start)
        found_j.append(j + first_col)
        found_d.append(distances[i, j])
    if not found_i:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint8)
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)


def _pairs_table(kind_of, a: pd.DataFrame, b: pd.DataFrame, i, j, d) -> pd.DataFrame:
    label_a = a["Category"].to_numpy()[i]
    label_b = b["Category"].to_numpy()[j] if "Category" in b else np.full(len(j), None)
    return pd.DataFrame(
        {
            "kind": kind_of(label_a, label_b),
            "path_a": a["path"].to_numpy()[i],
            "path_b": b["path"].to_numpy()[j],
            "id_a": a["Id"].to_numpy()[i],
            "id_b": b["Id"].to_numpy()[j],
            "label_a": pd.array(label_a, "Int64"),
            "label_b": pd.array(label_b, "Int64"),
            "distance": d.astype(int),
        }
    )


def find_duplicates(
    train: pd.DataFrame,
    test: pd.DataFrame | None = None,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    workers: int = 2,
) -> pd.DataFrame:
    """Near-duplicate pairs: inside `train` (Id, Category, path), and between train and `test` (Id, path).

    One row per pair with COLUMNS, label conflicts first, then by distance. Unreadable photos are skipped; their
    paths are in the result's `attrs["skipped"]`.
    """
    test = test if test is not None else pd.DataFrame(columns=["Id", "path"])
    hashes, readable = hash_images(list(train["path"]) + list(test["path"]), workers=workers)
    n_train = len(train)
    skipped = [p for p, ok in zip(list(train["path"]) + list(test["path"]), readable) if not ok]
    train_ok = train[readable[:n_train]].reset_index(drop=True)
    test_ok = test[readable[n_train:]].reset_index(drop=True)
    train_hashes, test_hashes = hashes[:n_train][readable[:n_train]], hashes[n_train:][readable[n_train:]]

    inside = _pairs_table(
        lambda la, lb: np.where(la == lb, "same_label", "label_conflict"),
        train_ok,
        train_ok,
        *close_pairs(train_hashes, max_distance=max_distance),
    )
    across = _pairs_table(
        lambda la, lb: np.full(len(la), "train_test"),
        train_ok,
        test_ok,
        *close_pairs(train_hashes, test_hashes, max_distance=max_distance),
    )
    pairs = pd.concat([inside, across], ignore_index=True) if len(across) else inside
    pairs["name_a"] = [class_display_name(int(c)) if pd.notna(c) else "" for c in pairs["label_a"]]
    pairs["name_b"] = [class_display_name(int(c)) if pd.notna(c) else "" for c in pairs["label_b"]]
    pairs["kind"] = pd.Categorical(pairs["kind"], categories=KINDS)
    pairs = pairs.sort_values(["kind", "distance", "id_a", "id_b"]).reset_index(drop=True)[COLUMNS]
    pairs["kind"] = pairs["kind"].astype(str)
    pairs.attrs["skipped"] = skipped
    return pairs


def summary(pairs: pd.DataFrame) -> str:
    counts = pairs["kind"].value_counts().reindex(KINDS, fill_value=0)
    skipped = len(pairs.attrs.get("skipped", []))
    return ", ".join(f"{n} {kind}" for kind, n in counts.items()) + f" pair(s); {skipped} unreadable photo(s) skipped"


def main(argv=None) -> int:
    from lib import data
    from lib.runs import write_csv

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="a folder in the competition layout (train.csv, train/, test_upload/ ...)")
    parser.add_argument("--out", default="duplicates.csv", help="CSV to write (default: %(default)s)")
    parser.add_argument("--max-distance", type=int, default=DEFAULT_MAX_DISTANCE, help="bits (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="decoding threads (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        train, test = data.load_train(args.data_dir), data.load_test(args.data_dir)
    except data.DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    pairs = find_duplicates(train, test, max_distance=args.max_distance, workers=args.workers)
    write_csv(Path(args.out), pairs)
    print(f"{summary(pairs)}; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
