"""lib.figures: figures drawn by decorated helpers are written as PNGs under stable names."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from lib import figures  # noqa: E402


@figures.saved_as("squares")
def _squares(ax=None):
    ax = ax or plt.subplots(figsize=(3, 2))[1]
    ax.plot([0, 1, 2], [0, 1, 4])
    return ax


@pytest.fixture
def folder(tmp_path):
    yield figures.save_to(tmp_path / "figures")
    figures.save_to(None)


def test_a_decorated_helper_writes_its_figure_under_its_default_name_and_an_override(folder):
    _squares()
    _squares(name="Squares: second run")
    assert sorted(p.name for p in folder.iterdir()) == ["squares.png", "squares_second_run.png"]
    with Image.open(folder / "squares.png") as image:
        assert image.size[0] > 100 and image.size[1] > 50
    plt.close("all")


def test_a_caller_owning_the_axes_saves_nothing_and_no_folder_means_no_file(folder, tmp_path):
    fig, ax = plt.subplots()
    _squares(ax=ax)
    assert list(folder.iterdir()) == []
    figures.save_to(None)
    assert figures.save(fig, "kept in memory") is None
    assert fig.get_label() == "kept in memory"
    plt.close("all")


def test_rerunning_a_cell_overwrites_its_figure(folder):
    _squares()
    (folder / "squares.png").write_bytes(b"stale")
    _squares()
    assert [p.name for p in folder.iterdir()] == ["squares.png"]
    assert (folder / "squares.png").read_bytes().startswith(b"\x89PNG")
    plt.close("all")
