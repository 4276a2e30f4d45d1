"""Ensemble weights: the better model wins weight, the blend is at least as accurate, tables add up."""

import numpy as np
import pytest

from lib import class_display_name
from lib.ensemble import blend, fit_weights, per_class_accuracy
from lib.metrics import accuracy, log_loss


def synthetic_models(n=600, classes=10, seed=0):
    """Labels plus a strong, a weaker and a near-random model's probabilities, errors independent."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)

    def model(signal):
        logits = rng.normal(size=(n, classes))
        logits[np.arange(n), labels] += signal
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    return labels, [model(2.5), model(2.0), model(0.3)]


def test_blends():
    a = np.array([[0.8, 0.2], [0.5, 0.5]])
    b = np.array([[0.2, 0.8], [0.9, 0.1]])
    np.testing.assert_allclose(blend([a, b], [0.75, 0.25]), [[0.65, 0.35], [0.6, 0.4]])
    geo = blend([a, b], [0.5, 0.5], method="geometric")
    np.testing.assert_allclose(geo.sum(axis=1), 1.0)
    expected = np.sqrt(a * b) / np.sqrt(a * b).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(geo, expected)
    labels, models = synthetic_models(n=50)
    np.testing.assert_allclose(blend(models, [0.2, 0.3, 0.5], "geometric").sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="arithmetic, geometric"):
        blend([a, b], [0.5, 0.5], method="harmonic")
    with pytest.raises(ValueError, match="2 models but 3 weights"):
        blend([a, b], [0.2, 0.3, 0.5])


@pytest.mark.parametrize("search", ["scipy", "simplex"])
@pytest.mark.parametrize("method", ["arithmetic", "geometric"])
def test_fitted_weights_favour_the_better_model(search, method):
    labels, models = synthetic_models()
    weights = fit_weights(models, labels, method=method, search=search)
    assert weights.shape == (3,)
    assert np.all(weights >= 0) and weights.sum() == pytest.approx(1.0)
    assert weights[0] == weights.max() and weights[0] > weights[2]
    assert weights[1] > 0.05 and weights[2] < 0.05  # the useful second model is kept, the noise model is not
    blended = blend(models, weights, method)
    best_single = max(accuracy(p, labels) for p in models)
    assert accuracy(blended, labels) >= best_single
    assert log_loss(blended, labels) <= min(log_loss(p, labels) for p in models) + 1e-9


def test_scipy_and_simplex_agree_and_simplex_guard():
    labels, models = synthetic_models(seed=1)
    by_scipy = fit_weights(models, labels, search="scipy")
    by_grid = fit_weights(models, labels, search="simplex", resolution=20)
    assert log_loss(blend(models, by_grid), labels) >= log_loss(blend(models, by_scipy), labels) - 1e-4
    np.testing.assert_allclose(by_scipy, by_grid, atol=0.1)
    assert np.array_equal(fit_weights(models[:1], labels), [1.0])
    with pytest.raises(ValueError, match="use search='scipy'"):
        fit_weights(models * 4, labels, search="simplex", resolution=20)
    with pytest.raises(ValueError, match="scipy, simplex"):
        fit_weights(models, labels, search="grid")


def test_per_class_accuracy_table():
    labels, models = synthetic_models()
    named = {"strong": models[0], "weak": models[1]}
    named["ensemble"] = blend(list(named.values()), fit_weights(list(named.values()), labels))
    table = per_class_accuracy(named, labels)
    assert table.shape == (11, 3)
    assert list(table.index) == [class_display_name(c) for c in range(10)] + ["all"]
    assert table.index[3] == "3 Lada 2110" and list(table.columns) == ["strong", "weak", "ensemble"]
    for name, probs in named.items():
        assert table.loc["all", name] == pytest.approx(accuracy(probs, labels))
        in_class_3 = labels == 3
        assert table.loc["3 Lada 2110", name] == pytest.approx(np.mean(probs[in_class_3].argmax(axis=1) == 3))


def test_pseudo_labels_respect_the_threshold():
    import pandas as pd

    from lib import NUM_CLASSES
    from lib.ensemble import pseudo_labels

    test = pd.DataFrame({"Id": ["a", "b", "c"], "path": ["pa", "pb", "pc"]})
    probs = np.full((3, NUM_CLASSES), 0.01)
    probs[0, 4], probs[1, 2], probs[2, 7] = 0.91, 0.95, 0.5
    chosen = pseudo_labels(test, probs, 0.95)
    assert chosen["Id"].tolist() == ["b"] and chosen["Category"].tolist() == [2]
    assert chosen["confidence"].tolist() == [0.95]


def test_a_model_that_is_right_and_sure_under_label_smoothing_keeps_pseudo_labels(tmp_path):
    """Trained with label smoothing 0.1 until right on (nearly) every row, a model's top probability settles near
    1 - 0.1 + 0.1/10 = 0.91 (median 0.89 here): an absolute 0.98 threshold keeps about 1% of the rows, while 05's
    threshold, a share of that ceiling read from the runs' params.json, keeps most of them, labelled right."""
    import keras
    import pandas as pd

    from lib import NUM_CLASSES
    from lib.ensemble import Blend, class_balance, pseudo_label_rows, pseudo_labels, reachable_confidence, smoothed_top
    from lib.runs import write_json

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(NUM_CLASSES, 8)) * 4
    labels = np.tile(np.arange(NUM_CLASSES), 30)
    features = (centres[labels] + rng.normal(size=(len(labels), 8))).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(NUM_CLASSES, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1))
    repeats = 200  # 200 steps in one epoch: converged, and quick
    model.fit(np.tile(features, (repeats, 1)), np.tile(np.eye(NUM_CLASSES)[labels], (repeats, 1)), batch_size=300,
              verbose=0)  # fmt: skip
    probs = model.predict(features, verbose=0)
    assert accuracy(probs, labels) >= 0.99 and np.median(probs.max(axis=1)) < smoothed_top(0.1)
    rows = pd.DataFrame({"Id": [f"{i}.jpg" for i in range(len(labels))], "path": "p"})
    assert len(pseudo_labels(rows, probs, 0.98)) <= 0.02 * len(rows)  # the old absolute threshold: all but off
    for run in ("a", "b"):
        write_json(tmp_path / run / "params.json", {"label_smoothing": 0.1})
    weights = pd.Series([0.7, 0.3], index=["a", "b"])
    assert reachable_confidence({"a": 0.1, "b": 0.1}, weights) == pytest.approx(0.91)
    fitted = Blend(weights, None, None, None, rows["Id"], probs, {})
    kept, least = pseudo_label_rows(rows, fitted, {"a": tmp_path / "a", "b": tmp_path / "b"}, 0.95)
    assert least == pytest.approx(0.95 * 0.91) and len(kept) > 0.5 * len(rows)
    truth = labels[kept["Id"].str.removesuffix(".jpg").astype(int).to_numpy()]
    assert (kept["Category"].to_numpy() == truth).mean() >= 0.99
    balance = class_balance(kept)
    assert balance["rows"].sum() == len(kept) and len(balance) == NUM_CLASSES
    assert balance.index[0] == class_display_name(0) and balance["share"].sum() == pytest.approx(1)


def test_combine_runs_scales_each_model_by_its_own_temperature(tmp_path):
    from lib.analysis.calibration import fit_temperature
    from lib.ensemble import combine_runs
    from lib.runs import RunRecord

    labels, (strong, weak, _) = synthetic_models(n=400, seed=3)
    over_confident = strong**6 / (strong**6).sum(axis=1, keepdims=True)  # softmax(6 log p)
    folders = {}
    for name, probs in (("over", over_confident), ("weak", weak)):
        record = RunRecord(tmp_path / name)
        record.save_probs("val", [f"{i}.jpg" for i in range(len(labels))], probs, labels)
        record.save_probs("test", [f"t{i}.jpg" for i in range(50)], probs[:50])
        folders[name] = record.dir
    plain = combine_runs(folders)
    scaled = combine_runs(folders, temperature_scaling=True)
    assert not plain.temperature_scaling and plain.calibration["temperature"].tolist() == [1.0, 1.0]
    # softmax(6 log p) needs six times the temperature of p; the weak model gets its own
    temperatures = scaled.calibration["temperature"]
    assert scaled.temperature_scaling
    assert temperatures["over"] == pytest.approx(6 * fit_temperature(strong, labels), rel=0.01)
    assert temperatures["weak"] == pytest.approx(fit_temperature(weak, labels), rel=0.01)
    calibration = scaled.calibration
    assert (calibration["log-loss after"] <= calibration["log-loss before"] + 1e-9).all()
    assert calibration.loc["over", "log-loss after"] < calibration.loc["over", "log-loss before"] - 0.1
    for name in folders:  # scaling moves no model's predicted class, on validation or test
        assert np.array_equal(scaled.model_val_probs[name].argmax(1), plain.model_val_probs[name].argmax(1))
    np.testing.assert_allclose(scaled.test_probs.sum(axis=1), 1.0)
    assert log_loss(scaled.val_probs, labels) < log_loss(plain.val_probs, labels)
