"""Scores of class probabilities against labels: accuracy and log-loss, for integer or one-hot labels."""

import numpy as np

EPS = 1e-15  # probabilities are clipped at this before a log


def class_labels(labels) -> np.ndarray:
    """Integer class labels from integers or one-hot rows."""
    labels = np.asarray(labels)
    return labels.argmax(axis=1) if labels.ndim == 2 else labels.astype(int)


def accuracy(probs, labels) -> float:
    """Share of rows whose most probable class is the label."""
    return float(np.mean(np.asarray(probs).argmax(axis=1) == class_labels(labels)))


def log_loss(probs, labels) -> float:
    """Mean negative log-probability of the true class (probabilities clipped at 1e-15)."""
    probs = np.asarray(probs, dtype=np.float64)
    true = probs[np.arange(len(probs)), class_labels(labels)]
    return float(-np.mean(np.log(np.clip(true, EPS, 1.0))))
