"""The model notebooks' steps on a small real model: K-fold with out-of-fold probabilities that 05 can blend."""

import json

import numpy as np
import pandas as pd
import pytest

from lib import experiment
from lib.distribute import Device, DistributionPlan
from lib.ensemble import combine_runs
from lib.runs import load_probs

ONE_CPU = DistributionPlan("none", "tensorflow", (Device("cpu", "CPU", "/device:CPU:0"),))


def params(tiny_demo, run_dir, **overrides):
    return {
        **dict(
            data_dir=str(tiny_demo),
            profile="tiny",
            run_name="kfold",
            run_dir=str(run_dir),
            seed=3,
            val_fraction=0.25,
            folds=2,
            max_bad_fraction=0.01,
            backbone="test_cnn",
            weights=None,
            pooling="avg",
            head_batchnorm=True,
            dropout=0.0,
            dense_units=8,
            activation="relu",
            l2=0.0,
            precision="auto",
            jit_compile=False,
            batch_size=8,
            augment="none",
            keras_augment="none",
            workers=1,
            stages=[{"name": "head", "trainable": "head", "epochs": 1, "image_size": 32}],
            label_smoothing=0.0,
            early_stopping_patience=2,
            time_budget_minutes=0,
            verbose=0,
            predict_image_size=0,
            tta=["identity", "hflip"],
            tta_passes=2,
        ),
        **overrides,
    }


@pytest.mark.slow
def test_kfold_gives_out_of_fold_probabilities_for_every_train_row(tiny_demo, tmp_path, monkeypatch):
    monkeypatch.setenv("CARS_OUTPUT_ROOT", str(tmp_path))
    runs = {}
    for name in ("a", "b"):
        ctx = experiment.setup(params(tiny_demo, tmp_path / name, run_name=name))
        evaluation = experiment.cross_validate(ctx)
        runs[name] = tmp_path / name
        assert list(evaluation.table.index) == [0, 1, "out-of-fold"]
        val = load_probs(runs[name], "val")
        assert sorted(val["Id"]) == sorted(ctx.scan.train["Id"])  # every train row predicted once, out of fold
        assert np.allclose(val.filter(like="prob_").sum(axis=1), 1, atol=1e-4)
        assert len(load_probs(runs[name], "test")) == len(ctx.scan.test)
        assert (runs[name] / "fold_0" / "metrics.json").exists() and (
            runs[name] / "fold_1" / "best.weights.h5"
        ).exists()
        metrics = json.loads((runs[name] / "metrics.json").read_text())
        assert metrics["folds"] == 2 and len(metrics["fold_val_accuracy"]) == 2
    fitted = combine_runs(runs)  # 05 fits its weights on all out-of-fold rows
    assert len(fitted.val_labels) == len(pd.read_csv(tiny_demo / "train.csv"))
    assert abs(fitted.weights.sum() - 1) < 1e-9


def test_models_on_different_splits_are_refused(tmp_path):
    from lib.ensemble import EnsembleError
    from lib.runs import RunRecord

    probs = np.full((2, 10), 0.1)
    for name, ids in (("a", ["1.jpg", "2.jpg"]), ("b", ["1.jpg", "3.jpg"])):
        record = RunRecord(tmp_path / name)
        record.save_probs("val", ids, probs, [0, 1])
        record.save_probs("test", ["9.jpg", "8.jpg"], probs)
    with pytest.raises(EnsembleError, match="same data_dir, seed, val_fraction and folds"):
        combine_runs({"a": tmp_path / "a", "b": tmp_path / "b"})


def test_planned_lr_has_one_row_per_step_of_every_stage():
    stages = [
        {"name": "head", "trainable": "head", "epochs": 1, "image_size": 32, "lr": 0.01},
        {"name": "all", "trainable": "all", "epochs": 2, "image_size": 48, "lr": 0.001},
    ]
    ctx = experiment.Context(
        params={"stages": stages, "batch_size": 4},
        run=None,
        data_dir=None,
        scan=None,
        train=pd.DataFrame({"Id": range(10)}),
        val=None,
        precision="float32",
        distribution=ONE_CPU,
        time_budget_minutes=None,
    )
    plan = experiment.planned_lr(ctx)  # 10 rows at batch 4: 3 steps per epoch
    assert list(plan["step"]) == list(range(9))
    assert plan["stage"].value_counts().to_dict() == {"1: head": 3, "2: all": 6}
    assert (plan["lr"] > 0).all() and plan["lr"].max() <= 0.01 + 1e-12


def test_prediction_uses_the_size_training_reached(tmp_path):
    """A budget stop after stage 1 (72 px) predicts at 72 px, not at stage 2's 96 px it never trained at; the best
    weights are predicted at the size of the epoch they come from."""
    from lib.runs import RunRecord, write_json

    stages = [{"name": "small", "epochs": 3, "image_size": 72}, {"name": "large", "epochs": 1, "image_size": 96}]
    run = RunRecord(tmp_path / "run")
    ctx = experiment.Context(
        params={"stages": stages, "batch_size": 4, "predict_image_size": 0},
        run=run,
        data_dir=None,
        scan=None,
        train=pd.DataFrame({"Id": range(10)}),
        val=None,
        precision="float32",
        distribution=ONE_CPU,
        time_budget_minutes=None,
    )
    assert experiment.prediction_size(ctx) == 96  # nothing trained yet: the plan's last stage
    run.update_metrics(stages=[{"stage": 1, "image_size": 72, "epochs_run": 2, "stopped_by_budget": True}])
    assert experiment.prediction_size(ctx) == 72
    # Stage 2 trained an epoch at 96 px, but the best weights are stage 1's last epoch: they are predicted at 72 px.
    history = pd.DataFrame({"epoch": [0, 1, 2], "image_size": [72, 72, 96], "val_accuracy": [0.5, 0.9, 0.8]})
    history.to_csv(run.path("history.csv"), index=False)
    write_json(run.path("best.json"), {"epoch": 2, "val_accuracy": 0.9})
    assert experiment.prediction_size(ctx) == 72
    write_json(run.path("best.json"), {"epoch": 3, "val_accuracy": 0.95})
    assert experiment.prediction_size(ctx) == 96
    ctx.params["predict_image_size"] = 128
    assert experiment.prediction_size(ctx) == 128


def run_folder_context(run_dir, folds=0, stages=2):
    from lib.runs import RunRecord

    params = {"folds": folds, "stages": [{"epochs": 1}] * stages}
    return experiment.Context(params, RunRecord(run_dir), run_dir, None, None, None, "float32", ONE_CPU, None)


def finish_stages(folder, stages):
    from lib.runs import RunRecord, write_json

    run = RunRecord(folder)
    for k in range(1, stages + 1):
        write_json(run.path(f"stage_{k}.json"), {"stage": k})
    run.path("last_stage.weights.h5").write_bytes(b"")


def test_lr_range_test_is_skipped_once_every_stage_has_finished(tmp_path, capsys):
    ctx = run_folder_context(tmp_path / "run")
    finish_stages(ctx.run.dir, 1)
    assert not experiment.training_finished(ctx)  # stage 2 still to train
    finish_stages(ctx.run.dir, 2)
    assert experiment.training_finished(ctx)
    # model=None: a test that ran would fail on it, so None back means it was skipped
    assert experiment.find_lr(ctx, None, steps=100) is None
    assert capsys.readouterr().out == f"LR range test skipped: every stage has already finished in {ctx.run.dir}.\n"
    assert experiment.find_lr(ctx, None, steps=0) is None and capsys.readouterr().out == ""


def test_under_kfold_every_fold_must_have_finished(tmp_path):
    ctx = run_folder_context(tmp_path / "run", folds=3)
    finish_stages(ctx.run.dir, 2)  # the top folder's markers do not count under K-fold
    for fold in (0, 1):
        finish_stages(ctx.run.dir / f"fold_{fold}", 2)
    assert not experiment.training_finished(ctx)
    finish_stages(ctx.run.dir / "fold_2", 2)
    assert experiment.training_finished(ctx)


@pytest.mark.slow
def test_lr_range_test_runs_while_a_stage_is_left(tiny_demo, tmp_path, monkeypatch):
    monkeypatch.setenv("CARS_OUTPUT_ROOT", str(tmp_path))
    ctx = experiment.setup(params(tiny_demo, tmp_path / "run", folds=0))
    found = experiment.find_lr(ctx, experiment.build(ctx), steps=5)
    assert len(found.history) >= 2 and ctx.run.metrics()["lr_find_suggested"] == found.suggested_lr


def test_the_plan_table_shows_each_stage_before_training(tiny_demo, tmp_path, monkeypatch):
    """What 03 and 04 show before training: one row per stage, the weights each trains counted on the model."""
    from lib.models import count_params

    monkeypatch.setenv("CARS_OUTPUT_ROOT", str(tmp_path))
    stages = [
        {"name": "head", "trainable": "head", "epochs": 2, "image_size": 32},
        {"name": "all", "trainable": "all", "epochs": 1, "image_size": 48, "optimizer": "adamw", "lr": 1e-4,
         "weight_decay": 1e-5, "schedule": "cosine", "batch_size": 4},
    ]  # fmt: skip
    ctx = experiment.setup(params(tiny_demo, tmp_path / "plan", folds=0, stages=stages))
    model = experiment.build(ctx)
    table = experiment.plan_table(ctx, model)
    assert list(table.index) == [1, 2] and list(table["name"]) == ["head", "all"]
    assert list(table["image size"]) == [32, 48] and list(table["epochs"]) == [2, 1]
    head = count_params(model.trainable_weights)  # left as stage 1 trains it
    total = count_params(model.weights)
    assert table.loc[1, "trainable weights"] == f"{head:,} of {total:,}"
    all_trainable = int(table.loc[2, "trainable weights"].split(" of ")[0].replace(",", ""))
    assert head < all_trainable < total  # frozen BatchNorm statistics stay out even when all layers train
    assert table.loc[2, "optimizer"] == "adamw (weight decay 1e-05)" and table.loc[2, "schedule"] == "cosine"
    assert (table.loc[1, "batch"], table.loc[2, "batch"]) == ("batch 8", "batch 4")


def test_auto_prediction_size_tries_larger_sizes_and_keeps_the_most_accurate(tmp_path, monkeypatch):
    """predict_image_size="auto": the trained size, then 1.125x and 1.25x rounded to a multiple of 32 (each once,
    only when larger), one validation pass each without TTA; the most accurate kept, a tie going to the lower
    log-loss, then the smaller size."""
    import lib.predict
    from lib.runs import RunRecord

    assert [experiment.candidate_sizes(s) for s in (96, 384, 299, 64, 32)] == [
        [96, 128], [384, 448, 480], [299, 352, 384], [64, 96], [32]
    ]  # fmt: skip
    val = pd.DataFrame({"Id": list("abcd"), "path": ["x.jpg"] * 4, "Category": [0, 1, 2, 3]})
    params = {"seed": 0, "batch_size": 2, "workers": 1}
    ctx = experiment.Context(params, RunRecord(tmp_path), tmp_path, None, None, val, "float32", ONE_CPU, None)
    right = {96: 2, 128: 4, 160: 4}  # rows predicted right at each size
    sureness = {96: 0.5, 128: 0.6, 160: 0.9}
    passes = []

    def predict(model, sequence, tta=("identity",), passes_=None, progress=True):
        size = sequence.image_size
        passes.append((size, list(tta)))
        probs = np.full((4, 10), (1 - sureness[size]) / 9)
        predicted = [c if row < right[size] else (c + 1) % 10 for row, c in enumerate(val["Category"])]
        probs[np.arange(4), predicted] = sureness[size]
        return probs

    monkeypatch.setattr(lib.predict, "predict_probs", predict)
    size, probs, table = experiment.search_size(ctx, None, [96, 128, 160])
    assert size == 160 and probs.max() == pytest.approx(0.9)  # 128 and 160 tie on accuracy; 160 is surer
    assert passes == [(96, ["identity"]), (128, ["identity"]), (160, ["identity"])]
    assert table["kept"].tolist() == [False, False, True]
    assert table["validation accuracy"].tolist() == [0.5, 1.0, 1.0]
    sureness[160] = 0.6
    assert experiment.search_size(ctx, None, [96, 128, 160])[0] == 128  # a full tie: the smaller size
