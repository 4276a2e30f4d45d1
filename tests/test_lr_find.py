"""LR range test: exponential ramp, per-batch losses, early stop on divergence, weights restored."""

import keras
import numpy as np
import pytest
from keras import ops

from lib.lr_find import ExponentialRamp, LRFindResult, lr_range_test, plot_lr_find, suggest_lr


def separable_data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    labels = (x[:, 0] + x[:, 1] > 0).astype(int)
    return x, keras.utils.to_categorical(labels, 2)


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, i):
        part = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.x[part], self.y[part]


def test_range_test_ramps_exponentially_restores_weights_and_suggests_sane_lr():
    x, y = separable_data()
    model = tiny_model()
    before = [w.copy() for w in model.get_weights()]  # includes BatchNorm moving statistics
    result = lr_range_test(
        model,
        (x, y),
        loss="categorical_crossentropy",
        min_lr=1e-5,
        max_lr=1e3,
        steps=120,
        batch_size=32,
        optimizer="sgd",
    )
    assert isinstance(result, LRFindResult)
    history = result.history
    assert list(history.columns) == ["step", "lr", "loss", "smoothed_loss"]
    assert 5 < len(history) <= 120
    # the optimizer really used an exponential ramp: constant ratio between consecutive recorded steps
    ratios = history["lr"].to_numpy()[1:] / history["lr"].to_numpy()[:-1]
    np.testing.assert_allclose(ratios, (1e3 / 1e-5) ** (1 / 119), rtol=1e-4)
    assert history["lr"].iloc[0] == pytest.approx(1e-5, rel=1e-5)
    assert int(ops.convert_to_numpy(model.optimizer.iterations)) == len(history)
    # weights (and BN statistics) are exactly as before
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    # SGD at lr up to 1000 on this problem diverges before the end; the suggestion lies before that point
    assert result.diverged and len(history) < 120
    assert 1e-5 <= result.suggested_lr <= 1e3
    assert result.suggested_lr < history["lr"].iloc[-1]
    assert result.suggested_lr <= result.min_loss_lr
    # the suggestion sits where the smoothed loss is falling, past the skipped noisy start
    at = int(history.index[history["lr"] == result.suggested_lr][0])
    assert at >= len(history) // 10
    smoothed = history["smoothed_loss"].to_numpy()
    assert smoothed[at + 3] < smoothed[at] < smoothed[at - 3]


@pytest.mark.parametrize("replicas", [1, 2])  # 2: the model.fit path a strategy takes (here on one device)
def test_losses_are_per_batch_not_epoch_running_means(replicas):
    # At a negligible LR the model barely changes, so each recorded loss must equal that batch's own loss.
    x, y = separable_data(n=96)
    model = tiny_model(seed=1)
    data = Batches(x, y, batch_size=32)
    expected = []
    for i in range(3):
        part = slice(i * 32, (i + 1) * 32)
        batch_loss = keras.losses.categorical_crossentropy(y[part], model(x[part], training=True))
        expected.append(float(ops.convert_to_numpy(ops.mean(batch_loss))))
    result = lr_range_test(
        model, data, loss="categorical_crossentropy", min_lr=1e-12, max_lr=2e-12, steps=6, replicas=replicas
    )
    losses = result.history["loss"].to_numpy()
    np.testing.assert_allclose(losses[:3], expected, rtol=1e-4)
    np.testing.assert_allclose(losses[3:], expected, rtol=1e-4)  # the PyDataset wraps around
    assert not result.diverged and len(result.history) == 6


def test_ramp_schedule_and_suggestion_rule():
    ramp = ExponentialRamp(1e-4, 1.0, steps=5)
    values = [float(ops.convert_to_numpy(ramp(s))) for s in range(5)]
    np.testing.assert_allclose(values, [1e-4, 1e-3, 1e-2, 1e-1, 1.0], rtol=1e-5)
    lrs = np.logspace(-4, 0, 9)
    smoothed = np.array([2.0, 1.98, 1.9, 1.4, 0.9, 0.8, 0.78, 1.5, 4.0])  # steepest fall at lrs[3]
    assert suggest_lr(lrs, smoothed) == pytest.approx(lrs[3])
    with pytest.raises(ValueError, match="min_lr < max_lr"):
        lr_range_test(tiny_model(), separable_data(), loss="categorical_crossentropy", min_lr=1.0, max_lr=0.1)


def test_plot_marks_suggestion():
    matplotlib = pytest.importorskip("matplotlib", reason="matplotlib is not installed in this environment")
    matplotlib.use("Agg")
    x, y = separable_data(n=64)
    result = lr_range_test(tiny_model(), (x, y), loss="categorical_crossentropy", steps=20, batch_size=16)
    ax = plot_lr_find(result)
    assert ax.get_xscale() == "log"
    assert any(f"{result.suggested_lr:.2g}" in text.get_text() for text in ax.get_legend().get_texts())


def test_plot_keeps_the_loss_axis_within_the_measured_losses():
    matplotlib = pytest.importorskip("matplotlib", reason="matplotlib is not installed in this environment")
    matplotlib.use("Agg")
    import pandas as pd

    lrs = np.logspace(-6, 0, 50)
    loss = np.concatenate([np.linspace(2.3, 0.4, 45), [1.0, 5.0, 40.0, 300.0, 2000.0]])  # falls, then blows up
    smoothed = pd.Series(loss).ewm(alpha=0.3).mean().to_numpy()
    history = pd.DataFrame({"step": range(50), "lr": lrs, "loss": loss, "smoothed_loss": smoothed})
    bottom, top = plot_lr_find(LRFindResult(history, 1e-3, 1e-2, True)).get_ylim()
    assert 0 <= bottom < 0.4 and bottom > 0.4 - 0.1 * (top - 0.4)  # just below the lowest loss, never below 0
    assert top == pytest.approx(smoothed[0] * 1.5)
    falling = np.linspace(2.3, 0.05, 50)  # the margin below 0.05 (5 % of the span) would cross 0
    near_zero = history.assign(loss=falling, smoothed_loss=falling)
    assert plot_lr_find(LRFindResult(near_zero, 1e-3, 1e-2, True)).get_ylim()[0] == 0
