"""Staged training: freezing per stage, progressive resizing, schedules, checkpoints, time budget and resume."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from lib import NUM_CLASSES
from lib.callbacks import (
    BestWeights,
    CallbackState,
    EpochInfo,
    EpochRandomness,
    StageBackup,
    TimeBudget,
    ema_swaps,
    load_weights_without_optimizer,
    save_weights_atomic,
)
from lib.choices import Mix, Stage, check_class_weight_and_mix, mixes, parse_stages
from lib.models import set_trainable
from lib.runs import RunRecord, read_json, write_json
from lib.schedules import make_optimizer, make_schedule

OUT_OF_MEMORY_MARKERS = ("resourceexhausted", "resource_exhausted", "out of memory", "oom when allocating")


def explain_out_of_memory(error: BaseException, batch_size: int, image_size: int, replicas: int = 1) -> str | None:
    """A message naming the parameters to change when `error` is the backend running out of accelerator memory.
    `batch_size` is per replica: what each device holds."""
    text = f"{type(error).__name__}: {error}".lower()
    if not any(marker in text for marker in OUT_OF_MEMORY_MARKERS):
        return None
    half = max(1, batch_size // 2)
    where = f" per replica (global {batch_size * replicas} over {replicas} replicas)" if replicas > 1 else ""
    accumulate = "" if replicas == 1 else " (on the JAX backend; tf.distribute cannot accumulate)"
    return (
        f"Out of accelerator memory at batch_size={batch_size}{where}, image_size={image_size}. Lower `batch_size` "
        f"(or this stage's `batch_size` in `stages`) or the stage's `image_size`, and keep the effective batch "
        f"with `gradient_accumulation_steps`{accumulate} (e.g. batch_size={half}, gradient_accumulation_steps=2); "
        f"precision='mixed_float16' or 'mixed_bfloat16' also roughly halves activation memory."
    )


def class_weights(labels, mode: str | None) -> dict | None:
    """None, or 'balanced': weights inversely proportional to class frequency (mean weight 1)."""
    if not mode:
        return None
    if mode != "balanced":
        raise ValueError(f"class_weight={mode!r}; use None or 'balanced'")
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=NUM_CLASSES).astype(float)
    weights = counts.sum() / (NUM_CLASSES * np.maximum(counts, 1))
    return {k: float(w) for k, w in enumerate(weights)}


# The columns of a stage's record, in the order the stage table shows them. A skipped stage's record comes back
# from stage_<k>.json with its keys sorted, so the table fixes the order itself.
STAGE_COLUMNS = (
    "stage",
    "name",
    "trainable",
    "trainable_params",
    "image_size",
    "batch_size",
    "global_batch_size",
    "lr",
    "epochs_run",
    "epochs_planned",
    "best_val_accuracy",
    "stopped_by_budget",
    "pseudo_label_rows",
    "mix",
    "ema",
    "clipnorm",
    "jit_compile",
    "seconds",
)


@dataclass
class TrainResult:
    history: pd.DataFrame
    stages: list[dict]
    best_val_accuracy: float | None
    stopped_by_budget: bool

    def stage_table(self) -> pd.DataFrame:
        """One row per stage, the columns always in STAGE_COLUMNS order (a key an older record lacks stays empty)."""
        if not self.stages:
            return pd.DataFrame()
        return pd.DataFrame(self.stages, columns=list(STAGE_COLUMNS)).set_index("stage")


def finished_stages(run: RunRecord, n_stages: int) -> int:
    """How many stages, counted from the first, `run` holds as finished: a stage_<k>.json marker each, and weights
    to carry on from (markers without them leave nothing to resume from, so 0): last_stage.weights.h5, the weights
    the last finished stage ended with, or best.weights.h5, all that is kept once a run's final stage finished."""
    finished = 0
    while finished < n_stages and run.path(f"stage_{finished + 1}.json").exists():
        finished += 1
    return finished if carry_on_weights(run) else 0


def carry_on_weights(run: RunRecord) -> Path | None:
    """The weights the next stage starts from: the end of the last finished stage, or once the final stage of
    the run's plan has finished (its end is not kept: best.weights.h5 is what a rerun loads), the best weights.
    A stage appended to a finished run's `stages` therefore starts from the best weights."""
    for name in ("last_stage.weights.h5", "best.weights.h5"):
        if run.path(name).exists():
            return run.path(name)
    return None


def read_history(run: RunRecord) -> pd.DataFrame:
    path = run.path("history.csv")
    if not path.exists():
        return pd.DataFrame()
    # A run killed between two epoch-end callbacks can log an epoch twice; the later row wins.
    return pd.read_csv(path).drop_duplicates("epoch", keep="last").reset_index(drop=True)


@dataclass
class TrainSettings:
    """The notebook-level knobs of `train_stages` (a stage may override batch_size and augment)."""

    batch_size: int = 32
    augment: str = "medium"
    label_smoothing: float = 0.0
    class_weight: str | None = None
    early_stopping_patience: int = 3
    plateau_patience: int = 2
    jit_compile: bool | str = "auto"
    gradient_accumulation_steps: int | None = None
    seed: int = 0
    verbose: int | str = "auto"
    lr_scaling: str = "sqrt"  # how each stage's lr follows the global batch (lib.distribute.lr_scale)
    deadline: float | None = None  # wall-clock seconds (time.time()); None: no time budget
    replicas: int = 1  # devices each batch is split across; batch_size is per replica

    @classmethod
    def from_params(cls, params: dict, deadline: float | None = None, replicas: int = 1) -> TrainSettings:
        """The settings a notebook's parameters hold (missing ones keep their defaults)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"deadline", "replicas"}
        return cls(**{k: v for k, v in params.items() if k in known}, deadline=deadline, replicas=replicas)


@dataclass(frozen=True)
class StagePlan:
    """What one stage will do: its rows, batch size, steps and learning-rate schedule, and its first epoch.

    Under a distribution strategy `batch_size` is per replica and each step takes the global batch (batch_size x
    replicas); an epoch leaves out its last rows % replicas rows (lib.pipeline.ImageSequence), and the stage's
    `lr` is multiplied by `lr_factor` (lib.distribute.lr_scale).
    """

    index: int  # 0-based; stage k on screen and in file names is index + 1
    stage: Stage
    batch_size: int  # per replica
    augment: str
    train_rows: int
    first_epoch: int  # global epoch index (epochs count on across stages, as in history.csv)
    replicas: int = 1
    lr_factor: float = 1.0

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.replicas

    @property
    def lr(self) -> float:
        return self.stage.lr * self.lr_factor

    @property
    def steps_per_epoch(self) -> int:
        return -(-(self.train_rows - self.train_rows % self.replicas) // self.global_batch)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.stage.epochs

    def schedule(self):
        stage = self.stage
        return make_schedule(stage.schedule, self.lr, self.steps_per_epoch, stage.epochs, **stage.schedule_options)

    def describe_batch(self) -> str:
        if self.replicas == 1:
            return f"batch {self.batch_size}"
        return f"batch {self.batch_size} per replica x {self.replicas} = {self.global_batch}"


def plan_stages(
    stages: list[dict] | list[Stage], train_rows: int, settings: TrainSettings, pseudo_rows: int = 0
) -> list[StagePlan]:
    """The one plan that both training and the LR plot follow: per stage its batch size (the stage's own or the
    notebook's), rows (train, plus the pseudo-labelled test rows in a pseudo-label stage), steps and schedule,
    for `settings.replicas` replicas."""
    from lib.distribute import lr_scale

    stages = parse_stages(stages) if stages and isinstance(stages[0], dict) else list(stages)
    factor = lr_scale(settings.lr_scaling, settings.replicas)
    plans, first_epoch = [], 0
    for index, stage in enumerate(stages):
        rows = train_rows + (pseudo_rows if stage.pseudo_labels else 0)
        plans.append(
            StagePlan(index, stage, stage.batch_size or settings.batch_size, stage.augment or settings.augment, rows,
                      first_epoch, settings.replicas, factor)
        )  # fmt: skip
        first_epoch += stage.epochs
    return plans


def describe_mix(mix: dict | None) -> str:
    """A stage's mixing in a few words, e.g. "CutMix 1 / MixUp 0.2, p 0.5"; "none" when off."""
    if mix is None or not Mix(**mix).active:
        return "none"
    mix = Mix(**mix)
    kinds = [f"{name} {alpha:g}" for name, alpha in (("CutMix", mix.cutmix), ("MixUp", mix.mixup)) if alpha > 0]
    return " / ".join(kinds) + (f", p {mix.p:g}" if mix.p < 1 else "")


def describe_optimizer(stage: Stage) -> str:
    """e.g. "adamw (weight decay 1e-4, clipnorm 1)"."""
    extras = [f"weight decay {stage.weight_decay:g}"] if stage.weight_decay else []
    extras += [f"clipnorm {stage.clipnorm:g}"] if stage.clipnorm else []
    return stage.optimizer + (f" ({', '.join(extras)})" if extras else "")


def plan_table(plan: list[StagePlan], trainable_weights: list[int], total_weights: int) -> pd.DataFrame:
    """The stage plan as a table, one row per stage: what trains (and how many weights), on what, and how."""
    rows = [
        {
            "stage": stage_plan.index + 1,
            "name": stage_plan.stage.name,
            "epochs": stage_plan.stage.epochs,
            "image size": stage_plan.stage.image_size,
            "trainable": stage_plan.stage.trainable,
            "trainable weights": f"{count:,} of {total_weights:,}",
            "optimizer": describe_optimizer(stage_plan.stage),
            "lr": stage_plan.lr,
            "schedule": stage_plan.stage.schedule,
            "batch": stage_plan.describe_batch(),
            "augment": stage_plan.augment,
            "mix": describe_mix(stage_plan.stage.mix),
            "EMA": f"{stage_plan.stage.ema:g}" if stage_plan.stage.ema else "none",
            "pseudo-labels": stage_plan.stage.pseudo_labels,
        }
        for stage_plan, count in zip(plan, trainable_weights, strict=True)
    ]
    return pd.DataFrame(rows).set_index("stage")


def lr_per_step(plan: list[StagePlan]) -> pd.DataFrame:
    """The learning rate at every step of every stage (for the LR plot), from the plan training uses."""
    from lib.schedules import lr_curve

    frames, offset = [], 0
    for stage_plan in plan:
        total = stage_plan.total_steps
        frames.append(
            pd.DataFrame(
                {
                    "step": np.arange(total) + offset,
                    "lr": lr_curve(stage_plan.schedule(), total),
                    "stage": f"{stage_plan.index + 1}: {stage_plan.stage.name}",
                    "batch_size": stage_plan.batch_size,
                    "global_batch": stage_plan.global_batch,
                }
            )
        )
        offset += total
    return pd.concat(frames, ignore_index=True)


def restore_finished(model: keras.Model, run: RunRecord, plan: list[StagePlan]) -> int:
    """How many stages, from the first, `run` already finished; the weights the last of them ended with are loaded
    into `model` (a stage appended to a finished run starts from its best weights, and says so)."""
    finished = finished_stages(run, len(plan))
    if finished:
        start = carry_on_weights(run)
        if finished < len(plan) and start.name != "last_stage.weights.h5":
            print(f"Stage {finished + 1} starts from the best weights of stages 1-{finished} ({start.name}).")
        load_weights_without_optimizer(model, start)
    return finished


def stage_callbacks(
    stage_plan: StagePlan, run: RunRecord, train_seq, settings: TrainSettings, best: float | None
) -> tuple[list, BestWeights, TimeBudget]:
    """The callbacks of one stage's fit, in the order they must run, with its checkpoint and time budget."""
    index, stage = stage_plan.index, stage_plan.stage
    budget = TimeBudget(settings.deadline)
    checkpoint = BestWeights(run.path("best.weights.h5"), best)
    stateful = [keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=settings.early_stopping_patience)]
    if stage.schedule == "plateau":
        stateful.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.3, patience=settings.plateau_patience, verbose=1
            )
        )
    backup_dir = run.path(f"backup_stage_{index + 1}")
    # With EMA: validation and the checkpoint see the EMA weights, the backup the raw ones (lib.callbacks.ema_swaps).
    to_ema, to_raw = ema_swaps() if stage.ema else (None, None)
    callbacks = [
        EpochRandomness(train_seq, settings.seed),
        # Keras appends its own progress bar after every callback; placed here, it prints an epoch's line before
        # EpochInfo adds the stage, size, LR and seconds that history.csv keeps.
        *([keras.callbacks.ProgbarLogger()] if settings.verbose != 0 else []),
        EpochInfo(stage, index),
        *([to_ema] if to_ema else []),
        checkpoint,
        *stateful,
        CallbackState(stateful, backup_dir / "callback_state.json", stage_plan.first_epoch),
        keras.callbacks.CSVLogger(str(run.path("history.csv")), append=True),
        budget,
        *([to_raw] if to_raw else []),
        # Last, so an epoch is backed up only after its row, checkpoint and counters are written.
        StageBackup(str(backup_dir), budget),
    ]
    return callbacks, checkpoint, budget


def compile_and_fit(model: keras.Model, stage_plan: StagePlan, train_seq, val_seq, callbacks, settings, loss, weights):
    """Compile for the stage (its optimizer and LR schedule) and fit its epochs; running out of accelerator memory
    becomes a MemoryError that names the settings to change. Returns Keras's History."""
    stage = stage_plan.stage
    accumulation = settings.gradient_accumulation_steps
    optimizer_options = {"gradient_accumulation_steps": accumulation} if accumulation and accumulation > 1 else {}
    if stage.clipnorm:
        optimizer_options["clipnorm"] = stage.clipnorm
    if stage.ema:
        optimizer_options.update(use_ema=True, ema_momentum=stage.ema)
    model.compile(
        optimizer=make_optimizer(
            stage.optimizer, stage_plan.schedule(), weight_decay=stage.weight_decay, **optimizer_options
        ),
        loss=loss,
        metrics=["accuracy"],
        jit_compile=settings.jit_compile,
    )
    model._initial_epoch = None  # BackupAndRestore sets it per fit; don't let it leak into the next stage
    try:
        return model.fit(
            train_seq,
            validation_data=val_seq,
            epochs=stage_plan.first_epoch + stage.epochs,
            initial_epoch=stage_plan.first_epoch,
            # The sequence shuffles from (seed, epoch); Keras's own shuffle would reorder its batches with Python's
            # global `random`, whose state depends on everything the process did before.
            shuffle=False,
            class_weight=weights,
            callbacks=callbacks,
            verbose=settings.verbose,
        )
    except Exception as err:
        message = explain_out_of_memory(err, stage_plan.batch_size, stage.image_size, stage_plan.replicas)
        if message:
            raise MemoryError(message) from err
        raise


def stage_record(stage_plan: StagePlan, trainable: int, history, best, budget: TimeBudget, extra_rows: int,
                 jit_compile: bool, seconds: float) -> dict:  # fmt: skip
    """What stage_<k>.json and the stage table keep of one stage (the columns of STAGE_COLUMNS)."""
    stage = stage_plan.stage
    return {
        "stage": stage_plan.index + 1,
        "name": stage.name,
        "trainable": stage.trainable,
        "trainable_params": trainable,
        "image_size": stage.image_size,
        "batch_size": stage_plan.batch_size,
        "global_batch_size": stage_plan.global_batch,
        "lr": stage_plan.lr,
        "epochs_run": len(history.history.get("loss", [])),
        "epochs_planned": stage.epochs,
        "best_val_accuracy": best,
        "stopped_by_budget": budget.stopped,
        "pseudo_label_rows": extra_rows,
        "mix": describe_mix(stage.mix),
        "ema": stage.ema,
        "clipnorm": stage.clipnorm,
        "jit_compile": bool(jit_compile),
        "seconds": round(seconds, 1),
    }


def train_stages(
    model: keras.Model,
    stages: list[dict] | list[Stage],
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    run: RunRecord,
    *,
    make_sequence,
    settings: TrainSettings | None = None,
    pseudo_labelled: pd.DataFrame | None = None,
) -> TrainResult:
    """Train `model` through `stages`, resuming from what `run` already holds.

    A finished stage (stage_<k>.json) is skipped and the weights the last one ended with (last_stage.weights.h5,
    not kept after the final stage: see `carry_on_weights`) reloaded; an interrupted stage resumes from its last
    epoch (BackupAndRestore), with the same input order, augmentation, dropout masks and early-stopping counters
    the uninterrupted run would have had. The same weights carry from stage to stage; the model accepts any
    image size, so progressive resizing only changes the input pipeline. Ends with the best weights loaded.
    best.weights.h5 and last_stage.weights.h5 hold the weights alone; the optimizer's state is only in the
    backup of the stage in progress, which goes when it ends.
    `make_sequence(frame, image_size, batch_size, augment, shuffle)` builds the input pipeline; it gets the
    global batch (the per-replica batch_size x settings.replicas), and `mix=` (the stage's CutMix/MixUp) for a
    stage that mixes. A stage with `ema` validates, checkpoints and ends on the optimizer's moving average of the
    weights (use_ema), while its resume backup keeps the raw weights with the average (lib.callbacks.ema_swaps).
    Build and compile happen in the default distribution's scope (lib.distribute.apply_distribution), so every
    stage's recompile is in it too.
    """
    settings = settings or TrainSettings()
    pseudo_rows = 0 if pseudo_labelled is None else len(pseudo_labelled)
    plan = plan_stages(stages, len(train_df), settings, pseudo_rows)
    check_class_weight_and_mix(settings.class_weight, [dataclasses.asdict(p.stage) for p in plan], "train_stages")
    for stage_plan in plan:
        if stage_plan.stage.pseudo_labels and not pseudo_rows:
            raise ValueError(
                f"Stage {stage_plan.index + 1} ({stage_plan.stage.name}) trains on pseudo-labels, but none were "
                f"given: run 05_ensemble first (it writes pseudo_labels.csv) or remove the stage."
            )
    best_path, best_info = run.path("best.weights.h5"), run.path("best.json")
    best = read_json(best_info)["val_accuracy"] if best_info.exists() else None
    records, stopped_by_budget = [], False
    weights = class_weights(train_df["Category"], settings.class_weight)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=settings.label_smoothing)
    finished = restore_finished(model, run, plan)
    last_weights = run.path("last_stage.weights.h5")
    for stage_plan in plan:
        index, stage = stage_plan.index, stage_plan.stage
        done_path = run.path(f"stage_{index + 1}.json")
        trainable = set_trainable(model, stage.trainable)
        if index < finished:
            record = read_json(done_path)
            print(f"Stage {index + 1} ({stage.name}) already finished in {run.dir}: skipped.")
            records.append(record)
            if record.get("stopped_by_budget"):  # a marker from before budget stops became resumable
                stopped_by_budget = True
                break
            continue
        if settings.deadline is not None and time.time() >= settings.deadline:
            print(f"Time budget spent before stage {index + 1} ({stage.name}): skipped.")
            stopped_by_budget = True
            break
        stage_train = train_df
        if stage.pseudo_labels:
            stage_train = pd.concat([train_df, pseudo_labelled[["Id", "Category", "path"]]], ignore_index=True)
            print(f"Pseudo-labelling: {len(pseudo_labelled):,} test rows added to the {len(train_df):,} train rows")
        mix = {"mix": stage.mix} if mixes(stage) else {}
        train_seq = make_sequence(
            stage_train, stage.image_size, stage_plan.global_batch, stage_plan.augment, True, **mix
        )
        val_seq = make_sequence(val_df, stage.image_size, stage_plan.global_batch, "none", False)
        extras = ([f"mix {describe_mix(stage.mix)}"] if mix else []) + ([f"EMA {stage.ema:g}"] if stage.ema else [])
        print(
            f"Stage {index + 1}/{len(plan)} ({stage.name}): trainable={stage.trainable!r}, "
            f"{trainable:,} trainable parameters, {stage.image_size}px, {stage_plan.describe_batch()}, "
            f"{stage.epochs} epoch(s), {describe_optimizer(stage)} lr={stage_plan.lr:g} {stage.schedule}"
            + "".join(f", {extra}" for extra in extras)
        )
        callbacks, checkpoint, budget = stage_callbacks(stage_plan, run, train_seq, settings, best)
        started = time.time()
        history = compile_and_fit(model, stage_plan, train_seq, val_seq, callbacks, settings, loss, weights)
        best = checkpoint.best
        final = index == len(plan) - 1
        if budget.stopped:
            # Not finished: no marker, and last_stage.weights.h5 keeps the previous stage's end. The next run
            # resumes this stage from its backup.
            print(f"Stage {index + 1} ({stage.name}) stopped by the time budget; rerun to carry on from its backup.")
        elif not final:  # the next stage starts from here; after the final one only the best weights count
            save_weights_atomic(model, last_weights)
        record = stage_record(stage_plan, trainable, history, best, budget, len(stage_train) - len(train_df),
                              model.jit_compile, time.time() - started)  # fmt: skip
        records.append(record)
        if budget.stopped:
            stopped_by_budget = True
            break
        write_json(done_path, record)
        if final:  # after the marker, so a kill in between still leaves the previous stage's end to redo from
            last_weights.unlink(missing_ok=True)
        elif budget.out_of_time:
            print(f"Time budget: an epoch of stage {index + 2} would pass the deadline; rerun to carry on.")
            stopped_by_budget = True
            break
    if best_path.exists():
        load_weights_without_optimizer(model, best_path)
    return TrainResult(read_history(run), records, best, stopped_by_budget)


def deadline_from(budget_minutes: float | None, started: float | None = None) -> float | None:
    """Wall-clock deadline (epoch seconds) for a budget in minutes counted from `started` (default: now)."""
    if not budget_minutes:
        return None
    return (started or time.time()) + 60 * float(budget_minutes)
