"""The offline demo data set: the competition's exact layout, deterministic from its seed."""

import hashlib

import cv2
import numpy as np
import pandas as pd

from lib import NUM_CLASSES
from lib.demo import PLANTED, PLANTED_FILE, generate
from lib.submission import read_sample_ids, score, write_submission


def test_layout_matches_the_competition(tiny_demo):
    train = pd.read_csv(tiny_demo / "train.csv")
    sample = pd.read_csv(tiny_demo / "sample-submission.csv")
    assert list(train.columns) == ["Id", "Category"] and list(sample.columns) == ["Id", "Category"]
    assert train["Id"].str.fullmatch(r"\d{6}\.jpg").all() and sample["Id"].str.fullmatch(r"\d{6}\.jpg").all()
    assert (sample["Category"] == 0).all()
    assert sorted(train["Category"].unique()) == list(range(NUM_CLASSES))
    assert not set(train["Id"]) & set(sample["Id"])
    for image_id, category in train.itertuples(index=False):
        assert (tiny_demo / "train" / str(category) / image_id).is_file()
    for image_id in sample["Id"]:
        assert (tiny_demo / "test_upload" / image_id).is_file()


def test_images_are_rgb_jpegs_of_real_sizes(tiny_demo):
    sizes = set()
    for path in list((tiny_demo / "train").rglob("*.jpg"))[:40]:
        assert path.read_bytes()[:2] == b"\xff\xd8"
        image = cv2.imread(str(path))
        assert image.ndim == 3 and image.shape[2] == 3
        sizes.add((image.shape[1], image.shape[0]))
    assert sizes <= {(640, 480), (640, 360), (480, 640)} and (640, 480) in sizes


def test_same_seed_same_data(tmp_path):
    def digest(folder):
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())).hexdigest()

    first = generate(tmp_path / "a", train_per_class=2, test_per_class=1, seed=3)
    second = generate(tmp_path / "b", train_per_class=2, test_per_class=1, seed=3)
    third = generate(tmp_path / "c", train_per_class=2, test_per_class=1, seed=4)
    assert digest(first) == digest(second) != digest(third)


def test_hidden_labels_score_a_submission(tiny_demo, tmp_path):
    labels = pd.read_csv(tiny_demo / "test_labels.csv")
    ids = read_sample_ids(tiny_demo / "sample-submission.csv")
    truth = labels.set_index("Id").loc[ids, "Category"]
    perfect = write_submission(ids, truth.to_numpy(), tmp_path / "perfect.csv", ids)
    wrong = write_submission(ids, (truth.to_numpy() + 1) % NUM_CLASSES, tmp_path / "wrong.csv", ids)
    assert score(perfect, tiny_demo / "test_labels.csv") == 1.0
    assert score(wrong, tiny_demo / "test_labels.csv") == 0.0


def test_planted_duplicates_keep_counts_and_hidden_labels(tiny_demo):
    train = pd.read_csv(tiny_demo / "train.csv").set_index("Id")["Category"]
    hidden = pd.read_csv(tiny_demo / "test_labels.csv").set_index("Id")["Category"]
    planted = pd.read_csv(tiny_demo / PLANTED_FILE)
    assert planted["kind"].value_counts().to_dict() == PLANTED
    assert (train.value_counts() == 8).all() and (hidden.value_counts() == 2).all()
    assert len(set(planted["id_a"]) | set(planted["id_b"])) == 2 * len(planted)  # no copy of a copy
    for row in planted.itertuples(index=False):
        assert train[row.id_a] == row.label_a
        labels_b = hidden if row.kind == "train_test" else train
        assert labels_b[row.id_b] == row.label_b
        assert (row.label_a == row.label_b) == (row.kind != "label_conflict")
        folder_b = tiny_demo / ("test_upload" if row.kind == "train_test" else f"train/{row.label_b}")
        copy = cv2.imread(str(folder_b / row.id_b))
        original = cv2.imread(str(tiny_demo / "train" / str(row.label_a) / row.id_a))
        assert copy.shape == original.shape and not np.array_equal(copy, original)  # near, not exact
