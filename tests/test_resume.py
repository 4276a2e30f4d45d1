"""Safe resume: which parameter changes start a run afresh, and the state a resumed stage must get back."""

import contextlib
import json
import warnings

import h5py
import keras
import numpy as np
import pandas as pd
import pytest

from lib.callbacks import CallbackState, load_weights_without_optimizer, reseed_model, save_weights_atomic
from lib.paths import PROJECT_ROOT
from lib.runs import RESUME_SAFE, RunRecord
from lib.train import TrainSettings, lr_per_step, plan_stages


def notebook_parameters(name: str) -> dict:
    """The defaults of a notebook's `parameters` cell, as papermill would see them."""
    jupytext = pytest.importorskip("jupytext")  # not in the JAX-only environment
    notebook = jupytext.read(PROJECT_ROOT / "notebooks" / f"{name}.py")
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(cell.source, namespace)
    return {k: v for k, v in namespace.items() if not k.startswith("_")}


def changed(value):
    """Another value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "-changed"
    if isinstance(value, list):
        return value[:-1] if value else ["x"]  # shorter: not a run that only grew at the end
    if isinstance(value, dict):
        return {**value, "changed": 1}
    return "changed"


MODEL_NOTEBOOKS = ["03_xception", "04_efficientnetb7"]


@pytest.mark.parametrize("notebook", MODEL_NOTEBOOKS)
def test_every_parameter_outside_the_allow_list_starts_afresh(notebook, tmp_path):
    base = notebook_parameters(notebook)
    for key, value in base.items():
        run_dir = tmp_path / key
        RunRecord(run_dir).start(base)
        (run_dir / "stage_1.json").write_text("{}")
        RunRecord(run_dir).start({**base, key: changed(value)})
        resumed = (run_dir / "stage_1.json").exists()
        moved = list(tmp_path.glob(f"{key}.old-*"))
        if key in RESUME_SAFE:
            assert resumed and not moved, f"changing {key} must keep the run"
        else:
            assert not resumed and len(moved) == 1, f"changing {key} must move the old run aside"


def test_the_allow_list_names_real_parameters():
    known = set().union(*(notebook_parameters(name) for name in MODEL_NOTEBOOKS)) | {"run_dir"}  # run_dir: tests
    assert known >= RESUME_SAFE, f"RESUME_SAFE names unknown parameters: {sorted(RESUME_SAFE - known)}"


def test_the_issue_case_dropout_moves_the_run_aside(tmp_path, capsys):
    base = notebook_parameters("03_xception")
    RunRecord(tmp_path / "run").start(base)
    RunRecord(tmp_path / "run").start({**base, "dropout": 0.37})
    assert "Settings changed (dropout): previous run moved to" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "params.json").read_text())["dropout"] == 0.37


def test_notebooks_that_do_not_train_never_move_their_run(tmp_path):
    RunRecord(tmp_path / "run").start({"seed": 1}, resumable=False)
    RunRecord(tmp_path / "run").start({"seed": 2}, resumable=False)
    assert not list(tmp_path.glob("run.old-*"))


def test_plan_uses_each_stage_batch_size_for_steps_and_lr():
    """04's full profile shrinks the batch 16 -> 8 -> 4: stages 2 and 3 take 2x and 4x the steps of a 16 batch."""
    stages = [
        {"name": "a", "epochs": 1, "batch_size": 16},
        {"name": "b", "epochs": 2, "batch_size": 8, "schedule": "cosine"},
        {"name": "c", "epochs": 1, "batch_size": 4, "pseudo_labels": True},
        {"name": "d", "epochs": 1},
    ]
    plan = plan_stages(stages, train_rows=100, settings=TrainSettings(batch_size=32), pseudo_rows=20)
    assert [p.batch_size for p in plan] == [16, 8, 4, 32]
    assert [p.steps_per_epoch for p in plan] == [7, 13, 30, 4]  # ceil(100/16), ceil(100/8), ceil(120/4), ...
    assert [p.first_epoch for p in plan] == [0, 1, 3, 4]
    table = lr_per_step(plan)
    assert table.groupby("stage", sort=False).size().tolist() == [7, 26, 30, 4]
    assert table["step"].tolist() == list(range(67))


def test_callback_state_puts_patience_counters_back(tmp_path):
    path = tmp_path / "backup" / "callback_state.json"
    early = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=5)
    early.on_train_begin()
    saver = CallbackState([early], path, first_epoch=2)
    for epoch, accuracy in zip(range(2, 5), [0.5, 0.4, 0.45]):
        saver.on_epoch_begin(epoch)
        early.on_epoch_end(epoch, {"val_accuracy": accuracy})
        saver.on_epoch_end(epoch)
    assert (early.wait, early.best) == (2, 0.5)
    resumed = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=5)
    resumed.on_train_begin()
    restorer = CallbackState([resumed], path, first_epoch=2)
    restorer.on_epoch_begin(4)  # killed after epoch 3 was backed up: the stage resumes at epoch 4
    assert (resumed.wait, resumed.best, resumed.best_epoch) == (1, 0.5, 2)
    fresh = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=5)
    fresh.on_train_begin()
    CallbackState([fresh], path, first_epoch=2).on_epoch_begin(2)  # the stage's first epoch: nothing to restore
    assert (fresh.wait, fresh.best) == (0, None)


def dropout_model():
    inputs = keras.Input((64,))
    return keras.Model(inputs, keras.layers.Dropout(0.5, seed=None)(inputs))


def test_dropout_masks_depend_on_seed_and_epoch_only():
    keras.utils.set_random_seed(1)
    first, second = dropout_model(), dropout_model()
    x = np.ones((4, 64), dtype="float32")
    for _ in range(3):
        second(x, training=True)  # a different history: more draws before this epoch
    assert reseed_model(first, seed=7, epoch=3) == 1
    reseed_model(second, seed=7, epoch=3)
    same = [keras.ops.convert_to_numpy(m(x, training=True)) for m in (first, second)]
    assert np.array_equal(*same)
    reseed_model(second, seed=7, epoch=4)
    assert not np.array_equal(same[0], keras.ops.convert_to_numpy(second(x, training=True)))


def trained_model(seed: int) -> keras.Model:
    """A compiled model one Adam epoch in, so its optimizer holds state."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(np.ones((6, 4), "float32"), np.eye(3, dtype="float32")[[0, 1, 2] * 2], epochs=1, verbose=0)
    return model


def saved_objects(path) -> set:
    with h5py.File(path, "r") as handle:
        return set(handle)


def values(variables) -> list:
    return [keras.ops.convert_to_numpy(v) for v in variables]


def test_checkpoints_hold_the_weights_without_the_optimizer(tmp_path):
    """best/last_stage.weights.h5 leave Adam's moments out (they live only in the stage's backup), and load into
    a compiled, trained model without touching its optimizer and without Keras's "Skipping variable loading" warning.
    Guards the undocumented `objects_to_skip` keyword lib.train relies on."""
    model = trained_model(1)
    weights_only, with_optimizer = tmp_path / "best.weights.h5", tmp_path / "full.weights.h5"
    save_weights_atomic(model, weights_only)
    model.save_weights(with_optimizer)
    assert "optimizer" in saved_objects(with_optimizer)
    assert "optimizer" not in saved_objects(weights_only) and "layers" in saved_objects(weights_only)
    assert weights_only.stat().st_size < with_optimizer.stat().st_size
    for path in (weights_only, with_optimizer):  # a checkpoint written before weights-only files, too
        other = trained_model(2)
        optimizer_state = values(other.optimizer.variables)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load_weights_without_optimizer(other, path)
        assert not [w for w in caught if "optimizer" in str(w.message).lower()]
        assert all(np.array_equal(a, b) for a, b in zip(values(other.weights), values(model.weights)))
        assert all(np.array_equal(a, b) for a, b in zip(values(other.optimizer.variables), optimizer_state))


class Killed(Exception):
    """Stands in for a SIGKILL right after an epoch's backup was written."""


def train_ema_run(tiny_demo, run_dir, monkeypatch, kill_after_epoch=None):
    """test_cnn through two stages, the second with CutMix/MixUp and EMA (a low momentum, so the average differs
    from the raw weights within a few steps); optionally "killed" once `kill_after_epoch` is backed up. Returns the
    model and, when killed, its raw weights and EMA slots at that moment."""
    from lib import data, train
    from lib.models import build_model
    from lib.pipeline import ImageSequence

    state = {}

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == kill_after_epoch:
                state["raw"] = values(self.model.trainable_variables)
                state["ema"] = values(self.model.optimizer._model_variables_moving_average)
                raise Killed

    plain = train.stage_callbacks

    def with_kill(*args):  # the kill comes after every callback of the epoch, the backup included
        callbacks, *rest = plain(*args)
        return [*callbacks, Kill()], *rest

    monkeypatch.setattr(train, "stage_callbacks", with_kill)
    keras.utils.set_random_seed(0)
    model = build_model("test_cnn", weights=None, dense_units=8, dropout=0.3)
    stages = [
        {"name": "head", "trainable": "head", "epochs": 1, "image_size": 32},
        {"name": "mixed", "trainable": "all", "epochs": 3, "image_size": 32, "lr": 3e-3, "ema": 0.5,
         "mix": {"cutmix": 1.0, "mixup": 0.4, "p": 1.0}},
    ]  # fmt: skip
    frame, val = data.holdout_split(data.load_train(tiny_demo), 0.25, 0)
    sequence = lambda f, size, batch, augment, shuffle, **mix: ImageSequence(
        f["path"].tolist(), f["Category"].to_numpy(), image_size=size, batch_size=batch, augment=augment,
        shuffle=shuffle, seed=0, workers=1, **mix)  # fmt: skip
    settings = TrainSettings(batch_size=8, augment="light", seed=0, jit_compile=False, verbose=0, label_smoothing=0.1)
    with contextlib.suppress(Killed):
        train.train_stages(model, stages, frame, val, RunRecord(run_dir), make_sequence=sequence, settings=settings)
    return model, state


@pytest.mark.slow
def test_an_ema_stage_backs_up_raw_weights_and_the_average_and_resumes_to_the_same_weights(tiny_demo, tmp_path,
                                                                                        monkeypatch):  # fmt: skip
    """Validation and the best checkpoint see the EMA weights, the backup the raw ones with the optimizer's EMA
    slots: killed after stage 2's first epoch and resumed, the run ends with exactly the weights of one never
    killed (mixing on too), and the history says which weights each epoch's validation evaluated."""
    from lib.models import build_model, set_trainable
    from lib.schedules import make_optimizer

    reference, _ = train_ema_run(tiny_demo, tmp_path / "whole", monkeypatch)
    _, killed = train_ema_run(tiny_demo, tmp_path / "run", monkeypatch, kill_after_epoch=1)
    assert not all(np.array_equal(a, b) for a, b in zip(killed["raw"], killed["ema"]))
    backup = tmp_path / "run" / "backup_stage_2" / "latest.weights.h5"
    restored = build_model("test_cnn", weights=None, dense_units=8, dropout=0.3)
    set_trainable(restored, "all")
    restored.compile(optimizer=make_optimizer("adam", 1e-3, use_ema=True, ema_momentum=0.5), loss="mse")
    restored.optimizer.build(restored.trainable_variables)
    restored.load_weights(backup)
    assert all(np.array_equal(a, b) for a, b in zip(values(restored.trainable_variables), killed["raw"]))
    ema = values(restored.optimizer._model_variables_moving_average)
    assert all(np.array_equal(a, b) for a, b in zip(ema, killed["ema"]))
    resumed, _ = train_ema_run(tiny_demo, tmp_path / "run", monkeypatch)
    assert all(np.array_equal(a, b) for a, b in zip(values(resumed.weights), values(reference.weights)))
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2, 3] and history["val_on_ema"].tolist() == [0, 1, 1, 1]
