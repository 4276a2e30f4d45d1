"""Error analysis tables: per-class numbers, confused pairs and misclassified rows on a hand-made example."""

import numpy as np
import pandas as pd
import pytest

from lib import NUM_CLASSES, class_display_name
from lib.analysis.errors import confused_pairs, misclassified, per_class_table

LABELS = np.array([0, 0, 0, 0, 1, 1, 2])
PREDICTED = np.array([0, 0, 1, 1, 1, 2, 2])
CONFIDENCE = np.array([0.8, 0.7, 0.6, 0.9, 0.5, 0.7, 0.95])
TRUE_PROB = np.array([0.8, 0.7, 0.3, 0.05, 0.5, 0.2, 0.95])


def hand_made_probs():
    """Each row: CONFIDENCE on PREDICTED, TRUE_PROB on the label when wrong, the rest spread evenly."""
    probs = np.zeros((len(LABELS), NUM_CLASSES))
    for row, (true, pred, conf, p_true) in enumerate(zip(LABELS, PREDICTED, CONFIDENCE, TRUE_PROB)):
        probs[row, pred] = conf
        if true != pred:
            probs[row, true] = p_true
        rest = probs[row] == 0
        probs[row, rest] = (1 - probs[row].sum()) / rest.sum()
    assert np.array_equal(probs.argmax(axis=1), PREDICTED)
    return probs


def test_per_class_table_matches_hand_computed_values():
    table = per_class_table(hand_made_probs(), LABELS)
    assert list(table.index) == [class_display_name(c) for c in range(NUM_CLASSES)]
    assert list(table.columns) == ["precision", "recall", "F1", "support"]
    expected = {  # class: precision, recall, F1, support
        "0 Lada Priora": (2 / 2, 2 / 4, 2 / 3, 4),
        "1 Ford Focus": (1 / 3, 1 / 2, 0.4, 2),
        "2 Lada 2114 (Samara)": (1 / 2, 1 / 1, 2 / 3, 1),
        "3 Lada 2110": (0, 0, 0, 0),
    }
    for name, values in expected.items():
        np.testing.assert_allclose(table.loc[name].to_numpy(dtype=float), values)


def test_confused_pairs_most_frequent_first_with_names_and_shares():
    pairs = confused_pairs(hand_made_probs(), LABELS)
    assert pairs[["true", "predicted", "count"]].to_numpy().tolist() == [[0, 1, 2], [1, 2, 1]]
    assert pairs["share of true class"].tolist() == pytest.approx([2 / 4, 1 / 2])
    assert pairs["true name"].tolist() == ["0 Lada Priora", "1 Ford Focus"]
    assert pairs["predicted name"].tolist() == ["1 Ford Focus", "2 Lada 2114 (Samara)"]
    assert len(confused_pairs(hand_made_probs(), LABELS, top=1)) == 1


def test_misclassified_rows_most_confident_first():
    ids = [f"img{i}.jpg" for i in range(len(LABELS))]
    rows = misclassified(hand_made_probs(), LABELS, ids, paths=[f"/data/{i}" for i in ids])
    assert rows["Id"].tolist() == ["img3.jpg", "img5.jpg", "img2.jpg"]  # confidence 0.9, 0.7, 0.6
    assert rows["confidence"].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert rows["prob of true class"].tolist() == pytest.approx([0.05, 0.2, 0.3])
    assert rows["path"].tolist() == ["/data/img3.jpg", "/data/img5.jpg", "/data/img2.jpg"]
    assert rows.loc[0, "true name"] == "0 Lada Priora" and rows.loc[0, "predicted name"] == "1 Ford Focus"
    without_paths = misclassified(hand_made_probs(), LABELS, ids)
    assert "path" not in without_paths and len(without_paths) == 3
    perfect = misclassified(np.eye(NUM_CLASSES)[LABELS], LABELS, ids)
    assert isinstance(perfect, pd.DataFrame) and perfect.empty


def test_confident_examples_takes_the_surest_mistakes_then_the_surest_right_answers():
    from lib.analysis.errors import confident_examples

    probs = np.array(
        [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55], [0.7, 0.3], [0.99, 0.01]],
        dtype=float,
    )
    probs = np.pad(probs, ((0, 0), (0, 8)))
    labels = [1, 1, 1, 0, 0, 0]  # rows 0, 1 and 3 are mistakes
    picked = confident_examples(probs, labels, ids=list("abcdef"), paths=[f"{i}.jpg" for i in "abcdef"], per_kind=2)
    assert picked["Id"].tolist() == ["a", "b", "f", "c"]
    assert picked["kind"].tolist() == ["mistake", "mistake", "right", "right"]
    assert picked.loc[0, "true name"] == class_display_name(1)
