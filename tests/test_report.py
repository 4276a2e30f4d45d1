"""`make report`: a fabricated runs tree rendered to HTML and opened in headless Chromium."""

import base64
import io
import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from tests.report_browser import check_report
from tools import report


def png_bytes(width: int, height: int, colour=(200, 30, 30)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def executed_notebook(path, title: str, seconds: float) -> None:
    """A small executed notebook as papermill leaves it: a plot output and papermill's duration."""
    image = base64.b64encode(png_bytes(40, 30)).decode()
    notebook = new_notebook(
        cells=[
            new_markdown_cell(f"# {title}"),
            new_code_cell(
                "plot()",
                execution_count=1,
                outputs=[new_output("display_data", data={"image/png": image, "text/plain": "<Figure>"})],
            ),
            new_code_cell("print('done')", execution_count=2, outputs=[new_output("stream", text="done\n")]),
        ],
        metadata={"papermill": {"duration": seconds}},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)


def write(path, obj) -> None:
    path.write_text(json.dumps(obj))


@pytest.fixture()
def runs_tree(tmp_path):
    """runs/demo/ with 01 (figures, no metrics), 03 and 04 (trained, one budget-stopped), 05, and a leaderboard."""
    runs = tmp_path / "runs" / "demo"
    executed_notebook(runs / "01_eda" / "01_eda.ipynb", "EDA", 12.0)
    (runs / "01_eda" / "figures").mkdir()
    (runs / "01_eda" / "figures" / "class_balance.png").write_bytes(png_bytes(64, 48, (30, 30, 200)))
    stages = [{"epochs_run": 7, "seconds": 50.0}, {"epochs_run": 2, "seconds": 20.0}]
    for name, backbone, submission, accuracy, stopped in (
        ("03_xception", "xception", "xception", (0.8125, 0.84375), False),
        ("04_efficientnetb7", "efficientnetb7", "efficientnetb7", (0.5, 0.5625), True),
    ):
        executed_notebook(runs / name / f"{name}.ipynb", name, 125.0)
        write(runs / name / "params.json", {"run_name": name, "submission_name": submission})
        write(runs / name / "versions.json", {"git_commit": "abc1234", "started": "2026-11-28T10:00:00"})
        write(
            runs / name / "metrics.json",
            {
                "backbone": backbone,
                "val_accuracy_no_tta": accuracy[0],
                "val_accuracy": accuracy[1],
                "stopped_by_budget": stopped,
                "stages": stages[: 1 if stopped else 2],
            },
        )
    executed_notebook(runs / "05_ensemble" / "05_ensemble.ipynb", "Ensemble", 8.0)
    write(runs / "05_ensemble" / "params.json", {"run_name": "05_ensemble", "submission_name": "submission"})
    write(
        runs / "05_ensemble" / "metrics.json",
        {"model": "ensemble", "weights": {"03_xception": 0.75, "04_efficientnetb7": 0.25}, "val_accuracy": 0.875},
    )
    (runs / "03_xception.old-20261127-090000").mkdir()  # a run moved aside: not reported
    board = tmp_path / "submissions" / "leaderboard.csv"
    board.parent.mkdir()
    board.write_text(
        "ref,fileName,date,description,status,publicScore,privateScore\n"
        "3,submission.csv,2026-11-21 10:00:00,05_ensemble | profile demo | val_acc 0.8750,COMPLETE,0.91234,\n"
        "2,xception.csv,2026-11-20 10:00:00,03_xception | profile demo | val_acc 0.84,COMPLETE,0.87654,\n"
        "1,xception.csv,2026-11-19 10:00:00,03_xception | profile full | val_acc 0.90,COMPLETE,0.95555,\n"
        "4,xception.csv,2026-11-22 10:00:00,03_xception | profile demo | pending,PENDING,,\n"
    )
    return runs, board


def test_report_renders_every_run_and_its_numbers(runs_tree, tmp_path):
    runs, board = runs_tree
    index = report.build_report("demo", runs, tmp_path / "reports" / "demo", board)
    rows = {row.split(">", 1)[0]: row for row in index.read_text().split('<tr id="run-')[1:]}
    assert list(rows) == ['01_eda"', '03_xception"', '04_efficientnetb7"', '05_ensemble"']  # not the .old- one
    for name in ("01_eda", "03_xception", "04_efficientnetb7", "05_ensemble"):
        page = (index.parent / f"{name}.html").read_text()
        assert "data:image/png;base64," in page  # the plot is embedded, the page stands alone
        assert "<script src=" not in page  # nothing loaded from a CDN: the report opens offline
    assert (index.parent / "figures" / "01_eda" / "class_balance.png").is_file()


def test_report_opens_in_a_browser_with_images_links_and_numbers(runs_tree, tmp_path):
    runs, board = runs_tree
    index = report.build_report("demo", runs, tmp_path / "reports" / "demo", board)
    screenshot = index.parent / "index.png"
    seen = check_report(index, screenshot)
    table = {row[0]: row for row in seen["table"]}
    assert set(table) == {"01_eda", "03_xception", "04_efficientnetb7", "05_ensemble"}
    # notebook, model, no TTA, TTA, epochs, time, budget, commit, started, public score, figures
    assert table["03_xception"][1:8] == ["xception", "0.8125", "0.8438", "9", "2m05s", "no", "abc1234"]
    assert table["03_xception"][9] == "0.87654"  # its profile's latest scored submission, not full's or a pending one
    assert table["04_efficientnetb7"][4:7] == ["7", "2m05s", "yes"]
    assert table["04_efficientnetb7"][9] == "—"  # never submitted
    assert table["05_ensemble"][1:3] == ["ensemble (03_xception 0.75, 04_efficientnetb7 0.25)", "—"]
    assert table["05_ensemble"][3] == "0.8750" and table["05_ensemble"][9] == "0.91234"
    assert table["01_eda"][1:5] == ["—"] * 4 and table["01_eda"][10] == "class_balance"
    assert len(seen["pages"]) == 4  # each run's notebook page, opened and checked
    assert seen["images"] >= 1 + 4  # the gallery's figure and each notebook's plot, all decoded
    assert screenshot.stat().st_size > 0


def test_report_without_figures_or_leaderboard(tmp_path):
    runs = tmp_path / "runs" / "tiny"
    executed_notebook(runs / "03_xception" / "03_xception.ipynb", "03", 3.0)
    index = report.build_report("tiny", runs, tmp_path / "out", tmp_path / "no-leaderboard.csv")
    text = index.read_text()
    assert '<a href="03_xception.html">03_xception</a>' in text and "Figures</h2>" not in text
    assert text.count("<td") == 11 and text.count(">—<") == 9 and ">3s<" in text  # papermill's duration


def test_report_cli_says_what_is_missing(tmp_path, capsys):
    assert report.main(["demo", "--runs", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 1
    assert "make run-all" in capsys.readouterr().err
