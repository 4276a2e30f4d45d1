"""Accuracy and log-loss on known values, with integer or one-hot labels."""

import numpy as np
import pytest

from lib.metrics import accuracy, class_labels, log_loss


def test_metrics_on_known_values():
    probs = np.array([[0.7, 0.3], [0.4, 0.6], [0.9, 0.1]])
    labels = np.array([0, 0, 1])
    assert accuracy(probs, labels) == pytest.approx(1 / 3)
    assert log_loss(probs, labels) == pytest.approx(-(np.log(0.7) + np.log(0.4) + np.log(0.1)) / 3)
    assert accuracy(probs, np.eye(2)[labels]) == pytest.approx(1 / 3)  # one-hot labels work too
    np.testing.assert_array_equal(class_labels(np.eye(2)[labels]), labels)


def test_log_loss_clips_a_zero_probability():
    assert log_loss(np.array([[1.0, 0.0]]), [1]) == pytest.approx(-np.log(1e-15))
