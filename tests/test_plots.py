"""Plots and tables show classes by number and name ("0 Lada Priora"); the data itself keeps the numbers."""

import re

import matplotlib
import numpy as np
import pandas as pd
import pytest

from lib import CLASS_NAMES, NUM_CLASSES, class_display_name, data, plots
from lib.preview import albumentations_samples

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

EXPECTED = [
    "0 Lada Priora",
    "1 Ford Focus",
    "2 Lada 2114 (Samara)",
    "3 Lada 2110",
    "4 Lada 2107",
    "5 Lada Niva",
    "6 Lada Kalina",
    "7 Lada 2109",
    "8 Volkswagen Passat",
    "9 Lada 21099",
]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def tick_texts(labels):
    return [label.get_text() for label in labels]


def test_names_match_the_competition_readme(shared_dir):
    line = next(line for line in (shared_dir / "README.md").read_text().splitlines() if "Class names" in line)
    listed = dict(re.findall(r"(\d) ([^,]+?)(?:,|\.$)", line.split(":", 1)[1]))
    assert len(CLASS_NAMES) == NUM_CLASSES and [listed[str(c)] for c in range(NUM_CLASSES)] == list(CLASS_NAMES)


def test_display_name_is_number_and_name():
    assert [class_display_name(c) for c in range(NUM_CLASSES)] == EXPECTED
    assert class_display_name(np.int64(8)) == "8 Volkswagen Passat"


def test_class_balance_ticks_name_every_class_in_order():
    train = pd.DataFrame({"Category": [0, 0, 3, 9, 9, 9]})
    ax = plots.class_balance(train)
    assert tick_texts(ax.get_xticklabels()) == EXPECTED
    assert [round(bar.get_height()) for bar in ax.patches] == [2, 0, 0, 1, 0, 0, 0, 0, 0, 3]


def test_confusion_matrix_labels_both_axes_with_names():
    ax = plots.confusion([0, 1, 2, 2], [0, 2, 2, 2])
    assert tick_texts(ax.get_xticklabels()) == EXPECTED
    assert tick_texts(ax.get_yticklabels()) == EXPECTED
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")


def test_sample_grid_titles_each_photo_with_its_class(tiny_demo):
    train = data.load_train(tiny_demo)
    fig = plots.sample_grid(train, per_class=2, image_size=32)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [name for name in EXPECTED for _ in range(2)]


def test_augmentation_preview_titles_the_original_with_its_class(tiny_demo):
    photos = data.load_train(tiny_demo).query("Category in (2, 8)").groupby("Category").head(1).sort_values("Category")
    images, titles = albumentations_samples(photos, "light", image_size=32, copies=2)
    assert titles == ["2 Lada 2114 (Samara)", "light #1", "light #2", "8 Volkswagen Passat", "light #1", "light #2"]
    assert len(images) == 6 and images[0].shape == (32, 32, 3)


def test_reliability_diagram_one_axis_per_model_with_its_ece():
    from lib.analysis.calibration import expected_calibration_error

    labels = np.array([0, 1, 2, 2, 1])
    sure = np.eye(NUM_CLASSES)[[0, 1, 2, 1, 1]] * 0.9 + 0.01
    fig = plots.reliability_diagram({"03_xception": sure, "ensemble": np.full((5, NUM_CLASSES), 0.1)}, labels)
    assert fig.get_label() == "reliability_diagram"
    titles = [ax.get_title() for ax in fig.axes]
    # the uniform model predicts class 0: right once in 5, at confidence 0.1
    assert titles == [f"03_xception: ECE {expected_calibration_error(sure, labels):.3f}", "ensemble: ECE 0.100"]


def test_confused_pairs_bar_names_both_classes_most_frequent_on_top():
    from lib.analysis.errors import confused_pairs

    labels = np.array([0, 0, 0, 8, 8, 3])
    probs = np.eye(NUM_CLASSES)[[8, 8, 0, 2, 8, 3]]
    fig = plots.confused_pairs_bar(confused_pairs(probs, labels))
    assert fig.get_label() == "confused_pairs"
    ticks = tick_texts(fig.axes[0].get_yticklabels())
    assert ticks == ["0 Lada Priora → 8 Volkswagen Passat", "8 Volkswagen Passat → 2 Lada 2114 (Samara)"]


def test_misclassified_gallery_titles_true_and_predicted_names(tiny_demo):
    from lib.analysis.errors import misclassified

    train = data.load_train(tiny_demo).sort_values("Category").groupby("Category").head(1).head(3)
    probs = np.eye(NUM_CLASSES)[[5, 1, 9]] * 0.6 + 0.04  # rows of class 0 and 2 wrong, 0.64 vs 0.04
    probs[0, 5] = 0.7
    rows = misclassified(probs / probs.sum(axis=1, keepdims=True), train["Category"], train["Id"], train["path"])
    fig = plots.misclassified_gallery(rows, image_size=32)
    assert fig.get_label() == "misclassified_gallery"
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0].startswith("true: 0 Lada Priora\npred: 5 Lada Niva (")
    assert titles[1].startswith("true: 2 Lada 2114 (Samara)\npred: 9 Lada 21099 (")
    assert len(titles) == 2
    assert plots.misclassified_gallery(rows.iloc[:0]).get_label() == "misclassified_gallery"
