"""Near-duplicate search: planted copies are found with the right kind, distinct photos are not paired."""

import itertools

import cv2
import matplotlib
import numpy as np
import pandas as pd
import pytest

from lib import data
from lib.analysis import duplicates
from lib.demo import PLANTED, PLANTED_FILE, generate, near_copy

matplotlib.use("Agg")


def blobs(rng) -> np.ndarray:
    """A 640x480 photo of smooth random colour blobs: distinct draws share no structure."""
    return cv2.resize(rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8), (640, 480), interpolation=cv2.INTER_CUBIC)


def save(path, image, quality=90):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, quality])


@pytest.fixture()
def planted(tmp_path):
    """A competition-layout folder: train 1.jpg/2.jpg same photo and label, 3.jpg/4.jpg same photo with labels
    1 and 2, 5.jpg and 6.jpg distinct; test 7.jpg a copy of 5.jpg, 8.jpg distinct; 9.jpg in train unreadable."""
    rng = np.random.default_rng(0)
    a, b, c, d, e = (blobs(rng) for _ in range(5))
    train = [("1.jpg", 0, a), ("2.jpg", 0, near_copy(a, rng)), ("3.jpg", 1, b), ("4.jpg", 2, near_copy(b, rng))]
    train += [("5.jpg", 3, c), ("6.jpg", 3, d)]
    for image_id, category, image in train:
        save(tmp_path / "train" / str(category) / image_id, image, quality=int(rng.integers(60, 95)))
    (tmp_path / "train" / "4").mkdir()
    (tmp_path / "train" / "4" / "9.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    save(tmp_path / "test_upload" / "7.jpg", near_copy(c, rng), quality=65)
    save(tmp_path / "test_upload" / "8.jpg", e)
    rows = [(i, c) for i, c, _ in train] + [("9.jpg", 4)]
    pd.DataFrame(rows, columns=["Id", "Category"]).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"Id": ["7.jpg", "8.jpg"], "Category": 0}).to_csv(tmp_path / "sample-submission.csv", index=False)
    return tmp_path


def found(pairs: pd.DataFrame) -> set:
    return {(kind, frozenset((a, b))) for kind, a, b in pairs[["kind", "id_a", "id_b"]].itertuples(index=False)}


def test_planted_pairs_found_with_their_kind_and_nothing_else(planted):
    pairs = duplicates.find_duplicates(data.load_train(planted), data.load_test(planted))
    assert found(pairs) == {
        ("label_conflict", frozenset({"3.jpg", "4.jpg"})),
        ("same_label", frozenset({"1.jpg", "2.jpg"})),
        ("train_test", frozenset({"5.jpg", "7.jpg"})),
    }
    assert list(pairs["kind"]) == ["label_conflict", "same_label", "train_test"]  # label noise first
    assert (pairs["distance"] <= duplicates.DEFAULT_MAX_DISTANCE).all()
    conflict = pairs.iloc[0]
    assert {conflict["label_a"], conflict["label_b"]} == {1, 2}
    assert {conflict["name_a"], conflict["name_b"]} == {"1 Ford Focus", "2 Lada 2114 (Samara)"}
    test_pair = pairs.iloc[2]
    assert test_pair["path_b"].endswith("test_upload/7.jpg") and pd.isna(test_pair["label_b"])


def test_unreadable_photo_is_skipped(planted):
    pairs = duplicates.find_duplicates(data.load_train(planted), data.load_test(planted))
    assert pairs.attrs["skipped"] == [str(planted / "train" / "4" / "9.jpg")]
    assert "9.jpg" not in set(pairs["id_a"]) | set(pairs["id_b"])


def test_zero_distance_finds_only_exact_hash_matches(planted):
    pairs = duplicates.find_duplicates(data.load_train(planted), data.load_test(planted), max_distance=0)
    assert (pairs["distance"] == 0).all() and len(pairs) < 3


def test_command_line_writes_the_csv(planted, tmp_path, capsys):
    out = tmp_path / "out" / "duplicates.csv"
    assert duplicates.main([str(planted), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == duplicates.COLUMNS
    assert len(table) == 3 and "1 unreadable photo(s) skipped" in capsys.readouterr().out


def test_close_pairs_match_brute_force_across_chunks(monkeypatch):
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64)
    hashes[50] = hashes[7] ^ np.uint64(0b1011)  # 3 bits apart
    hashes[200] = hashes[120]
    others = np.concatenate([hashes[:5] ^ np.uint64(1), rng.integers(0, 2**63, 40, dtype=np.int64).astype(np.uint64)])
    monkeypatch.setattr(duplicates, "CHUNK_ELEMENTS", 1000)  # a few rows per chunk

    def brute(a, b, limit, within):
        return {
            (i, j, bin(int(a[i]) ^ int(b[j])).count("1"))
            for i, j in itertools.product(range(len(a)), range(len(b)))
            if (not within or i < j) and bin(int(a[i]) ^ int(b[j])).count("1") <= limit
        }

    for limit in (0, 3, 22):
        inside = set(zip(*(x.tolist() for x in duplicates.close_pairs(hashes, max_distance=limit))))
        assert inside == brute(hashes, hashes, limit, within=True)
        across = set(zip(*(x.tolist() for x in duplicates.close_pairs(hashes, others, max_distance=limit))))
        assert across == brute(hashes, others, limit, within=False)
    assert (7, 50, 3) in inside and (120, 200, 0) in inside and (0, 0, 1) in across


def test_demo_planted_duplicates_are_found(tmp_path):
    demo = generate(tmp_path / "demo", train_per_class=3, test_per_class=1, seed=2)
    planted = pd.read_csv(demo / PLANTED_FILE)
    assert planted["kind"].value_counts().to_dict() == PLANTED
    pairs = duplicates.find_duplicates(data.load_train(demo), data.load_test(demo))
    assert {(k, frozenset((a, b))) for k, a, b in planted[["kind", "id_a", "id_b"]].itertuples(index=False)} <= found(
        pairs
    )


def test_duplicate_pairs_plot(planted):
    from lib import plots

    pairs = duplicates.find_duplicates(data.load_train(planted), data.load_test(planted))
    fig = plots.duplicate_pairs(pairs, max_pairs=2)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert fig.get_label() == "duplicate_pairs" and len(titles) == 4
    assert "1 Ford Focus" in titles[0] and "2 Lada 2114 (Samara)" in titles[1]
    assert plots.duplicate_pairs(pairs.iloc[:0]).get_label() == "duplicate_pairs"
