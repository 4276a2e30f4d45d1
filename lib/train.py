"""Staged training: freezing per stage, progressive resizing, schedules, checkpoints, time budget and resume."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from lib import NUM_CLASSES
from lib.models import set_trainable
from lib.runs import RunRecord, read_json, write_json
from lib.schedules import make_optimizer, make_schedule


@dataclass
class Stage:
    """One training stage. `trainable`: 'head', 'all', top N layers (int), a fraction (float) or 'from:<layer>'."""

    name: str
    trainable: str | int | float = "head"
    epochs: int = 1
    image_size: int = 224
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "constant"
    schedule_options: dict = field(default_factory=dict)
    weight_decay: float = 0.0
    batch_size: int | None = None  # None: the notebook's batch_size
    augment: str | None = None  # None: the notebook's augment preset
    pseudo_labels: bool = False  # also train on the confident test rows the ensemble labelled


def parse_stages(stages: list[dict]) -> list[Stage]:
    """Stage dicts from the parameters cell -> Stage objects, with a clear error for a misspelt key."""
    known = {f.name for f in dataclasses.fields(Stage)}
    parsed = []
    for index, spec in enumerate(stages):
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"stages[{index}] has unknown key(s) {sorted(unknown)}; valid keys: {sorted(known)}")
        parsed.append(Stage(**{"name": f"stage{index + 1}", **spec}))
    if not parsed:
        raise ValueError("stages is empty: give at least one stage")
    return parsed


class TimeBudget(keras.callbacks.Callback):
    """Stop cleanly when the next epoch, estimated from the epochs seen so far, would end past `deadline`.

    The first epoch includes graph tracing, so once later epochs exist the estimate uses those.
    """

    def __init__(self, deadline: float | None, clock=time.time):
        super().__init__()
        self.deadline, self.clock = deadline, clock
        self.durations: list[float] = []
        self.stopped = False

    def on_epoch_begin(self, epoch, logs=None):
        self._started = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        self.durations.append(self.clock() - self._started)
        if self.deadline is None:
            return
        recent = self.durations[1:] or self.durations
        if self.clock() + float(np.median(recent)) > self.deadline:
            self.stopped = True
            self.model.stop_training = True
            print(f"Time budget: the next epoch (~{np.median(recent):.0f} s) would pass the deadline; stopping.")


class EpochInfo(keras.callbacks.Callback):
    """Adds stage, image size, learning rate and epoch seconds to the logs that CSVLogger writes."""

    def __init__(self, stage: Stage, index: int):
        super().__init__()
        self.stage, self.index = stage, index

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        logs.update(
            stage=self.index + 1,
            image_size=self.stage.image_size,
            lr=float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
            seconds=round(time.time() - self._started, 1),
        )


def save_weights_atomic(model: keras.Model, path: Path) -> None:
    """save_weights to a temp file, then rename: a full disk or a kill never breaks the previous file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name.removesuffix('.weights.h5')}.tmp.weights.h5")
    try:
        model.save_weights(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(
            f"Could not write the checkpoint {path} ({err.strerror or err}); the previous one is "
            f"intact. Free some disk space and rerun to resume."
        ) from err


class BestWeights(keras.callbacks.Callback):
    """Best-only checkpoint on a monitored metric across all stages, written atomically.

    Unlike ModelCheckpoint it renames a finished temp file over the old one, so a full disk or a kill
    mid-write never leaves a broken best.weights.h5.
    """

    def __init__(self, path: Path, best: float | None, monitor: str = "val_accuracy"):
        super().__init__()
        self.path, self.best, self.monitor = Path(path), best, monitor

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or (self.best is not None and value <= self.best):
            return
        save_weights_atomic(self.model, self.path)
        self.best = float(value)
        write_json(self.path.with_name("best.json"), {"epoch": epoch + 1, self.monitor: self.best})


class StageBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore with two generations of backups; a backup broken by a kill mid-write (and no older
    one to fall back on) restarts the stage instead of stopping the run."""

    def __init__(self, backup_dir):
        super().__init__(backup_dir, double_checkpoint=True)

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError) as err:
            print(
                f"The backup in {self.backup_dir} is incomplete ({err.__class__.__name__}); "
                f"restarting this stage from its first epoch."
            )
            shutil.rmtree(self.backup_dir, ignore_errors=True)
            self.model._initial_epoch = None


OUT_OF_MEMORY_MARKERS = ("resourceexhausted", "resource_exhausted", "out of memory", "oom when allocating")


def explain_out_of_memory(error: BaseException, batch_size: int, image_size: int) -> str | None:
    """A message naming the parameters to change when `error` is the backend running out of accelerator memory."""
    text = f"{type(error).__name__}: {error}".lower()
    if not any(marker in text for marker in OUT_OF_MEMORY_MARKERS):
        return None
    half = max(1, batch_size // 2)
    return (
        f"Out of accelerator memory at batch_size={batch_size}, image_size={image_size}. Lower `batch_size` "
        f"(or this stage's `batch_size` in `stages`) or the stage's `image_size`, and keep the effective batch "
        f"with `gradient_accumulation_steps` (e.g. batch_size={half}, gradient_accumulation_steps=2); "
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


@dataclass
class TrainResult:
    history: pd.DataFrame
    stages: list[dict]
    best_val_accuracy: float | None
    stopped_by_budget: bool

    def stage_table(self) -> pd.DataFrame:
        return pd.DataFrame(self.stages).set_index("stage") if self.stages else pd.DataFrame()


def read_history(run: RunRecord) -> pd.DataFrame:
    path = run.path("history.csv")
    if not path.exists():
        return pd.DataFrame()
    # A run killed between two epoch-end callbacks can log an epoch twice; the later row wins.
    return pd.read_csv(path).drop_duplicates("epoch", keep="last").reset_index(drop=True)


def train_stages(
    model: keras.Model,
    stages: list[dict] | list[Stage],
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    run: RunRecord,
    *,
    make_sequence,
    batch_size: int = 32,
    augment: str = "medium",
    label_smoothing: float = 0.0,
    class_weight: str | None = None,
    early_stopping_patience: int = 3,
    plateau_patience: int = 2,
    deadline: float | None = None,
    jit_compile="auto",
    gradient_accumulation_steps: int | None = None,
    pseudo_labelled: pd.DataFrame | None = None,
    verbose="auto",
) -> TrainResult:
    """Train `model` through `stages`, resuming from what `run` already holds.

    A finished stage (stage_<k>.json) is skipped and the weights the last one ended with (last_stage.weights.h5)
    reloaded; an interrupted stage resumes from its last epoch (BackupAndRestore). The same weights carry from
    stage to stage; the model accepts any image size, so progressive resizing only changes the input pipeline.
    Ends with the best weights loaded.
    `make_sequence(frame, image_size, batch_size, augment, shuffle)` builds the input pipeline.
    """
    stages = parse_stages(stages) if stages and isinstance(stages[0], dict) else list(stages)
    best_path = run.path("best.weights.h5")
    best_info = run.path("best.json")
    best = read_json(best_info)["val_accuracy"] if best_info.exists() else None
    records, stopped_by_budget, first_epoch = [], False, 0
    weights = class_weights(train_df["Category"], class_weight)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    # Stages already finished in this run folder are skipped; the weights they ended with carry on.
    finished = 0
    while finished < len(stages) and run.path(f"stage_{finished + 1}.json").exists():
        finished += 1
    last_weights = run.path("last_stage.weights.h5")
    if finished and not last_weights.exists():
        finished = 0  # markers without their weights: nothing to resume from
    if finished:
        model.load_weights(last_weights)
    for index, stage in enumerate(stages):
        done_path = run.path(f"stage_{index + 1}.json")
        trainable = set_trainable(model, stage.trainable)
        if index < finished:
            record = read_json(done_path)
            print(f"Stage {index + 1} ({stage.name}) already finished in {run.dir}: skipped.")
            records.append(record)
            first_epoch += stage.epochs
            if record.get("stopped_by_budget"):
                stopped_by_budget = True
                break
            continue
        if deadline is not None and time.time() >= deadline:
            print(f"Time budget spent before stage {index + 1} ({stage.name}): skipped.")
            stopped_by_budget = True
            break
        stage_batch = stage.batch_size or batch_size
        stage_train = train_df
        if stage.pseudo_labels:
            if pseudo_labelled is None or pseudo_labelled.empty:
                raise ValueError(
                    f"Stage {index + 1} ({stage.name}) trains on pseudo-labels, but none were given: "
                    f"run 05_ensemble first (it writes pseudo_labels.csv) or remove the stage."
                )
            stage_train = pd.concat([train_df, pseudo_labelled[["Id", "Category", "path"]]], ignore_index=True)
            print(f"Pseudo-labelling: {len(pseudo_labelled):,} test rows added to the {len(train_df):,} train rows")
        train_seq = make_sequence(stage_train, stage.image_size, stage_batch, stage.augment or augment, True)
        val_seq = make_sequence(val_df, stage.image_size, stage_batch, "none", False)
        schedule = make_schedule(stage.schedule, stage.lr, len(train_seq), stage.epochs, **stage.schedule_options)
        optimizer_options = (
            {"gradient_accumulation_steps": gradient_accumulation_steps}
            if gradient_accumulation_steps and gradient_accumulation_steps > 1
            else {}
        )
        model.compile(
            optimizer=make_optimizer(stage.optimizer, schedule, weight_decay=stage.weight_decay, **optimizer_options),
            loss=loss,
            metrics=["accuracy"],
            jit_compile=jit_compile,
        )
        print(
            f"Stage {index + 1}/{len(stages)} ({stage.name}): trainable={stage.trainable!r}, "
            f"{trainable:,} trainable parameters, {stage.image_size}px, {stage.epochs} epoch(s), "
            f"{stage.optimizer} lr={stage.lr:g} {stage.schedule}"
        )
        budget = TimeBudget(deadline)
        checkpoint = BestWeights(best_path, best)
        callbacks = [
            EpochInfo(stage, index),
            checkpoint,
            keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=early_stopping_patience),
            keras.callbacks.CSVLogger(str(run.path("history.csv")), append=True),
            budget,
            # Last, so an epoch is backed up only after its row and checkpoint are written.
            StageBackup(str(run.path(f"backup_stage_{index + 1}"))),
        ]
        if stage.schedule == "plateau":
            callbacks.insert(
                2,
                keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3, patience=plateau_patience, verbose=1),
            )
        started = time.time()
        model._initial_epoch = None  # BackupAndRestore sets it per fit; don't let it leak into the next stage
        try:
            history = model.fit(
                train_seq,
                validation_data=val_seq,
                epochs=first_epoch + stage.epochs,
                initial_epoch=first_epoch,
                class_weight=weights,
                callbacks=callbacks,
                verbose=verbose,
            )
        except Exception as err:
            message = explain_out_of_memory(err, stage_batch, stage.image_size)
            if message:
                raise MemoryError(message) from err
            raise
        best = checkpoint.best
        save_weights_atomic(model, last_weights)
        record = {
            "stage": index + 1,
            "name": stage.name,
            "trainable": stage.trainable,
            "trainable_params": trainable,
            "image_size": stage.image_size,
            "epochs_run": len(history.history.get("loss", [])),
            "epochs_planned": stage.epochs,
            "best_val_accuracy": best,
            "stopped_by_budget": budget.stopped,
            "pseudo_label_rows": len(stage_train) - len(train_df),
            "jit_compile": bool(model.jit_compile),
            "seconds": round(time.time() - started, 1),
        }
        write_json(done_path, record)
        records.append(record)
        first_epoch += stage.epochs
        if budget.stopped:
            stopped_by_budget = True
            break
    if best_path.exists():
        model.load_weights(best_path)
    return TrainResult(read_history(run), records, best, stopped_by_budget)


def pseudo_labels(test_df: pd.DataFrame, test_probs: np.ndarray, threshold: float) -> pd.DataFrame:
    """Test rows whose top probability is >= threshold, labelled with their predicted class."""
    probs = np.asarray(test_probs)
    confident = probs.max(axis=1) >= threshold
    return (
        test_df.loc[confident, ["Id", "path"]].assign(Category=probs[confident].argmax(axis=1)).reset_index(drop=True)
    )


def lr_per_step(stages: list[dict], steps_per_epoch: int) -> pd.DataFrame:
    """The learning rate at every step of every stage (for the LR plot)."""
    from lib.schedules import lr_curve

    frames, offset = [], 0
    for index, stage in enumerate(parse_stages(stages)):
        total = steps_per_epoch * stage.epochs
        schedule = make_schedule(stage.schedule, stage.lr, steps_per_epoch, stage.epochs, **stage.schedule_options)
        frames.append(
            pd.DataFrame(
                {
                    "step": np.arange(total) + offset,
                    "lr": lr_curve(schedule, total),
                    "stage": f"{index + 1}: {stage.name}",
                }
            )
        )
        offset += total
    return pd.concat(frames, ignore_index=True)


def deadline_from(budget_minutes: float | None, started: float | None = None) -> float | None:
    """Wall-clock deadline (epoch seconds) for a budget in minutes counted from `started` (default: now)."""
    if not budget_minutes:
        return None
    return (started or time.time()) + 60 * float(budget_minutes)
