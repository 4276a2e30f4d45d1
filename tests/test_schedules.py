"""Schedules: exact LR values against the published formulas, serialization, optimizer factory."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from lib.schedules import CyclicLR, OneCycle, lr_curve, make_optimizer, make_schedule


def lr_at(schedule, step):
    return float(ops.convert_to_numpy(schedule(step)))


def smith_clr(step, base, peak, step_size, mode, gamma=1.0):
    """Reference from Smith 2017 / bckenstler's CLR, written independently of the module."""
    cycle = math.floor(1 + step / (2 * step_size))
    x = abs(step / step_size - 2 * cycle + 1)
    scale = {"triangular": 1.0, "triangular2": 1 / (2 ** (cycle - 1)), "exp_range": gamma**step}[mode]
    return base + (peak - base) * max(0.0, 1 - x) * scale


def torch_onecycle(step, max_lr, total, pct_start=0.3, div=25.0, final_div=1e4):
    """Reference port of torch.optim.lr_scheduler.OneCycleLR.get_lr (cos, two phases)."""
    initial, peak = max_lr / div, max_lr
    minimum = initial / final_div
    phases = [(float(pct_start * total) - 1, initial, peak), (total - 1, peak, minimum)]
    start_step = 0
    for i, (end_step, start, end) in enumerate(phases):
        if step <= end_step or i == len(phases) - 1:
            pct = (step - start_step) / (end_step - start_step)
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        start_step = end_step


@pytest.mark.parametrize("mode,gamma", [("triangular", 1.0), ("triangular2", 1.0), ("exp_range", 0.99)])
def test_cyclic_lr_matches_smith_formula(mode, gamma):
    schedule = CyclicLR(0.001, 0.006, step_size=10, mode=mode, gamma=gamma)
    for step in [0, 1, 5, 10, 15, 20, 25, 30, 37, 40, 50, 63]:
        assert lr_at(schedule, step) == pytest.approx(smith_clr(step, 0.001, 0.006, 10, mode, gamma), rel=1e-5)
    # landmarks: base at cycle starts, peak at the first apex, triangular2 halves the second apex
    assert lr_at(schedule, 0) == pytest.approx(0.001)
    assert lr_at(schedule, 10) == pytest.approx(0.001 + 0.005 * (gamma**10), rel=1e-5)
    if mode == "triangular2":
        assert lr_at(schedule, 30) == pytest.approx(0.001 + 0.0025, rel=1e-5)


def test_onecycle_matches_pytorch_formula():
    schedule = OneCycle(0.01, total_steps=100, pct_start=0.3)
    for step in [0, 1, 10, 28, 29, 30, 31, 50, 75, 98, 99]:
        assert lr_at(schedule, step) == pytest.approx(torch_onecycle(step, 0.01, 100), rel=1e-5)
    assert lr_at(schedule, 0) == pytest.approx(0.01 / 25, rel=1e-5)
    assert lr_at(schedule, 29) == pytest.approx(0.01, rel=1e-5)  # peak at pct_start * total - 1
    assert lr_at(schedule, 99) == pytest.approx(0.01 / 25 / 1e4, rel=1e-4)
    assert lr_at(schedule, 500) == pytest.approx(lr_at(schedule, 99))  # past the end: stays at the minimum


def test_cosine_with_warmup_uses_keras_schedule_and_formula():
    schedule = make_schedule("cosine", 0.01, steps_per_epoch=10, epochs=5, warmup_epochs=1, min_lr_ratio=0.1)
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    assert lr_at(schedule, 0) == pytest.approx(0.0)
    assert lr_at(schedule, 5) == pytest.approx(0.005)  # halfway through the linear warmup
    assert lr_at(schedule, 10) == pytest.approx(0.01)  # warmup ends at the peak
    for step in [10, 20, 30, 40, 50]:
        decay = 0.5 * (1 + math.cos(math.pi * (step - 10) / 40))
        assert lr_at(schedule, step) == pytest.approx(0.01 * ((1 - 0.1) * decay + 0.1), rel=1e-5)
    plain = make_schedule("cosine", 0.01, steps_per_epoch=10, epochs=5)
    assert lr_at(plain, 0) == pytest.approx(0.01) and lr_at(plain, 50) == pytest.approx(0.0, abs=1e-9)


def test_make_schedule_names_and_options():
    assert make_schedule("constant", 0.003, 10, 2) == 0.003
    assert make_schedule("plateau", 0.003, 10, 2) == 0.003
    one = make_schedule("onecycle", 0.01, 10, 3, pct_start=0.25, div_factor=10, final_div_factor=100)
    assert (one.total_steps, one.pct_start, one.div_factor, one.final_div_factor) == (30, 0.25, 10, 100)
    cyc = make_schedule("cyclic", 0.01, 10, 6, mode="triangular2", base_ratio=0.2, step_epochs=1.5)
    assert (cyc.base_lr, cyc.max_lr, cyc.step_size, cyc.mode) == (pytest.approx(0.002), 0.01, 15, "triangular2")
    cyc2 = make_schedule("cyclic", 0.01, 10, 6, base_lr=1e-4, step_size=7, mode="exp_range", gamma=0.9)
    assert (cyc2.base_lr, cyc2.step_size, cyc2.gamma) == (1e-4, 7, 0.9)
    with pytest.raises(ValueError, match="constant, plateau, cosine, onecycle, cyclic"):
        make_schedule("linear", 0.01, 10, 2)
    with pytest.raises(ValueError, match="warmup_epochs"):
        make_schedule("cyclic", 0.01, 10, 2, warmup_epochs=1)
    with pytest.raises(ValueError, match="triangular"):
        CyclicLR(0.1, 1.0, 5, mode="sawtooth")


def test_lr_curve_values():
    assert np.array_equal(lr_curve(0.002, 5), np.full(5, 0.002))
    cyc = CyclicLR(0.0, 1.0, step_size=4)
    np.testing.assert_allclose(lr_curve(cyc, 9), [0, 0.25, 0.5, 0.75, 1, 0.75, 0.5, 0.25, 0], atol=1e-7)
    cosine = make_schedule("cosine", 0.01, 10, 5, warmup_epochs=1)  # not vectorisable: per-step fallback
    curve = lr_curve(cosine, 50)
    assert curve.shape == (50,) and curve[5] == pytest.approx(0.005) and curve.argmax() == 10


@pytest.mark.parametrize(
    "schedule",
    [
        CyclicLR(1e-4, 1e-2, 20, mode="exp_range", gamma=0.999),
        OneCycle(0.02, 300, pct_start=0.2, div_factor=10, final_div_factor=50),
    ],
)
def test_get_config_round_trip(schedule):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert type(restored) is type(schedule) and restored.get_config() == schedule.get_config()
    assert lr_at(restored, 37) == pytest.approx(lr_at(schedule, 37))


def test_model_with_cyclic_lr_saves_and_loads(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(
        optimizer=make_optimizer("sgd", CyclicLR(0.01, 0.1, 5, mode="triangular2")), loss="categorical_crossentropy"
    )
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    y = keras.utils.to_categorical(np.arange(16) % 3, 3)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    schedule = keras.saving.deserialize_keras_object(loaded.optimizer.get_config()["learning_rate"])
    assert isinstance(schedule, CyclicLR)
    assert schedule.get_config() == CyclicLR(0.01, 0.1, 5, mode="triangular2").get_config()
    assert int(ops.convert_to_numpy(loaded.optimizer.iterations)) == 2
    # the loaded optimizer evaluates the schedule at its restored step
    current = float(ops.convert_to_numpy(loaded.optimizer.learning_rate))
    assert current == pytest.approx(smith_clr(2, 0.01, 0.1, 5, "triangular2"))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_make_optimizer_names_and_weight_decay():
    adam = make_optimizer("adam", 1e-3)
    assert isinstance(adam, keras.optimizers.Adam) and adam.weight_decay is None
    adam_wd = make_optimizer("Adam", 1e-3, weight_decay=1e-4, clipnorm=1.0)
    assert adam_wd.weight_decay == pytest.approx(1e-4) and adam_wd.clipnorm == 1.0
    adamw = make_optimizer("adamw", 1e-3, weight_decay=0.05)
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == pytest.approx(0.05)
    sgd = make_optimizer("sgd", OneCycle(0.1, 100), weight_decay=5e-4, momentum=0.8, nesterov=False)
    assert isinstance(sgd, keras.optimizers.SGD)
    assert (sgd.momentum, sgd.nesterov, sgd.weight_decay) == (0.8, False, pytest.approx(5e-4))
    assert make_optimizer("sgd", 0.1).nesterov is True
    with pytest.raises(ValueError, match="adam, adamw, sgd"):
        make_optimizer("rmsprop", 1e-3)
