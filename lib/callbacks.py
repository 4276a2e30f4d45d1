"""The callbacks of a training stage and the weight files they write: time budget, epoch info, best weights,
two-generation backups, per-epoch randomness, the early-stopping counters a resumed stage needs, and the swaps
that let validation and checkpoints see the EMA weights while backups keep the raw ones."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from lib.choices import Stage
from lib.runs import read_json, write_json


# Keras 3's save_weights also writes the compiled optimizer's variables (Adam: two per weight, so the file
# triples). `objects_to_skip` leaves them out: a keyword that the public keras.saving.save_weights and
# Model.load_weights pass on to keras.src.saving.saving_lib (Keras 3.10 to 3.15) but do not document. Both uses
# are here; tests/test_resume.py::test_checkpoints_hold_the_weights_without_the_optimizer fails if it stops working.
def save_weights_without_optimizer(model: keras.Model, path: Path) -> None:
    """The model's weights alone, without its optimizer's state (that lives only in a stage's resume backup)."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        model.save_weights(path)  # not compiled: nothing to leave out
    else:
        keras.saving.save_weights(model, path, objects_to_skip=[optimizer])


def load_weights_without_optimizer(model: keras.Model, path: Path) -> None:
    """Load weights into `model` and leave its optimizer as it is, without Keras's "Skipping variable loading for
    optimizer" warning (the file may or may not hold an optimizer's state)."""
    optimizer = getattr(model, "optimizer", None)
    model.load_weights(path, objects_to_skip=None if optimizer is None else [optimizer])


def save_weights_atomic(model: keras.Model, path: Path) -> None:
    """The model's weights (no optimizer state) to a temp file, then rename: a full disk or a kill never breaks
    the previous file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name.removesuffix('.weights.h5')}.tmp.weights.h5")
    try:
        save_weights_without_optimizer(model, tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(
            f"Could not write the checkpoint {path} ({err.strerror or err}); the previous one is "
            f"intact. Free some disk space and rerun to resume."
        ) from err


class TimeBudget(keras.callbacks.Callback):
    """Stop cleanly when the next epoch, estimated from the epochs seen so far, would end past `deadline`.

    The first epoch includes graph tracing, so once later epochs exist the estimate uses those. After the fit's
    last epoch there is nothing to stop: the stage ends finished, and `out_of_time` tells train_stages not to
    start the next one.
    """

    def __init__(self, deadline: float | None, clock=time.time):
        super().__init__()
        self.deadline, self.clock = deadline, clock
        self.durations: list[float] = []
        self.stopped = False  # stopped the fit before its last epoch: the stage is unfinished
        self.out_of_time = False  # another epoch would pass the deadline

    def on_epoch_begin(self, epoch, logs=None):
        self._started = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        self.durations.append(self.clock() - self._started)
        if self.deadline is None:
            return
        recent = self.durations[1:] or self.durations
        if self.clock() + float(np.median(recent)) > self.deadline:
            self.out_of_time = True
            if epoch + 1 >= (self.params or {}).get("epochs", float("inf")):
                return  # the stage's last epoch: it is finished, so no backup kept and nothing to resume
            self.stopped = True
            self.model.stop_training = True
            print(f"Time budget: the next epoch (~{np.median(recent):.0f} s) would pass the deadline; stopping.")


def uses_ema(optimizer) -> bool:
    """Whether the optimizer (or the one a LossScaleOptimizer wraps) keeps a moving average of the weights."""
    return bool(getattr(getattr(optimizer, "inner_optimizer", optimizer), "use_ema", False))


class EpochInfo(keras.callbacks.Callback):
    """Adds stage, image size, learning rate, epoch seconds and which weights validation evaluated (`val_on_ema`: 1
    for the optimizer's moving average, 0 for the trained weights; Keras's logs take numbers only) to the logs that
    CSVLogger writes."""

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
            val_on_ema=int(uses_ema(optimizer)),
        )


def ema_swaps() -> tuple[keras.callbacks.Callback, keras.callbacks.Callback]:
    """(to EMA, back to raw): the two places in a stage's callback list where the weights change hands.

    The first is Keras's SwapEMAWeights with swap_on_epoch: validation runs on the EMA weights, and from the end
    of each epoch on, so do the callbacks after it (the best checkpoint). The second, put just before the backup,
    swaps the raw weights back in, so the backup holds the raw weights and the optimizer's EMA slots, the state an
    uninterrupted run carries into its next epoch: a resumed run goes on exactly as if it had not stopped. At the
    end of fit Keras writes the EMA weights into the model (Optimizer.finalize_variable_values)."""
    to_ema = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    return to_ema, RawWeightsForBackup(to_ema)


class RawWeightsForBackup(keras.callbacks.Callback):
    """At the end of an epoch, put the raw weights back into the model that SwapEMAWeights(swap_on_epoch=True)
    filled with the EMA weights, by calling its own epoch-start swap (a no-op when they are already there)."""

    def __init__(self, to_ema: keras.callbacks.SwapEMAWeights):
        super().__init__()
        self.to_ema = to_ema

    def on_epoch_end(self, epoch, logs=None):
        self.to_ema.on_epoch_begin(epoch)


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
    """BackupAndRestore with two generations of backups (weights and optimizer state each); a backup broken by a
    kill mid-write (and no older one to fall back on) restarts the stage instead of stopping the run. A finished
    stage's backup is deleted. When `budget` stopped the stage, the latest backup is kept, so the next run (a new
    session, a larger budget) carries on with the next epoch."""

    def __init__(self, backup_dir, budget: TimeBudget | None = None):
        super().__init__(backup_dir, double_checkpoint=True)
        self.budget = budget

    def on_train_end(self, logs=None):
        if self.budget is not None and self.budget.stopped:
            # Unfinished: keep the backup to resume from. A clean stop wrote it whole, so the older generation
            # (kept against a kill mid-write) is only disk: drop it.
            for path in (self._prev_weights_path, self._prev_training_metadata_path):
                Path(path).unlink(missing_ok=True)
            return
        super().on_train_end(logs)

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


SEED_STATE_NAME = "seed_generator_state"  # the Keras variable behind every layer-level RNG (Dropout, Random*)
EPOCH_STRIDE = 1 << 16  # RNG counter space per epoch: more steps than any epoch takes


def reseed_model(model: keras.Model, seed: int, epoch: int) -> int:
    """Set every SeedGenerator in `model` (Dropout, stochastic depth, Keras augmentation layers) to a state
    drawn from (seed, generator, epoch) alone. Keras does not save these states with the weights, so without
    this a resumed epoch would draw other dropout masks than the uninterrupted one. Returns the count."""
    states = [v for v in model.variables if v.name == SEED_STATE_NAME]
    for ordinal, state in enumerate(states):
        base = (int(seed) * 1_000_003 + ordinal) % (1 << 31)
        state.assign(np.array([base, int(epoch) * EPOCH_STRIDE], dtype=keras.backend.standardize_dtype(state.dtype)))
    return len(states)


class EpochRandomness(keras.callbacks.Callback):
    """Before each epoch, key all randomness to (seed, epoch): the input order and augmentation draws of the
    training sequence (its `set_epoch`) and the model's own RNGs (`reseed_model`). A run killed and resumed then
    draws exactly what the uninterrupted run drew. The epoch index is global, so it also tells stages apart."""

    def __init__(self, sequence, seed: int):
        super().__init__()
        self.sequence, self.seed = sequence, int(seed)

    def on_epoch_begin(self, epoch, logs=None):
        # Keras starts the input workers for this epoch only after the callbacks' on_epoch_begin.
        if hasattr(self.sequence, "set_epoch"):
            self.sequence.set_epoch(epoch)
        reseed_model(self.model, self.seed, epoch)


class CallbackState(keras.callbacks.Callback):
    """Saves the counters of EarlyStopping / ReduceLROnPlateau after every epoch (into the stage's backup
    folder) and puts them back when a stage resumes, so patience counts on as if the run had not stopped."""

    ATTRIBUTES = ("wait", "best", "best_epoch", "stopped_epoch", "cooldown_counter")

    def __init__(self, callbacks: list, path: Path, first_epoch: int):
        super().__init__()
        self.callbacks, self.path, self.first_epoch = callbacks, Path(path), first_epoch
        self._states: dict | None = None  # epoch -> counters; read from the file once, on the first epoch

    def _snapshot(self) -> dict:
        return {
            type(cb).__name__: {a: float(v) for a in self.ATTRIBUTES if (v := getattr(cb, a, None)) is not None}
            for cb in self.callbacks
        }

    def on_epoch_begin(self, epoch, logs=None):
        if self._states is not None:
            return
        self._states = read_json(self.path) if self.path.exists() else {}
        if epoch > self.first_epoch:
            saved = self._states.get(str(epoch - 1), {})
            for cb in self.callbacks:
                for attribute, value in saved.get(type(cb).__name__, {}).items():
                    setattr(cb, attribute, int(value) if attribute != "best" else value)

    def on_epoch_end(self, epoch, logs=None):
        self._states[str(epoch)] = self._snapshot()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, self._states)
