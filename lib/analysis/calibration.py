"""Calibration of class probabilities: reliability bins, expected calibration error, temperature scaling."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from lib.metrics import EPS, class_labels, log_loss

DEFAULT_BINS = 15  # as in Guo et al. 2017, "On calibration of modern neural networks"
TEMPERATURE_BOUNDS = (0.05, 20.0)


def reliability_bins(probs, labels, n_bins: int = DEFAULT_BINS) -> pd.DataFrame:
    """Equal-width confidence bins (lower, upper]: rows per bin, mean confidence (top probability) and accuracy
    of the rows in it, and their gap. Empty bins are kept, with NaN confidence and accuracy."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == class_labels(labels)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin m holds (edges[m], edges[m+1]]; a confidence of exactly 0 goes to the first bin
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=n_bins) / count
        bin_accuracy = np.bincount(index, weights=correct, minlength=n_bins) / count
    return pd.DataFrame(
        {
            "lower": edges[:-1],
            "upper": edges[1:],
            "count": count,
            "confidence": mean_confidence,
            "accuracy": bin_accuracy,
            "gap": mean_confidence - bin_accuracy,
        }
    )


def expected_calibration_error(probs, labels, n_bins: int = DEFAULT_BINS) -> float:
    """ECE: the row-weighted mean over equal-width bins of |accuracy - mean confidence|."""
    bins = reliability_bins(probs, labels, n_bins).query("count > 0")
    return float(np.sum(bins["count"] * (bins["accuracy"] - bins["confidence"]).abs()) / bins["count"].sum())


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """softmax(log(p) / T): T > 1 softens over-confident probabilities, T < 1 sharpens; the argmax is kept."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_probs = np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0))
    return np.exp(log_softmax(log_probs / temperature, axis=1))


def fit_temperature(probs, labels, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The T in `bounds` minimising the log-loss of apply_temperature(probs, T) on (validation) rows; searched
    on log T, where the loss is smooth and T stays positive."""
    log_probs = np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0))
    rows, true = np.arange(len(log_probs)), class_labels(labels)

    def nll(log_t: float) -> float:
        return float(-np.mean(log_softmax(log_probs / np.exp(log_t), axis=1)[rows, true]))

    found = minimize_scalar(nll, bounds=np.log(bounds), method="bounded", options={"xatol": 1e-4})
    # the search is bounded; never return a T worse than leaving the probabilities as they are
    return float(np.exp(found.x)) if found.fun <= nll(0.0) else 1.0


def temperature_table(model_probs: dict, labels, n_bins: int = DEFAULT_BINS) -> pd.DataFrame:
    """Per model (dict name -> probabilities): the fitted temperature, log-loss and ECE before and after scaling,
    all on the same rows (the fit's own rows: an optimistic view of the 'after' columns)."""
    rows = {}
    for name, probs in model_probs.items():
        temperature = fit_temperature(probs, labels)
        scaled = apply_temperature(probs, temperature)
        rows[name] = {
            "temperature": temperature,
            "log-loss before": log_loss(probs, labels),
            "log-loss after": log_loss(scaled, labels),
            "ECE before": expected_calibration_error(probs, labels, n_bins),
            "ECE after": expected_calibration_error(scaled, labels, n_bins),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")
