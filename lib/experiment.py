"""The steps the model notebooks (03, 04) share: set up a run, build, train, evaluate with TTA, submit."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from lib import NUM_CLASSES, data, distribute, paths
from lib.choices import PREDICT_SIZE_AUTO, mixes
from lib.distribute import DistributionPlan
from lib.notebook import describe_data, open_run
from lib.runs import RunRecord, seed_everything, write_csv
from lib.runtime import Runtime, start_runtime

STARTED = time.time()  # the notebook's start: the time budget counts from here


@dataclass
class Context:
    """What one notebook run works with."""

    params: dict
    run: RunRecord
    data_dir: Path
    scan: data.DataScan
    train: pd.DataFrame
    val: pd.DataFrame
    precision: str
    distribution: DistributionPlan
    time_budget_minutes: float | None  # as used: "auto" resolved for the hardware found
    runtime: Runtime | None = None  # cores, threads, pipeline workers (lib.runtime.start_runtime)

    @property
    def replicas(self) -> int:
        return self.distribution.replicas

    def sequence(
        self,
        frame: pd.DataFrame,
        image_size: int,
        batch_size: int,  # the global batch: per-replica batch_size x replicas
        augment: str = "none",
        shuffle: bool = False,
        labelled: bool = True,
        mix: dict | None = None,
    ):
        from lib.pipeline import ImageSequence

        return ImageSequence(
            frame["path"].tolist(),
            frame["Category"].to_numpy() if labelled else None,
            image_size=image_size,
            batch_size=batch_size,
            augment=augment,
            shuffle=shuffle,
            seed=self.params["seed"],
            replicas=self.replicas,
            mix=mix,
            **({"workers": self.runtime.pipeline_workers} if self.runtime else {}),
        )


def setup(params: dict) -> Context:
    """Pick the backend (before Keras is imported) and the distribution over the devices found, seed, resolve and
    check the data, split it, and open the run folder (resuming if it matches)."""
    choice = params.get("distribute", "auto")
    distribute.choose_backend(choice)
    virtual_devices = int(os.environ.get("CARS_VIRTUAL_DEVICES") or 1)
    runtime = start_runtime(params.get("threads", "auto"), virtual_devices, params.get("workers") or 0)
    devices = distribute.visible_devices()
    plan = distribute.plan_distribution(choice, _backend(), devices, tf_tpu=distribute.tensorflow_tpu_build())
    distribute.check_gradient_accumulation(plan, params.get("gradient_accumulation_steps"))
    distribute.apply_distribution(plan)
    seed_everything(params["seed"])
    precision = distribute.apply_precision(params.get("precision", "auto"), list(plan.devices))
    budget = distribute.session_budget_minutes(
        params.get("time_budget_minutes", "auto"), plan.platform, paths.on_kaggle()
    )
    recorded = plan.record(params["batch_size"])
    params, data_dir, run = open_run(params, resumable=True, precision_policy=precision, distribution=recorded)
    run.update_metrics(**recorded, precision=precision, time_budget_minutes_used=budget, runtime=runtime.record())
    scan = data.scan(data_dir, max_bad_fraction=params.get("max_bad_fraction", 0.01))
    write_csv(run.path("problems.csv"), scan.problems)
    train, val = data.holdout_split(scan.train, params["val_fraction"], params["seed"])
    # Two lines: what this run computes with, then what it trains on and for how long.
    backend = distribute.describe_backend(devices)
    print(f"{plan.describe(params['batch_size'], precision)}; {runtime.describe()}; {backend}")
    split = (
        f"{params['folds']}-fold cross-validation"
        if params.get("folds", 0) >= 2
        else f"{len(train):,} train / {len(val):,} validation"
    )
    limit = f"{budget:g} minutes" if budget else "none"
    print(
        f"Data: {describe_data(data_dir)}; {scan.summary()}; split (seed {params['seed']}): {split}; time budget "
        f"{limit} ({params.get('time_budget_minutes', 'auto')!r}); run folder {run.dir}"
    )
    return Context(params, run, data_dir, scan, train, val, precision, plan, budget, runtime)


def _backend() -> str:
    import keras

    return keras.backend.backend()


def build(ctx: Context):
    from lib.models import build_from_params

    model = build_from_params(ctx.params)
    distribute.synchronize_batchnorm(model, ctx.distribution)
    return model


def pseudo_labelled(ctx: Context) -> pd.DataFrame | None:
    """The confident test rows 05 labelled (for a stage with "pseudo_labels": True), or None."""
    p = ctx.params
    if not any(stage.get("pseudo_labels") for stage in p["stages"]):
        return None
    source = Path(p.get("pseudo_labels_file") or paths.run_dir(p["profile"], "05_ensemble") / "pseudo_labels.csv")
    if not source.exists():
        return None
    rows = pd.read_csv(source, dtype={"Id": str})
    return rows[rows["Id"].isin(ctx.scan.test.loc[ctx.scan.test["readable"], "Id"])]


def train_settings(ctx: Context):
    """The notebook's training knobs, with the time budget (counted from the notebook's start) as a deadline."""
    from lib.train import TrainSettings, deadline_from

    p = ctx.params
    budget = ctx.time_budget_minutes
    deadline = deadline_from(budget - p.get("predict_reserve_minutes", 0), STARTED) if budget else None
    return TrainSettings.from_params(p, deadline=deadline, replicas=ctx.replicas)


def stage_plan(ctx: Context):
    """Per stage: batch size, rows, steps and LR schedule; the plan `train` follows (lib.train.plan_stages)."""
    from lib.train import plan_stages

    pseudo = pseudo_labelled(ctx) if ctx.scan is not None else None
    return plan_stages(ctx.params["stages"], len(ctx.train), train_settings(ctx), 0 if pseudo is None else len(pseudo))


def head_table(model) -> pd.DataFrame:
    """The model layer by layer, the backbone as one row (lib.models.head_table), for a notebook that must not
    import Keras before `setup` has picked the backend."""
    from lib.models import head_table

    return head_table(model)


def plan_table(ctx: Context, model) -> pd.DataFrame:
    """The stages training will run, one row each (lib.train.plan_table), with each stage's trainable weights
    counted on `model`; the model is left as the first stage trains it."""
    from lib.models import count_params, set_trainable
    from lib.train import plan_table

    plan = stage_plan(ctx)
    counts = [set_trainable(model, stage_plan.stage.trainable) for stage_plan in plan]
    set_trainable(model, plan[0].stage.trainable)
    return plan_table(plan, counts, count_params(model.weights))


def planned_lr(ctx: Context) -> pd.DataFrame:
    """The learning rate of every training step, stage by stage, from the plan training follows."""
    from lib.train import lr_per_step

    return lr_per_step(stage_plan(ctx))


def training_finished(ctx: Context) -> bool:
    """Whether the run folder (under K-fold, every fold's folder) already holds every stage as finished, so
    training will skip them all."""
    from lib.train import finished_stages

    folds = ctx.params.get("folds", 0)
    folders = [ctx.run.dir / f"fold_{fold}" for fold in range(folds)] if folds >= 2 else [ctx.run.dir]
    stages = len(ctx.params["stages"])
    return all(folder.is_dir() and finished_stages(RunRecord(folder), stages) == stages for folder in folders)


def find_lr(ctx: Context, model, steps: int):
    """The LR range test (lib.lr_find) on the first stage's set-up, recorded in metrics.json; None when `steps` is 0
    or when every stage has already finished (its suggestion could change nothing), saying so in one line."""
    if not steps:
        return None
    if training_finished(ctx):
        print(f"LR range test skipped: every stage has already finished in {ctx.run.dir}.")
        return None
    from lib.lr_find import lr_range_test
    from lib.models import set_trainable

    first = stage_plan(ctx)[0]  # the first stage as training will run it
    set_trainable(model, first.stage.trainable)
    sequence = ctx.sequence(ctx.train, first.stage.image_size, first.global_batch, first.augment, shuffle=True,
                            mix=first.stage.mix if mixes(first.stage) else None)  # fmt: skip
    found = lr_range_test(
        model,
        sequence,
        loss="categorical_crossentropy",
        steps=steps,
        min_lr=1e-6,
        max_lr=1.0,
        replicas=ctx.replicas,
    )
    print(f"Suggested learning rate for stage 1: {found.suggested_lr:.2e} (the stage uses {first.stage.lr:g})")
    ctx.run.update_metrics(lr_find_suggested=found.suggested_lr)
    return found


def train(ctx: Context, model):
    from lib.train import train_stages

    result = train_stages(
        model,
        ctx.params["stages"],
        ctx.train,
        ctx.val,
        ctx.run,
        make_sequence=ctx.sequence,
        settings=train_settings(ctx),
        pseudo_labelled=pseudo_labelled(ctx),
    )
    ctx.run.update_metrics(
        stopped_by_budget=result.stopped_by_budget,
        stages=result.stages,
        best_val_accuracy_during_training=result.best_val_accuracy,
    )
    return result


@dataclass
class Evaluation:
    val_probs: np.ndarray  # with TTA; out-of-fold under K-fold
    val_probs_plain: np.ndarray
    val_labels: np.ndarray
    test_probs: np.ndarray
    table: pd.DataFrame
    size_search: pd.DataFrame | None = None  # predict_image_size="auto": each size tried on validation


def prediction_size(ctx: Context) -> int:
    """A number given as `predict_image_size`, else the size the best weights (what is predicted) were trained at,
    else the size of the last stage that trained: when the time budget stops stage 2 after an epoch worse than
    stage 1's best, the stage-1 weights are predicted at stage 1's size, not at a size they never saw. "auto"
    starts its search from the same trained size."""
    from lib.runs import read_json
    from lib.train import read_history

    forced = ctx.params.get("predict_image_size")
    if forced and forced != PREDICT_SIZE_AUTO:
        return int(forced)
    best, history = ctx.run.path("best.json"), read_history(ctx.run)
    if best.exists() and "image_size" in history:
        best_epoch = history[history["epoch"] == read_json(best)["epoch"] - 1]  # best.json counts from 1
        if len(best_epoch):
            return int(best_epoch["image_size"].iloc[0])
    trained = [stage for stage in ctx.run.metrics().get("stages", []) if stage.get("epochs_run")]
    return int(trained[-1]["image_size"]) if trained else stage_plan(ctx)[-1].stage.image_size


SIZE_STEPS = (1.125, 1.25)  # predict_image_size="auto": the trained size, then these multiples of it (FixRes)


def candidate_sizes(trained: int) -> list[int]:
    """The sizes "auto" tries: the trained size itself, then 1.125x and 1.25x of it rounded to a multiple of 32
    (the strides of the backbones' last stages), each once and only when larger."""
    sizes = [int(trained)]
    for step in SIZE_STEPS:
        size = 32 * int(trained * step / 32 + 0.5)  # halves round up
        if size > sizes[-1]:
            sizes.append(size)
    return sizes


def search_size(ctx: Context, model, sizes: list[int]) -> tuple[int, np.ndarray, pd.DataFrame]:
    """Predict the validation split once per size (no TTA) and keep the most accurate size, the lower log-loss on
    a tie, then the smaller size. Returns (size, its validation probabilities, a table of every size)."""
    from lib.metrics import accuracy, log_loss
    from lib.predict import predict_probs

    labels = ctx.val["Category"].to_numpy()
    batch = ctx.params["batch_size"] * ctx.replicas
    rows, probs = [], {}
    for size in sizes:
        probs[size] = predict_probs(model, ctx.sequence(ctx.val, size, batch, labelled=False), ["identity"])
        rows.append({"image size": size, "validation accuracy": accuracy(probs[size], labels),
                     "validation log-loss": log_loss(probs[size], labels)})  # fmt: skip
    table = pd.DataFrame(rows).set_index("image size")
    best = min(sizes, key=lambda s: (-table.loc[s, "validation accuracy"], table.loc[s, "validation log-loss"], s))
    table["kept"] = table.index == best
    tried = ", ".join(
        f"{size} px {row['validation accuracy']:.4f} (log-loss {row['validation log-loss']:.4f})"
        for size, row in table.iterrows()
    )
    print(f"Prediction size: {best} px kept (trained at {sizes[0]} px); validation accuracy without TTA: {tried}")
    return best, probs[best], table


def evaluate(ctx: Context, model) -> Evaluation:
    """Validation accuracy without and with TTA, test probabilities with TTA; all saved in the run folder. With
    predict_image_size="auto", the size comes from a search on the validation split first (one pass per size)."""
    from lib.metrics import accuracy
    from lib.predict import apply_fallback, class_prior, predict_probs

    p = ctx.params
    size, size_search = prediction_size(ctx), None
    batch = p["batch_size"] * ctx.replicas
    labels = ctx.val["Category"].to_numpy()
    if p.get("predict_image_size") == PREDICT_SIZE_AUTO:
        size, plain, size_search = search_size(ctx, model, candidate_sizes(size))
    val_seq = ctx.sequence(ctx.val, size, batch, labelled=False)
    if size_search is None:
        plain = predict_probs(model, val_seq, ["identity"])
    with_tta = predict_probs(model, val_seq, p["tta"], p["tta_passes"])
    test = ctx.scan.test
    test_probs = predict_probs(model, ctx.sequence(test, size, batch, labelled=False), p["tta"], p["tta_passes"])
    fallback = int((~test["readable"]).sum())
    if fallback:
        print(f"{fallback} unreadable test image(s) predicted with the training prior; listed in problems.csv")
    test_probs = apply_fallback(test_probs, test["readable"].to_numpy(), class_prior(ctx.scan.train["Category"]))
    ctx.run.save_probs("val", ctx.val["Id"], with_tta, labels)
    ctx.run.save_probs("test", test["Id"], test_probs)
    table = pd.DataFrame(
        {"validation accuracy": [accuracy(plain, labels), accuracy(with_tta, labels)]},
        index=["no TTA", f"TTA ({len(p['tta'])} transforms, {p['tta_passes'] or len(p['tta'])} passes)"],
    )
    searched = {}
    if size_search is not None:
        searched["size_search"] = [
            {"image_size": int(size_tried), "val_accuracy": float(row["validation accuracy"]),
             "val_log_loss": float(row["validation log-loss"])}
            for size_tried, row in size_search.iterrows()
        ]  # fmt: skip
    ctx.run.update_metrics(
        model=p["run_name"],
        backbone=p["backbone"],
        profile=p["profile"],
        val_accuracy_no_tta=float(table.iloc[0, 0]),
        val_accuracy=float(table.iloc[1, 0]),
        image_size=size,
        test_rows=len(test),
        test_fallback_rows=fallback,
        **searched,
    )
    return Evaluation(with_tta, plain, labels, test_probs, table, size_search)


def fit_and_evaluate(ctx: Context, model):
    """Holdout: train `model` through its stages, then evaluate it. K-fold (folds >= 2): cross_validate, which
    builds one model per fold. Returns (TrainResult, or None under K-fold; Evaluation)."""
    if ctx.params.get("folds", 0) >= 2:
        return None, cross_validate(ctx)
    result = train(ctx, model)
    return result, evaluate(ctx, model)


def cross_validate(ctx: Context) -> Evaluation:
    """K-fold: one model per fold (run folders fold_<k>/), each predicting its held-out fold and the test set.

    The run folder gets out-of-fold probabilities for every train row (probs_val.csv, so 05 fits its weights on
    all of them when every model used the same folds and seed) and the folds' mean test probabilities.
    """
    from lib.metrics import accuracy

    p, k = ctx.params, ctx.params["folds"]
    folds = data.stratified_folds(ctx.scan.train, k, p["seed"])
    labels = ctx.scan.train["Category"].to_numpy()
    oof, oof_plain = np.zeros((len(labels), NUM_CLASSES)), np.zeros((len(labels), NUM_CLASSES))
    test_probs, rows = 0.0, []
    for fold in range(k):
        print(f"== Fold {fold + 1}/{k} ==")
        held_out = folds == fold
        fold_ctx = replace(
            ctx,
            run=RunRecord(ctx.run.dir / f"fold_{fold}"),
            train=ctx.scan.train[~held_out].reset_index(drop=True),
            val=ctx.scan.train[held_out].reset_index(drop=True),
        )
        fold_ctx.run.start({**p, "fold": fold})
        seed_everything(p["seed"] + fold)
        model = build(fold_ctx)
        train(fold_ctx, model)
        result = evaluate(fold_ctx, model)
        oof[held_out], oof_plain[held_out] = result.val_probs, result.val_probs_plain
        test_probs = test_probs + result.test_probs / k
        rows.append(
            {
                "fold": fold,
                "rows": int(held_out.sum()),
                "no TTA": result.table.iloc[0, 0],
                "TTA": result.table.iloc[1, 0],
            }
        )
    ctx.run.save_probs("val", ctx.scan.train["Id"], oof, labels)
    ctx.run.save_probs("test", ctx.scan.test["Id"], test_probs)
    table = pd.DataFrame(rows).set_index("fold")
    table.loc["out-of-fold"] = [len(labels), accuracy(oof_plain, labels), accuracy(oof, labels)]
    ctx.run.update_metrics(
        model=p["run_name"],
        backbone=p["backbone"],
        profile=p["profile"],
        folds=k,
        val_accuracy_no_tta=float(table.loc["out-of-fold", "no TTA"]),
        val_accuracy=float(table.loc["out-of-fold", "TTA"]),
        fold_val_accuracy=table["TTA"].iloc[:-1].tolist(),
        test_rows=len(ctx.scan.test),
    )
    return Evaluation(oof, oof_plain, labels, test_probs, table)


def key_metrics(ctx: Context) -> pd.DataFrame:
    """The run's headline numbers from metrics.json, one row each (what a model notebook ends on)."""
    metrics = ctx.run.metrics()
    rows = {
        "validation accuracy, no TTA": metrics.get("val_accuracy_no_tta"),
        "validation accuracy, with TTA": metrics.get("val_accuracy"),
        "best validation accuracy while training": metrics.get("best_val_accuracy_during_training"),
        "stages run": f"{len(metrics['stages'])} of {len(ctx.params['stages'])}" if "stages" in metrics else None,
        "stopped by the time budget": metrics.get("stopped_by_budget"),
        "image size for prediction (px)": metrics.get("image_size"),
        "LR range test suggestion": f"{metrics['lr_find_suggested']:.1e}" if "lr_find_suggested" in metrics else None,
    }
    return pd.Series(rows, name=ctx.params["run_name"], dtype=object).dropna().to_frame()


def submit(ctx: Context, test_probs: np.ndarray, name: str) -> Path:
    """Write submissions/<name>.csv (validated, atomic); on Kaggle also /kaggle/working/submission.csv."""
    from lib.submission import read_sample_ids, write_named_submission

    sample_ids = read_sample_ids(ctx.data_dir / "sample-submission.csv")
    out = write_named_submission(ctx.scan.test["Id"], np.asarray(test_probs).argmax(axis=1), name, sample_ids)
    print(f"Submission written: {out} ({len(sample_ids):,} rows)")
    return out
