"""Calibration: ECE tells calibrated from over-confident probabilities; temperature scaling fixes the latter."""

import numpy as np
import pytest

from lib.analysis.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    temperature_table,
)
from lib.metrics import log_loss


def softmax(logits):
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def calibrated_sample(n=20_000, classes=10, seed=0):
    """Logits and labels drawn from softmax(logits): those probabilities are calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(n, classes))
    probs = softmax(logits)
    labels = (probs.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    return logits, np.minimum(labels, classes - 1)


def test_ece_is_near_zero_when_calibrated_and_large_when_over_confident():
    logits, labels = calibrated_sample()
    assert expected_calibration_error(softmax(logits), labels) < 0.02
    assert expected_calibration_error(softmax(3.0 * logits), labels) > 0.15


def test_reliability_bins_count_every_row_once_and_match_by_hand():
    logits, labels = calibrated_sample(n=997)
    bins = reliability_bins(softmax(logits), labels, n_bins=10)
    assert len(bins) == 10 and bins["count"].sum() == 997
    probs = np.array([[0.95, 0.05], [0.55, 0.45], [0.6, 0.4], [0.3, 0.7]])
    bins = reliability_bins(probs, [0, 1, 0, 1], n_bins=2)  # bins (0, 0.5], (0.5, 1]: all rows in the second
    assert bins["count"].tolist() == [0, 4]
    assert bins.loc[1, "confidence"] == pytest.approx((0.95 + 0.55 + 0.6 + 0.7) / 4)
    assert bins.loc[1, "accuracy"] == pytest.approx(0.75)
    assert expected_calibration_error(probs, [0, 1, 0, 1], n_bins=2) == pytest.approx(0.75 - 0.7)


def test_temperature_scaling_undoes_over_confidence_and_keeps_the_argmax():
    logits, labels = calibrated_sample(n=5_000, seed=1)
    over_confident = softmax(3.0 * logits)
    temperature = fit_temperature(over_confident, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    scaled = apply_temperature(over_confident, temperature)
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0)
    assert np.array_equal(scaled.argmax(axis=1), over_confident.argmax(axis=1))
    assert log_loss(scaled, labels) < log_loss(over_confident, labels) - 0.1
    assert expected_calibration_error(scaled, labels) < 0.03
    table = temperature_table({"over": over_confident, "calibrated": softmax(logits)}, labels)
    assert table.loc["over", "log-loss after"] < table.loc["over", "log-loss before"]
    assert table.loc["calibrated", "temperature"] == pytest.approx(1.0, abs=0.1)
    with pytest.raises(ValueError, match="> 0"):
        apply_temperature(over_confident, 0.0)
