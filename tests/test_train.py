"""Staged training: stage parsing, the time budget (fake clock), resume after a finished or killed stage."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from lib import NUM_CLASSES
from lib.callbacks import TimeBudget
from lib.runs import RunRecord, read_json, write_json
from lib.train import (
    STAGE_COLUMNS,
    TrainResult,
    TrainSettings,
    carry_on_weights,
    class_weights,
    finished_stages,
    lr_per_step,
    parse_stages,
    plan_stages,
)


class FakeModel:
    stop_training = False


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def run_epochs(budget, durations):
    """Feed epoch durations to the callback until it stops training; return the epochs run."""
    budget.set_model(FakeModel())
    for epoch, seconds in enumerate(durations):
        budget.on_epoch_begin(epoch)
        budget.clock.now += seconds
        budget.on_epoch_end(epoch)
        if budget.model.stop_training:
            return epoch + 1
    return len(durations)


def test_budget_stops_before_the_epoch_that_would_overrun():
    clock = FakeClock()
    # First epoch 100 s (tracing), then 30 s each; deadline at 235 s. After epoch 1 (t=100) only the first
    # epoch is known: 100 + 100 <= 235, go on. After epoch 4 (t=190) the next ends at 220, fine; after
    # epoch 5 (t=220) it would end at 250 > 235: stop there.
    budget = TimeBudget(deadline=235, clock=clock)
    assert run_epochs(budget, [100, 30, 30, 30, 30, 30, 30]) == 5
    assert budget.stopped and clock.now == 220


def test_the_last_epoch_ends_the_stage_finished():
    """Past the deadline after the fit's last epoch: nothing is left to stop, so the stage is not left unfinished
    (no backup kept), but the next stage must not start."""
    clock = FakeClock()
    budget = TimeBudget(deadline=150, clock=clock)
    budget.set_params({"epochs": 3})  # global epochs: this stage runs epochs 1 and 2
    budget.set_model(FakeModel())
    for epoch in (1, 2):
        budget.on_epoch_begin(epoch)
        clock.now += 30 if epoch == 1 else 100
        budget.on_epoch_end(epoch)
    assert budget.out_of_time and not budget.stopped and not budget.model.stop_training


def test_no_deadline_never_stops():
    budget = TimeBudget(deadline=None, clock=FakeClock())
    assert run_epochs(budget, [100, 100, 100]) == 3 and not budget.stopped


def test_first_epoch_alone_is_the_estimate():
    clock = FakeClock()
    assert run_epochs(TimeBudget(deadline=150, clock=clock), [100, 10]) == 1  # 100 + 100 > 150


def test_stage_parsing():
    stages = parse_stages([{"trainable": "head", "epochs": 2}, {"name": "all", "trainable": "all", "lr": 1e-4}])
    assert [s.name for s in stages] == ["stage1", "all"] and stages[1].lr == 1e-4
    with pytest.raises(ValueError, match="epoch"):
        parse_stages([{"epoch": 3}])
    with pytest.raises(ValueError, match="empty"):
        parse_stages([])


def test_lr_table_spans_all_stages():
    stages = [{"epochs": 2, "lr": 1e-3}, {"epochs": 1, "lr": 1e-4, "schedule": "cosine"}]
    table = lr_per_step(plan_stages(stages, train_rows=20, settings=TrainSettings(batch_size=4)))
    assert len(table) == 15 and table["step"].tolist() == list(range(15))
    assert np.allclose(table["lr"][:10], 1e-3) and table["lr"].iloc[10] == pytest.approx(1e-4)


def test_the_epoch_line_shows_the_metrics_and_history_csv_keeps_the_extras(tmp_path, capsys):
    import keras

    from lib.train import stage_callbacks

    plan = plan_stages([{"epochs": 2, "image_size": 8}], train_rows=16, settings=TrainSettings(batch_size=8))[0]
    settings = TrainSettings(batch_size=8, verbose=2)
    callbacks, _, _ = stage_callbacks(plan, RunRecord(tmp_path / "run"), None, settings, None)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(NUM_CLASSES, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = np.ones((16, 4), "float32"), np.arange(16) % NUM_CLASSES
    capsys.readouterr()
    model.fit(x, y, validation_data=(x, y), epochs=2, batch_size=8, callbacks=callbacks, verbose=2)
    printed = capsys.readouterr().out
    assert "val_accuracy:" in printed
    assert not [key for key in ("val_on_ema:", "image_size:", "seconds:") if key in printed]
    assert printed.count("Epoch ") == 2
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert {"stage", "image_size", "lr", "seconds", "val_on_ema"} <= set(history.columns) and len(history) == 2


def test_balanced_class_weights():
    weights = class_weights([0, 0, 0, 1] + list(range(2, NUM_CLASSES)), "balanced")
    assert weights[0] < weights[1] and weights[1] == weights[2]
    assert class_weights([0, 1], None) is None


def test_stage_table_has_one_column_order_fresh_or_resumed(tmp_path):
    fresh = {column: index for index, column in enumerate(STAGE_COLUMNS)}  # as train_stages builds a record
    fresh.update(stage=2, name="all")
    write_json(tmp_path / "stage_1.json", {**fresh, "stage": 1, "name": "head"})
    resumed = read_json(tmp_path / "stage_1.json")  # written with sorted keys
    assert list(resumed) != list(STAGE_COLUMNS)
    expected = list(STAGE_COLUMNS[1:])
    assert list(TrainResult(pd.DataFrame(), [fresh], None, False).stage_table().columns) == expected
    table = TrainResult(pd.DataFrame(), [resumed, fresh], None, False).stage_table()
    assert (
        list(table.columns) == expected and table.index.tolist() == [1, 2] and table["name"].tolist() == ["head", "all"]
    )
    older = {key: value for key, value in resumed.items() if key != "jit_compile"}  # a marker from before that key
    assert list(TrainResult(pd.DataFrame(), [older], None, False).stage_table().columns) == expected


def test_finished_stages_needs_the_markers_in_order_and_weights_to_carry_on(tmp_path):
    run = RunRecord(tmp_path / "run")
    for k in (1, 3):
        write_json(run.path(f"stage_{k}.json"), {"stage": k})
    assert finished_stages(run, 3) == 0  # no weights: nothing to resume from
    run.path("last_stage.weights.h5").write_bytes(b"")
    assert finished_stages(run, 3) == 1  # stage 2 is missing, so stage 3's marker does not count
    write_json(run.path("stage_2.json"), {"stage": 2})
    assert finished_stages(run, 3) == 3 and finished_stages(run, 2) == 2
    # After the final stage only best.weights.h5 is kept: still finished, and a stage appended later starts from it.
    run.path("last_stage.weights.h5").unlink()
    run.path("best.weights.h5").write_bytes(b"")
    assert finished_stages(run, 3) == 3 and finished_stages(run, 4) == 3
    assert carry_on_weights(run) == run.path("best.weights.h5")


# ---------------------------------------------------------------- real training, small

TRAIN_SCRIPT = """
import sys, json, time
import numpy as np
from lib import data
from lib.models import build_model
from lib.pipeline import ImageSequence
from lib.runs import RunRecord, seed_everything
from lib.train import TrainSettings, train_stages

demo, run_dir, stages, budget = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
seed_everything(0)
train, val = data.holdout_split(data.load_train(demo), 0.25, 0)
model = build_model("test_cnn", weights=None, dense_units=8, dropout=0.3)
seq = lambda f, size, batch, augment, shuffle, **mix: ImageSequence(f["path"].tolist(), f["Category"].to_numpy(),
    image_size=size, batch_size=batch, augment=augment, shuffle=shuffle, seed=0, workers=2, **mix)
# Augmentation, CutMix/MixUp and dropout on: a resumed run must draw exactly what the uninterrupted one drew.
settings = TrainSettings(batch_size=8, augment="light", seed=0, jit_compile=False, verbose=0,
                         deadline=time.time() + budget if budget else None)
result = train_stages(model, stages, train, val, RunRecord(run_dir), make_sequence=seq, settings=settings)
probs = model.predict(seq(val, stages[-1]["image_size"], 8, "none", False), verbose=0)
np.save(run_dir + "/val_probs.npy", probs)
print(json.dumps({"stopped_by_budget": result.stopped_by_budget, "epochs": len(result.history)}))
"""

STAGES = [
    {"name": "head", "trainable": "head", "epochs": 1, "image_size": 32},
    # CutMix/MixUp on every batch and EMA weights validated: the kill test's byte-identical resume covers both.
    {
        "name": "all",
        "trainable": "all",
        "epochs": 3,
        "image_size": 40,
        "lr": 1e-4,
        "ema": 0.9,
        "mix": {"cutmix": 1.0, "mixup": 0.2},
    },
]


def train_in_subprocess(demo, run_dir, stages=STAGES, budget=0.0, **popen):
    command = [sys.executable, "-c", TRAIN_SCRIPT, str(demo), str(run_dir), json.dumps(stages), str(budget)]
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "CUDA_VISIBLE_DEVICES": ""}
    if popen:
        return subprocess.Popen(command, env=env, **popen)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stdout


def h5_objects(path) -> set:
    import h5py

    with h5py.File(path, "r") as handle:
        return set(handle)


@pytest.fixture(scope="module")
def uninterrupted(tiny_demo, tmp_path_factory):
    """One training run through STAGES that nothing interrupts: the reference for the resume tests."""
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    train_in_subprocess(tiny_demo, run)
    return run


@pytest.mark.slow
def test_rerun_skips_finished_stages(tiny_demo, uninterrupted, tmp_path):
    run = shutil.copytree(uninterrupted, tmp_path / "run")
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2, 3] and history["stage"].tolist() == [1, 2, 2, 2]
    assert history["image_size"].tolist() == [32, 40, 40, 40]  # progressive resizing
    files = set(os.listdir(tmp_path / "run"))
    assert {"best.weights.h5", "stage_1.json", "stage_2.json"} <= files
    # Disk: no end-of-stage weights after the final stage, no backup once a stage ends, no optimizer in best.
    assert "last_stage.weights.h5" not in files and not [name for name in files if name.startswith("backup_stage")]
    assert "optimizer" not in h5_objects(run / "best.weights.h5")
    stages = [json.loads((tmp_path / "run" / f"stage_{k}.json").read_text()) for k in (1, 2)]
    assert stages[0]["trainable_params"] < stages[1]["trainable_params"]
    again, output = train_in_subprocess(tiny_demo, tmp_path / "run")
    assert "Stage 1 (head) already finished" in output and "Stage 2 (all) already finished" in output
    assert len(pd.read_csv(run / "history.csv")) == 4  # nothing trained twice
    assert (run / "val_probs.npy").read_bytes() == (uninterrupted / "val_probs.npy").read_bytes()


@pytest.mark.slow
def test_killed_mid_stage_resumes_to_the_same_bytes(tiny_demo, uninterrupted, tmp_path):
    """SIGKILL after the first epoch of stage 2 is backed up; the rerun continues at the next epoch and ends
    with exactly the probabilities of the run that was never interrupted (augmentation, CutMix/MixUp, dropout and
    EMA on)."""
    run = tmp_path / "run"
    process = train_in_subprocess(tiny_demo, run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = run / "history.csv"
    deadline = time.time() + 500

    def epochs_logged():
        try:
            return len(pd.read_csv(history))
        except (FileNotFoundError, pd.errors.EmptyDataError):
            return 0

    while time.time() < deadline and process.poll() is None:
        if epochs_logged() >= 2 and (run / "backup_stage_2" / "training_metadata.json").exists():
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # Stage 1's end carries over the weights alone; the optimizer's state is only in stage 2's backup.
    assert "optimizer" not in h5_objects(run / "last_stage.weights.h5")
    epochs_before = pd.read_csv(history)["epoch"].tolist()
    assert epochs_before[:2] == [0, 1] and len(epochs_before) < 4, "the kill came too late to test resuming"
    result, output = train_in_subprocess(tiny_demo, run)
    after = pd.read_csv(history)
    assert "Stage 1 (head) already finished" in output
    assert after["epoch"].tolist() == [0, 1, 2, 3]  # epoch 1 was not trained again
    assert json.loads((run / "stage_2.json").read_text())["epochs_run"] == 4 - len(epochs_before)
    assert (run / "best.weights.h5").exists() and not result["stopped_by_budget"]
    assert not (run / "backup_stage_2").exists() and not (run / "last_stage.weights.h5").exists()
    reference = pd.read_csv(uninterrupted / "history.csv")
    assert after[["loss", "val_loss", "val_accuracy"]].equals(reference[["loss", "val_loss", "val_accuracy"]])
    assert np.load(run / "val_probs.npy").tobytes() == np.load(uninterrupted / "val_probs.npy").tobytes()


@pytest.mark.slow
def test_budget_ends_training_and_is_recorded(tiny_demo, tmp_path):
    result, output = train_in_subprocess(tiny_demo, tmp_path / "run", budget=0.001)
    assert result["stopped_by_budget"] and result["epochs"] == 0
    assert "Time budget spent before stage 1" in output


def test_broken_backup_restarts_the_stage(tmp_path):
    """A kill during the first backup write leaves a broken file: the stage starts over instead of crashing."""
    import keras

    from lib.callbacks import StageBackup

    backup = tmp_path / "backup_stage_1"
    backup.mkdir()
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n half written")
    (backup / "training_metadata.json").write_text('{"epoch": 3')
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    callback = StageBackup(str(backup))
    callback.set_model(model)
    callback.on_train_begin()
    assert not backup.exists() and not model._initial_epoch


def test_a_budget_stop_keeps_the_backup_to_carry_on(tmp_path):
    """Stopped by the time budget, a stage is unfinished: its latest backup stays for the next run (without the
    older generation, which only guards against a kill mid-write); finished, the backup goes."""
    import keras

    from lib.callbacks import StageBackup

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    x, y = np.ones((4, 2)), np.ones((4, 1))
    for stopped in (True, False):
        budget = TimeBudget(deadline=None)
        budget.stopped = stopped
        backup = tmp_path / f"backup_{stopped}"
        model.fit(x, y, epochs=2, verbose=0, callbacks=[StageBackup(str(backup), budget)])
        if stopped:
            assert sorted(os.listdir(backup)) == ["latest.weights.h5", "training_metadata.json"]
            assert "optimizer" in h5_objects(backup / "latest.weights.h5")  # what an exact resume needs
        else:
            assert not backup.exists()


class StopBeforeFit(Exception):
    pass


def test_pseudo_label_stage_adds_the_confident_test_rows(tiny_demo, tmp_path):
    from lib import data
    from lib.models import build_model
    from lib.runs import RunRecord
    from lib.train import train_stages

    train, val = data.holdout_split(data.load_train(tiny_demo), 0.25, 0)
    pseudo = pd.DataFrame({"Id": ["a.jpg", "b.jpg"], "Category": [1, 2], "path": ["pa", "pb"]})
    seen = []

    def capture(frame, size, batch, augment, shuffle):
        seen.append(len(frame))
        raise StopBeforeFit

    model = build_model("test_cnn", weights=None, dense_units=4)
    stages = [{"name": "pseudo", "trainable": "head", "epochs": 1, "image_size": 32, "pseudo_labels": True}]
    with pytest.raises(StopBeforeFit):
        train_stages(
            model, stages, train, val, RunRecord(tmp_path / "a"), make_sequence=capture, pseudo_labelled=pseudo
        )
    assert seen == [len(train) + 2]
    with pytest.raises(ValueError, match="05_ensemble"):
        train_stages(model, stages, train, val, RunRecord(tmp_path / "b"), make_sequence=capture)


def test_appending_a_stage_keeps_the_run(tmp_path):
    from lib.runs import RunRecord

    first = {"stages": [{"epochs": 1}], "seed": 1}
    RunRecord(tmp_path / "run").start(first)
    (tmp_path / "run" / "stage_1.json").write_text("{}")
    RunRecord(tmp_path / "run").start({**first, "stages": [{"epochs": 1}, {"epochs": 2}]})
    assert (tmp_path / "run" / "stage_1.json").exists()
    RunRecord(tmp_path / "run").start({**first, "seed": 2})
    assert not (tmp_path / "run" / "stage_1.json").exists()
    assert len(list(tmp_path.glob("run.old-*"))) == 1  # moved aside, not deleted


def test_label_smoothing_and_optimizer_reach_the_compiled_model(tiny_demo, tmp_path, monkeypatch):
    import keras

    from lib import data
    from lib.models import build_model
    from lib.runs import RunRecord
    from lib.train import train_stages

    train, val = data.holdout_split(data.load_train(tiny_demo), 0.25, 0)
    model = build_model("test_cnn", weights=None, dense_units=4)

    def stop(*args, **kwargs):
        raise StopBeforeFit

    monkeypatch.setattr(model, "fit", stop)
    stages = [
        {
            "name": "s",
            "trainable": "head",
            "epochs": 2,
            "image_size": 32,
            "optimizer": "sgd",
            "lr": 0.1,
            "schedule": "cyclic",
            "weight_decay": 1e-4,
        }
    ]
    with pytest.raises(StopBeforeFit):
        train_stages(
            model,
            stages,
            train,
            val,
            RunRecord(tmp_path / "run"),
            settings=TrainSettings(label_smoothing=0.2),
            make_sequence=lambda frame, *rest: list(range(len(frame) // 8 + 1)),
        )
    assert model.loss.get_config()["label_smoothing"] == 0.2
    assert isinstance(model.optimizer, keras.optimizers.SGD) and model.optimizer.nesterov
    assert type(model.optimizer._learning_rate).__name__ == "CyclicLR"
    assert model.optimizer.clipnorm is None and not model.optimizer.use_ema


def test_clipnorm_ema_and_mix_reach_the_optimizer_the_callbacks_and_the_pipeline(tiny_demo, tmp_path, monkeypatch):
    import keras

    from lib import data
    from lib.callbacks import BestWeights, RawWeightsForBackup, StageBackup
    from lib.models import build_model
    from lib.runs import RunRecord
    from lib.train import train_stages

    train, val = data.holdout_split(data.load_train(tiny_demo), 0.25, 0)
    model = build_model("test_cnn", weights=None, dense_units=4)
    seen = {}

    def stop(*args, callbacks, **kwargs):
        seen["callbacks"] = [type(callback) for callback in callbacks]
        raise StopBeforeFit

    def sequence(frame, *rest, **mix):
        seen.setdefault("mix", []).append(mix.get("mix"))
        return list(range(len(frame) // 8 + 1))

    monkeypatch.setattr(model, "fit", stop)
    mix = {"cutmix": 1.0, "mixup": 0.2, "p": 0.5}
    stages = [{"name": "s", "trainable": "head", "epochs": 1, "image_size": 32, "optimizer": "adamw",
               "clipnorm": 0.5, "ema": 0.99, "mix": mix}]  # fmt: skip
    with pytest.raises(StopBeforeFit):
        train_stages(model, stages, train, val, RunRecord(tmp_path / "run"), make_sequence=sequence)
    optimizer = model.optimizer
    assert (optimizer.clipnorm, optimizer.use_ema, optimizer.ema_momentum) == (0.5, True, 0.99)
    order = seen["callbacks"]
    swap, to_raw, backup = (order.index(kind) for kind in (keras.callbacks.SwapEMAWeights, RawWeightsForBackup,
                                                            StageBackup))  # fmt: skip
    assert swap < order.index(BestWeights) < to_raw == backup - 1
    assert seen["mix"] == [mix, None]  # the training sequence mixes, validation never
    with pytest.raises(ValueError, match="class_weight='balanced' does not combine with CutMix/MixUp"):
        train_stages(model, stages, train, val, RunRecord(tmp_path / "b"), make_sequence=sequence,
                     settings=TrainSettings(class_weight="balanced"))  # fmt: skip
