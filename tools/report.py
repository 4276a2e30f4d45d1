"""`make report`: the executed notebooks of a profile as a static, offline HTML site with one table of runs."""

from __future__ import annotations

import argparse
import html
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lib import paths
from lib.runs import read_json
from tools.text import duration

MISSING = "—"
FIGURES = "figures"  # runs/<profile>/<notebook>/figures/<name>.png, copied to reports/<profile>/figures/<notebook>/
# nbconvert's lab template without the scripts it loads from CDNs (require.js, MathJax, Mermaid, widgets): the
# report opens offline. Image outputs are embedded as data URIs by the template itself.
OFFLINE_TEMPLATE = """{%- extends "lab/index.html.j2" -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.nowrap { white-space: nowrap; }
.gallery img { max-width: 360px; border: 1px solid #ddd; margin: 0.3em; }
.note { color: #666; }
"""


@dataclass
class RunRow:
    """One notebook run as the index table shows it; None is shown as MISSING."""

    name: str
    page: str | None = None  # the rendered notebook, relative to index.html
    failed_page: str | None = None  # a newer failed run's executed copy (<name>.failed.ipynb)
    model: str | None = None
    val_accuracy_no_tta: float | None = None
    val_accuracy: float | None = None
    epochs: int | None = None
    seconds: float | None = None
    stopped_by_budget: bool | None = None
    git_commit: str | None = None
    started: str | None = None
    public_score: str | None = None
    figures: list[str] = field(default_factory=list)  # relative to index.html


def _read(path: Path) -> dict:
    return read_json(path) if path.is_file() else {}


def render_notebook(notebook: Path, page: Path) -> None:
    """An executed notebook as one self-contained HTML page (images as data URIs, no scripts from the web)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", embed_images=True)
    exporter.raw_template = OFFLINE_TEMPLATE
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    page.write_text(body, encoding="utf-8")


def stage_records(run: Path, metrics: dict) -> list[dict]:
    """The stages trained: metrics.json's list, else each K-fold model's, else the finished-stage markers."""
    if metrics.get("stages"):
        return list(metrics["stages"])
    folds = [s for m in sorted(run.glob("fold_*/metrics.json")) for s in read_json(m).get("stages", [])]
    return folds or [read_json(p) for p in sorted(run.glob("stage_*.json"))]


def describe_model(metrics: dict) -> str | None:
    if metrics.get("backbone"):
        return str(metrics["backbone"]) + (f", {metrics['folds']}-fold" if metrics.get("folds") else "")
    if isinstance(metrics.get("weights"), dict):  # 05: the blend and its weights
        parts = ", ".join(f"{name} {float(w):.2f}" for name, w in metrics["weights"].items())
        return f"{metrics.get('model', 'ensemble')} ({parts})"
    return metrics.get("model")


def notebook_seconds(notebook: Path) -> float | None:
    """How long papermill took to execute the notebook (its metadata), None when it did not record it."""
    import nbformat

    if not notebook.is_file():
        return None
    return nbformat.read(notebook, as_version=4).metadata.get("papermill", {}).get("duration")


def read_leaderboard(path: Path | None) -> pd.DataFrame:
    """`make submissions`' history (the Kaggle CLI's --csv columns: ref, fileName, date, description, status,
    publicScore, privateScore); empty when absent."""
    if path is None or not path.is_file():
        return pd.DataFrame(columns=["fileName", "date", "description", "publicScore"])
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def public_score(board: pd.DataFrame, run_name: str, profile: str, submission_name: str | None) -> str | None:
    """The latest scored submission of this run: its description starts with the run name (the message `make
    submit` writes: "03_xception (xception) | profile full | ...") and names no other profile; else, when none
    does, a file named like the run's submission (xception.csv). Kaggle's own output files are all
    submission.csv, so that fallback is the ensemble's."""
    if board.empty or "publicScore" not in board.columns:
        return None
    scored = board[board["publicScore"].str.strip() != ""]
    if "date" in scored.columns:
        scored = scored.sort_values("date", ascending=False, kind="stable")
    description = scored.get("description", pd.Series("", index=scored.index)).fillna("")
    first_word = description.str.split(n=1).str[0].fillna("")
    other_profile = description.str.contains(r"profile \S", regex=True) & ~description.str.contains(
        f"profile {profile}", regex=False
    )
    mine = scored[(first_word == run_name) & ~other_profile]
    if mine.empty and submission_name:
        mine = scored[scored.get("fileName", pd.Series("", index=scored.index)) == f"{submission_name}.csv"]
    return None if mine.empty else mine["publicScore"].iloc[0]


def collect_run(run: Path, out: Path, board: pd.DataFrame, profile: str) -> RunRow:
    """Render one run folder's notebook(s), copy its figures, and read its numbers."""
    name = run.name
    row = RunRow(name)
    metrics, params, versions = _read(run / "metrics.json"), _read(run / "params.json"), _read(run / "versions.json")
    executed, failed = run / f"{name}.ipynb", run / f"{name}.failed.ipynb"
    if executed.is_file():
        render_notebook(executed, out / f"{name}.html")
        row.page = f"{name}.html"
    if failed.is_file() and (not executed.is_file() or failed.stat().st_mtime > executed.stat().st_mtime):
        render_notebook(failed, out / f"{name}.failed.html")
        row.failed_page = f"{name}.failed.html"
    stages = stage_records(run, metrics)
    row.model = describe_model(metrics)
    row.val_accuracy_no_tta = metrics.get("val_accuracy_no_tta")
    row.val_accuracy = metrics.get("val_accuracy")
    row.epochs = sum(int(s.get("epochs_run") or 0) for s in stages) if stages else None
    row.seconds = notebook_seconds(executed)
    if row.seconds is None and stages:
        row.seconds = sum(float(s.get("seconds") or 0) for s in stages)
    row.stopped_by_budget = metrics.get("stopped_by_budget")
    row.git_commit = versions.get("git_commit")
    row.started = str(versions["started"]).replace("T", " ") if versions.get("started") else None
    row.public_score = public_score(board, name, profile, params.get("submission_name"))
    figures = sorted((run / FIGURES).glob("*.png"))
    if figures:
        target = out / FIGURES / name
        target.mkdir(parents=True, exist_ok=True)
        for figure in figures:
            shutil.copy2(figure, target / figure.name)
        row.figures = [f"{FIGURES}/{name}/{figure.name}" for figure in figures]
    return row


def _cell(value, numeric: bool = False, nowrap: bool = False) -> str:
    text = MISSING if value is None or value == "" else html.escape(str(value))
    kind = "num" if numeric else "nowrap" if nowrap else ""
    return f'<td class="{kind}">{text}</td>' if kind else f"<td>{text}</td>"


def _link(href: str, text: str) -> str:
    return f'<a href="{html.escape(href)}">{html.escape(text)}</a>'


def index_page(profile: str, rows: list[RunRow], runs: Path) -> str:
    header = (
        "notebook",
        "model",
        "val. accuracy, no TTA",
        "val. accuracy, TTA",
        "epochs",
        "time",
        "stopped by time budget",
        "git commit",
        "started",
        "public leaderboard",
        "figures",
    )
    lines = [f"<th>{h}</th>" for h in header]
    body = []
    for row in rows:
        notebook = _link(row.page, row.name) if row.page else html.escape(row.name)
        if row.failed_page:
            notebook += f' <span class="note">({_link(row.failed_page, "last run failed")})</span>'
        accuracy = lambda v: None if v is None else f"{float(v):.4f}"
        budget = None if row.stopped_by_budget is None else ("yes" if row.stopped_by_budget else "no")
        figures = ", ".join(_link(f, Path(f).stem) for f in row.figures) or MISSING
        seconds = None if row.seconds is None else duration(row.seconds)
        body.append(
            f'<tr id="run-{html.escape(row.name)}"><td>{notebook}</td>{_cell(row.model)}'
            f"{_cell(accuracy(row.val_accuracy_no_tta), True)}{_cell(accuracy(row.val_accuracy), True)}"
            f"{_cell(row.epochs, True)}{_cell(seconds, True)}{_cell(budget)}"
            f"{_cell(row.git_commit, nowrap=True)}{_cell(row.started, nowrap=True)}{_cell(row.public_score, True)}"
            f"<td>{figures}</td></tr>"
        )
    thumbnail = lambda f: f'<a href="{html.escape(f)}"><img src="{html.escape(f)}" alt="{html.escape(f)}"></a>'
    gallery = [
        f"<h3>{html.escape(row.name)}</h3>\n<div>{''.join(map(thumbnail, row.figures))}</div>"
        for row in rows
        if row.figures
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>Runs, profile {html.escape(profile)}</title><style>{STYLE}</style></head><body>",
            f"<h1>Runs, profile {html.escape(profile)}</h1>",
            f'<p class="note">From {html.escape(str(runs))}. Validation accuracy on the held-out split (out-of-fold '
            f"under K-fold); public leaderboard: the latest scored submission of the run in "
            f"submissions/leaderboard.csv (<code>make submissions</code>). {MISSING}: not recorded.</p>",
            f'<table id="runs"><thead><tr>{"".join(lines)}</tr></thead><tbody>',
            *body,
            "</tbody></table>",
            *(['<h2>Figures</h2><div class="gallery">', *gallery, "</div>"] if gallery else []),
            "</body></html>",
            "",
        ]
    )


def build_report(
    profile: str, runs: Path | None = None, out: Path | None = None, leaderboard: Path | None = None
) -> Path:
    """Render runs/<profile>/<notebook>/ into reports/<profile>/ (index.html, one page per notebook, figures);
    returns index.html. Folders moved aside by a changed setting (<name>.old-<time>) are left out."""
    runs = Path(runs) if runs else paths.runs_dir() / profile
    out = Path(out) if out else paths.reports_dir() / profile
    leaderboard = Path(leaderboard) if leaderboard else paths.submissions_dir() / "leaderboard.csv"
    if not runs.is_dir():
        raise FileNotFoundError(f"no runs for profile {profile}: {runs} is missing; run `make run-all` first")
    if out.exists():
        shutil.rmtree(out)  # a run deleted since the last report must not linger
    out.mkdir(parents=True)
    board = read_leaderboard(leaderboard)
    order = {run: index for index, run in enumerate(paths.series_runs())}  # the series' order, then any other
    folders = sorted((p for p in runs.iterdir() if p.is_dir() and ".old-" not in p.name),
                     key=lambda folder: (order.get(folder.name, len(order)), folder.name))  # fmt: skip
    rows = [collect_run(folder, out, board, profile) for folder in folders]
    index = out / "index.html"
    index.write_text(index_page(profile, rows, runs), encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.report", description=__doc__)
    parser.add_argument("profile", help="demo, full or tiny: the runs/<profile>/ to report on")
    parser.add_argument("--runs", type=Path, help="the run folders (default runs/<profile>)")
    parser.add_argument("--out", type=Path, help="where to write the site (default reports/<profile>)")
    parser.add_argument("--leaderboard", type=Path, help="default submissions/leaderboard.csv")
    args = parser.parse_args(argv)
    try:
        index = build_report(args.profile, args.runs, args.out, args.leaderboard)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Report: {index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
