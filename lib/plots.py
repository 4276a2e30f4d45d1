"""The figures the notebooks show; each helper also writes its figure into the run folder (lib.figures)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from lib import NUM_CLASSES, class_display_name
from lib.figures import saved_as

CLASS_DISPLAY_NAMES = [class_display_name(c) for c in range(NUM_CLASSES)]


@saved_as("class_balance")
def class_balance(train: pd.DataFrame, ax=None):
    ax = ax or plt.subplots(figsize=(9, 4))[1]
    counts = train["Category"].value_counts().reindex(range(NUM_CLASSES), fill_value=0)
    sns.barplot(x=counts.index, y=counts.to_numpy(), ax=ax, color="tab:blue")
    ax.set_xticks(range(NUM_CLASSES), CLASS_DISPLAY_NAMES, rotation=30, ha="right")
    ax.set(xlabel="class", ylabel="images", title=f"Class balance ({len(train):,} train images)")
    for i, v in enumerate(counts):
        ax.text(i, v, str(v), ha="center", va="bottom", fontsize=8)
    return ax


@saved_as("image_sizes")
def image_sizes(sizes: pd.DataFrame, ax=None):
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    table = sizes.dropna().astype(int).value_counts().head(8)
    labels = [f"{w}x{h}" for w, h in table.index]
    sns.barplot(x=table.to_numpy(), y=labels, ax=ax, color="tab:green")
    ax.set(xlabel="images", ylabel="width x height", title="Most common image sizes")
    return ax


@saved_as("image_grid")
def image_grid(images, titles=None, columns: int = 8, size: float = 1.6, title: str | None = None):
    """Show uint8 RGB images in a grid."""
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * size * 0.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, image in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(image)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


_grid = image_grid.__wrapped__  # for helpers that save the grid under their own name


@saved_as("sample_grid")
def sample_grid(train: pd.DataFrame, per_class: int = 4, seed: int = 0, image_size: int = 160):
    """`per_class` random photos of each class, one row per class."""
    from lib.images import read_resized

    picks = train.sample(frac=1, random_state=seed).groupby("Category").head(per_class).sort_values("Category")
    images = [read_resized(p, image_size) for p in picks["path"]]
    titles = [class_display_name(c) for c in picks["Category"]]
    return _grid(images, titles, columns=per_class, title="Samples per class")


@saved_as("duplicate_pairs")
def duplicate_pairs(pairs: pd.DataFrame, max_pairs: int = 6, image_size: int = 160, pairs_per_row: int = 2):
    """The first `max_pairs` rows of lib.analysis.duplicates.find_duplicates side by side: photo a, then photo b, titled
    with car names, the kind of pair and its hash distance."""
    from lib.images import read_resized

    shown = pairs.head(max_pairs)
    rows = max(1, int(np.ceil(len(shown) / pairs_per_row)))
    fig, axes = plt.subplots(
        rows, 2 * pairs_per_row, figsize=(2 * pairs_per_row * image_size / 72, rows * image_size / 60), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    if shown.empty:
        axes.flat[0].text(0, 0.5, "No near-duplicate pairs found", fontsize=12)
    for n, pair in enumerate(shown.itertuples(index=False)):
        ax_a, ax_b = axes.flat[2 * n], axes.flat[2 * n + 1]
        ax_a.imshow(read_resized(pair.path_a, image_size))
        ax_a.set_title(f"{pair.kind}, {pair.distance} bits\ntrain: {pair.name_a}", fontsize=8)
        ax_b.imshow(read_resized(pair.path_b, image_size))
        where = "test" if pair.kind == "train_test" else "train"
        ax_b.set_title(f"\n{where}: {pair.name_b or 'unlabelled'}", fontsize=8)
    fig.suptitle(f"Near-duplicate pairs ({len(shown)} of {len(pairs)})")
    fig.tight_layout()
    return fig


@saved_as("history")
def history(frame: pd.DataFrame):
    """Accuracy and loss per epoch, train vs validation, with stage boundaries."""
    fig, axes = plt.subplots(1, 3 if "lr" in frame else 2, figsize=(14, 3.5))
    if frame.empty:
        return fig
    epochs = frame["epoch"] + 1
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.plot(epochs, frame[metric], "o-", label="train")
        ax.plot(epochs, frame[f"val_{metric}"], "o-", label="validation")
        ax.set(xlabel="epoch", title=metric)
        ax.legend()
    if "lr" in frame:
        axes[2].plot(epochs, frame["lr"], "o-")
        axes[2].set(xlabel="epoch", title="learning rate (end of epoch)", yscale="log")
    if "stage" in frame:
        for boundary in epochs[frame["stage"].diff().fillna(0) > 0]:
            for ax in axes:
                ax.axvline(boundary - 0.5, color="grey", ls=":")
    fig.tight_layout()
    return fig


@saved_as("lr_schedule")
def lr_schedule(frame: pd.DataFrame, ax=None):
    """Learning rate against step, one colour per stage (from lib.train.lr_per_step)."""
    ax = ax or plt.subplots(figsize=(8, 3))[1]
    for stage, part in frame.groupby("stage", sort=False):
        ax.plot(part["step"], part["lr"], label=stage)
    ax.set(xlabel="step", ylabel="learning rate", title="Learning-rate schedule", yscale="log")
    ax.legend(fontsize=8)
    return ax


@saved_as("confusion")
def confusion(labels, predictions, ax=None, title: str = "Validation confusion matrix"):
    """Counts of true class (rows) against predicted class (columns), both labelled with number and name."""
    ax = ax or plt.subplots(figsize=(8, 7))[1]
    matrix = pd.crosstab(pd.Series(labels, name="true"), pd.Series(predictions, name="predicted"))
    matrix = matrix.reindex(index=range(NUM_CLASSES), columns=range(NUM_CLASSES), fill_value=0)
    sns.heatmap(
        matrix,
        annot=True,
        fmt="d",
        cmap="Blues",
        cbar=False,
        ax=ax,
        xticklabels=CLASS_DISPLAY_NAMES,
        yticklabels=CLASS_DISPLAY_NAMES,
    )
    ax.tick_params(axis="x", labelrotation=45)
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    ax.set_title(title)
    return ax


@saved_as("reliability_diagram")
def reliability_diagram(model_probs: dict, labels, n_bins: int = 15, size: float = 3.6):
    """Accuracy against confidence in equal-width bins, one axis per model (dict name -> probabilities), the
    diagonal being perfect calibration; red: the gap to it. Each title gives the model's ECE."""
    from lib.analysis.calibration import expected_calibration_error, reliability_bins

    fig, axes = plt.subplots(1, len(model_probs), figsize=(size * len(model_probs), size), squeeze=False)
    for ax, (name, probs) in zip(axes.flat, model_probs.items()):
        bins = reliability_bins(probs, labels, n_bins)
        filled = bins[bins["count"] > 0]
        centres, width = (filled["lower"] + filled["upper"]) / 2, 1.0 / n_bins
        ax.bar(centres, filled["accuracy"], width=width, edgecolor="black", color="tab:blue", label="accuracy")
        ax.bar(
            centres,
            filled["confidence"] - filled["accuracy"],
            bottom=filled["accuracy"],
            width=width,
            color="tab:red",
            alpha=0.35,
            label="gap",
        )
        ax.plot([0, 1], [0, 1], ls="--", color="grey")
        ece = expected_calibration_error(probs, labels, n_bins)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=f"{name}: ECE {ece:.3f}")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


@saved_as("confused_pairs")
def confused_pairs_bar(pairs: pd.DataFrame, title: str = "Most confused classes"):
    """Horizontal bars of lib.analysis.errors.confused_pairs: "true -> predicted" by name, most frequent on top."""
    fig, ax = plt.subplots(figsize=(8, 0.4 * max(len(pairs), 1) + 1.2))
    labels = [f"{t} → {p}" for t, p in zip(pairs["true name"], pairs["predicted name"])]
    ax.barh(range(len(pairs)), pairs["count"], color="tab:orange")
    ax.set_yticks(range(len(pairs)), labels)
    ax.invert_yaxis()
    for i, (count, share) in enumerate(zip(pairs["count"], pairs["share of true class"])):
        ax.text(count, i, f" {count} ({share:.0%})", va="center", fontsize=8)
    ax.set(xlabel="validation photos (share of the true class)", title=title)
    fig.tight_layout()
    return fig


@saved_as("misclassified_gallery")
def misclassified_gallery(rows: pd.DataFrame, limit: int = 16, columns: int = 4, image_size: int = 160, title=None):
    """Photos of lib.analysis.errors.misclassified rows (needs `path`), in their order (most confident mistake
    first), each titled with its true and predicted class by name and the predicted class's probability."""
    from lib.images import read_resized

    shown = rows.head(limit)
    if shown.empty:  # image_grid needs at least one photo
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no mistakes", ha="center", va="center")
        return fig
    images = [read_resized(p, image_size) for p in shown["path"]]
    titles = [
        f"true: {t}\npred: {p} ({c:.2f})"
        for t, p, c in zip(shown["true name"], shown["predicted name"], shown["confidence"])
    ]
    fig = _grid(images, titles, columns=columns, size=2.8, title=title or "Most confident mistakes")
    return fig
