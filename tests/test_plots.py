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
