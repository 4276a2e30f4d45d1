"""Where a classifier errs: per-class precision/recall/F1, the most confused class pairs, the misclassified rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

from lib import NUM_CLASSES, class_display_name
from lib.metrics import class_labels


def per_class_table(probs, labels, n_classes: int = NUM_CLASSES) -> pd.DataFrame:
    """One row per class ("0 Lada Priora", ...): precision, recall, F1 and support (true rows). A class never
    predicted has precision 0 (sklearn's zero_division=0), one with no rows recall 0 and support 0."""
    predicted = np.asarray(probs).argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        class_labels(labels), predicted, labels=list(range(n_classes)), zero_division=0
    )
    return pd.DataFrame(
        {"precision": precision, "recall": recall, "F1": f1, "support": support},
        index=pd.Index([class_display_name(c) for c in range(n_classes)], name="class"),
    )


def confused_pairs(probs, labels, top: int | None = 10) -> pd.DataFrame:
    """Pairs (true class, predicted class) of wrong predictions, most frequent first: their count and share of
    the true class's rows, with both classes' names. Ties keep class order."""
    true, predicted = class_labels(labels), np.asarray(probs).argmax(axis=1)
    wrong = true != predicted
    pairs = (
        pd.DataFrame({"true": true[wrong], "predicted": predicted[wrong]})
        .value_counts()
        .rename("count")
        .reset_index()
        .sort_values(["count", "true", "predicted"], ascending=[False, True, True], kind="stable")
    )
    class_sizes = np.bincount(true, minlength=max(NUM_CLASSES, true.max(initial=0) + 1))
    pairs["share of true class"] = pairs["count"] / class_sizes[pairs["true"].to_numpy()]
    pairs.insert(1, "true name", [class_display_name(c) for c in pairs["true"]])
    pairs.insert(3, "predicted name", [class_display_name(c) for c in pairs["predicted"]])
    pairs = pairs.reset_index(drop=True)
    return pairs if top is None else pairs.head(top)


def misclassified(probs, labels, ids, paths=None) -> pd.DataFrame:
    """The wrongly predicted rows, most confident mistake first: Id, path (when given), true and predicted class
    with names, confidence (the top probability) and the probability given to the true class."""
    probs = np.asarray(probs, dtype=np.float64)
    true, predicted = class_labels(labels), probs.argmax(axis=1)
    rows = np.arange(len(probs))
    frame = pd.DataFrame(
        {
            "Id": list(ids),
            "path": list(paths) if paths is not None else None,
            "true": true,
            "true name": [class_display_name(c) for c in true],
            "predicted": predicted,
            "predicted name": [class_display_name(c) for c in predicted],
            "confidence": probs.max(axis=1),
            "prob of true class": probs[rows, true],
        }
    )
    if paths is None:
        frame = frame.drop(columns="path")
    wrong = frame[true != predicted]
    return wrong.sort_values("confidence", ascending=False, kind="stable").reset_index(drop=True)


def confident_examples(probs, labels, ids, paths, per_kind: int) -> pd.DataFrame:
    """The `per_kind` most confident mistakes, then the `per_kind` most confident right answers (a sample to
    explain, e.g. with Grad-CAM): the columns of `misclassified` plus `kind` ("mistake" or "right")."""
    probs = np.asarray(probs, dtype=np.float64)
    true, predicted = class_labels(labels), probs.argmax(axis=1)
    frame = pd.DataFrame(
        {
            "Id": list(ids),
            "path": list(paths),
            "true": true,
            "true name": [class_display_name(c) for c in true],
            "predicted": predicted,
            "predicted name": [class_display_name(c) for c in predicted],
            "confidence": probs.max(axis=1),
            "kind": np.where(true == predicted, "right", "mistake"),
        }
    ).sort_values("confidence", ascending=False, kind="stable")
    picked = [frame[frame["kind"] == kind].head(per_kind) for kind in ("mistake", "right")]
    return pd.concat(picked, ignore_index=True)
